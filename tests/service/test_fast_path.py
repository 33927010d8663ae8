"""The classify routes' lean request path: the direct dispatch (service.fastpath), the options parsed by the
routes themselves, results built as dicts and serialised once, small images handled on the event loop.

Each test compares against what FastAPI's own machinery or the schema says, on real GTSRB photos.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from service.routes import classify
from service.routes.classify import ClassifyQuery
from service.schemas import ClassifyResponse
from tests.service.conftest import ClientFactory
from tests.service.helpers import TestClient, gtsrb_originals, registry_of, sample


def multipart(paths: list[Path]) -> tuple[bytes, str]:
    request = httpx.Request(
        "POST", "http://x/", files=[("file", (p.name, p.read_bytes(), "image/png")) for p in paths]
    )
    return request.read(), request.headers["content-type"]


def without_timings(body: dict[str, Any]) -> dict[str, Any]:
    """A classify response without what differs between two runs of the same request."""
    results = [{k: v for k, v in r.items() if k != "timings"} for r in body["results"]]
    return {**{k: v for k, v in body.items() if k != "request_id"}, "results": results}


def test_direct_routes_are_the_routers_classify_routes() -> None:
    """The dispatcher serves exactly the router's classify routes, with the same endpoints (so the OpenAPI
    schema, the router and the fast path cannot drift apart)."""
    declared = {(route.path, route.endpoint) for route in classify.router.routes}  # type: ignore[attr-defined]
    direct = {(route.path, route.endpoint) for route in classify.direct_routes()}
    assert direct == declared


def test_openapi_documents_the_options_the_routes_parse(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    fields = set(ClassifyQuery.model_fields)
    for path, expected in (("/v1/classify", fields), ("/v1/models/{name}/classify", fields | {"name"})):
        parameters = paths[path]["post"]["parameters"]
        assert {p["name"] for p in parameters} == expected, path
        for p in parameters:
            if p["in"] == "query":
                assert p["schema"]["default"] == ClassifyQuery.model_fields[p["name"]].default
                assert p["description"]


def test_responses_validate_against_the_documented_schema(client: TestClient, gtsrb_dir: Path) -> None:
    """The route serialises plain dicts; every field must still be what ClassifyResponse documents."""
    body, kind = multipart(gtsrb_originals(gtsrb_dir, 3, stride=97))
    for query in ("", "?crop=none", "?crop=png&top_k=43", "?crop=webp&crop_size=64&crop_quality=50"):
        response = client.post(f"/v1/classify{query}", content=body, headers={"content-type": kind})
        assert response.status_code == 200, response.text
        parsed = ClassifyResponse.model_validate(response.json())
        assert len(parsed.results) == 3
        assert parsed.request_id == response.headers["x-request-id"]
        assert response.headers["content-type"] == "application/json"


def test_the_last_value_of_a_repeated_option_counts(client: TestClient, gtsrb_dir: Path) -> None:
    data = gtsrb_originals(gtsrb_dir, 1)[0].read_bytes()
    response = client.post(
        "/v1/classify?top_k=2&top_k=3&crop=none", content=data, headers={"content-type": "image/png"}
    )
    assert [len(r["predictions"]) for r in response.json()["results"]] == [3]


def test_named_route_keeps_its_route_label_and_other_methods_take_the_normal_path(
    client: TestClient, gtsrb_dir: Path
) -> None:
    registry = registry_of(client)
    name = client.get("/v1/models").json()["default"]
    route = {"route": "/v1/models/{name}/classify", "status": "200"}
    before = sample(registry, "stn_requests_total", route)
    data = gtsrb_originals(gtsrb_dir, 1)[0].read_bytes()
    assert (
        client.post(
            f"/v1/models/{name}/classify?crop=none", content=data, headers={"content-type": "image/png"}
        ).status_code
        == 200
    )
    assert sample(registry, "stn_requests_total", route) == before + 1
    wrong_method = client.get("/v1/classify")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"
    unknown = client.post("/v1/models/nope/classify", content=data, headers={"content-type": "image/png"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert unknown.json()["error"]["request_id"] == unknown.headers["x-request-id"]
    nested = client.post(
        f"/v1/models/{name}/classify/extra", content=data, headers={"content-type": "image/png"}
    )
    assert nested.status_code == 404 and nested.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("query", ["?crop=none", "", "?crop=png&crop_size=300"])
def test_event_loop_and_thread_paths_give_the_same_answers(
    client_factory: ClientFactory, model_repo: Path, gtsrb_dir: Path, query: str
) -> None:
    """Small images are decoded and post-processed on the event loop, large ones (and large crops) in the
    decode threads (SERVICE_INLINE_MAX_PIXELS); the answer must not depend on where they ran."""
    body, kind = multipart(gtsrb_originals(gtsrb_dir, 4, stride=301))
    answers = []
    for limit in (0, 65_536, 10**9):  # all in threads, the default, all on the loop
        client = client_factory(model_repo, inline_max_pixels=limit)
        response = client.post(f"/v1/classify{query}", content=body, headers={"content-type": kind})
        assert response.status_code == 200, response.text
        answers.append(without_timings(response.json()))
    assert answers[0] == answers[1] == answers[2]


def test_an_inline_failure_next_to_a_threaded_image_is_a_clean_422(
    client: TestClient, gtsrb_dir: Path
) -> None:
    """A large photo goes to the decode threads while a small, truncated one fails on the event loop: the
    request gets the truncated image's 422 (naming it), and the service goes on serving."""
    from PIL import Image

    from tests.service.helpers import encode

    small = gtsrb_originals(gtsrb_dir, 1)[0].read_bytes()
    large = encode(Image.open(gtsrb_originals(gtsrb_dir, 1, stride=7)[0]).convert("RGB").resize((400, 300)))
    request = httpx.Request(
        "POST",
        "http://x/",
        files=[
            ("file", ("large.png", large, "image/png")),
            ("file", ("cut.png", small[: len(small) // 2], "image/png")),
        ],
    )
    response = client.post(
        "/v1/classify", content=request.read(), headers={"content-type": request.headers["content-type"]}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] in ("truncated_image", "invalid_image") and "'cut.png'" in error["message"]
    again = client.post("/v1/classify?crop=none", content=large, headers={"content-type": "image/png"})
    assert again.status_code == 200 and again.json()["results"][0]["width"] == 400

"""The demo page at ``/`` in a real browser: Debian's chromium driven by Playwright, against the real server.

The browser is ``/usr/bin/chromium`` (Debian package ``chromium``), never a Playwright download; the tests
skip only when it or the ``playwright`` Python package is missing, and fail instead under ``CI=true``. Each
upload goes through the page's own file input (or a drop event) and the page calls the public API, exactly
like any client.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from PIL import Image

from service.settings import Settings
from tests.e2e.conftest import ServerProcess
from tests.service.helpers import missing_system_package

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: A 155x139 GTSRB test photo ("Pedestrians", class 27) with the usual margin around the sign.
IMAGE = "00829.png"
CROP_SIZE = 192  # what the page asks for
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """One headless chromium with a fresh profile folder for this module's pages."""
    if not CHROMIUM.is_file():
        missing_system_package(
            "Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)"
        )
    try:
        from playwright import sync_api
    except ImportError:
        missing_system_package("the playwright Python package is not installed (pip install playwright)")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1200, "height": 820},
            color_scheme="light",
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: BrowserContext, server: ServerProcess) -> Iterator[Page]:
    """The demo page, loaded and ready (its model list filled); any JavaScript exception fails the test."""
    tab = browser.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    script_errors: list[str] = []
    tab.on("pageerror", lambda error: script_errors.append(str(error)))
    tab.goto(f"{server.url}/")
    tab.wait_for_selector("body[data-state=idle]")
    yield tab
    tab.close()
    if script_errors:
        pytest.fail(f"JavaScript errors on the page: {script_errors}")


def api_classify(server: ServerProcess, model: str, name: str, data: bytes, mime: str) -> httpx.Response:
    """The same upload as the page's, straight to the public API."""
    return httpx.post(
        f"{server.url}/v1/models/{model}/classify?top_k=5&crop=none",
        files={"file": (name, data, mime)},
        timeout=30,
    )


def shown_predictions(page: Page) -> list[tuple[int, str]]:
    items = page.locator("#predictions li")
    return [
        (
            int(str(items.nth(i).get_attribute("data-class-id"))),
            str(items.nth(i).locator(".name").get_attribute("title")),
        )
        for i in range(items.count())
    ]


def same_top_class(shown: int, answer: dict[str, Any]) -> bool:
    """``shown`` is the API's top class, or ties with it (a near-uniform untrained test model)."""
    probabilities = {p["class_id"]: p["probability"] for p in answer["predictions"]}
    best = answer["predictions"][0]
    return shown == best["class_id"] or abs(probabilities.get(shown, -1.0) - best["probability"]) < 1e-6


def overlay_facts(page: Page) -> dict[str, int]:
    """Size of the overlay canvas, its distinct colours and its pixels of the outline's green (device px)."""
    return dict(
        page.eval_on_selector(
            "#overlay",
            """canvas => {
                const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
                const colours = new Set();
                let green = 0;
                for (let i = 0; i < data.length; i += 4) {
                    colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
                    if (data[i + 1] > 140 && data[i] < 60 && data[i + 2] < 110) green++;
                }
                return {width: canvas.width, height: canvas.height, colours: colours.size, green};
            }""",
        )
    )


def save_screenshot(page: Page, tmp_path: Path) -> Path:
    """Full-page PNG in the test's tmp_path, and at $SAVE_SCREENSHOT_TO when that is set."""
    path = tmp_path / "demo_page.png"
    page.screenshot(path=str(path), full_page=True)
    target = os.environ.get("SAVE_SCREENSHOT_TO")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return path


def test_page_classifies_a_real_upload(
    page: Page, server: ServerProcess, gtsrb_dir: Path, tmp_path: Path
) -> None:
    models = httpx.get(f"{server.url}/v1/models", timeout=10).json()
    options = page.locator("#model option")
    assert [options.nth(i).get_attribute("value") for i in range(options.count())] == [
        m["name"] for m in models["models"]
    ]
    assert page.locator("#model").input_value() == models["default"]

    path = gtsrb_dir / "test_originals" / IMAGE
    page.set_input_files("#file", str(path))
    page.wait_for_selector("body[data-state=done]")

    answer = api_classify(server, models["default"], IMAGE, path.read_bytes(), "image/png")
    assert answer.status_code == 200, answer.text
    result = answer.json()["results"][0]
    shown = shown_predictions(page)
    num_classes = next(m["num_classes"] for m in models["models"] if m["name"] == models["default"])
    assert len(shown) == min(5, num_classes)
    assert same_top_class(shown[0][0], result), (shown, result["predictions"])
    names = {p["class_id"]: p["name"] for p in result["predictions"]}
    assert shown[0][1] == names.get(shown[0][0], shown[0][1])
    assert names[result["predictions"][0]["class_id"]] in page.inner_text("#predictions")
    assert page.locator("#top-class").is_visible()
    assert not page.locator("#error").is_visible()

    crop = page.eval_on_selector(
        "#crop", "img => ({done: img.complete, w: img.naturalWidth, h: img.naturalHeight})"
    )
    assert crop == {"done": True, "w": CROP_SIZE, "h": CROP_SIZE}
    assert page.eval_on_selector("#crop", "img => img.src").startswith("data:image/jpeg;base64,")
    info = page.inner_text("#transform-info")
    assert info.startswith("scale ")
    # the share of the crop outside the photo is shown when there is one (transform.outside_fraction)
    assert ("outside the photo" in info) == (result["transform"]["outside_fraction"] > 0.0005), info
    overlay = overlay_facts(page)
    assert overlay["width"] > 0 and overlay["height"] > 0
    assert overlay["colours"] > 500, "the photo is not drawn on the overlay canvas"
    assert overlay["green"] > 100, "the crop's outline is not drawn"
    assert f"({result['width']} × {result['height']} px)" in page.inner_text("#result")

    shot = save_screenshot(page, tmp_path)
    with Image.open(shot) as image:
        assert image.width == 1200 and image.height >= 820


def test_dropped_ppm_on_another_model(page: Page, server: ServerProcess, gtsrb_dir: Path) -> None:
    """Drag and drop, the PPM format of the official data set (decoded by the page itself: browsers cannot
    show PPM), and the model selector: the answer comes from the chosen model."""
    models = httpx.get(f"{server.url}/v1/models", timeout=10).json()
    others = [m["name"] for m in models["models"] if m["name"] != models["default"]]
    model = others[0] if others else models["default"]
    page.select_option("#model", model)
    buffer = io.BytesIO()
    with Image.open(gtsrb_dir / "test_originals" / IMAGE) as image:
        image.convert("RGB").save(buffer, format="PPM")
    ppm = buffer.getvalue()
    page.evaluate(
        """b64 => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "00829.ppm", {type: "image/x-portable-pixmap"}));
            document.getElementById("drop").dispatchEvent(
                new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }""",
        base64.b64encode(ppm).decode(),
    )
    page.wait_for_selector("body[data-state=done]")
    answer = api_classify(server, model, "00829.ppm", ppm, "image/x-portable-pixmap")
    assert answer.status_code == 200, answer.text
    assert same_top_class(shown_predictions(page)[0][0], answer.json()["results"][0])
    assert f"model {model} " in page.inner_text("#timings")
    assert overlay_facts(page)["colours"] > 500, "the page did not decode the PPM for display"


@pytest.mark.parametrize(
    ("name", "mime", "size", "status", "code", "title"),
    [
        ("notes.txt", "text/plain", 0, 415, "unsupported_media_type", "Not an image"),
        ("photo.png", "image/png", 0, 422, "invalid_image", "Not a readable image"),
        ("huge.png", "image/png", -1, 413, "payload_too_large", "File too large"),
    ],
)
def test_page_explains_a_rejected_file(
    page: Page, server: ServerProcess, name: str, mime: str, size: int, status: int, code: str, title: str
) -> None:
    """Not an image (415: wrong type; 422: an image type but no image) and too big (413): the page shows a
    clear title and the service's own reason, code and request id."""
    data = b"this is not an image, only text\n" * 4
    if size < 0:  # one byte over the body limit the server runs with
        data = b"\x89PNG\r\n\x1a\n" + bytes(Settings().max_body_bytes)
    page.set_input_files("#file", {"name": name, "mimeType": mime, "buffer": data})
    page.wait_for_selector("body[data-state=error]")
    answer = api_classify(server, page.locator("#model").input_value(), name, data, mime)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["code"] == code
    assert page.locator("#error").is_visible()
    assert page.inner_text("#error-title") == title
    # the same reason, up to numbers: the multipart body sizes differ (boundaries), and Pillow's message may
    # carry an object address ("<_io.BytesIO object at 0x...>")
    numbers = re.compile(r"0x[0-9a-f]+|\d+")
    assert numbers.sub("#", error["message"]) in numbers.sub("#", page.inner_text("#error-message"))
    assert f"HTTP {status} · {code} · request " in page.inner_text("#error-meta")
    assert not page.locator("#result").is_visible()


def test_page_reports_an_unavailable_service(page: Page, server: ServerProcess, gtsrb_dir: Path) -> None:
    """No connection (the requests are aborted in the browser): a clear message and a working Retry; a busy
    service (503 + Retry-After) says when to try again; a vanished model (404) is named and the list reloads.
    The 503 and 404 answers are stubbed in the browser: the real service gives them only under load or during
    a model swap."""
    page.route("**/v1/**", lambda route: route.abort("connectionrefused"))
    page.reload()
    page.wait_for_selector("body[data-state=error]")
    assert page.inner_text("#error-title") == "Service unavailable"
    assert "Cannot reach the classification service" in page.inner_text("#error-message")
    page.unroute("**/v1/**")
    page.click("#retry")
    page.wait_for_selector("body[data-state=idle]")
    assert not page.locator("#error").is_visible() and page.locator("#model option").count() >= 1

    body = json.dumps(
        {"error": {"code": "overloaded", "message": "the batch queue is full", "request_id": "r-503"}}
    )
    page.route(
        "**/classify*",
        lambda route: route.fulfill(
            status=503, body=body, content_type="application/json", headers={"Retry-After": "2"}
        ),
    )
    page.set_input_files("#file", str(gtsrb_dir / "test_originals" / IMAGE))
    page.wait_for_selector("body[data-state=error]")
    assert page.inner_text("#error-title") == "Service busy"
    assert "the batch queue is full. Try again in 2 s." in page.inner_text("#error-message")
    page.unroute("**/classify*")
    page.click("#retry")
    page.wait_for_selector("body[data-state=done]")

    gone = json.dumps(
        {"error": {"code": "model_not_found", "message": "no model 'x'", "request_id": "r-404"}}
    )
    page.route(
        "**/classify*",
        lambda route: route.fulfill(status=404, body=gone, content_type="application/json"),
    )
    page.set_input_files("#file", str(gtsrb_dir / "test_originals" / IMAGE))
    page.wait_for_selector("body[data-state=error]")
    page.wait_for_load_state("networkidle")  # the page refreshes its model list; the message must stay
    assert page.locator("#error").is_visible() and page.inner_text("#error-title") == "Model not found"
    assert page.locator("#model option").count() >= 1

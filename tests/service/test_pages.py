"""Every HTML page the service serves works offline: no URL in it names another host (issue 15).

The pages are found from the app's own routes (every GET route without path parameters that answers
text/html), so a page added later is checked too. In each page, every ``src``/``href`` attribute and CSS
``url(...)`` must be same-origin (a path, a fragment or a ``data:`` URL), and no ``http(s)://`` URL may appear
anywhere in the page besides XML namespace names (``http://www.w3.org/2000/svg``, an identifier the browser
never fetches). The files the pages load are fetched too (200) and checked the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from starlette.routing import Route

from tests.service.helpers import TestClient

REFERENCE = re.compile(
    r"""(?:\b(?:src|href)\s*=\s*["']([^"']*)["'])|(?:(?<![\w.])url\(\s*["']?([^"')]*)["']?\s*\))""", re.I
)
ABSOLUTE = re.compile(r"""(?:https?:)?//[^\s"'<>)]+""", re.I)
#: XML namespace names: identifiers inside inline SVG, never fetched.
NAMESPACES = ("http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink", "http://www.w3.org/1999/xhtml")


def get_paths(routes: Iterable[Any]) -> Iterator[str]:
    """Paths of the GET routes without path parameters, included routers walked (FastAPI >= 0.16x includes
    routers lazily: their routes hang under ``original_router``; its paths already carry the prefix, and this
    app includes its routers without another prefix)."""
    for route in routes:
        nested = getattr(route, "original_router", None)
        if nested is not None:
            yield from get_paths(nested.routes)
        elif isinstance(route, Route) and "GET" in (route.methods or set()) and "{" not in route.path:
            yield route.path


def html_pages(client: TestClient) -> dict[str, str]:
    """Every page the app serves as text/html: GET routes without path parameters, fetched."""
    pages: dict[str, str] = {}
    for path in sorted(set(get_paths(client.app.routes))):  # type: ignore[attr-defined]
        response = client.get(path)
        if response.status_code == 200 and response.headers["content-type"].startswith("text/html"):
            pages[path] = response.text
    return pages


def foreign_urls(text: str) -> list[str]:
    """The URLs in ``text`` that point to another host (absolute or scheme-relative), namespaces aside."""
    found: list[str] = []
    for match in REFERENCE.finditer(text):
        value = (match.group(1) or match.group(2) or "").strip()
        if value.startswith("data:"):
            continue
        if urlsplit(value).netloc:  # http://host/..., https://host/..., //host/...
            found.append(value)
    for match in ABSOLUTE.finditer(text):
        url = match.group(0)
        if url.startswith("//") or url.startswith(NAMESPACES):
            continue  # "//" alone is a JavaScript comment; namespaces are never fetched
        found.append(url)
    return found


def local_references(text: str) -> list[str]:
    refs = []
    for match in REFERENCE.finditer(text):
        value = (match.group(1) or match.group(2) or "").strip()
        if value and not value.startswith(("data:", "#", "javascript:")):
            refs.append(value)
    return refs


@pytest.fixture(scope="module")
def pages(client: TestClient) -> dict[str, str]:
    return html_pages(client)


def test_the_service_serves_the_demo_page_and_swagger_ui(pages: dict[str, str]) -> None:
    assert {"/", "/docs"} <= set(pages), sorted(pages)
    assert "/v1/models/" in pages["/"]
    assert "swagger-ui-bundle.js" in pages["/docs"] and "/openapi.json" in pages["/docs"]


def test_no_page_names_another_host(client: TestClient, pages: dict[str, str]) -> None:
    assert pages
    for path, text in pages.items():
        assert foreign_urls(text) == [], path
        for ref in local_references(text):
            url = urljoin(f"http://testserver{path}", ref)
            assert urlsplit(url).netloc == "testserver", (path, ref)
            response = client.get(url)
            assert response.status_code == 200, (path, ref)
            if response.headers["content-type"].startswith(("text/css", "text/html")):
                assert foreign_urls(response.text) == [], (path, ref)


def test_swagger_ui_is_served_from_the_installed_package(client: TestClient) -> None:
    page = client.get("/docs").text
    assert '"validatorUrl": null' in page  # no badge fetched from validator.swagger.io
    script = client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "SwaggerUIBundle" in script.text
    assert client.get("/docs/assets/swagger-ui.css").headers["content-type"].startswith("text/css")
    missing = client.get("/docs/assets/index.html")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert client.get("/docs/assets/..%2F..%2F__init__.py").status_code == 404
    assert client.get("/redoc").status_code == 404  # not kept: its bundle would come from a CDN


def test_the_checker_finds_foreign_urls() -> None:
    page = (
        '<script src="https://cdn.example.org/x.js"></script><link href="//fonts.example.com/a.css">'
        "<style>b { background: url('http://img.example.net/b.png') }</style>"
        "<script>URL.createObjectURL(file)</script>"
        '<img src="data:image/svg+xml,<svg xmlns=\'http://www.w3.org/2000/svg\'/>"><a href="/docs">'
        "<script>// a comment\nfetch('https://api.example.com/v1')</script>"
    )
    assert foreign_urls(page) == [
        "https://cdn.example.org/x.js",
        "//fonts.example.com/a.css",
        "http://img.example.net/b.png",
        "https://cdn.example.org/x.js",
        "http://img.example.net/b.png",
        "https://api.example.com/v1",
    ]

"""``GET /docs``: Swagger UI, served entirely by the service (no CDN), so it works offline.

The Swagger UI files come from the ``swagger-ui-bundle-v2`` package (module ``swagger_ui_bundle``, Apache-2.0,
its license in the package's metadata), a dependency of the service: the page and its assets are installed
with it. No page the service serves names another host (tests/service/test_pages.py checks it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from service.errors import ServiceError

router = APIRouter(include_in_schema=False)

DOCS_PATH: Final = "/docs"
ASSETS_PATH: Final = "/docs/assets"
#: The Swagger UI files the page loads, and their media types (nothing else is served from the package).
ASSETS: Final[dict[str, str]] = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


class AssetNotFound(ServiceError):
    """A file that is not one of :data:`ASSETS` (404)."""

    status_code = 404
    code = "not_found"


def swagger_ui_dir() -> Path:
    """The folder of the installed Swagger UI distribution."""
    import swagger_ui_bundle

    return Path(str(swagger_ui_bundle.swagger_ui_path))


@router.get(DOCS_PATH)
async def swagger_ui(request: Request) -> HTMLResponse:
    """The interactive API documentation over ``/openapi.json``, with local assets only."""
    title = f"{request.app.title} - API documentation"
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url or "/openapi.json",
        title=title,
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
        oauth2_redirect_url=None,
        # no online validator badge: Swagger UI would otherwise fetch it from validator.swagger.io
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get(f"{ASSETS_PATH}/{{name}}")
async def swagger_asset(name: str) -> FileResponse:
    """One of the Swagger UI files the page loads; anything else is 404."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise AssetNotFound(f"no documentation asset {name!r}")
    return FileResponse(swagger_ui_dir() / name, media_type=media_type)

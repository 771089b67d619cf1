"""Swagger UI at `/docs` and ReDoc at `/redoc`, from assets in the image, so they work with no internet."""

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs-assets"

router = APIRouter(include_in_schema=False)


def assets() -> StaticFiles:
    """The Swagger UI and ReDoc files that `fastapi-offline` ships; mount them at `ASSETS_PATH`."""
    import fastapi_offline

    return StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static")


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI for this app's OpenAPI document."""
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
    )


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    """ReDoc for this app's OpenAPI document, without web fonts."""
    return get_redoc_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
        with_google_fonts=False,
    )

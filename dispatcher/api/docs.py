"""Swagger UI at /docs and ReDoc at /redoc, from assets installed with the project (no CDN).

FastAPI's own pages load Swagger UI, ReDoc, a favicon and Google Fonts from CDNs, so on a bank's
disconnected network /docs is a blank page. The `fastapi-offline` package ships Swagger UI's bundle and
CSS, ReDoc's standalone bundle and the favicon (MIT; its assets are refreshed from the upstream
releases); we serve its static folder and render FastAPI's own HTML around it. Only the folder is used,
not its `FastAPIOffline` factory, so `create_app` keeps building the app itself.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))


def install(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve the assets under ASSETS_URL and the two pages, none of them in the OpenAPI schema."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(docs_url, include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = _root(request)
        return get_swagger_ui_html(
            openapi_url=root + openapi_url, title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            # Show each operation's id beside its path: the name client generators and our docs use.
            swagger_ui_parameters={"displayOperationId": True, **(app.swagger_ui_parameters or {})},
        )  # fmt: skip

    @app.get(redoc_url, include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = _root(request)
        return get_redoc_html(
            openapi_url=root + openapi_url, title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,  # a font CDN is no better than a script CDN offline
        )  # fmt: skip


def _root(request: Request) -> str:
    """The path prefix a proxy mounted the API under (uvicorn's --root-path), so the links still resolve."""
    return str(request.scope.get("root_path", "")).rstrip("/")

"""The governance API's interactive docs (/docs), served from this machine.

FastAPI's default /docs page loads Swagger UI from a CDN, so it is blank on a hub without
internet access (and every page view would tell the CDN who reads the docs). Here the page
loads `swagger-ui-dist` (npm registry, pinned by workspace/package-lock.json, copied to
workspace/static/swagger-ui by `make workspace-assets`) from the API's own /docs/assets.
ReDoc is not served (it too would come from a CDN).
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

SWAGGER_UI = Path(__file__).resolve().parent.parent / "workspace" / "static" / "swagger-ui"
FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")


def assets_dir() -> Path:
    return Path(os.environ.get("JOINEDUP_SWAGGER_UI_DIR", SWAGGER_UI))


def serve_docs_locally(app: FastAPI, assets: Path | None = None) -> None:
    """Add /docs (Swagger UI from /docs/assets) to an app created with docs_url=None and
    redoc_url=None. Without the assets /docs says how to install them rather than
    reaching for a CDN."""
    where = assets or assets_dir()
    missing = [f for f in FILES if not (where / f).is_file()]
    if not missing:
        app.mount("/docs/assets", StaticFiles(directory=str(where)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        if missing:
            return HTMLResponse(
                f"<p>API docs assets missing in {where.name}/ "
                f"({', '.join(missing)}): run make workspace-assets.</p>"
                f"<p>The OpenAPI document is at {app.openapi_url}.</p>",
                503,
            )
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - docs",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )

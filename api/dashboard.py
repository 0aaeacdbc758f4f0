"""The web dashboard: one page at `/` and its scripts and styles under `/ui/`, served from the
package directory `api/static/`.

Plain ES modules and CSS, no build step, nothing from a CDN, so it works offline. The page is a
client of the same `/v1` API as the CLI: the user pastes a token, the page keeps it in
localStorage and sends it as `Authorization: Bearer`. Routes live in the URL's hash
(`#/campaigns`, `#/campaigns/ID`, `#/cluster`, `#/login`), so the server serves one document.
Neither route is in the OpenAPI: it describes the API, not the page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).with_name("static")
# The page builds its DOM from data (no HTML strings) and loads only its own files; the policy
# makes an injected <script> or inline handler inert even if a bug let markup through.
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate (ETag) on every load, so an upgraded server's page is never stale.
    "Cache-Control": "no-cache",
}


class _StaticFiles(StaticFiles):
    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)


def mount_dashboard(app: FastAPI) -> None:
    """`GET /` (the page) and `GET /ui/...` (its files)."""
    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.mount("/ui", _StaticFiles(directory=STATIC), name="ui")

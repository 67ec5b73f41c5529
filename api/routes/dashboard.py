"""The admin dashboard: one static page that polls the admin JSON endpoints from the browser.

The page and its assets carry no data, so they are served without the bearer token (a browser cannot
send a header on navigation); the page asks for the token and sends it on every JSON call. Include
this router only where the admin router is included, so the page exists only when its data does.

Assets are served by explicit routes from a fixed list rather than a StaticFiles mount: the router is
then complete on its own (one ``include_router`` line), and no other file under ``api/static`` can be
reached by a crafted path.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse

from api.errors import MemvisorRoute

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
PAGE = "dashboard.html"
ASSETS = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}

# Everything the page loads comes from this server: the policy makes the browser refuse anything else,
# so a stray external reference fails loudly instead of leaking the admin token's page to a third party.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate on every load (cheap: FileResponse sends an ETag) so a deploy never pairs old JS
    # with new endpoints.
    "Cache-Control": "no-cache",
}

router = APIRouter(route_class=MemvisorRoute, prefix="/admin/dashboard", tags=["admin"])


def _file(name: str, media_type: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers=SECURITY_HEADERS)


@router.get("", summary="HTML dashboard: live memory and worker charts, workers, recent kills")
async def page() -> FileResponse:
    return _file(PAGE, "text/html; charset=utf-8")


@router.get("/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dashboard asset {name!r}")
    return _file(name, media_type)

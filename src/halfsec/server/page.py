"""The browser page: talk to the pipeline from a browser, and the bench's browser client.

``add_routes(app)`` serves ``static/index.html`` at ``/`` and the page's own files under
``/static/``.  Everything the page needs ships in this package (no CDN, no build step), so
it works offline and on a loopback-only server.  The page speaks the same protocol as
every other client (``docs/protocol.md``) over WebSocket ``/ws`` or WebRTC
(``POST /webrtc/offer`` + a data channel labelled ``events``); see ``docs/browser.md``.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""HTML, JS (including the AudioWorklet modules) and CSS of the page."""

_NO_CACHE = {"Cache-Control": "no-cache"}
_MOUNTED = web.AppKey("halfsec_web_page_mounted", bool)


async def _index(request: web.Request) -> web.StreamResponse:
    # no-cache: a page from an older server version must not talk to a newer one.
    return web.FileResponse(STATIC_DIR / "index.html", headers=_NO_CACHE)


def add_routes(app: web.Application) -> None:
    """Mount the page at ``/`` and its files at ``/static/`` (before the app starts).

    Idempotent: a second call on the same app (server.py and a test both mounting it)
    does nothing."""
    if app.get(_MOUNTED):
        return
    if not (STATIC_DIR / "index.html").is_file():  # a broken install, not a user error
        raise FileNotFoundError(f"the browser page is missing from {STATIC_DIR}")
    app.router.add_get("/", _index)
    app.router.add_static("/static/", STATIC_DIR, show_index=False, follow_symlinks=False)
    app[_MOUNTED] = True

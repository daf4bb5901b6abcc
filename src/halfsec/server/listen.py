"""Start an aiohttp application on a host and port: the server's and the edge's one way."""

from __future__ import annotations

from aiohttp import web


async def listen(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app``; returns its runner (``await runner.cleanup()`` stops it) and the
    bound port (the kernel's choice when ``port`` is 0, which tests use)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    srv = getattr(site, "_server", None)
    if srv is not None and srv.sockets:
        port = int(srv.sockets[0].getsockname()[1])
    return runner, port

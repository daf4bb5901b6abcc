"""Start an aiohttp application on a host and port: the server's and the edge's one way.

``listen_on`` serves an already listening socket instead: ``halfsec serve --workers N``
binds the port once in the parent and every worker accepts on the same socket
(``server/workers.py`` says why this and not ``SO_REUSEPORT``)."""

from __future__ import annotations

import socket

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


async def listen_on(app: web.Application, sock: socket.socket) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``sock`` (bound and listening, shared with other processes)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    return runner, int(sock.getsockname()[1])

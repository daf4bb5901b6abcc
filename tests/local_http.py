"""Start a test's aiohttp app on a free loopback port (the vendor-API doubles
``llm_double`` and ``openai_audio_double`` and the bench tests' fake servers listen the
same way)."""

from __future__ import annotations

from aiohttp import web


async def serve_local(app: web.Application) -> tuple[web.AppRunner, str]:
    """Run ``app`` on 127.0.0.1 at a port the kernel picks; return its runner and
    ``127.0.0.1:PORT`` for the caller's URL.  A short shutdown timeout: a double left
    with a hanging request must not hold the test's exit."""
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"{host}:{port}"

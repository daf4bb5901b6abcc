"""``halfsec edge``: the gateway near the user (see ``halfsec.transport.edge``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from ..config import HalfsecConfig
from ..errors import HalfsecError
from ..transport.edge import EdgeOptions, check_edge_bind, start_edge
from .common import err


def edge_command(config: HalfsecConfig, options: EdgeOptions) -> int:
    """Check the bind first (fails in milliseconds), then serve until SIGINT/SIGTERM.

    The origin does not have to be up yet: the pool keeps retrying in the background
    and clients get a clear ``origin_unavailable`` error meanwhile."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        check_edge_bind(options)
    except HalfsecError as e:
        err.print(f"[red]error:[/red] {e}")
        return 2

    async def main() -> None:
        _edge, runner, port = await start_edge(options, config.turn)
        err.print(
            f"halfsec edge: ws://{options.host}:{port}/ws -> {options.origin} "
            f"(pool {options.pool_size}, health: http://{options.host}:{port}/healthz)"
            f"{', token required' if options.token else ''}"
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except OSError as e:
        err.print(f"[red]error:[/red] cannot listen on {options.host}:{options.port} ({e})")
        return 2
    return 0

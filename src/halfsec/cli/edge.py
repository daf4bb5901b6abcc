"""``halfsec edge``: the gateway near the user (see ``halfsec.edge.gateway``)."""

from __future__ import annotations

import logging

from aiohttp.web import AppRunner

from halfsec.cli.common import err, run_service
from halfsec.config import HalfsecConfig
from halfsec.edge.gateway import start_edge
from halfsec.edge.options import EdgeOptions, check_edge_bind
from halfsec.errors import HalfsecError


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

    async def start() -> AppRunner:
        _edge, runner, port = await start_edge(options, config.turn)
        err.print(
            f"halfsec edge: ws://{options.host}:{port}/ws -> {options.origin} "
            f"(pool {options.pool_size}, health: http://{options.host}:{port}/healthz)"
            f"{', token required' if options.token else ''}"
        )
        return runner

    return run_service(start, options.host, options.port)

"""``halfsec serve``: the server (page, WebSocket, WebRTC) around engines loaded once."""

from __future__ import annotations

import logging

from aiohttp.web import AppRunner

from halfsec.cli.common import err, run_service
from halfsec.config import HalfsecConfig
from halfsec.errors import HalfsecError
from halfsec.runtime.build import build_engines
from halfsec.server.app import start_server
from halfsec.server.options import ServerOptions, check_bind


def serve_command(config: HalfsecConfig, options: ServerOptions) -> int:
    """Check the bind *before* loading models: an unsafe setup fails in milliseconds."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        check_bind(options)
    except HalfsecError as e:
        err.print(f"[red]error:[/red] {e}")
        return 2
    try:
        with err.status("loading engines..."):
            engines = build_engines(config)
    except HalfsecError as e:
        err.print(f"[red]error:[/red] {e}")
        return 2

    async def start() -> AppRunner:
        _server, runner, port = await start_server(engines, config, options)
        extra = (
            f", injecting {options.inject_delay_ms:g} ms before reply audio"
            if options.inject_delay_ms
            else ""
        )
        base = f"{options.host}:{port}"
        err.print(
            f"halfsec serve: page http://{base}/, WebSocket ws://{base}/ws, "
            f"WebRTC POST http://{base}/webrtc/offer (health: http://{base}/healthz)"
            f"{', token required' if options.token else ''}{extra}"
        )
        return runner

    return run_service(start, options.host, options.port)

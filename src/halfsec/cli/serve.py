"""``halfsec serve``: the server (page, WebSocket, WebRTC) around engines loaded once."""

from __future__ import annotations

import logging

from aiohttp.web import AppRunner

from halfsec.cli.common import err, run_service
from halfsec.config import HalfsecConfig
from halfsec.errors import HalfsecError
from halfsec.runtime.build import build_engines
from halfsec.runtime.faults import FaultPlan, parse_fault
from halfsec.server.app import start_server
from halfsec.server.options import ServerOptions, check_bind


def serve_command(
    config: HalfsecConfig,
    options: ServerOptions,
    faults: list[str] | None = None,
    fault_seed: int = 0,
    fault_every: int = 1,
) -> int:
    """Check the bind and the ``--fault`` specs *before* loading models: an unsafe or
    mistyped setup fails in milliseconds."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        check_bind(options)
        plan = (
            FaultPlan(tuple(parse_fault(f) for f in faults), fault_seed, fault_every)
            if faults
            else None
        )
    except HalfsecError as e:
        err.print(f"[red]error:[/red] {e}")
        return 2
    try:
        with err.status("loading engines..."):
            engines = build_engines(config, faults=plan)
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
        if plan is not None:
            armed = "every session" if plan.every == 1 else f"one session in {plan.every}"
            extra += (
                f", injecting faults {' '.join(str(f) for f in plan.specs)} "
                f"(seed {plan.seed}, {armed})"
            )
        base = f"{options.host}:{port}"
        err.print(
            f"halfsec serve: page http://{base}/, WebSocket ws://{base}/ws, "
            f"WebRTC POST http://{base}/webrtc/offer (health: http://{base}/healthz)"
            f"{', token required' if options.token else ''}{extra}"
        )
        return runner

    return run_service(start, options.host, options.port)

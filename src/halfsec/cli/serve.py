"""``halfsec serve``: the server (page, WebSocket, WebRTC) around engines loaded once,
in one process or in ``--workers N`` processes behind one port (``server/workers.py``)."""

from __future__ import annotations

import logging

from halfsec.cli.common import err
from halfsec.config import HalfsecConfig
from halfsec.errors import HalfsecError
from halfsec.runtime.build import build_engines
from halfsec.runtime.faults import FaultPlan, parse_fault
from halfsec.server.options import ServerOptions, check_bind
from halfsec.server.workers import Supervisor, WorkerSpec, bind_shared, run_process


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
    extra = (
        f", injecting {options.inject_delay_ms:g} ms before reply audio"
        if options.inject_delay_ms
        else ""
    )
    if plan is not None:
        armed = "every session" if plan.every == 1 else f"one session in {plan.every}"
        extra += (
            f", injecting faults {' '.join(str(f) for f in plan.specs)} (seed {plan.seed}, {armed})"
        )
    if options.workers > 1:
        return _serve_workers(config, options, tuple(faults or ()), fault_seed, fault_every, extra)
    try:
        with err.status("loading engines..."):
            engines = build_engines(config, faults=plan)
    except HalfsecError as e:
        err.print(f"[red]error:[/red] {e}")
        return 2

    def announce(port: int) -> None:
        _banner(options, port, extra)

    code = run_process(engines, config, options, on_listening=announce)
    if code:
        err.print(
            f"[red]error:[/red] cannot listen on {options.host}:{options.port}; "
            "pick another --port or stop the process using it"
        )
    return code


def _serve_workers(
    config: HalfsecConfig,
    options: ServerOptions,
    faults: tuple[str, ...],
    fault_seed: int,
    fault_every: int,
    extra: str,
) -> int:
    try:
        sock = bind_shared(options.host, options.port)
    except OSError as e:
        err.print(
            f"[red]error:[/red] cannot listen on {options.host}:{options.port} ({e}); "
            "pick another --port or stop the process using it"
        )
        return 2
    port = int(sock.getsockname()[1])
    _banner(options, port, f", {options.workers} worker processes (each loads its engines){extra}")
    spec = WorkerSpec(config, options, faults, fault_seed, fault_every)
    try:
        return Supervisor(spec, sock, options.workers).run()
    finally:
        sock.close()


def _banner(options: ServerOptions, port: int, extra: str) -> None:
    base = f"{options.host}:{port}"
    err.print(
        f"halfsec serve: page http://{base}/, WebSocket ws://{base}/ws, "
        f"WebRTC POST http://{base}/webrtc/offer (health: http://{base}/healthz, "
        f"readiness: http://{base}/ready)"
        f"{', token required' if options.token else ''}{extra}"
    )

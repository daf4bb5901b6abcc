"""``halfsec gateway``: Envoy in front of many ``halfsec serve``, nearest healthy zone first.

The command builds ``GatewayOptions`` from its flags, prints the Envoy configuration
(``--print-config``) or runs Envoy until SIGINT/SIGTERM, then drains: the listener stops
taking sessions, open sessions finish (at most ``--drain-timeout-s``), Envoy quits.  A
second signal during the drain stops at once.  ``--info-file`` gets one JSON object once
Envoy is live (``url``, ``ws_url``, ``admin_url``, ``pid``, ``config``, ``log``), for a
program that spawns the gateway (the regions lab) and needs its admin interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from halfsec.cli.common import err

if TYPE_CHECKING:
    from halfsec.gateway.config import GatewayOptions


def gateway(
    upstream: list[str] = typer.Option(
        ...,
        "--upstream",
        help="A halfsec server: NAME=URL@ZONE (@ZONE optional), e.g. near1=http://10.0.0.2:8765@eu "
        "(repeatable; list nearer zones first: they fail over in that order).",
    ),
    zone: str | None = typer.Option(
        None,
        help="The gateway's own zone: its servers get every session while healthy "
        "(default: the first --upstream's zone).",
    ),
    host: str = typer.Option("127.0.0.1", help="Interface the gateway listens on."),
    port: int = typer.Option(8780, help="TCP port (0: any free port)."),
    admin_host: str = typer.Option(
        "127.0.0.1", help="Envoy's admin interface (stats, /clusters); keep it private."
    ),
    admin_port: int = typer.Option(0, help="Admin port (0: any free port, printed)."),
    health_path: str = typer.Option(
        "/ready", help="Readiness path polled on each server (503 = no new sessions)."
    ),
    health_interval_s: float = typer.Option(0.5, help="Seconds between readiness polls."),
    health_timeout_s: float = typer.Option(0.4, help="A poll slower than this fails."),
    unhealthy_threshold: int = typer.Option(2, help="Failed polls that take a server out."),
    healthy_threshold: int = typer.Option(2, help="Passed polls that bring it back."),
    connect_timeout_s: float = typer.Option(1.0, help="TCP connect timeout to a server."),
    offer_timeout_s: float = typer.Option(15.0, help="Timeout of POST /webrtc/offer."),
    consecutive_5xx: int = typer.Option(3, help="5xx in a row that eject a server."),
    ejection_s: float = typer.Option(10.0, help="Base time an ejected server stays out."),
    overprovisioning_factor: int = typer.Option(
        140,
        help="Envoy's overprovisioning factor (%): a zone keeps all sessions until "
        "fewer than 100/factor of its servers are healthy.",
    ),
    drain_time_s: int = typer.Option(
        2, help="After SIGTERM the listener still accepts this long (whole seconds)."
    ),
    drain_timeout_s: float = typer.Option(
        120.0, help="After SIGTERM, open sessions may go on this long before Envoy stops."
    ),
    concurrency: int = typer.Option(1, help="Envoy worker threads."),
    print_config: bool = typer.Option(
        False, "--print-config", help="Print Envoy's configuration (JSON) and exit."
    ),
    info_file: Path | None = typer.Option(
        None, help="Write {url, ws_url, admin_url, pid, ...} here as JSON once Envoy is live."
    ),
    envoy_log_level: str = typer.Option("warning", help="Envoy's own log level."),
) -> None:
    """Many halfsec servers behind Envoy: WebSocket and WebRTC offers to the nearest
    ready zone, failover to the next, draining on shutdown (docs/gateway.md)."""
    from halfsec.gateway.config import GatewayOptions, build_envoy_config
    from halfsec.gateway.upstream import GatewayError, parse_upstream

    try:
        opts = GatewayOptions(
            upstreams=tuple(parse_upstream(u) for u in upstream),
            zone=zone,
            host=host,
            port=port,
            admin_host=admin_host,
            admin_port=admin_port,
            health_path=health_path,
            health_interval_s=health_interval_s,
            health_timeout_s=health_timeout_s,
            unhealthy_threshold=unhealthy_threshold,
            healthy_threshold=healthy_threshold,
            connect_timeout_s=connect_timeout_s,
            offer_timeout_s=offer_timeout_s,
            consecutive_5xx=consecutive_5xx,
            ejection_s=ejection_s,
            overprovisioning_factor=overprovisioning_factor,
            drain_time_s=drain_time_s,
            drain_timeout_s=drain_timeout_s,
            concurrency=concurrency,
        )
    except GatewayError as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    if print_config:
        typer.echo(json.dumps(build_envoy_config(opts), indent=2))
        raise typer.Exit(0)
    raise typer.Exit(asyncio.run(_serve(opts, info_file, envoy_log_level)))


async def _serve(opts: GatewayOptions, info_file: Path | None, envoy_log_level: str) -> int:
    from halfsec.gateway.envoy_process import EnvoyGateway
    from halfsec.gateway.upstream import GatewayError

    loop = asyncio.get_running_loop()
    signals = asyncio.Queue[int]()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, signals.put_nowait, int(sig))
    try:
        gw = EnvoyGateway(opts, log_level=envoy_log_level)
        with err.status("starting envoy and checking every server's readiness..."):
            await gw.start()
    except GatewayError as e:
        err.print(f"[red]error:[/red] {e}")
        return 2
    prio = opts.priorities()
    order = " > ".join(
        f"{z} ({', '.join(u.name for u in opts.upstreams if opts.zone_of(u) == z)})"
        for z in sorted(prio, key=prio.__getitem__)
    )
    err.print(
        f"halfsec gateway: {gw.ws_url} (WebSocket), {gw.url}/webrtc/offer; zones {order}; "
        f"admin {gw.admin_url}; envoy log {gw.log_path}"
    )
    if info_file is not None:
        info = {
            "url": gw.url,
            "ws_url": gw.ws_url,
            "admin_url": gw.admin_url,
            "pid": os.getpid(),
            "envoy_pid": gw.proc.pid if gw.proc else None,
            "config": str(gw.config_path),
            "log": str(gw.log_path),
        }
        tmp = info_file.with_suffix(info_file.suffix + ".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(info_file)  # whole or absent: a poller never reads half a file
    exited = asyncio.create_task(gw.wait())
    got_signal = asyncio.create_task(signals.get())
    done, _ = await asyncio.wait({exited, got_signal}, return_when=asyncio.FIRST_COMPLETED)
    if exited in done:
        got_signal.cancel()
        err.print(
            f"[red]error:[/red] envoy exited with code {exited.result()}; its log ends with:\n"
            f"{gw.log_tail()}"
        )
        return 1
    err.print(
        f"halfsec gateway: draining (up to {opts.drain_timeout_s:g} s for open sessions; "
        "signal again to stop now)"
    )
    drain: asyncio.Task[Any] = asyncio.create_task(gw.drain())
    again: asyncio.Task[Any] = asyncio.create_task(signals.get())
    done, _ = await asyncio.wait({drain, again}, return_when=asyncio.FIRST_COMPLETED)
    for t in (drain, again):
        t.cancel()
    await gw.stop(drain=False)
    exited.cancel()
    err.print("halfsec gateway: stopped" + (" after draining" if drain in done else ""))
    return 0

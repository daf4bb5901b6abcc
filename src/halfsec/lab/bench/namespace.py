"""``halfsec bench --net PROFILE --net-mode namespace``: the bench over real veth links.

Relay mode (the default) puts the lab's relays on 127.0.0.1, which skips most of the
kernel's network stack.  Namespace mode builds a ``NamespaceLab`` (client, middle and
server namespaces, two veth links, loss by nftables in the middle, the rate cap paced
by the relay) and runs each side where it belongs:

* the server: ``ip netns exec hs-srv-<id> halfsec serve --host 169.254.231.6`` (a
  non-loopback bind, so the bench gives it a token, generated when ``--token`` is
  absent: the server refuses an unauthenticated non-loopback bind, rightly);
* the relays: sockets made in the middle namespace (``lab.relay_socket``);
* the client (Python or Chromium): this process's event-loop thread is moved into the
  client namespace for the run (``enter_netns``), so every socket the clients create --
  inside aiohttp, aiortc's ICE, a Chromium child -- is the client's.

The middle does not forward, so the relays are the only path; the server's HTTP port
(health checks, WebRTC signaling, the browser page) is reached through one long-lived
TCP relay, and every recording gets fresh relays of its own (WebSocket: a TCP relay;
WebRTC: relays A and B, see ``netem.rtc_path``).  Namespace mode needs root, ``ip``,
``tc`` and ``nft``; without them it fails with the reason -- it never falls back to
loopback, which would measure something else under the same name.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from halfsec.lab.bench.options import BenchError, BenchOptions
from halfsec.lab.bench.pcap import Capture, PcapError, capture, compare_with_relays, read_pcap
from halfsec.lab.bench.server_process import ServerProcess
from halfsec.lab.netem.namespaces import NamespaceLab, enter_netns, namespaces_supported
from halfsec.lab.netem.path import NetPath, no_net
from halfsec.lab.netem.profile import parse_net

SERVER_PORT = 8765
"""The server's port inside its own namespace (nothing else lives there)."""


def namespace_problem() -> str | None:
    """Why this host cannot run namespace mode (with what to do), or None."""
    ok, why = namespaces_supported()
    if ok:
        return None
    return (
        f"--net-mode namespace is not possible here: {why}.  Run the bench as root on a "
        "host with iproute2 and nftables (sh src/halfsec/lab/netem/setup_host.sh), or "
        "use --net-mode relay (loopback relays, no root needed)"
    )


def check_namespace_options(opts: BenchOptions) -> None:
    """Bad combinations fail before anything starts."""
    if no_net(opts.net):
        raise BenchError("--net-mode namespace needs --net PROFILE (the network to simulate)")
    if opts.server is not None:
        raise BenchError(
            "--net-mode namespace starts its own server inside the server namespace; "
            "drop --server (or use --net-mode relay to reach an existing server)"
        )
    parse_net(str(opts.net))


def with_token(opts: BenchOptions) -> BenchOptions:
    """A token for the namespaced server (it binds a non-loopback address)."""
    if opts.token:
        return opts
    token = secrets.token_urlsafe(16)
    return replace(opts, token=token, client=replace(opts.client, token=token))


@asynccontextmanager
async def namespace_server(
    opts: BenchOptions, overrides: list[str], extra: list[str]
) -> AsyncIterator[tuple[ServerProcess, NetPath]]:
    """Build the lab, start the server in its namespace, and yield with this thread in
    the client namespace; everything is torn down on exit, also after a failure."""
    problem = await asyncio.to_thread(namespace_problem)
    if problem is not None:
        raise BenchError(problem)
    check_namespace_options(opts)
    spec = parse_net(str(opts.net))
    # Chromium gathers WebRTC candidates only on an interface with a default route.
    token = opts.token
    if not token:
        raise BenchError("namespace mode needs a token (with_token(opts) makes one)")
    if "--token" not in extra:
        extra = [*extra, "--token", token]
    lab = NamespaceLab(up=spec, down=spec, client_default_route=opts.client_kind == "browser")
    await asyncio.to_thread(lab.__enter__)
    path = NetPath(opts.net, lab, SERVER_PORT)
    cap: Capture | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            if opts.pcap is not None:
                cap = await stack.enter_async_context(capture(lab.mid_ns, opts.pcap))
            with enter_netns(lab.cli_ns):
                async with lab.tcp_relay(SERVER_PORT) as http:
                    proc = ServerProcess(
                        opts.config,
                        overrides,
                        opts.inject_delay_ms,
                        extra,
                        opts.server_start_timeout_s,
                        host=lab.server_host,
                        port=SERVER_PORT,
                        netns=lab.srv_ns,
                    )
                    proc.connect = (lab.relay_host, http.port)
                    async with proc:
                        yield proc, path
        if opts.pcap is not None:
            missed = cap.missed if cap is not None else None
            path.pcap = await asyncio.to_thread(pcap_figures, opts.pcap, path, missed)
    finally:
        await asyncio.to_thread(lab.cleanup)


def pcap_figures(pcap: Path, path: NetPath, missed: int | None = None) -> dict[str, Any]:
    """The capture's figures beside each recording relay's own (``lab.bench.pcap``);
    ``capture_missed``: packets tcpdump did not write (0: the capture is complete)."""
    try:
        packets = read_pcap(pcap)
    except (OSError, PcapError) as e:
        return {"file": str(pcap), "error": str(e)}
    relays = [(port, r.counters()) for port, r in path.relays]
    return {
        "file": str(pcap),
        "packets": len(packets),
        "capture_missed": missed,
        **compare_with_relays(packets, relays, SERVER_PORT),
    }

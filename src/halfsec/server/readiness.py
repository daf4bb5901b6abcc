"""Whether this server takes new sessions: ``GET /ready``, the ``busy`` refusal, draining.

Three states, one answer for a load balancer (Envoy health-checks ``/ready``) and for
a caller knocking at ``/ws``, ``/webrtc/offer`` or ``/twilio``:

* **ready**: saturation under 1 (``load_meter``) and fewer than ``--max-sessions`` open:
  ``/ready`` is 200 and a new session is admitted;
* **saturated**: the measured load is full (or the session cap is reached): ``/ready``
  is 503 ``"reason": "saturated"`` and a new session gets HTTP 503 ``busy`` with
  ``Retry-After`` -- refused before the upgrade, so it costs the server nothing and the
  sessions already admitted keep their SLO;
* **draining** (SIGTERM): ``/ready`` is 503 ``"reason": "draining"``, new sessions get
  ``busy`` with a short ``Retry-After`` (another server, or this one's replacement, will
  take them), and the open sessions run to their end.

The body also carries ``signals``: each load signal over its limit (``turns``, ``lag``,
``wait``), so an operator sees which one is full.  ``/ready`` reads counters only: no engine call, no lock, so a probe every second costs
nothing and answers even when the decode lanes are full.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from halfsec.server.load_meter import LoadMeter

__all__ = ["Busy", "Readiness", "busy_response"]

log = logging.getLogger("halfsec.admission")

DRAIN_RETRY_S = 1
"""Retry-After while draining: the caller should go elsewhere (or wait for the
replacement), not wait for this server."""


@dataclass(frozen=True, slots=True)
class Busy:
    """Why a new session is refused now, and when to try again."""

    reason: str
    """``saturated`` or ``draining``."""
    retry_after_s: int
    message: str


def busy_response(busy: Busy) -> web.Response:
    """HTTP 503 with ``Retry-After`` and ``{"error": "busy", "message", "retry_after_s"}``
    (docs/protocol.md)."""
    return web.json_response(
        {"error": "busy", "message": busy.message, "retry_after_s": busy.retry_after_s},
        status=503,
        headers={"Retry-After": str(busy.retry_after_s)},
    )


class Readiness:
    """This process's admission state (see the module docstring)."""

    def __init__(
        self,
        meter: LoadMeter,
        sessions: Callable[[], int],
        max_sessions: int,
        pid: int | None = None,
    ) -> None:
        self.meter = meter
        self._sessions = sessions
        self.max_sessions = max_sessions
        self.pid = os.getpid() if pid is None else pid
        self.draining = False

    @property
    def retry_after_s(self) -> int:
        """When a refused caller should try again: once the load window has moved on."""
        return max(1, math.ceil(self.meter.limits.window_s / 2))

    def state(self) -> tuple[dict[str, Any], Busy | None]:
        """The ``/ready`` body and, when no session may start now, why."""
        snap = self.meter.snapshot()
        sessions = self._sessions()
        admits = self.meter.admits(snap.saturation)
        busy: Busy | None = None
        if self.draining:
            busy = Busy(
                "draining",
                DRAIN_RETRY_S,
                "this server is shutting down and takes no new sessions; reconnect (to "
                f"another server) in {DRAIN_RETRY_S} s",
            )
        elif sessions >= self.max_sessions:
            busy = Busy(
                "saturated",
                self.retry_after_s,
                f"server busy: {self.max_sessions} sessions already open (--max-sessions); "
                f"retry in {self.retry_after_s} s or connect to another server",
            )
        elif not admits:
            busy = Busy(
                "saturated",
                self.retry_after_s,
                f"server busy: at {snap.saturation:.0%} of its measured capacity, a new "
                f"session would cost the open ones their latency; retry in "
                f"{self.retry_after_s} s or connect to another server",
            )
        body: dict[str, Any] = {
            "ready": busy is None,
            "saturation": round(snap.saturation, 3),
            "sessions": sessions,
            "active_turns": snap.active_turns,
            "draining": self.draining,
            "worker": self.pid,
            "signals": {k: round(v, 3) for k, v in snap.terms.items()},
            "duty": round(snap.duty, 3),
        }
        if busy is not None:
            body["reason"] = busy.reason
        return body, busy

    def busy(self) -> Busy | None:
        """Why a new session may not start now (None: it may).  Each decision is logged
        with the signals it was made on: what admitted one caller too many is read from
        these lines (``benchmarks/admission_bench.py`` collects them)."""
        body, busy = self.state()
        log.info(
            "admission %s worker=%d sessions=%d saturation=%.3f active=%d duty=%.3f %s",
            "admit" if busy is None else "refuse",
            self.pid,
            body["sessions"],
            body["saturation"],
            body["active_turns"],
            body["duty"],
            " ".join(f"{k}={v:.3f}" for k, v in body["signals"].items()),
        )
        return busy

    async def handle(self, request: web.Request) -> web.Response:
        """``GET /ready``: 200 when a new session would be admitted, else 503."""
        body, busy = self.state()
        return web.json_response(body, status=200 if busy is None else 503)

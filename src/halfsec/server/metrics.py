"""Prometheus metrics of ``halfsec serve``, scraped at ``GET /metrics``.

What an operator needs to see that the server keeps its promise (a reply in under half a
second) and where it breaks: how many turns it answered, how long the user waited on the
server's side of the wire, which stage took the time, how many sessions are open or were
turned away, and how often a turn fell back or failed.

Every server has its own ``CollectorRegistry``: tests (and an embedding program) run
several servers in one process, and the default global registry would mix their counts
and refuse the second server's metrics as duplicates.

The connection calls one observer per session (``SessionMetrics.frame``) with every frame
its session emits, the same frames the trace recorder sees; nothing else of the pipeline
knows metrics exist.  Like tracing, recording never raises into a conversation.

Times are in seconds (Prometheus' convention).  ``halfsec_server_v2v_seconds`` is the
server's share of voice to voice: from the detector's estimate of the real end of speech
(the ``endpointing`` span's start, see ``trace.server_spans``) to the moment the sender
loop hands the turn's first reply audio to the transport.  The user's full wait adds the
network both ways, the client's buffer and the reply's leading silence; only a client can
measure that (``halfsec bench``, ``measure.v2v``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from halfsec.clock import now_ns
from halfsec.frames import (
    EndOfTurn,
    ErrorFrame,
    Frame,
    Interruption,
    ReplyAudio,
    ReplyDone,
    ReplyText,
    SpeechStarted,
    TimingMark,
)
from halfsec.trace import names

__all__ = ["LATENCY_BUCKETS_S", "STAGE_MARKS", "ServerMetrics", "SessionMetrics"]

log = logging.getLogger("halfsec.metrics")

LATENCY_BUCKETS_S = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.125,
    0.15,
    0.2,
    0.25,
    0.3,
    0.35,
    0.4,
    0.45,
    0.5,
    0.6,
    0.7,
    0.8,
    1.0,
    1.5,
    2.5,
    5.0,
)
"""25-50 ms apart between 50 ms and 500 ms, where a voice agent's latency lives and a
budget is decided; coarser up to 1 s; a few wide ones above for failures."""

STAGE_MARKS: dict[str, tuple[str, str]] = {
    "stt": (names.MARK_STT_START, names.MARK_STT_END),
    "logic_first_clause": (names.MARK_LOGIC_START, names.MARK_LOGIC_FIRST_CLAUSE),
    "tts_first_audio": (names.MARK_TTS_START, names.MARK_TTS_FIRST_AUDIO),
}
"""Stage label -> (start mark, end mark); the labels are ``halfsec run``'s stage names
without ``_ms``.  ``endpointing`` is the fourth stage, measured from ``EndOfTurn``."""

_REFUSAL_REASONS = {401: "unauthorized", 403: "origin", 503: "busy"}

SPEAKING_STALE_NS = 15_000_000_000
"""A user "speaking" longer than this without an end of turn is not counted as an active
turn any more (a noise that never became a turn must not hold capacity)."""


def _asyncio_tasks() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # no running loop (an exposition outside the server)
        return 0.0


class ServerMetrics:
    """One server's metrics and its ``/metrics`` handler."""

    def __init__(self, open_sessions: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds of
        # this process (one worker's with --workers N): what a load run against a server
        # it did not start can sample (``lab.load.sampler``); the global registry that
        # would carry them by default is not used (see the module docstring).
        ProcessCollector(registry=reg)
        self.turns = Counter(
            "halfsec_turns",
            "Committed turns by outcome: answered (reply synthesized), silent (nothing "
            "recognised, no reply), interrupted (barge-in before the reply was done), failed",
            ["outcome"],
            registry=reg,
        )
        self.interruptions = Counter(
            "halfsec_interruptions", "Barge-ins: the user spoke over a reply", registry=reg
        )
        self.v2v = Histogram(
            "halfsec_server_v2v_seconds",
            "Estimated end of speech -> first reply audio handed to the transport (server "
            "clock; excludes network, client buffer and the reply's leading silence)",
            buckets=LATENCY_BUCKETS_S,
            registry=reg,
        )
        self.stages = Histogram(
            "halfsec_stage_seconds",
            "Time of one pipeline stage of a committed turn: endpointing (estimated end of "
            "speech -> end-of-turn decision), stt (final decode), logic_first_clause, "
            "tts_first_audio",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=reg,
        )
        self.active = Gauge(
            "halfsec_active_sessions", "Open sessions of every transport", registry=reg
        )
        self.active.set_function(lambda: float(open_sessions()))
        self.sessions = Counter(
            "halfsec_sessions", "Sessions started (every transport)", registry=reg
        )
        self.refused = Counter(
            "halfsec_refused_sessions",
            "Connection attempts turned away: unauthorized (token), origin, busy "
            "(--max-sessions reached)",
            ["reason"],
            registry=reg,
        )
        self.fallbacks = Counter(
            "halfsec_fallbacks",
            "Turns answered by a fallback; kind logic: the domain's polite fallback reply "
            "(no intent matched, or the LLM failed or was too slow)",
            ["kind"],
            registry=reg,
        )
        self._live: set[SessionMetrics] = set()
        self.active_turns_gauge = Gauge(
            "halfsec_active_turns",
            "Turns in progress: the user is speaking, or the reply is being computed "
            "(what admission counts, see server/load_meter.py)",
            registry=reg,
        )
        self.active_turns_gauge.set_function(lambda: float(self.active_turns()))
        self.tasks = Gauge(
            "halfsec_asyncio_tasks",
            "asyncio tasks alive on this process's event loop (a leak grows it over a soak)",
            registry=reg,
        )
        self.tasks.set_function(_asyncio_tasks)
        self.saturation = Gauge(
            "halfsec_saturation",
            "Measured load over capacity (max of active turns, event-loop lag p95 and "
            "decode queue wait p95, each over its limit); new sessions are refused at 1",
            registry=reg,
        )
        self.loop_lag = Gauge(
            "halfsec_event_loop_lag_seconds",
            "p95 lateness of a 100 ms timer on the event loop over the load window",
            registry=reg,
        )
        self.draining = Gauge(
            "halfsec_draining", "1 while the server drains (SIGTERM): no new sessions", registry=reg
        )
        self.shed = Gauge(
            "halfsec_partials_shed",
            "Partial transcripts refused under load since start (stt/lane_load.py)",
            registry=reg,
        )
        self.errors = Counter(
            "halfsec_errors",
            "Errors reported to clients, by code (turn_failed, stt_partial_failed, "
            "bad_audio, protocol errors, internal_error, ...)",
            ["code"],
            registry=reg,
        )

    def session(self) -> SessionMetrics:
        """A session started: its observer."""
        self.sessions.inc()
        observer = SessionMetrics(self)
        self._live.add(observer)
        return observer

    def active_turns(self) -> int:
        """Turns in progress over every open session (the load meter's first signal)."""
        now = now_ns()
        return sum(s.active_turns(now) for s in list(self._live))

    def refusal(self, status: int) -> None:
        self.refused.labels(_REFUSAL_REASONS.get(status, str(status))).inc()

    def error(self, code: str) -> None:
        self.errors.labels(code).inc()

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)

    async def handle(self, request: web.Request) -> web.Response:
        """``GET /metrics``."""
        return web.Response(body=self.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


@dataclass
class _Turn:
    speech_end_ns: int
    marks: dict[str, int] = field(default_factory=dict)
    first_audio: bool = False
    replied: bool = False
    fell_back: bool = False


class SessionMetrics:
    """One session's observer: sees every frame the session emits, in order.

    Only committed turns (``EndOfTurn`` seen) are counted: speculative work the session
    threw away never reaches the sender, and a turn the user kept talking through is not a
    turn."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.m = metrics
        self._turns: dict[int, _Turn] = {}
        self._speaking_since: int | None = None
        """When the user began the turn they are still speaking (None: not speaking)."""

    def active_turns(self, now: int) -> int:
        """This session's turns in progress: the committed ones not yet answered, plus
        one while the user speaks (for at most ``SPEAKING_STALE_NS``)."""
        since = self._speaking_since
        speaking = since is not None and now - since < SPEAKING_STALE_NS
        return len(self._turns) + int(speaking)

    def frame(self, f: Frame) -> None:
        try:
            self._frame(f)
        except Exception:  # metrics must never end a session
            log.exception("metrics: could not record a frame")

    def _frame(self, f: Frame) -> None:
        if isinstance(f, ErrorFrame):
            self.m.error(f.code)
        if isinstance(f, SpeechStarted):
            self._speaking_since = f.t_ns
            return
        if isinstance(f, EndOfTurn):
            self._speaking_since = None
            lag_s = max(0.0, f.audio_ms - f.speech_end_ms) / 1e3
            self._turns[f.turn_id] = _Turn(speech_end_ns=f.t_ns - int(lag_s * 1e9))
            self.m.stages.labels("endpointing").observe(lag_s)
            return
        if isinstance(f, Interruption):
            self.m.interruptions.inc()
            if self._turns.pop(f.turn_id, None) is not None:
                self.m.turns.labels("interrupted").inc()
            return
        t = self._turns.get(f.turn_id)
        if t is None:
            return
        if isinstance(f, TimingMark):
            t.marks[f.name] = f.t_ns
            for stage, (start, end) in STAGE_MARKS.items():
                if f.name == end and start in t.marks:
                    self.m.stages.labels(stage).observe((f.t_ns - t.marks[start]) / 1e9)
        elif isinstance(f, ReplyAudio) and not t.first_audio:
            # Seen by the sender loop right before it hands the audio on: frames of a
            # speculative turn carry earlier stamps but cannot leave before the commit.
            t.first_audio = True
            self.m.v2v.observe(max(0.0, (now_ns() - t.speech_end_ns) / 1e9))
        elif isinstance(f, ReplyText):
            t.replied = True
            if f.source == "fallback" and not t.fell_back:
                t.fell_back = True
                self.m.fallbacks.labels("logic").inc()
        elif isinstance(f, ReplyDone):
            del self._turns[f.turn_id]
            self.m.turns.labels("answered" if t.replied else "silent").inc()
        elif isinstance(f, ErrorFrame) and not f.code.endswith("_partial_failed"):
            del self._turns[f.turn_id]
            self.m.turns.labels("failed").inc()

    def close(self) -> None:
        """The session ended; committed turns still open were cut by the hang-up."""
        self._turns.clear()
        self._speaking_since = None
        self.m._live.discard(self)

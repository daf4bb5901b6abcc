"""One client's conversation on the server, whatever transport carries it.

Every transport (``websocket``, ``webrtc``) turns a client into a ``ClientConnection``: a
``VoiceSession``, the trace context of each turn, the turns the user interrupted, and
the one loop that forwards the session's frames to the client.  A transport only says how
its bytes leave (``send_json``, ``send_reply_audio``) and how it ends; what is sent, in which order, what an interruption drops and what goes through the
fault injector's delay line is decided here, once (the idea of Pipecat's single output
base for all transports).

``SessionServices`` is everything a connection may use of the server: the engines and
configuration that start a conversation, the options that bound it, the tracer that
records it, and the registry of open connections that ``--max-sessions`` caps.  It is
public and typed, so a transport never reaches into the server's internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web

from halfsec.clock import now_ns
from halfsec.config import HalfsecConfig
from halfsec.frames import (
    EndOfTurn,
    ErrorFrame,
    Frame,
    Interruption,
    ReplyAudio,
    ReplyDone,
    ReplyPaused,
    ReplyResumed,
    SpeechStarted,
)
from halfsec.runtime.engines import Engines
from halfsec.runtime.session import VoiceSession
from halfsec.server.admission import RealTimeAudio, Refusal
from halfsec.server.metrics import ServerMetrics
from halfsec.server.options import ServerOptions
from halfsec.trace.setup import Tracing
from halfsec.trace.turns import TurnTraceRecorder, engine_models, session_attributes
from halfsec.turn.options import TurnOptions
from halfsec.wire.protocol import error_event, frame_to_event, session_started_event
from halfsec.wire.realtime_audio import InboundAudio, PacedOpusOut

log = logging.getLogger("halfsec.serve")

TRACED_EVENTS = ("vad.speech_started", "turn.end", "reply.done")
"""Events that carry their turn's ``traceparent`` back to the client."""

JITTER_SUMMARY_KEYS = (
    "jitter_buffer_ms",
    "delay_p95_ms",
    "target_delay_ms",
    "played",
    "concealed",
    "concealed_pct",
    "fec_recovered",
    "late_dropped",
    "malformed",
)


def jitter_event(turn_id: int, summary: dict[str, Any]) -> dict[str, Any]:
    """``timing`` event ``jitter_buffer`` with the server's input jitter-buffer stats for
    the turn just ended, so the lab can show the buffer's share of the latency."""
    return {
        "type": "timing",
        "turn_id": turn_id,
        "t_server_ns": now_ns(),
        "name": "jitter_buffer",
        "attrs": {k: summary.get(k) for k in JITTER_SUMMARY_KEYS},
    }


@dataclass
class SessionServices:
    """What the server lends every connection (see the module docstring)."""

    engines: Engines
    config: HalfsecConfig
    options: ServerOptions
    tracing: Tracing | None = None
    connections: dict[str, ClientConnection] = field(default_factory=dict)
    """Open connections of every transport, by session id."""
    models: dict[str, str] = field(init=False)
    metrics: ServerMetrics = field(init=False)
    """This server's Prometheus metrics (``GET /metrics``)."""

    def __post_init__(self) -> None:
        self.models = engine_models(self.engines, self.config)
        self.metrics = ServerMetrics(lambda: len(self.connections))

    def refusal(self, request: web.Request, body_token: str | None = None) -> Refusal | None:
        """Why ``request`` may not open a session now (token, Origin, session cap)."""
        refusal = self.options.admission.refusal(request, len(self.connections), body_token)
        if refusal is not None:
            self.metrics.refusal(refusal.status)
        return refusal

    def voice_session(self, turn: TurnOptions | None = None, phone: bool = False) -> VoiceSession:
        """A conversation on the shared engines; ``turn`` replaces the configured turn
        options (a phone line's band-limited audio needs other VAD thresholds), and
        ``phone`` gives it the phone calls' recognizer (``stt.phone_model``)."""
        cfg = self.config
        engines = self.engines
        if phone and engines.phone_stt is not None:
            engines = dataclasses.replace(engines, stt=engines.phone_stt)
        return VoiceSession(
            engines, turn or cfg.turn, cfg.session, output_rate=cfg.audio.output_rate
        )

    def trace_recorder(self, session_id: str) -> TurnTraceRecorder | None:
        if self.tracing is None:
            return None
        attrs = session_attributes(session_id, self.models)
        return TurnTraceRecorder(self.tracing.tracer, models=self.models, attributes=attrs)

    def session_started(self, session_id: str, **extra: Any) -> dict[str, Any]:
        """The ``session.started`` event, with what the client asked for in ``extra``."""
        cfg = self.config
        return session_started_event(
            session_id, cfg.audio.output_rate, now_ns(), domain=cfg.logic.domain, **extra
        )


@dataclass(frozen=True, slots=True)
class _Delayed:
    """An item in the fault injector's delay line: reply audio or a ``reply.done``."""

    due_ns: int
    turn_id: int
    payload: np.ndarray | dict[str, Any]


class ClientConnection(ABC):
    """One client's conversation; subclasses say how bytes reach the client."""

    def __init__(self, services: SessionServices) -> None:
        self.services = services
        self.session_id = uuid.uuid4().hex[:12]
        self.session: VoiceSession | None = None
        self.inbound: InboundAudio | None = None
        """Opus input: jitter buffer + FEC/PLC, paced into the session (None for PCM)."""
        self.paced_out: PacedOpusOut | None = None
        """Opus reply audio released in real time (WebRTC, WebSocket with Opus output)."""
        self.recorder: TurnTraceRecorder | None = None
        self.next_traceparent: str | None = None
        """Parent of the next turn's spans (``session.start`` or ``trace.context``)."""
        self.turn_traces: dict[int, str] = {}
        self.cancelled_turns: set[int] = set()
        """Turns the user interrupted: none of their reply audio may reach the client.
        The only record of them; every sender of this connection asks ``is_cancelled``."""
        self.closing = False
        opt = services.options
        self.audio_budget = RealTimeAudio(opt.max_audio_rate, opt.audio_burst_s * 1e3)
        """Real-time admission of this client's audio (every transport asks it)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._crashed = False

    # -- what a transport provides --------------------------------------------------------
    @abstractmethod
    async def send_json(self, obj: dict[str, Any]) -> None:
        """Send one JSON event (never raises: a vanished client is the close path's job)."""

    @abstractmethod
    async def send_reply_audio(self, turn_id: int, pcm: np.ndarray) -> None:
        """Send reply audio now, or queue it for a paced sender."""

    @abstractmethod
    def reply_complete(self, turn_id: int) -> None:
        """``reply.done`` of ``turn_id`` went out: all its audio has been handed on (a
        transport that knows when its client hears the end tells ``playback_ended``)."""

    @abstractmethod
    async def end_after_fatal_error(self) -> None:
        """The session failed for good: close the connection."""

    @abstractmethod
    async def shutdown(self) -> None:
        """The server is going down: close this connection now."""

    # -- shared -------------------------------------------------------------------------
    def supervise(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run one of this session's own tasks (the event sender, a paced audio sender,
        a message handler).  If it dies of an exception the session ends with a fatal
        ``internal_error`` naming it, instead of taking audio and answering nothing for
        ever; the server and the other sessions go on."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None or self.closing or self._crashed:
            return
        self._crashed = True  # one report; the task that reports cannot re-trigger it
        exc = task.exception()
        log.error("session %s: task %s failed", self.session_id, task.get_name(), exc_info=exc)
        self.supervise(self._end_after_crash(task.get_name(), exc), f"fail-{self.session_id}")

    async def _end_after_crash(self, name: str, exc: BaseException | None) -> None:
        await self.error(
            "internal_error",
            f"the session's task {name} failed ({type(exc).__name__}: {exc}); the session "
            "ended, reconnect to start a new one",
            fatal=True,
        )
        await self.end_after_fatal_error()

    def cancel_tasks(self) -> None:
        """Cancel this session's supervised tasks (all but the caller)."""
        current = asyncio.current_task()
        for t in list(self._tasks):
            if t is not current and not t.done():
                t.cancel()

    can_pause_reply = True
    """Whether this transport can pause a reply and resume it where it stopped.  A phone
    line cannot (Twilio's ``clear`` drops what it holds, and nothing pauses it), so there
    speech during a reply cancels it as soon as it is speech (``session.barge_in``)."""

    def open_voice_session(
        self, opus_input: bool, turn: TurnOptions | None = None, phone: bool = False
    ) -> VoiceSession:
        """Start the conversation; with ``opus_input`` its audio comes in through a
        jitter buffer (``InboundAudio``) that reports undecodable packets to the client;
        ``phone``: a call's narrowband audio, for the phone recognizer."""
        session = self.services.voice_session(turn, phone=phone)
        if not self.can_pause_reply:
            session.opt = dataclasses.replace(session.opt, barge_in="cancel")
        self.session = session
        if opus_input:
            self.inbound = InboundAudio(session.push, on_malformed=self._bad_opus)
        return session

    async def _bad_opus(self, n: int) -> None:
        await self.error("bad_audio", f"{n} Opus packet(s) could not be decoded; concealed")

    async def error(self, code: str, message: str, fatal: bool = False) -> None:
        self.services.metrics.error(code)
        await self.send_json(error_event(code, message, now_ns(), fatal=fatal))

    def is_cancelled(self, turn_id: int) -> bool:
        return turn_id in self.cancelled_turns

    def playback_ended(self, turn_id: int, at_ns: int | None = None) -> None:
        """The reply of ``turn_id`` finished (or will finish at ``at_ns``) playing on the
        client: the session's barge-in decision uses this instead of its guess."""
        if self.session is not None:
            self.session.playback_ended(turn_id, at_ns)

    async def close_session(self) -> None:
        """Stop the audio input and cancel the turn in flight; ends ``events()``."""
        if self.inbound is not None:
            await self.inbound.close()
        if self.session is not None:
            with contextlib.suppress(Exception):
                await self.session.close()

    def event_for(self, f: Frame) -> dict[str, Any] | None:
        """The JSON event of a frame, with its turn's trace context where it belongs."""
        ev = frame_to_event(f)
        if ev is None:
            return None
        if isinstance(f, SpeechStarted) and f.turn_id not in self.turn_traces:
            # The trace context sent before a turn parents that turn's spans.
            if self.next_traceparent is not None:
                self.turn_traces[f.turn_id] = self.next_traceparent
                self.next_traceparent = None
                if self.recorder is not None:
                    self.recorder.set_traceparent(f.turn_id, self.turn_traces[f.turn_id])
        tp = self.turn_traces.get(f.turn_id)
        if tp is not None and ev["type"] in TRACED_EVENTS:
            ev["traceparent"] = tp
        return ev

    # -- server -> client ---------------------------------------------------------------
    async def run_sender(self, started: dict[str, Any] | None) -> None:
        """Send ``started`` (None: the transport already did), then forward the session's
        frames in order; audio (and the ``reply.done`` that closes it) optionally through
        the ``--inject-delay-ms`` delay line."""
        session = self.session
        assert session is not None
        self.recorder = self.services.trace_recorder(self.session_id)
        metrics = self.services.metrics.session()
        if started is not None:
            await self.send_json(started)
        delay_ms = self.services.options.inject_delay_ms
        delay_ns = int(delay_ms * 1e6)
        delayed: asyncio.Queue[_Delayed | None] = asyncio.Queue()
        delay_task = asyncio.create_task(self._delay_line(delayed)) if delay_ns > 0 else None
        try:
            async for f in session.events():
                if self.recorder is not None:
                    self.recorder.frame(f)
                metrics.frame(f)
                if isinstance(f, ReplyAudio):
                    if self.is_cancelled(f.turn_id):
                        continue
                    if delay_task is not None:
                        delayed.put_nowait(_Delayed(now_ns() + delay_ns, f.turn_id, f.pcm))
                    else:
                        await self.send_reply_audio(f.turn_id, f.pcm)
                    continue
                if isinstance(f, Interruption):
                    self.cancelled_turns.add(f.turn_id)
                    if self.paced_out is not None:
                        self.paced_out.flush(f.turn_id)
                elif isinstance(f, ReplyPaused | ReplyResumed) and self.paced_out is not None:
                    # A paced sender holds the rest of the reply; a client that got it all
                    # already (PCM16 over /ws) pauses its own playout on the event.
                    if isinstance(f, ReplyPaused):
                        self.paced_out.pause(f.turn_id)
                    else:
                        self.paced_out.resume(f.turn_id)
                ev = self.event_for(f)
                if ev is not None and isinstance(f, ReplyDone):
                    if delay_task is not None:
                        # Through the delay line too: ``reply.done`` must not overtake the
                        # audio it closes (a client may stop listening once it is done).
                        delayed.put_nowait(_Delayed(now_ns() + delay_ns, f.turn_id, ev))
                    else:
                        await self._send_reply_done(f.turn_id, ev)
                elif ev is not None:
                    await self.send_json(ev)
                if isinstance(f, EndOfTurn) and self.inbound is not None:
                    await self.send_json(jitter_event(f.turn_id, self.inbound.turn_summary()))
                if isinstance(f, ErrorFrame) and f.fatal:
                    await self.end_after_fatal_error()
                    break
        finally:
            if delay_task is not None:
                delayed.put_nowait(None)
                try:
                    await asyncio.wait_for(delay_task, timeout=delay_ms / 1e3 + 1)
                except (TimeoutError, asyncio.CancelledError, Exception):
                    delay_task.cancel()
            if self.recorder is not None:
                self.recorder.close()
            metrics.close()

    async def _send_reply_done(self, turn_id: int, ev: dict[str, Any]) -> None:
        await self.send_json(ev)
        self.reply_complete(turn_id)

    async def _delay_line(self, q: asyncio.Queue[_Delayed | None]) -> None:
        while True:
            item = await q.get()
            if item is None or self.closing:
                return
            wait = (item.due_ns - now_ns()) / 1e9
            if wait > 0:
                await asyncio.sleep(wait)
            if isinstance(item.payload, dict):
                await self._send_reply_done(item.turn_id, item.payload)
            elif not self.is_cancelled(item.turn_id):
                await self.send_reply_audio(item.turn_id, item.payload)

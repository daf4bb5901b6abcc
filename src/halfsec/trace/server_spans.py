"""Server side of a turn's trace: frames and timing marks -> spans with explicit times.

The session already stamps every frame with ``time.monotonic_ns()``; spans are created
*after* the turn from those stamps (start/end given explicitly, converted to epoch ns
through one ``ClockAnchor``) instead of being opened and closed live.  That keeps tracing
off the hot path, and it also means speculative work that the session threw away never
shows up: only the committed turn's frames are passed in.

Spans (all children of ``server.turn``, itself the child of the client's span when a
``traceparent`` came with the turn):

* ``endpointing`` -- estimated real end of speech -> end-of-turn decision
* ``stt``         -- ``stt.start`` -> ``stt.end`` (may start before the decision: speculation)
* ``logic``       -- ``logic.start`` -> ``logic.first_clause``
* ``tts``         -- first ``tts.start`` -> ``tts.end``, event at ``tts.first_audio``
* ``send``        -- first reply audio ready -> first audio written to the socket

``server.turn`` also carries the fallback rungs that answered (``halfsec.fallbacks``) and
the injected faults that fired (``halfsec.faults``), with an event at each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from halfsec.frames import (
    EndOfTurn,
    ErrorFrame,
    FinalTranscript,
    Frame,
    IntentFrame,
    Interruption,
    ReplyAudio,
    ReplyDone,
    ReplyText,
    SpeechPaused,
    SpeechStarted,
    TimingMark,
)
from halfsec.trace import names
from halfsec.trace.context import ClockAnchor, context_from_traceparent, process_anchor

__all__ = ["emit_server_turn_spans"]


def _first_mark(frames: Sequence[Frame], name: str) -> TimingMark | None:
    for f in frames:
        if isinstance(f, TimingMark) and f.name == name:
            return f
    return None


def _last_mark(frames: Sequence[Frame], name: str) -> TimingMark | None:
    found = None
    for f in frames:
        if isinstance(f, TimingMark) and f.name == name:
            found = f
    return found


def emit_server_turn_spans(
    frames: Sequence[Frame],
    *,
    traceparent: str | None = None,
    tracer: trace.Tracer | None = None,
    anchor: ClockAnchor | None = None,
    sent_first_audio_ns: int | None = None,
    models: Mapping[str, str] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> str | None:
    """Record one turn's server spans; returns the trace id (32 hex) or ``None``.

    ``frames``: every frame the session emitted for this turn (any order; frames of other
    turns are ignored if ``turn_id`` differs from the first ``EndOfTurn``'s).
    ``traceparent``: what the client sent for this turn (invalid/absent -> a new trace).
    ``sent_first_audio_ns``: monotonic time the transport wrote the first reply audio.
    ``models``: engine names, e.g. ``{"stt": "whisper-base.en", "llm": "qwen2.5",
    "tts": "piper-joe"}`` -> ``gen_ai.request.model`` on the matching span.
    Returns ``None`` (records nothing) when there is nothing to record."""
    if not frames:
        return None
    eot = next((f for f in frames if isinstance(f, EndOfTurn)), None)
    turn_id = eot.turn_id if eot is not None else frames[0].turn_id
    fr = sorted((f for f in frames if f.turn_id == turn_id), key=lambda f: f.t_ns)
    if not fr:
        return None
    tracer = tracer or trace.get_tracer(names.TRACER_SERVER)
    anchor = anchor or process_anchor()
    ep = anchor.to_epoch_ns
    models = models or {}

    started = next((f for f in fr if isinstance(f, SpeechStarted)), None)
    audio = [f for f in fr if isinstance(f, ReplyAudio)]
    end_ns = max(f.t_ns for f in fr)
    if sent_first_audio_ns is not None:
        end_ns = max(end_ns, sent_first_audio_ns)
    start_ns = started.t_ns if started is not None else fr[0].t_ns

    attrs: dict[str, Any] = {names.ATTR_TURN_ID: turn_id, **(attributes or {})}
    if eot is not None:
        attrs[names.ATTR_END_OF_TURN_REASON] = eot.reason
    final = next((f for f in reversed(fr) if isinstance(f, FinalTranscript)), None)
    if final is not None:
        attrs[names.ATTR_TRANSCRIPT] = final.text
    intent = next((f for f in reversed(fr) if isinstance(f, IntentFrame)), None)
    if intent is not None and intent.intent:
        attrs[names.ATTR_INTENT] = intent.intent
    done = next((f for f in reversed(fr) if isinstance(f, ReplyDone)), None)
    if done is not None:
        attrs[names.ATTR_REPLY_TEXT] = done.text
        if done.fallbacks:
            attrs[names.ATTR_FALLBACKS] = list(done.fallbacks)
        if done.faults:
            attrs[names.ATTR_FAULTS] = list(done.faults)

    parent_ctx = context_from_traceparent(traceparent)
    root = tracer.start_span(
        names.SPAN_SERVER_TURN,
        context=parent_ctx,
        kind=SpanKind.SERVER,
        start_time=ep(start_ns),
        attributes=attrs,
    )
    ctx = trace.set_span_in_context(root)

    def child(
        name: str, t0: int, t1: int, stage: str, extra: Mapping[str, Any] | None = None
    ) -> trace.Span:
        a: dict[str, Any] = {
            names.ATTR_TURN_ID: turn_id,
            names.ATTR_STAGE: stage,
            names.ATTR_DURATION_MS: round((t1 - t0) / 1e6, 3),
            **(extra or {}),
        }
        sp = tracer.start_span(name, context=ctx, start_time=ep(t0), attributes=a)
        return sp

    # endpointing: from where the detector placed the real end of speech to the decision.
    if eot is not None:
        lag_ns = int(max(0.0, eot.audio_ms - eot.speech_end_ms) * 1e6)
        pause = next((f for f in fr if isinstance(f, SpeechPaused)), None)
        sp = child(
            names.SPAN_ENDPOINTING,
            eot.t_ns - lag_ns,
            eot.t_ns,
            names.STAGE_ENDPOINTING,
            {
                names.ATTR_END_OF_TURN_REASON: eot.reason,
                names.ATTR_SILENCE_MS: round(lag_ns / 1e6, 3),
            },
        )
        if pause is not None:
            sp.add_event(names.EVENT_SPEECH_PAUSED, timestamp=ep(pause.t_ns))
        sp.end(end_time=ep(eot.t_ns))

    s0, s1 = _first_mark(fr, names.MARK_STT_START), _last_mark(fr, names.MARK_STT_END)
    if s0 is not None and s1 is not None:
        extra: dict[str, Any] = {names.ATTR_GEN_AI_OPERATION: names.OP_SPEECH_TO_TEXT}
        for k in ("compute_ms", "audio_ms"):
            if k in s1.attrs:
                extra[names.stt_attr(k)] = float(s1.attrs[k])
        if "stt" in models:
            extra[names.ATTR_GEN_AI_MODEL] = models["stt"]
        if eot is not None:
            extra[names.ATTR_SPECULATIVE] = s0.t_ns < eot.t_ns
        stt = child(names.SPAN_STT, s0.t_ns, s1.t_ns, names.STAGE_STT, extra)
        stt.end(end_time=ep(s1.t_ns))

    l0 = _first_mark(fr, names.MARK_LOGIC_START)
    l1 = _first_mark(fr, names.MARK_LOGIC_FIRST_CLAUSE)
    if l0 is not None:
        source = str(l1.attrs.get("source", "")) if l1 is not None else ""
        extra = {names.ATTR_LOGIC_SOURCE: source} if source else {}
        if source == "llm" or "llm" in models:
            extra[names.ATTR_GEN_AI_OPERATION] = names.OP_CHAT
            if "llm" in models:
                extra[names.ATTR_GEN_AI_MODEL] = models["llm"]
        texts = [f for f in fr if isinstance(f, ReplyText)]
        extra[names.ATTR_LOGIC_CLAUSES] = len(texts)
        t_end = l1.t_ns if l1 is not None else end_ns
        logic = child(names.SPAN_LOGIC, l0.t_ns, t_end, names.STAGE_LOGIC, extra)
        logic.end(end_time=ep(t_end))

    t0, t_end_m = _first_mark(fr, names.MARK_TTS_START), _last_mark(fr, names.MARK_TTS_END)
    first_audio = _first_mark(fr, names.MARK_TTS_FIRST_AUDIO)
    if t0 is not None:
        t1 = t_end_m.t_ns if t_end_m is not None else end_ns
        extra = {names.ATTR_GEN_AI_OPERATION: names.OP_TEXT_TO_SPEECH}
        if "tts" in models:
            extra[names.ATTR_GEN_AI_MODEL] = models["tts"]
        if first_audio is not None:
            first_ms = round((first_audio.t_ns - t0.t_ns) / 1e6, 3)
            extra[names.ATTR_TTS_FIRST_AUDIO_MS] = first_ms
        sp = child(names.SPAN_TTS, t0.t_ns, t1, names.STAGE_TTS, extra)
        if first_audio is not None:
            sp.add_event(names.EVENT_TTS_FIRST_AUDIO, timestamp=ep(first_audio.t_ns))
        sp.end(end_time=ep(t1))

    ready = first_audio.t_ns if first_audio is not None else (audio[0].t_ns if audio else None)
    if ready is not None:
        sent = (
            sent_first_audio_ns
            if sent_first_audio_ns is not None
            else (audio[0].t_ns if audio else ready)
        )
        sent = max(sent, ready)
        send = child(
            names.SPAN_SEND,
            ready,
            sent,
            names.STAGE_SERVER_SEND,
            {names.ATTR_AUDIO_CHUNKS: len(audio)},
        )
        send.end(end_time=ep(sent))

    for f in fr:
        if isinstance(f, TimingMark) and f.name in (names.MARK_FALLBACK, names.MARK_FAULT):
            root.add_event(
                names.EVENT_FALLBACK if f.name == names.MARK_FALLBACK else names.EVENT_FAULT,
                timestamp=ep(f.t_ns),
                attributes=(
                    {
                        names.ATTR_FALLBACK_RUNG: str(f.attrs.get("rung", "")),
                        names.ATTR_FALLBACK_REASON: str(f.attrs.get("reason", "")),
                    }
                    if f.name == names.MARK_FALLBACK
                    else {names.ATTR_FAULT_KIND: str(f.attrs.get("fault", ""))}
                ),
            )
        elif isinstance(f, Interruption):
            root.add_event(
                names.EVENT_INTERRUPTION,
                timestamp=ep(f.t_ns),
                attributes={names.ATTR_CANCEL_MS: f.cancel_ms},
            )
        elif isinstance(f, ErrorFrame):
            root.add_event(
                names.EVENT_ERROR,
                timestamp=ep(f.t_ns),
                attributes={names.ATTR_ERROR_CODE: f.code, names.ATTR_ERROR_MESSAGE: f.message},
            )
            root.set_status(Status(StatusCode.ERROR, f"{f.code}: {f.message}"))
    root.end(end_time=ep(end_ns))
    return f"{root.get_span_context().trace_id:032x}"

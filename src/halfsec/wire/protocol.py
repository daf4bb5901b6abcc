"""The WebSocket protocol, version 1: one definition shared by server, bench and browser.

Every frame type of a ``VoiceSession`` has exactly one JSON event shape here (and audio
one binary layout each way, in ``wire/audio_packets.py``), so the server that writes them
and the clients that read them (``halfsec bench``, a browser page) can never drift apart.  ``docs/protocol.md`` is
the prose version of this module; change both together and bump ``PROTOCOL_VERSION`` for
anything a deployed client would misread.

Timestamps are monotonic nanoseconds of the process that took them.  The server's and
the client's clocks are unrelated; clients map server times onto their own with the
ping/pong exchange (``clock_offset``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from halfsec.frames import (
    AudioFrame,
    EndOfTurn,
    ErrorFrame,
    FinalTranscript,
    Frame,
    IntentFrame,
    Interruption,
    PartialTranscript,
    ReplyDone,
    ReplyPaused,
    ReplyResumed,
    ReplyText,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    TimingMark,
)

PROTOCOL_VERSION = 1
SUPPORTED_ENCODINGS = ("pcm16", "opus")
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 48_000
MAX_TURN_ID = 0xFFFFFFFF  # turn ids travel as uint32 in the audio headers

# Server -> client event types.
SESSION_STARTED = "session.started"
PONG = "pong"
ERROR = "error"
CONTEXT = "context"
"""After each answered turn: the signed dialogue state a reconnecting client sends back
in ``session.start``'s ``resume`` (``server.resume``, docs/protocol.md)."""
EVENT_TYPES: dict[type[Frame], str] = {
    SpeechStarted: "vad.speech_started",
    SpeechPaused: "vad.speech_paused",
    SpeechResumed: "vad.speech_resumed",
    EndOfTurn: "turn.end",
    PartialTranscript: "transcript.partial",
    FinalTranscript: "transcript.final",
    IntentFrame: "intent",
    ReplyText: "reply.text",
    ReplyDone: "reply.done",
    Interruption: "interruption",
    ReplyPaused: "reply.paused",
    ReplyResumed: "reply.resumed",
    TimingMark: "timing",
    ErrorFrame: ERROR,
}

AUDIO_BEFORE_START = (
    "audio received before session.start; send "
    '{"type":"session.start","protocol":1,"sample_rate":16000,"encoding":"pcm16"} first'
)
"""Message of the ``not_started`` error, for audio that came before ``session.start``."""

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class ProtocolError(Exception):
    """A client message that breaks the protocol; ``code`` goes into the error event."""

    def __init__(self, code: str, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal


# -- client -> server ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SessionStart:
    sample_rate: int
    encoding: str
    traceparent: str | None = None
    output_encoding: str = "pcm16"
    resume: object = None
    """A ``context`` event's token to continue that conversation (None: a fresh one).
    Checked by the server, not here: a bad token starts the session fresh with an
    error, it does not refuse ``session.start``."""


@dataclass(frozen=True, slots=True)
class TraceContext:
    traceparent: str


@dataclass(frozen=True, slots=True)
class Ping:
    id: int
    t_client_ns: int


@dataclass(frozen=True, slots=True)
class SessionEnd:
    pass


@dataclass(frozen=True, slots=True)
class PlaybackDone:
    """The client finished playing turn ``turn_id``'s reply (its last sample left the speaker).

    Only the client knows when playback really ends (its jitter buffer and audio device sit
    between the server's send and the ear), so the session's barge-in decision uses this
    instead of its own guess when the client sends it.
    """

    turn_id: int


ClientMessage = SessionStart | TraceContext | Ping | SessionEnd | PlaybackDone


def valid_traceparent(value: object) -> bool:
    """W3C trace-context version 00 with non-zero trace and span ids."""
    if not isinstance(value, str):
        return False
    m = _TRACEPARENT.match(value)
    if m is None:
        return False
    return set(m.group(1)) != {"0"} and set(m.group(2)) != {"0"}


def _int_field(obj: dict[str, Any], key: str, code: str) -> int:
    v = obj.get(key)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ProtocolError(code, f"field {key!r} must be an integer, got {v!r}")
    return v


def load_json(text: str | bytes, what: str = "message") -> Any:
    """``json.loads`` for text from the network: any failure is a ``bad_json``
    ``ProtocolError``.  Deeply nested input (``[[[[...``) makes the parser raise
    ``RecursionError``, which is not a ``ValueError``: uncaught it ended the session
    with ``internal_error`` (and answered ``/webrtc/offer`` with HTTP 500)."""
    try:
        return json.loads(text)
    except RecursionError as e:
        raise ProtocolError("bad_json", f"{what} is nested too deeply to be parsed") from e
    except ValueError as e:  # UnicodeDecodeError (bytes) is a ValueError too
        raise ProtocolError("bad_json", f"{what} is not valid JSON ({e})") from e


def parse_client_message(text: str) -> ClientMessage:
    """Validate one JSON text message from a client; raises ``ProtocolError``."""
    obj = load_json(text)
    if not isinstance(obj, dict):
        raise ProtocolError("bad_message", "a JSON message must be an object with a 'type'")
    kind = obj.get("type")
    if kind == "session.start":
        proto = obj.get("protocol", PROTOCOL_VERSION)
        if proto != PROTOCOL_VERSION:
            raise ProtocolError(
                "unsupported_protocol",
                f"protocol {proto!r} is not supported; this server speaks protocol "
                f"{PROTOCOL_VERSION}",
            )
        encoding = obj.get("encoding", "pcm16")
        if encoding not in SUPPORTED_ENCODINGS:
            raise ProtocolError(
                "unsupported_encoding",
                f"encoding {encoding!r} is not supported; send 'pcm16' (16-bit "
                "little-endian mono PCM) or 'opus' (HSI1 packets, see docs/protocol.md)",
            )
        out_enc = obj.get("output_encoding", "pcm16")
        if out_enc not in SUPPORTED_ENCODINGS:
            raise ProtocolError(
                "unsupported_encoding",
                f"output_encoding {out_enc!r} is not supported; use 'pcm16' or 'opus'",
            )
        rate = obj.get("sample_rate")
        if (
            not isinstance(rate, int)
            or isinstance(rate, bool)
            or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE
        ):
            raise ProtocolError(
                "bad_sample_rate",
                f"sample_rate must be an integer from {MIN_SAMPLE_RATE} to "
                f"{MAX_SAMPLE_RATE} Hz, got {rate!r}",
            )
        tp = obj.get("traceparent")
        if tp is not None and not valid_traceparent(tp):
            raise ProtocolError("bad_traceparent", f"traceparent {tp!r} is not W3C version 00")
        if encoding == "opus" and rate != 48_000:
            raise ProtocolError(
                "bad_sample_rate",
                "with encoding 'opus' sample_rate must be 48000 (the Opus RTP clock; "
                f"the audio itself may be coded at any rate), got {rate!r}",
            )
        return SessionStart(
            sample_rate=rate,
            encoding=encoding,
            traceparent=tp,
            output_encoding=out_enc,
            resume=obj.get("resume"),
        )
    if kind == "trace.context":
        tp = obj.get("traceparent")
        if not valid_traceparent(tp):
            raise ProtocolError(
                "bad_traceparent",
                f"traceparent {tp!r} is not W3C version 00 (00-<32 hex>-<16 hex>-<2 hex>)",
            )
        assert isinstance(tp, str)
        return TraceContext(traceparent=tp)
    if kind == "ping":
        return Ping(
            id=_int_field(obj, "id", "bad_ping"),
            t_client_ns=_int_field(obj, "t_client_ns", "bad_ping"),
        )
    if kind == "session.end":
        return SessionEnd()
    if kind == "playback.done":
        turn_id = _int_field(obj, "turn_id", "bad_playback_done")
        if not 1 <= turn_id <= MAX_TURN_ID:
            raise ProtocolError(
                "bad_playback_done",
                f"turn_id must be a reply's turn id from 1 to {MAX_TURN_ID}, got {turn_id}",
            )
        return PlaybackDone(turn_id=turn_id)
    raise ProtocolError(
        "unknown_type",
        f"unknown message type {kind!r}; expected session.start, trace.context, ping, "
        "playback.done or session.end",
    )


def session_start_message(
    sample_rate: int = 16_000,
    traceparent: str | None = None,
    encoding: str = "pcm16",
    output_encoding: str = "pcm16",
    resume: str | None = None,
) -> str:
    msg: dict[str, Any] = {
        "type": "session.start",
        "protocol": PROTOCOL_VERSION,
        "sample_rate": sample_rate,
        "encoding": encoding,
    }
    if output_encoding != "pcm16":
        msg["output_encoding"] = output_encoding
    if traceparent is not None:
        msg["traceparent"] = traceparent
    if resume is not None:
        msg["resume"] = resume
    return json.dumps(msg)


def trace_context_message(traceparent: str) -> str:
    return json.dumps({"type": "trace.context", "traceparent": traceparent})


def ping_message(ping_id: int, t_client_ns: int) -> str:
    return json.dumps({"type": "ping", "id": ping_id, "t_client_ns": t_client_ns})


def session_end_message() -> str:
    return json.dumps({"type": "session.end"})


def playback_done_message(turn_id: int) -> str:
    """Tell the server the reply of ``turn_id`` finished playing on this client."""
    return json.dumps({"type": "playback.done", "turn_id": turn_id})


# -- server -> client ---------------------------------------------------------------------
def frame_to_event(frame: Frame) -> dict[str, Any] | None:
    """The JSON event for a frame, or None for audio (sent as a binary message)."""
    if isinstance(frame, AudioFrame):
        return None
    kind = EVENT_TYPES.get(type(frame))
    if kind is None:
        return None
    ev: dict[str, Any] = {"type": kind, "turn_id": frame.turn_id, "t_server_ns": frame.t_ns}
    if isinstance(frame, SpeechStarted | SpeechResumed):
        ev["audio_ms"] = frame.audio_ms
    elif isinstance(frame, SpeechPaused):
        ev.update(audio_ms=frame.audio_ms, speech_end_ms=frame.speech_end_ms)
    elif isinstance(frame, EndOfTurn):
        ev.update(audio_ms=frame.audio_ms, speech_end_ms=frame.speech_end_ms, reason=frame.reason)
    elif isinstance(frame, PartialTranscript):
        ev["text"] = frame.text
    elif isinstance(frame, FinalTranscript):
        ev.update(text=frame.text, stt_ms=frame.stt_ms)
    elif isinstance(frame, IntentFrame):
        ev.update(intent=frame.intent, slots=dict(frame.slots), confidence=frame.confidence)
    elif isinstance(frame, ReplyText):
        ev.update(text=frame.text, index=frame.index, source=frame.source)
    elif isinstance(frame, ReplyDone):
        ev.update(text=frame.text, fallbacks=list(frame.fallbacks), faults=list(frame.faults))
    elif isinstance(frame, Interruption):
        ev.update(audio_ms=frame.audio_ms, cancel_ms=frame.cancel_ms)
    elif isinstance(frame, ReplyPaused):
        ev["audio_ms"] = frame.audio_ms
    elif isinstance(frame, ReplyResumed):
        ev.update(paused_ms=frame.paused_ms, reason=frame.reason, text=frame.text)
    elif isinstance(frame, TimingMark):
        ev.update(name=frame.name, attrs=_jsonable(frame.attrs))
    elif isinstance(frame, ErrorFrame):
        ev.update(code=frame.code, message=frame.message, fatal=frame.fatal)
    return ev


def _jsonable(attrs: dict[str, Any]) -> dict[str, Any]:
    """Timing attributes are free-form: keep JSON scalars, stringify the rest."""
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if v is None or isinstance(v, str | int | float | bool):
            out[str(k)] = v
        else:
            out[str(k)] = str(v)
    return out


def error_event(
    code: str, message: str, t_server_ns: int, fatal: bool = False, turn_id: int = 0
) -> dict[str, Any]:
    return {
        "type": ERROR,
        "turn_id": turn_id,
        "t_server_ns": t_server_ns,
        "code": code,
        "message": message,
        "fatal": fatal,
    }


def session_started_event(
    session_id: str, output_sample_rate: int, t_server_ns: int, **extra: Any
) -> dict[str, Any]:
    ev = {
        "type": SESSION_STARTED,
        "turn_id": 0,
        "t_server_ns": t_server_ns,
        "session_id": session_id,
        "protocol": PROTOCOL_VERSION,
        "output_sample_rate": output_sample_rate,
        "encoding": "pcm16",
    }
    ev.update(extra)
    return ev


def context_event(
    turn_id: int, t_server_ns: int, token: str, expires_at: float, turns: int
) -> dict[str, Any]:
    """``context``: the conversation so far, sealed (``token``), after turn ``turn_id``'s
    reply was sent; ``expires_at`` in Unix seconds, ``turns`` the user turns it holds."""
    return {
        "type": CONTEXT,
        "turn_id": turn_id,
        "t_server_ns": t_server_ns,
        "token": token,
        "expires_at": expires_at,
        "turns": turns,
    }


def pong_event(ping: Ping, t_server_ns: int) -> dict[str, Any]:
    return {
        "type": PONG,
        "turn_id": 0,
        "id": ping.id,
        "t_client_ns": ping.t_client_ns,
        "t_server_ns": t_server_ns,
    }


def parse_server_event(text: str) -> dict[str, Any]:
    """Decode a server JSON event; raises ``ProtocolError`` if it is not an event object."""
    obj = load_json(text, "server event")
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ProtocolError("bad_message", f"server message has no 'type': {text[:200]!r}")
    return obj

"""Twilio Media Streams: the JSON messages of a phone call's audio WebSocket.

A bidirectional stream (TwiML ``<Connect><Stream url="wss://.../twilio"/>``) is one
WebSocket per call that Twilio opens to ``halfsec serve``; every message is a JSON text
with an ``event``.  Twilio sends ``connected``, then ``start`` (stream and call ids, the
media format, the ``<Parameter>`` s of the TwiML as ``customParameters``), then a
``media`` message every 20 ms (160 bytes of base64 mu-law at 8 kHz), ``dtmf`` for a key
press, a ``mark`` back when its playback reaches a mark the server sent, and ``stop``
when the call ends.  The server sends ``media`` (reply audio, played by Twilio in order
from its buffer), ``mark`` (a named point in that audio) and ``clear`` (drop what is
buffered: barge-in).  Both ends of halfsec -- ``server.twilio`` and the lab's phone
client ``lab.clients.twilio`` -- build and read the messages here, so they cannot drift.

The lab extension.  Twilio messages carry no turn ids, timings or transcripts, and
nothing to synchronise clocks with.  A stream whose ``start`` has the custom parameter
``halfsec_events=1`` (Twilio never sets it unless the TwiML asks) also gets every event
of the WebSocket protocol (``docs/protocol.md``) wrapped as
``{"event": "halfsec", "streamSid": ..., "halfsec": {...}}``, and may send ``ping`` and
``trace.context`` wrapped the same way.  The bench uses it for its stage breakdown and
to know when a turn is over; voice-to-voice itself is measured on the audio alone.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from halfsec.wire.mulaw import MULAW_RATE

MULAW_ENCODING = "audio/x-mulaw"
LAB_EVENT = "halfsec"
"""``event`` of a lab-extension message (see the module docstring)."""
LAB_PARAMETER = "halfsec_events"
"""Custom parameter that turns the lab extension on (value ``"1"``)."""
TOKEN_PARAMETER = "token"
"""Custom parameter carrying the server's ``--token`` (Twilio cannot set headers, and a
``<Stream>`` URL may not carry a query string)."""
MEDIA_CHUNK_BYTES = 160
"""20 ms of mu-law at 8 kHz: the size of Twilio's media messages, and of ours."""
REPLY_MARK_PREFIX = "halfsec-reply-"


def reply_mark_name(turn_id: int) -> str:
    """The mark the server sends after turn ``turn_id``'s reply audio."""
    return f"{REPLY_MARK_PREFIX}{turn_id}"


class TwilioProtocolError(Exception):
    """A message that breaks the Media Streams protocol; ``code`` names the rule."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- what Twilio sends --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    custom_parameters: dict[str, str] = field(default_factory=dict)
    tracks: tuple[str, ...] = ("inbound",)


@dataclass(frozen=True, slots=True)
class Media:
    stream_sid: str
    payload: bytes
    """mu-law bytes, one per 8 kHz sample."""
    track: str = "inbound"
    chunk: int | None = None
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Mark:
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class Dtmf:
    stream_sid: str
    digit: str


@dataclass(frozen=True, slots=True)
class Stop:
    stream_sid: str


@dataclass(frozen=True, slots=True)
class LabMessage:
    """A wrapped WebSocket-protocol message (lab extension), either direction."""

    stream_sid: str
    body: dict[str, Any]


TwilioMessage = Connected | Start | Media | Mark | Dtmf | Stop | LabMessage


def _object(obj: dict[str, Any], key: str, event: str) -> dict[str, Any]:
    v = obj.get(key)
    if not isinstance(v, dict):
        raise TwilioProtocolError("bad_message", f"a {event!r} message needs an object {key!r}")
    return v


def _text(obj: dict[str, Any], key: str, event: str) -> str:
    v = obj.get(key)
    if not isinstance(v, str) or not v:
        raise TwilioProtocolError(
            "bad_message", f"a {event!r} message needs a non-empty string {key!r}, got {v!r}"
        )
    return v


def _counter(obj: dict[str, Any], key: str) -> int | None:
    """Twilio's counters are decimal strings ("1", "160"); absent is allowed."""
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if isinstance(v, str) and v.isdigit():
        return int(v)
    raise TwilioProtocolError("bad_message", f"{key!r} must be a decimal string, got {v!r}")


def _payload(media: dict[str, Any]) -> bytes:
    raw = media.get("payload")
    if not isinstance(raw, str) or not raw:
        raise TwilioProtocolError("bad_audio", "media.payload must be a non-empty base64 string")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as e:
        raise TwilioProtocolError("bad_audio", f"media.payload is not valid base64 ({e})") from e


def _start(obj: dict[str, Any]) -> Start:
    start = _object(obj, "start", "start")
    sid = start.get("streamSid", obj.get("streamSid"))
    if not isinstance(sid, str) or not sid:
        raise TwilioProtocolError("bad_message", "start.streamSid must be a non-empty string")
    call_sid = start.get("callSid", "")
    if not isinstance(call_sid, str):
        raise TwilioProtocolError(
            "bad_message", f"start.callSid must be a string, got {call_sid!r}"
        )
    fmt = _object(start, "mediaFormat", "start")
    got = (fmt.get("encoding"), fmt.get("sampleRate"), fmt.get("channels"))
    if got != (MULAW_ENCODING, MULAW_RATE, 1):
        raise TwilioProtocolError(
            "unsupported_media_format",
            f"mediaFormat {fmt!r} is not supported; expected encoding {MULAW_ENCODING!r}, "
            f"sampleRate {MULAW_RATE}, channels 1",
        )
    params = start.get("customParameters", {})
    if not isinstance(params, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in params.items()
    ):
        raise TwilioProtocolError(
            "bad_message", "start.customParameters must be an object of string values"
        )
    tracks = start.get("tracks", ["inbound"])
    if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
        raise TwilioProtocolError("bad_message", "start.tracks must be a list of strings")
    return Start(sid, call_sid, dict(params), tuple(tracks))


def _load(text: str, sender: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise TwilioProtocolError("bad_json", f"{sender} message is not valid JSON ({e})") from e
    if not isinstance(obj, dict) or not isinstance(obj.get("event"), str):
        raise TwilioProtocolError(
            "bad_message", f"a {sender} message must be a JSON object with an 'event'"
        )
    return obj


def parse_twilio_message(text: str) -> TwilioMessage:
    """Validate one message from Twilio (or whatever plays its part); raises
    ``TwilioProtocolError`` with a sentence saying what was expected."""
    obj = _load(text, "Media Streams")
    event = obj["event"]
    if event == "connected":
        protocol, version = obj.get("protocol", "Call"), obj.get("version", "")
        if not isinstance(protocol, str) or not isinstance(version, str):
            raise TwilioProtocolError("bad_message", "connected.protocol/version must be strings")
        return Connected(protocol, version)
    if event == "start":
        return _start(obj)
    if event not in ("media", "mark", "dtmf", "stop", LAB_EVENT):
        raise TwilioProtocolError(
            "unknown_event",
            f"unknown event {event!r}; Media Streams sends connected, start, media, dtmf, "
            "mark and stop",
        )
    sid = _text(obj, "streamSid", event)
    if event == "media":
        media = _object(obj, "media", "media")
        track = media.get("track", "inbound")
        if track not in ("inbound", "outbound"):
            raise TwilioProtocolError(
                "bad_message", f"media.track must be 'inbound' or 'outbound', got {track!r}"
            )
        return Media(
            sid, _payload(media), track, _counter(media, "chunk"), _counter(media, "timestamp")
        )
    if event == "mark":
        return Mark(sid, _text(_object(obj, "mark", "mark"), "name", "mark"))
    if event == "dtmf":
        return Dtmf(sid, _text(_object(obj, "dtmf", "dtmf"), "digit", "dtmf"))
    if event == "stop":
        return Stop(sid)
    return LabMessage(sid, _object(obj, LAB_EVENT, LAB_EVENT))


# -- what the server sends ----------------------------------------------------------------
def media_message(stream_sid: str, payload: bytes) -> str:
    """Reply audio: mu-law bytes for Twilio to play after what it already holds."""
    return json.dumps(
        {
            "event": "media",
            "streamSid": stream_sid,
            "media": {"payload": base64.b64encode(payload).decode("ascii")},
        }
    )


def mark_message(stream_sid: str, name: str) -> str:
    """A named point after the audio sent so far; Twilio sends it back once played."""
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear_message(stream_sid: str) -> str:
    """Drop the audio Twilio still holds (barge-in); its pending marks come back."""
    return json.dumps({"event": "clear", "streamSid": stream_sid})


def lab_message(stream_sid: str, body: dict[str, Any]) -> str:
    """A WebSocket-protocol event or message wrapped for the lab extension."""
    return json.dumps({"event": LAB_EVENT, "streamSid": stream_sid, LAB_EVENT: body})


@dataclass(frozen=True, slots=True)
class ReplyMedia:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Clear:
    pass


StreamMessage = ReplyMedia | Mark | Clear | LabMessage


def parse_stream_message(text: str, stream_sid: str) -> StreamMessage:
    """Validate one message from the server to Twilio (the lab's phone client reads them)."""
    obj = _load(text, "server")
    event = obj["event"]
    if obj.get("streamSid") != stream_sid:
        raise TwilioProtocolError(
            "bad_message", f"streamSid {obj.get('streamSid')!r} is not this stream's"
        )
    if event == "media":
        return ReplyMedia(_payload(_object(obj, "media", "media")))
    if event == "mark":
        return Mark(stream_sid, _text(_object(obj, "mark", "mark"), "name", "mark"))
    if event == "clear":
        return Clear()
    if event == LAB_EVENT:
        body = _object(obj, LAB_EVENT, LAB_EVENT)
        if not isinstance(body.get("type"), str):
            raise TwilioProtocolError("bad_message", "a wrapped event needs a 'type'")
        return LabMessage(stream_sid, body)
    raise TwilioProtocolError("unknown_event", f"unknown event {event!r} from the server")


# -- what Twilio sends, built (the lab's phone client plays Twilio) --------------------------
def connected_message() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start_message(
    stream_sid: str, call_sid: str, custom_parameters: dict[str, str], sequence: int = 1
) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": str(sequence),
            "streamSid": stream_sid,
            "start": {
                "streamSid": stream_sid,
                "callSid": call_sid,
                "accountSid": "AC" + "0" * 32,
                "tracks": ["inbound"],
                "customParameters": custom_parameters,
                "mediaFormat": {
                    "encoding": MULAW_ENCODING,
                    "sampleRate": MULAW_RATE,
                    "channels": 1,
                },
            },
        }
    )


def caller_media_message(
    stream_sid: str, sequence: int, chunk: int, timestamp_ms: int, payload: bytes
) -> str:
    """The caller's audio as Twilio sends it (inbound track; counters as strings)."""
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(sequence),
            "streamSid": stream_sid,
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(timestamp_ms),
                "payload": base64.b64encode(payload).decode("ascii"),
            },
        }
    )


def mark_played_message(stream_sid: str, sequence: int, name: str) -> str:
    """Twilio's answer to a mark: the audio before it has been played (or cleared)."""
    return json.dumps(
        {
            "event": "mark",
            "sequenceNumber": str(sequence),
            "streamSid": stream_sid,
            "mark": {"name": name},
        }
    )


def stop_message(stream_sid: str, call_sid: str, sequence: int) -> str:
    return json.dumps(
        {
            "event": "stop",
            "sequenceNumber": str(sequence),
            "streamSid": stream_sid,
            "stop": {"accountSid": "AC" + "0" * 32, "callSid": call_sid},
        }
    )

"""Audio on the WebSocket: the binary layouts of protocol v1, both ways.

Client audio is raw PCM16 (``encode_pcm16``) or, with ``encoding: opus``, one ``HSI1``
Opus packet per message; reply audio is ``HSA1`` PCM16 or, with ``output_encoding:
opus``, one ``HSO1`` Opus packet per message (``docs/protocol.md`` has the tables).  The
JSON messages and events live beside this in ``wire/protocol.py``; a malformed packet
raises the same ``ProtocolError``.

``t_server_ns`` in a reply header is when the packet was handed to the socket, so a relay
that forwards the packet (the edge) restamps it when it hands it on (``restamp_audio``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from halfsec.wire.protocol import ProtocolError

AUDIO_MAGIC = b"HSA1"
_AUDIO_HEADER = struct.Struct("<4sIQ")
AUDIO_HEADER_BYTES = _AUDIO_HEADER.size  # 16: magic, uint32 turn_id, uint64 t_server_ns
_T_SERVER_NS = struct.Struct("<Q")
_T_SERVER_NS_OFFSET = 8

# Opus on the WebSocket: one packet per binary message, with RTP-style sequence number and
# 48 kHz timestamp so the receiver's jitter buffer can reorder, conceal and use FEC.
OPUS_IN_MAGIC = b"HSI1"
_OPUS_IN_HEADER = struct.Struct("<4sHI")
OPUS_IN_HEADER_BYTES = _OPUS_IN_HEADER.size  # 10: magic, uint16 seq, uint32 timestamp
OPUS_OUT_MAGIC = b"HSO1"
_OPUS_OUT_HEADER = struct.Struct("<4sIQHI")
OPUS_OUT_HEADER_BYTES = _OPUS_OUT_HEADER.size  # 22: magic, turn_id, t_server_ns, seq, ts


# -- client -> server ---------------------------------------------------------------------
def encode_pcm16(pcm: np.ndarray) -> bytes:
    return pcm.astype("<i2", copy=False).tobytes()


def encode_opus_in(seq: int, timestamp: int, packet: bytes) -> bytes:
    """Client -> server Opus message: ``HSI1``, uint16 seq, uint32 48 kHz timestamp."""
    return _OPUS_IN_HEADER.pack(OPUS_IN_MAGIC, seq & 0xFFFF, timestamp & 0xFFFFFFFF) + packet


def decode_opus_in(data: bytes) -> tuple[int, int, bytes]:
    """(seq, timestamp, Opus packet); raises ``ProtocolError`` on a bad header."""
    if len(data) <= OPUS_IN_HEADER_BYTES:
        raise ProtocolError(
            "bad_audio", f"Opus message of {len(data)} bytes has no header and packet"
        )
    magic, seq, ts = _OPUS_IN_HEADER.unpack_from(data)
    if magic != OPUS_IN_MAGIC:
        raise ProtocolError("bad_audio", f"Opus message magic {magic!r} is not {OPUS_IN_MAGIC!r}")
    return int(seq), int(ts), bytes(data[OPUS_IN_HEADER_BYTES:])


# -- server -> client ---------------------------------------------------------------------
def encode_audio(turn_id: int, t_server_ns: int, pcm: np.ndarray) -> bytes:
    """Reply audio packet: 16-byte header then PCM16 LE at the session's output rate."""
    return _AUDIO_HEADER.pack(AUDIO_MAGIC, turn_id & 0xFFFFFFFF, t_server_ns) + encode_pcm16(pcm)


@dataclass(frozen=True, slots=True)
class AudioPacket:
    turn_id: int
    t_server_ns: int
    pcm: np.ndarray


def decode_audio(data: bytes) -> AudioPacket:
    """Parse a reply audio packet; raises ``ProtocolError`` on a bad header or odd length."""
    if len(data) < AUDIO_HEADER_BYTES:
        raise ProtocolError("bad_audio_packet", f"audio packet of {len(data)} bytes has no header")
    magic, turn_id, t_ns = _AUDIO_HEADER.unpack_from(data)
    if magic != AUDIO_MAGIC:
        raise ProtocolError(
            "bad_audio_packet", f"audio packet magic {magic!r} is not {AUDIO_MAGIC!r}"
        )
    body = data[AUDIO_HEADER_BYTES:]
    if len(body) % 2:
        raise ProtocolError("bad_audio_packet", "audio packet body is not 16-bit PCM (odd length)")
    pcm = np.frombuffer(body, dtype="<i2").astype(np.int16)
    return AudioPacket(turn_id=int(turn_id), t_server_ns=int(t_ns), pcm=pcm)


def encode_opus_out(
    turn_id: int, t_server_ns: int, seq: int, timestamp: int, packet: bytes
) -> bytes:
    """Server -> client Opus reply packet: ``HSO1`` header (22 bytes) then one packet."""
    return (
        _OPUS_OUT_HEADER.pack(
            OPUS_OUT_MAGIC, turn_id & 0xFFFFFFFF, t_server_ns, seq & 0xFFFF, timestamp & 0xFFFFFFFF
        )
        + packet
    )


@dataclass(frozen=True, slots=True)
class OpusPacket:
    turn_id: int
    t_server_ns: int
    seq: int
    timestamp: int
    packet: bytes


def decode_opus_out(data: bytes) -> OpusPacket:
    if len(data) <= OPUS_OUT_HEADER_BYTES:
        raise ProtocolError("bad_audio_packet", f"Opus packet of {len(data)} bytes has no body")
    magic, turn_id, t_ns, seq, ts = _OPUS_OUT_HEADER.unpack_from(data)
    if magic != OPUS_OUT_MAGIC:
        raise ProtocolError(
            "bad_audio_packet", f"audio packet magic {magic!r} is not {OPUS_OUT_MAGIC!r}"
        )
    return OpusPacket(
        int(turn_id), int(t_ns), int(seq), int(ts), bytes(data[OPUS_OUT_HEADER_BYTES:])
    )


def restamp_audio(packet: bytes, t_server_ns: int) -> bytes:
    """The ``HSA1`` packet with its ``t_server_ns`` replaced (magic and size unchecked:
    a relay restamps what it already accepted)."""
    buf = bytearray(packet)
    _T_SERVER_NS.pack_into(buf, _T_SERVER_NS_OFFSET, t_server_ns)
    return bytes(buf)


def audio_header(packet: bytes) -> tuple[int, int] | None:
    """``(turn_id, t_server_ns)`` of an ``HSA1`` packet, or None if it is not one."""
    if len(packet) < AUDIO_HEADER_BYTES or packet[:4] != AUDIO_MAGIC:
        return None
    _, turn_id, t_ns = _AUDIO_HEADER.unpack_from(packet)
    return int(turn_id), int(t_ns)

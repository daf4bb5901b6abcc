"""Opus both ways on the WebSocket (HSI1 in, HSO1 out) with real engines and speech."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import numpy as np
from test_webrtc import coffee, serving, transcribe

from halfsec.lab.clients.options import ClientOptions
from halfsec.lab.clients.reply_player import PLAY_RATE
from halfsec.lab.clients.websocket import run_recording
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.runtime.engines import Engines
from halfsec.wire.audio_packets import (
    decode_opus_in,
    decode_opus_out,
    encode_opus_in,
    encode_opus_out,
)
from halfsec.wire.protocol import (
    ProtocolError,
    parse_client_message,
    session_start_message,
)


def test_opus_headers_round_trip() -> None:
    assert decode_opus_in(encode_opus_in(65535, 2**32 - 1, b"abc")) == (65535, 2**32 - 1, b"abc")
    p = decode_opus_out(encode_opus_out(3, 123, 7, 960, b"xy"))
    assert (p.turn_id, p.t_server_ns, p.seq, p.timestamp, p.packet) == (3, 123, 7, 960, b"xy")
    m = parse_client_message(session_start_message(48000, None, "opus", "opus"))
    assert m.encoding == "opus" and m.output_encoding == "opus"  # type: ignore[union-attr]
    for bad in (b"", b"HSI1\x00\x00", b"XXXX\x00\x00\x00\x00\x00\x00\x01"):
        try:
            decode_opus_in(bad)
        except ProtocolError as e:
            assert e.code == "bad_audio"
        else:
            raise AssertionError(bad)


async def test_opus_both_ways_reply_is_heard(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    pcm = coffee(rows, speech_dir)
    async with serving(engines) as (_server, base):
        url = base.replace("http://", "ws://") + "/ws"
        run = await run_recording(url, pcm, ClientOptions(codec="opus"))
    assert run.error is None, run.error
    assert run.jitter is not None and run.output_rate == PLAY_RATE  # Opus was negotiated
    assert run.jitter.stats.decoded > 50
    assert run.events_of("intent")[-1]["intent"] == "orderDrink"
    assert run.packets and all(p.buffer_ms is not None or p.turn_id for p in run.packets)
    b = voiced_bounds(pcm)
    assert b is not None
    heard = run.received_audio()[int(b[1] * PLAY_RATE / 16000) :]
    reply = run.events_of("reply.done")[-1]["text"].lower()
    text = await transcribe(heard, PLAY_RATE)
    words = [w.strip(".,!?") for w in reply.split() if len(w) > 3]
    assert sum(w in text for w in words) >= len(words) // 2, (text, reply)


async def test_bogus_opus_on_websocket_is_an_error_event(engines: Engines) -> None:
    async with serving(engines) as (server, base), aiohttp.ClientSession() as http:
        url = base.replace("http://", "ws://") + "/ws"
        async with http.ws_connect(url) as ws:
            await ws.send_str(session_start_message(48000, None, "opus", "opus"))
            assert json.loads((await ws.receive(timeout=5)).data)["type"] == "session.started"
            await ws.send_bytes(b"not an opus message")
            for seq in range(10):
                await ws.send_bytes(encode_opus_in(seq, seq * 960, b"\xff\xfe garbage"))
            codes = set()
            for _ in range(20):
                msg = await ws.receive(timeout=5)
                if msg.type == aiohttp.WSMsgType.TEXT:
                    ev = json.loads(msg.data)
                    if ev["type"] == "error":
                        codes.add(ev["code"])
                        assert not ev["fatal"]
                if "bad_audio" in codes and len(codes) >= 1 and msg.type == aiohttp.WSMsgType.TEXT:
                    break
            assert "bad_audio" in codes
        async with http.get(f"{base}/healthz") as r:
            assert r.status == 200
    _ = np

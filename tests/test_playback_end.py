"""Barge-in follows the transport's word on when playback ended, not the session's guess.

Speech while the agent's reply is still playing interrupts it; speech after it is a new
turn.  The session only guesses when the client stops hearing a reply (audio plays as it
is produced, back to back); a transport that knows says so with ``playback_ended``
(WebSocket: the client's ``playback.done``).  Real recordings, real engines: a coffee
order answered by the pipeline, then the word "stop" said at once, while the guessed
playback of the multi-second reply still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from halfsec.audio.framing import frames_of
from halfsec.audio.io import load_audio
from halfsec.clock import now_ns
from halfsec.config import load_config
from halfsec.frames import Frame, Interruption, ReplyAudio, ReplyDone, SpeechStarted
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.runtime.engines import Engines
from halfsec.runtime.session import VoiceSession
from halfsec.server.app import start_server
from halfsec.server.options import ServerOptions
from halfsec.wire.audio_packets import (
    encode_pcm16,
)
from halfsec.wire.protocol import (
    playback_done_message,
    session_start_message,
)

STOP = "audio/speechcommands_stop_a9abc695_nohash_1.flac"
SILENCE = np.zeros(320, np.int16)
TIMEOUT_S = 30.0


def _order(rows: list[dict[str, str]], speech_dir: Path) -> np.ndarray:
    """The shortest coffee order, cut to 0.3 s before its speech and 0.1 s after."""
    row = min(
        (r for r in rows if r["intent"] == "orderDrink"), key=lambda r: float(r["duration_s"])
    )
    pcm = load_audio(speech_dir / row["file"])
    b = voiced_bounds(pcm)
    assert b is not None
    return pcm[max(0, b[0] - 4800) : b[1] + 1600]


def _stop(speech_dir: Path) -> np.ndarray:
    """The word "stop", then 0.6 s of silence."""
    return np.concatenate([load_audio(speech_dir / STOP), np.zeros(9600, np.int16)])


def guessed_playback_end_ns(frames: list[Frame]) -> int:
    """The session's own guess, recomputed: reply audio plays as it is produced."""
    end = 0
    for f in frames:
        if isinstance(f, ReplyAudio):
            end = max(end, f.t_ns) + int(f.pcm.size * 1e9 / f.sample_rate)
    return end


class Conversation:
    """One ``VoiceSession`` and every frame it emitted."""

    def __init__(self, engines: Engines) -> None:
        cfg = load_config()
        self.session = VoiceSession(
            engines, cfg.turn, cfg.session, output_rate=cfg.audio.output_rate
        )
        self.frames: list[Frame] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for f in self.session.events():
            self.frames.append(f)

    def of(self, kind: type[Frame]) -> list[Frame]:
        return [f for f in self.frames if isinstance(f, kind)]

    async def order_and_wait_for_the_reply(self, order: np.ndarray) -> None:
        """Say the order at real-time pace, then silence until the reply is synthesized."""
        for frame in frames_of(order):
            await self.session.push(frame)
            await asyncio.sleep(0.02)
        deadline = now_ns() + int(TIMEOUT_S * 1e9)
        while not self.of(ReplyDone):
            assert now_ns() < deadline, f"no reply: {self.frames}"
            await self.session.push(SILENCE)
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)  # the reply's task returns right after reply.done
        assert self.of(ReplyAudio), "the reply must have audio to play"

    async def say_at_once(self, pcm: np.ndarray) -> None:
        await self.session.push(pcm)
        await asyncio.sleep(0.05)

    async def close(self) -> None:
        await self.session.close()
        await self._reader


@contextlib.asynccontextmanager
async def conversation(engines: Engines) -> AsyncIterator[Conversation]:
    c = Conversation(engines)
    try:
        yield c
    finally:
        await c.close()


async def test_without_a_report_speech_during_the_guessed_playback_is_a_barge_in(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    async with conversation(engines) as c:
        await c.order_and_wait_for_the_reply(_order(rows, speech_dir))
        # Synthesis is faster than real time: by the guess, the reply is still playing.
        assert guessed_playback_end_ns(c.frames) > now_ns() + 300_000_000
        await c.say_at_once(_stop(speech_dir))
    assert [f.turn_id for f in c.of(Interruption)] == [1]


async def test_reply_reported_done_early_lets_the_next_words_start_a_new_turn(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    async with conversation(engines) as c:
        await c.order_and_wait_for_the_reply(_order(rows, speech_dir))
        assert guessed_playback_end_ns(c.frames) > now_ns() + 300_000_000
        c.session.playback_ended(1)  # the client says it has finished playing it
        await c.say_at_once(_stop(speech_dir))
    assert not c.of(Interruption), "speech after the reported end is not a barge-in"
    assert [f.turn_id for f in c.of(SpeechStarted)] == [1, 2]


async def test_reported_end_after_the_guess_keeps_the_reply_playing(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    """A slow link or a deep client buffer: the client still plays when the guess says
    it is done, and its word counts."""
    async with conversation(engines) as c:
        await c.order_and_wait_for_the_reply(_order(rows, speech_dir))
        c.session.playback_ended(1, now_ns() + int(60e9))
        guess = guessed_playback_end_ns(c.frames)
        await asyncio.sleep(max(0.0, (guess - now_ns()) / 1e9) + 0.2)
        assert now_ns() > guess  # by the guess alone this speech would start a new turn
        await c.say_at_once(_stop(speech_dir))
    assert [f.turn_id for f in c.of(Interruption)] == [1]


async def test_websocket_playback_done_reaches_the_session(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    """The same early report, as a client sends it: ``playback.done`` on ``/ws``."""
    order, stop = _order(rows, speech_dir), _stop(speech_dir)
    opts = ServerOptions(host="127.0.0.1", port=0)
    _server, runner, port = await start_server(engines, load_config(), opts)
    events: list[dict[str, Any]] = []
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"ws://127.0.0.1:{port}/ws")

            async def read() -> None:
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        events.append(json.loads(msg.data))

            def seen(kind: str, turn_id: int) -> bool:
                return any(e["type"] == kind and e["turn_id"] == turn_id for e in events)

            reader = asyncio.create_task(read())
            await ws.send_str(session_start_message(16000))
            for frame in frames_of(order):
                await ws.send_bytes(encode_pcm16(frame))
                await asyncio.sleep(0.02)
            deadline = now_ns() + int(TIMEOUT_S * 1e9)
            while not seen("reply.done", 1):
                assert now_ns() < deadline, f"no reply: {events}"
                await ws.send_bytes(encode_pcm16(SILENCE))
                await asyncio.sleep(0.02)
            await ws.send_str(playback_done_message(1))
            await ws.send_bytes(encode_pcm16(stop))
            for _ in range(100):
                if seen("vad.speech_started", 2):
                    break
                await ws.send_bytes(encode_pcm16(SILENCE))
                await asyncio.sleep(0.02)
            await ws.close()
            await reader
    finally:
        await runner.cleanup()
    assert seen("vad.speech_started", 2), events
    assert not [e for e in events if e["type"] in ("interruption", "error")], events

"""Reply Opus packets -> jitter buffer -> 20 ms playout onto the client's timeline.

Used by the Python WebRTC client and by the WebSocket client with ``codec="opus"``.
Reply audio is placed on the run's timeline at the moment the jitter buffer *plays*
it (a real receiver plays from its buffer, so the buffer's delay is inside
voice-to-voice, as it is for a user).  Each played frame remembers when its packet
arrived, so the lab can split the last stage into network and jitter buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

import numpy as np

from halfsec import FRAME_MS
from halfsec.clock import now_ns
from halfsec.errors import AudioInputError
from halfsec.lab.clients.client_run import ClientRun, Received
from halfsec.lab.clients.turn_state import TurnState
from halfsec.measure.audible import is_audible
from halfsec.wire.jitter import JitterBuffer, JitterConfig, JitterPacket
from halfsec.wire.opus import OpusDecoder
from halfsec.wire.playout import play_when_due

PLAY_RATE = 48_000
"""Reply audio is decoded at 48 kHz on the client (what a browser plays)."""
_TAG = struct.Struct("<IQ")  # RTP timestamp, arrival ns: carried with each payload


class _TaggingDecoder:
    """Opus decoder that knows which packet each played frame came from (the jitter
    buffer only returns PCM); payloads arrive prefixed with (timestamp, arrival)."""

    def __init__(self, rate: int = PLAY_RATE) -> None:
        self._dec = OpusDecoder(rate, 1, FRAME_MS)
        self.frame_samples = self._dec.frame_samples
        self.ts: int | None = None
        self.arrival: int | None = None

    def decode(self, payload: bytes) -> np.ndarray:
        if len(payload) < _TAG.size:
            raise AudioInputError("untagged payload")
        self.ts, self.arrival = _TAG.unpack_from(payload)
        return self._dec.decode(payload[_TAG.size :])

    def conceal(self) -> np.ndarray:
        self.arrival = None
        return self._dec.conceal()

    def decode_fec(self, next_payload: bytes) -> np.ndarray | None:
        self.arrival = None
        return self._dec.decode_fec(next_payload[_TAG.size :])


class ReplyPlayer:
    """Reply Opus packets -> jitter buffer -> 20 ms playout onto the run's timeline.

    ``mark_turn`` says at which RTP timestamp each turn's reply starts, so every played
    frame is tagged with its (turn_id, t_server_ns); the WebSocket client knows it from
    each HSO1 header, the WebRTC client from ``reply.audio``."""

    def __init__(self, run: ClientRun, state: TurnState) -> None:
        self.run = run
        self.state = state
        self.dec = _TaggingDecoder()
        self.buffer = JitterBuffer(self.dec, JitterConfig())
        self.turn_marks: list[tuple[int, int, int]] = []  # (rtp ts, turn_id, t_server_ns)
        self.marked: set[int] = set()
        self.last_audible_ns = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._played = asyncio.Event()

    def mark_turn(self, rtp_ts: int, turn_id: int, t_server_ns: int) -> None:
        self.turn_marks.append((rtp_ts & 0xFFFFFFFF, turn_id, t_server_ns))

    def push(self, seq: int, ts: int, payload: bytes) -> None:
        t = now_ns()
        self.buffer.push(JitterPacket(seq, ts, _TAG.pack(ts & 0xFFFFFFFF, t) + payload), t)
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._playout())

    def _tag(self, ts: int | None) -> tuple[int, int]:
        if ts is None:
            return 0, 0
        best: tuple[int, int, int] | None = None
        for mark_ts, tid, t_srv in self.turn_marks:
            d = (ts - mark_ts) & 0xFFFFFFFF
            if d < (1 << 31) and (best is None or d < best[0]):
                best = (d, tid, t_srv + d * 1_000_000_000 // PLAY_RATE)
        return (best[1], best[2]) if best is not None else (0, 0)

    async def _playout(self) -> None:
        """Play each frame when the jitter buffer says it is due (``play_when_due``, the
        server's input loop too): a grid fixed at the first packet would add its
        arbitrary phase (0-20 ms) to every reply, and the server re-anchors each reply's
        packets at its first one, so no fixed phase could be right for all of them."""
        await play_when_due(self.buffer, self._play, self._wake)

    def _play(self, pcm: np.ndarray | None, t: int) -> None:
        self._played.set()
        timeline = self.run.timeline
        if pcm is None or timeline is None:  # before t0 nothing is being measured
            self.dec.ts = None
            return
        tid, t_srv = self._tag(self.dec.ts)
        arrival = self.dec.arrival
        self.dec.ts = None
        if tid in self.state.interrupted:
            return
        start_sample = timeline.place(pcm, t, tid)
        if is_audible(pcm):
            self.last_audible_ns = t
        if tid:
            rec = Received(t, None, tid, t_srv, start_sample, pcm.size)
            if arrival is not None:
                rec.buffer_ms = (t - arrival) / 1e6
            self.run.packets.append(rec)

    async def drained(self) -> None:
        """Return once every packet pushed so far has been played (or dropped as late):
        from then on, all of their audio is on the run's timeline."""
        while self.buffer.buffered > 0:
            self._played.clear()
            await self._played.wait()

    @property
    def playing(self) -> bool:
        return now_ns() - self.last_audible_ns < 300_000_000

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

"""Real-time audio plumbing shared by the WebSocket-Opus and WebRTC transports.

Two halves, one per direction, so both transports behave identically and the lab can
compare them fairly:

* ``InboundAudio``: received Opus packets (with RTP-style ``seq``/``timestamp``) go into
  the adaptive ``JitterBuffer`` (reordering, Opus in-band FEC, PLC) and come out as 16 kHz
  frames at real-time pace, straight into ``VoiceSession.push``.  libopus decodes at
  16 kHz itself (the wire format is rate-agnostic), which is cheaper than decoding at 48
  kHz and resampling with soxr and gives the same 16 kHz signal.  Each frame is popped
  the moment it is due (``wire.playout.play_when_due``, which says why not on a grid).
* ``PacedOpusOut``: reply audio (any output rate) is cut into exact 20 ms frames
  (soxr to 48 kHz only when the rate is not one libopus accepts), Opus-encoded with
  in-band FEC, and released one frame per 20 ms on an absolute monotonic grid -- the
  way a real sender's audio clock releases it.  Between replies nothing is sent (DTX,
  both the WebSocket's HSO1 stream and the WebRTC track), and the grid is re-anchored
  at the first frame after an idle slot (a reply's first packet leaves as soon as it is
  encoded, not on the previous reply's grid, which would cost 10 ms on average), and
  ``pts`` is the exact elapsed time in 48 kHz ticks (RTP convention: silence is a jump
  in timestamp, not in sequence), so the receiver's jitter buffer sees true transit
  times.  A timestamp rounded up to the old grid would look up to 20 ms "early" to the
  receiver, lower its minimum transit and so raise its target delay by as much.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from halfsec import FRAME_MS, INTERNAL_RATE
from halfsec.wire.audio_packets import encode_opus_out
from halfsec.wire.frame_decoders import OpusFrameDecoder
from halfsec.wire.jitter import RTP_CLOCK, JitterBuffer, JitterConfig, JitterPacket
from halfsec.wire.opus import OPUS_RATES, FrameResampler, OpusEncoder, packet_problem
from halfsec.wire.playout import play_when_due

__all__ = ["FRAME_TICKS", "InboundAudio", "OutFrame", "PacedOpusOut", "send_paced_opus"]

FRAME_TICKS = RTP_CLOCK * FRAME_MS // 1000
"""One 20 ms packet in RTP timestamp ticks."""
_FRAME_NS = FRAME_MS * 1_000_000


class InboundAudio:
    """Jitter-buffered Opus input -> 16 kHz frames handed to ``sink`` every 20 ms.

    ``on_malformed`` is called (at most once a second) when packets fail to decode, so a
    transport can tell the client; the frame is concealed, the session goes on."""

    def __init__(
        self,
        sink: Callable[[np.ndarray], Awaitable[None]],
        on_malformed: Callable[[int], Awaitable[None]] | None = None,
        config: JitterConfig | None = None,
        rate: int = INTERNAL_RATE,
    ) -> None:
        self.buffer = JitterBuffer(OpusFrameDecoder(rate), config or JitterConfig())
        self._sink = sink
        self._on_malformed = on_malformed
        self._task: asyncio.Task[None] | None = None
        self._report: asyncio.Task[None] | None = None
        """Tells the client of refused packets while nothing plays (the playout reports
        the rest)."""
        self._reported_malformed = 0
        self._last_report = 0.0
        self._wake = asyncio.Event()
        self.error: BaseException | None = None

    def push(
        self,
        seq: int,
        timestamp: int,
        payload: bytes,
        arrival_ns: int | None = None,
        *,
        report_refusal: bool = True,
    ) -> str | None:
        """Buffer one packet; returns why it was refused at the door (it counts as
        malformed and its frame is concealed as lost), or None when it was buffered.

        ``report_refusal``: a refusal is reported through ``on_malformed`` like an
        undecodable packet; False when the caller answers it itself (the WebSocket
        answers each bad message at once)."""
        problem = packet_problem(payload)
        if problem is not None:
            self.buffer.refuse()
            if not report_refusal:
                self._reported_malformed += 1
            elif self._report is None or self._report.done():
                self._report = asyncio.create_task(self._maybe_report(), name="inbound-report")
            return problem
        self.buffer.push(JitterPacket(seq & 0xFFFF, timestamp & 0xFFFFFFFF, payload), arrival_ns)
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._playout(), name="inbound-playout")
        return None

    async def _playout(self) -> None:
        async def handle(frame: np.ndarray | None, now: int) -> None:
            if frame is not None:
                await self._sink(frame)
            await self._maybe_report()

        try:
            await play_when_due(self.buffer, handle, self._wake)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the session is gone or broken; the owner sees .error
            self.error = e

    async def _maybe_report(self) -> None:
        bad = self.buffer.stats.malformed
        if bad == self._reported_malformed or self._on_malformed is None:
            return
        t = time.monotonic()
        if t - self._last_report < 1.0:
            return
        self._last_report = t
        new = bad - self._reported_malformed
        self._reported_malformed = bad
        await self._on_malformed(new)

    def turn_summary(self) -> dict[str, Any]:
        """Jitter-buffer stats since the previous call (one user turn)."""
        return self.buffer.turn_summary()

    async def close(self) -> None:
        for task in (self._task, self._report):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


@dataclass(frozen=True, slots=True)
class OutFrame:
    """One paced 20 ms slot: ``packet`` is None when idle (nothing queued)."""

    pts: int
    """RTP-style timestamp: 48 kHz ticks since the first slot, exact at each re-anchor
    (so not always a multiple of ``FRAME_TICKS``), +``FRAME_TICKS`` per slot after it."""
    turn_id: int
    packet: bytes | None
    first_of_turn: bool


class PacedOpusOut:
    """Reply audio -> Opus packets released in real time, one per 20 ms slot."""

    def __init__(
        self,
        in_rate: int,
        expected_loss_pct: int = 5,
        bitrate: int = 24_000,
        talkspurt_frames: int = 1,
    ) -> None:
        self.in_rate = in_rate
        self.talkspurt_frames = talkspurt_frames
        """Frames sent at once when a reply starts after silence, on a grid back-dated by
        the others (their ``pts`` as if sent on time, so none looks early to the
        receiver).  WebRTC sets 3: Chromium's NetEq keeps concealing after a silence until
        it holds half its target delay (``PostponeDecode``), so a reply paced from its
        first packet waited ~40 ms there before any of it played."""
        self.enc_rate = in_rate if in_rate in OPUS_RATES else RTP_CLOCK
        self._rs = FrameResampler(in_rate, self.enc_rate) if self.enc_rate != in_rate else None
        self.frame_samples = self.enc_rate * FRAME_MS // 1000
        self._enc = OpusEncoder(
            self.enc_rate, bitrate=bitrate, fec=True, expected_loss_pct=expected_loss_pct
        )
        self._queue: deque[tuple[int, np.ndarray]] = deque()
        self._rest: dict[int, np.ndarray] = {}
        self._last_turn = 0
        self._start_ns: int | None = None
        """Anchor of the current grid: slot ``k`` is due at ``_start_ns + k * 20 ms``."""
        self._origin_ns = 0
        """When pts 0 was sent."""
        self._pts0 = 0
        """pts of slot 0 of the current grid."""
        self._last_pts: int | None = None
        self._k = 0
        self._silence = np.zeros(self.frame_samples, np.int16)
        self._wake = asyncio.Event()
        self._paused: set[int] = set()
        """Turns whose reply is paused (``reply.paused``): kept queued, not sent."""

    def put(self, turn_id: int, pcm: np.ndarray) -> None:
        """Queue reply audio at ``in_rate`` (any length)."""
        pcm = np.asarray(pcm, dtype=np.int16)
        if self._rs is not None:
            frames = self._rs.push(pcm)
        else:
            rest = self._rest.pop(turn_id, np.zeros(0, np.int16))
            allpcm = np.concatenate([rest, pcm]) if rest.size else pcm
            n = allpcm.size // self.frame_samples
            frames = [
                allpcm[i * self.frame_samples : (i + 1) * self.frame_samples] for i in range(n)
            ]
            if allpcm.size > n * self.frame_samples:
                self._rest[turn_id] = allpcm[n * self.frame_samples :]
        for f in frames:
            self._queue.append((turn_id, f))
        self._wake.set()

    def pause(self, turn_id: int) -> None:
        """``reply.paused``: send nothing more of ``turn_id`` until ``resume``."""
        self._paused.add(turn_id)

    def resume(self, turn_id: int) -> None:
        """``reply.resumed``: go on sending ``turn_id`` where it stopped."""
        self._paused.discard(turn_id)
        self._wake.set()

    def _held(self) -> bool:
        return bool(self._queue) and self._queue[0][0] in self._paused

    def flush(self, turn_id: int) -> None:
        """Barge-in: drop everything of ``turn_id`` that has not been sent yet."""
        self._paused.discard(turn_id)
        self._queue = deque(item for item in self._queue if item[0] != turn_id)
        self._rest.pop(turn_id, None)

    @property
    def queued_ms(self) -> float:
        return len(self._queue) * FRAME_MS

    def _take(self) -> tuple[int, np.ndarray] | None:
        if self._held():
            return None
        if self._queue:
            return self._queue.popleft()
        if self._rest and not self._paused.intersection(
            self._rest
        ):  # the turn's last partial frame, once nothing else is queued
            tid, rest = self._rest.popitem()
            pad = np.zeros(self.frame_samples, np.int16)
            pad[: rest.size] = rest
            return tid, pad
        return None

    def _anchor(self, now: int) -> None:
        """Start a new grid whose slot 0 is due ``now``, its pts the exact time since
        the origin (never overlapping the previous packet)."""
        pts = (now - self._origin_ns) * RTP_CLOCK // 1_000_000_000
        if self._last_pts is not None:
            pts = max(pts, self._last_pts + FRAME_TICKS)
        self._start_ns, self._pts0, self._k = now, pts, 0

    async def next_slot(self, continuous: bool = False) -> OutFrame:
        """Wait for the next 20 ms slot and return what to send in it.

        ``continuous``: encode silence when idle (a track that never stops); otherwise
        idle slots are skipped without sending anything (DTX) and the first frame queued
        after them leaves at once, on a new grid anchored at that moment: a reply's
        first packet does not wait for a slot of the previous reply's grid."""
        while True:
            now = time.monotonic_ns()
            if self._start_ns is None:
                self._origin_ns = now
                self._anchor(now)
            assert self._start_ns is not None
            due = self._start_ns + self._k * _FRAME_NS
            if due > now:
                await asyncio.sleep((due - now) / 1e9)
            elif now - due > 5 * _FRAME_NS:
                # A stalled loop: skip missed slots instead of bursting to catch up.
                self._k = (now - self._start_ns) // _FRAME_NS
            pts = self._pts0 + self._k * FRAME_TICKS
            self._k += 1
            item = self._take()
            if item is None:
                if continuous:
                    self._last_pts = pts
                    return OutFrame(pts, 0, self._enc.encode(self._silence), False)
                if not self._queue or self._held():
                    self._wake.clear()
                    # Sleep until audio is queued; it leaves on a grid anchored then.
                    await self._wake.wait()
                    self._anchor(time.monotonic_ns() - (self.talkspurt_frames - 1) * _FRAME_NS)
                continue
            tid, pcm = item
            first = tid != self._last_turn
            self._last_turn = tid
            self._last_pts = pts
            return OutFrame(pts, tid, self._enc.encode(pcm), first)


StampedSend = Callable[[Callable[[int], bytes]], Awaitable[int | None]]
"""Sends ``build(t)`` with ``t`` the moment it is handed to the socket; returns ``t``
(None: the socket is closed).  ``server.client_socket.ClientSocket.send_stamped``."""


async def send_paced_opus(
    out: PacedOpusOut,
    send: StampedSend,
    closed: Callable[[], bool],
    is_cancelled: Callable[[int], bool],
    on_sent: Callable[[int, int], None] | None = None,
) -> None:
    """Send ``out``'s reply audio as one ``HSO1`` message per 20 ms slot until ``closed``
    (the server's WebSocket and the edge pace Opus replies with this one loop).
    ``on_sent(turn_id, t_ns)`` is told each packet's send time."""
    seq = 0
    while not closed():
        slot = await out.next_slot()
        if slot.packet is None or is_cancelled(slot.turn_id):
            continue
        t = await send(_hso1(slot, seq))
        seq += 1
        if t is not None and on_sent is not None:
            on_sent(slot.turn_id, t)


def _hso1(slot: OutFrame, seq: int) -> Callable[[int], bytes]:
    """The HSO1 message of ``slot``, stamped with the send time it is given."""
    packet = slot.packet
    assert packet is not None
    return lambda t: encode_opus_out(slot.turn_id, t, seq, slot.pts & 0xFFFFFFFF, packet)

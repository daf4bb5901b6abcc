"""Real-time drivers of a :class:`~halfsec.wire.jitter.JitterBuffer`: who calls ``pop``, when.

The buffer itself runs on injected time (tests and the lab's packet simulator drive it
without sleeping); a receiver that plays to a person needs a loop that pops it in real
time.  Both ends of the wire use the same one, so the server's input and the lab
client's output buffer the same way and the lab compares transports fairly.

* :func:`play_when_due` (what the server's ``InboundAudio`` and the lab's WebRTC client
  use): pop each frame the moment it is due (``JitterBuffer.next_due_ns``: its send time
  + the smallest transit + the target delay), so on a clean link a frame is handed on a
  few ms after it arrived.  A grid fixed at the first packet would instead keep that
  packet's phase for the whole session: 0-20 ms of extra wait per frame (10 on
  average), or an underrun at every jitter blip when the grid's phase happens to sit
  just before the packets arrive.
* :func:`playout_loop`: pop on that fixed 20 ms grid, optionally filling silence, for
  sinks that want a frame every period whatever arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import numpy as np

from halfsec.errors import AudioInputError
from halfsec.wire.jitter import JitterBuffer

__all__ = ["FrameHandler", "play_when_due", "playout_loop"]

FrameHandler = Callable[[np.ndarray | None, int], Awaitable[None] | None]
"""(frame or None, monotonic ns it was popped) -> optional awaitable."""


async def play_when_due(buffer: JitterBuffer, handle: FrameHandler, wake: asyncio.Event) -> None:
    """Pop ``buffer`` at each frame's due time and hand the result to ``handle``, forever.

    Why not a fixed 20 ms grid: see the module docstring.  At most one frame per frame
    period after the previous pop (a receiver plays in real time; while a packet is
    missing the due time stays in the past and concealment must not burst), except that
    a stalled loop catches up rather than adding its stall to every later frame.  With
    nothing buffered it sleeps until ``wake`` is set (the caller sets it on every push);
    while waiting for a due time it re-reads it after each push, because a late packet
    raises the target and with it the due time."""
    frame_ns = buffer.cfg.frame_ms * 1_000_000
    last: int | None = None
    while True:
        due = buffer.next_due_ns()
        if due is None:
            wake.clear()
            await wake.wait()
            continue
        if last is not None:
            due = max(due, last + frame_ns)
        now = time.monotonic_ns()
        if due > now:
            # asyncio timers never fire early, so the pop below is never before ``due``.
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), (due - now) / 1e9)
            continue
        try:
            frame = buffer.pop(now)
        except AudioInputError:  # a malformed successor during FEC recovery
            buffer.stats.malformed += 1
            frame = buffer.decoder.conceal()
        if frame is not None:
            # Pace from the nominal time (no drift from wake-up lateness), unless the
            # loop stalled for over two frames: then re-base rather than burst.
            last = due if now - due <= 2 * frame_ns else now
        res = handle(frame, now)
        if res is not None:
            await res


async def playout_loop(
    buffer: JitterBuffer,
    sink: Callable[[np.ndarray], Awaitable[None] | None],
    stop: asyncio.Event,
    fill_silence: bool = False,
) -> None:
    """Call ``buffer.pop`` every ``frame_ms`` on absolute deadlines (no drift from
    sleep overshoot) and hand each frame to ``sink``; with ``fill_silence`` a zero frame
    is sent when there is nothing to play, for sinks that need a continuous stream."""
    period = buffer.cfg.frame_ms * 1_000_000
    silence = np.zeros(buffer.decoder.frame_samples, np.int16)
    start = buffer.clock()
    k = 0
    while not stop.is_set():
        deadline = start + k * period
        delay = (deadline - buffer.clock()) / 1e9
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
                break
            except TimeoutError:
                pass
        now = buffer.clock()
        # If we fell more than a frame behind (a stalled loop), skip the missed ticks
        # rather than bursting frames out to catch up.
        k = max(k + 1, (now - start) // period)
        frame = buffer.pop(now)
        if frame is None:
            if not fill_silence:
                continue
            frame = silence
        res = sink(frame)
        if res is not None:
            await res

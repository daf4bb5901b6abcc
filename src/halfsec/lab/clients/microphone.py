"""The recording played as a microphone, at real-time pace, for every transport.

Frame ``k`` leaves at ``t0 + (k + 1) * 20 ms``: a microphone cannot deliver a frame
before its last sample was spoken (the rule of ``runtime/file_run.py``).  One loop for
every transport, so the WebSocket and WebRTC clients are timed by the same rule."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np

from halfsec import FRAME_MS, FRAME_SAMPLES
from halfsec.audio.framing import frames_of
from halfsec.clock import now_ns
from halfsec.lab.clients.client_run import ClientRun
from halfsec.lab.clients.options import ClientOptions
from halfsec.lab.clients.turn_state import TurnState


async def stream_microphone(
    run: ClientRun,
    pcm: np.ndarray,
    opt: ClientOptions,
    state: TurnState,
    playing: Callable[[], bool],
    send: Callable[[int, np.ndarray], Awaitable[None]],
    check: Callable[[], None],
) -> None:
    """Play the recording as a microphone, then silence until the server is done.

    Frames leave on absolute deadlines so sleep overshoot never accumulates; how late
    each one left is recorded.  ``send(k, frame)`` is the transport's part; ``check()``
    raises ``ClientError`` when the connection is gone."""
    k = 0

    async def one(frame: np.ndarray) -> None:
        nonlocal k
        due = run.t0_ns + (k + 1) * FRAME_MS * 1_000_000
        delay = (due - now_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        check()
        run.late_ms.append((now_ns() - due) / 1e6)
        await send(k, frame)
        run.sent.append(frame)
        k += 1

    for frame in frames_of(pcm):
        await one(frame)
    silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
    t_end = now_ns()
    while not state.tail_done((now_ns() - t_end) / 1e9, playing(), opt):
        await one(silence)

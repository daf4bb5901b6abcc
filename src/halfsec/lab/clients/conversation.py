"""Several recordings over one WebSocket session: a caller's whole conversation.

``lab.clients.websocket.run_recording`` opens a session per recording, so nothing leaks
between files.  A load caller is a person on one call instead: admission happens once,
when the call starts, and the dialogue state (the order being built, turn numbering)
carries from one utterance to the next.  So here one socket, one ``session.start`` and
one clock sync serve every turn; each recording is played by the same code as a lone
recording (``websocket.play_turn``), into a ``ClientRun`` of its own whose sample 0 is
that recording's first sample, so ``lab.bench.records.make_record`` measures every turn
by the one v2v rule and turn records keep their shape.

Between turns the caller thinks: after a turn's reply finished playing (``playback.done``
sent as for any turn) the microphone carries silence for the think time, paced like any
frame (a phone line never goes quiet on the wire), then the next recording starts.  A
turn that fails (connection lost, no answer) ends the call: the turns after it are not
played, as a person whose call dropped does not keep talking.  Only the WebSocket client
has this; WebRTC and Twilio callers stay one session per recording.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import aiohttp
import numpy as np
from opentelemetry import trace

from halfsec import FRAME_MS, FRAME_SAMPLES
from halfsec.clock import now_ns
from halfsec.lab.clients.client_run import ClientRun
from halfsec.lab.clients.errors import ClientError
from halfsec.lab.clients.options import ClientOptions
from halfsec.lab.clients.websocket import open_session, open_websocket, play_turn
from halfsec.wire.audio_packets import encode_pcm16
from halfsec.wire.protocol import session_end_message

__all__ = ["run_conversation"]

_FRAME_NS = FRAME_MS * 1_000_000


def _turn_run(first: ClientRun, tracer: trace.Tracer | None) -> ClientRun:
    """A fresh run for the next recording, on the session's clock and rates."""
    return ClientRun(
        output_rate=first.output_rate,
        session_id=first.session_id,
        domain=first.domain,
        clock=first.clock,
        tracer=tracer,
    )


async def run_conversation(
    url: str,
    pcms: Sequence[np.ndarray],
    think_s: Sequence[float],
    on_turn: Callable[[int, ClientRun], None],
    options: ClientOptions | None = None,
    tracer: trace.Tracer | None = None,
    keep_going: Callable[[], bool] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> None:
    """Play ``pcms`` in order over one session of ``url``; ``think_s[k]``: the pause
    after turn ``k``'s reply ended.  Each turn's ``ClientRun`` goes to ``on_turn(k, run)``
    as soon as that turn ended (before the pause).  A session the server refuses (or a
    connection that fails) gives one run with ``error`` set, for turn 0.  No turn starts
    once ``keep_going()`` is False; ``on_start(k)``: turn ``k``'s recording begins.
    Never raises for server misbehaviour."""
    opt = options or ClientOptions()
    headers = opt.handshake_headers()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=opt.connect_timeout_s)
    first = ClientRun(tracer=tracer)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with await open_websocket(http, url, headers) as ws:
                await open_session(ws, opt, first)
                await _turns(ws, pcms, think_s, on_turn, opt, first, tracer, keep_going, on_start)
    except ClientError as e:  # refused or failed before any turn (turns catch their own)
        first.error = str(e)
        on_turn(0, first)


async def _turns(
    ws: aiohttp.ClientWebSocketResponse,
    pcms: Sequence[np.ndarray],
    think_s: Sequence[float],
    on_turn: Callable[[int, ClientRun], None],
    opt: ClientOptions,
    first: ClientRun,
    tracer: trace.Tracer | None,
    keep_going: Callable[[], bool] | None,
    on_start: Callable[[int], None] | None,
) -> None:
    send_lock = asyncio.Lock()
    t0 = now_ns() + int(opt.lead_ms * 1e6)
    seq = 0
    for k, pcm in enumerate(pcms):
        if k and keep_going is not None and not keep_going():
            break
        run = first if k == 0 else _turn_run(first, tracer)
        if on_start is not None:
            on_start(k)
        last = k + 1 == len(pcms)
        try:
            await play_turn(ws, pcm, opt, run, send_lock, t0, end_session=False, seq_base=seq)
        except ClientError as e:
            run.error = str(e)
        seq += len(run.sent)
        ended = now_ns()
        on_turn(k, run)
        if run.error is not None or last:
            break
        # Silence on the wire while the caller thinks, on the frame grid of the turn that
        # ended; the next recording's sample 0 follows the last silent frame.
        due = run.t0_ns + (len(run.sent) + 1) * _FRAME_NS
        until = ended + int(think_s[k] * 1e9)
        silent = max(0, -(-(until - due) // _FRAME_NS))
        await _silence(ws, send_lock, due, silent, opt.codec)
        t0 = due + (silent - 1) * _FRAME_NS if silent else now_ns()
    if not ws.closed:
        with contextlib.suppress(Exception):
            async with send_lock:
                await ws.send_str(session_end_message())


async def _silence(
    ws: aiohttp.ClientWebSocketResponse, lock: asyncio.Lock, due: int, frames: int, codec: str
) -> None:
    """``frames`` frames of silence, frame ``i`` at ``due + i * 20 ms`` (PCM sessions;
    an Opus session pauses instead, its packet numbers then run on without a gap)."""
    if codec == "opus":
        await asyncio.sleep(max(0.0, (due + (frames - 1) * _FRAME_NS - now_ns()) / 1e9))
        return
    zero = encode_pcm16(np.zeros(FRAME_SAMPLES, dtype=np.int16))
    for i in range(frames):
        delay = (due + i * _FRAME_NS - now_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            async with lock:
                await ws.send_bytes(zero)
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            return  # the connection is gone: the next turn says so

"""Several recordings over one WebRTC peer connection: a caller's whole call.

``lab.clients.webrtc.run_recording_webrtc`` opens a peer connection per recording.  A
load caller is a person on one call instead (as ``lab.clients.conversation`` is over
the WebSocket): one offer, so admission happens once, when the call starts; one events
channel and one clock sync; the dialogue state carries from one utterance to the next.

Measured by the same rule as the one-recording WebRTC client: the microphone is the same
Opus track (``webrtc.MicTrack``) fed by the same loop (``lab.clients.microphone``:
frame ``k`` of a recording leaves at ``t0 + (k + 1) * 20 ms``), and reply audio lands on
the turn's timeline when the client's jitter buffer *plays* it
(``lab.clients.reply_player``), so ``lab.bench.records.make_record`` measures each turn
by the one v2v rule.  Each recording gets a ``ClientRun`` of its own whose sample 0 is
that recording's first sample; the player, its jitter buffer and the RTP streams live
for the whole call, as they do in a browser.

When has a reply finished playing?  Over WebRTC ``reply.done`` says the reply was
synthesized, not sent: the server's track still paces the rest out in real time (and a
short reply's ``reply.done`` may come before its first packet).  Ending the turn on
``reply.done`` and a quiet moment (the one-recording client's rule, enough when the
session ends anyway) would start the next recording over the reply -- a barge-in, and a
turn without its answer.  So a reply counts as finished once its audio was announced
(``reply.audio``; a reply with no text has none), no reply packet arrived for
``_QUIET_S`` (the track sends a packet every 20 ms while it has audio) and the jitter
buffer is empty; the client reports ``playback.done`` then.

Between turns: when the reply has finished playing the client says so
(``playback.done``, as the browser page does on WebRTC), and the caller thinks.  The
microphone keeps sending silence, paced like any frame (a browser's track never stops),
so the server's receive buffer sees one continuous stream; the next recording's first
frame follows the last silent one on the same 20 ms grid.  A turn that fails ends the
call.  No ``--net`` here: the loopback relays of the one-recording client are not on
this path (the load lab runs on loopback).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from halfsec import FRAME_MS, FRAME_SAMPLES, INTERNAL_RATE
from halfsec.audio.timeline import PlaybackTimeline
from halfsec.clock import now_ns
from halfsec.lab.clients.client_run import ClientRun, Received
from halfsec.lab.clients.clock_sync import sync_clock
from halfsec.lab.clients.errors import ClientError
from halfsec.lab.clients.microphone import stream_microphone
from halfsec.lab.clients.options import ClientOptions
from halfsec.lab.clients.playback_done import PlaybackDoneReporter
from halfsec.lab.clients.reply_player import PLAY_RATE, ReplyPlayer
from halfsec.lab.clients.turn_state import TurnState
from halfsec.lab.clients.webrtc import MicTrack, post_offer
from halfsec.trace.context import make_traceparent
from halfsec.wire.protocol import (
    PONG,
    SESSION_STARTED,
    ProtocolError,
    parse_server_event,
    session_end_message,
    trace_context_message,
)
from halfsec.wire.rtc import EVENTS_LABEL, intercept_rtp, restrict_ice_hosts, rtc_configuration

__all__ = ["run_webrtc_conversation"]

_FRAME_NS = FRAME_MS * 1_000_000
_QUIET_S = 0.5
"""No reply packet for this long after ``reply.done``: the server's track is done."""
_HANG_S = 30.0
"""Beyond the client's own patience (``max_tail_s``): a turn this late is a hang."""


@dataclass
class _Turn:
    """Where the events channel's messages go now: the turn being played (between
    turns, a throwaway, so nothing lands in a record already measured)."""

    run: ClientRun = field(default_factory=ClientRun)
    state: TurnState = field(default_factory=TurnState)
    reporter: PlaybackDoneReporter | None = None
    voiced: set[int] = field(default_factory=set)
    """Turns whose ``reply.done`` has text: audio is owed for them."""
    heard: set[int] = field(default_factory=set)
    """Turns whose reply finished playing here (``playback.done`` sent)."""


class _Call:
    """One peer connection and what lives as long as it: mic, player, events."""

    def __init__(self, opt: ClientOptions) -> None:
        self.opt = opt
        self.pc = RTCPeerConnection(rtc_configuration())
        self.mic = MicTrack()
        self.turn = _Turn()
        self.player = ReplyPlayer(self.turn.run, self.turn.state)
        self.channel = self.pc.createDataChannel(EVENTS_LABEL)
        self.opened = asyncio.Event()
        self.announced: set[int] = set()
        """Turns whose first reply packet the server announced (``reply.audio``)."""
        self.last_packet_ns = 0
        self.setup: asyncio.Queue[dict[str, Any]] | None = asyncio.Queue()
        """Events before the first turn (session.started, pongs); None afterwards."""
        self.channel.on("open", self.opened.set)
        self.channel.on("message", self._message)
        self.pc.on("track", self._track)

    def send(self, text: str) -> None:
        if self.channel.readyState == "open":
            self.channel.send(text)

    async def send_async(self, text: str) -> None:
        self.send(text)

    def _track(self, track: MediaStreamTrack) -> None:
        for t in self.pc.getTransceivers():
            if t.receiver.track is track:
                intercept_rtp(t.receiver, self._packet)

    def _packet(self, seq: int, ts: int, payload: bytes, pt: int) -> None:
        self.last_packet_ns = now_ns()
        self.player.push(seq, ts, payload)

    def reply_playing(self, turn: _Turn) -> bool:
        """Whether a reply of ``turn`` is still (or not yet) being heard (see the module
        docstring); a reply found finished is reported (``playback.done``)."""
        quiet = (
            now_ns() - self.last_packet_ns >= _QUIET_S * 1e9 and self.player.buffer.buffered == 0
        )
        owed = False
        for tid in turn.state.finished - turn.state.interrupted - turn.heard:
            if quiet and (tid in self.announced or tid not in turn.voiced):
                turn.heard.add(tid)
                if turn.reporter is not None:
                    turn.reporter.reply_done(tid)
            else:
                owed = True
        return owed or self.player.playing

    def _message(self, message: str | bytes) -> None:
        t = now_ns()
        if not isinstance(message, str):
            return
        turn = self.turn
        try:
            ev = parse_server_event(message)
        except ProtocolError as e:
            turn.run.events.append(Received(t, {"type": "_client_error", "message": e.message}))
            return
        if self.setup is not None:
            self.setup.put_nowait(ev)
        kind, tid = ev["type"], int(ev.get("turn_id", 0) or 0)
        if kind == PONG:
            return
        turn.run.events.append(Received(t, ev, tid, int(ev.get("t_server_ns", 0) or 0)))
        if kind == "reply.audio":
            self.announced.add(tid)
            if "rtp_timestamp" in ev:
                self.player.mark_turn(int(ev["rtp_timestamp"]), tid, int(ev["t_server_ns"]))
        elif turn.state.apply(ev, t, turn.run):
            tp = make_traceparent()  # a fresh context parents the next turn's spans
            turn.run.traceparents.append(tp)
            self.send(trace_context_message(tp))
        elif kind == "reply.done" and str(ev.get("text") or "").strip():
            turn.voiced.add(tid)

    async def connect(self, base_url: str, first: ClientRun) -> None:
        """Offer, answer, events channel open, session.started, clock sync."""
        opt = self.opt
        self.pc.addTrack(self.mic)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        tp = make_traceparent()
        first.traceparents.append(tp)
        answer = await post_offer(base_url, self.pc.localDescription.sdp, tp, opt)
        first.session_id = str(answer.get("session_id", ""))
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=str(answer["sdp"]), type="answer")
        )
        try:
            await asyncio.wait_for(self.opened.wait(), opt.connect_timeout_s)
        except TimeoutError as e:
            raise ClientError("WebRTC did not connect (events channel never opened)") from e
        first.clock = await self._started(first)

    async def _started(self, first: ClientRun) -> Any:
        queue = self.setup
        assert queue is not None
        try:
            async with asyncio.timeout(self.opt.connect_timeout_s):
                while (ev := await queue.get())["type"] != SESSION_STARTED:
                    pass
        except TimeoutError as e:
            raise ClientError("server never sent session.started") from e
        first.domain = ev.get("domain")

        async def next_event(wait_s: float) -> dict[str, Any]:
            return await asyncio.wait_for(queue.get(), wait_s)

        clock = await sync_clock(max(1, self.opt.pings), self.send_async, next_event)
        self.setup = None
        return clock

    def begin(self, run: ClientRun) -> _Turn:
        """Route events and played audio to ``run`` from now on."""
        state = TurnState()
        turn = _Turn(run, state, PlaybackDoneReporter(run, state, self.send_async, self.player))
        self.turn = turn
        self.player.run, self.player.state = run, state
        # Every earlier reply was heard to its end: a packet that plays before its own
        # ``reply.audio`` arrives (the events channel races the RTP) must not be taken
        # for one of theirs.  It plays untagged, as in the one-recording client.
        self.player.turn_marks.clear()
        return turn

    async def end_turn(self, turn: _Turn) -> None:
        """The turn is measured: nothing more lands in its run."""
        self.turn = _Turn()
        self.player.run, self.player.state = self.turn.run, self.turn.state
        if turn.reporter is not None:
            await turn.reporter.close()

    async def silence(self, due: int, frames: int) -> None:
        """``frames`` silent frames, frame ``i`` at ``due + i * 20 ms``."""
        zero = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        for i in range(frames):
            delay = (due + i * _FRAME_NS - now_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            self.mic.put(zero)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send(session_end_message())
        await self.player.close()
        self.mic.queue.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), 5.0)


async def run_webrtc_conversation(
    base_url: str,
    pcms: Sequence[np.ndarray],
    think_s: Sequence[float],
    on_turn: Callable[[int, ClientRun], None],
    options: ClientOptions | None = None,
    keep_going: Callable[[], bool] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> None:
    """Play ``pcms`` in order over one peer connection to ``base_url`` (http://host:port);
    ``think_s[k]``: the pause after turn ``k``'s reply ended.  The contract of
    ``lab.clients.conversation.run_conversation``: each turn's run goes to
    ``on_turn(k, run)`` when it ended; a refused offer or a failed connection gives one
    run with ``error`` set, for turn 0; no turn starts once ``keep_going()`` is False;
    ``on_start(k)`` when turn ``k``'s recording begins.  Never raises for server
    misbehaviour."""
    opt = options or ClientOptions()
    restrict_ice_hosts(["127.0.0.1"])
    call = _Call(opt)
    first = ClientRun()
    first.output_rate = PLAY_RATE
    try:
        try:
            async with asyncio.timeout(2 * opt.connect_timeout_s + 15):
                await call.connect(base_url, first)
        except TimeoutError:
            first.error = "WebRTC call set-up (offer, ICE, events channel, clock) hung"
            on_turn(0, first)
            return
        except ClientError as e:
            first.error = str(e)
            on_turn(0, first)
            return
        await _turns(call, first, pcms, think_s, on_turn, keep_going, on_start)
    finally:
        await call.close()


async def _turns(
    call: _Call,
    first: ClientRun,
    pcms: Sequence[np.ndarray],
    think_s: Sequence[float],
    on_turn: Callable[[int, ClientRun], None],
    keep_going: Callable[[], bool] | None,
    on_start: Callable[[int], None] | None,
) -> None:
    t0 = now_ns() + int(call.opt.lead_ms * 1e6)
    for k, pcm in enumerate(pcms):
        if k and keep_going is not None and not keep_going():
            return
        run = first if k == 0 else _next_run(first)
        if on_start is not None:
            on_start(k)
        turn = call.begin(run)
        # The microphone loop gives up by its own rules (``TurnState.tail_done``); this
        # bound only turns a hang of the peer connection into a failed turn.
        bound_s = pcm.size / INTERNAL_RATE + call.opt.max_tail_s + _HANG_S
        try:
            async with asyncio.timeout(bound_s):
                await _play(call, turn, pcm, t0)
        except ClientError as e:
            run.error = str(e)
        except TimeoutError:
            run.error = f"the turn hung: not over {bound_s:.0f} s after its recording began"
        ended = now_ns()
        await call.end_turn(turn)
        on_turn(k, run)
        if run.error is not None or k + 1 == len(pcms):
            return
        due = run.t0_ns + (len(run.sent) + 1) * _FRAME_NS
        until = ended + int(think_s[k] * 1e9)
        silent = max(0, -(-(until - due) // _FRAME_NS))
        await call.silence(due, silent)
        t0 = due + (silent - 1) * _FRAME_NS if silent else now_ns()


def _next_run(first: ClientRun) -> ClientRun:
    """A fresh run for the next recording, on the call's clock and rates."""
    return ClientRun(
        output_rate=first.output_rate,
        session_id=first.session_id,
        domain=first.domain,
        clock=first.clock,
    )


async def _play(call: _Call, turn: _Turn, pcm: np.ndarray, t0: int) -> None:
    """One recording as the microphone, then silence until the server is done with it."""
    run = turn.run
    run.t0_ns = t0
    run.timeline = PlaybackTimeline(PLAY_RATE, t0)
    run.jitter = call.player.buffer

    async def send_frame(k: int, frame: np.ndarray) -> None:
        call.mic.put(frame)

    def check() -> None:
        if run.closed_by_server:
            raise ClientError(run.closed_by_server)
        if call.pc.connectionState in ("failed", "closed"):
            raise ClientError(f"WebRTC connection {call.pc.connectionState}")

    def playing() -> bool:
        return call.reply_playing(turn)

    await stream_microphone(run, pcm, call.opt, turn.state, playing, send_frame, check)
    if run.closed_by_server:
        raise ClientError(run.closed_by_server)

"""Barge-in from the user's side: speak into the reply at a chosen point, hear it stop.

One WebSocket conversation (PCM16 both ways): the client plays a question as a microphone
at real-time pace, waits until the reply has been *heard* for ``at_ms`` (from its first
audible sample on the client's timeline), then plays a second clip into it -- an
interruption ("wait", "no, stop") or a backchannel ("uh-huh", "okay") -- and keeps the
microphone open with silence until the server is done.

The client plays the reply like the browser page does: PCM placed on its timeline as it
arrives (``audio.timeline.PlaybackTimeline``), paused on ``reply.paused`` (what was still
to play is kept), resumed on ``reply.resumed``, dropped on ``interruption``; and it says
``playback.done`` when a reply has played to its end.  The measurement is the user's:

* onset: the clip's first voiced sample (``measure.end_of_speech.voiced_bounds``) where
  the client played it (its frame's place on the microphone timeline);
* the final stop: where the client stopped playing the reply for good -- the first
  ``reply.paused`` or ``interruption`` of the reply after the clip began that no
  ``reply.resumed`` undid (a pause that resumed and paused again counts from the second
  pause: the reply sounded in between); none when the reply was resumed in the end;
* stop: onset -> the reply's last audible sample (``measure.audible``) on the client's
  timeline before the final stop (0: it was silent already); with no final stop, the
  reply's last audible sample at all (it was never stopped: ``stopped`` is False);
* cut: onset -> the final stop itself, whatever the reply was saying then;
* for a backchannel: whether the reply was cancelled, and the pause heard: the last
  audible sample before the first pause to the first audible one after ``reply.resumed``.

The client applies each event when it receives it, and drops what it had queued but not
played yet on ``reply.paused`` (kept for ``reply.resumed``), as the browser page does.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from halfsec import FRAME_MS, FRAME_SAMPLES, INTERNAL_RATE
from halfsec.audio.framing import frames_of
from halfsec.audio.timeline import PlaybackTimeline
from halfsec.clock import now_ns
from halfsec.lab.clients.errors import ClientError
from halfsec.lab.clients.websocket import open_websocket
from halfsec.measure.audible import first_audible_sample
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.wire.audio_packets import decode_audio, encode_pcm16
from halfsec.wire.protocol import (
    SESSION_STARTED,
    parse_server_event,
    playback_done_message,
    session_end_message,
    session_start_message,
)

SETTLE_S = 0.6
"""Silence kept flowing after everything finished playing (a late event is still seen),
or after the reply was resumed or cancelled (the run has its answer then)."""


@dataclass
class BargeInRun:
    """What one interruption or backchannel did to the reply, at the client."""

    at_ms: float
    """How long the reply had been heard when the clip's onset played."""
    onset_sample: int | None = None
    """The clip's first voiced sample on the timeline (output rate)."""
    stop_ms: float | None = None
    """Onset -> the reply's last audible sample before its final stop (0: silent already;
    not stopped: its last audible sample at all)."""
    cut_ms: float | None = None
    """Onset -> the final stop, where the client stopped playing the reply for good
    (whatever it was saying then); None when nothing stopped it."""
    stopped: bool = False
    """The reply stopped for good after the clip began (paused and never resumed, or
    cancelled); a pause that was resumed is no stop."""
    paused: bool = False
    """The reply paused after the clip began (so do ``resumed`` and ``cancelled``)."""
    pauses: int = 0
    """``reply.paused`` of the reply after the clip began: more than one means it paused,
    resumed and paused again (the reply sounded in between)."""
    resumed: bool = False
    cancelled: bool = False
    """The reply got an ``interruption``."""
    pause_heard_ms: float | None = None
    """Backchannel: silence heard in the reply, last audible sample before the pause to
    the first after ``reply.resumed``."""
    resume_reason: str | None = None
    resume_text: str | None = None
    heard_text: str | None = None
    """What STT heard in the clip when it became a turn (an interruption)."""
    clip_ns: int | None = None
    """When the clip's first frame was due to leave the microphone."""
    reply_turn: int | None = None
    error: str | None = None
    events: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    """(client receive ns, event) of every server event."""


def _last_audible(pcm: np.ndarray) -> int | None:
    hit = first_audible_sample(pcm[::-1])
    return None if hit is None else pcm.size - 1 - hit


class _Player:
    """The client's speaker: PCM replies on a timeline, paused/resumed/dropped by events."""

    def __init__(self, rate: int, t0_ns: int) -> None:
        self.timeline = PlaybackTimeline(rate, t0_ns)
        self.marks: list[tuple[int, str, int]] = []
        """(receive ns, event type, turn) of every pause, resume and interruption."""
        self.dropped: set[int] = set()
        self.done: set[int] = set()
        self.reported: set[int] = set()

    def event(self, ev: dict[str, Any], t: int) -> None:
        kind, tid = ev["type"], int(ev.get("turn_id", 0) or 0)
        if kind in ("reply.paused", "reply.resumed", "interruption"):
            self.marks.append((t, kind, tid))
        if kind == "reply.paused":
            self.timeline.pause(t)
        elif kind == "reply.resumed":
            self.timeline.resume(t)
        elif kind == "interruption":
            self.dropped.add(tid)
            self.timeline.stop(t)
        elif kind == "reply.done":
            self.done.add(tid)

    def audio(self, turn_id: int, pcm: np.ndarray, t: int) -> None:
        if turn_id not in self.dropped:
            self.timeline.place(pcm, t, turn_id)

    def finished(self) -> list[int]:
        """Replies done, not dropped, played to their end and not reported yet."""
        tl = self.timeline
        if tl.held is not None or now_ns() < tl.playing_until_ns:
            return []
        out = [t for t in self.done - self.dropped - self.reported]
        self.reported.update(out)
        return out

    def first_audible_ns(self, turn_id: int) -> int | None:
        tl = self.timeline
        starts = [s for tid, s, _n, _a in tl.chunks if tid == turn_id]
        if not starts:
            return None
        hit = first_audible_sample(tl.played, start=min(starts))
        return None if hit is None else tl.t0_ns + round(hit * 1e9 / tl.rate)


async def run_barge_in(
    url: str,
    question: np.ndarray,
    clip: np.ndarray,
    at_ms: float,
    max_s: float = 20.0,
) -> BargeInRun:
    """Ask ``question`` (16 kHz int16), play ``clip`` into the reply ``at_ms`` after its
    first audible sample, and measure what the reply did (see the module docstring)."""
    out = BargeInRun(at_ms=at_ms)
    try:
        async with aiohttp.ClientSession() as http:
            async with await open_websocket(http, url, {}) as ws:
                await _converse(ws, question, clip, at_ms, max_s, out)
    except ClientError as e:
        out.error = str(e)
    return out


async def _start(ws: aiohttp.ClientWebSocketResponse) -> int:
    await ws.send_str(session_start_message(INTERNAL_RATE))
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ClientError(f"server closed before session.started ({msg.type})")
        ev = parse_server_event(msg.data)
        if ev["type"] == SESSION_STARTED:
            return int(ev.get("output_sample_rate", INTERNAL_RATE))
        if ev["type"] == "error":
            raise ClientError(f"session.start refused: {ev.get('code')}: {ev.get('message')}")


async def _converse(
    ws: aiohttp.ClientWebSocketResponse,
    question: np.ndarray,
    clip: np.ndarray,
    at_ms: float,
    max_s: float,
    out: BargeInRun,
) -> None:
    rate = await _start(ws)
    t0 = now_ns() + 20_000_000
    player = _Player(rate, t0)
    bounds = voiced_bounds(clip)
    if bounds is None:
        raise ClientError("the clip has no voiced sample")
    receiver = asyncio.create_task(_receive(ws, player, out))
    k = 0

    async def send(frame: np.ndarray) -> None:
        nonlocal k
        due = t0 + (k + 1) * FRAME_MS * 1_000_000
        await asyncio.sleep(max(0.0, (due - now_ns()) / 1e9))
        if receiver.done():
            raise ClientError("connection lost")
        await ws.send_bytes(encode_pcm16(frame))
        k += 1

    try:
        for f in frames_of(question):
            await send(f)
        silence = np.zeros(FRAME_SAMPLES, np.int16)
        deadline = now_ns() + int(max_s * 1e9)
        clip_at: int | None = None  # due time of the clip's onset
        while clip_at is None or now_ns() < clip_at:
            if now_ns() > deadline:
                raise ClientError("the reply never became audible")
            first = out.reply_turn and player.first_audible_ns(out.reply_turn)
            if first and clip_at is None:
                clip_at = first + int(at_ms * 1e6)
            # The clip's first frame starts at sample k * 320; its onset lies bounds[0] in.
            nxt = t0 + k * FRAME_MS * 1_000_000 + round(bounds[0] * 1e9 / INTERNAL_RATE)
            if clip_at is not None and nxt >= clip_at:
                break
            await send(silence)
        out.onset_sample = round((k * FRAME_SAMPLES + bounds[0]) * rate / INTERNAL_RATE)
        out.clip_ns = t0 + k * FRAME_MS * 1_000_000
        for f in frames_of(clip):
            await send(f)
        quiet_since: int | None = None
        while now_ns() < deadline:
            for tid in player.finished():
                with contextlib.suppress(Exception):
                    await ws.send_str(playback_done_message(tid))
            busy = player.timeline.held is not None or now_ns() < player.timeline.playing_until_ns
            idle = not busy and not _awaiting_reply(out)
            decided = any(
                e["type"] in ("reply.resumed", "interruption") and e["turn_id"] == out.reply_turn
                for _, e in out.events
            )
            quiet_since = (quiet_since or now_ns()) if idle or decided else None
            if quiet_since is not None and now_ns() - quiet_since > SETTLE_S * 1e9:
                break
            await send(silence)
        with contextlib.suppress(Exception):
            await ws.send_str(session_end_message())
    finally:
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await receiver
    _measure(player, out)


def _awaiting_reply(out: BargeInRun) -> bool:
    """A turn ended whose reply is neither done nor interrupted yet."""
    ended = {int(e["turn_id"]) for _, e in out.events if e["type"] == "turn.end"}
    over = {
        int(e["turn_id"])
        for _, e in out.events
        if e["type"] in ("reply.done", "interruption", "error")
    }
    started = {int(e["turn_id"]) for _, e in out.events if e["type"] == "vad.speech_started"}
    return bool(ended - over) or bool(started - ended)


async def _receive(ws: aiohttp.ClientWebSocketResponse, player: _Player, out: BargeInRun) -> None:
    async for msg in ws:
        t = now_ns()
        if msg.type == aiohttp.WSMsgType.BINARY:
            pkt = decode_audio(msg.data)
            if out.reply_turn is None:
                out.reply_turn = pkt.turn_id
            player.audio(pkt.turn_id, pkt.pcm, t)
        elif msg.type == aiohttp.WSMsgType.TEXT:
            ev = parse_server_event(msg.data)
            out.events.append((t, ev))
            player.event(ev, t)
        else:
            return


def final_stop(marks: list[tuple[int, str, int]], turn_id: int, since_ns: int) -> int | None:
    """When the reply ``turn_id`` stopped for good after ``since_ns``: its first pause or
    interruption that no resume undid (``marks`` as ``_Player.marks``); None if none."""
    stop: int | None = None
    for t, kind, tid in marks:
        if tid != turn_id or t < since_ns:
            continue
        if kind == "reply.resumed":
            stop = None  # it played on: that pause was no stop
        elif stop is None:
            stop = t
        if kind == "interruption":
            break
    return stop


def _measure(player: _Player, out: BargeInRun) -> None:
    tl, onset = player.timeline, out.onset_sample
    rt = out.reply_turn
    # Only what the reply did once the clip began (a breath at the end of the question
    # may pause and resume it before).
    since = out.clip_ns or 0
    kinds = [(e["type"], int(e.get("turn_id", 0) or 0), e) for t, e in out.events if t >= since]
    out.paused = any(k == "reply.paused" and tid == rt for k, tid, _ in kinds)
    out.cancelled = any(k == "interruption" and tid == rt for k, tid, _ in kinds)
    for k, tid, e in kinds:
        if k == "reply.resumed" and tid == rt:
            out.resumed, out.resume_reason, out.resume_text = True, e.get("reason"), e.get("text")
        elif k == "transcript.final" and tid != rt and out.heard_text is None:
            out.heard_text = e.get("text")
    if onset is None or rt is None or out.clip_ns is None:
        return
    played = tl.played
    # The VAD may fire before the first voiced sample (the reply is then silent at the
    # onset: 0 ms), so stops count from the clip's first frame.
    final = final_stop(player.marks, rt, out.clip_ns)
    out.stopped = final is not None
    cut = tl.sample_at(final) if final is not None else played.size
    if final is not None:
        out.cut_ms = (cut - onset) * 1000 / tl.rate
    last = _last_audible(played[onset:cut]) if cut > onset else None
    out.stop_ms = 0.0 if last is None else (last + 1) * 1000 / tl.rate
    pauses = [t for t, k, tid in player.marks if k == "reply.paused" and tid == rt]
    pauses = [t for t in pauses if t >= out.clip_ns]
    out.pauses = len(pauses)
    if not (out.resumed and pauses):
        return
    first = tl.sample_at(pauses[0])
    resumes = [tl.sample_at(t) for t, k, tid in player.marks if k == "reply.resumed" and tid == rt]
    resumes = [r for r in resumes if r >= first]
    if resumes:
        before = _last_audible(played[:first])
        after = first_audible_sample(played, start=resumes[0])
        if before is not None and after is not None:
            out.pause_heard_ms = (after - before) * 1000 / tl.rate

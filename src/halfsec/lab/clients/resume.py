"""A conversation that survives its server: reconnect, resume, replay the turn in flight.

The lab's failover client.  It speaks several utterances, one turn each, over one
conversation, and holds what it needs to continue anywhere:

* the latest ``context`` token (the server's signed dialogue state after the last
  answered turn, ``server.resume``) -- there is no shared database, the client carries it;
* the audio it sent since that answer (the turn in flight).

When the connection drops (the server, or its whole region, died) it reconnects through
the gateway URLs in order, sends ``session.start`` with ``"resume": token`` and replays
the held audio at once (a burst: the server admits 5 s of audio beyond real time, so the
replay costs network time, not speaking time), then goes on.  A turn is *answered* when
a non-empty ``reply.done`` arrives for audio sent on the current connection; a turn the
client gave up on is *lost*.  Replay means at-least-once: if the server answered but died
before its ``context`` event left, the turn is answered again, from the state before it.

Times are this process's monotonic clock, so a harness that kills a region from the same
process can measure kill -> answer directly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from halfsec import FRAME_MS, FRAME_SAMPLES, INTERNAL_RATE
from halfsec.audio.framing import frames_of
from halfsec.clock import now_ns
from halfsec.lab.clients.errors import ClientError
from halfsec.wire.audio_packets import encode_pcm16
from halfsec.wire.protocol import (
    CONTEXT,
    SESSION_STARTED,
    ProtocolError,
    parse_server_event,
    session_start_message,
)

__all__ = [
    "Leg",
    "ResumeOptions",
    "ResumeRun",
    "TurnOutcome",
    "converse_resuming",
    "upstream_of",
]

_SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)


@dataclass(frozen=True, slots=True)
class ResumeOptions:
    token: str | None = None
    """Bearer token for the gateway / servers."""
    connect_timeout_s: float = 3.0
    """One connection attempt (TCP + upgrade + ``session.started``)."""
    reconnect_for_s: float = 15.0
    """How long to keep trying the URLs after a drop before the turn is lost."""
    retry_pause_s: float = 0.05
    answer_timeout_s: float = 15.0
    """Per turn, from its last sample sent: no answer by then and the turn is lost."""
    gap_s: float = 0.5
    """Silence between an answer and the next utterance."""
    replay_tail_ms: float = 600.0
    """Silence sent with a replayed turn in the same burst, so its end of turn comes at
    once instead of a real-time silence window later."""


@dataclass
class Leg:
    """One connection of the conversation."""

    url: str
    t_open_ns: int
    session_id: str = ""
    resumed: bool | None = None
    """None: no token was offered; else whether the server accepted it."""
    errors: list[str] = field(default_factory=list)
    t_closed_ns: int | None = None
    server_events: int = 0
    upstream: str | None = None
    """The server a gateway chose (its ``x-halfsec-upstream`` header), if one said."""
    t_started_ns: int | None = None
    """When ``session.started`` arrived."""


@dataclass
class TurnOutcome:
    index: int
    t_sent_ns: int = 0
    """When the utterance's last sample was sent (first attempt)."""
    attempts: int = 0
    """Connections the utterance was sent on (> 1: replayed after a drop)."""
    t_first_audio_ns: int | None = None
    t_answer_ns: int | None = None
    """``reply.done`` of the answer."""
    reply: str = ""
    transcript: str = ""
    session_id: str = ""

    @property
    def answered(self) -> bool:
        return self.t_answer_ns is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "answered": self.answered,
            "attempts": self.attempts,
            "transcript": self.transcript,
            "reply": self.reply,
            "session_id": self.session_id,
            "answer_after_sent_ms": (self.t_answer_ns - self.t_sent_ns) / 1e6
            if self.t_answer_ns is not None
            else None,
        }


@dataclass
class ResumeRun:
    turns: list[TurnOutcome] = field(default_factory=list)
    legs: list[Leg] = field(default_factory=list)
    error: str | None = None

    @property
    def turns_lost(self) -> int:
        return sum(1 for t in self.turns if not t.answered)


class _Link:
    """One live connection: the socket, its reader, what it has seen."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, leg: Leg) -> None:
        self.ws = ws
        self.leg = leg
        self.events: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
        self.lost = asyncio.Event()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                t = now_ns()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    self.events.put_nowait((t, {"type": "_audio"}))
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    try:
                        ev = parse_server_event(msg.data)
                    except ProtocolError:
                        continue
                    self.leg.server_events += 1
                    if ev["type"] == "error":
                        self.leg.errors.append(str(ev.get("code")))
                    self.events.put_nowait((t, ev))
                else:
                    break
        finally:
            self.leg.t_closed_ns = now_ns()
            self.lost.set()

    async def send(self, frame: np.ndarray) -> None:
        try:
            await self.ws.send_bytes(encode_pcm16(frame))
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            self.lost.set()

    async def close(self) -> None:
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.reader
        with contextlib.suppress(Exception):
            await self.ws.close()


class _Conversation:
    def __init__(
        self, http: aiohttp.ClientSession, urls: Sequence[str], opt: ResumeOptions
    ) -> None:
        self.http, self.urls, self.opt = http, list(urls), opt
        self.run = ResumeRun()
        self.context: str | None = None
        self.link: _Link | None = None

    async def connect(self) -> _Link:
        """A new connection through the first URL that takes it, resuming if we can."""
        deadline = now_ns() + int(self.opt.reconnect_for_s * 1e9)
        headers = {"Authorization": f"Bearer {self.opt.token}"} if self.opt.token else {}
        last = "no URL tried"
        while now_ns() < deadline:
            for url in self.urls:
                leg = Leg(url, now_ns())
                try:
                    link = await asyncio.wait_for(
                        self._open(url, headers, leg), self.opt.connect_timeout_s
                    )
                except (aiohttp.ClientError, OSError, TimeoutError, ClientError) as e:
                    last = f"{url}: {type(e).__name__}: {e}"
                    continue
                self.run.legs.append(leg)
                return link
            await asyncio.sleep(self.opt.retry_pause_s)
        raise ClientError(f"could not reconnect within {self.opt.reconnect_for_s:g} s ({last})")

    async def _open(self, url: str, headers: dict[str, str], leg: Leg) -> _Link:
        ws = await self.http.ws_connect(url, headers=headers, autoping=True)
        leg.upstream = upstream_of(ws)
        try:
            await ws.send_str(session_start_message(INTERNAL_RATE, resume=self.context))
            while True:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise ClientError(f"connection closed before session.started ({msg.type})")
                ev = parse_server_event(msg.data)
                if ev["type"] == SESSION_STARTED:
                    leg.t_started_ns = now_ns()
                    leg.session_id = str(ev.get("session_id", ""))
                    leg.resumed = ev.get("resumed") if self.context is not None else None
                    return _Link(ws, leg)
                if ev["type"] == "error":
                    raise ClientError(f"session.start refused: {ev.get('code')}")
        except BaseException:
            await ws.close()
            raise

    async def turn(
        self, index: int, pcm: np.ndarray, on_sent: Callable[[int], Awaitable[None]] | None
    ) -> TurnOutcome:
        out = TurnOutcome(index)
        self.run.turns.append(out)
        held = list(frames_of(pcm))
        replay = False
        lost_at: int | None = None
        while True:
            if self.link is None or self.link.lost.is_set():
                if self.link is not None:
                    await self.link.close()
                    replay = True
                self.link = await self.connect()
            link = self.link
            out.attempts += 1
            if replay:
                out.t_first_audio_ns = None  # the answer that counts is the new server's
                # Burst: the turn in flight plus enough silence to end it.
                tail = int(self.opt.replay_tail_ms // FRAME_MS)
                for frame in [*held, *[_SILENCE] * tail]:
                    await link.send(frame)
            else:
                await _realtime(link, held)
                out.t_sent_ns = now_ns()
                if on_sent is not None:
                    await on_sent(index)
            answered = await self._await_answer(link, out)
            if answered:
                return out
            if not link.lost.is_set():
                return out  # the server is there but never answered: lost, not a drop
            lost_at = lost_at or now_ns()
            if (now_ns() - lost_at) / 1e9 > self.opt.reconnect_for_s:
                return out

    async def _await_answer(self, link: _Link, out: TurnOutcome) -> bool:
        """Keep the microphone going (silence) until the turn is answered (and its
        context sealed), the link drops, or the answer is overdue."""
        deadline = now_ns() + int(self.opt.answer_timeout_s * 1e9)
        t_next = now_ns()
        done_at: int | None = None
        while now_ns() < deadline and not link.lost.is_set():
            while not link.events.empty():
                t, ev = link.events.get_nowait()
                kind = ev["type"]
                if kind == "_audio" and out.t_first_audio_ns is None:
                    out.t_first_audio_ns = t
                elif kind == "transcript.final":
                    out.transcript = str(ev.get("text", ""))
                elif kind == "reply.done" and str(ev.get("text", "")).strip():
                    out.reply, out.t_answer_ns = str(ev["text"]), t
                    out.session_id = link.leg.session_id
                    done_at = t
                elif kind == CONTEXT and done_at is not None:
                    self.context = str(ev.get("token"))
                    return True
            if done_at is not None and (now_ns() - done_at) / 1e9 > 1.0:
                return True  # answered, but this server seals no context
            t_next += FRAME_MS * 1_000_000
            await _sleep_until(t_next, link)
            await link.send(_SILENCE)
        return out.answered

    async def gap(self) -> None:
        if self.link is not None and not self.link.lost.is_set():
            await _realtime(self.link, [_SILENCE] * int(self.opt.gap_s * 1e3 // FRAME_MS))


def upstream_of(ws: aiohttp.ClientWebSocketResponse) -> str | None:
    """The ``x-halfsec-upstream`` header of the upgrade (``halfsec gateway``), or None.
    aiohttp keeps the upgrade response only privately, hence the guarded lookup."""
    response = getattr(ws, "_response", None)
    headers = getattr(response, "headers", None)
    return headers.get("x-halfsec-upstream") if headers is not None else None


async def _sleep_until(t_ns: int, link: _Link) -> None:
    wait = (t_ns - now_ns()) / 1e9
    if wait > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(link.lost.wait(), wait)


async def _realtime(link: _Link, frames: Sequence[np.ndarray]) -> None:
    """Frames at microphone pace (frame k after (k + 1) x 20 ms), until the link drops."""
    t0 = now_ns()
    for k, frame in enumerate(frames):
        await _sleep_until(t0 + (k + 1) * FRAME_MS * 1_000_000, link)
        if link.lost.is_set():
            return
        await link.send(frame)


async def converse_resuming(
    urls: Sequence[str],
    utterances: Sequence[np.ndarray],
    options: ResumeOptions | None = None,
    on_sent: Callable[[int], Awaitable[None]] | None = None,
) -> ResumeRun:
    """Speak ``utterances`` (16 kHz int16) as one conversation through ``urls`` (tried in
    order on every (re)connect); ``on_sent(i)`` runs when utterance ``i``'s last sample
    left (a harness kills a region there).  Never raises for a server's failure:
    ``ResumeRun`` counts the turns lost and holds every connection used."""
    opt = options or ResumeOptions()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=opt.connect_timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        conv = _Conversation(http, urls, opt)
        try:
            for i, pcm in enumerate(utterances):
                await conv.turn(i, pcm, on_sent)
                await conv.gap()
        except ClientError as e:
            conv.run.error = str(e)
        finally:
            if conv.link is not None:
                await conv.link.close()
        done = {t.index for t in conv.run.turns}
        conv.run.turns += [TurnOutcome(i) for i in range(len(utterances)) if i not in done]
        return conv.run

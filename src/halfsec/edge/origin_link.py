"""One pre-started origin session: the edge's side of the long path, for one conversation.

``open_link`` pays, before any client asks, everything a session costs on the long path:
TCP, the WebSocket upgrade, ``session.start`` and a clock sync (pings, so origin times can
be mapped onto the edge's clock).  A link then keeps itself alive with pings while it
waits in the pool (``origin_pool``).

Every link has exactly one reader task.  While warm it only consumes pongs (the clock
sync); once attached to a client, everything else goes to the client's handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from halfsec import INTERNAL_RATE
from halfsec.clock import now_ns
from halfsec.edge.options import token_exposure
from halfsec.wire.protocol import (
    PONG,
    SESSION_STARTED,
    ping_message,
    session_end_message,
    session_start_message,
)

log = logging.getLogger("halfsec.edge")


class OriginUnavailable(Exception):
    """The origin cannot be reached or refused the session; the message says why."""


class OriginRefused(OriginUnavailable):
    """The origin answered the upgrade with an HTTP error (503: at its session limit).

    Distinct because retrying at once cannot help, and the client deserves to hear that
    the origin is full rather than that it is unreachable."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        hint = (
            " -- the origin is at its --max-sessions limit"
            if status == 503
            else " -- check --origin-token"
            if status in (401, 403)
            else ""
        )
        super().__init__(f"origin refused the WebSocket (HTTP {status}: {message}){hint}")


@dataclass(frozen=True, slots=True)
class OriginOptions:
    url: str
    token: str | None = None
    pool_size: int = 2
    """Warm sessions kept ready.  One is consumed per client conversation; two cover a
    user reconnecting while the previous link is being replaced."""
    clock_pings: int = 4
    """Pings exchanged while warming, so a client's first turn has the origin's clock."""
    keepalive_s: float = 10.0
    """Ping interval; the origin closes sessions silent for 30 s, and the edge forwards
    nothing while the user is silent."""
    connect_timeout_s: float = 10.0
    retry_min_s: float = 0.2
    retry_max_s: float = 5.0
    young_s: float = 5.0
    """A warm link that dies sooner than this after opening counts as dying young: the
    refill backs off before replacing it instead of churning origin sessions."""
    acquire_attempts: int = 2
    """Cold opens tried for one client before it gets ``origin_unavailable``."""


Handler = Callable[[aiohttp.WSMessage], Awaitable[None]]


@dataclass
class LinkCounters:
    messages: int = 0
    bytes: int = 0
    audio_messages: int = 0
    audio_bytes: int = 0
    pings: int = 0
    """The edge's own keepalive/clock pings (never a client's message)."""


@dataclass
class OriginLink:
    """One pre-started origin session on its own kept-alive WebSocket."""

    http: aiohttp.ClientSession
    ws: aiohttp.ClientWebSocketResponse
    started: dict[str, Any]
    keepalive_s: float
    sent: LinkCounters = field(default_factory=LinkCounters)
    handler: Handler | None = None
    on_close: Callable[[str], Awaitable[None]] | None = None
    closed_reason: str | None = None
    _exchanges: list[tuple[int, int, int]] = field(default_factory=list)
    _pings: dict[int, int] = field(default_factory=dict)
    _next_ping: int = 1
    _last_send_ns: int = 0
    _send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _synced: asyncio.Event = field(default_factory=asyncio.Event)
    opened_at: float = field(default_factory=time.monotonic)

    @property
    def age_s(self) -> float:
        return time.monotonic() - self.opened_at

    # -- clock ------------------------------------------------------------------------
    @property
    def offset_ns(self) -> int:
        """Origin clock minus edge clock, from the fastest ping exchange so far."""
        if not self._exchanges:
            return 0
        t0, t1, t3 = min(self._exchanges, key=lambda e: e[2] - e[0])
        return t1 - (t0 + t3) // 2

    @property
    def rtt_ns(self) -> int | None:
        if not self._exchanges:
            return None
        return min(e[2] - e[0] for e in self._exchanges)

    def to_edge_ns(self, t_origin_ns: int) -> int:
        return t_origin_ns - self.offset_ns

    # -- sending ----------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.closed_reason is None and not self.ws.closed

    async def send_str(self, text: str) -> None:
        async with self._send_lock:
            await self.ws.send_str(text)
            self.sent.messages += 1
            self.sent.bytes += len(text)
            self._last_send_ns = now_ns()

    async def send_bytes(self, data: bytes) -> None:
        async with self._send_lock:
            await self.ws.send_bytes(data)
            self.sent.messages += 1
            self.sent.bytes += len(data)
            self.sent.audio_messages += 1
            self.sent.audio_bytes += len(data)
            self._last_send_ns = now_ns()

    async def ping(self) -> None:
        pid = self._next_ping
        self._next_ping += 1
        t = now_ns()
        self._pings[pid] = t
        await self.send_str(ping_message(pid, t))
        self.sent.pings += 1

    # -- lifecycle --------------------------------------------------------------------
    def start_tasks(self) -> None:
        self._tasks.append(asyncio.create_task(self._reader(), name="edge-origin-reader"))
        self._tasks.append(asyncio.create_task(self._keepalive(), name="edge-origin-keepalive"))

    async def sync_clock(self, n: int, timeout_s: float) -> None:
        for _ in range(n):
            self._synced.clear()
            await self.ping()
            await asyncio.wait_for(self._synced.wait(), timeout_s)

    async def _reader(self) -> None:
        reason = "origin closed the connection"
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT and self._is_own_pong(msg.data):
                    continue
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    if self.handler is not None:
                        await self.handler(msg)
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    reason = f"origin connection error: {self.ws.exception()}"
                    break
            code = self.ws.close_code
            if code is not None:
                reason = f"origin closed the connection (close code {code})"
        except asyncio.CancelledError:
            reason = "edge closed the link"
            raise
        except Exception as e:  # a broken link must only end its own conversation
            reason = f"origin link failed ({type(e).__name__}: {e})"
        finally:
            await self._closed(reason)

    def _is_own_pong(self, text: str) -> bool:
        """Pongs are the edge's (client pings are answered at the edge, never forwarded)."""
        if '"pong"' not in text:
            return False
        try:
            ev = json.loads(text)
        except ValueError:
            return False
        if not isinstance(ev, dict) or ev.get("type") != PONG:
            return False
        t_send = self._pings.pop(ev.get("id", -1), None)
        if t_send is not None and isinstance(ev.get("t_server_ns"), int):
            self._exchanges.append((t_send, int(ev["t_server_ns"]), now_ns()))
            del self._exchanges[:-32]
            self._synced.set()
        return True

    async def _keepalive(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
            while self.alive:
                await asyncio.sleep(self.keepalive_s / 4)
                if now_ns() - self._last_send_ns >= self.keepalive_s * 1e9:
                    await self.ping()

    async def _closed(self, reason: str) -> None:
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        cb, self.on_close = self.on_close, None
        if cb is not None:
            with contextlib.suppress(Exception):
                await cb(reason)

    async def close(self, say_goodbye: bool = True) -> None:
        """End the origin session (``session.end`` first, so it frees its work now)."""
        self.on_close = None
        if say_goodbye and self.alive:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.send_str(session_end_message()), 1.0)
        self.closed_reason = self.closed_reason or "closed by the edge"
        try:
            await self._stop_tasks()
        finally:
            with contextlib.suppress(Exception):
                await self.ws.close()
            with contextlib.suppress(Exception):
                await self.http.close()

    async def _stop_tasks(self) -> None:
        me = asyncio.current_task()
        others = [t for t in self._tasks if t is not me]
        for t in others:
            t.cancel()
        for t in others:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


async def open_link(opt: OriginOptions) -> OriginLink:
    """TCP + WebSocket upgrade + ``session.start`` (16 kHz PCM16) + clock sync.

    The edge always sends the origin 16 kHz: it resamples client audio anyway to run its
    VAD, so the long path never carries 48 kHz and every pooled session fits any client.

    Every failure -- refusal, reset, timeout -- comes out as ``OriginUnavailable`` with
    everything already closed: the pool's refill loop must never die of an unexpected
    exception type, and a half-opened link must never keep an origin session."""
    problem = token_exposure(opt.url, opt.token)
    if problem:  # EdgeOptions refuses this at start; a pool built by hand must too
        raise OriginUnavailable(problem)
    headers = {"Authorization": f"Bearer {opt.token}"} if opt.token else {}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=opt.connect_timeout_s)
    http = aiohttp.ClientSession(timeout=timeout)
    ws: aiohttp.ClientWebSocketResponse | None = None
    try:
        try:
            ws = await asyncio.wait_for(
                http.ws_connect(opt.url, headers=headers, max_msg_size=16 * 1024 * 1024),
                opt.connect_timeout_s,
            )
        except aiohttp.WSServerHandshakeError as e:
            raise OriginRefused(e.status, e.message) from e
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise OriginUnavailable(
                f"cannot connect to the origin {opt.url} ({type(e).__name__}: {e})"
            ) from e
        try:
            await ws.send_str(session_start_message(INTERNAL_RATE))
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as e:
            raise OriginUnavailable(f"origin connection failed during session.start ({e})") from e
        started = await _await_started(ws, opt.connect_timeout_s)
        link = OriginLink(http=http, ws=ws, started=started, keepalive_s=opt.keepalive_s)
        link.start_tasks()
        try:
            await link.sync_clock(max(1, opt.clock_pings), opt.connect_timeout_s)
        except BaseException as e:
            await link.close(say_goodbye=True)
            if isinstance(e, TimeoutError | ConnectionError | RuntimeError | aiohttp.ClientError):
                raise OriginUnavailable(
                    f"origin never answered a ping ({type(e).__name__}; link: {link.closed_reason})"
                ) from e
            raise
        return link
    except BaseException:
        # Close the WebSocket first (a close frame frees the origin session now rather
        # than when the origin notices the TCP connection is gone), then the session.
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
        if not http.closed:
            await http.close()
        raise


async def _await_started(ws: aiohttp.ClientWebSocketResponse, timeout_s: float) -> dict[str, Any]:
    deadline = now_ns() + int(timeout_s * 1e9)
    while True:
        left = (deadline - now_ns()) / 1e9
        if left <= 0:
            raise OriginUnavailable("origin never answered session.start")
        try:
            msg = await ws.receive(timeout=left)
        except TimeoutError as e:
            raise OriginUnavailable("origin never answered session.start") from e
        if msg.type != aiohttp.WSMsgType.TEXT:
            if msg.type == aiohttp.WSMsgType.BINARY:
                continue
            raise OriginUnavailable(
                f"origin closed the connection during session.start ({ws.close_code})"
            )
        try:
            ev = json.loads(msg.data)
        except ValueError:
            continue
        if not isinstance(ev, dict):
            continue
        if ev.get("type") == SESSION_STARTED:
            return ev
        if ev.get("type") == "error":
            raise OriginUnavailable(
                f"origin rejected session.start: {ev.get('code')}: {ev.get('message')}"
            )

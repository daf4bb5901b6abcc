"""A client's WebSocket as the server and the edge both use it.

Several tasks write to one client (the event sender, a paced audio sender, error reports
from the receive loop), so writes share one lock, and a client that vanished mid-write
never raises into them: noticing a closed socket is the receive loop's job.  Reading is
one loop too: ``client_messages`` applies the start/idle timeouts and the per-connection
message limits (``admission.MessageLimits``) and yields only messages worth handling, so
the server's ``/ws`` and the edge's enforce them identically.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Protocol

from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from halfsec.clock import now_ns
from halfsec.server.admission import MessageLimits, timeout_rejection
from halfsec.wire.protocol import error_event

log = logging.getLogger("halfsec.serve")

_SEND_ERRORS = (ConnectionError, RuntimeError)
_CLOSED_TYPES = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)


class ClientSocket:
    """Locked, never-raising, time-bounded writes to one client's WebSocket.

    A write that cannot finish within ``write_timeout_s`` means the client stopped
    reading (its TCP window is shut and aiohttp waits for the buffer to drain, holding
    the lock every other writer waits on): the connection is aborted (``transport``, the
    request's TCP transport) and every later write returns at once.  Without the bound,
    one such client held its session's sender, and through it the receive loop, so even
    the idle timeout never fired."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None = None,
        write_timeout_s: float = 10.0,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.write_timeout_s = write_timeout_s
        self.stalled = False
        """A write timed out: the client is gone for writing, the connection aborted."""
        self._lock = asyncio.Lock()

    @property
    def closed(self) -> bool:
        return self.ws.closed or self.stalled

    async def send_json(self, obj: dict[str, Any]) -> None:
        await self.send_str(json.dumps(obj))

    async def send_str(self, text: str) -> None:
        """Send one text message (a protocol whose messages are built elsewhere)."""
        await self._write(lambda: self.ws.send_str(text))

    async def send_stamped(self, build: Callable[[int], bytes]) -> int | None:
        """Send ``build(t)``, ``t`` being the moment the packet is handed to the socket
        (taken under the lock, so it is the real send time, not a queueing time).
        Returns ``t``, or None when the socket was already closed."""
        stamp: list[int] = []

        async def send() -> None:
            stamp.append(now_ns())
            await self.ws.send_bytes(build(stamp[0]))

        await self._write(send)
        return stamp[0] if stamp else None

    async def _write(self, send: Callable[[], Awaitable[None]]) -> None:
        if self.closed:
            return
        try:
            async with asyncio.timeout(self.write_timeout_s), self._lock:
                if self.closed:
                    return
                with contextlib.suppress(*_SEND_ERRORS):
                    await send()
        except TimeoutError:
            self.abort(f"no write completed within {self.write_timeout_s:g} s")

    def abort(self, reason: str) -> None:
        """Drop the connection now, without the closing handshake a client that does not
        read would never complete; the receive loop then sees it closed."""
        if self.stalled:
            return
        self.stalled = True
        log.warning("client connection aborted: %s (the client stopped reading)", reason)
        if self.transport is not None:
            self.transport.abort()
        else:
            asyncio.ensure_future(self.close(WSCloseCode.POLICY_VIOLATION, b"write timeout"))

    async def error(self, code: str, message: str, fatal: bool = False) -> None:
        await self.send_json(error_event(code, message, now_ns(), fatal=fatal))

    async def close(self, code: int = WSCloseCode.OK, message: bytes = b"") -> None:
        """Close with the handshake, but never wait on a client more than a write
        timeout for it (aiohttp waits up to 10 s for the client's close frame)."""
        if self.ws.closed:
            return
        try:
            async with asyncio.timeout(self.write_timeout_s):
                await self.ws.close(code=code, message=message)
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()
        except Exception:  # a client that vanished mid-close is closed all the same
            return


class ListenerLimits(Protocol):
    """The options every listener's receive loop reads (``ServerOptions``, ``EdgeOptions``)."""

    @property
    def max_messages_per_s(self) -> float: ...
    @property
    def max_message_bytes(self) -> int: ...
    @property
    def start_timeout_s(self) -> float: ...
    @property
    def idle_timeout_s(self) -> float: ...


async def client_messages(
    socket: ClientSocket,
    options: ListenerLimits,
    *,
    started: Callable[[], bool],
    on_rejected: Callable[[], None] | None = None,
) -> AsyncGenerator[WSMessage, None]:
    """Text and binary messages of one client, each within the limits, until it closes.

    A client that sends nothing in time (``start_timeout_s`` from connecting until
    ``started()``, then ``idle_timeout_s`` since its last message) gets a fatal error and
    is closed; a message over the rate or size limit is dropped with an error event
    (``on_rejected`` counts it), and the session goes on.

    Both are deadlines on the clock, not ``receive(timeout=...)``: aiohttp answers
    WebSocket PINGs inside ``receive`` and restarts its timeout after each, so a client
    that pinged every few seconds and never sent ``session.start`` held its slot for
    ever (eight of them refused everyone).  Control frames keep nothing alive here."""
    limits = MessageLimits(options.max_messages_per_s, options.max_message_bytes)
    start_timeout_s, idle_timeout_s = options.start_timeout_s, options.idle_timeout_s
    ws = socket.ws
    loop = asyncio.get_running_loop()
    start_deadline = loop.time() + start_timeout_s
    last_heard = loop.time()
    while not socket.closed:
        deadline = last_heard + idle_timeout_s if started() else start_deadline
        try:
            async with asyncio.timeout_at(deadline):
                msg = await ws.receive()
        except TimeoutError:
            quiet = timeout_rejection(started(), start_timeout_s, idle_timeout_s)
            await socket.error(quiet.code, quiet.message or quiet.code, fatal=True)
            await socket.close(WSCloseCode.POLICY_VIOLATION, b"timeout")
            return
        if msg.type in _CLOSED_TYPES:
            return
        if msg.type == WSMsgType.ERROR:
            log.info("websocket error: %s", ws.exception())
            return
        last_heard = loop.time()
        data = msg.data
        size = len(data.encode()) if isinstance(data, str) else len(data) if data else 0
        rejected = limits.rejection(size)
        if rejected is not None:
            if on_rejected is not None:
                on_rejected()
            if rejected.message is not None:
                await socket.error(rejected.code, rejected.message)
            continue
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            yield msg

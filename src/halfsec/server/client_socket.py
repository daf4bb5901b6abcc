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
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from halfsec.clock import now_ns
from halfsec.server.admission import MessageLimits, timeout_rejection
from halfsec.wire.protocol import error_event

log = logging.getLogger("halfsec.serve")

_SEND_ERRORS = (ConnectionError, RuntimeError)
_CLOSED_TYPES = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)


class ClientSocket:
    """Locked, never-raising writes to one client's WebSocket."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self._lock = asyncio.Lock()

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def send_json(self, obj: dict[str, Any]) -> None:
        await self.send_str(json.dumps(obj))

    async def send_str(self, text: str) -> None:
        """Send one text message (a protocol whose messages are built elsewhere)."""
        if self.ws.closed:
            return
        async with self._lock:
            with contextlib.suppress(*_SEND_ERRORS):
                await self.ws.send_str(text)

    async def send_stamped(self, build: Callable[[int], bytes]) -> int | None:
        """Send ``build(t)``, ``t`` being the moment the packet is handed to the socket
        (taken under the lock, so it is the real send time, not a queueing time).
        Returns ``t``, or None when the socket was already closed."""
        if self.ws.closed:
            return None
        async with self._lock:
            t = now_ns()
            data = build(t)
            with contextlib.suppress(*_SEND_ERRORS):
                await self.ws.send_bytes(data)
        return t

    async def error(self, code: str, message: str, fatal: bool = False) -> None:
        await self.send_json(error_event(code, message, now_ns(), fatal=fatal))

    async def close(self, code: int = WSCloseCode.OK, message: bytes = b"") -> None:
        if not self.ws.closed:
            with contextlib.suppress(Exception):
                await self.ws.close(code=code, message=message)


async def client_messages(
    socket: ClientSocket,
    limits: MessageLimits,
    *,
    start_timeout_s: float,
    idle_timeout_s: float,
    started: Callable[[], bool],
    on_rejected: Callable[[], None] | None = None,
) -> AsyncGenerator[WSMessage, None]:
    """Text and binary messages of one client, each within the limits, until it closes.

    A client that sends nothing in time (``start_timeout_s`` from connecting until
    ``started()``, then ``idle_timeout_s``) gets a fatal error and is closed; a message
    over the rate or size limit is dropped with an error event (``on_rejected`` counts
    it), and the session goes on."""
    ws = socket.ws
    connected_at = time.monotonic()
    while not ws.closed:
        timeout = idle_timeout_s
        if not started():
            timeout = max(0.01, start_timeout_s - (time.monotonic() - connected_at))
        try:
            msg = await ws.receive(timeout=timeout)
        except TimeoutError:
            quiet = timeout_rejection(started(), start_timeout_s, idle_timeout_s)
            await socket.error(quiet.code, quiet.message or quiet.code, fatal=True)
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"timeout")
            return
        if msg.type in _CLOSED_TYPES:
            return
        if msg.type == WSMsgType.ERROR:
            log.info("websocket error: %s", ws.exception())
            return
        size = len(msg.data) if isinstance(msg.data, str | bytes) else 0
        rejected = limits.rejection(size)
        if rejected is not None:
            if on_rejected is not None:
                on_rejected()
            if rejected.message is not None:
                await socket.error(rejected.code, rejected.message)
            continue
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            yield msg

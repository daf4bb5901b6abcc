"""Asyncio TCP relay that delays a byte stream per chunk, for WebSocket transports.

The WebSocket bench connects to the relay instead of the server; every chunk read
from one side is handed to the other side after the delay a :class:`TcpImpairment`
chose.  Delivery per direction is a single in-order task, so the stream is never
reordered or corrupted, and a "lost" chunk (one whose segments failed the loss roll)
costs a retransmission timeout during which everything behind it waits -- the
head-of-line blocking a real TCP connection shows under loss.  See
:class:`~halfsec.lab.netem.impair.TcpImpairment` for the exact model.  With a rate cap
a chunk leaves as MSS-sized pieces, each when the bottleneck lets it go
(``TcpImpairment.pieces``), so the serialization queue is the relay's and is counted.

A chunk is whatever one read returned, so one chunk may hold several WebSocket frames;
they are delayed together, as they would be if sent back to back.

Why plain non-blocking sockets and ``recvmsg`` rather than asyncio streams: a chunk's
arrival is the kernel's receive timestamp (``SO_TIMESTAMPNS``), not the moment the event
loop got round to reading it.  The relay shares its loop with the bench's client, and a
loop busy for 30 ms used to start the chunk's delay 30 ms late -- the packets (``--pcap``)
saw a delay the relay's figure did not.  The kernel's stamp (CLOCK_REALTIME, moved onto
the monotonic clock at the read) is the same instant the capture records.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import sys
import time
from typing import Any

from halfsec.lab.netem.impair import TcpImpairment
from halfsec.lab.netem.relay_base import Relay, delay_percentiles, delay_window

__all__ = ["TcpRelay"]

_CHUNK = 65536
_QUEUE_CHUNKS = 4096  # per direction: bounds memory if the far side stops reading
_CONNECT_TIMEOUT_S = 5.0
_DRAIN_TIMEOUT_S = 30.0
_SO_TIMESTAMPNS = 35  # linux/asm-generic/socket.h (SO_TIMESTAMPNS_OLD; == SCM_TIMESTAMPNS)
_SIOCOUTQNSD = 0x894B  # linux/sockios.h: unsent bytes in a TCP socket's send queue
_TIMESPEC = struct.Struct("@qq")
_STAMP_MAX_AGE_NS = 10_000_000_000
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)


def _no_delay(sock: socket.socket) -> None:
    """Nagle off: a small write must leave at once, not wait for the previous segment's
    ACK (up to the peer's delayed ACK) -- a delay the relay would never see but
    ``--pcap`` did (``lab.bench.pcap``).  asyncio sets this only on sockets it makes
    itself with ``proto`` ``IPPROTO_TCP``; a namespace's socket factory makes proto 0."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _prepare(sock: socket.socket) -> None:
    """Non-blocking, Nagle off, kernel receive timestamps on."""
    sock.setblocking(False)
    _no_delay(sock)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)


def _unsent(sock: socket.socket) -> int:
    """Bytes the kernel holds in ``sock``'s send queue, not yet sent (0 if unknown)."""
    buf = bytearray(4)
    try:
        fcntl.ioctl(sock.fileno(), _SIOCOUTQNSD, buf)
    except (OSError, ValueError):
        return 0
    return int.from_bytes(buf, sys.byteorder, signed=True)


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


async def _recv(sock: socket.socket) -> tuple[bytes, int]:
    """The next chunk (``b""`` at EOF) and when its last bytes reached the socket
    (monotonic ns: the kernel's stamp, or the read's own time without one)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            data, ancillary, _flags, _addr = sock.recvmsg(_CHUNK, _ANCILLARY)
        except (BlockingIOError, InterruptedError):
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_reader(sock.fileno(), _wake, ready)
            try:
                await ready
            finally:
                loop.remove_reader(sock.fileno())
            continue
        now = time.monotonic_ns()
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                sec, nsec = _TIMESPEC.unpack_from(payload)
                age = time.time_ns() - (sec * 1_000_000_000 + nsec)
                if 0 <= age < _STAMP_MAX_AGE_NS:  # else the wall clock was stepped
                    return data, now - age
        return data, now


async def _send_all(sock: socket.socket, data: memoryview) -> int:
    """Hand all of ``data`` to the kernel; when it took the last byte (monotonic ns).

    The time is read right after the ``send`` call that finished, in the same step:
    after an ``await`` the loop may first run a slow callback of the bench's client,
    and the figure would carry that wait though the bytes had long left."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        data = data[sent:]
        if not data:
            return time.monotonic_ns()
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_writer(sock.fileno(), _wake, ready)
        try:
            await ready
        finally:
            loop.remove_writer(sock.fileno())


class _Stats:
    def __init__(self) -> None:
        self.chunks = 0
        self.bytes = 0
        self.actual_ms = delay_window()
        self.held_bytes_max = 0


class TcpRelay(Relay):
    """``async with TcpRelay(listen=("127.0.0.1", 0), target=(host, port), up=..., down=...) as r``

    Each accepted connection gets its own upstream connection and its own pair of
    impairment models seeded from the spec (connection ``i`` uses ``seed + i``, so
    runs stay reproducible while connections do not share one loss pattern)."""

    def _init_state(self) -> None:
        self._listener: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._socks: set[socket.socket] = set()
        self._models: dict[str, list[TcpImpairment]] = {"up": [], "down": []}
        self._stats = {"up": _Stats(), "down": _Stats()}
        self.connections = 0
        self.failed_connects = 0

    def _socket(self) -> socket.socket:
        if self._factory is None:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        return self._factory(socket.AF_INET, socket.SOCK_STREAM)

    async def start(self) -> TcpRelay:
        sock = self._socket()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(self.listen)
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._listener = sock
        self._spawn(self._accept_loop(sock))
        return self

    async def close(self) -> None:
        """Stop accepting, cut every relayed connection, wait for the pumps to end."""
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        for s in list(self._socks):
            s.close()
        self._socks.clear()
        if self._listener is not None:
            self._listener.close()

    @property
    def address(self) -> tuple[str, int]:
        assert self._listener is not None, "relay not started"
        host, port = self._listener.getsockname()[:2]
        return host, port

    def counters(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "connections": self.connections,
            "failed_connects": self.failed_connects,
        }
        for name in ("up", "down"):
            models = self._models[name]
            st = self._stats[name]
            out[name] = {
                "chunks": st.chunks,
                "bytes": st.bytes,
                "retransmits": sum(m.stats.dropped["retransmit"] for m in models),
                **delay_percentiles("delay_ms", (d for m in models for d in m.stats.delays_ms)),
                **delay_percentiles("actual_delay_ms", st.actual_ms),
                "held_bytes_max": st.held_bytes_max,
            }
        return out

    # -- per connection -------------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _addr = await loop.sock_accept(listener)
            except OSError:
                return  # the listener was closed
            self._socks.add(conn)
            self._spawn(self._serve(conn))

    async def _connect_upstream(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        if self._factory is None:  # relay mode: the target may be a name or IPv6
            infos = await loop.getaddrinfo(*self.target, type=socket.SOCK_STREAM)
            family, _type, _proto, _name, address = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
        else:
            sock, address = self._socket(), self.target
        try:
            _prepare(sock)
            await asyncio.wait_for(loop.sock_connect(sock, address), _CONNECT_TIMEOUT_S)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _serve(self, client: socket.socket) -> None:
        _prepare(client)
        index = self.connections
        self.connections += 1
        try:
            server = await self._connect_upstream()
        except (OSError, TimeoutError):
            self.failed_connects += 1
            client.close()
            self._socks.discard(client)
            return
        self._socks.add(server)
        up = TcpImpairment(self.up_spec.with_seed(self.up_spec.seed + index), "up")
        down = TcpImpairment(self.down_spec.with_seed(self.down_spec.seed + index), "down")
        self._models["up"].append(up)
        self._models["down"].append(down)
        pumps = [
            asyncio.ensure_future(self._pump(client, server, up, self._stats["up"])),
            asyncio.ensure_future(self._pump(server, client, down, self._stats["down"])),
        ]
        try:
            # Both directions end at their EOF; an error in one (a reset) ends both.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for p in pumps:
                p.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for s in (client, server):
                s.close()
                self._socks.discard(s)

    async def _pump(
        self, src: socket.socket, dst: socket.socket, model: TcpImpairment, stats: _Stats
    ) -> None:
        """Read chunks, stamp each piece with its departure, deliver them in order.

        Each piece's delay is measured when the kernel took all of it (from the chunk's
        kernel arrival stamp); the bytes the kernel then still held unsent
        (``SIOCOUTQNSD``) are kept as ``held_bytes_max``: 0 means no queue hid behind
        the relay's figure."""
        queue: asyncio.Queue[tuple[int, list[tuple[int, int]], bytes] | None] = asyncio.Queue(
            _QUEUE_CHUNKS
        )

        async def deliver() -> None:
            while True:  # ends at the reader's EOF marker (None)
                item = await queue.get()
                if item is None:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                arrival, pieces, data = item
                at = 0
                for n, departure in pieces:
                    wait = (departure - time.monotonic_ns()) / 1e9
                    if wait > 0:
                        await asyncio.sleep(wait)
                    piece = memoryview(data)[at : at + n]
                    at += n
                    sent_at = await asyncio.wait_for(_send_all(dst, piece), _DRAIN_TIMEOUT_S)
                    stats.actual_ms.append((sent_at - arrival) / 1e6)
                    stats.held_bytes_max = max(stats.held_bytes_max, _unsent(dst))

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                data, arrival = await _recv(src)
                if not data:
                    break
                stats.chunks += 1
                stats.bytes += len(data)
                await queue.put((arrival, model.pieces(len(data), arrival), data))
            await queue.put(None)
            await sender
        finally:
            if not sender.done():
                sender.cancel()
            # Also when it already ended on its own (the far side closed: BrokenPipeError),
            # so its exception is retrieved here rather than logged as never retrieved.
            await asyncio.gather(sender, return_exceptions=True)

"""Asyncio TCP relay that delays a byte stream per chunk, for WebSocket transports.

The WebSocket bench connects to the relay instead of the server; every chunk read
from one side is handed to the other side after the delay a :class:`TcpImpairment`
chose.  Delivery per direction is a single in-order task, so the stream is never
reordered or corrupted, and a "lost" chunk (one whose segments failed the loss roll)
costs a retransmission timeout during which everything behind it waits -- the
head-of-line blocking a real TCP connection shows under loss.  See
:class:`~halfsec.lab.netem.impair.TcpImpairment` for the exact model.

A chunk is whatever one ``read()`` returned, so on loopback one chunk may hold several
WebSocket frames; they are delayed together, as they would be if sent back to back.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any

from halfsec.lab.netem.impair import TcpImpairment
from halfsec.lab.netem.relay_base import Relay, delay_percentiles, delay_window

__all__ = ["TcpRelay"]

_CHUNK = 65536
_QUEUE_CHUNKS = 4096  # per direction: bounds memory if the far side stops reading
_CONNECT_TIMEOUT_S = 5.0
_DRAIN_TIMEOUT_S = 30.0


def _no_delay(sock: socket.socket) -> None:
    """Nagle off, as asyncio does for the sockets it creates itself.

    asyncio sets ``TCP_NODELAY`` only on sockets whose ``proto`` is ``IPPROTO_TCP``; a
    socket made by a namespace's socket factory (``socket.socket(AF_INET, SOCK_STREAM)``,
    proto 0) and the connections it accepts kept Nagle on, so a small write waited for
    the previous segment's ACK (up to the peer's delayed ACK) -- a delay the relay never
    saw but ``--pcap`` did (``lab.bench.pcap``)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Stats:
    def __init__(self) -> None:
        self.chunks = 0
        self.bytes = 0
        self.actual_ms = delay_window()


class TcpRelay(Relay):
    """``async with TcpRelay(listen=("127.0.0.1", 0), target=(host, port), up=..., down=...) as r``

    Each accepted connection gets its own upstream connection and its own pair of
    impairment models seeded from the spec (connection ``i`` uses ``seed + i``, so
    runs stay reproducible while connections do not share one loss pattern)."""

    def _init_state(self) -> None:
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._models: dict[str, list[TcpImpairment]] = {"up": [], "down": []}
        self._stats = {"up": _Stats(), "down": _Stats()}
        self.connections = 0
        self.failed_connects = 0

    async def start(self) -> TcpRelay:
        if self._factory is None:
            self._server = await asyncio.start_server(self._accept, *self.listen)
        else:
            sock = self._factory(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(self.listen)
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
            self._server = await asyncio.start_server(self._accept, sock=sock)
        return self

    async def close(self) -> None:
        """Stop accepting, cut every relayed connection, wait for the pumps to end."""
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None and self._server.sockets, "relay not started"
        host, port = self._server.sockets[0].getsockname()[:2]
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
            }
        return out

    # -- per connection -------------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _connect_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._factory is None:
            return await asyncio.wait_for(asyncio.open_connection(*self.target), _CONNECT_TIMEOUT_S)
        loop = asyncio.get_running_loop()
        sock = self._factory(socket.AF_INET, socket.SOCK_STREAM)
        try:
            _no_delay(sock)
            sock.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(sock, self.target), _CONNECT_TIMEOUT_S)
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(c_reader, c_writer)
        except asyncio.CancelledError:
            # close() cancels us; end normally, because asyncio.streams (3.11) logs a
            # spurious traceback when a connection handler task ends cancelled.
            c_writer.close()

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._writers.add(c_writer)
        accepted = c_writer.get_extra_info("socket")
        if accepted is not None:
            _no_delay(accepted)
        index = self.connections
        self.connections += 1
        try:
            s_reader, s_writer = await self._connect_upstream()
        except (OSError, TimeoutError):
            self.failed_connects += 1
            c_writer.close()
            self._writers.discard(c_writer)
            return
        self._writers.add(s_writer)
        up = TcpImpairment(self.up_spec.with_seed(self.up_spec.seed + index), "up")
        down = TcpImpairment(self.down_spec.with_seed(self.down_spec.seed + index), "down")
        self._models["up"].append(up)
        self._models["down"].append(down)
        try:
            await asyncio.gather(
                self._pump(c_reader, s_writer, up, self._stats["up"]),
                self._pump(s_reader, c_writer, down, self._stats["down"]),
            )
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            for w in (c_writer, s_writer):
                w.close()
                self._writers.discard(w)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        model: TcpImpairment,
        stats: _Stats,
    ) -> None:
        """Read chunks, stamp them with their departure, deliver them in order."""
        queue: asyncio.Queue[tuple[int, int, bytes] | None] = asyncio.Queue(_QUEUE_CHUNKS)

        async def deliver() -> None:
            while True:  # ends at the reader's EOF marker (None)
                item = await queue.get()
                if item is None:
                    if writer.can_write_eof():
                        with contextlib.suppress(OSError):
                            writer.write_eof()
                    return
                arrival, departure, data = item
                wait = (departure - time.monotonic_ns()) / 1e9
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await asyncio.wait_for(writer.drain(), _DRAIN_TIMEOUT_S)
                stats.actual_ms.append((time.monotonic_ns() - arrival) / 1e6)

        sender = self._spawn(deliver())
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                now = time.monotonic_ns()
                stats.chunks += 1
                stats.bytes += len(data)
                decision = model.decide(len(data), now)
                await queue.put((now, decision.departures[0], data))
            await queue.put(None)
            await sender
        finally:
            if not sender.done():
                sender.cancel()

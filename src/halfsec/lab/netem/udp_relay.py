"""Asyncio UDP relay that impairs datagrams in both directions.

A real media path (RTP/WebRTC, or any UDP audio) points its client at the relay
instead of the server; the relay forwards each datagram to the target after the delay
the impairment model chose, or drops it.  Every client address gets its own upstream
socket (like a NAT), so replies find their way back to the right client.

Raw non-blocking sockets with ``add_reader`` are used rather than datagram
transports: sockets can then be made by a factory inside another network namespace
(see :mod:`~halfsec.lab.netem.namespaces`), and a send never queues behind the
relay -- if the kernel's buffer is full the datagram is dropped and counted, as a
router would.

Scheduling uses ``loop.call_at`` on the monotonic clock; the actual departure time is
recorded so the counters show the delay really added, including scheduler lateness.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections.abc import Callable
from typing import Any

from halfsec.lab.netem.impair import Impairment
from halfsec.lab.netem.profile import NetSpec
from halfsec.lab.netem.relay_base import (
    Relay,
    SocketFactory,
    as_spec,
    delay_percentiles,
    delay_window,
)

__all__ = ["SocketFactory", "UdpRelay", "as_spec"]

_MAX_DATAGRAM = 65535
_MAX_CLIENTS = 256  # a bound: a runaway sender cannot make the relay open sockets forever
_READ_BATCH = 64  # datagrams read per wake-up before yielding to the loop


def _default_factory(family: int, type_: int) -> socket.socket:
    return socket.socket(family, type_)


class _Direction:
    """One direction's model plus what actually happened on the wire."""

    def __init__(self, spec: NetSpec, name: str) -> None:
        self.impair = Impairment(spec, name)
        self.sent = 0
        self.send_errors = 0
        self.actual_ms = delay_window()

    def counters(self) -> dict[str, Any]:
        out = self.impair.stats.as_dict()
        out["forwarded"] = self.sent
        out["send_errors"] = self.send_errors
        out.update(delay_percentiles("actual_delay_ms", self.actual_ms))
        return out


class UdpRelay(Relay):
    """``async with UdpRelay(listen=("127.0.0.1", 0), target=(host, port), up=..., down=...) as r``

    Clients send to ``r.address``; ``up`` impairs client->server, ``down``
    server->client.  ``counters()`` returns packets, dropped, duplicated, reordered and
    added-delay percentiles per direction."""

    def _init_state(self) -> None:
        self._new_socket: SocketFactory = self._factory or _default_factory
        self._up = _Direction(self.up_spec, "up")
        self._down = _Direction(self.down_spec, "down")
        self._sock: socket.socket | None = None
        self._clients: dict[tuple[str, int], socket.socket] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self.rejected_clients = 0
        self._offset_s = 0.0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> UdpRelay:
        self._loop = asyncio.get_running_loop()
        # loop.time() is a monotonic clock in seconds but need not be time.monotonic_ns();
        # one fixed offset keeps equal departures equal (two clock reads per packet would not).
        self._offset_s = self._loop.time() - time.monotonic_ns() / 1e9
        sock = self._new_socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(self.listen)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._on_client_readable)
        return self

    async def close(self) -> None:
        """Stop reading, cancel datagrams still in flight, close every socket."""
        loop = self._loop
        for t in self._timers:
            t.cancel()
        self._timers.clear()
        for s in [*self._clients.values(), *([self._sock] if self._sock else [])]:
            if loop is not None:
                loop.remove_reader(s.fileno())
            s.close()
        self._clients.clear()
        self._sock = None

    @property
    def address(self) -> tuple[str, int]:
        """Where clients should send (the bound listen address)."""
        assert self._sock is not None, "relay not started"
        host, port = self._sock.getsockname()[:2]
        return host, port

    def counters(self) -> dict[str, Any]:
        return {
            "up": self._up.counters(),
            "down": self._down.counters(),
            "clients": len(self._clients),
            "rejected_clients": self.rejected_clients,
        }

    # -- datapath ----------------------------------------------------------------------

    def _on_client_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(_READ_BATCH):
            try:
                data, addr = sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ICMP port unreachable surfaced on the socket
                continue
            now = time.monotonic_ns()
            upstream = self._upstream_for(addr)
            if upstream is None:
                continue
            self._schedule(self._up, now, data, upstream, None)

    def _upstream_for(self, addr: tuple[str, int]) -> socket.socket | None:
        up = self._clients.get(addr)
        if up is not None:
            return up
        if len(self._clients) >= _MAX_CLIENTS:
            self.rejected_clients += 1
            return None
        up = self._new_socket(socket.AF_INET, socket.SOCK_DGRAM)
        up.setblocking(False)
        try:
            up.connect(self.target)  # UDP connect: immediate, filters replies to the target
        except OSError:
            up.close()
            return None
        self._clients[addr] = up
        assert self._loop is not None
        self._loop.add_reader(up.fileno(), self._on_server_readable, up, addr)
        return up

    def _on_server_readable(self, up: socket.socket, client: tuple[str, int]) -> None:
        for _ in range(_READ_BATCH):
            try:
                data = up.recv(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            now = time.monotonic_ns()
            if self._sock is not None:
                self._schedule(self._down, now, data, self._sock, client)

    def _schedule(
        self,
        direction: _Direction,
        arrival_ns: int,
        data: bytes,
        sock: socket.socket,
        dest: tuple[str, int] | None,
    ) -> None:
        loop = self._loop
        assert loop is not None
        decision = direction.impair.decide(len(data), arrival_ns)
        if not decision.departures:
            return
        send = functools.partial(self._send, direction, sock, data, dest, arrival_ns)
        for departure in decision.departures:
            self._arm(departure / 1e9 + self._offset_s, send)

    def _arm(self, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` at loop time ``when``, tracked so :meth:`close` can cancel it."""
        assert self._loop is not None
        cell: list[asyncio.TimerHandle] = []

        def fire() -> None:
            self._timers.discard(cell[0])
            action()

        cell.append(self._loop.call_at(when, fire))
        self._timers.add(cell[0])

    def _send(
        self,
        direction: _Direction,
        sock: socket.socket,
        data: bytes,
        dest: tuple[str, int] | None,
        arrival_ns: int,
    ) -> None:
        if sock.fileno() < 0:
            return
        try:
            if dest is None:
                sock.send(data)
            else:
                sock.sendto(data, dest)
        except OSError:  # buffer full, or the peer is gone: the datagram is lost, as on a wire
            direction.send_errors += 1
            return
        direction.sent += 1
        direction.actual_ms.append((time.monotonic_ns() - arrival_ns) / 1e6)

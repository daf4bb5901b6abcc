"""Stamped UDP probes: what the lab sends through a relay to check what it applied.

A relay's own counters say what it *meant* to do; the lab checks what arrived.  Each probe
datagram carries its sequence number and monotonic send time (``STAMP``), the receiving
``ProbeEndpoint`` records ``(seq, send_ns, recv_ns)`` rows for
:func:`~halfsec.lab.netem.measure.summarize`, and may echo each datagram back so the
sender measures the round trip.  One definition for ``benchmarks/netem_bench.py`` and the
tests, so both read the same header the same way.  Both ends run in one process, so the
monotonic send and receive times share a clock.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Sequence

__all__ = ["STAMP", "ProbeEndpoint", "send_probes"]

STAMP = struct.Struct("!Iq")
"""A probe's header: sequence number, monotonic send time (ns)."""


class ProbeEndpoint:
    """A non-blocking UDP socket on the running loop that records every probe it
    receives and, with ``echo``, sends it back where it came from."""

    def __init__(self, sock: socket.socket, echo: bool = False) -> None:
        self.sock, self.echo = sock, echo
        self.rows: list[tuple[int, int, int]] = []
        sock.setblocking(False)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._read)

    def _read(self) -> None:
        # Bounded per wake-up so one busy socket cannot starve the loop.
        for _ in range(256):
            try:
                data, addr = self.sock.recvfrom(4096)
            except BlockingIOError:
                return
            now = time.monotonic_ns()
            seq, sent = STAMP.unpack_from(data)
            self.rows.append((seq, sent, now))
            if self.echo:
                self.sock.sendto(data, addr)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


async def send_probes(
    sock: socket.socket, dest: tuple[str, int], sizes: Sequence[int], gap_s: float
) -> None:
    """Send one probe of each size in ``sizes`` (bytes, at least ``STAMP.size``) every
    ``gap_s`` seconds, paced against the start time so late wake-ups do not drift."""
    t0 = time.monotonic()
    for i, size in enumerate(sizes):
        sock.sendto(STAMP.pack(i, time.monotonic_ns()).ljust(size, b"\0"), dest)
        await asyncio.sleep(max(0.0, t0 + (i + 1) * gap_s - time.monotonic()))

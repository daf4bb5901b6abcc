"""Server time to client time: an NTP-style exchange over any transport's events.

Of ``n`` sequential pings, the one with the smallest round trip gives
``offset = t_server - (t_send + t_recv) / 2`` with uncertainty ``rtt / 2`` (the server's
stamp lies somewhere inside the round trip).  The WebSocket and WebRTC clients both
call ``sync_clock`` with their own send and receive, so they are synchronised by the
same rule; the browser page does the exchange itself and the bench applies
``best_clock`` to what it exported."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from halfsec.clock import now_ns
from halfsec.lab.clients.errors import ClientError
from halfsec.wire.protocol import PONG, ping_message


@dataclass(frozen=True, slots=True)
class ClockSync:
    offset_ns: int
    """Server clock minus client clock."""
    uncertainty_ns: int
    rtt_ns: int
    samples: int

    def to_client_ns(self, t_server_ns: int) -> int:
        return t_server_ns - self.offset_ns


def best_clock(exchanges: list[tuple[int, int, int]]) -> ClockSync:
    """Pick the smallest-RTT exchange of ``(t_send, t_server, t_recv)``."""
    if not exchanges:
        raise ClientError("clock sync failed: no pong received")
    t_send, t_server, t_recv = min(exchanges, key=lambda e: e[2] - e[0])
    rtt = t_recv - t_send
    offset = t_server - (t_send + t_recv) // 2
    return ClockSync(offset, rtt // 2, rtt, len(exchanges))


async def sync_clock(
    n: int,
    send: Callable[[str], Awaitable[None]],
    next_event: Callable[[float], Awaitable[dict[str, Any]]],
    timeout_s: float = 5.0,
) -> ClockSync:
    """``n`` sequential ping/pong exchanges; the fastest one fixes the offset.

    ``send(text)`` sends one JSON message; ``next_event(wait_s)`` returns the next server
    event or raises ``TimeoutError``.  Events other than the awaited pong are skipped."""
    exchanges: list[tuple[int, int, int]] = []
    for i in range(n):
        t_send = now_ns()
        await send(ping_message(i, t_send))
        while True:
            try:
                ev = await next_event(timeout_s)
            except TimeoutError as e:
                raise ClientError(f"server never answered ping {i} within {timeout_s:.0f} s") from e
            if ev["type"] == PONG and ev.get("id") == i:
                exchanges.append((t_send, int(ev["t_server_ns"]), now_ns()))
                break
    return best_clock(exchanges)

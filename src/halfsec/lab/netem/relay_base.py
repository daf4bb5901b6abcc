"""What the UDP and the TCP relay share: arguments, ``async with`` lifecycle, delay counters.

The namespace lab builds either relay with the same ``(listen, target, up, down,
socket_factory)`` arguments, the benches use both as ``async with ... as relay`` and read
``relay.port``, and both report the delay really added on the wire (scheduler lateness
included) next to the delay their model chose.  Keeping that here means a WebSocket run
and a WebRTC run are set up alike and their counters read alike: a change to one relay's
surface cannot drift away from the other's.
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self

from halfsec.lab.netem.profile import NetSpec, parse_net
from halfsec.measure.percentile import percentile

__all__ = ["Relay", "SocketFactory", "as_spec", "delay_percentiles", "delay_window"]

# (family, type) -> a fresh unbound socket; lets namespace mode create sockets elsewhere.
SocketFactory = Callable[[int, int], socket.socket]

# Samples kept per direction: enough for stable percentiles, bounded for long runs.
_WINDOW = 65536


def as_spec(spec: NetSpec | str | None) -> NetSpec:
    """Accept a NetSpec, a ``--net`` string, or ``None`` (a perfect network)."""
    if spec is None:
        return NetSpec(name="none")
    if isinstance(spec, NetSpec):
        return spec
    return parse_net(spec)


def delay_window() -> deque[float]:
    """An empty window for the most recent measured delays (ms) of one direction."""
    return deque(maxlen=_WINDOW)


def delay_percentiles(prefix: str, delays_ms: Iterable[float]) -> dict[str, float | None]:
    """``{prefix}_p50`` and ``{prefix}_p95`` of ``delays_ms`` (``None`` without samples).

    The project's one percentile rule, the one the impairment model's own counters use,
    so the chosen delay and the actual delay of one direction can be compared directly."""
    delays = list(delays_ms)
    return {
        f"{prefix}_p50": percentile(delays, 50),
        f"{prefix}_p95": percentile(delays, 95),
    }


class Relay(ABC):
    """A relay from ``listen`` to ``target`` impairing ``up`` (client->server) and ``down``.

    Subclasses set up their own state in :meth:`_init_state` (called at the end of
    ``__init__``), so the constructor every caller uses is written once."""

    def __init__(
        self,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        target: tuple[str, int] = ("127.0.0.1", 0),
        up: NetSpec | str | None = None,
        down: NetSpec | str | None = None,
        *,
        socket_factory: SocketFactory | None = None,
    ) -> None:
        self.listen = listen
        self.target = target
        self.up_spec = as_spec(up)
        self.down_spec = as_spec(down)
        self._factory = socket_factory
        self._init_state()

    @abstractmethod
    def _init_state(self) -> None:
        """Create the relay's own (not yet started) state."""

    @abstractmethod
    async def start(self) -> Self:
        """Bind and begin relaying; returns ``self``."""

    @abstractmethod
    async def close(self) -> None:
        """Stop relaying and release every socket."""

    @property
    @abstractmethod
    def address(self) -> tuple[str, int]:
        """Where clients should connect or send (the bound listen address)."""

    @abstractmethod
    def counters(self) -> dict[str, Any]:
        """What the relay did, per direction: the stable shape the reports record."""

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def port(self) -> int:
        return self.address[1]

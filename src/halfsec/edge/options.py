"""What ``halfsec edge`` is configured with, and its bind check (the origin's rule).

Its own module so that the gate, the per-client conversation and the gateway can read the
options without importing each other."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from halfsec import FRAME_MS
from halfsec.errors import HalfsecError
from halfsec.options_check import (
    CommandFlags,
    between,
    check_fields,
    flags_of,
    positive,
)
from halfsec.server.admission import Admission, exposure_problem, is_loopback
from halfsec.server.options import LISTENER_RULES


class EdgeError(HalfsecError):
    """The edge cannot start as configured (unsafe bind, bad origin URL or option)."""


_RULES = {
    **LISTENER_RULES,
    "pool_size": between(0, 1000),
    # The origin's detector needs silence before the onset (see ``preroll_ms``).
    "preroll_ms": between(100, 10_000, "ms"),
    "hold_ms": between(0, 60_000, "ms"),
    "max_tail_ms": positive("ms", at_most=600_000),
    "speech_batch_ms": between(FRAME_MS, 1000, "ms"),
}
_KEYS = CommandFlags(
    "halfsec edge",
    "EdgeOptions",
    flags_of("origin", "port", "pool_size", "preroll_ms", "max_sessions"),
)


@dataclass(frozen=True, slots=True)
class EdgeOptions:
    origin: str
    """``ws://host:port/ws`` of the origin ``halfsec serve``."""
    host: str = "127.0.0.1"
    port: int = 8766
    token: str | None = None
    """Required of clients of the edge (same rules as ``halfsec serve --token``)."""
    origin_token: str | None = None
    """Sent to the origin (``Authorization: Bearer``)."""
    allow_origins: tuple[str, ...] = ()
    max_sessions: int = 32
    max_message_bytes: int = 64 * 1024
    max_messages_per_s: float = 200.0
    idle_timeout_s: float = 30.0
    start_timeout_s: float = 10.0
    write_timeout_s: float = 10.0
    """A client that does not take a write for this long is dropped (as at the origin)."""
    max_audio_rate: float = 1.5
    """Client audio admitted per second of real time, with ``audio_burst_s`` of burst
    (``server.admission.RealTimeAudio``, the origin's rule, applied before the long path)."""
    audio_burst_s: float = 5.0
    pool_size: int = 2
    preroll_ms: float = 500.0
    """Audio before the edge's speech onset sent with it.  Longer than the origin's own
    preroll (300 ms) plus its VAD's confirmation time, so the origin's detector sees a
    stretch of silence before the onset and its STT hears the onset it detects late."""
    hold_ms: float = 1000.0
    """Silence forwarded after the edge's VAD paused, even if the origin has not reported
    a turn (its ``vad.speech_started`` may still be on the way back)."""
    max_tail_ms: float = 4000.0
    """Safety cap: stop forwarding silence this long after the pause even if the origin
    never ended its turn (it resumes on the next speech)."""
    speech_batch_ms: float = 40.0
    """While the user speaks, frames are sent in messages of this much audio (fewer
    messages on the long path).  Pause and silence frames go one by one, at once: they
    are what the origin's end-of-turn decision waits for."""

    def __post_init__(self) -> None:
        check_fields(self, _RULES, _KEYS, EdgeError)
        if not self.origin.startswith(("ws://", "wss://")):
            raise EdgeError(f"--origin {self.origin!r} must be a URL like ws://HOST:PORT/ws")
        problem = token_exposure(self.origin, self.origin_token)
        if problem:
            raise EdgeError(problem)

    @property
    def admission(self) -> Admission:
        return Admission(self.token, self.allow_origins, self.max_sessions)


def token_exposure(origin_url: str, token: str | None) -> str | None:
    """Why sending ``token`` to ``origin_url`` would give it away, or None when it is
    safe: a bearer token in a cleartext ``ws://`` upgrade can be read, and then used, by
    anyone on the path, so it may only travel over TLS (``wss://``) or stay on this
    machine (a loopback origin)."""
    if not token:
        return None
    parts = urlsplit(origin_url)
    host = parts.hostname or ""
    if parts.scheme == "wss" or is_loopback(host):
        return None
    return (
        f"refusing to send --origin-token to {host} over cleartext ws://: anyone on the "
        "path could read the token and use the origin.  Put the origin behind TLS and "
        f"use --origin wss://{parts.netloc}{parts.path}, or reach it on this machine "
        "(ws://127.0.0.1:PORT/ws through a tunnel)."
    )


def check_edge_bind(options: EdgeOptions) -> None:
    """Same rule as the origin: no unauthenticated voice endpoint beyond this machine."""
    problem = exposure_problem(options.host, options.token)
    if problem:
        raise EdgeError(problem)

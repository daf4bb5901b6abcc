"""What ``halfsec serve`` is configured with, and the bind check that runs before models load.

Its own module so that every transport (``websocket``, ``webrtc``), the connection they
share and the app can read the options without importing each other."""

from __future__ import annotations

from dataclasses import dataclass

from halfsec.errors import HalfsecError
from halfsec.options_check import (
    CommandFlags,
    Range,
    at_least,
    between,
    check_fields,
    flags_of,
    positive,
)
from halfsec.server.admission import Admission, exposure_problem
from halfsec.server.resume import key_problem


class ServeError(HalfsecError):
    """The server cannot start as configured (unsafe bind, bad option)."""


LISTENER_RULES = {
    "port": Range(0, 65535, note="0: any free port"),
    "max_sessions": between(1, 100_000),
    "max_message_bytes": at_least(1024, "bytes", at_most=64 * 1024 * 1024),
    "max_messages_per_s": positive(at_most=1_000_000),
    "idle_timeout_s": positive("s", at_most=86_400),
    "start_timeout_s": positive("s", at_most=86_400),
    "write_timeout_s": positive("s", at_most=86_400),
    "max_audio_rate": positive("x real time", at_most=1_000_000),
    "audio_burst_s": positive("s", at_most=3_600),
}
"""The ranges of what every listener that admits voice clients has (the server and the
edge): one table, so the two cannot drift apart."""

_RULES = {
    **LISTENER_RULES,
    "inject_delay_ms": between(0, 60_000, "ms"),
    "capacity": positive("active turns", at_most=100_000),
    "drain_s": between(0, 86_400, "s"),
    "workers": between(1, 256),
}
_KEYS = CommandFlags(
    "halfsec serve",
    "ServerOptions",
    flags_of(
        "port",
        "max_sessions",
        "inject_delay_ms",
        "idle_timeout_s",
        "capacity",
        "drain_s",
        "workers",
    ),
)


@dataclass(frozen=True, slots=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    """Shared secret: ``Authorization: Bearer <token>`` or ``?token=<token>``."""
    allow_origins: tuple[str, ...] = ()
    """Browser origins allowed to connect.  Empty: loopback origins only
    (``http://localhost:*``, ``http://127.0.0.1:*``).  ``*`` allows any origin."""
    max_sessions: int = 64
    """A hard ceiling on open sessions (memory, file descriptors).  Admission is by
    measured load (``capacity``, ``server/load_meter.py``); this only bounds the worst case."""
    capacity: float | None = None
    """Active turns this worker carries at its SLO; None: ``load_meter.TURNS_PER_CORE`` per
    core of this worker's share.  Past it new sessions get ``busy`` (``readiness.py``)."""
    drain_s: float = 20.0
    """On SIGTERM, how long open sessions may run on while no new ones are admitted."""
    workers: int = 1
    """Worker processes behind the port (``server/workers.py``); each gets its share of
    the cores for its thread counts and its capacity."""
    max_message_bytes: int = 64 * 1024
    """Largest accepted client message.  Larger ones (up to 4x) get an ``error`` event;
    beyond that the WebSocket layer closes the connection (1009)."""
    max_messages_per_s: float = 200.0
    """Token bucket on client messages (burst = one second's worth).  A real-time client
    sends 50 frames/s; a flood is dropped with one ``rate_limited`` error per second."""
    idle_timeout_s: float = 30.0
    """A connection that sends nothing for this long is closed (a live mic never stops)."""
    start_timeout_s: float = 10.0
    """Time allowed between the upgrade and a valid ``session.start`` (a deadline: pings
    do not extend it)."""
    write_timeout_s: float = 10.0
    """A write to a client that does not finish in this long (the client stopped
    reading) aborts its connection (``client_socket.ClientSocket``)."""
    max_audio_rate: float = 1.5
    """Client audio admitted per second of real time (``admission.RealTimeAudio``);
    beyond it audio is dropped with ``rate_limited``."""
    audio_burst_s: float = 5.0
    """Audio a client may send at once (after a network stall, or a test that sends a
    recording as fast as the socket takes it) within that rate."""
    inject_delay_ms: float = 0.0
    """Fault injector: delay each reply-audio packet by this much before sending."""
    trace: bool = False
    """Emit each committed turn's spans (``halfsec serve`` turns this on).  Off for the
    library default so embedding the server or testing it writes no files."""
    trace_file: str | None = None
    """JSON-lines span file; None: ``halfsec.trace.setup.default_trace_path``."""
    otlp_endpoint: str | None = None
    """OTLP/HTTP collector (``http://127.0.0.1:4318``); exported in batches off the loop."""
    resume_key: str | None = None
    """Key every server of one deployment shares to sign and check context snapshots
    (``server.resume``): with it, a conversation can move to another server.  None: no
    ``context`` events, and a ``resume`` is refused (the session starts fresh)."""

    def __post_init__(self) -> None:
        check_fields(self, _RULES, _KEYS, ServeError)
        problem = key_problem(self.resume_key)
        if problem is not None:
            raise ServeError(f"--resume-key: {problem}")

    @property
    def admission(self) -> Admission:
        return Admission(self.token, self.allow_origins, self.max_sessions)


def check_bind(options: ServerOptions) -> None:
    """Refuse to expose an unauthenticated voice endpoint beyond this machine."""
    problem = exposure_problem(options.host, options.token)
    if problem:
        raise ServeError(problem)

"""W3C trace context and the clock anchor.

``traceparent`` is ``00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>``.  We
format and parse it ourselves (it is four fields) so the transport can validate what a
client sent without touching OpenTelemetry's global propagator state, and so a malformed
header is ignored (new trace) instead of breaking the session.

Spans need epoch nanoseconds, but halfsec measures with the monotonic clock.  A
``ClockAnchor`` pairs one monotonic reading with one wall-clock reading taken together;
every timestamp converts through that single pair, so durations in the trace are exactly
the monotonic durations even if NTP steps the wall clock mid-run.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

__all__ = [
    "ClockAnchor",
    "TraceParent",
    "context_from_traceparent",
    "make_traceparent",
    "new_span_id",
    "new_trace_id",
    "parse_traceparent",
    "process_anchor",
    "traceparent_of",
]

_TP_RE = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?$")


@dataclass(frozen=True, slots=True)
class TraceParent:
    trace_id: int
    span_id: int
    flags: int = 0x01
    version: int = 0

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"

    @property
    def span_id_hex(self) -> str:
        return f"{self.span_id:016x}"

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 0x01)

    def __str__(self) -> str:
        return f"{self.version:02x}-{self.trace_id:032x}-{self.span_id:016x}-{self.flags:02x}"


def new_trace_id() -> int:
    """A random non-zero 128-bit trace id (all-zero is invalid in W3C trace context)."""
    while True:
        v = secrets.randbits(128)
        if v:
            return v


def new_span_id() -> int:
    while True:
        v = secrets.randbits(64)
        if v:
            return v


def make_traceparent(
    trace_id: int | None = None, span_id: int | None = None, sampled: bool = True
) -> str:
    """A ``traceparent`` header value; random ids where not given."""
    return str(
        TraceParent(trace_id or new_trace_id(), span_id or new_span_id(), 0x01 if sampled else 0x00)
    )


def parse_traceparent(value: str | None) -> TraceParent | None:
    """The parsed header, or ``None`` for anything invalid (version ff, zero ids, bad hex).

    Per the W3C spec an unknown future version is parsed by its first four fields."""
    if not value:
        return None
    m = _TP_RE.match(value.strip().lower())
    if m is None:
        return None
    version = int(m.group(1), 16)
    if version == 0xFF or (version == 0 and len(value.strip()) != 55):
        return None
    tid, sid = int(m.group(2), 16), int(m.group(3), 16)
    if tid == 0 or sid == 0:
        return None
    return TraceParent(tid, sid, int(m.group(4), 16), version)


def context_from_traceparent(value: str | TraceParent | None) -> Context | None:
    """An OpenTelemetry context whose current span is the remote parent, or ``None``."""
    tp = value if isinstance(value, TraceParent) else parse_traceparent(value)
    if tp is None:
        return None
    sc = SpanContext(
        trace_id=tp.trace_id, span_id=tp.span_id, is_remote=True, trace_flags=TraceFlags(tp.flags)
    )
    return trace.set_span_in_context(NonRecordingSpan(sc))


def traceparent_of(span: trace.Span) -> str:
    """The header that makes a remote service's spans children of ``span``."""
    sc = span.get_span_context()
    return str(TraceParent(sc.trace_id, sc.span_id, int(sc.trace_flags)))


@dataclass(frozen=True, slots=True)
class ClockAnchor:
    """One (monotonic ns, epoch ns) pair; converts monotonic timestamps to epoch ns."""

    mono_ns: int
    epoch_ns: int

    @classmethod
    def now(cls) -> ClockAnchor:
        # Read the wall clock between two monotonic reads and use their midpoint, so the
        # pair is consistent to within the (sub-microsecond) time one read takes.
        m0 = time.monotonic_ns()
        e = time.time_ns()
        m1 = time.monotonic_ns()
        return cls((m0 + m1) // 2, e)

    def to_epoch_ns(self, mono_ns: int) -> int:
        return self.epoch_ns + (mono_ns - self.mono_ns)


_PROCESS_ANCHOR: ClockAnchor | None = None


def process_anchor() -> ClockAnchor:
    """The process-wide anchor, taken on first use and never retaken."""
    global _PROCESS_ANCHOR
    if _PROCESS_ANCHOR is None:
        _PROCESS_ANCHOR = ClockAnchor.now()
    return _PROCESS_ANCHOR

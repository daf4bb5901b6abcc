"""Bench side of a turn's trace: the ``client.turn`` span and its audio events.

The client span is opened when the turn's first sample is sent, so its ``traceparent``
can travel to the server before the server starts working; it is closed when the first
reply sample becomes audible.  Events mark the two instants v2v is measured between
(``client.speech_end``, ``client.first_audible``), and a child span ``client.v2v`` covers
exactly that interval, so a trace viewer shows the user's wait as a bar.  Timestamps are
the client's monotonic clock through the client's anchor: client and server spans sit on
their own wall clocks, which differ by the turn record's ``clock_offset_ms``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from halfsec.clock import now_ns
from halfsec.trace import names
from halfsec.trace.context import ClockAnchor, process_anchor, traceparent_of

__all__ = ["ClientTurnSpan"]


class ClientTurnSpan:
    """One bench turn's client span.  Use: create at first sent sample, send
    ``.traceparent`` with the turn, call ``speech_end``/``first_audible`` as they happen
    (or later, with the monotonic times), then ``finish``."""

    def __init__(
        self,
        *,
        tracer: trace.Tracer | None = None,
        anchor: ClockAnchor | None = None,
        start_mono_ns: int | None = None,
        turn_index: int | None = None,
        file: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        self._tracer = tracer or trace.get_tracer(names.TRACER_BENCH)
        self._anchor = anchor or process_anchor()
        self.start_mono_ns = start_mono_ns if start_mono_ns is not None else now_ns()
        attrs: dict[str, Any] = dict(attributes or {})
        if turn_index is not None:
            attrs[names.ATTR_TURN_INDEX] = turn_index
        if file is not None:
            attrs[names.ATTR_FILE] = file
        self.span = self._tracer.start_span(
            names.SPAN_CLIENT_TURN,
            kind=SpanKind.CLIENT,
            start_time=self._anchor.to_epoch_ns(self.start_mono_ns),
            attributes=attrs,
            context=None,
        )
        self.speech_end_ns: int | None = None
        self.first_audible_ns: int | None = None
        self._finished = False

    @property
    def traceparent(self) -> str:
        """Send this with the turn (WebSocket ``start`` message or header)."""
        return traceparent_of(self.span)

    @property
    def trace_id(self) -> str:
        return f"{self.span.get_span_context().trace_id:032x}"

    def speech_end(self, mono_ns: int) -> None:
        """The last voiced sample of the user's speech left the client."""
        self.speech_end_ns = mono_ns
        self.span.add_event(names.EVENT_SPEECH_END, timestamp=self._anchor.to_epoch_ns(mono_ns))

    def first_audible(self, mono_ns: int) -> None:
        """The first audible reply sample reached the client's playback point."""
        self.first_audible_ns = mono_ns
        self.span.add_event(names.EVENT_FIRST_AUDIBLE, timestamp=self._anchor.to_epoch_ns(mono_ns))

    def finish(
        self,
        *,
        end_mono_ns: int | None = None,
        record: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Close the span.  ``record`` (the turn record) adds ``halfsec.v2v_ms``, the stage
        durations and the dominant stage as attributes; ``error`` marks the span failed."""
        if self._finished:
            return
        self._finished = True
        ep = self._anchor.to_epoch_ns
        a, b = self.speech_end_ns, self.first_audible_ns
        if a is not None and b is not None and b >= a:
            ctx = trace.set_span_in_context(self.span)
            v2v_ms = round((b - a) / 1e6, 3)
            wait = self._tracer.start_span(
                names.SPAN_CLIENT_V2V,
                context=ctx,
                kind=SpanKind.INTERNAL,
                start_time=ep(a),
                attributes={names.ATTR_STAGE: names.STAGE_V2V, names.ATTR_V2V_MS: v2v_ms},
            )
            wait.end(end_time=ep(b))
            self.span.set_attribute(names.ATTR_V2V_MS, v2v_ms)
        if record is not None:
            if record.get("v2v_ms") is not None:
                self.span.set_attribute(names.ATTR_V2V_MS, float(record["v2v_ms"]))
            for k, v in (record.get("stages") or {}).items():
                if v is not None:
                    self.span.set_attribute(names.stage_attr(k), float(v))
            if record.get("dominant_stage"):
                self.span.set_attribute(names.ATTR_DOMINANT_STAGE, str(record["dominant_stage"]))
            if record.get("clock_offset_ms") is not None:
                offset = float(record["clock_offset_ms"])
                self.span.set_attribute(names.ATTR_CLOCK_OFFSET_MS, offset)
            if not error and record.get("ok") is False:
                error = str(record.get("error") or "turn failed")
        if error:
            self.span.set_status(Status(StatusCode.ERROR, error))
        end = end_mono_ns if end_mono_ns is not None else (b if b is not None else now_ns())
        self.span.end(end_time=ep(max(end, self.start_mono_ns)))

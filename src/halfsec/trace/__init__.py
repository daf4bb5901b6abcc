"""OpenTelemetry tracing for halfsec: one trace per turn, client and server in the same trace.

The bench client opens a ``client.turn`` span when it sends the turn's first sample and
sends its W3C ``traceparent`` to the server; the server parents ``server.turn`` and the
stage spans (``endpointing``, ``stt``, ``logic``, ``tts``, ``send``) on it.  A trace viewer
then shows the user's wait and every server stage on one timeline.

* ``context``      -- make/parse ``traceparent`` headers, the clock anchor (monotonic -> epoch)
* ``setup``        -- tracer provider with OTLP/HTTP and JSON-lines exporters
* ``server_spans`` -- a turn's frames and timing marks -> spans (called by the transport)
* ``client_spans`` -- the bench client's ``client.turn`` span
* ``jsonl``        -- span <-> OTLP-JSON-like dict, the JSON-lines exporter and reader
"""

from halfsec.trace.client_spans import ClientTurnSpan
from halfsec.trace.context import ClockAnchor, TraceParent, make_traceparent, parse_traceparent
from halfsec.trace.server_spans import emit_server_turn_spans
from halfsec.trace.setup import Tracing, configure_tracing

__all__ = [
    "ClientTurnSpan",
    "ClockAnchor",
    "TraceParent",
    "Tracing",
    "configure_tracing",
    "emit_server_turn_spans",
    "make_traceparent",
    "parse_traceparent",
]

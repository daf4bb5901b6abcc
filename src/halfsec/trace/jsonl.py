"""Spans as OTLP-JSON-like dicts, a JSON-lines exporter, and its reader.

Why JSON lines by default: a lab run should leave its traces on disk with no collector
running, in a shape that both ``halfsec import-trace`` and ordinary tools (``jq``) read.
Each line is one span with the OTLP JSON field names (``traceId``, ``spanId``,
``parentSpanId``, ``startTimeUnixNano``, ``attributes: [{key, value: {stringValue}}]``...)
plus its ``resource`` and ``scope``, so a line is meaningful on its own.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

__all__ = [
    "JsonLinesSpanExporter",
    "any_value",
    "attrs_from_otlp",
    "attrs_to_otlp",
    "from_any_value",
    "read_spans",
    "span_to_dict",
]

_KIND = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
_STATUS = {StatusCode.UNSET: 0, StatusCode.OK: 1, StatusCode.ERROR: 2}


def any_value(v: Any) -> dict[str, Any]:
    """An OTLP ``AnyValue`` in JSON form (64-bit ints are strings, as in proto3 JSON)."""
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, list | tuple):
        return {"arrayValue": {"values": [any_value(x) for x in v]}}
    return {"stringValue": str(v)}


def from_any_value(v: Mapping[str, Any]) -> Any:
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [from_any_value(x) for x in (v["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in v:
        return attrs_from_otlp((v["kvlistValue"] or {}).get("values", []))
    return None


def attrs_to_otlp(attrs: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return [{"key": k, "value": any_value(v)} for k, v in (attrs or {}).items()]


def attrs_from_otlp(
    attrs: Iterable[Mapping[str, Any]] | Mapping[str, Any] | None,
) -> dict[str, Any]:
    """OTLP ``[{key, value}]`` to a dict; a plain dict (some exporters write that) passes."""
    if attrs is None:
        return {}
    if isinstance(attrs, Mapping):
        return dict(attrs)
    return {a["key"]: from_any_value(a.get("value") or {}) for a in attrs}


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    assert ctx is not None
    parent = span.parent
    return {
        "traceId": f"{ctx.trace_id:032x}",
        "spanId": f"{ctx.span_id:016x}",
        "parentSpanId": f"{parent.span_id:016x}" if parent is not None else "",
        "name": span.name,
        "kind": _KIND.get(span.kind, 0),
        "startTimeUnixNano": str(span.start_time or 0),
        "endTimeUnixNano": str(span.end_time or 0),
        "attributes": attrs_to_otlp(dict(span.attributes or {})),
        "events": [
            {
                "name": e.name,
                "timeUnixNano": str(e.timestamp),
                "attributes": attrs_to_otlp(dict(e.attributes or {})),
            }
            for e in span.events
        ],
        "status": {
            "code": _STATUS.get(span.status.status_code, 0),
            **({"message": span.status.description} if span.status.description else {}),
        },
        "resource": {"attributes": attrs_to_otlp(dict(span.resource.attributes))},
        "scope": {"name": span.instrumentation_scope.name if span.instrumentation_scope else ""},
    }


class JsonLinesSpanExporter(SpanExporter):
    """Appends one JSON object per span to a file (thread-safe; the BatchSpanProcessor
    exports from its own thread while a flush may come from the event loop)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        lines = "".join(json.dumps(span_to_dict(s), separators=(",", ":")) + "\n" for s in spans)
        try:
            with self._lock, open(self.path, "a", encoding="utf-8") as f:
                f.write(lines)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._closed = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def read_spans(path: Path | str, trace_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Spans from a JSON-lines file, optionally only those of the given trace ids."""
    wanted = {t.lower() for t in trace_ids} if trace_ids is not None else None
    out: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            d = json.loads(line)
            if wanted is None or str(d.get("traceId", "")).lower() in wanted:
                out.append(d)
    return out

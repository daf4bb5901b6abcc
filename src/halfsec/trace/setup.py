"""Tracer providers for the server and the bench: OTLP/HTTP and/or JSON lines.

Each side builds its own ``TracerProvider`` rather than relying on the global one, so a
test (or a bench that runs the server in-process) can hold two providers with different
``service.name`` resources, and so configuring tracing never surprises library code
that already installed a global provider.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)

from halfsec.trace import names
from halfsec.trace.jsonl import JsonLinesSpanExporter

__all__ = ["Tracing", "configure_tracing", "default_trace_path", "otlp_traces_url"]


def default_trace_path(service_name: str) -> Path:
    """``$HALFSEC_TRACE_DIR/<service>.jsonl``, default ``~/.local/share/halfsec/traces``."""
    base = os.environ.get("HALFSEC_TRACE_DIR")
    root = (
        Path(base).expanduser()
        if base
        else Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        / "halfsec"
        / "traces"
    )
    return root / f"{service_name}.jsonl"


def otlp_traces_url(endpoint: str) -> str:
    """Accept a collector base URL (``http://host:4318``) or the full traces URL."""
    e = endpoint.rstrip("/")
    return e if e.endswith("/v1/traces") else e + "/v1/traces"


@dataclass
class Tracing:
    provider: TracerProvider
    tracer: trace.Tracer
    jsonl_path: Path | None
    otlp_url: str | None

    def flush(self, timeout_ms: int = 5000) -> bool:
        return self.provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        """Flush and stop exporters (call at process end or the last batch is lost)."""
        self.provider.force_flush(5000)
        self.provider.shutdown()


def configure_tracing(
    service_name: str,
    *,
    otlp_endpoint: str | None = None,
    jsonl_path: Path | str | None = None,
    jsonl: bool = True,
    batch: bool = True,
    extra_exporters: list[SpanExporter] | None = None,
    resource_attributes: dict[str, Any] | None = None,
    set_global: bool = False,
) -> Tracing:
    """A provider for ``service_name`` (``halfsec-server`` / ``halfsec-bench``).

    * JSON lines (default on): ``jsonl_path`` or ``default_trace_path(service_name)``.
    * OTLP over HTTP/protobuf: ``otlp_endpoint``, else ``$OTEL_EXPORTER_OTLP_ENDPOINT``
      if set; nothing is sent anywhere unless one of the two names a collector.
    * ``batch=False`` exports each span as it ends (tests, short CLI runs); the default
      batches off the event loop's thread so exporting never delays a reply.
    """
    res = Resource.create({"service.name": service_name, **(resource_attributes or {})})
    provider = TracerProvider(resource=res)
    proc = BatchSpanProcessor if batch else SimpleSpanProcessor
    path: Path | None = None
    if jsonl:
        path = Path(jsonl_path) if jsonl_path is not None else default_trace_path(service_name)
        provider.add_span_processor(proc(JsonLinesSpanExporter(path)))
    endpoint = otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    url: str | None = None
    if endpoint:
        # Imported only when an endpoint is set: it pulls in protobuf and requests, which a
        # process that writes JSON lines (or no traces) need not load.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        url = otlp_traces_url(endpoint)
        provider.add_span_processor(proc(OTLPSpanExporter(endpoint=url, timeout=5)))
    for exp in extra_exporters or []:
        provider.add_span_processor(proc(exp))
    if set_global:
        trace.set_tracer_provider(provider)
    return Tracing(provider, provider.get_tracer(names.TRACER_SERVICE, _version()), path, url)


def _version() -> str:
    try:
        return importlib.metadata.version("halfsec")
    except Exception:  # metadata missing in odd installs: tracing must still work
        return "0"

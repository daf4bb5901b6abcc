"""Run a corpus through a server, one recording at a time, and produce turn records.

Recordings run sequentially (a voice pipeline on 2 cores is measured one conversation at
a time; load tests are a different tool), each in its own session.  The bench drives
the pieces and owns none of them: the server process (``server_process``, or
``namespace`` for ``--net-mode namespace``), the clients (``lab.clients``, or the
browser through ``bench.browser``), the simulated network (``lab.netem``), and the turn
records (``records``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from halfsec import INTERNAL_RATE
from halfsec.audio.io import load_audio, write_wav
from halfsec.errors import HalfsecError
from halfsec.lab.bench.browser import run_browser_items
from halfsec.lab.bench.corpus import CorpusItem
from halfsec.lab.bench.namespace import check_namespace_options, namespace_server, with_token
from halfsec.lab.bench.options import BenchOptions
from halfsec.lab.bench.records import empty_record, finish_client_spans, make_record
from halfsec.lab.bench.server_process import ServerProcess, fetch_health, server_urls
from halfsec.lab.clients.client_run import ClientRun
from halfsec.lab.clients.conversation import run_conversation
from halfsec.lab.clients.rtc_call import run_webrtc_conversation
from halfsec.lab.clients.twilio import run_recording_twilio
from halfsec.lab.clients.webrtc import run_recording_webrtc
from halfsec.lab.clients.websocket import run_recording
from halfsec.lab.netem.path import NetPath
from halfsec.lab.netem.rtc_path import SignalingProxy
from halfsec.measure.client_overhead import client_overhead
from halfsec.trace.jsonl import read_spans, span_to_dict
from halfsec.trace.setup import configure_tracing


def client_cpu_s() -> float:
    """CPU time of this process (all threads): the bench's own footprint."""
    t = os.times()
    return float(t.user + t.system)


# -- a whole run --------------------------------------------------------------------------
@dataclass
class BenchResult:
    records: list[dict[str, Any]]
    meta: dict[str, Any]
    spans: list[dict[str, Any]] = field(default_factory=list)
    """Client spans of every turn, plus the server's when the bench started the server
    (OTLP-JSON-like dicts, the shape ``lab.store.save_run`` stores)."""


async def run_items(
    url: str,
    items: list[CorpusItem],
    opts: BenchOptions,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    late_ms: list[float] | None = None,
    tracer: trace.Tracer | None = None,
    path: NetPath | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """Play each item in its own session; returns the records and seconds of audio sent.

    ``path``: where ``opts.net`` is applied (default: loopback relays)."""
    path = path or NetPath(opts.net)
    records: list[dict[str, Any]] = []
    audio_s = 0.0
    for item in items:
        try:
            pcm = load_audio(item.path, max_seconds=opts.max_input_s)
        except HalfsecError as e:
            rec = empty_record(item)
            rec["error"] = f"unreadable audio: {e}"
            records.append(rec)
            if on_record:
                on_record(rec)
            continue
        net_info: dict[str, Any] = {}
        if opts.transport == "webrtc":
            base = webrtc_base(url)
            if path.mode == "namespace":
                run = await _webrtc_through(path, base, pcm, opts, net_info)
            else:
                run = await run_recording_webrtc(base, pcm, opts.client, path.net, net_info)
        elif opts.transport == "twilio":
            async with path.tcp(twilio_url(url)) as (relayed, relay):
                run = await run_recording_twilio(relayed, pcm, opts.client, tracer=tracer)
                net_info = path.tcp_meta(relay) or {}
        else:
            async with path.tcp(url) as (relayed, relay):
                run = await run_recording(relayed, pcm, opts.client, tracer=tracer)
                net_info = path.tcp_meta(relay) or {}
        rec = turn_record(item, pcm, run, opts, net_info, late_ms)
        audio_s += run.sent_audio().size / INTERNAL_RATE
        records.append(rec)
        if on_record:
            on_record(rec)
    return records, audio_s


def turn_record(
    item: CorpusItem,
    pcm: np.ndarray,
    run: ClientRun,
    opts: BenchOptions,
    net_info: dict[str, Any],
    late_ms: list[float] | None,
) -> dict[str, Any]:
    """One recording's record (``make_record``) with what the bench adds: transport,
    codec, network, client spans closed, lateness, saved audio."""
    rec = make_record(item, pcm, run, opts.audible_dbfs)
    rec["transport"] = opts.transport if opts.transport in ("webrtc", "twilio") else "websocket"
    rec["codec"] = opts.codec
    if net_info:
        rec["net"] = net_info
    finish_client_spans(run, rec)
    sent = run.sent_audio()
    if late_ms is not None:
        late_ms.extend(run.late_ms)
    if run.late_ms:
        rec["send_late_max_ms"] = round(max(run.late_ms), 2)
    if opts.save_audio is not None and sent.size:
        opts.save_audio.mkdir(parents=True, exist_ok=True)
        write_wav(opts.save_audio / f"{item.stem}.sent.wav", sent, INTERNAL_RATE)
        write_wav(
            opts.save_audio / f"{item.stem}.received.wav", run.received_audio(), run.output_rate
        )
    return rec


async def run_conversation_items(
    url: str,
    items: Sequence[CorpusItem],
    think_s: Sequence[float],
    opts: BenchOptions,
    on_record: Callable[[int, dict[str, Any]], None],
    keep_going: Callable[[], bool] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> None:
    """Play ``items`` in order over ONE session (``lab.clients.conversation`` on the
    WebSocket, ``lab.clients.rtc_call`` on WebRTC, loopback only): a caller's call,
    admitted once, its dialogue state carried from turn to turn.  Each
    turn's record (the same as ``run_items``') goes to ``on_record(k, rec)``; a refused
    or failed call start gives one record, for turn 0.  Recordings that cannot be read
    are left out of the call beforehand (their records carry the error, turn -1)."""
    if opts.transport not in ("websocket", "webrtc"):
        raise HalfsecError("a conversation over one session needs --transport websocket|webrtc")
    if opts.transport == "webrtc" and opts.net:
        raise HalfsecError("WebRTC callers of a load run take no --net (loopback only)")
    path = NetPath(opts.net)
    said: list[tuple[CorpusItem, np.ndarray, float]] = []
    loaded: dict[Path, np.ndarray] = {}  # a caller's plan repeats its few recordings
    for item, think in zip(items, think_s, strict=True):
        try:
            if item.path not in loaded:
                loaded[item.path] = load_audio(item.path, max_seconds=opts.max_input_s)
            said.append((item, loaded[item.path], think))
        except HalfsecError as e:
            rec = empty_record(item)
            rec["error"] = f"unreadable audio: {e}"
            on_record(-1, rec)
    if not said:
        return
    pcms = [p for _, p, _ in said]
    thinks = [t for _, _, t in said]

    def recorder(meta: Callable[[], dict[str, Any]]) -> Callable[[int, ClientRun], None]:
        def on_turn(k: int, run: ClientRun) -> None:
            item, pcm, _ = said[k]
            on_record(k, turn_record(item, pcm, run, opts, meta(), None))

        return on_turn

    if opts.transport == "webrtc":
        await run_webrtc_conversation(
            webrtc_base(url),
            pcms,
            thinks,
            recorder(dict),
            opts.client,
            keep_going=keep_going,
            on_start=on_start,
        )
        return
    async with path.tcp(url) as (relayed, relay):
        await run_conversation(
            relayed,
            pcms,
            thinks,
            recorder(lambda: path.tcp_meta(relay) or {}),
            opts.client,
            keep_going=keep_going,
            on_start=on_start,
        )


def fault_args(opts: BenchOptions) -> list[str]:
    """``halfsec serve`` arguments for the bench's ``--fault`` specs (none: none)."""
    if not opts.faults:
        return []
    args = [a for f in opts.faults for a in ("--fault", f)]
    return [*args, "--fault-seed", str(opts.fault_seed), "--fault-every", str(opts.fault_every)]


def webrtc_base(url: str) -> str:
    """The server's http(s)://host:port for ``POST /webrtc/offer``, from its ``/ws`` URL."""
    base = url.replace("wss://", "https://").replace("ws://", "http://")
    return base.split("/ws")[0]


def twilio_url(url: str) -> str:
    """The server's ``/twilio`` endpoint next to its ``/ws`` (``ws://host:port/ws``)."""
    u = urlsplit(url)
    return urlunsplit((u.scheme, u.netloc, "/twilio", u.query, ""))


async def _webrtc_through(
    path: NetPath, base: str, pcm: np.ndarray, opts: BenchOptions, net_info: dict[str, Any]
) -> ClientRun:
    """The Python WebRTC client behind a signaling proxy that puts ``path``'s relays on
    the media path (namespace mode: its own relays would be on loopback)."""
    async with path.rtc_relays() as relays, SignalingProxy(base, relays) as proxy:
        run = await run_recording_webrtc(proxy.url, pcm, opts.client)
        net_info.update(relays.meta(path.net) or {})
    return run


async def _run_with_chosen_client(
    url: str,
    items: list[CorpusItem],
    opts: BenchOptions,
    on_record: Callable[[dict[str, Any]], None] | None,
    late_ms: list[float],
    tracer: trace.Tracer | None,
    path: NetPath | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """Dispatch on ``opts.client_kind``; both clients return the same records."""
    if opts.client_kind == "browser":
        return await run_browser_items(
            url, items, opts, on_record, late_ms, transport=opts.transport, path=path
        )
    return await run_items(url, items, opts, on_record, late_ms, tracer, path)


@contextlib.asynccontextmanager
async def _loopback_server(
    opts: BenchOptions, overrides: list[str], extra: list[str]
) -> AsyncIterator[tuple[ServerProcess, NetPath]]:
    """``halfsec serve`` on a free loopback port; ``--net`` applied by loopback relays."""
    proc = ServerProcess(
        opts.config, overrides, opts.inject_delay_ms, extra, opts.server_start_timeout_s
    )
    async with proc:
        yield proc, NetPath(opts.net)


async def run_bench(
    items: list[CorpusItem],
    opts: BenchOptions,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    on_status: Callable[[str], None] | None = None,
) -> BenchResult:
    """Against ``opts.server``, or a server per domain started here."""
    status = on_status or (lambda s: None)
    cpu0 = client_cpu_s()
    late: list[float] = []
    records: list[dict[str, Any]] = []
    warnings: list[str] = []
    servers: list[dict[str, Any]] = []
    audio_s = 0.0
    server_spans: list[dict[str, Any]] = []
    memory = InMemorySpanExporter()
    tracing = (
        configure_tracing(
            "halfsec-bench",
            otlp_endpoint=opts.otlp_endpoint,
            jsonl=False,
            extra_exporters=[memory],
        )
        if opts.trace
        else None
    )
    tracer = tracing.tracer if tracing is not None else None
    trace_dir = Path(tempfile.mkdtemp(prefix="halfsec-bench-trace-")) if opts.trace else None
    namespace = opts.net_mode == "namespace"
    if namespace:
        check_namespace_options(opts)
        opts = with_token(opts)
    if opts.server is not None:
        url, health_url = server_urls(opts.server)
        health = await fetch_health(health_url) or {}
        dom = health.get("domain")
        run_items_list = items
        if dom is not None:
            other = [it for it in items if it.domain not in (None, dom)]
            if other:
                warnings.append(
                    f"skipped {len(other)} recording(s) for other domains than the server's "
                    f"{dom!r}; run the bench without --server to start one server per domain"
                )
                run_items_list = [it for it in items if it.domain in (None, dom)]
        servers.append({"url": url, "health": health, "started_by_bench": False})
        records, audio_s = await _run_with_chosen_client(
            url, run_items_list, opts, on_record, late, tracer
        )
    else:
        groups: dict[str | None, list[CorpusItem]] = {}
        for it in items:
            groups.setdefault(it.domain, []).append(it)
        for dom, group in groups.items():
            overrides = list(opts.overrides)
            if dom is not None:
                overrides.append(f"logic.domain={dom}")
            extra = ["--token", opts.token] if opts.token else []
            extra += fault_args(opts)
            trace_file = None
            if trace_dir is not None:
                trace_file = trace_dir / f"server-{len(servers)}.jsonl"
                extra += ["--trace-file", str(trace_file)]
            else:
                extra += ["--no-trace"]
            if opts.otlp_endpoint:
                extra += ["--otlp-endpoint", opts.otlp_endpoint]
            status(f"starting halfsec serve{f' (domain {dom})' if dom else ''}...")
            if namespace:
                server_cm = namespace_server(opts, overrides, extra)
            else:
                server_cm = _loopback_server(opts, overrides, extra)
            async with server_cm as (proc, path):
                servers.append({"url": proc.url, "health": proc.health, "started_by_bench": True})
                status(f"running {len(group)} recording(s) against {proc.url}")
                recs, secs = await _run_with_chosen_client(
                    proc.url, group, opts, on_record, late, tracer, path
                )
            if path.pcap is not None:  # --pcap: packet figures beside the relays'
                servers[-1]["pcap"] = path.pcap
            # The server flushed its spans when it stopped: keep this run's turns'.
            if trace_file is not None and trace_file.exists():
                ids = {r["trace_id"] for r in recs if r.get("trace_id")}
                server_spans += read_spans(trace_file, trace_ids=ids)
            records.extend(recs)
            audio_s += secs
    meta = {
        "tool": "halfsec bench",
        "protocol": 1,
        "servers": servers,
        "inject_delay_ms": opts.inject_delay_ms,
        "transport": opts.transport,
        "client_kind": opts.client_kind,
        "codec": opts.codec,
        "net": opts.net,
        "net_mode": opts.net_mode if opts.net else None,
        "faults": list(opts.faults),
        "fault_seed": opts.fault_seed if opts.faults else None,
        "overrides": list(opts.overrides),
        "audible_dbfs": opts.audible_dbfs,
        "client": client_overhead(client_cpu_s() - cpu0, audio_s, late),
        "session_per_recording": True,
        "warnings": warnings,
        "n": len(records),
    }
    spans: list[dict[str, Any]] = []
    if tracing is not None:
        # Flushing may wait on an unreachable collector (bounded by the exporter's
        # timeout): do it off the loop, and never fail the run over it.
        with contextlib.suppress(Exception):
            await asyncio.to_thread(tracing.shutdown)
        spans = [span_to_dict(s) for s in memory.get_finished_spans()] + server_spans
    if trace_dir is not None:
        shutil.rmtree(trace_dir, ignore_errors=True)
    return BenchResult(records, meta, spans)

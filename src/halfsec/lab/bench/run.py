"""Run a corpus through a server, one recording at a time, and produce turn records.

The bench is a separate process from the server on purpose: a client sharing the
server's event loop and cores would steal exactly the time it is trying to measure.
Without ``--server`` the bench starts ``halfsec serve`` as a subprocess on a free
loopback port, waits for ``/healthz`` and stops it afterwards.  Recordings run
sequentially (a voice pipeline on 2 cores is measured one conversation at a time; load
tests are a different tool), each in its own WebSocket session.

A turn record is a plain dict with stable keys (see ``RECORD_KEYS``); the report writers
of ``halfsec.lab`` consume these and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import numpy as np
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from halfsec import INTERNAL_RATE
from halfsec.audio.io import load_audio, write_wav
from halfsec.errors import HalfsecError
from halfsec.lab.bench.corpus import CorpusItem
from halfsec.lab.clients.websocket import ClientOptions, ClientRun, client_cpu_s, run_recording
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.measure.stages import StagePoints, breakdown, client_overhead, dominant_stage
from halfsec.trace.jsonl import read_spans, span_to_dict
from halfsec.trace.setup import configure_tracing

if TYPE_CHECKING:
    from halfsec.lab.netem.path import NetPath

RECORD_KEYS: tuple[str, ...] = (
    "file",
    "ok",
    "error",
    "transcript",
    "ref_transcript",
    "intent",
    "slots",
    "ref_intent",
    "ref_slots",
    "reply_text",
    "v2v_ms",
    "stages",
    "dominant_stage",
    "trace_id",
    "clock_offset_ms",
    "clock_uncertainty_ms",
    "interruptions",
    "premature_replies",
    "server_events",
)


class BenchError(HalfsecError):
    """The bench cannot run at all (server does not start, bad URL)."""


@dataclass
class BenchOptions:
    server: str | None = None
    """``ws://host:port/ws`` or ``http://host:port``; None: start a local server."""
    token: str | None = None
    config: Path | None = None
    overrides: list[str] = field(default_factory=list)
    inject_delay_ms: float = 0.0
    """Passed to the server the bench starts (the lab's self-test)."""
    save_audio: Path | None = None
    audible_dbfs: float = -45.0
    max_input_s: float = 120.0
    server_start_timeout_s: float = 180.0
    client: ClientOptions = field(default_factory=ClientOptions)
    transport: str = "websocket"
    """``websocket`` (codec from ``client.codec``) or ``webrtc`` (Opus, aiortc client)."""
    net: str | None = None
    """``--net`` profile/spec: a TCP relay for WebSocket, two UDP relays for WebRTC."""
    net_mode: str = "relay"
    """``relay``: the relays run on 127.0.0.1 in this process.  ``namespace``: client,
    relays and server sit in three network namespaces joined by veths
    (``lab.bench_ns``; root only, needs ``net`` and no ``server``)."""
    client_kind: str = "python"
    """``python`` (this package's clients, ``run_items``) or ``browser`` (headless
    Chromium playing the page at ``/``, ``lab.browser_client.run_browser_items``)."""
    trace: bool = True
    """One ``client.turn`` span per turn, kept in memory for the run's store (and the
    server's spans too when the bench starts the server)."""
    otlp_endpoint: str | None = None
    """Also export the spans to this OTLP/HTTP collector (and point the server the bench
    starts at it), so one trace viewer shows client and server of every turn."""


def server_urls(server: str) -> tuple[str, str]:
    """(WebSocket URL, /healthz URL) from whatever the user typed."""
    s = server if "://" in server else f"ws://{server}"
    u = urlsplit(s)
    if u.scheme not in ("ws", "wss", "http", "https") or not u.netloc:
        raise BenchError(f"--server {server!r} is not a URL like ws://127.0.0.1:8765/ws")
    secure = u.scheme in ("wss", "https")
    path = u.path if u.path and u.path != "/" else "/ws"
    ws = urlunsplit(("wss" if secure else "ws", u.netloc, path, u.query, ""))
    health = urlunsplit(("https" if secure else "http", u.netloc, "/healthz", "", ""))
    return ws, health


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def fetch_health(url: str, timeout_s: float = 2.0) -> dict[str, Any] | None:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http,
            http.get(url) as r,
        ):
            if r.status != 200:
                return None
            data = await r.json()
            return data if isinstance(data, dict) else None
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return None


class ServerProcess:
    """``halfsec serve`` in a subprocess on a free loopback port, for one bench run."""

    def __init__(
        self,
        config: Path | None = None,
        overrides: list[str] | None = None,
        inject_delay_ms: float = 0.0,
        extra_args: list[str] | None = None,
        start_timeout_s: float = 180.0,
        host: str = "127.0.0.1",
        port: int | None = None,
        netns: str | None = None,
    ) -> None:
        self.port = free_port() if port is None else port
        self.args = ["ip", "netns", "exec", netns] if netns else []
        self.args += [sys.executable, "-m", "halfsec.cli.main", "serve"]
        self.args += ["--host", host, "--port", str(self.port)]
        self.connect: tuple[str, int] = (host, self.port)
        """Where the bench reaches the server (namespace mode: a relay in front of it)."""
        if config is not None:
            self.args += ["--config", str(config)]
        for ov in overrides or []:
            self.args += ["--set", ov]
        if inject_delay_ms:
            self.args += ["--inject-delay-ms", str(inject_delay_ms)]
        self.args += extra_args or []
        self.start_timeout_s = start_timeout_s
        self.proc: asyncio.subprocess.Process | None = None
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
            prefix="halfsec-serve-", suffix=".log", delete=False
        )
        self.health: dict[str, Any] = {}

    @property
    def url(self) -> str:
        return f"ws://{self.connect[0]}:{self.connect[1]}/ws"

    @property
    def log_path(self) -> str:
        return self._log.name

    def log_tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return Path(self._log.name).read_text(errors="replace")[-n:]
        return ""

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdout=self._log, stderr=self._log, stdin=asyncio.subprocess.DEVNULL
        )
        health = f"http://{self.connect[0]}:{self.connect[1]}/healthz"
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise BenchError(
                    f"`halfsec serve` exited with code {self.proc.returncode} before it was "
                    f"ready; its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            h = await fetch_health(health, 1.0)
            if h is not None:
                self.health = h
                return
            await asyncio.sleep(0.2)
        await self.stop()
        raise BenchError(
            f"`halfsec serve` was not ready within {self.start_timeout_s:.0f} s; log: {self.log_path}"
        )

    async def stop(self) -> None:
        p = self.proc
        if p is None or p.returncode is not None:
            return
        p.terminate()
        try:
            await asyncio.wait_for(p.wait(), timeout=10)
        except TimeoutError:
            p.kill()
            await p.wait()

    async def __aenter__(self) -> ServerProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# -- one turn record ----------------------------------------------------------------------
def _ms(run: ClientRun, t_client_ns: int) -> float:
    return (t_client_ns - run.t0_ns) / 1e6


def empty_record(item: CorpusItem) -> dict[str, Any]:
    return {
        "file": str(item.path),
        "ok": False,
        "error": None,
        "transcript": None,
        "ref_transcript": item.transcript,
        "intent": None,
        "slots": {},
        "ref_intent": item.intent,
        "ref_slots": dict(item.slots),
        "reply_text": None,
        "v2v_ms": None,
        "stages": {},
        "dominant_stage": None,
        "trace_id": None,
        "clock_offset_ms": None,
        "clock_uncertainty_ms": None,
        "interruptions": 0,
        "premature_replies": 0,
        "server_events": [],
        "domain": item.domain,
    }


def make_record(
    item: CorpusItem, pcm: np.ndarray, run: ClientRun, audible_dbfs: float = -45.0
) -> dict[str, Any]:
    """Turn what the client saw into the stable record (v2v, stages, labels)."""
    rec = empty_record(item)
    rec["session_id"] = run.session_id
    clock = run.clock
    if clock is not None:
        rec["clock_offset_ms"] = round(clock.offset_ns / 1e6, 3)
        rec["clock_uncertainty_ms"] = round(clock.uncertainty_ns / 1e6, 3)
    if clock is None or run.timeline is None:
        rec["error"] = run.error or "no session"
        return rec

    def client_ms(t_server_ns: int) -> float:
        return _ms(run, clock.to_client_ns(t_server_ns))

    events = [r.event for r in run.events if r.event is not None]
    rec["server_events"] = [
        {
            "type": r.event["type"],
            "turn_id": r.turn_id,
            **({"name": r.event.get("name")} if r.event["type"] == "timing" else {}),
            "t_client_ms": round(client_ms(r.t_server_ns), 2) if r.t_server_ns else None,
            "t_recv_ms": round(_ms(run, r.t_recv_ns), 2),
        }
        for r in run.events
        if r.event is not None and r.event["type"] != "pong"
    ]
    interrupted = {e["turn_id"] for e in events if e["type"] == "interruption"}
    rec["interruptions"] = len(interrupted)
    committed = [e["turn_id"] for e in events if e["type"] == "turn.end"]
    answer = next((t for t in reversed(committed) if t not in interrupted), None)
    sent_pcm_errors = [
        f"{e.get('code')}: {e.get('message')}" for e in events if e["type"] == "error"
    ]

    def of_turn(kind: str, tid: int | None) -> list[dict[str, Any]]:
        return [e for e in events if e["type"] == kind and e["turn_id"] == tid]

    if answer is not None:
        fin = of_turn("transcript.final", answer)
        rec["transcript"] = fin[-1]["text"] if fin else None
        it = of_turn("intent", answer)
        if it:
            rec["intent"], rec["slots"] = it[-1].get("intent"), dict(it[-1].get("slots") or {})
        done = of_turn("reply.done", answer)
        texts = of_turn("reply.text", answer)
        rec["reply_text"] = done[-1]["text"] if done else " ".join(t["text"] for t in texts) or None
        ends = of_turn("turn.end", answer)
        rec["eot_reason"] = ends[-1].get("reason") if ends else None
        tp = next((e.get("traceparent") for e in ends if e.get("traceparent")), None)
        if tp:
            rec["trace_id"] = str(tp).split("-")[1]
    if rec["trace_id"] is None and run.traceparents:
        rec["trace_id"] = run.traceparents[0].split("-")[1]

    bounds = voiced_bounds(pcm)
    if bounds is None:
        rec["error"] = run.error or "no speech in the recording (reference VAD found none)"
        return rec
    rate = run.output_rate
    ref_end_ms = bounds[1] * 1000.0 / INTERNAL_RATE
    ref_sample = int(round(bounds[1] * rate / INTERNAL_RATE))
    rec["ref_end_ms"] = round(ref_end_ms, 2)
    first_by_turn: dict[int, int] = {}
    for p in run.packets:
        first_by_turn.setdefault(p.turn_id, p.start_sample)
    rec["premature_replies"] = sum(1 for s in first_by_turn.values() if s < ref_sample)

    audible = run.timeline.first_audible(after_sample=ref_sample, dbfs=audible_dbfs)
    if audible is not None and run.error is None:
        audible_ms = audible * 1000.0 / rate
        rec["v2v_ms"] = round(audible_ms - ref_end_ms, 2)
        rec["first_audible_ms"] = round(audible_ms, 2)
        # The latest packet placed over that sample is the one heard: a barge-in cuts the
        # interrupted turn's queued audio and the next turn's audio is placed over it.
        pkt = next(
            (
                p
                for p in reversed(run.packets)
                if p.start_sample <= audible < p.start_sample + p.samples
            ),
            None,
        )
        heard = pkt.turn_id if pkt is not None else answer

        def mark(name: str) -> float | None:
            for e in events:
                if e["type"] == "timing" and e["turn_id"] == heard and e.get("name") == name:
                    return client_ms(int(e["t_server_ns"]))
            return None

        ends = of_turn("turn.end", heard)
        stages = breakdown(
            StagePoints(
                ref_end_ms=ref_end_ms,
                turn_end_ms=client_ms(int(ends[-1]["t_server_ns"])) if ends else None,
                stt_end_ms=mark("stt.end"),
                logic_first_clause_ms=mark("logic.first_clause"),
                tts_first_audio_ms=mark("tts.first_audio"),
                server_send_ms=client_ms(pkt.t_server_ns) if pkt is not None else None,
                first_audible_ms=audible_ms,
            )
        )
        rec["stages"] = {k: round(v, 2) for k, v in stages.items()}
        rec["dominant_stage"] = dominant_stage(stages)
        # Opus/WebRTC clients play from a jitter buffer: split the last stage into the
        # network (server send -> packet arrival) and the buffer (arrival -> playout).
        if pkt is not None and pkt.buffer_ms is not None:
            nb = stages["network_buffer_ms"]
            jb = min(nb, max(0.0, pkt.buffer_ms))
            rec["network_split"] = {
                "network_ms": round(nb - jb, 2),
                "jitter_buffer_ms": round(jb, 2),
            }
        jit = [
            e
            for e in events
            if e["type"] == "timing" and e.get("name") == "jitter_buffer" and e["turn_id"] == heard
        ]
        if jit:
            attrs = jit[-1].get("attrs") or {}
            rec["server_jitter_buffer_ms"] = attrs.get("jitter_buffer_ms")
            rec["server_concealed_pct"] = attrs.get("concealed_pct")
        # Only the reply that answered the last words counts as success.
        rec["ok"] = answer is not None and heard == answer
        if not rec["ok"]:
            rec["error"] = f"the first audible reply belongs to turn {heard}, not the answer"
    if run.error is not None:
        rec["error"] = run.error
    elif rec["v2v_ms"] is None:
        rec["error"] = "no audible reply after the end of speech" + (
            f" (server errors: {'; '.join(sent_pcm_errors)})" if sent_pcm_errors else ""
        )
    if sent_pcm_errors:
        rec["server_errors"] = sent_pcm_errors
    return rec


def finish_client_spans(run: ClientRun, rec: dict[str, Any]) -> None:
    """Close the run's ``client.turn`` spans now that v2v is known.

    The span of the answered turn (the record's trace id) gets the two instants v2v is
    measured between, on the client's monotonic clock: speech end = sample 0 time plus
    the reference end of speech, first audible = sample 0 time plus the first audible
    sample.  Other contexts the server used (earlier turns of the recording) are closed
    bare; a context no turn ever used (the one sent after the last turn) is left
    unended, which the SDK never exports, so it leaves no empty trace behind."""
    used = {
        str(r.event.get("traceparent", "")).split("-")[1]
        for r in run.events
        if r.event is not None and r.event.get("traceparent")
    }
    for span in run.turn_spans:
        if span.trace_id == rec.get("trace_id"):
            if rec.get("ref_end_ms") is not None:
                span.speech_end(run.t0_ns + int(float(rec["ref_end_ms"]) * 1e6))
            if rec.get("first_audible_ms") is not None:
                span.first_audible(run.t0_ns + int(float(rec["first_audible_ms"]) * 1e6))
            span.finish(record=rec, error=rec.get("error") if not rec.get("ok") else None)
        elif span.trace_id in used:
            span.finish()


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
    from halfsec.lab.netem.path import NetPath

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
            from halfsec.lab.clients.webrtc import run_recording_webrtc

            base = url.replace("wss://", "https://").replace("ws://", "http://")
            base = base.split("/ws")[0]
            if path.mode == "namespace":
                run = await _webrtc_through(path, base, pcm, opts, net_info)
            else:
                run = await run_recording_webrtc(base, pcm, opts.client, path.net, net_info)
        else:
            async with path.tcp(url) as (relayed, relay):
                run = await run_recording(relayed, pcm, opts.client, tracer=tracer)
                net_info = path.tcp_meta(relay) or {}
        rec = make_record(item, pcm, run, opts.audible_dbfs)
        rec["transport"] = opts.transport if opts.transport == "webrtc" else "websocket"
        rec["codec"] = "opus" if opts.transport == "webrtc" else opts.client.codec
        if net_info:
            rec["net"] = net_info
        finish_client_spans(run, rec)
        sent = run.sent_audio()
        audio_s += sent.size / INTERNAL_RATE
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
        records.append(rec)
        if on_record:
            on_record(rec)
    return records, audio_s


async def _webrtc_through(
    path: NetPath, base: str, pcm: np.ndarray, opts: BenchOptions, net_info: dict[str, Any]
) -> ClientRun:
    """The Python WebRTC client behind a signaling proxy that puts ``path``'s relays on
    the media path (namespace mode: its own relays would be on loopback)."""
    from halfsec.lab.clients.webrtc import run_recording_webrtc
    from halfsec.lab.netem.rtc_path import SignalingProxy

    async with path.rtc_relays() as relays, SignalingProxy(base, relays) as proxy:
        run = await run_recording_webrtc(proxy.url, pcm, opts.client)
        net_info.update(relays.meta(path.net) or {})
    return run


async def _run_items_with(
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
        # Imported here: browser_client imports this module.
        from halfsec.lab.clients.browser import run_browser_items

        return await run_browser_items(
            url, items, opts, on_record, late_ms, transport=opts.transport, path=path
        )
    return await run_items(url, items, opts, on_record, late_ms, tracer, path)


@contextlib.asynccontextmanager
async def _loopback_server(
    opts: BenchOptions, overrides: list[str], extra: list[str]
) -> AsyncIterator[tuple[ServerProcess, NetPath]]:
    """``halfsec serve`` on a free loopback port; ``--net`` applied by loopback relays."""
    from halfsec.lab.netem.path import NetPath

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
        from halfsec.lab.bench.namespace import check_namespace_options, with_token

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
        records, audio_s = await _run_items_with(url, run_items_list, opts, on_record, late, tracer)
    else:
        groups: dict[str | None, list[CorpusItem]] = {}
        for it in items:
            groups.setdefault(it.domain, []).append(it)
        for dom, group in groups.items():
            overrides = list(opts.overrides)
            if dom is not None:
                overrides.append(f"logic.domain={dom}")
            extra = ["--token", opts.token] if opts.token else []
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
                from halfsec.lab.bench.namespace import namespace_server

                server_cm = namespace_server(opts, overrides, extra)
            else:
                server_cm = _loopback_server(opts, overrides, extra)
            async with server_cm as (proc, path):
                servers.append({"url": proc.url, "health": proc.health, "started_by_bench": True})
                status(f"running {len(group)} recording(s) against {proc.url}")
                recs, secs = await _run_items_with(
                    proc.url, group, opts, on_record, late, tracer, path
                )
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
        "codec": "opus" if opts.transport == "webrtc" else opts.client.codec,
        "net": opts.net,
        "net_mode": opts.net_mode if opts.net else None,
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


def minimal_summary(records: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """Used only when ``halfsec.lab.report.json`` is not available."""
    from halfsec.measure.stages import percentile

    v = [r["v2v_ms"] for r in records if r["ok"] and r["v2v_ms"] is not None]
    return {
        "meta": meta,
        "summary": {
            "turns": len(records),
            "ok": len(v),
            "failed": len(records) - len(v),
            "v2v_p50_ms": percentile(v, 50),
            "v2v_p90_ms": percentile(v, 90),
            "v2v_p99_ms": percentile(v, 99),
        },
        "turns": records,
    }


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)

"""``halfsec bench --client browser``: the corpus through the page in real Chromium.

The bench's part of a browser run: put the simulated network in front of the page
(``page_network``), run the page (``lab.clients.browser.run_page``), and turn what it
exported into the bench's record -- ``make_record`` itself, fed the ``ClientRun``
rebuilt on the page's clock, plus the browser's own fields -- so browser and Python runs
share one schema and one arithmetic.

Through the network lab (``--net``): over WebSocket the page is told to connect to a
relayed URL (``?server=ws://127.0.0.1:<relay>/ws``; a loopback origin, which the
server's Origin guard accepts).  Over WebRTC the page is loaded through the bench's
``SignalingProxy`` (``netem/rtc_path.py``), which rewrites the offer and the answer so
every media packet crosses relay A or B in each direction, as the Python client's do.
In namespace mode Chromium runs in the client namespace and the page is always loaded
through the proxy, which keeps it on a ``127.0.0.1`` origin: a secure context, where
``getUserMedia`` and AudioWorklets exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import numpy as np

from halfsec import INTERNAL_RATE
from halfsec.audio.io import load_audio, write_wav
from halfsec.errors import HalfsecError
from halfsec.lab.bench.corpus import CorpusItem
from halfsec.lab.bench.options import BenchOptions
from halfsec.lab.bench.records import empty_record, make_record
from halfsec.lab.bench.server_process import server_urls
from halfsec.lab.clients.browser import TRANSPORTS, BrowserOptions, run_page
from halfsec.lab.clients.browser_page import (
    PageRun,
    align,
    page_url,
    reply_schedule,
    upload_alignment,
)
from halfsec.lab.clients.chromium import BrowserError
from halfsec.lab.netem.path import NetPath
from halfsec.lab.netem.rtc_path import SignalingProxy
from halfsec.measure.audible import AUDIBLE_DBFS
from halfsec.measure.percentile import percentile
from halfsec.trace.names import MARK_AUDIO_SENT


@asynccontextmanager
async def page_network(
    server_url: str,
    transport: str,
    token: str | None,
    path: NetPath | None,
    net_info: dict[str, Any],
) -> AsyncIterator[str]:
    """Yield the URL Chromium loads for one recording, with ``path``'s relays (fresh
    ones for this recording) on the way to the server; ``net_info`` is filled with
    their counters, read when the recording is over, before the relays close."""
    ws, health = server_urls(server_url)
    if path is None or not path.active:
        yield page_url(server_url, token)
        return
    base = health.rsplit("/healthz", 1)[0]
    async with AsyncExitStack() as stack:
        relays = (
            await stack.enter_async_context(path.rtc_relays()) if transport == "webrtc" else None
        )
        relay = None
        relayed: str | None = None
        if transport == "websocket":
            relayed, relay = await stack.enter_async_context(path.tcp(ws))
        page_server = base
        if relays is not None or path.mode == "namespace":
            page_server = (await stack.enter_async_context(SignalingProxy(base, relays))).url
        try:
            yield page_url(page_server, token, relayed)
        finally:
            meta = relays.meta(path.net) if relays is not None else path.tcp_meta(relay)
            net_info.update(meta or {})


def browser_record(
    item: CorpusItem,
    original: np.ndarray,
    pr: PageRun,
    transport: str,
    lead_s: float,
    audible_dbfs: float = AUDIBLE_DBFS,
) -> dict[str, Any]:
    """The bench record (``lab.bench.RECORD_KEYS``) plus the browser's own fields."""
    rec = make_record(item, pr.captured, pr.run, audible_dbfs)
    ex = pr.export
    rec["client"] = "browser"
    rec["transport"] = transport
    rec["context_rate"] = pr.rate
    rec["captured_s"] = round(pr.captured.size / INTERNAL_RATE, 3)
    rec["output_latency_ms"] = round(float(ex.get("output_latency_ms") or 0.0), 2)
    rec["base_latency_ms"] = round(float(ex.get("base_latency_ms") or 0.0), 2)
    rec["constraints"] = ex.get("constraints")
    # The page's own live estimate, for comparison with the offline reference above.
    page_turns = [t for t in ex.get("turns") or [] if t.get("v2v_ms") is not None]
    rec["page_v2v_ms"] = round(float(page_turns[-1]["v2v_ms"]), 2) if page_turns else None
    if pr.captured.size:
        padded = np.concatenate([np.zeros(int(lead_s * INTERNAL_RATE), np.int16), original])
        lag, score = align(pr.captured, padded)
        rec["input_offset_ms"] = round(lag * 1000.0 / INTERNAL_RATE, 2)
        rec["input_match"] = round(score, 3)
    # The upload: its rate, whether it is the capture (same samples, no shift), and how
    # long each chunk waited between its last sample's capture and its send (p50).
    rec["upload_rate"] = ex.get("upload_rate")
    # How the page captured: "track" (MediaStreamTrackProcessor) or "worklet" (the
    # fallback), at what rate, and (track) how its stamps were put on the page clock.
    rec["capture_path"] = ex.get("capture_path")
    rec["capture_rate"] = (ex.get("capture") or {}).get("rate")
    clock = ex.get("capture_clock") or {}
    rec["capture_ts_shift_ms"] = clock.get("ts_shift_ms")
    rec.update(upload_alignment(pr))  # vs the capture back to back (browser_page)
    # WebRTC: NetEq's average delay per emitted sample (its own stats), beside the
    # network+buffer stage it is part of.
    rtc = ex.get("rtc_inbound") or {}
    emitted = float(rtc.get("jitterBufferEmittedCount") or 0)
    if emitted > 0:
        rec["neteq_delay_ms"] = round(1000 * float(rtc["jitterBufferDelay"]) / emitted, 2)
        target = rtc.get("jitterBufferTargetDelay")
        rec["neteq_target_ms"] = round(1000 * float(target) / emitted, 2) if target else None
    rec.update(neteq_onset(ex))
    rec.update(reply_schedule(pr))  # WebSocket: the page's reply player (browser_page)
    # Each upload's wait from its last sample's capture to its send (page clock): a
    # negative one would be a capture stamp later than the page held the samples.
    waits = [float(s) - float(c) for c, s in ex.get("uploads") or []]
    wait = percentile(waits, 50)
    rec["upload_wait_p50_ms"] = round(wait, 2) if wait is not None else None
    rec["upload_wait_min_ms"] = round(min(waits), 2) if waits else None
    return rec


def neteq_onset(export: dict[str, Any]) -> dict[str, float]:
    """WebRTC: the reply's network+buffer split where Chromium's NetEq handed its first
    packet to the track (the page's ``delivered`` probe, its synchronization source's
    own delivery time; page clock, ms): ``rtc_sent_to_track_ms`` (server send -> NetEq
    played it: the network and the jitter buffer's hold) and ``rtc_track_to_audible_ms``
    (-> first audible sample on the page's clock: WebAudio's MediaStream source)."""
    turns = [t for t in export.get("turns") or [] if t.get("delivered")]
    if not turns:
        return {}
    t, out = turns[-1], {}
    d = t["delivered"]
    # The source's own timestamp (performance timeline) is when NetEq delivered the
    # audio; the poll that saw it ran up to a few ms later.
    at = float(d["seen_ms"]) + float(d["src_timestamp"]) - float(d["time_origin_ms"])
    at -= float(d["perf_ms"])
    sent = (t.get("marks") or {}).get(MARK_AUDIO_SENT)
    if sent is not None:
        out["rtc_sent_to_track_ms"] = round(at - float(sent), 2)
    if t.get("first_audible_ms") is not None:
        out["rtc_track_to_audible_ms"] = round(float(t["first_audible_ms"]) - at, 2)
    return out


async def run_browser_recording(
    server_url: str,
    item: CorpusItem,
    transport: str = "websocket",
    options: BrowserOptions | None = None,
    path: NetPath | None = None,
) -> dict[str, Any]:
    """One recording through one fresh Chromium; never raises for a failed turn.

    ``path``: the simulated network to cross (``--net``; None: straight to the server)."""
    opt = options or BrowserOptions()
    if transport not in TRANSPORTS:
        raise BrowserError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
    try:
        pcm = load_audio(item.path, max_seconds=opt.max_input_s)
    except HalfsecError as e:
        rec = empty_record(item)
        rec["error"] = f"unreadable audio: {e}"
        return rec
    shot = opt.screenshot_dir / f"{item.stem}.png" if opt.screenshot_dir is not None else None
    net_info: dict[str, Any] = {}
    try:
        async with page_network(server_url, transport, opt.token, path, net_info) as url:
            pr = await run_page(url, pcm, transport, opt, shot)
    except (BrowserError, aiohttp.ClientError, OSError, TimeoutError) as e:
        rec = empty_record(item)
        rec["error"] = f"browser: {type(e).__name__}: {e}"
        rec["client"] = "browser"
        rec["transport"] = transport
        if net_info:
            rec["net"] = net_info
        return rec
    rec = browser_record(item, pcm, pr, transport, opt.lead_s, opt.audible_dbfs)
    if net_info:
        rec["net"] = net_info
    if opt.save_audio is not None and pr.captured.size:
        opt.save_audio.mkdir(parents=True, exist_ok=True)
        write_wav(opt.save_audio / f"{item.stem}.sent.wav", pr.captured, INTERNAL_RATE)
        write_wav(opt.save_audio / f"{item.stem}.received.wav", pr.played, pr.rate)
    return rec


async def run_browser_bench(
    server_url: str,
    corpus_items: list[CorpusItem],
    transport: str = "websocket",
    options: BrowserOptions | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    path: NetPath | None = None,
) -> list[dict[str, Any]]:
    """Every item through the page in its own Chromium; records in the bench's schema."""
    records = []
    for item in corpus_items:
        rec = await run_browser_recording(server_url, item, transport, options, path)
        records.append(rec)
        if on_record is not None:
            on_record(rec)
    return records


async def run_browser_items(
    url: str,
    items: list[CorpusItem],
    opts: BenchOptions,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    late_ms: list[float] | None = None,
    transport: str = "websocket",
    path: NetPath | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """Drop-in for ``lab.bench.run.run_items`` (``halfsec bench --client browser``): same
    arguments and result (records, seconds of audio sent).  ``late_ms`` stays empty: the
    browser paces its own microphone.  ``path``: where ``opts.net`` is applied
    (default: loopback relays)."""
    path = path or NetPath(opts.net)
    browser = BrowserOptions(
        token=opts.token,
        max_tail_s=opts.client.max_tail_s,
        audible_dbfs=opts.audible_dbfs,
        max_input_s=opts.max_input_s,
        save_audio=opts.save_audio,
    )
    records: list[dict[str, Any]] = []
    audio_s = 0.0
    for item in items:
        rec = await run_browser_recording(url, item, transport, browser, path)
        audio_s += float(rec.get("captured_s") or 0.0)
        records.append(rec)
        if on_record is not None:
            on_record(rec)
    return records, audio_s

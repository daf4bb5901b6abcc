"""The bench's browser client: real Chromium plays a recording into the page, over WebSocket
or WebRTC, and the page measures voice-to-voice on its own audio clock.

Why a browser: the Python client (``lab/client.py``) measures the protocol; users talk
through a browser, whose audio stack (getUserMedia, WebAudio scheduling, WebRTC jitter
buffer, Opus) adds its own delay.  Here the browser *is* the client: Chromium's fake
capture device plays the recording as its microphone, the page
(``server/static/app.js``) streams it, plays the reply through WebAudio and records
both, frame-exact on the AudioContext clock: what it captured (and sent) and what it
played.  This module reads both buffers back and computes the record exactly like
``lab.bench.make_record`` (it *is* ``make_record``, fed a ``ClientRun`` built from the
page's data), so browser and Python runs share one schema and one arithmetic.

Driving Chromium: the DevTools protocol over its WebSocket, with ``aiohttp`` (already a
dependency): no Playwright/Selenium, no browser download; the system Chromium
(``/usr/bin/chromium``, Debian package ``chromium``) is used.  One Chromium per recording,
because the fake microphone's file is a command-line flag; it is always killed here
(headless Chromium never exits on its own), with a fresh profile directory each time.

The fake device loops its file, so the recording is padded with enough trailing silence
that it cannot start over while the reply is awaited, and with leading silence that
covers the page's start-up.  Where the file landed in the capture is found by
cross-correlation (``input_offset_ms``) and checked (``input_match``): the reference end
of speech is computed on what the page captured, not on the file.

Through the network lab (``--net``): over WebSocket the page is told to connect to a
relayed URL (``?server=ws://127.0.0.1:<relay>/ws``; a loopback origin, which the
server's Origin guard accepts).  Over WebRTC the page is loaded through the bench's
``SignalingProxy`` (``netem/rtc_path.py``), which rewrites the offer and the answer so
every media packet crosses relay A or B in each direction, as the Python client's do.
Chromium runs with ``WebRtcHideLocalIpsWithMdns`` off, so its host candidate is an IP
address a relay can forward to rather than an unresolvable ``<uuid>.local``.  In
namespace mode Chromium runs in the client namespace and the page is always loaded
through the proxy, which keeps it on a ``127.0.0.1`` origin: a secure context, where
``getUserMedia`` and AudioWorklets exist.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
import numpy as np

from halfsec import INTERNAL_RATE
from halfsec.audio.io import load_audio, write_wav
from halfsec.audio.resample import resample
from halfsec.audio.timeline import PlaybackTimeline
from halfsec.errors import HalfsecError
from halfsec.lab.bench.corpus import CorpusItem
from halfsec.lab.bench.run import BenchOptions, empty_record, make_record, server_urls
from halfsec.lab.clients.websocket import ClientRun, Received, best_clock
from halfsec.lab.netem.path import NetPath

DEFAULT_CHROMIUM = "/usr/bin/chromium"
TRANSPORTS = ("websocket", "webrtc")


class BrowserError(HalfsecError):
    """Chromium cannot be started or driven (missing binary, DevTools failure)."""


@dataclass
class BrowserOptions:
    chromium: str = DEFAULT_CHROMIUM
    token: str | None = None
    processing: bool = False
    """getUserMedia echoCancellation/noiseSuppression/autoGainControl (off for the bench:
    the measurement is of the pipeline, not of the browser's voice processing)."""
    lead_s: float = 1.0
    """Silence before the recording in the fake-microphone file (covers page start-up)."""
    max_tail_s: float = 10.0
    no_speech_grace_s: float = 4.0
    settle_s: float = 0.4
    start_timeout_s: float = 30.0
    audible_dbfs: float = -45.0
    max_input_s: float = 120.0
    screenshot_dir: Path | None = None
    """Save ``<stem>.png`` of the page after each recording."""
    save_audio: Path | None = None
    """Save ``<stem>.sent.wav`` (captured, 16 kHz) and ``<stem>.received.wav`` (played)."""
    extra_flags: list[str] = field(default_factory=list)


def chromium_flags(user_data_dir: Path, fake_wav: Path) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--mute-audio",
        f"--user-data-dir={user_data_dir}",
        "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_wav}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        "--window-size=1100,1000",
        # Host candidates as IP addresses, not mDNS names: the lab's relays (and aiortc)
        # cannot resolve <uuid>.local.
        "--disable-features=WebRtcHideLocalIpsWithMdns",
    ]


class CDP:
    """A minimal DevTools-protocol session over one target's WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._id = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.console: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            fut = self._waiting.pop(data.get("id", -1), None)
            if fut is not None and not fut.done():
                fut.set_result(data)
            elif data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"].get("args", [])
                self.console.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in args)
                )
            elif data.get("method") == "Runtime.exceptionThrown":
                d = data["params"]["exceptionDetails"]
                self.console.append(f"exception: {d.get('exception', {}).get('description') or d}")
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(BrowserError("the DevTools connection closed"))

    async def call(self, method: str, timeout_s: float = 30.0, **params: Any) -> dict[str, Any]:
        self._id += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._id] = fut
        await self.ws.send_str(json.dumps({"id": self._id, "method": method, "params": params}))
        data = await asyncio.wait_for(fut, timeout_s)
        if "error" in data:
            raise BrowserError(f"{method}: {data['error'].get('message')}")
        result: dict[str, Any] = data.get("result", {})
        return result

    async def evaluate(self, expression: str, timeout_s: float = 30.0) -> Any:
        """Evaluate in the page (promises awaited) and return the JSON value."""
        r = await self.call(
            "Runtime.evaluate",
            timeout_s=timeout_s,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            text = d.get("exception", {}).get("description") or d.get("text")
            raise BrowserError(f"page error: {text}")
        return r.get("result", {}).get("value")

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        await self.ws.close()


class Chromium:
    """One headless Chromium with a fresh profile and a WAV as its microphone."""

    def __init__(self, fake_wav: Path, options: BrowserOptions) -> None:
        self.fake_wav = fake_wav
        self.options = options
        self.proc: asyncio.subprocess.Process | None = None
        self.profile = Path(tempfile.mkdtemp(prefix="halfsec-chromium-"))
        self.http: aiohttp.ClientSession | None = None
        self.cdp: CDP | None = None
        self._log = self.profile / "chromium.log"

    async def start(self) -> CDP:
        exe = self.options.chromium
        if shutil.which(exe) is None:
            raise BrowserError(
                f"Chromium not found at {exe}; install it (Debian/Ubuntu: "
                "`apt-get install -y chromium`) or pass its path"
            )
        args = chromium_flags(self.profile, self.fake_wav) + self.options.extra_flags
        log = self._log.open("wb")  # noqa: ASYNC230 - a local file, opened once per browser
        try:
            self.proc = await asyncio.create_subprocess_exec(
                exe,
                *args,
                "about:blank",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group: killed as a whole
            )
        finally:
            log.close()  # the child keeps its own descriptor
        port = await self._devtools_port()
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        async with self.http.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json()
        page = next((t for t in targets if t.get("type") == "page"), None)
        if page is None:
            raise BrowserError("Chromium started without a page target")
        ws = await self.http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self.cdp = CDP(ws)
        await self.cdp.call("Runtime.enable")
        await self.cdp.call("Page.enable")
        return self.cdp

    async def _devtools_port(self) -> int:
        """Chromium writes the port it picked into ``DevToolsActivePort``."""
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.options.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.returncode is not None:
                raise BrowserError(
                    f"Chromium exited with code {self.proc.returncode}: {self.log_tail()}"
                )
            with contextlib.suppress(OSError, ValueError, IndexError):
                return int(marker.read_text().splitlines()[0])
            await asyncio.sleep(0.05)
        raise BrowserError(f"Chromium did not open DevTools: {self.log_tail()}")

    def log_tail(self, n: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return self._log.read_text(errors="replace")[-n:]
        return ""

    async def stop(self) -> None:
        if self.cdp is not None:
            with contextlib.suppress(Exception):
                await self.cdp.close()
        if self.http is not None:
            await self.http.close()
        p = self.proc
        if p is not None and p.returncode is None:
            # The whole group: Chromium's renderer, GPU and audio helper processes too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(p.wait(), timeout=5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                await p.wait()
        if p is not None:
            # Helpers that outlived the main process (same group) must not linger.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(self.profile, ignore_errors=True)

    async def __aenter__(self) -> CDP:
        try:
            return await self.start()
        except BaseException:
            await self.stop()
            raise

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# -- URLs and files -----------------------------------------------------------------------
def page_url(server_url: str, token: str | None = None, ws_url: str | None = None) -> str:
    """The page's address from a server URL as the bench takes it (``ws://h:p/ws``...).
    ``ws_url``: where the page opens its WebSocket (``?server=``; default its own
    origin's ``/ws``)."""
    s = server_url if "://" in server_url else f"http://{server_url}"
    u = urlsplit(s)
    scheme = "https" if u.scheme in ("wss", "https") else "http"
    params = {"token": token} if token else {}
    if ws_url:
        params["server"] = ws_url
    return urlunsplit((scheme, u.netloc, "/", urlencode(params), ""))


def fake_mic_wav(pcm: np.ndarray, path: Path, lead_s: float, tail_s: float) -> Path:
    """The recording padded for Chromium's looping fake microphone."""
    lead = np.zeros(int(lead_s * INTERNAL_RATE), dtype=np.int16)
    tail = np.zeros(int(tail_s * INTERNAL_RATE), dtype=np.int16)
    write_wav(path, np.concatenate([lead, pcm.astype(np.int16), tail]), INTERNAL_RATE)
    return path


def align(captured: np.ndarray, original: np.ndarray) -> tuple[int, float]:
    """Where ``original`` starts in ``captured`` (samples, may be negative) and how well it
    matches there (normalised correlation, 1.0 = identical), both 16 kHz."""
    a = captured.astype(np.float64)
    b = original.astype(np.float64)
    if a.size == 0 or b.size == 0 or not np.any(b) or not np.any(a):
        return 0, 0.0
    n = 1 << int(np.ceil(np.log2(a.size + b.size)))
    corr = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)
    lag = int(np.argmax(corr))
    if lag > n // 2:
        lag -= n
    # Normalised over the overlap at that lag.
    a0, b0 = max(0, lag), max(0, -lag)
    m = min(a.size - a0, b.size - b0)
    if m <= 0:
        return lag, 0.0
    x, y = a[a0 : a0 + m], b[b0 : b0 + m]
    den = float(np.sqrt(np.dot(x, x) * np.dot(y, y)))
    return lag, float(np.dot(x, y) / den) if den > 0 else 0.0


def _pcm(b64: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype="<i2").astype(np.int16)


# -- from the page's export to a bench record ---------------------------------------------
@dataclass
class PageRun:
    """What one recording produced in the page, decoded."""

    export: dict[str, Any]
    run: ClientRun
    captured: np.ndarray
    """What the page captured and sent, resampled to 16 kHz (sample 0 = ``run.t0_ns``)."""
    played: np.ndarray
    """What the page played, at the AudioContext rate, on the same origin."""
    rate: int


def page_run(export: dict[str, Any]) -> PageRun:
    """Rebuild a ``ClientRun`` on the page's clock (AudioContext ns) from its export."""
    rate = int(export["context_rate"])
    cap = export["capture"]
    run = ClientRun()
    run.error = export.get("error")
    run.session_id = str(export.get("session_id") or "")
    run.domain = export.get("domain")
    run.output_rate = rate  # the played buffer is at the context rate
    run.traceparents = list(export.get("traceparents") or [])
    if cap.get("start_frame") is None:
        run.error = run.error or "the page captured no audio (microphone never started)"
        empty = np.zeros(0, dtype=np.int16)
        return PageRun(export, run, empty, empty, rate)
    start = int(cap["start_frame"])
    run.t0_ns = round(start * 1e9 / rate)
    captured_ctx = _pcm(cap["b64"])
    captured = resample(captured_ctx, rate, INTERNAL_RATE).astype(np.int16)
    run.sent = [captured]
    pings = [(int(a), int(b), int(c)) for a, b, c in export.get("pings") or []]
    run.clock = best_clock(pings) if pings else None
    timeline = PlaybackTimeline(rate, run.t0_ns)
    played = export["played"]
    if played.get("start_frame") is not None:
        pcm = _pcm(played["b64"])
        timeline.place(pcm, round(int(played["start_frame"]) * 1e9 / rate), 0)
    timeline.chunks.clear()
    run.timeline = timeline
    out_rate = int(export.get("output_rate") or rate)
    for c in export.get("chunks") or []:
        first = round(float(c["start_ms"]) * rate / 1000.0) - start
        n = round(int(c["samples"]) * rate / out_rate)
        t_recv = round(float(c["t_recv_ms"]) * 1e6)
        run.packets.append(
            Received(t_recv, None, int(c["turn_id"]), int(c["t_server_ns"]), first, n)
        )
    if not run.packets:
        run.packets = _webrtc_packets(export, run, timeline, rate)
    for e in export.get("events") or []:
        ev = e["event"]
        run.events.append(
            Received(
                round(float(e["t_recv_ms"]) * 1e6),
                ev,
                int(ev.get("turn_id", 0) or 0),
                int(ev.get("t_server_ns", 0) or 0),
            )
        )
    return PageRun(export, run, captured, timeline.audio(), rate)


def _webrtc_packets(
    export: dict[str, Any], run: ClientRun, timeline: PlaybackTimeline, rate: int
) -> list[Received]:
    """Where each turn's reply starts in the played WebRTC stream.

    A WebRTC track has no per-packet header; the server announces each turn's first
    packet with a ``reply.audio`` event (``turn_id``, ``t_server_ns``).  That turn's audio
    is taken to start at the first audible sample played after the event arrived (the
    packet and the event leave together; the browser's jitter buffer only delays the
    audio) and to last until the next turn's start."""
    starts: list[tuple[int, int, int, int]] = []
    for e in export.get("events") or []:
        ev = e["event"]
        if ev.get("type") != "reply.audio":
            continue
        t_recv = round(float(e["t_recv_ms"]) * 1e6)
        first = timeline.first_audible(after_sample=timeline.sample_at(t_recv))
        if first is not None:
            starts.append((first, int(ev["turn_id"]), int(ev["t_server_ns"]), t_recv))
    starts.sort()
    end = timeline.audio().size
    out = []
    for i, (first, tid, t_server, t_recv) in enumerate(starts):
        nxt = starts[i + 1][0] if i + 1 < len(starts) else end
        out.append(Received(t_recv, None, tid, t_server, first, max(1, nxt - first)))
    return out


def browser_record(
    item: CorpusItem,
    original: np.ndarray,
    pr: PageRun,
    transport: str,
    lead_s: float,
    audible_dbfs: float = -45.0,
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
    return rec


# -- running recordings -------------------------------------------------------------------
async def _wait_for_page(cdp: CDP, url: str, timeout_s: float) -> None:
    await cdp.call("Page.navigate", url=url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(BrowserError):
            if await cdp.evaluate("!!(window.halfsec && window.halfsec.ready)", 5):
                return
        await asyncio.sleep(0.1)
    raise BrowserError(
        f"the page at {url} did not load (is it mounted on the server?); console: "
        f"{cdp.console[-5:]}"
    )


async def _converse(
    cdp: CDP, url: str, transport: str, speech_s: float, opt: BrowserOptions
) -> dict[str, Any]:
    """Load the page, start it, wait like the Python client does, return its export."""
    await _wait_for_page(cdp, url, opt.start_timeout_s)
    on = "true" if opt.processing else "false"
    start = (
        f"window.halfsec.start({{transport: {json.dumps(transport)}, echoCancellation: {on}, "
        f"noiseSuppression: {on}, autoGainControl: {on}}}).then(() => true)"
    )
    try:
        await cdp.evaluate(start, opt.start_timeout_s)
    except BrowserError as e:
        raise BrowserError(f"{e}; console: {cdp.console[-5:]}") from e
    t_end: float | None = None
    error: str | None = None
    while True:
        await asyncio.sleep(0.1)
        st = await cdp.evaluate("window.halfsec.status()")
        if st.get("error"):
            error = str(st["error"])
            break
        if not st.get("running"):
            error = "the page stopped (connection closed)"
            break
        if t_end is None:
            # The file's speech is over once this much audio was captured (the capture
            # started after the fake device, so this errs on the late side).
            if float(st["captured_s"]) >= speech_s:
                t_end = time.monotonic()
            continue
        elapsed = time.monotonic() - t_end
        last = st.get("last_audible_ms")
        quiet = last is None or float(st["now_ms"]) - float(last) > opt.settle_s * 1000
        playing = float(st.get("playing_for_s") or 0) > 0 or not quiet
        if not st["started"] and elapsed >= opt.no_speech_grace_s:
            error = (
                "server never answered: no speech detected and no reply within "
                f"{opt.no_speech_grace_s:.0f} s after the recording ended"
            )
            break
        if elapsed > opt.max_tail_s:
            if st["pending"]:
                error = (
                    "server never answered: the reply was not finished "
                    f"{opt.max_tail_s:.0f} s after the recording ended"
                )
            break
        if st["started"] and elapsed >= opt.settle_s and not st["pending"] and not playing:
            break
    with contextlib.suppress(BrowserError, TimeoutError):
        await cdp.evaluate("window.halfsec.stop().then(() => true)", 10)
    export: dict[str, Any] = await cdp.evaluate("window.halfsec.export()", 60)
    if error and not export.get("error"):
        export["error"] = error
    return export


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
    from halfsec.lab.netem.rtc_path import SignalingProxy

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
    speech_s = opt.lead_s + pcm.size / INTERNAL_RATE
    with tempfile.TemporaryDirectory(prefix="halfsec-browser-") as tmp:
        # Trailing silence outlasts the whole wait, so the looping file never repeats
        # the speech into the conversation; the last 0.5 s is the loop's seam.
        wav = fake_mic_wav(pcm, Path(tmp) / "mic.wav", opt.lead_s, opt.max_tail_s + 10.0)
        browser = Chromium(wav, opt)
        net_info: dict[str, Any] = {}
        try:
            async with (
                page_network(server_url, transport, opt.token, path, net_info) as url,
                browser as cdp,
            ):
                export = await _converse(cdp, url, transport, speech_s, opt)
                if opt.screenshot_dir is not None:
                    await screenshot(cdp, opt.screenshot_dir / f"{item.stem}.png")
        except (BrowserError, aiohttp.ClientError, OSError, TimeoutError) as e:
            rec = empty_record(item)
            rec["error"] = f"browser: {type(e).__name__}: {e}"
            rec["client"] = "browser"
            rec["transport"] = transport
            if net_info:
                rec["net"] = net_info
            return rec
    pr = page_run(export)
    rec = browser_record(item, pcm, pr, transport, opt.lead_s, opt.audible_dbfs)
    if net_info:
        rec["net"] = net_info
    if opt.save_audio is not None and pr.captured.size:
        opt.save_audio.mkdir(parents=True, exist_ok=True)
        write_wav(opt.save_audio / f"{item.stem}.sent.wav", pr.captured, INTERNAL_RATE)
        write_wav(opt.save_audio / f"{item.stem}.received.wav", pr.played, pr.rate)
    return rec


async def screenshot(cdp: CDP, path: Path) -> Path:
    r = await cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    _write_bytes(path, base64.b64decode(r["data"]))
    return path


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


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
    """Drop-in for ``lab.bench.run_items`` (``halfsec bench --client browser``): same
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

"""The browser client: real Chromium plays a recording into the page, over WebSocket or
WebRTC, and the page records what it captured and played on its own audio clock.

Why a browser: the Python clients (``lab.clients.websocket``, ``lab.clients.webrtc``)
measure the protocol; users talk through a browser, whose audio stack (getUserMedia,
WebAudio scheduling, WebRTC jitter buffer, Opus) adds its own delay.  Here the browser
*is* the client: Chromium's fake capture device plays the recording as its microphone
(``lab.clients.chromium``), the page (``server/static/app.js``) streams it, plays the
reply through WebAudio and records both.  ``run_page`` returns that raw, as a
``PageRun`` (``lab.clients.browser_page``); the bench turns it into a record
(``lab.bench.browser``).

The fake device loops its file, so the recording is padded with enough trailing silence
that it cannot start over while the reply is awaited, and with leading silence that
covers the page's start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from halfsec import INTERNAL_RATE
from halfsec.audio.io import write_wav
from halfsec.lab.clients.browser_page import PageRun, page_run
from halfsec.lab.clients.chromium import CDP, DEFAULT_CHROMIUM, BrowserError, Chromium, screenshot
from halfsec.measure.audible import AUDIBLE_DBFS

TRANSPORTS = ("websocket", "webrtc")


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
    extra_flags: list[str] = field(default_factory=list)
    capture: str = "auto"
    """How the page captures the microphone: "auto" (the track, MediaStreamTrackProcessor,
    where the browser has it; else an AudioWorklet) or "worklet" (the fallback, forced:
    what Firefox and Safari run; the bench compares the two)."""
    niceness: int = 0
    """``nice`` for Chromium's processes (``Chromium.niceness``; a lab knob)."""
    # What the bench does with a page run (``lab.bench.browser``): one options object
    # for the whole browser run, as ``halfsec bench --client browser`` has one.
    audible_dbfs: float = AUDIBLE_DBFS
    max_input_s: float = 120.0
    screenshot_dir: Path | None = None
    """Save ``<stem>.png`` of the page after each recording."""
    save_audio: Path | None = None
    """Save ``<stem>.sent.wav`` (captured, 16 kHz) and ``<stem>.received.wav`` (played)."""


def fake_mic_wav(pcm: np.ndarray, path: Path, lead_s: float, tail_s: float) -> Path:
    """The recording padded for Chromium's looping fake microphone."""
    lead = np.zeros(int(lead_s * INTERNAL_RATE), dtype=np.int16)
    tail = np.zeros(int(tail_s * INTERNAL_RATE), dtype=np.int16)
    write_wav(path, np.concatenate([lead, pcm.astype(np.int16), tail]), INTERNAL_RATE)
    return path


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


async def _drive_page(
    cdp: CDP, url: str, transport: str, speech_s: float, opt: BrowserOptions
) -> dict[str, Any]:
    """Load the page, start it, wait like the Python client does, return its export."""
    await _wait_for_page(cdp, url, opt.start_timeout_s)
    on = "true" if opt.processing else "false"
    start = (
        f"window.halfsec.start({{transport: {json.dumps(transport)}, echoCancellation: {on}, "
        f"noiseSuppression: {on}, autoGainControl: {on}, capture: {json.dumps(opt.capture)}}})"
        ".then(() => true)"
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


async def run_page(
    url: str,
    pcm: np.ndarray,
    transport: str = "websocket",
    options: BrowserOptions | None = None,
    screenshot_path: Path | None = None,
) -> PageRun:
    """Play ``pcm`` (16 kHz) into the page at ``url`` through one fresh Chromium, and
    return what the page exported, decoded.

    A failed *turn* (no answer, connection closed) is in ``PageRun.run.error``; a
    browser that could not be run at all raises (``BrowserError``, or the aiohttp, OS
    or time-out error that stopped it)."""
    opt = options or BrowserOptions()
    if transport not in TRANSPORTS:
        raise BrowserError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
    speech_s = opt.lead_s + pcm.size / INTERNAL_RATE
    with tempfile.TemporaryDirectory(prefix="halfsec-browser-") as tmp:
        # Trailing silence outlasts the whole wait, so the looping file never repeats
        # the speech into the conversation; the last 0.5 s is the loop's seam.
        wav = fake_mic_wav(pcm, Path(tmp) / "mic.wav", opt.lead_s, opt.max_tail_s + 10.0)
        async with Chromium(
            wav, opt.chromium, opt.extra_flags, opt.start_timeout_s, opt.niceness
        ) as cdp:
            export = await _drive_page(cdp, url, transport, speech_s, opt)
            if screenshot_path is not None:
                await screenshot(cdp, screenshot_path)
    return page_run(export)

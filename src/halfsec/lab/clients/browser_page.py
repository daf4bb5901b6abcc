"""The page's side of a browser run: its address, and what it exported, as a ``ClientRun``.

The page (``server/static/app.js``) records, frame-exact on its AudioContext clock,
what it captured (and sent) and what it played, plus every server event with the moment
it read it.  ``page_run`` rebuilds from that export the same ``ClientRun`` the Python
clients fill live, so the bench measures a browser run with the same function as any
other (``lab.bench.records.make_record``).  ``align`` finds where the recording landed
in the capture: the reference end of speech is computed on what the page captured, not
on the file.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np

from halfsec import INTERNAL_RATE
from halfsec.audio.resample import resample
from halfsec.audio.timeline import PlaybackTimeline
from halfsec.lab.clients.client_run import ClientRun, Received
from halfsec.lab.clients.clock_sync import best_clock
from halfsec.measure.audible import first_audible_sample


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
    uploaded: np.ndarray | None = None
    """What the page sent over the WebSocket when it resampled the capture itself (16
    kHz, sample 0 = ``run.t0_ns``); None when the capture went up as is, or over WebRTC."""


def capture_rate(export: dict[str, Any]) -> int:
    """The rate of the page's capture: the microphone track's on the track path
    (``capture_path`` "track", MediaStreamTrackProcessor), the context's on the worklet
    path (and in exports from pages before it)."""
    return int((export.get("capture") or {}).get("rate") or export["context_rate"])


def origin_frame(export: dict[str, Any]) -> float | None:
    """Sample 0 of the run (the capture's first sample) in context frames: where
    ``played``, laid out in context frames, starts.  Not whole on the track path, whose
    samples are stamped at the track's rate."""
    start = (export.get("capture") or {}).get("start_frame")
    if start is None:
        return None
    return float(start) * int(export["context_rate"]) / capture_rate(export)


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
    origin = origin_frame(export)
    if origin is None:
        run.error = run.error or "the page captured no audio (microphone never started)"
        empty = np.zeros(0, dtype=np.int16)
        return PageRun(export, run, empty, empty, rate)
    run.t0_ns = round(origin * 1e9 / rate)
    captured_cap = _pcm(cap["b64"])
    captured = resample(captured_cap, capture_rate(export), INTERNAL_RATE).astype(np.int16)
    run.sent = [captured]
    pings = [(int(a), int(b), int(c)) for a, b, c in export.get("pings") or []]
    run.clock = best_clock(pings) if pings else None
    timeline = PlaybackTimeline(rate, run.t0_ns)
    played = export["played"]
    if played.get("start_frame") is not None:
        # The tap's first frame may begin before the capture's (the two recorders cut
        # frames at their own phase): what it played before sample 0 is dropped, not moved
        # to sample 0 (``place`` clamps), which put every played sample up to 20 ms late.
        p0 = int(played["start_frame"])
        skip = max(0, round(origin - p0))
        pcm = _pcm(played["b64"])[skip:]
        timeline.place(pcm, round((p0 + skip) * 1e9 / rate), 0)
    timeline.chunks.clear()
    run.timeline = timeline
    out_rate = int(export.get("output_rate") or rate)
    for c in export.get("chunks") or []:
        first = round(float(c["start_ms"]) * rate / 1000.0 - origin)
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
    up = export.get("upload_b64")
    uploaded = _pcm(up) if up else None
    return PageRun(export, run, captured, timeline.audio(), rate, uploaded)


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
        first = first_audible_sample(timeline.played, start=timeline.sample_at(t_recv))
        if first is not None:
            starts.append((first, int(ev["turn_id"]), int(ev["t_server_ns"]), t_recv))
    starts.sort()
    end = timeline.audio().size
    out = []
    for i, (first, tid, t_server, t_recv) in enumerate(starts):
        nxt = starts[i + 1][0] if i + 1 < len(starts) else end
        out.append(Received(t_recv, None, tid, t_server, first, max(1, nxt - first)))
    return out


def reply_schedule(pr: PageRun) -> dict[str, Any]:
    """How the page's WebSocket reply player started the last reply (page clock, ms),
    and how often the page redrew (``page_log_lines`` written in ``page_draws`` batches:
    the main thread does no layout per event, see app.js ``drawSoon``).

    ``reply_recv_ms``: the reply's first chunk arrived at the page, after the server sent
    it (``t_server_ns``, on the page clock); ``reply_lead_ms``: how far ahead of the
    context's ``currentTime`` it was scheduled; ``reply_recv_to_start_ms``: arrival ->
    its scheduled first sample (negative: ``currentTime`` lags the page clock, which is
    the render position); ``reply_start_slip_ms``: where the chunk actually played in
    what the page played minus where it was scheduled (cross-correlation; 0 = on time,
    > 0 = started late, so it overlapped what followed); ``reply_underruns``: every reply's
    gaps where its audio ran out before its next chunk (the page counts them).  Empty
    for WebRTC (the track plays through NetEq, not this player)."""
    ex = pr.export
    ui = ex.get("ui") or {}
    drawn = {"page_log_lines": ui["lines"], "page_draws": ui["draws"]} if ui else {}
    chunks = [c for c in ex.get("chunks") or [] if c.get("ctx_ms") is not None]
    if not chunks:
        return drawn
    tid = max(int(c["turn_id"]) for c in chunks)
    first = next(c for c in chunks if int(c["turn_id"]) == tid)
    out: dict[str, Any] = drawn | {
        "reply_lead_ms": round(float(first["start_ms"]) - float(first["ctx_ms"]), 2),
        "reply_recv_to_start_ms": round(float(first["start_ms"]) - float(first["t_recv_ms"]), 2),
        "reply_underruns": len(ex.get("underruns") or []),
    }
    if pr.run.clock is not None:
        sent = pr.run.clock.to_client_ns(int(first["t_server_ns"])) / 1e6
        out["reply_recv_ms"] = round(float(first["t_recv_ms"]) - sent, 2)
    pcm = next(
        (_pcm(f["b64"]) for f in ex.get("first_chunks") or [] if int(f["turn_id"]) == tid), None
    )
    origin = origin_frame(ex)  # sample 0 of `played`
    if pcm is not None and pcm.size and pr.played.size and origin is not None:
        out_rate = int(ex.get("output_rate") or pr.rate)
        want = resample(pcm.astype(np.float32), out_rate, pr.rate)
        at = round(float(first["start_ms"]) * pr.rate / 1000 - origin)
        # Only what the recording holds (a run can stop inside a long first chunk).
        want = want[: max(0, min(want.size, pr.played.size - at))]
        slack = round(0.05 * pr.rate)  # look 50 ms either side of the scheduled start
        lo = max(0, at - slack)
        seg = pr.played[lo : at + want.size + slack]
        if seg.size >= want.size and np.any(want) and np.any(seg):
            lag, score = align(seg, want)
            out["reply_start_slip_ms"] = round((lo + lag - at) * 1000 / pr.rate, 2)
            out["reply_start_match"] = round(score, 3)
    return out


def upload_alignment(pr: PageRun) -> dict[str, Any]:
    """Whether what the page sent (its own 16 kHz resampling, ``pr.uploaded``) is the
    audio it captured, unshifted: ``upload_offset_ms`` (0 = in place; a frame lost or
    doubled on the way up, or a resampler delay, moves it) and ``upload_match``.

    Compared with the capture *back to back*, not as laid out on the clock: when the
    render thread falls behind on a loaded box Chromium skips the context clock ahead
    (``capture_skipped_ms``, the sum of the page's ``capture_gaps``; 8.7 ms seen in CI)
    while the worklet's input, and so the upload, stays contiguous.  The clock layout
    has zeros there, and aligning the upload with it found the part after the skip
    (+8.7 ms) although nothing was lost or shifted: the server heard the same speech."""
    ex = pr.export
    rate = int((ex.get("capture") or {}).get("rate") or pr.rate)
    skipped = sum(max(0, int(n)) for _, n in ex.get("capture_gaps") or [])
    out: dict[str, Any] = {"capture_skipped_ms": round(skipped * 1000 / rate, 2)}
    flat = ex.get("capture_flat_b64")  # the page exports it with every upload
    if pr.uploaded is None or not pr.uploaded.size or not flat:
        return out
    # The page's own back-to-back copy: removing the clock's skips from the layout is not
    # enough, a repeated quantum's overlap overwrote samples of it.
    captured = resample(_pcm(flat), rate, INTERNAL_RATE).astype(np.int16)
    lag, score = align(captured, pr.uploaded)
    out["upload_offset_ms"] = round(lag * 1000.0 / INTERNAL_RATE, 2)
    out["upload_match"] = round(score, 3)
    return out

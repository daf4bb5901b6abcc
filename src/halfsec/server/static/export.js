// What the lab reads (window.halfsec.status() and export(); src/halfsec/lab/clients/
// browser.py, browser_page.py): the run's state while it runs, and everything the page
// recorded and measured once it stops.

import { pageNow } from "./clock.js";
import { pending } from "./measure.js";
import { backToBack, base64, joined } from "./recording.js";
import { S } from "./state.js";
import { ui } from "./ui.js";

export function status() {
  if (!S) return { running: false };
  const capFrames = S.capture.chunks.reduce((n, c) => n + c[1].length, 0);
  return {
    running: S.running,
    sending: S.sending,
    error: S.error,
    transport: S.opts.transport,
    session_id: S.sessionId,
    captured_s: S.capture.rate ? capFrames / S.capture.rate : 0,
    started: S.started.size,
    pending: pending(),
    // How long the reply already scheduled still plays (WebSocket; WebRTC streams live).
    playing_for_s: S.ctx ? Math.max(0, S.play.nextTime - S.ctx.currentTime) : 0,
    last_audible_ms: lastAudibleMs(),
    now_ms: pageNow(),
  };
}

function lastAudibleMs() {
  return S.tap.lastAudibleMs;
}

function uploaded() {
  return backToBack(S.capture.sent);
}

// Track path: where the recording's place 0 is on the page clock (onTrackData), the
// median of its frames' own stamps minus their places; 0 on the worklet path, whose
// places are context frames already.
function trackOrigin() {
  const o = [...S.capture.origins].sort((a, b) => a - b);
  return o.length ? o[Math.floor(o.length / 2)] : 0;
}

function captureStart() {
  return S.capture.startFrame === null ? null : S.capture.startFrame + trackOrigin();
}

// How far the frames' own stamps lie from the origin (ms at the 10th/90th percentile):
// the page clock estimate's noise the median removed.
function originSpread() {
  const o = [...S.capture.origins].sort((a, b) => a - b);
  if (!o.length) return {};
  const at = (q) => ((o[Math.floor((o.length - 1) * q)] - trackOrigin()) * 1000) / S.capture.rate;
  return { stamp_spread_p10_ms: at(0.1), stamp_spread_p90_ms: at(0.9) };
}

export function exportRun() {
  const ctx = S.ctx;
  return {
    version: 1,
    transport: S.opts.transport,
    constraints: {
      echoCancellation: S.opts.echoCancellation,
      noiseSuppression: S.opts.noiseSuppression,
      autoGainControl: S.opts.autoGainControl,
    },
    error: S.error,
    session_id: S.sessionId,
    domain: S.domain,
    context_rate: ctx.sampleRate,
    output_rate: S.outputRate,
    base_latency_ms: (ctx.baseLatency || 0) * 1000,
    output_latency_ms: (ctx.outputLatency || 0) * 1000,
    pings: S.pings,
    traceparents: S.traceparents,
    // In samples of capture_rate on the page clock (the context's frames on the worklet path).
    capture: { ...joined(S.capture), start_frame: captureStart(), rate: S.capture.rate },
    capture_path: S.capture.path,
    capture_clock: S.capture.clock && { ...S.capture.clock, ...originSpread() },
    // [frame, frames skipped]: the context clock's skips (worklet), dropped frames (track).
    capture_gaps: S.capture.gaps.map(([at, k]) => [at + trackOrigin(), k]),
    // With an upload: the capture back to back, what the upload was resampled from (the
    // bench's upload check; on the clock a stamp can skip, or repeat a quantum, see noteGap).
    capture_flat_b64: S.capture.sent.length ? backToBack(S.capture.chunks.map((c) => c[1])) : null,
    uploads: S.capture.uploads, // [capture end ms, send ms] per upload chunk
    rtc_inbound: S.rtcStats || null, // WebRTC: the reply's inbound-rtp stats at the end
    upload_rate: S.opts.transport === "webrtc" ? null : S.uploadRate, // WebRTC: the track
    upload_b64: S.capture.sent.length ? uploaded() : null, // null: the capture went up as is
    played: joined(S.tap),
    played_gaps: S.tap.gaps,
    chunks: S.play.chunks,
    underruns: S.play.underruns,
    ui: { lines: ui.lines, draws: ui.draws }, // log lines written, redraws that wrote them
    // Each reply's first chunk as received (16-bit, output_rate): the bench finds where
    // it actually played in `played` and checks that against where it was scheduled.
    first_chunks: [...S.play.firstPcm].map(([turnId, pcm]) => ({ turn_id: turnId, b64: base64(pcm) })),
    events: S.events,
    turns: [...S.turns.values()],
  };
}

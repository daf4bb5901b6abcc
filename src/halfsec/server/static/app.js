// halfsec browser page: microphone -> server (WebSocket or WebRTC) -> reply playback, with
// the live transcript, understanding, reply and a per-turn latency waterfall.
//
// Clock: every time on this page is "page time" = milliseconds on the AudioContext clock.
// Played reply audio is recorded by an AudioWorklet that stamps each frame with its
// context frame index; captured microphone audio comes straight from the track
// (MediaStreamTrackProcessor, stamped with its capture time mapped onto the context
// clock: onTrackData) or, without it, from a second worklet.  Voice-to-voice (last voiced
// sample captured -> first audible sample played) is a difference of two times on one
// clock.  Messages and server timestamps are mapped onto that clock through
// performance.now() (monotonic) with an estimated offset (see ctxOffset, clock.js), and server
// times through an NTP-style ping/pong exchange (docs/protocol.md).
//
// `window.halfsec` exposes start/stop/status/export so `halfsec bench --client browser`
// (src/halfsec/lab/clients/browser.py) can drive the page and read what it measured.
//
// This module wires the page's modules (one concept each):
//   rules.js      frame sizes, the v2v rule's threshold/stages and mark names (/constants.js)
//   state.js      the conversation's state `S`, its turns, `$`
//   clock.js      the page clock (ctxOffset) and the server clock (ping/pong)
//   capture.js    the audio graph; capture from the track or the worklet; levels, uploads
//   player.js     the reply player, pause/resume/stop, playback.done, the playback tap
//   websocket.js  the WebSocket transport        webrtc.js  the WebRTC transport
//   events.js     the server's events and the trace context
//   measure.js    the page's own per-turn v2v and stages
//   recording.js  recorded frames: gaps, joining, base64
//   export.js     window.halfsec.status() and export(): what the lab reads
//   ui.js         status line, log, turn view, waterfall, button

import { setupAudio } from "./capture.js";
import { sampleCtxClock, syncClock } from "./clock.js";
import { exportRun, status } from "./export.js";
import { measureTurn, pending } from "./measure.js";
import { $, freshState, S, setState } from "./state.js";
import { logLine, renderLegend, setStatus, ui, updateButton } from "./ui.js";
import { openWebRTC } from "./webrtc.js";
import { openWebSocket } from "./websocket.js";

// Public API (the UI uses it too).

async function start(opts = {}) {
  if (S && S.running) await stop();
  const o = {
    transport: opts.transport || $("transport").value,
    // "worklet" forces the fallback capture (the bench compares the two; browsers without
    // MediaStreamTrackProcessor get it anyway).
    capture: opts.capture || new URLSearchParams(location.search).get("capture") || "auto",
    echoCancellation: opts.echoCancellation ?? $("ec").checked,
    noiseSuppression: opts.noiseSuppression ?? $("ns").checked,
    autoGainControl: opts.autoGainControl ?? $("agc").checked,
  };
  setState(freshState(o));
  // Show what is actually in effect (the bench starts the page without clicking).
  $("transport").value = o.transport;
  $("ec").checked = o.echoCancellation;
  $("ns").checked = o.noiseSuppression;
  $("agc").checked = o.autoGainControl;
  window.halfsec.turns = [];
  $("waterfall").replaceChildren();
  $("log").textContent = "";
  Object.assign(ui, { log: [], lines: 0, draws: 0 });
  S.running = true;
  updateButton();
  setStatus("busy", "connecting…");
  try {
    await setupAudio(o);
    sampleCtxClock();
    S.transport = o.transport === "webrtc" ? await openWebRTC() : await openWebSocket();
    await syncClock(8);
    S.sending = true; // capture and tap recordings start together with the audio sent
    const i = `${o.transport}, session ${S.sessionId || "?"}, mic ${S.capture.rate} Hz ` +
      `(${S.capture.path}), ` +
      `clock sync ±${(S.clock.rttMs / 2).toFixed(1)} ms, output latency ` +
      `${((S.ctx.outputLatency || 0) * 1000).toFixed(0)} ms`;
    $("info").textContent = i;
    setStatus("live", "listening");
  } catch (e) {
    S.error = String(e.message || e);
    setStatus("error", S.error);
    await stop();
    throw e;
  }
  return status();
}

async function stop() {
  if (!S) return;
  const wasRunning = S.running;
  S.running = false;
  S.sending = false;
  if (S.transport) {
    if (S.transport.stats) {
      try { S.rtcStats = await S.transport.stats(); } catch (e) { /* closed already */ }
    }
    try {
      if (S.transport.kind === "websocket") S.transport.sendJson({ type: "session.end" });
      S.transport.close();
    } catch (e) { /* already gone */ }
  }
  if (S.capture.reader) S.capture.reader.cancel().catch(() => {});
  if (S.stream) for (const t of S.stream.getTracks()) t.stop();
  if (S.ctx && S.ctx.state !== "closed") await S.ctx.suspend();
  if (wasRunning && !S.error) setStatus("idle", "stopped");
  updateButton();
}

window.halfsec = { ready: true, version: 1, start, stop, status, export: exportRun, turns: [] };

// Measure turns as their audio plays; keep window.halfsec.turns current for the bench.
setInterval(() => {
  if (!S || !S.ctx) return;
  sampleCtxClock();
  for (const t of S.turns.values()) measureTurn(t);
  window.halfsec.turns = [...S.turns.values()];
  if (S.running && S.sending) {
    setStatus("live", pending() ? "thinking…" : status().playing_for_s > 0 ? "speaking" : "listening");
  }
}, 200);

renderLegend();
updateButton();
$("toggle").addEventListener("click", () => {
  if (S && S.running) stop();
  else start().catch((e) => logLine(`start failed: ${e.message || e}`));
});

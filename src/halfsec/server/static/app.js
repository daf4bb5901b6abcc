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
// performance.now() (monotonic) with an estimated offset (see ctxOffset below), and server
// times through an NTP-style ping/pong exchange (docs/protocol.md).
//
// `window.halfsec` exposes start/stop/status/export so `halfsec bench --client browser`
// (src/halfsec/lab/clients/browser.py) can drive the page and read what it measured.

import { UploadResampler } from "./resampler.js";

const FRAME_MS = 20;
const UPLOAD_RATE = 16000; // the server's rate: what the page sends when it can
// The v2v rule's audible threshold, served by the server from halfsec.measure.audible
// (/constants.js): the page and the Python clients stop the clock at the same level.
const AUDIBLE_DBFS = HALFSEC_CONSTANTS.audible_dbfs;
const AUDIBLE_INT16 = 32768 * 10 ** (AUDIBLE_DBFS / 20); // the same level in sample units
const BUDGET_MS = 500;
// Timing-mark names, served by the server from halfsec.trace.names (page_span_names).
const SPAN = HALFSEC_CONSTANTS.span_names;
const STAGES = [
  // [key, label, colour variable, mark that ends the stage]
  ["endpointing_ms", "endpointing", "--s-endpointing", "turn.end"],
  ["stt_ms", "STT", "--s-stt", SPAN.stt_end],
  ["logic_ms", "logic", "--s-logic", SPAN.logic_first_clause],
  ["tts_ms", "TTS", "--s-tts", SPAN.tts_first_audio],
  ["server_send_ms", "send", "--s-send", SPAN.audio_sent],
  ["network_buffer_ms", "network+buffer", "--s-network", null],
];

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------
// State of one conversation (reset by start()).
let S = null;

function freshState(opts) {
  return {
    opts,
    ctx: null,
    stream: null,
    transport: null,
    running: false,
    sending: false,
    error: null,
    sessionId: null,
    outputRate: 16000,
    uploadRate: 16000, // set by setupAudio
    domain: null,
    clock: null, // {offsetMs (server - page), rttMs, samples}
    pings: [], // [t_send_ns, t_server_ns, t_recv_ns] on the page clock
    pendingPing: null,
    ctxSamples: [], // [perf ms, ctx ms - perf ms], the window's decreasing maxima
    meter: { peak: 0, frames: 0 },
    ctxOffset: null,
    capture: {
      startFrame: null, chunks: [], levels: [], uploads: [], sent: [], gaps: [],
      path: null, // "track" (MediaStreamTrackProcessor) or "worklet" (the fallback): setupAudio
      rate: null, // its samples' rate: the track's, or the context's (worklet)
      clock: null, // track path: how AudioData stamps were put on the page clock (onTrackData)
      reader: null,
      origins: [], // track path: each frame's stamp minus its place (onTrackData)
    },
    tap: { startFrame: null, chunks: [], lastAudibleMs: null, gaps: [] },
    play: {
      nextTime: 0, sources: new Map(), chunks: [], cancelled: new Set(), done: new Set(),
      paused: null, // turn whose reply is paused (reply.paused): {turnId, held: [[AudioBuffer, offset s]]}
      rtcGain: null, // WebRTC: the reply track's gain (0 while paused)
      ends: new Map(), // turn -> context time its scheduled audio ends (underrun check)
      underruns: [], // [turn, ms of silence] where a reply ran dry before its next chunk
      firstPcm: new Map(), // turn -> its first reply chunk as received (export: start check)
    },
    events: [],
    turns: new Map(),
    started: new Set(),
    ended: new Set(),
    finished: new Set(),
    traceparents: [],
  };
}

// ---------------------------------------------------------------------------------------
// Clocks.

// ctx.currentTime advances in bursts (one render callback at a time) and is never ahead
// of the render position, so the largest recent (ctx - perf) difference is the best
// estimate of the offset.  A 2 s window lets it follow a context that runs slightly slow.
function sampleCtxClock() {
  if (!S || !S.ctx) return;
  const perf = performance.now();
  const diff = S.ctx.currentTime * 1000 - perf;
  // The window's maximum kept as a decreasing queue (O(1) per sample; it is called for
  // every captured and played frame and every event).
  const q = S.ctxSamples;
  while (q.length && q[q.length - 1][1] <= diff) q.pop();
  q.push([perf, diff]);
  while (q[0][0] < perf - 2000) q.shift();
  S.ctxOffset = q[0][1];
}

function pageNow() {
  if (S && S.ctxOffset !== null) return performance.now() + S.ctxOffset;
  return S && S.ctx ? S.ctx.currentTime * 1000 : performance.now();
}

function serverToPage(tServerNs) {
  if (!S.clock) return null;
  return Number(tServerNs) / 1e6 - S.clock.offsetMs;
}

function newTraceparent() {
  const hex = (n) =>
    Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, "0")).join("");
  const tp = `00-${hex(16)}-${hex(8)}-01`;
  S.traceparents.push(tp);
  return tp;
}

// ---------------------------------------------------------------------------------------
// Transports: both expose sendJson(obj), sendAudio(Int16Array) and close().

async function openWebSocket() {
  const params = new URLSearchParams(location.search);
  const url = new URL(params.get("server") || "/ws", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  if (params.get("token")) url.searchParams.set("token", params.get("token"));
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error(`cannot connect to ${url.origin}${url.pathname}`));
  });
  ws.onmessage = (m) => {
    if (typeof m.data === "string") onEvent(JSON.parse(m.data));
    else onAudio(m.data);
  };
  ws.onclose = (e) => onClosed(`server closed the WebSocket (${e.code}${e.reason ? ": " + e.reason : ""})`);
  const t = {
    kind: "websocket",
    sendJson: (o) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(o)),
    sendAudio: (pcm) => ws.readyState === WebSocket.OPEN && ws.send(pcm.buffer),
    close: () => ws.close(1000),
  };
  t.sendJson({
    type: "session.start",
    protocol: 1,
    sample_rate: S.uploadRate, // 16 kHz when the page can resample, else the capture rate
    encoding: "pcm16",
    traceparent: newTraceparent(),
  });
  return t;
}

async function openWebRTC() {
  const pc = new RTCPeerConnection({ iceServers: [] }); // loopback / LAN: no STUN needed
  for (const track of S.stream.getAudioTracks()) pc.addTrack(track, S.stream);
  const dc = pc.createDataChannel("events"); // must exist before the offer
  pc.ontrack = (e) => {
    // Play the reply as soon as it arrives: NetEq's own target (~60 ms here on loopback)
    // is for unknown networks; 0 asks for the least delay that its jitter estimate allows.
    if ("jitterBufferTarget" in e.receiver) e.receiver.jitterBufferTarget = 0;
    else if ("playoutDelayHint" in e.receiver) e.receiver.playoutDelayHint = 0;
    S.rtcReceiver = e.receiver;
    const remote = e.streams[0] || new MediaStream([e.track]);
    // Chrome only pulls remote WebRTC audio into WebAudio while a media element plays it.
    const el = new Audio();
    el.muted = true;
    el.srcObject = remote;
    el.play().catch(() => {});
    S.play.rtcGain = S.ctx.createGain();
    S.ctx.createMediaStreamSource(remote).connect(S.play.rtcGain).connect(S.playBus);
    logLine("webrtc: reply track attached");
  };
  dc.onmessage = (m) => {
    if (typeof m.data === "string") onEvent(JSON.parse(m.data));
  };
  dc.onclose = () => onClosed("WebRTC data channel closed");
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "failed") onClosed("WebRTC connection failed");
  };
  await pc.setLocalDescription(await pc.createOffer());
  // Non-trickle ICE: wait for gathering (host candidates only, so this is quick).
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const done = () => pc.iceGatheringState === "complete" && resolve();
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 2000);
  });
  const params = new URLSearchParams(location.search);
  const body = { sdp: pc.localDescription.sdp, type: "offer", traceparent: newTraceparent() };
  if (params.get("token")) body.token = params.get("token");
  const r = await fetch("/webrtc/offer", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!r.ok) throw new Error(`POST /webrtc/offer: ${r.status} ${await r.text()}`);
  const answer = await r.json();
  S.sessionId = answer.session_id || null;
  await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
  await new Promise((resolve, reject) => {
    if (dc.readyState === "open") return resolve();
    dc.onopen = resolve;
    setTimeout(() => reject(new Error("WebRTC data channel did not open within 10 s")), 10000);
  });
  return {
    kind: "webrtc",
    sendJson: (o) => dc.readyState === "open" && dc.send(JSON.stringify(o)),
    sendAudio: () => {}, // the microphone track carries the audio
    // Chromium's own account of the reply's jitter buffer (NetEq), read before closing:
    // the bench sets its average delay beside the measured network+buffer stage.
    stats: async () => {
      const out = {};
      (await pc.getStats()).forEach((r) => {
        if (r.type === "inbound-rtp" && r.kind === "audio") {
          for (const k of ["jitterBufferDelay", "jitterBufferTargetDelay", "jitterBufferMinimumDelay",
            "jitterBufferEmittedCount", "totalSamplesReceived", "concealedSamples", "jitter"]) {
            if (r[k] !== undefined) out[k] = r[k];
          }
        }
      });
      return out;
    },
    close: () => {
      try { dc.send(JSON.stringify({ type: "session.end" })); } catch (e) { /* closing anyway */ }
      pc.close();
    },
  };
}

// WebRTC: when Chromium's jitter buffer (NetEq) hands the reply's first packet to the
// track, seen through the receiver's synchronization source (its rtpTimestamp reaches the
// one `reply.audio` named).  Splits network+buffer into "until NetEq played it" and "from
// the track to the audio clock" (WebAudio's MediaStream source).  Polled every ~2 ms
// only until it is seen (at most 1 s), so it costs nothing between replies.
function watchDelivery(turn, rtpTs) {
  const rx = S.rtcReceiver;
  if (!rx || !rx.getSynchronizationSources) return;
  const t0 = performance.now();
  const poll = () => {
    if (!S || !S.running || performance.now() - t0 > 1000) return;
    for (const src of rx.getSynchronizationSources()) {
      // RTP timestamps wrap at 2^32: "at or past" is a difference below half the range.
      if (((src.rtpTimestamp - rtpTs) >>> 0) < 0x80000000) {
        turn.delivered = { seen_ms: pageNow(), rtp_timestamp: src.rtpTimestamp, src_timestamp: src.timestamp,
          perf_ms: performance.now(), time_origin_ms: performance.timeOrigin };
        return;
      }
    }
    setTimeout(poll, 2);
  };
  poll();
}

// NTP-style: of n sequential pings, the one with the smallest round trip fixes the offset.
async function syncClock(n = 8) {
  for (let i = 0; i < n; i++) {
    const t0 = pageNow();
    const pong = await new Promise((resolve, reject) => {
      S.pendingPing = { id: i, resolve };
      S.transport.sendJson({ type: "ping", id: i, t_client_ns: Math.round(t0 * 1e6) });
      setTimeout(() => reject(new Error("server never answered a ping")), 5000);
    });
    const t3 = pageNow();
    S.pings.push([Math.round(t0 * 1e6), Number(pong.t_server_ns), Math.round(t3 * 1e6)]);
  }
  const [t0, t1, t3] = S.pings.reduce((a, b) => (b[2] - b[0] < a[2] - a[0] ? b : a));
  S.clock = { offsetMs: (t1 - (t0 + t3) / 2) / 1e6, rttMs: (t3 - t0) / 1e6, samples: S.pings.length };
}

// ---------------------------------------------------------------------------------------
// Audio graph.

async function setupAudio(opts) {
  const ctx = new AudioContext({ latencyHint: "interactive" });
  S.ctx = ctx;
  await ctx.audioWorklet.addModule("/static/recorder.js");
  await ctx.resume();
  S.stream = await navigator.mediaDevices.getUserMedia({
    audio: {
      channelCount: 1,
      echoCancellation: opts.echoCancellation,
      noiseSuppression: opts.noiseSuppression,
      autoGainControl: opts.autoGainControl,
    },
  });
  const frameSamples = Math.round((ctx.sampleRate * FRAME_MS) / 1000);
  const recorder = (uploadRate) =>
    new AudioWorkletNode(ctx, "halfsec-recorder", {
      numberOfInputs: 1,
      numberOfOutputs: 0, // a sink: processed without being connected to the speakers
      channelCount: 1,
      channelCountMode: "explicit",
      processorOptions: { frameSamples, uploadRate },
    });
  // (Over WebRTC the microphone track itself is sent; the capture only records.)
  const upload = opts.transport !== "webrtc";
  const track = S.stream.getAudioTracks()[0];
  const trackRate = (track.getSettings && track.getSettings().sampleRate) || 0;
  if (opts.capture !== "worklet" && typeof MediaStreamTrackProcessor === "function" && trackRate) {
    // The track path: the microphone's samples as the capture delivers them (~10 ms
    // AudioData), read on the main thread, stamped with their capture time.  Through the
    // context (MediaStreamSource -> worklet) Chromium hands each sample to the render
    // thread 12.4 ms after the track has it (measured: docs/browser.md, stop 14), in
    // render bursts of 3-4 quanta, and the upload left ~11 ms after that.
    S.capture.path = "track";
    S.capture.rate = trackRate;
    S.uploadRate = upload && trackRate >= UPLOAD_RATE ? UPLOAD_RATE : trackRate;
    captureTrack(track, upload && S.uploadRate !== trackRate);
  } else {
    // The worklet path (no MediaStreamTrackProcessor): resampled to 16 kHz in the worklet
    // (recorder.js says why) when a 20 ms frame is a whole number of samples at both
    // rates (44.1, 48, 96 kHz...); any other rate goes up as is and the server resamples.
    const whole = (r) => Number.isInteger((r * FRAME_MS) / 1000);
    const fits = ctx.sampleRate >= UPLOAD_RATE && whole(ctx.sampleRate) && whole(UPLOAD_RATE);
    S.capture.path = "worklet";
    S.capture.rate = ctx.sampleRate;
    S.uploadRate = fits ? UPLOAD_RATE : ctx.sampleRate;
    const mic = ctx.createMediaStreamSource(S.stream);
    const cap = recorder(upload && S.uploadRate === UPLOAD_RATE ? UPLOAD_RATE : 0);
    mic.connect(cap);
    cap.port.onmessage = (m) => onCaptureFrame(m.data);
  }
  // Everything the page plays goes through playBus, which the tap records as played.
  S.playBus = ctx.createGain();
  S.playBus.connect(ctx.destination);
  const tap = recorder(0);
  S.playBus.connect(tap);
  tap.port.onmessage = (m) => onTapFrame(m.data);
}

// The track path's reader: every AudioData, until the track ends (stop()).  A large queue
// (maxBufferSize, 1 s of 10 ms frames): a busy main thread must delay frames, not drop
// them (a drop would show as a capture gap).
async function captureTrack(track, resample) {
  const reader = new MediaStreamTrackProcessor({ track, maxBufferSize: 100 }).readable.getReader();
  const st = S;
  st.capture.reader = reader;
  const tr = { shift: null, next: null, buf: null, resample, rs: null, made: 0, held: [] };
  for (;;) {
    let r;
    try {
      r = await reader.read();
    } catch (e) {
      break; // cancelled by stop()
    }
    if (r.done) break;
    try {
      if (S === st) onTrackData(r.value, tr);
    } catch (e) {
      st.error = st.error || `capture: ${e.message || e}`;
      logLine(st.error);
    } finally {
      r.value.close();
    }
  }
}

// One AudioData onto the page clock.  AudioData.timestamp is on the performance timeline
// (µs; checked in Chromium 156: a frame reaches the page 0.1-0.3 ms after its stamp) but
// Chromium's fake capture device stamps a 10 ms frame with the moment it delivers it, not
// with its first sample's capture time, as if its samples were still to come.  A sample
// cannot be captured after the page holds it, so each frame's end is put no later than
// the earliest arrival seen (`shift`, the running minimum of arrival - stamped end, when
// negative: -9.9 ms with the fake device; 0 with a device whose stamps already are
// capture times, which are then kept).  The frame's own stamp on the page clock (through
// ctxOffset, like every page time) stamps its levels and its upload.  Its place in the
// recording is its place in the track (`ti`, samples since the first frame, from the
// stamps' own steps: back to back unless a stamp jumps by more than TRACK_JUMP_MS, a
// dropped frame, which noteGap records as a capture gap); the recording's origin on the
// page clock is the median of the frames' stamps minus their places (exportRun): the
// ctxOffset estimate moves by 1-2 ms from frame to frame under load, which must neither
// cut the recording into pieces nor move it by one frame's luck.
const TRACK_JUMP_MS = 5;
function onTrackData(a, tr) {
  const perf = performance.now();
  sampleCtxClock();
  const rate = a.sampleRate;
  const n = a.numberOfFrames;
  if (rate !== S.capture.rate) throw new Error(`the microphone's rate changed (${S.capture.rate} -> ${rate} Hz)`);
  const ts = a.timestamp / 1000;
  const endTs = ts + (n * 1000) / rate;
  const late = perf - endTs;
  tr.shift = tr.shift === null ? late : Math.min(tr.shift, late);
  // A stamp more than a second ahead of or behind arrival is on another clock: arrival
  // (de-jittered by the running minimum) is then all there is.
  const shift = tr.shift < 0 || tr.shift > 1000 ? tr.shift : 0;
  const start = Math.round(((endTs + shift + S.ctxOffset) * rate) / 1000) - n;
  let ti = 0;
  if (tr.next !== null) {
    const jump = ts - tr.next[0];
    ti = tr.next[1] + (Math.abs(jump) > TRACK_JUMP_MS ? Math.round((jump * rate) / 1000) : 0);
  }
  tr.next = [endTs, ti + n];
  S.capture.clock = { ts_shift_ms: shift, arrival_minus_end_min_ms: tr.shift };
  // Mono: the channels' mean (WebAudio's down-mix), as the worklet path gets it.
  const ch = a.numberOfChannels;
  if (!tr.buf || tr.buf.length < n) tr.buf = new Float32Array(n);
  const x = tr.buf.subarray(0, n);
  a.copyTo(x, { planeIndex: 0, format: "f32-planar" });
  if (ch > 1) {
    const y = new Float32Array(n);
    for (let c = 1; c < ch; c++) {
      a.copyTo(y, { planeIndex: c, format: "f32-planar" });
      for (let i = 0; i < n; i++) x[i] += y[i];
    }
    for (let i = 0; i < n; i++) x[i] /= ch;
  }
  const pcm = new Int16Array(n);
  for (let i = 0; i < n; i++) {
    const s = Math.max(-1, Math.min(1, x[i]));
    pcm[i] = s < 0 ? s * 32768 : s * 32767;
  }
  let upload = null;
  let from = 0;
  if (tr.resample && S.sending && !tr.rs) {
    // The upload's filter starts with the first frame sent, and the recording with it:
    // the upload's sample 0 is the capture's.  Both start `from` samples into that frame,
    // so that the 10 ms steps of the upload (the server's hops) end K + 10 input samples
    // (~2 ms) before a frame's end: a hop's last output needs K samples past it, and with
    // steps ending where frames end every hop waited for the next frame (+10 ms on the
    // server's decision, browser_gap's `lag`, stop 14).
    tr.rs = new UploadResampler(rate, UPLOAD_RATE);
    const step = rate / 100; // samples of input per 10 ms
    from = Math.max(0, Math.round(n - tr.rs.K - 10) % Math.round(step));
  }
  if (tr.rs) {
    // What the filter can make now leaves now (its last ~1.8 ms waits for the next frame).
    const out = new Int16Array(tr.rs.maxOut(n));
    const made = out.subarray(0, tr.rs.push(x, from, n, out, 0));
    // The server cuts 20 ms frames from the upload's sample 0 and decides nothing on
    // part of one: what completes a frame leaves now, with what waited for it; the rest
    // waits (an empty upload: nothing sent).  Half the messages of one per 10 ms frame,
    // at no cost in time (the network service's and the server's CPU per message).
    const whole = (UPLOAD_RATE * FRAME_MS) / 1000;
    const before = tr.made;
    tr.made += made.length;
    tr.held.push(made.slice());
    if (Math.floor(tr.made / whole) > Math.floor(before / whole)) {
      upload = new Int16Array(tr.held.reduce((k, h) => k + h.length, 0));
      let at = 0;
      for (const h of tr.held) { upload.set(h, at); at += h.length; }
      tr.held = [];
    } else {
      upload = new Int16Array(0);
    }
  }
  if (from) onCaptureFrame({ startFrame: start + from, pcm: pcm.slice(from), upload, ti: ti + from });
  else onCaptureFrame({ startFrame: start, pcm, upload, ti });
}

// A captured frame: `startFrame` is its first sample's time on the page clock, in samples
// of the capture's rate (the worklet's context frame); `ti`, on the track path, its
// place in the track (onTrackData).
function onCaptureFrame({ startFrame, pcm, upload, ti }) {
  sampleCtxClock();
  // The level meter is redrawn ~10 times a second, not per frame (20 ms on the worklet
  // path, 10 ms on the track's): each redraw is a style/layout/paint pass, CPU the server
  // shares when page and server share a machine.
  for (let i = 0; i < pcm.length; i++) S.meter.peak = Math.max(S.meter.peak, Math.abs(pcm[i]));
  S.meter.frames += pcm.length;
  if (S.meter.frames >= S.capture.rate / 10) {
    $("level").style.width = `${Math.min(100, (S.meter.peak / 32768) * 140)}%`;
    S.meter.peak = 0;
    S.meter.frames = 0;
  }
  if (!S.sending) return;
  // (A track path's upload can be empty: the filter's first K samples, or what waits for
  // the rest of its 20 ms frame.)
  if (!upload) S.transport.sendAudio(pcm);
  else if (upload.length) S.transport.sendAudio(upload);
  const c = S.capture;
  const rate = c.rate;
  const at = ti === undefined ? startFrame : ti; // its place in the recording
  if (c.startFrame === null) c.startFrame = at;
  noteGap(c, at);
  c.chunks.push([at, pcm]);
  if (ti !== undefined) c.origins.push(startFrame - ti);
  // Upload stamps: when the chunk's last sample was captured and when it was sent, both
  // on the page clock (the bench compares them with the server's turn.end position).
  if (!upload || upload.length) c.uploads.push([((startFrame + pcm.length) / rate) * 1000, pageNow()]);
  if (upload) c.sent.push(upload); // exported: what went up, when it is not the capture
  // 10 ms levels for the page's own end-of-speech estimate (the bench recomputes it
  // offline with the reference VAD).
  const hop = Math.round(rate / 100);
  for (let off = 0; off + hop <= pcm.length; off += hop) {
    let e = 0;
    for (let i = off; i < off + hop; i++) e += pcm[i] * pcm[i];
    const db = 10 * Math.log10(Math.max(e / hop, 1e-12) / 32768 ** 2);
    c.levels.push([((startFrame + off + hop) / rate) * 1000, db]);
  }
}

function onTapFrame({ startFrame, pcm }) {
  // The tap's frames arrive just after the render burst that made them: the samples of
  // the context clock closest to its edge (the capture worklet's did this before the
  // track path, whose frames arrive at any point of a burst).
  sampleCtxClock();
  if (!S.sending) return;
  if (S.tap.startFrame === null) S.tap.startFrame = startFrame;
  noteGap(S.tap, startFrame);
  S.tap.chunks.push([startFrame, pcm]);
  // The last audible sample so far, kept as frames arrive: status() is polled while the
  // user talks, and rescanning the whole recording each time took CPU from the server
  // on a shared machine.
  for (let i = pcm.length - 1; i >= 0; i--) {
    if (Math.abs(pcm[i]) > AUDIBLE_INT16) {
      S.tap.lastAudibleMs = ((startFrame + i) / S.ctx.sampleRate) * 1000;
      break;
    }
  }
}

// Reply audio over WebSocket: HSA1 header + PCM16 at the output rate, played back to back.
function onAudio(buf) {
  const v = new DataView(buf);
  const magic = String.fromCharCode(v.getUint8(0), v.getUint8(1), v.getUint8(2), v.getUint8(3));
  if (magic !== "HSA1") return logLine(`bad audio packet (${magic})`);
  const turnId = v.getUint32(4, true);
  const tServerNs = Number(v.getBigUint64(8, true));
  if (S.play.cancelled.has(turnId)) return;
  const pcm = new Int16Array(buf.slice(16));
  if (!pcm.length) return;
  if (!S.play.firstPcm.has(turnId)) S.play.firstPcm.set(turnId, pcm);
  const ab = S.ctx.createBuffer(1, pcm.length, S.outputRate);
  const f = ab.getChannelData(0);
  for (let i = 0; i < pcm.length; i++) f[i] = pcm[i] / 32768;
  if (S.play.paused && S.play.paused.turnId === turnId) S.play.paused.held.push([ab, 0]);
  else schedule(turnId, ab, 0, tServerNs);
  const turn = getTurn(turnId);
  if (turn.marks[SPAN.audio_sent] === undefined) turn.marks[SPAN.audio_sent] = serverToPage(tServerNs);
}

// Play `ab` from `offset` s on, back to back with what is scheduled.  Gap-free: each
// chunk starts where the previous one ends.  A reply's first chunk (or one after an
// underrun) starts one render quantum (128 frames, 2.9 ms at 44.1 kHz) past currentTime:
// currentTime is the end of the last quantum rendered, advanced quantum by quantum, so
// the render thread is at most inside the next one, and the next after that is still to
// come.  A start in the past would play late and overlap the next chunk; the bench checks
// where each reply's first chunk really played (reply_start_slip_ms, browser_page.py).
// (This was max(baseLatency, 5 ms), 10 ms here: a render *buffer*, ~7 ms of every reply.)
const RENDER_QUANTUM = 128;
function schedule(turnId, ab, offset, tServerNs) {
  const ctx = S.ctx;
  const src = ctx.createBufferSource();
  src.buffer = ab;
  src.connect(S.playBus);
  const lead = RENDER_QUANTUM / ctx.sampleRate;
  const now = ctx.currentTime;
  const at = Math.max(S.play.nextTime, now + lead);
  // An underrun: this reply's audio so far ended before this chunk could follow it.
  const end = S.play.ends.get(turnId);
  if (end !== undefined && at > end + 1e-6) S.play.underruns.push([turnId, (at - end) * 1000]);
  src.start(at, offset);
  src.at = at - offset; // context time of the buffer's first sample
  S.play.nextTime = at + ab.duration - offset;
  S.play.ends.set(turnId, S.play.nextTime);
  if (!S.play.sources.has(turnId)) S.play.sources.set(turnId, new Set());
  S.play.sources.get(turnId).add(src);
  src.onended = () => {
    S.play.sources.get(turnId)?.delete(src);
    sendPlaybackDone(turnId);
  };
  S.play.chunks.push({
    turn_id: turnId,
    ctx_ms: now * 1000, // currentTime when it was scheduled: start_ms - ctx_ms is the lead
    start_ms: at * 1000,
    samples: Math.round((ab.duration - offset) * ab.sampleRate),
    t_server_ns: tServerNs,
    t_recv_ms: pageNow(),
  });
}

// `reply.paused`: speech began during the reply, which may be a backchannel ("uh-huh"),
// so its audio stops now but is kept: what has not played yet, from where it stopped.
// Over WebRTC the server stops sending; the page mutes what NetEq still holds.
function pauseTurnAudio(turnId) {
  if (S.play.rtcGain) S.play.rtcGain.gain.value = 0;
  if (S.play.paused || S.play.cancelled.has(turnId)) return;
  const now = S.ctx.currentTime;
  const srcs = [...(S.play.sources.get(turnId) || [])].sort((a, b) => a.at - b.at);
  const held = [];
  for (const src of srcs) {
    const offset = Math.max(0, now - src.at);
    if (offset < src.buffer.duration) held.push([src.buffer, offset]);
    src.onended = null;
    try { src.stop(); } catch (e) { /* not started */ }
  }
  S.play.sources.delete(turnId);
  S.play.ends.delete(turnId); // resuming later is the pause, not an underrun
  S.play.nextTime = 0;
  S.play.paused = { turnId, held };
}

// `reply.resumed`: it was not an interruption; play on from where it stopped.
function resumeTurnAudio(turnId) {
  if (S.play.rtcGain) S.play.rtcGain.gain.value = 1;
  const p = S.play.paused;
  if (!p || p.turnId !== turnId) return;
  S.play.paused = null;
  for (const [ab, offset] of p.held) schedule(turnId, ab, offset, 0);
  sendPlaybackDone(turnId); // a reply that had nothing left to play
}

// Over WebSocket the page plays the reply itself, so only the page knows when a reply has
// played to its end: tell the server (`playback.done`), whose barge-in decision depends on
// it.  Over WebRTC the server estimates it from its own sending.
function sendPlaybackDone(turnId) {
  if (!S || !S.transport || S.transport.kind !== "websocket") return;
  const turn = S.turns.get(turnId);
  if (!turn || turn.reply_text === null || S.play.cancelled.has(turnId)) return;
  if (S.play.sources.get(turnId)?.size || S.play.done.has(turnId)) return;
  if (S.play.paused && S.play.paused.turnId === turnId) return; // it will play on
  S.play.done.add(turnId);
  S.transport.sendJson({ type: "playback.done", turn_id: turnId });
}

function stopTurnAudio(turnId) {
  S.play.cancelled.add(turnId);
  if (S.play.paused && S.play.paused.turnId === turnId) S.play.paused = null;
  for (const src of S.play.sources.get(turnId) || []) {
    try { src.stop(); } catch (e) { /* already stopped */ }
  }
  S.play.sources.delete(turnId);
  S.play.nextTime = 0;
}

// ---------------------------------------------------------------------------------------
// Events.

function getTurn(id) {
  if (!S.turns.has(id)) {
    S.turns.set(id, {
      turn_id: id, traceparent: null, partial: "", transcript: null, intent: null, slots: {},
      reply_clauses: [], reply_text: null, interrupted: false, marks: {}, stages: null,
      ref_end_ms: null, first_audible_ms: null, v2v_ms: null,
    });
  }
  return S.turns.get(id);
}

function onEvent(ev) {
  sampleCtxClock();
  const tRecv = pageNow();
  S.events.push({ event: ev, t_recv_ms: tRecv });
  const tid = ev.turn_id || 0;
  const turn = tid ? getTurn(tid) : null;
  if (turn && ev.t_server_ns && S.clock) {
    const key = ev.type === "timing" ? ev.name : ev.type;
    if (turn.marks[key] === undefined) turn.marks[key] = serverToPage(ev.t_server_ns);
  }
  switch (ev.type) {
    case "session.started":
      S.sessionId = ev.session_id;
      S.outputRate = ev.output_sample_rate || S.outputRate;
      S.domain = ev.domain || null;
      break;
    case "pong":
      if (S.pendingPing && ev.id === S.pendingPing.id) S.pendingPing.resolve(ev);
      return; // not worth a log line
    case "vad.speech_started":
      S.started.add(tid);
      if (ev.traceparent) turn.traceparent = ev.traceparent;
      break;
    case "turn.end":
      S.ended.add(tid);
      if (ev.traceparent) turn.traceparent = ev.traceparent;
      // One trace per turn: the next turn's spans get a fresh parent.
      S.transport.sendJson({ type: "trace.context", traceparent: newTraceparent() });
      break;
    case "transcript.partial":
      turn.partial = ev.text;
      break;
    case "transcript.final":
      turn.transcript = ev.text;
      break;
    case "intent":
      turn.intent = ev.intent;
      turn.slots = ev.slots || {};
      break;
    case "reply.text":
      turn.reply_clauses.push(ev.text);
      break;
    case "reply.done":
      turn.reply_text = ev.text;
      S.finished.add(tid);
      sendPlaybackDone(tid); // a reply without audio, or whose audio already played
      break;
    case "reply.paused":
      pauseTurnAudio(tid);
      break;
    case "reply.resumed":
      resumeTurnAudio(tid);
      break;
    case "reply.audio":
      if (S.play.rtcGain) S.play.rtcGain.gain.value = 1; // a new reply after an interruption
      if (ev.rtp_timestamp !== undefined && !turn.delivered) watchDelivery(turn, ev.rtp_timestamp);
      // WebRTC: the server announces each turn's first reply packet (no HSA1 header).
      if (S.clock) turn.marks[SPAN.audio_sent] = turn.marks[SPAN.audio_sent] ?? serverToPage(ev.t_server_ns);
      break;
    case "interruption":
      if (S.play.rtcGain) S.play.rtcGain.gain.value = 0; // what NetEq still holds of it
      turn.interrupted = true;
      S.finished.add(tid);
      stopTurnAudio(tid);
      renderWaterfall();
      break;
    case "error":
      if (tid) { S.finished.add(tid); S.ended.add(tid); }
      if (ev.fatal) S.error = `${ev.code}: ${ev.message}`;
      break;
  }
  logLine(`${tRecv.toFixed(1).padStart(9)} ms  ${ev.type}${ev.name ? " " + ev.name : ""}` +
    `${tid ? " #" + tid : ""}${ev.text ? "  " + JSON.stringify(ev.text) : ""}` +
    `${ev.type === "error" ? "  " + ev.code + ": " + ev.message : ""}`);
  if (turn) renderTurn(turn);
}

function onClosed(why) {
  if (!S || !S.running) return;
  if (S.started.size > S.finished.size || !S.started.size) S.error = S.error || why;
  setStatus(S.error ? "error" : "idle", S.error || "disconnected");
  S.running = false;
  S.sending = false;
  updateButton();
}

// ---------------------------------------------------------------------------------------
// Per-turn measurement on the page (the bench recomputes the same from export()).

// End of speech: last 10 ms block before the end-of-turn decision that stands 12 dB
// above the noise floor and within 35 dB of the speech peak (the rule of the bench's
// reference, halfsec/measure/end_of_speech.py, without its neural VAD) and above -55 dBFS.
function refEndMs(turn) {
  const until = turn.marks["turn.end"];
  const lv = S.capture.levels.filter(([t]) => until === undefined || until === null || t <= until + 10);
  if (!lv.length) return null;
  const sorted = lv.map((l) => l[1]).sort((a, b) => a - b);
  const floor = sorted[Math.floor(sorted.length * 0.1)];
  const peak = sorted[Math.floor(sorted.length * 0.98)];
  const thr = Math.max(floor + 12, peak - 35, -55);
  for (let i = lv.length - 1; i >= 0; i--) if (lv[i][1] > thr) return lv[i][0];
  return null;
}

// First sample of the played audio louder than the audible threshold after `fromMs`.
function firstAudibleMs(fromMs) {
  const rate = S.ctx.sampleRate;
  const thr = AUDIBLE_INT16;
  const fromFrame = (fromMs / 1000) * rate;
  for (const [start, pcm] of S.tap.chunks) {
    if (start + pcm.length <= fromFrame) continue;
    for (let i = Math.max(0, Math.ceil(fromFrame - start)); i < pcm.length; i++) {
      if (Math.abs(pcm[i]) > thr) return ((start + i) / rate) * 1000;
    }
  }
  return null;
}

// Stages telescope exactly like halfsec.measure.stages: each point is clamped between the
// previous one and the first audible sample, so speculative work counts as zero.
function measureTurn(turn) {
  if (turn.stages || turn.interrupted || !turn.marks["turn.end"]) return;
  const ref = refEndMs(turn);
  if (ref === null) return;
  const audible = firstAudibleMs(ref);
  if (audible === null) return;
  turn.ref_end_ms = ref;
  turn.first_audible_ms = audible;
  turn.v2v_ms = audible - ref;
  const stages = {};
  let prev = ref;
  for (const [key, , , mark] of STAGES) {
    const p = mark === null ? audible : turn.marks[mark];
    const cur = p === undefined || p === null ? prev : Math.min(audible, Math.max(prev, p));
    stages[key] = cur - prev;
    prev = cur;
  }
  turn.stages = stages;
  renderWaterfall();
}

function pending() {
  for (const t of S.started) if (!S.ended.has(t)) return true;
  for (const t of S.ended) if (!S.finished.has(t)) return true;
  return false;
}

// ---------------------------------------------------------------------------------------
// Rendering.

// Written only when it changes: the 200 ms refresh below would otherwise restyle it
// five times a second for nothing.
function setStatus(kind, text) {
  const el = $("status");
  if (el.className !== `status ${kind}`) el.className = `status ${kind}`;
  if (el.textContent !== text) el.textContent = text;
}

// The log and the turn view are drawn at most every UI_MS, not per message: rewriting
// the log and reading scrollHeight forces a layout, ~0.5-1 ms per event on a loaded
// box, and a turn's dozen events arrive back to back just before its first reply audio,
// which waited behind them on the main thread.
const UI_MS = 50;
const ui = { log: [], turn: null, timer: null, lines: 0, draws: 0 };

function logLine(s) {
  ui.log.push(s);
  ui.lines++;
  drawSoon();
}

function renderTurn(turn) {
  ui.turn = turn;
  drawSoon();
}

function drawSoon() {
  if (ui.timer === null) ui.timer = setTimeout(drawUi, UI_MS);
}

function drawUi() {
  ui.timer = null;
  ui.draws++;
  if (ui.log.length) {
    const el = $("log");
    el.textContent += ui.log.join("\n") + "\n";
    ui.log = [];
    if (el.textContent.length > 60000) el.textContent = el.textContent.slice(-40000);
    el.scrollTop = el.scrollHeight;
  }
  if (ui.turn) drawTurn(ui.turn);
  ui.turn = null;
}

function drawTurn(turn) {
  const tr = $("transcript");
  tr.replaceChildren();
  if (turn.transcript !== null) tr.textContent = turn.transcript || "(nothing recognised)";
  else {
    const p = document.createElement("span");
    p.className = "partial";
    p.textContent = turn.partial || "…";
    tr.append(p);
  }
  if (turn.intent !== null || Object.keys(turn.slots).length) {
    $("intent").textContent = turn.intent || "(no intent)";
    $("slots").replaceChildren(
      ...Object.entries(turn.slots).map(([k, v]) => {
        const li = document.createElement("li");
        const b = document.createElement("b");
        b.textContent = `${k} `;
        li.append(b, String(v));
        return li;
      }),
    );
  }
  const reply = turn.reply_text || turn.reply_clauses.join(" ");
  if (reply) $("reply").textContent = reply + (turn.interrupted ? " (interrupted)" : "");
}

function renderLegend() {
  $("legend").replaceChildren(
    ...STAGES.map(([, label, colour]) => {
      const s = document.createElement("span");
      const i = document.createElement("i");
      i.style.background = `var(${colour})`;
      s.append(i, label);
      return s;
    }),
  );
}

function renderWaterfall() {
  const turns = [...S.turns.values()].filter((t) => t.stages || t.interrupted);
  const scale = Math.max(1000, ...turns.filter((t) => t.stages).map((t) => t.v2v_ms * 1.1));
  $("waterfall").replaceChildren(
    ...turns.map((t) => {
      const row = document.createElement("div");
      row.className = "turn";
      const label = document.createElement("div");
      label.className = "label";
      label.textContent = `#${t.turn_id} ${t.transcript || ""}`;
      label.title = t.transcript || "";
      const track = document.createElement("div");
      track.className = "track";
      if (!t.stages) {
        // The user kept talking: this turn's reply was cut off (barge-in), no latency.
        const note = document.createElement("div");
        note.className = "note";
        note.textContent = "interrupted — you kept talking";
        track.append(note);
        row.append(label, track, document.createElement("div"));
        return row;
      }
      let x = 0;
      for (const [key, name, colour] of STAGES) {
        const ms = t.stages[key];
        const bar = document.createElement("div");
        bar.className = "bar";
        bar.style.left = `${(x / scale) * 100}%`;
        bar.style.width = `${(ms / scale) * 100}%`;
        bar.style.background = `var(${colour})`;
        bar.title = `${name}: ${ms.toFixed(0)} ms`;
        if (ms / scale > 0.06) bar.textContent = `${ms.toFixed(0)}`;
        track.append(bar);
        x += ms;
      }
      const budget = document.createElement("div");
      budget.className = "budget";
      budget.style.left = `${(BUDGET_MS / scale) * 100}%`;
      budget.title = `${BUDGET_MS} ms budget`;
      track.append(budget);
      const total = document.createElement("div");
      total.className = "total" + (t.v2v_ms > BUDGET_MS ? " over" : "");
      total.textContent = `${t.v2v_ms.toFixed(0)} ms`;
      row.append(label, track, total);
      return row;
    }),
    axis(scale),
  );
}

// Tick labels under the bars: 0, the budget, and the scale's end.
function axis(scale) {
  const row = document.createElement("div");
  row.className = "turn axis";
  const track = document.createElement("div");
  track.className = "ticks";
  for (const ms of [0, BUDGET_MS, scale]) {
    const t = document.createElement("span");
    t.style.left = `${(ms / scale) * 100}%`;
    t.textContent = ms === BUDGET_MS ? `${ms} ms budget` : `${Math.round(ms)} ms`;
    track.append(t);
  }
  row.append(document.createElement("div"), track, document.createElement("div"));
  return row;
}

function updateButton() {
  const b = $("toggle");
  const live = S && S.running;
  b.textContent = live ? "Stop" : "Start talking";
  b.classList.toggle("stop", !!live);
  for (const id of ["transport", "ec", "ns", "agc"]) $(id).disabled = !!live;
}

// ---------------------------------------------------------------------------------------
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
  S = freshState(o);
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

function status() {
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

// A frame that does not start where the previous one ended: the context clock jumped
// ahead (Chromium does when its audio thread falls behind on a loaded box: 383 frames), or
// one quantum's currentFrame repeated (-128 then +128, seen on the tap), while the worklet's
// input stayed contiguous.  [context frame, frames skipped (< 0: overlap)], exported.
function noteGap(rec, startFrame) {
  const last = rec.chunks[rec.chunks.length - 1];
  if (last && startFrame !== last[0] + last[1].length) {
    rec.gaps.push([last[0] + last[1].length, startFrame - (last[0] + last[1].length)]);
  }
}

// Contiguous Int16 buffer from the recorded frames (zeros where nothing was recorded),
// base64 encoded for the DevTools protocol.
function joined(rec) {
  if (rec.startFrame === null || !rec.chunks.length) return { start_frame: null, b64: "" };
  const last = rec.chunks[rec.chunks.length - 1];
  const out = new Int16Array(last[0] + last[1].length - rec.startFrame);
  for (const [start, pcm] of rec.chunks) out.set(pcm, start - rec.startFrame);
  return { start_frame: rec.startFrame, b64: base64(out) };
}

// Chunks back to back (the upload's are contiguous by construction; so is the capture
// as the worklet received it, whatever its frames' context stamps say).
function backToBack(chunks) {
  const out = new Int16Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return base64(out);
}

function uploaded() {
  return backToBack(S.capture.sent);
}

function base64(pcm) {
  const bytes = new Uint8Array(pcm.buffer);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
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

function exportRun() {
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

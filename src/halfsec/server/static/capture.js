// The audio graph and the capture: the microphone read from its track
// (MediaStreamTrackProcessor, stamped onto the page clock) or, without it, through the
// recorder worklet; each frame's levels, its upload and its place in the recording.

import { pageNow, sampleCtxClock } from "./clock.js";
import { onTapFrame } from "./player.js";
import { noteGap } from "./recording.js";
import { UploadResampler } from "./resampler.js";
import { FRAME_MS, UPLOAD_RATE } from "./rules.js";
import { $, S } from "./state.js";
import { logLine } from "./ui.js";

export async function setupAudio(opts) {
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

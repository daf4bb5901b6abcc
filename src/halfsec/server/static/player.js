// The reply player and the playback tap: reply audio scheduled back to back on the
// context (WebSocket), paused/resumed/stopped with its turn, `playback.done`, the WebRTC
// reply's delivery through NetEq, and the tap that records what was played.

import { pageNow, sampleCtxClock, serverToPage } from "./clock.js";
import { noteGap } from "./recording.js";
import { AUDIBLE_INT16, SPAN } from "./rules.js";
import { getTurn, S } from "./state.js";
import { logLine } from "./ui.js";

// WebRTC: when Chromium's jitter buffer (NetEq) hands the reply's first packet to the
// track, seen through the receiver's synchronization source (its rtpTimestamp reaches the
// one `reply.audio` named).  Splits network+buffer into "until NetEq played it" and "from
// the track to the audio clock" (WebAudio's MediaStream source).  Polled every ~2 ms
// only until it is seen (at most 1 s), so it costs nothing between replies.
export function watchDelivery(turn, rtpTs) {
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

export function onTapFrame({ startFrame, pcm }) {
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
export function onAudio(buf) {
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
export function pauseTurnAudio(turnId) {
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
export function resumeTurnAudio(turnId) {
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
export function sendPlaybackDone(turnId) {
  if (!S || !S.transport || S.transport.kind !== "websocket") return;
  const turn = S.turns.get(turnId);
  if (!turn || turn.reply_text === null || S.play.cancelled.has(turnId)) return;
  if (S.play.sources.get(turnId)?.size || S.play.done.has(turnId)) return;
  if (S.play.paused && S.play.paused.turnId === turnId) return; // it will play on
  S.play.done.add(turnId);
  S.transport.sendJson({ type: "playback.done", turn_id: turnId });
}

export function stopTurnAudio(turnId) {
  S.play.cancelled.add(turnId);
  if (S.play.paused && S.play.paused.turnId === turnId) S.play.paused = null;
  for (const src of S.play.sources.get(turnId) || []) {
    try { src.stop(); } catch (e) { /* already stopped */ }
  }
  S.play.sources.delete(turnId);
  S.play.nextTime = 0;
}

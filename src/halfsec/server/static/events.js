// The server's events (docs/protocol.md): each turn's marks on the page clock, its text,
// and what they mean for the reply's playback; the transport's end; the trace context.

import { pageNow, sampleCtxClock, serverToPage } from "./clock.js";
import { pauseTurnAudio, resumeTurnAudio, sendPlaybackDone, stopTurnAudio, watchDelivery } from "./player.js";
import { SPAN } from "./rules.js";
import { getTurn, S } from "./state.js";
import { logLine, renderTurn, renderWaterfall, setStatus, updateButton } from "./ui.js";

export function newTraceparent() {
  const hex = (n) =>
    Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, "0")).join("");
  const tp = `00-${hex(16)}-${hex(8)}-01`;
  S.traceparents.push(tp);
  return tp;
}

export function onEvent(ev) {
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

export function onClosed(why) {
  if (!S || !S.running) return;
  if (S.started.size > S.finished.size || !S.started.size) S.error = S.error || why;
  setStatus(S.error ? "error" : "idle", S.error || "disconnected");
  S.running = false;
  S.sending = false;
  updateButton();
}

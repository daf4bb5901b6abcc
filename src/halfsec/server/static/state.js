// The state of one conversation (`S`, replaced by start() through setState) and its turns.
// `S` is a live binding: every module that imports it sees the conversation in progress.

export const $ = (id) => document.getElementById(id);

// State of one conversation (reset by start()).
export let S = null;

export function freshState(opts) {
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

// start(): a new conversation (importers see it through the live binding `S`).
export function setState(s) {
  S = s;
}

export function getTurn(id) {
  if (!S.turns.has(id)) {
    S.turns.set(id, {
      turn_id: id, traceparent: null, partial: "", transcript: null, intent: null, slots: {},
      reply_clauses: [], reply_text: null, interrupted: false, marks: {}, stages: null,
      ref_end_ms: null, first_audible_ms: null, v2v_ms: null,
    });
  }
  return S.turns.get(id);
}

// The page clock (the AudioContext's, in ms) read through performance.now(), and the
// server's clock mapped onto it (NTP-style ping/pong, docs/protocol.md).

import { S } from "./state.js";

// ctx.currentTime advances in bursts (one render callback at a time) and is never ahead
// of the render position, so the largest recent (ctx - perf) difference is the best
// estimate of the offset.  A 2 s window lets it follow a context that runs slightly slow.
export function sampleCtxClock() {
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

export function pageNow() {
  if (S && S.ctxOffset !== null) return performance.now() + S.ctxOffset;
  return S && S.ctx ? S.ctx.currentTime * 1000 : performance.now();
}

export function serverToPage(tServerNs) {
  if (!S.clock) return null;
  return Number(tServerNs) / 1e6 - S.clock.offsetMs;
}

// NTP-style: of n sequential pings, the one with the smallest round trip fixes the offset.
export async function syncClock(n = 8) {
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

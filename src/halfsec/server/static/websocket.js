// The WebSocket transport: JSON events and HSA1 audio both ways on one socket.
// Transports (this and webrtc.js) expose sendJson(obj), sendAudio(Int16Array) and close().

import { newTraceparent, onClosed, onEvent } from "./events.js";
import { onAudio } from "./player.js";
import { S } from "./state.js";

export async function openWebSocket() {
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

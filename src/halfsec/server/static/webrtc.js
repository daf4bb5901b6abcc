// The WebRTC transport: the microphone track up, the reply track down (into the page's
// play bus), events on a data channel; exposes the same sendJson/sendAudio/close as
// websocket.js, plus stats() (the reply's inbound-rtp, read before closing).

import { newTraceparent, onClosed, onEvent } from "./events.js";
import { S } from "./state.js";
import { logLine } from "./ui.js";

export async function openWebRTC() {
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

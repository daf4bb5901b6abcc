"""The bench client's Opus halves: a jitter-buffered reply player and a WebRTC client.

Measured exactly like the PCM WebSocket client (``lab.client``): frame ``k`` of the
recording leaves at ``t0 + (k + 1) * 20 ms``, and reply audio is placed on the same
timeline -- but here at the moment the client's jitter buffer *plays* it (a real
receiver plays from its buffer, so the buffer's delay is inside voice-to-voice, as it is
for a user).  Each played frame remembers when its packet arrived, so the lab can split
the last stage into network and jitter buffer.

WebRTC through the network lab: aiortc only offers ICE host candidates, here pinned to
127.0.0.1.  Two ``UdpRelay`` s sit on the paths: the answer's candidate is rewritten to
relay A (in front of the server) and the offer's candidate, before it is sent, to relay B
(in front of the client).  Neither peer ever learns the other's real port, so whichever
candidate pair ICE picks (including peer-reflexive ones learnt from relayed checks),
every packet crosses exactly one relay in each direction: A applies ``up`` to
client->server and ``down`` to server->client, B the same specs the other way round.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import struct
import time
from contextlib import AsyncExitStack
from fractions import Fraction
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from halfsec import FRAME_MS, INTERNAL_RATE
from halfsec.audio.timeline import PlaybackTimeline
from halfsec.clock import now_ns
from halfsec.errors import AudioInputError
from halfsec.lab.clients.websocket import (
    ClientError,
    ClientOptions,
    ClientRun,
    Received,
    _TurnState,
    best_clock,
    new_traceparent,
    stream_microphone,
)
from halfsec.wire.jitter import JitterBuffer, JitterConfig, JitterPacket
from halfsec.wire.opus import OpusDecoder, OpusEncoder
from halfsec.wire.protocol import (
    PONG,
    SESSION_STARTED,
    ProtocolError,
    parse_server_event,
    ping_message,
    session_end_message,
    trace_context_message,
)
from halfsec.wire.realtime_audio import play_when_due
from halfsec.wire.rtc import EVENTS_LABEL, intercept_rtp, restrict_ice_hosts, rtc_configuration

PLAY_RATE = 48_000
"""Reply audio is decoded at 48 kHz on the client (what a browser plays)."""
_TAG = struct.Struct("<IQ")  # RTP timestamp, arrival ns: carried with each payload
_FRAME_NS = FRAME_MS * 1_000_000
_CAND = re.compile(r"^(a=candidate:\S+ \d+ udp \d+ )(\S+) (\d+)( typ host.*)$", re.M | re.I)


class _TaggingDecoder:
    """Opus decoder that knows which packet each played frame came from (the jitter
    buffer only returns PCM); payloads arrive prefixed with (timestamp, arrival)."""

    def __init__(self, rate: int = PLAY_RATE) -> None:
        self._dec = OpusDecoder(rate, 1, FRAME_MS)
        self.frame_samples = self._dec.frame_samples
        self.ts: int | None = None
        self.arrival: int | None = None

    def decode(self, payload: bytes) -> np.ndarray:
        if len(payload) < _TAG.size:
            raise AudioInputError("untagged payload")
        self.ts, self.arrival = _TAG.unpack_from(payload)
        return self._dec.decode(payload[_TAG.size :])

    def conceal(self) -> np.ndarray:
        self.arrival = None
        return self._dec.conceal()

    def decode_fec(self, next_payload: bytes) -> np.ndarray | None:
        self.arrival = None
        return self._dec.decode_fec(next_payload[_TAG.size :])


class ReplyPlayer:
    """Reply Opus packets -> jitter buffer -> 20 ms playout onto the run's timeline.

    ``turn_of(ts)`` maps a packet's timestamp to (turn_id, t_server_ns); the WebSocket
    client knows it from each HSO1 header, the WebRTC client from ``reply.audio``."""

    def __init__(self, run: ClientRun, state: _TurnState) -> None:
        self.run = run
        self.state = state
        self.dec = _TaggingDecoder()
        self.buffer = JitterBuffer(self.dec, JitterConfig())
        self.turn_marks: list[tuple[int, int, int]] = []  # (rtp ts, turn_id, t_server_ns)
        self.marked: set[int] = set()
        self.last_audible_ns = 0
        self._task: asyncio.Task[None] | None = None
        self._ts_last: int | None = None
        self._ts_ext = 0
        self._wake = asyncio.Event()

    def _unwrap(self, ts: int) -> int:
        if self._ts_last is None:
            self._ts_ext = ts
        else:
            d = (ts - self._ts_last + (1 << 31)) % (1 << 32) - (1 << 31)
            if d > 0:
                self._ts_ext += d
            else:
                return self._ts_ext + d
        self._ts_last = ts
        return self._ts_ext

    def mark_turn(self, rtp_ts: int, turn_id: int, t_server_ns: int) -> None:
        self.turn_marks.append((rtp_ts & 0xFFFFFFFF, turn_id, t_server_ns))

    def push(self, seq: int, ts: int, payload: bytes) -> None:
        t = now_ns()
        self.buffer.push(JitterPacket(seq, ts, _TAG.pack(ts & 0xFFFFFFFF, t) + payload), t)
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._playout())

    def _tag(self, ts: int | None) -> tuple[int, int]:
        if ts is None:
            return 0, 0
        best: tuple[int, int, int] | None = None
        for mark_ts, tid, t_srv in self.turn_marks:
            d = (ts - mark_ts) & 0xFFFFFFFF
            if d < (1 << 31) and (best is None or d < best[0]):
                best = (d, tid, t_srv + d * 1_000_000_000 // PLAY_RATE)
        return (best[1], best[2]) if best is not None else (0, 0)

    async def _playout(self) -> None:
        """Play each frame when the jitter buffer says it is due (``play_when_due``, the
        server's input loop too): a grid fixed at the first packet would add its
        arbitrary phase (0-20 ms) to every reply, and the server re-anchors each reply's
        packets at its first one, so no fixed phase could be right for all of them."""
        await play_when_due(self.buffer, self._play, self._wake)

    def _play(self, pcm: np.ndarray | None, t: int) -> None:
        timeline = self.run.timeline
        if pcm is None or timeline is None:  # before t0 nothing is being measured
            self.dec.ts = None
            return
        tid, t_srv = self._tag(self.dec.ts)
        arrival = self.dec.arrival
        self.dec.ts = None
        if tid in self.state.interrupted:
            return
        start_sample = timeline.place(pcm, t, tid)
        if float(np.abs(pcm.astype(np.int32)).max(initial=0)) > 150:
            self.last_audible_ns = t
        if tid:
            rec = Received(t, None, tid, t_srv, start_sample, pcm.size)
            if arrival is not None:
                rec.buffer_ms = (t - arrival) / 1e6
            self.run.packets.append(rec)

    @property
    def playing(self) -> bool:
        return now_ns() - self.last_audible_ns < 300_000_000

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class MicTrack(MediaStreamTrack):
    """The recording as an Opus track: the client puts 16 kHz frames at their due
    times, each leaves as one pre-encoded packet (48 kHz RTP clock)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._enc = OpusEncoder(INTERNAL_RATE, fec=True, expected_loss_pct=5)
        self._k = 0

    def put(self, frame: np.ndarray) -> None:
        self.queue.put_nowait(self._enc.encode(frame))

    async def recv(self) -> av.Packet:
        data = await self.queue.get()
        if data is None or self.readyState != "live":
            raise MediaStreamError
        packet = av.Packet(data)
        packet.pts = self._k * 960
        packet.time_base = Fraction(1, 48_000)
        self._k += 1
        return packet


def rewrite_candidates(sdp: str, port: int, host: str = "127.0.0.1") -> str:
    """Point every host candidate (and the m-line's default address) at ``host:port``."""
    out = _CAND.sub(lambda m: f"{m.group(1)}{host} {port}{m.group(4)}", sdp)
    out = re.sub(r"^(m=audio )\d+", rf"\g<1>{port}", out, flags=re.M)
    out = re.sub(r"^(m=application )\d+", rf"\g<1>{port}", out, flags=re.M)
    return re.sub(r"^c=IN IP4 \S+", f"c=IN IP4 {host}", out, flags=re.M)


def _candidate_port(sdp: str) -> int:
    m = _CAND.search(sdp)
    if m is None:
        raise ClientError("the SDP has no host candidate on 127.0.0.1")
    return int(m.group(3))


async def run_recording_webrtc(
    base_url: str,
    pcm: np.ndarray,
    options: ClientOptions | None = None,
    net: str | None = None,
    net_meta: dict[str, Any] | None = None,
) -> ClientRun:
    """Like ``lab.client.run_recording`` over WebRTC (``base_url``: http://host:port).
    Never raises for server misbehaviour: ``ClientRun.error`` says what went wrong."""
    opt = options or ClientOptions()
    run = ClientRun()
    restrict_ice_hosts(["127.0.0.1"])
    pc = RTCPeerConnection(rtc_configuration())
    mic = MicTrack()
    state = _TurnState()
    player = ReplyPlayer(run, state)
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    channel = pc.createDataChannel(EVENTS_LABEL)
    opened = asyncio.Event()
    run.output_rate = PLAY_RATE
    run.player = player
    stack = AsyncExitStack()

    @channel.on("open")
    def _open() -> None:
        opened.set()

    @channel.on("message")
    def _message(message: str | bytes) -> None:
        t = now_ns()
        if not isinstance(message, str):
            return
        try:
            ev = parse_server_event(message)
        except ProtocolError as e:
            run.events.append(Received(t, {"type": "_client_error", "message": e.message}))
            return
        events.put_nowait(ev)
        _on_event(ev, t)

    def send(text: str) -> None:
        if channel.readyState == "open":
            channel.send(text)

    def _on_event(ev: dict[str, Any], t: int) -> None:
        kind, tid = ev["type"], int(ev.get("turn_id", 0) or 0)
        if kind == PONG:
            return
        run.events.append(Received(t, ev, tid, int(ev.get("t_server_ns", 0) or 0)))
        if kind == "reply.audio" and "rtp_timestamp" in ev:
            player.mark_turn(int(ev["rtp_timestamp"]), tid, int(ev["t_server_ns"]))
        elif state.apply(ev, t, run):
            tp = new_traceparent()
            run.traceparents.append(tp)
            send(trace_context_message(tp))

    @pc.on("track")
    def _track(track: MediaStreamTrack) -> None:
        for t in pc.getTransceivers():
            if t.receiver.track is track:
                intercept_rtp(t.receiver, lambda s, ts, p, pt: player.push(s, ts, p))

    try:
        async with stack:
            pc.addTrack(mic)
            await pc.setLocalDescription(await pc.createOffer())
            offer = pc.localDescription.sdp
            relay_a = relay_b = None
            spec = None
            if net:
                from halfsec.lab.netem.profile import parse_net
                from halfsec.lab.netem.udp_relay import UdpRelay

                spec = parse_net(net)
                client_port = _candidate_port(offer)
                # B's "client" is the server: its up is server->client, down the reverse.
                relay_b = await stack.enter_async_context(
                    UdpRelay(target=("127.0.0.1", client_port), up=spec, down=spec)
                )
                offer = rewrite_candidates(offer, relay_b.port)
            tp = new_traceparent()
            run.traceparents.append(tp)
            body = {"sdp": offer, "type": "offer", "traceparent": tp}
            if opt.token:
                body["token"] = opt.token
            timeout = aiohttp.ClientTimeout(total=opt.connect_timeout_s + 10)
            try:
                async with (
                    aiohttp.ClientSession(timeout=timeout) as http,
                    http.post(f"{base_url.rstrip('/')}/webrtc/offer", json=body) as r,
                ):
                    text = await r.text()
                    if r.status != 200:
                        raise ClientError(f"server refused the offer ({r.status}: {text[:300]})")
                    answer = json.loads(text)
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                raise ClientError(f"cannot reach {base_url} ({type(e).__name__}: {e})") from e
            run.session_id = str(answer.get("session_id", ""))
            asdp = str(answer["sdp"])
            if spec is not None:
                from halfsec.lab.netem.udp_relay import UdpRelay

                server_port = _candidate_port(asdp)
                relay_a = await stack.enter_async_context(
                    UdpRelay(target=("127.0.0.1", server_port), up=spec, down=spec)
                )
                asdp = rewrite_candidates(asdp, relay_a.port)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=asdp, type="answer"))
            try:
                await asyncio.wait_for(opened.wait(), opt.connect_timeout_s)
            except TimeoutError as e:
                raise ClientError("WebRTC did not connect (events channel never opened)") from e
            await _converse(run, pcm, opt, mic, player, state, events, send)
            if net_meta is not None and relay_a is not None and relay_b is not None:
                net_meta.update(
                    {
                        "arg": net,
                        "transport": "udp-relay",
                        "relay_server_side": relay_a.counters(),
                        "relay_client_side": relay_b.counters(),
                    }
                )
    except ClientError as e:
        run.error = str(e)
    finally:
        await player.close()
        mic.queue.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pc.close(), 5.0)
    return run


async def _converse(
    run: ClientRun,
    pcm: np.ndarray,
    opt: ClientOptions,
    mic: MicTrack,
    player: ReplyPlayer,
    state: _TurnState,
    events: asyncio.Queue[dict[str, Any]],
    send: Any,
) -> None:
    # session.started arrives first on the channel.
    deadline = time.monotonic() + opt.connect_timeout_s
    while True:
        try:
            ev = await asyncio.wait_for(events.get(), max(0.01, deadline - time.monotonic()))
        except TimeoutError as e:
            raise ClientError("server never sent session.started") from e
        if ev["type"] == SESSION_STARTED:
            run.domain = ev.get("domain")
            break
    exchanges: list[tuple[int, int, int]] = []
    for i in range(max(1, opt.pings)):
        t_send = now_ns()
        send(ping_message(i, t_send))
        while True:
            try:
                ev = await asyncio.wait_for(events.get(), 5.0)
            except TimeoutError as e:
                raise ClientError(f"server never answered ping {i}") from e
            if ev["type"] == PONG and ev.get("id") == i:
                exchanges.append((t_send, int(ev["t_server_ns"]), now_ns()))
                break
    run.clock = best_clock(exchanges)
    run.t0_ns = now_ns() + int(opt.lead_ms * 1e6)
    run.timeline = PlaybackTimeline(PLAY_RATE, run.t0_ns)

    async def send_frame(k: int, frame: np.ndarray) -> None:
        mic.put(frame)

    def check() -> None:
        if run.closed_by_server:
            raise ClientError(run.closed_by_server)

    await stream_microphone(run, pcm, opt, state, lambda: player.playing, send_frame, check)
    if run.closed_by_server:
        raise ClientError(run.closed_by_server)
    with contextlib.suppress(Exception):
        send(session_end_message())

"""The bench's WebRTC client: the recording as an Opus track, events on a data channel.

Measured exactly like the WebSocket client (``lab.clients.websocket``): frame ``k`` of
the recording leaves at ``t0 + (k + 1) * 20 ms`` (``lab.clients.microphone``), and reply
audio is placed on the same timeline at the moment the client's jitter buffer *plays*
it (``lab.clients.reply_player``).

WebRTC through the network lab: aiortc only offers ICE host candidates, here pinned to
127.0.0.1.  Two ``UdpRelay`` s sit on the paths: the answer's candidate is rewritten to
relay A (in front of the server) and the offer's candidate, before it is sent, to relay B
(in front of the client) (``lab.netem.sdp``).  Neither peer ever learns the other's real
port, so whichever candidate pair ICE picks (including peer-reflexive ones learnt from
relayed checks), every packet crosses exactly one relay in each direction: A applies
``up`` to client->server and ``down`` to server->client, B the same specs the other way
round.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from fractions import Fraction
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from halfsec import INTERNAL_RATE
from halfsec.audio.timeline import PlaybackTimeline
from halfsec.clock import now_ns
from halfsec.lab.clients.client_run import ClientRun, Received
from halfsec.lab.clients.clock_sync import sync_clock
from halfsec.lab.clients.errors import ClientError
from halfsec.lab.clients.microphone import stream_microphone
from halfsec.lab.clients.options import ClientOptions
from halfsec.lab.clients.reply_player import PLAY_RATE, ReplyPlayer
from halfsec.lab.clients.turn_state import TurnState
from halfsec.lab.netem.profile import parse_net
from halfsec.lab.netem.sdp import host_candidate_port, rewrite_candidates
from halfsec.lab.netem.udp_relay import UdpRelay
from halfsec.trace.context import make_traceparent
from halfsec.wire.opus import OpusEncoder
from halfsec.wire.protocol import (
    PONG,
    SESSION_STARTED,
    ProtocolError,
    parse_server_event,
    session_end_message,
    trace_context_message,
)
from halfsec.wire.rtc import EVENTS_LABEL, intercept_rtp, restrict_ice_hosts, rtc_configuration


async def post_offer(base_url: str, sdp: str, traceparent: str, opt: ClientOptions) -> Any:
    """``POST /webrtc/offer`` and the server's answer (JSON), as every WebRTC client of the
    lab sends it: the trace context rides in the body (there is no header on a data
    channel), and a refusal or an unreachable server is a ``ClientError`` that says which."""
    body = {"sdp": sdp, "type": "offer", "traceparent": traceparent}
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
            return json.loads(text)
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        raise ClientError(f"cannot reach {base_url} ({type(e).__name__}: {e})") from e


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


def _candidate_port(sdp: str) -> int:
    port = host_candidate_port(sdp)
    if port is None:
        raise ClientError("the SDP has no host candidate on 127.0.0.1")
    return port


async def run_recording_webrtc(
    base_url: str,
    pcm: np.ndarray,
    options: ClientOptions | None = None,
    net: str | None = None,
    net_meta: dict[str, Any] | None = None,
) -> ClientRun:
    """Like ``lab.clients.websocket.run_recording`` over WebRTC (``base_url``:
    http://host:port).  ``net``: put relays A and B with this profile on the media path.
    Never raises for server misbehaviour: ``ClientRun.error`` says what went wrong."""
    opt = options or ClientOptions()
    run = ClientRun()
    restrict_ice_hosts(["127.0.0.1"])
    pc = RTCPeerConnection(rtc_configuration())
    mic = MicTrack()
    state = TurnState()
    player = ReplyPlayer(run, state)
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    channel = pc.createDataChannel(EVENTS_LABEL)
    opened = asyncio.Event()
    run.output_rate = PLAY_RATE
    run.jitter = player.buffer
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
            tp = make_traceparent()
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
                spec = parse_net(net)
                client_port = _candidate_port(offer)
                # B's "client" is the server: its up is server->client, down the reverse.
                relay_b = await stack.enter_async_context(
                    UdpRelay(target=("127.0.0.1", client_port), up=spec, down=spec)
                )
                offer = rewrite_candidates(offer, relay_b.port)
            tp = make_traceparent()
            run.traceparents.append(tp)
            answer = await post_offer(base_url, offer, tp, opt)
            run.session_id = str(answer.get("session_id", ""))
            asdp = str(answer["sdp"])
            if spec is not None:
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
    state: TurnState,
    events: asyncio.Queue[dict[str, Any]],
    send: Callable[[str], None],
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

    async def send_ping(text: str) -> None:
        send(text)

    async def next_event(wait_s: float) -> dict[str, Any]:
        return await asyncio.wait_for(events.get(), wait_s)

    run.clock = await sync_clock(max(1, opt.pings), send_ping, next_event)
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

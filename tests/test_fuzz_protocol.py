"""Property-based fuzzing of ``halfsec serve``'s network surface (issue 9, item 4).

ONE real server (real models) runs for the whole module on its own event-loop thread;
every batch throws generated input at it: JSON text messages before and after
``session.start`` (arbitrary JSON, mutated valid messages, deep nesting, random text),
PCM16 frames, ``HSI1`` Opus messages (headers and payloads: real packets, mutated ones,
other durations, random bytes), SDP offers to ``/webrtc/offer`` (a real aiortc offer,
mutated), HTTP requests with random methods, paths, headers and bodies, and raw bytes
to the port.  After each case a ``ping`` barrier collects the server's answers, so each
input is held to its answer:

* every bad input gets exactly one ``error`` with the code ``docs/protocol.md`` lists
  for it (the table there is parsed: an undocumented code fails), and a good one gets
  its documented answer and no error;
* no case ends the session unless it asked to (``session.end``), none gets
  ``internal_error``, no HTTP answer is 5xx, nothing hangs (a deadline per case);

and after each batch: the server thread and loop are alive with no unhandled exception
and no error logged by halfsec, every session of the batch has ended (0 hung sessions),
and a well-formed session on the same server still gets a spoken reply.

Deterministic (``derandomize=True``) so CI sees the same cases every run.  The case
counts and durations are printed at the end of the module (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rtc_offer import real_offer

from halfsec.audio.io import load_audio
from halfsec.config import load_config
from halfsec.edge.gateway import EdgeOptions, start_edge
from halfsec.measure.audible import is_audible
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.runtime.engines import Engines
from halfsec.server.app import ServerOptions, VoiceServer, start_server
from halfsec.wire.audio_packets import OPUS_IN_HEADER_BYTES, OPUS_IN_MAGIC, decode_audio
from halfsec.wire.opus import OpusEncoder, packet_problem
from halfsec.wire.protocol import (
    Ping,
    PlaybackDone,
    ProtocolError,
    SessionEnd,
    SessionStart,
    parse_client_message,
    ping_message,
    session_start_message,
)

T = TypeVar("T")
PROTOCOL_MD = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
MAX_MESSAGE_BYTES = 64 * 1024
BARRIER_ID = 10**15
"""Barrier pings count up from here (fuzzed pings use smaller ids, or collide harmlessly:
the barrier waits for its own id)."""

EXAMPLES = {
    "text_before_start": 900,
    "text_after_start": 900,
    "pcm16_frames": 700,
    "opus_messages": 1300,
    "sdp_offers": 250,
    "http_requests": 700,
    "raw_tcp": 150,
    "edge_messages": 600,
}
"""About 5,500 cases: some 40 s on an idle 2-core machine, of which the seven
spoken-reply checks (real-time speech) take about 25; under two minutes loaded."""
CASES: dict[str, int] = {}
SECONDS: dict[str, float] = {}
OUTCOMES: dict[str, dict[str, int]] = {}
"""Per batch: how often each answer (error code, HTTP status) came back."""


def outcome(batch: str, what: str) -> None:
    counts = OUTCOMES.setdefault(batch, {})
    counts[what] = counts.get(what, 0) + 1


def documented_codes() -> set[str]:
    """The error codes in protocol.md's table (``| `code` | fatal | when |``)."""
    text = PROTOCOL_MD.read_text()
    section = text.split("### Error codes", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE))


DOCUMENTED = documented_codes()
assert {"bad_json", "bad_audio", "rate_limited", "internal_error"} <= DOCUMENTED, DOCUMENTED


def fuzz_settings(name: str) -> settings:
    return settings(
        max_examples=EXAMPLES[name],
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


async def poll(pred: Callable[[], bool], timeout_s: float) -> bool:
    """Whether ``pred`` holds within ``timeout_s`` (checked every 20 ms)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


# -- the one server -----------------------------------------------------------------------
class _Problems(logging.Handler):
    """Errors halfsec logs (a session that failed, a task that crashed)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("halfsec"):
            self.records.append(f"{record.name}: {record.getMessage()}")


@dataclass
class FuzzServer:
    """``halfsec serve`` in process, on an event loop of its own thread; cases run their
    client coroutines on that loop through ``call``."""

    engines: Engines
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    unhandled: list[str] = field(default_factory=list)
    problems: _Problems = field(default_factory=_Problems)
    server: VoiceServer | None = None
    base: str = ""
    http: aiohttp.ClientSession | None = None
    reply_pcm: np.ndarray | None = None
    thread: threading.Thread | None = None
    runner: Any = None

    def start(self, reply_pcm: np.ndarray) -> None:
        self.reply_pcm = reply_pcm
        self.loop.set_exception_handler(lambda _loop, ctx: self.unhandled.append(repr(ctx)))
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-server")
        self.thread.start()
        logging.getLogger("halfsec").addHandler(self.problems)
        self.call(self._start())

    async def _start(self) -> None:
        options = ServerOptions(
            host="127.0.0.1",
            port=0,
            max_sessions=64,
            start_timeout_s=3.0,  # the sessions of accepted offers end soon (no ICE peer)
            max_messages_per_s=1_000_000,  # rate limits have their own tests (test_hostile)
            max_audio_rate=1_000.0,
        )
        self.server, self.runner, port = await start_server(self.engines, load_config(), options)
        self.base = f"http://127.0.0.1:{port}"
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    def stop(self) -> None:
        async def _stop() -> None:
            if self.http is not None:
                await self.http.close()
            await self.runner.cleanup()

        self.call(_stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread is not None:
            self.thread.join(10)
        logging.getLogger("halfsec").removeHandler(self.problems)

    def call(self, work: Coroutine[Any, Any, T], timeout_s: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout_s)

    @property
    def ws_url(self) -> str:
        return self.base.replace("http://", "ws://") + "/ws"

    # -- after every batch -----------------------------------------------------------------
    def check_healthy(self, batch: str, drain_s: float = 5.0) -> None:
        alive = self.thread is not None and self.thread.is_alive() and self.loop.is_running()
        assert alive, f"{batch}: server loop died"
        assert not self.unhandled, f"{batch}: unhandled exceptions {self.unhandled[:3]}"
        assert not self.problems.records, f"{batch}: errors logged {self.problems.records[:3]}"
        assert self.call(self._drained(drain_s)), f"{batch}: hung sessions {list(self.sessions)}"
        heard = self.call(self._spoken_reply())
        assert heard, f"{batch}: no spoken reply after the batch"

    @property
    def sessions(self) -> dict[str, Any]:
        assert self.server is not None
        return dict(self.server.sessions)

    async def _drained(self, timeout_s: float) -> bool:
        return await poll(lambda: not self.sessions, timeout_s)

    async def _spoken_reply(self) -> bool:
        """A coffee order at real-time pace, then silence until reply audio is heard."""
        assert self.http is not None and self.reply_pcm is not None
        pcm = self.reply_pcm
        async with self.http.ws_connect(self.ws_url) as ws:
            await ws.send_str(session_start_message(16000))
            t0 = time.monotonic()
            frames = [pcm[i : i + 320] for i in range(0, pcm.size, 320)]
            silence = np.zeros(320, np.int16)
            intent = None
            for k in range(len(frames) + 750):  # the order, then up to 15 s of silence
                frame = frames[k] if k < len(frames) else silence
                await ws.send_bytes(frame.astype("<i2").tobytes())
                due = t0 + (k + 1) * 0.02
                while (left := due - time.monotonic()) > 0:
                    try:
                        msg = await ws.receive(timeout=left)
                    except TimeoutError:
                        break
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        ev = json.loads(msg.data)
                        assert ev["type"] != "error" or not ev["fatal"], ev
                        if ev["type"] == "intent":
                            intent = ev["intent"]
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        if is_audible(decode_audio(msg.data).pcm):
                            return intent == "orderDrink"
                    else:
                        return False
        return False


@pytest.fixture(scope="module")
def fuzz(engines: Engines, rows: list[dict[str, str]], speech_dir: Path) -> Iterator[FuzzServer]:
    coffee = min(
        (r for r in rows if r["intent"] == "orderDrink"), key=lambda r: float(r["duration_s"])
    )
    pcm = load_audio(speech_dir / coffee["file"])
    b = voiced_bounds(pcm)
    assert b is not None
    server = FuzzServer(engines)
    server.start(pcm[max(0, b[0] - 4800) : b[1] + 1600])
    t0 = time.monotonic()
    yield server
    total = time.monotonic() - t0
    server.stop()
    print(
        f"\nfuzz cases per batch (seconds): {', '.join(f'{k} {CASES.get(k, 0)} ({SECONDS.get(k, 0):.1f})' for k in EXAMPLES)}"
    )
    for batch, counts in OUTCOMES.items():
        print(f"  {batch}: {dict(sorted(counts.items(), key=lambda kv: -kv[1]))}")
    print(
        f"fuzz total: {sum(CASES.values())} cases in {total:.1f} s (spoken-reply checks included)"
    )


def run_batch(
    fuzz: FuzzServer,
    name: str,
    strategy: st.SearchStrategy[Any],
    case: Callable[[Any], Coroutine[Any, Any, None]],
) -> None:
    """Every example of ``strategy`` through ``case`` (on the server's loop), then the
    health checks.  A case that takes over 30 s is a hung session."""
    CASES[name] = 0
    t0 = time.monotonic()

    @fuzz_settings(name)
    @given(strategy)
    def one(x: Any) -> None:
        CASES[name] += 1
        fuzz.call(case(x), timeout_s=30.0)

    one()
    SECONDS[name] = time.monotonic() - t0
    assert CASES[name] >= EXAMPLES[name] * 0.9, (name, CASES[name])


# -- WebSocket: one connection, a barrier after each case ---------------------------------
@dataclass
class Answer:
    events: list[dict[str, Any]]
    closed: bool

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == "error"]

    @property
    def codes(self) -> list[str]:
        """Codes of the errors about the input (a turn's pipeline errors, on noise the
        VAD took for speech, carry that turn's id and are checked only as documented)."""
        return [str(e["code"]) for e in self.errors if not e.get("turn_id")]


class Wire:
    """A client WebSocket that reconnects (and restarts its session) when a case ended it."""

    def __init__(
        self, fuzz: FuzzServer, batch: str, start: str | None, url: str | None = None
    ) -> None:
        self.fuzz = fuzz
        self.batch = batch
        self.start = start
        self.url = url or fuzz.ws_url
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.barrier = BARRIER_ID
        self.opened = 0.0

    async def socket(self) -> aiohttp.ClientWebSocketResponse:
        if self.ws is not None and self.start is None and time.monotonic() - self.opened > 2.0:
            await self.ws.close()  # not started: the server's start deadline (3 s) is near
        if self.ws is None or self.ws.closed:
            assert self.fuzz.http is not None
            self.ws = await self.fuzz.http.ws_connect(self.url)
            self.opened = time.monotonic()
            if self.start is not None:
                await self.ws.send_str(self.start)
                answer = await self._until_barrier(self.ws)
                assert [e["type"] for e in answer.events] == ["session.started"], answer
        return self.ws

    async def exchange(self, payload: str | bytes) -> Answer:
        ws = await self.socket()
        try:
            if isinstance(payload, str):
                await ws.send_str(payload)
            else:
                await ws.send_bytes(payload)
        except (ConnectionError, RuntimeError):
            return Answer([], True)
        answer = await self._until_barrier(ws)
        outcome(self.batch, ",".join(answer.codes) or ("closed" if answer.closed else "no error"))
        bad = [
            e for e in answer.errors if e["code"] not in DOCUMENTED or e["code"] == "internal_error"
        ]
        assert not bad, (payload[:200], bad)
        return answer

    async def _until_barrier(self, ws: aiohttp.ClientWebSocketResponse) -> Answer:
        self.barrier += 1
        events: list[dict[str, Any]] = []
        try:
            await ws.send_str(ping_message(self.barrier, 0))
        except (ConnectionError, RuntimeError):
            return Answer(events, True)
        async with asyncio.timeout(10.0):  # a session that stops answering is hung
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    ev = json.loads(msg.data)
                    if ev.get("type") == "pong" and ev.get("id") == self.barrier:
                        return Answer(events, False)
                    events.append(ev)
                elif msg.type != aiohttp.WSMsgType.BINARY:
                    return Answer(events, True)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


TRACEPARENT = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
VALID_MESSAGES: list[dict[str, Any]] = [
    {"type": "session.start", "protocol": 1, "sample_rate": 16000, "encoding": "pcm16"},
    {
        "type": "session.start",
        "protocol": 1,
        "sample_rate": 48000,
        "encoding": "opus",
        "output_encoding": "opus",
        "traceparent": TRACEPARENT,
    },
    {"type": "session.start", "sample_rate": 8000},
    {"type": "ping", "id": 7, "t_client_ns": 123},
    {"type": "trace.context", "traceparent": TRACEPARENT},
    {"type": "playback.done", "turn_id": 1},
    {"type": "session.end"},
]
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


@st.composite
def mutated_message(draw: st.DrawFn) -> dict[str, Any]:
    msg = dict(draw(st.sampled_from(VALID_MESSAGES)))
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(["drop", "replace", "add", "retype", "protocol"]))
        keys = sorted(msg)
        if how == "drop" and keys:
            msg.pop(draw(st.sampled_from(keys)))
        elif how == "replace" and keys:
            msg[draw(st.sampled_from(keys))] = draw(json_values)
        elif how == "add":
            msg[draw(st.text(max_size=10))] = draw(json_values)
        elif how == "retype":
            msg["type"] = draw(
                st.sampled_from([t["type"] for t in VALID_MESSAGES]) | st.text(max_size=14)
            )
        else:
            msg[draw(st.sampled_from(["sample_rate", "protocol", "id", "turn_id"]))] = draw(
                st.integers(-(2**40), 2**40) | st.sampled_from([0, 1, 2, 7999, 8000, 48000, 48001])
            )
    return msg


def _nested(n: int, opener: str) -> str:
    return opener * n


def _ping_of_size(n: int) -> str:
    """A valid ``ping`` of exactly ``n`` bytes (around the message size limit)."""
    head = '{"type": "ping", "id": 1, "t_client_ns": 1, "pad": "'
    return head + "x" * (n - len(head) - 2) + '"}'


text_messages = st.one_of(
    mutated_message().map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=300),
    st.builds(_nested, st.integers(1, 20_000), st.sampled_from(["[", '{"a":', '[{"b":'])),
    st.integers(MAX_MESSAGE_BYTES - 20, MAX_MESSAGE_BYTES + 2000).map(_ping_of_size),
)


def expect_text(text: str, started: bool) -> tuple[list[str], Any]:
    """(error codes the documented rules require, the parsed message or None)."""
    if len(text.encode()) > MAX_MESSAGE_BYTES:
        return ["message_too_large"], None
    try:
        m = parse_client_message(text)
    except ProtocolError as e:
        return [e.code], None
    if isinstance(m, SessionStart) and started:
        return ["already_started"], m
    if isinstance(m, PlaybackDone) and not started:
        return ["not_started"], m
    return [], m


def check_text_answer(text: str, started: bool, answer: Answer) -> bool:
    """Holds the answer to the rules; returns whether the session is (still) started."""
    codes, m = expect_text(text, started)
    if isinstance(m, SessionEnd):
        assert answer.closed and not answer.errors, answer
        return False
    assert not answer.closed, (text[:200], answer)
    assert answer.codes == codes, (text[:200], answer.codes, codes)
    assert all(not e["fatal"] for e in answer.errors), answer
    if isinstance(m, Ping):
        assert any(e.get("type") == "pong" and e.get("id") == m.id for e in answer.events)
    if isinstance(m, SessionStart) and not started:
        assert [e["type"] for e in answer.events] == ["session.started"], answer
        return True
    return started


def test_fuzz_text_messages_before_session_start(fuzz: FuzzServer) -> None:
    wire = Wire(fuzz, "text_before_start", start=None)
    texts_or_audio = text_messages | st.binary(min_size=1, max_size=200)

    async def case(payload: str | bytes) -> None:
        answer = await wire.exchange(payload)
        if isinstance(payload, bytes):
            assert answer.codes == ["not_started"] and not answer.closed, answer
            return
        if check_text_answer(payload, False, answer):
            await wire.close()  # it started: the next case needs a fresh connection
            wire.ws = None

    run_batch(fuzz, "text_before_start", texts_or_audio, case)
    fuzz.call(wire.close())
    fuzz.check_healthy("text_before_start")


def test_fuzz_text_messages_after_session_start(fuzz: FuzzServer) -> None:
    wire = Wire(fuzz, "text_after_start", start=session_start_message(16000))

    async def case(text: str) -> None:
        answer = await wire.exchange(text)
        if not check_text_answer(text, True, answer):
            wire.ws = None  # session.end: reconnect and start again

    run_batch(fuzz, "text_after_start", text_messages, case)
    fuzz.call(wire.close())
    fuzz.check_healthy("text_after_start")


pcm16_frames = st.one_of(
    st.binary(max_size=4000),
    st.integers(0, 70_000).map(bytes),
    st.integers(0, 3000).map(
        lambda n: np.random.default_rng(n).integers(-32768, 32767, n, dtype=np.int16).tobytes()
    ),
)


def expect_pcm16(data: bytes) -> list[str]:
    if len(data) > MAX_MESSAGE_BYTES:
        return ["message_too_large"]
    if not data or len(data) % 2:
        return ["bad_audio"]
    return []


def test_fuzz_pcm16_frames(fuzz: FuzzServer) -> None:
    wire = Wire(fuzz, "pcm16_frames", start=session_start_message(22050))

    async def case(data: bytes) -> None:
        answer = await wire.exchange(data)
        assert not answer.closed, answer
        assert answer.codes == expect_pcm16(data), (len(data), answer.codes)

    run_batch(fuzz, "pcm16_frames", pcm16_frames, case)
    fuzz.call(wire.close())
    fuzz.check_healthy("pcm16_frames")


# -- Opus: HSI1 headers and payloads --------------------------------------------------------
def _speech_like_packets() -> list[bytes]:
    enc = OpusEncoder(16000, fec=True, expected_loss_pct=10)
    rng = np.random.default_rng(0)
    t = np.arange(320 * 40) / 16000
    voice = 4000 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    pcm = (voice + rng.normal(0, 300, t.size)).astype(np.int16)
    return [enc.encode(pcm[i * 320 : (i + 1) * 320]) for i in range(40)]


GOOD_PACKETS = _speech_like_packets()


@st.composite
def opus_payload(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["good", "random", "flipped", "cut", "toc", "frames", "big"]))
    packet = bytearray(draw(st.sampled_from(GOOD_PACKETS)))
    if kind == "random":
        return draw(st.binary(max_size=400))
    if kind == "flipped":
        for _ in range(draw(st.integers(1, 6))):
            i = draw(st.integers(0, len(packet) - 1))
            packet[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "cut":
        packet = packet[: draw(st.integers(0, len(packet)))]
    elif kind == "toc":  # every configuration (mode, bandwidth, 2.5-60 ms) and frame code
        packet[0] = draw(st.integers(0, 255))
    elif kind == "frames":  # code 3: n frames in one packet (20 ms x 6 = 120 ms ...)
        n = draw(st.integers(0, 63))
        frame = bytes(packet[1:])
        packet = bytearray([(packet[0] & 0xFC) | 3, n]) + frame * min(n, 8)
    elif kind == "big":
        packet += draw(st.binary(min_size=1100, max_size=1400))
    return bytes(packet)


@st.composite
def hsi1_message(draw: st.DrawFn) -> bytes:
    seq = draw(st.integers(0, 0xFFFF))
    ts = draw(st.integers(0, 0xFFFFFFFF))
    header = OPUS_IN_MAGIC + seq.to_bytes(2, "little") + ts.to_bytes(4, "little")
    kind = draw(st.sampled_from(["ok", "ok", "ok", "magic", "short", "random"]))
    if kind == "magic":
        header = draw(st.binary(min_size=4, max_size=4)) + header[4:]
    elif kind == "short":
        return header[: draw(st.integers(0, OPUS_IN_HEADER_BYTES))]
    elif kind == "random":
        return draw(st.binary(max_size=60))
    return header + draw(opus_payload())


def test_fuzz_opus_messages(fuzz: FuzzServer) -> None:
    wire = Wire(fuzz, "opus_messages", start=session_start_message(48000, None, "opus", "opus"))

    async def case(data: bytes) -> None:
        answer = await wire.exchange(data)
        assert not answer.closed, answer
        header_ok = len(data) > OPUS_IN_HEADER_BYTES and data[:4] == OPUS_IN_MAGIC
        refused = not header_ok or packet_problem(data[OPUS_IN_HEADER_BYTES:]) is not None
        assert answer.codes == (["bad_audio"] if refused else []), (data[:24], answer.codes)

    run_batch(fuzz, "opus_messages", hsi1_message(), case)
    fuzz.call(wire.close())
    fuzz.check_healthy("opus_messages")


# -- WebRTC offers and HTTP ---------------------------------------------------------------
@st.composite
def mutated_sdp(draw: st.DrawFn, offer: str) -> str:
    lines = offer.split("\r\n")
    for _ in range(draw(st.integers(0, 4))):
        how = draw(st.sampled_from(["drop", "dup", "junk", "edit", "swap", "cut"]))
        i = draw(st.integers(0, len(lines) - 1))
        if how == "drop":
            lines.pop(i)
        elif how == "dup":
            lines.insert(i, lines[i])
        elif how == "junk":
            lines.insert(i, draw(st.text(max_size=40)))
        elif how == "edit" and lines[i]:
            j = draw(st.integers(0, len(lines[i]) - 1))
            lines[i] = lines[i][:j] + draw(st.text(max_size=6)) + lines[i][j + 1 :]
        elif how == "swap":
            k = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[k] = lines[k], lines[i]
        elif how == "cut":
            lines = lines[:i]
        if not lines:
            lines = [""]
    return "\r\n".join(lines)


def offer_bodies(offer: str) -> st.SearchStrategy[bytes]:
    def body(sdp: str, kind: Any, extra: dict[str, Any]) -> bytes:
        return json.dumps({"sdp": sdp, "type": kind, **extra}).encode()

    extras = st.dictionaries(
        st.sampled_from(["traceparent", "token", "x"]),
        json_values | st.just(TRACEPARENT),
        max_size=2,
    )
    return st.one_of(
        st.builds(body, st.just(offer), st.just("offer"), extras),
        st.builds(body, mutated_sdp(offer), st.just("offer"), extras),
        st.builds(body, mutated_sdp(offer), json_values, extras),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=300),
        st.integers(1, 30_000).map(lambda n: b'{"sdp": ' + b"[" * n),
        st.integers(60_000, 70_000).map(lambda n: body("a" * n, "offer", {})),
    )


def test_fuzz_webrtc_offers(fuzz: FuzzServer) -> None:
    offer = fuzz.call(real_offer())
    url = f"{fuzz.base}/webrtc/offer"

    async def case(data: bytes) -> None:
        assert fuzz.http is not None
        async with fuzz.http.post(url, data=data) as r:
            status, text = r.status, await r.text()
        outcome("sdp_offers", str(status))
        assert status in (200, 400, 413, 503), (status, text[:300], data[:200])
        answer = json.loads(text)
        if status == 200:
            assert answer["type"] == "answer" and answer["sdp"] and answer["session_id"]
        else:
            assert isinstance(answer["error"], str) and answer["error"], answer

    run_batch(fuzz, "sdp_offers", offer_bodies(offer), case)
    fuzz.check_healthy("sdp_offers", drain_s=15.0)  # accepted offers end at start_timeout


PATHS = ["/", "/healthz", "/metrics", "/ws", "/webrtc/offer", "/constants.js", "/twilio", "/app.js"]
http_requests = st.tuples(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
    st.sampled_from(PATHS)
    | st.text("abcdefghijklmnopqrstuvwxyz/._-%", max_size=30).map(lambda p: "/" + p),
    st.dictionaries(st.sampled_from(["token", "q", "x"]), st.text(max_size=10), max_size=2),
    st.dictionaries(
        st.sampled_from(["Content-Type", "Origin", "Authorization", "X-Fuzz"]),
        st.text("abcdefghijklmnopqrstuvwxyz:/ .;=-", max_size=30),
        max_size=3,
    ),
    st.binary(max_size=500),
)


def test_fuzz_http_requests_and_raw_bytes(fuzz: FuzzServer) -> None:
    async def request(req: tuple[str, str, dict[str, str], dict[str, str], bytes]) -> None:
        method, path, query, headers, body = req
        assert fuzz.http is not None
        async with fuzz.http.request(
            method, fuzz.base + path, params=query, headers=headers, data=body or None
        ) as r:
            await r.read()
            outcome("http_requests", str(r.status))
            assert r.status < 500, (method, path, headers, r.status)

    run_batch(fuzz, "http_requests", http_requests, request)

    host, port = fuzz.base.removeprefix("http://").split(":")

    async def raw(data: bytes) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        reply = b""
        try:
            writer.write(data)
            # The parser answers what it can judge (400) and waits for the rest of what
            # may still become a request: that wait is not a hang, so it is cut here.
            async with asyncio.timeout(1.0):
                reply = await reader.read(4096)
        except TimeoutError:
            outcome("raw_tcp", "waits for more")
            return
        finally:
            writer.transport.abort()
        status = re.match(rb"HTTP/1\.[01] (\d{3})", reply)
        outcome("raw_tcp", status.group(1).decode() if status else "closed")
        assert status is None or int(status.group(1)) < 500, reply[:200]

    raw_bytes = st.one_of(
        st.binary(max_size=600),
        st.sampled_from(
            [
                b"GET / HTTP/1.1\r\n",
                b"POST /webrtc/offer HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n{",
            ]
        ).flatmap(lambda head: st.binary(max_size=200).map(lambda tail: head + tail)),
    )
    run_batch(fuzz, "raw_tcp", raw_bytes, raw)
    fuzz.check_healthy("http_requests")


# -- the edge -----------------------------------------------------------------------------
def test_fuzz_through_the_edge(fuzz: FuzzServer) -> None:
    """The edge in front of the same server: it validates everything itself (nothing
    malformed costs a long-path trip), with the origin's codes."""
    options = EdgeOptions(
        origin=fuzz.ws_url,
        port=0,
        pool_size=1,
        max_messages_per_s=1_000_000,
        max_audio_rate=1_000.0,
    )
    edge, runner, port = fuzz.call(start_edge(options))

    try:
        assert fuzz.call(poll(lambda: edge.pool.warm >= 1, 10.0))
        url = f"ws://127.0.0.1:{port}/ws"
        wire = Wire(fuzz, "edge_messages", start=session_start_message(16000), url=url)

        async def case(payload: str | bytes) -> None:
            answer = await wire.exchange(payload)
            if isinstance(payload, bytes):
                assert not answer.closed, answer
                assert answer.codes == expect_pcm16(payload), (len(payload), answer.codes)
            elif not check_text_answer(payload, True, answer):
                wire.ws = None  # session.end: reconnect and start again

        run_batch(fuzz, "edge_messages", text_messages | pcm16_frames, case)
        fuzz.call(wire.close())

        assert fuzz.call(poll(lambda: not edge.sessions, 5.0)), "hung edge sessions"
    finally:
        fuzz.call(runner.cleanup())
    fuzz.check_healthy("edge_messages")

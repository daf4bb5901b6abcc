"""Holding the SLO under load: admission by measured load, ``/ready``, the ``busy``
refusal, draining, and the priority plan (partials shed, first clauses first).

The load meter is driven with an injected clock and injected signals, so every
saturation here is exact; the server tests force a saturation (``LoadMeter.forced``)
rather than loading two shared cores until they give."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from halfsec.audio.io import load_audio
from halfsec.config import load_config
from halfsec.frames import EndOfTurn, ReplyDone, SpeechStarted
from halfsec.runtime.engines import Engines
from halfsec.runtime.faults import FaultSpecError, parse_fault
from halfsec.server.app import ServerOptions, VoiceServer, start_server
from halfsec.server.load_meter import DEFAULT_DUTY, LoadLimits, LoadMeter, SharedLoad
from halfsec.server.metrics import SPEAKING_STALE_NS, ServerMetrics
from halfsec.server.workers import Supervisor, WorkerSpec, _Slot, thread_plan
from halfsec.stt.decode_lanes import ReplaceableLane
from halfsec.stt.lane_load import LANE_LOAD, DecodeShed, LaneLoad
from halfsec.tts.clause_queue import FIRST_AUDIO, LATER, RankedWorker
from halfsec.tts.engine import set_clause_index
from halfsec.tts.phrase_cache import PhraseCache
from halfsec.wire.protocol import session_start_message

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
READY_KEYS = {"ready", "saturation", "sessions", "active_turns", "draining", "worker"}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def meter(
    turns: list[int], waits: list[tuple[float, float]], clock: Clock, capacity: float = 4.0
) -> LoadMeter:
    limits = LoadLimits(turn_capacity=capacity, lag_budget_ms=100.0, wait_budget_ms=150.0)
    return LoadMeter(
        limits, lambda: turns[0], lambda since: [w for t, w in waits if t >= since], clock
    )


def run_for(m: LoadMeter, clock: Clock, seconds: float, lag_ms: float = 0.0) -> None:
    for _ in range(round(seconds / m.limits.interval_s)):
        clock.t += m.limits.interval_s
        m.tick(lag_ms)


# -- the load meter ---------------------------------------------------------------------
def test_saturation_is_the_fullest_signal_over_the_window() -> None:
    clock, turns, waits = Clock(), [0], []
    m = meter(turns, waits, clock)
    run_for(m, clock, 2.0, lag_ms=10.0)
    s = m.snapshot()
    assert s.saturation == pytest.approx(0.1) and s.terms["lag"] == pytest.approx(0.1)
    turns[0] = 4  # a full worker's worth of turns, held for the whole window
    run_for(m, clock, 5.0, lag_ms=10.0)
    assert m.snapshot().terms["turns"] == pytest.approx(1.0)
    assert m.snapshot().active_turns == 4
    turns[0] = 1
    run_for(m, clock, 5.0, lag_ms=250.0)  # the loop itself runs 250 ms late
    s = m.snapshot()
    assert s.terms["turns"] == pytest.approx(0.25) and s.saturation == pytest.approx(2.5)
    waits.append((clock.t, 0.3))  # a final waited 300 ms for a decode worker
    run_for(m, clock, 1.0)
    assert m.snapshot().terms["wait"] == pytest.approx(2.0)
    run_for(m, clock, 6.0)  # all of it leaves the window
    s = m.snapshot()
    assert s.terms["wait"] == 0.0 and s.terms["lag"] == 0.0
    assert s.saturation == pytest.approx(0.25)


def test_open_calls_count_by_their_measured_duty() -> None:
    """Callers who are thinking still bring their turns back: open sessions times the
    measured share of time a session spends in a turn is a signal of its own."""
    clock, turns, sessions = Clock(), [0], [6]
    limits = LoadLimits(turn_capacity=4.0)
    m = LoadMeter(limits, lambda: turns[0], lambda since: [], clock, lambda: sessions[0])
    # Before a second of samples the duty is the default: 6 calls x 0.5 = 3 turns of 4.
    assert m.snapshot().terms["calls"] == pytest.approx(6 * DEFAULT_DUTY / 4.0)
    turns[0] = 3  # measured: 3 of 6 open sessions in a turn, all window long
    run_for(m, clock, 5.0)
    assert m.snapshot().terms["calls"] == pytest.approx(6 * 0.5 / 4.0)
    sessions[0] = 10  # four more calls came in; their share is the measured 3/6 ... 3/10
    turns[0] = 5
    run_for(m, clock, 5.0)
    assert m.snapshot().terms["calls"] == pytest.approx(10 * 0.5 / 4.0)
    assert m.snapshot().saturation >= 1.0 and not m.admits(m.snapshot().saturation)
    turns[0] = 0  # idle sessions (squatters, silent callers) measure a duty of 0
    run_for(m, clock, 6.0)
    assert 0.0 < m.snapshot().terms["calls"] < 10 * 0.5 / 4.0, "over a minute, not at once"
    run_for(m, clock, m.limits.duty_horizon_s)
    assert m.snapshot().terms["calls"] == 0.0


def test_young_calls_count_at_the_default_duty_until_a_minute_measured_them() -> None:
    """A young window is wrong both ways: callers who have just connected have not
    spoken yet (16 callers 0.7 s apart once read a duty of 0.00 at the 3rd), and then
    everyone's first turn comes at once (0.57 at the 8th)."""
    clock, turns, sessions = Clock(), [0], [0]
    m = LoadMeter(
        LoadLimits(turn_capacity=4.0),
        lambda: turns[0],
        lambda since: [],
        clock,
        lambda: sessions[0],
    )
    for _ in range(6):  # a caller every 0.7 s, none of them speaking yet
        sessions[0] += 1
        run_for(m, clock, 0.7)
    assert m.snapshot().duty == DEFAULT_DUTY
    assert m.snapshot().terms["calls"] == pytest.approx(6 * DEFAULT_DUTY / 4.0)
    turns[0] = 5  # all first turns at once
    run_for(m, clock, 3.0)
    assert m.snapshot().duty == DEFAULT_DUTY
    turns[0] = 2  # the calls settle: 2 of 6 in a turn
    run_for(m, clock, 60.0)
    assert m.snapshot().duty == pytest.approx(2 / 6, abs=0.005)


def test_workers_admit_by_the_box_not_by_their_share() -> None:
    """Callers land on workers by chance: a worker with 5 of 8 calls still admits while
    the box has room, and refuses once the box is full; a dead worker's entry lapses."""
    clock = Clock()
    array = multiprocessing.get_context("spawn").RawArray("d", SharedLoad.FIELDS * 2)
    limits = LoadLimits(turn_capacity=2.25)  # each worker's share: 2.25 of 4.5 turns
    sessions = [5, 3]
    meters = [
        LoadMeter(
            limits,
            lambda: 0,
            lambda since: [],
            clock,
            lambda i=i: sessions[i],
            shared=SharedLoad(array, i),
        )
        for i in range(2)
    ]

    def run(seconds: float) -> None:
        for _ in range(round(seconds / limits.interval_s)):
            clock.t += limits.interval_s
            for m in meters:
                m.tick(0.0)

    run(1.0)
    # Alone, 5 calls x 0.5 would be 1.11 of its share; the box holds 8 x 0.5 of 4.5.
    assert meters[0].snapshot().terms["calls"] == pytest.approx(8 * DEFAULT_DUTY / 4.5)
    assert meters[0].admits(meters[0].snapshot().saturation)
    sessions[1] = 5
    run(0.2)
    assert not meters[0].admits(meters[0].snapshot().saturation), "10 x 0.5 > 4.5"
    for _ in range(15):  # worker 1 died: its entry goes stale
        clock.t += limits.interval_s
        meters[0].tick(0.0)
    assert meters[0].snapshot().terms["calls"] == pytest.approx(5 * DEFAULT_DUTY / 4.5)


def test_admission_has_hysteresis() -> None:
    m = meter([0], [], Clock())
    assert m.admits(0.99)
    assert not m.admits(1.0)
    assert not m.admits(0.9), "refused until the load is clearly down, not at the edge"
    assert m.admits(0.84)
    assert LoadLimits.default(3.0).turn_capacity == 3.0
    assert (
        LoadLimits.default(None, workers=2).turn_capacity < LoadLimits.default(None).turn_capacity
    )


def test_active_turns_count_speaking_and_unanswered_turns() -> None:
    m = ServerMetrics(lambda: 1)
    a, b = m.session(), m.session()
    t = time.monotonic_ns()
    a.frame(SpeechStarted(turn_id=1, t_ns=t, audio_ms=0.0))
    assert m.active_turns() == 1
    a.frame(EndOfTurn(turn_id=1, t_ns=t, audio_ms=900.0, speech_end_ms=700.0, reason="silence"))
    b.frame(SpeechStarted(turn_id=1, t_ns=t, audio_ms=0.0))
    assert m.active_turns() == 2  # a's reply in progress, b speaking
    a.frame(ReplyDone(turn_id=1, t_ns=t, text="ok"))
    assert m.active_turns() == 1
    assert b.active_turns(t + SPEAKING_STALE_NS + 1) == 0, "a noise that never ended a turn"
    b.close()
    assert m.active_turns() == 0


# -- /ready, busy, draining on a real server ----------------------------------------------
@contextlib.asynccontextmanager
async def serving(engines: Engines, **kw: Any) -> AsyncIterator[tuple[VoiceServer, str]]:
    opts = ServerOptions(host="127.0.0.1", port=0, **kw)
    server, runner, port = await start_server(engines, load_config(), opts)
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def ready(http: aiohttp.ClientSession, host: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"http://{host}/ready") as r:
        assert r.headers["X-Halfsec-Worker"] == str(os.getpid())
        return r.status, dict(await r.json())


async def assert_busy(r: aiohttp.ClientResponse, retry_s: int | None = None) -> str:
    assert r.status == 503
    body = await r.json()
    assert body["error"] == "busy" and body["message"], body
    assert int(r.headers["Retry-After"]) == body["retry_after_s"] >= 1
    if retry_s is not None:
        assert body["retry_after_s"] == retry_s
    return str(body["message"])


async def test_ready_then_saturated_refuses_new_sessions_with_retry_after(
    engines: Engines,
) -> None:
    async with serving(engines) as (server, host), aiohttp.ClientSession() as http:
        status, body = await ready(http, host)
        assert status == 200 and set(body) == READY_KEYS | {"signals", "duty"}, body
        assert body["ready"] is True and body["worker"] == os.getpid()
        assert body["draining"] is False and body["sessions"] == 0
        async with http.ws_connect(f"ws://{host}/ws") as admitted:
            await admitted.send_str(session_start_message())
            assert (await admitted.receive_json(timeout=5))["type"] == "session.started"
            server.load.forced = 1.2  # past capacity
            status, body = await ready(http, host)
            assert status == 503 and body["reason"] == "saturated" and body["ready"] is False
            assert body["sessions"] == 1 and body["saturation"] == 1.2
            async with http.get(f"ws://{host}/ws".replace("ws://", "http://")) as r:
                assert "retry" in (await assert_busy(r)).lower()
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"ws://{host}/ws")
            assert refused.value.status == 503
            async with http.post(f"http://{host}/webrtc/offer", json={"sdp": "x"}) as r:
                await assert_busy(r)
            async with http.get(f"http://{host}/twilio") as r:
                await assert_busy(r)
            # The admitted session is untouched by the refusals.
            await admitted.send_json({"type": "ping", "id": 1, "t_client_ns": 1})
            assert (await admitted.receive_json(timeout=5))["type"] == "pong"
            server.load.forced = 0.9
            assert (await ready(http, host))[0] == 503, "hysteresis: not back at 0.9"
            server.load.forced = 0.5
            assert (await ready(http, host))[0] == 200
            async with http.ws_connect(f"ws://{host}/ws") as again:
                await again.send_str(session_start_message())
                assert (await again.receive_json(timeout=5))["type"] == "session.started"
        async with http.get(f"http://{host}/metrics") as r:
            text = await r.text()
    assert 'halfsec_refused_sessions_total{reason="busy"} 4.0' in text
    tasks = [ln for ln in text.splitlines() if ln.startswith("halfsec_asyncio_tasks ")]
    assert tasks and float(tasks[0].split()[1]) >= 1
    for name in ("halfsec_saturation", "halfsec_active_turns", "halfsec_draining"):
        assert f"\n{name} " in text, name


async def test_the_measured_calls_refuse_past_capacity_and_the_admitted_call_is_answered(
    engines: Engines,
) -> None:
    """No forced saturation: ``--capacity 0.5`` turns, one open call at the default duty
    fills it, so the next caller hears ``busy`` with ``Retry-After`` and /ready says
    which signal is full, while the admitted call is still served."""
    async with (
        serving(engines, capacity=0.5) as (server, host),
        aiohttp.ClientSession() as http,
    ):
        async with http.ws_connect(f"ws://{host}/ws") as admitted:
            await admitted.send_str(session_start_message())
            assert (await admitted.receive_json(timeout=5))["type"] == "session.started"
            status, body = await ready(http, host)
            assert status == 503 and body["reason"] == "saturated", body
            assert body["signals"]["calls"] == pytest.approx(1.0) and body["duty"] == 0.5
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"ws://{host}/ws")
            assert refused.value.status == 503
            assert refused.value.headers is not None
            assert int(refused.value.headers["Retry-After"]) == server.readiness.retry_after_s
            await admitted.send_json({"type": "ping", "id": 7, "t_client_ns": 1})
            assert (await admitted.receive_json(timeout=5))["type"] == "pong"
        for _ in range(100):  # the call ended: room again (below the 0.85 hysteresis)
            if (await ready(http, host))[0] == 200:
                break
            await asyncio.sleep(0.05)
        assert (await ready(http, host))[0] == 200


async def test_a_wrong_token_still_hears_401_from_a_busy_server(engines: Engines) -> None:
    async with serving(engines, token="s3cret") as (server, host), aiohttp.ClientSession() as http:
        server.load.forced = 2.0
        bad = {"Authorization": "Bearer nope"}
        async with http.get(f"http://{host}/ws", headers=bad) as r:
            assert r.status == 401
        good = {"Authorization": "Bearer s3cret"}
        async with http.get(f"http://{host}/ws", headers=good) as r:
            await assert_busy(r)
        evil = {**good, "Origin": "https://evil.example"}
        async with http.get(f"http://{host}/ws", headers=evil) as r:
            assert r.status == 403


async def test_the_session_cap_is_a_busy_refusal_too(engines: Engines) -> None:
    async with serving(engines, max_sessions=1) as (_s, host), aiohttp.ClientSession() as http:
        async with http.ws_connect(f"ws://{host}/ws") as first:
            await first.send_str(session_start_message())
            assert (await first.receive_json(timeout=5))["type"] == "session.started"
            async with http.get(f"http://{host}/ws") as r:
                assert "--max-sessions" in await assert_busy(r)
            assert (await ready(http, host))[1]["reason"] == "saturated"


async def test_draining_refuses_new_sessions_and_waits_for_open_ones(engines: Engines) -> None:
    async with serving(engines) as (server, host), aiohttp.ClientSession() as http:
        async with http.ws_connect(f"ws://{host}/ws") as open_one:
            await open_one.send_str(session_start_message())
            assert (await open_one.receive_json(timeout=5))["type"] == "session.started"
            drain = asyncio.create_task(server.drain(30.0))
            await asyncio.sleep(0.3)
            status, body = await ready(http, host)
            assert status == 503 and body["reason"] == "draining" and body["draining"] is True
            async with http.get(f"http://{host}/ws") as r:
                await assert_busy(r, retry_s=1)
            assert not drain.done(), "the drain waits for the open session"
            await open_one.send_json({"type": "ping", "id": 2, "t_client_ns": 1})
            assert (await open_one.receive_json(timeout=5))["type"] == "pong"
        assert await asyncio.wait_for(drain, 10.0) is True


# -- priorities: partials shed, finals first ---------------------------------------------
def gate_job(gate: threading.Event, name: str, ran: list[str]) -> Callable[[object], str]:
    def run(model: object) -> str:
        gate.wait(5.0)
        ran.append(name)
        return name

    return run


async def test_a_partial_never_queues_behind_another() -> None:
    load, gate, ran = LaneLoad(), threading.Event(), []
    lane: ReplaceableLane[object] = ReplaceableLane("p", object, shed=True, lane_load=load)
    first = lane.submit(gate_job(gate, "a", ran))
    with pytest.raises(DecodeShed) as shed:
        lane.submit(gate_job(gate, "b", ran))
    assert isinstance(shed.value, asyncio.CancelledError), "ends like a cancelled preview"
    assert load.shed == {"lane_busy": 1} and lane.shed == 1
    gate.set()
    assert await first == "a"
    assert await lane.submit(gate_job(gate, "c", ran)) == "c"
    assert ran == ["a", "c"]
    lane.close()


async def test_partials_shed_while_finals_wait_or_turns_pass_the_threshold() -> None:
    load, gate, ran = LaneLoad(), threading.Event(), []
    final: ReplaceableLane[object] = ReplaceableLane("f", object, lane_load=load)
    partial: ReplaceableLane[object] = ReplaceableLane("p", object, shed=True, lane_load=load)
    running = final.submit(gate_job(gate, "f1", ran))
    queued = final.submit(gate_job(gate, "f2", ran))
    await asyncio.sleep(0.05)
    assert load.critical_waiting() == 1
    with pytest.raises(DecodeShed):
        partial.submit(gate_job(gate, "p1", ran))
    assert load.shed == {"finals_waiting": 1}
    await asyncio.sleep(0.1)
    gate.set()
    assert await asyncio.gather(running, queued) == ["f1", "f2"]
    waits = load.waits_since(0.0)
    assert len(waits) == 2 and max(waits) >= 0.1, "the queued final's wait was measured"
    load.active_turns, load.shed_above_turns = (lambda: 5), 4
    with pytest.raises(DecodeShed):
        partial.submit(gate_job(gate, "p2", ran))
    load.active_turns = lambda: 4
    assert await partial.submit(gate_job(gate, "p3", ran)) == "p3"
    assert load.shed == {"finals_waiting": 1, "turns": 1} and ran == ["f1", "f2", "p3"]
    final.close()
    partial.close()


async def test_a_shed_partial_leaves_the_final_untouched(engines: Engines) -> None:
    """Through the real Whisper stream: the shed preview is a cancellation (nothing
    promoted), and the final decodes as ever."""
    saved = (LANE_LOAD.active_turns, LANE_LOAD.shed_above_turns)
    LANE_LOAD.active_turns, LANE_LOAD.shed_above_turns = (lambda: 3), 2
    try:
        stream = engines.stt.open_stream()
        stream.feed(load_audio(EXAMPLES / "coffee_order.flac"))
        with pytest.raises(asyncio.CancelledError):
            await stream.hypothesis(final=False)
        final = await stream.hypothesis(final=True)
        # The whole order, to its last words ("espresso" is heard as "expresso" with
        # the domain hint: the matcher's alias, not the point here).
        assert "soy milk" in final.text.lower() and final.compute_ms > 0, final
    finally:
        LANE_LOAD.active_turns, LANE_LOAD.shed_above_turns = saved


def test_tts_serves_first_clauses_before_later_ones() -> None:
    worker, gate, order = RankedWorker("t"), threading.Event(), []
    blocker = worker.submit(LATER, gate.wait, 5.0)
    time.sleep(0.05)
    futures = [
        worker.submit(rank, order.append, name)
        for rank, name in ((LATER, "A clause 2"), (LATER, "A clause 3"), (FIRST_AUDIO, "B first"))
    ]
    gate.set()
    for f in (blocker, *futures):
        f.result(5.0)
    assert order == ["B first", "A clause 2", "A clause 3"]
    cancelled = worker.submit(LATER, order.append, "never")
    worker.shutdown()
    assert cancelled.cancelled() or cancelled.done()


async def test_piper_ranks_a_reply_by_its_clause(engines: Engines) -> None:
    tts = engines.tts
    if isinstance(tts, PhraseCache):  # Piper itself, not its kept clauses
        tts = tts.inner
    worker = getattr(tts, "worker", None)
    assert isinstance(worker, RankedWorker), type(tts)

    async def speak(index: int) -> None:
        set_clause_index(index)
        async for _ in tts.synthesize("One latte. Coming up."):
            pass

    await asyncio.create_task(speak(0))
    assert worker.ran[-3:] == [FIRST_AUDIO, FIRST_AUDIO, LATER], worker.ran
    await asyncio.create_task(speak(2))
    assert worker.ran[-3:] == [LATER, LATER, LATER]


# -- worker processes and the worker.kill fault (units; processes: test_workers.py) -------
def test_worker_kill_is_a_fault_kind_without_duration() -> None:
    assert str(parse_fault("worker.kill")) == "worker.kill"
    assert parse_fault("worker.kill@0.5").probability == 0.5
    with pytest.raises(FaultSpecError, match="no duration"):
        parse_fault("worker.kill:2s")


def test_the_thread_plan_splits_the_cores_between_workers() -> None:
    cfg = load_config()
    assert thread_plan(cfg, 1, cores=2) is cfg
    two = thread_plan(cfg, 2, cores=2)
    assert two.stt.cpu_threads == 1 and two.tts.threads == 1
    assert thread_plan(cfg, 2, cores=8).stt.cpu_threads == min(cfg.stt.cpu_threads, 4)


def test_replacement_backoff_doubles_and_is_capped() -> None:
    sup = Supervisor(WorkerSpec(load_config(), ServerOptions()), None, 2)  # type: ignore[arg-type]
    delays = [sup.backoff_s(_Slot(quick_deaths=k)) for k in (1, 2, 3, 10)]
    assert delays == [0.5, 1.0, 2.0, 30.0]

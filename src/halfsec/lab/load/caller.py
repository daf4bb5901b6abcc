"""One simulated caller: recordings played one after another, with a pause to think.

A caller is the bench's own client (``lab.bench.run.run_items``: the WebSocket or WebRTC
client of ``lab.clients``, the turn record of ``lab.bench.records`` whose voice-to-voice
is ``halfsec.measure``'s rule), run for one recording at a time.  Between recordings it
waits for the reply to finish playing (the client returns only then) and thinks for a
seeded random 1-2 s, as a person on a call would; so N callers put on the server the
load of N people talking, not N microphones streaming flat out.

A caller is ONE session for its whole call (``lab.bench.run.run_conversation_items``
over ``lab.clients.conversation`` on the WebSocket, ``lab.clients.rtc_call`` -- one
peer connection -- on WebRTC): admitted once, when the call starts, with the dialogue
state carried from turn to turn, as a person on the phone is.  A caller the server turns
away as busy (HTTP 503 before the WebSocket upgrade or at the WebRTC offer) is a
*refusal*: one record for the caller, counted apart from failed turns -- the server kept
its promise to the callers it took -- and that caller plays nothing more.  A turn that
fails ends its caller's call.  Only the browser client still opens a session per
recording; for it a 503 at any turn's offer is a refusal of that turn.

Each caller runs on its own thread with its own event loop.  On one shared loop a
finished turn's measurement (``lab.bench.records.make_record``) held every other
caller's microphone: measured 2026-12-01, frames left up to 210 ms late with 12 callers.
On threads the interpreter switches every 5 ms, so one caller's arithmetic delays
another's frames by milliseconds (and the end of speech of a recording is now computed
once per recording, ``records.recording_bounds``)."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from halfsec.clock import now_ns
from halfsec.lab.bench.corpus import CorpusItem
from halfsec.lab.bench.options import BenchOptions
from halfsec.lab.bench.run import run_conversation_items, run_items
from halfsec.lab.load.options import LoadOptions

__all__ = ["CallerPlan", "is_refusal", "run_caller"]

_REFUSED = re.compile(r"refused the (?:WebSocket|offer) \(503\b|\bbusy\b", re.IGNORECASE)


def is_refusal(error: str | None) -> bool:
    """Whether a turn's error is the server saying busy (``lab.clients``' messages for
    an HTTP 503 at the WebSocket upgrade or the WebRTC offer, or a ``busy`` error)."""
    return bool(error) and _REFUSED.search(error or "") is not None


@dataclass(frozen=True, slots=True)
class CallerPlan:
    """Who caller ``index`` of a step is: when it starts and what it says, in order."""

    index: int
    start_delay_s: float
    items: tuple[CorpusItem, ...]
    think_s: tuple[float, ...]
    """One think time per turn (the last one is never waited)."""


def plan_callers(
    n: int, items: Sequence[CorpusItem], opts: LoadOptions, step_seed: int
) -> list[CallerPlan]:
    """N callers, each with its own seeded order of the recordings and think times, so
    a rerun with the same seed plays the same conversations."""
    plans = []
    turns = opts.turns if opts.turns is not None else 10_000
    for i in range(n):
        rng = random.Random(f"{opts.seed}:{step_seed}:{i}")
        order = list(items)
        rng.shuffle(order)
        said = tuple(order[k % len(order)] for k in range(min(turns, 10_000)))
        think = tuple(rng.uniform(opts.think_min_s, opts.think_max_s) for _ in said)
        plans.append(CallerPlan(i, i * opts.stagger_s, said, think))
    return plans


@dataclass
class CallerBoard:
    """What every caller of a step is doing now, for the live display."""

    active: int = 0
    done: int = 0


async def run_caller(
    url: str,
    plan: CallerPlan,
    bench: BenchOptions,
    t0_ns: int,
    deadline_ns: int | None,
    board: CallerBoard,
    on_turn: Callable[[dict[str, Any]], None],
    executor: Executor | None = None,
) -> None:
    """Play ``plan`` against ``url``; each turn's record goes to ``on_turn`` with the
    load fields (``caller``, ``turn``, ``t_start_s``, ``t_end_s``, ``concurrent``,
    ``refused``) added.  No new turn starts after ``deadline_ns``.  ``executor``: where
    each turn runs, on a loop of its own (one thread per caller; None: on this loop)."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(plan.start_delay_s)
    if bench.transport in ("websocket", "webrtc") and bench.client_kind == "python":
        await _one_session(url, plan, bench, t0_ns, deadline_ns, board, on_turn, executor)
        return
    await _session_per_turn(url, plan, bench, t0_ns, deadline_ns, board, on_turn, executor, loop)


def _load_fields(
    rec: dict[str, Any], plan: CallerPlan, k: int, concurrent: int, start: int, t0_ns: int
) -> dict[str, Any]:
    rec["refused"] = not rec["ok"] and is_refusal(rec.get("error"))
    rec["caller"] = plan.index
    rec["turn"] = k
    rec["concurrent"] = concurrent
    rec["t_start_s"] = round((start - t0_ns) / 1e9, 3)
    rec["t_end_s"] = round((now_ns() - t0_ns) / 1e9, 3)
    return rec


async def _one_session(
    url: str,
    plan: CallerPlan,
    bench: BenchOptions,
    t0_ns: int,
    deadline_ns: int | None,
    board: CallerBoard,
    on_turn: Callable[[dict[str, Any]], None],
    executor: Executor | None,
) -> None:
    """The whole plan as one call.  The conversation runs on the executor's thread;
    what it reports comes back to this loop (``call_soon_threadsafe``), so the board
    and ``on_turn`` are only ever touched here."""
    loop = asyncio.get_running_loop()
    started: dict[int, tuple[int, int]] = {}  # turn -> (start ns, callers in a turn)
    state = {"in_turn": False}

    def begin(k: int) -> None:
        board.active += 1
        state["in_turn"] = True
        started[k] = (now_ns(), board.active)

    def leave() -> None:
        if state["in_turn"]:
            board.active -= 1
            state["in_turn"] = False

    def end(k: int, rec: dict[str, Any]) -> None:
        leave()
        board.done += 1
        # A refused call played no turn: it is dated from when the caller dialled.
        start, concurrent = started.get(k, called)
        on_turn(_load_fields(rec, plan, max(k, 0), concurrent, start, t0_ns))

    def keep_going() -> bool:
        return deadline_ns is None or now_ns() < deadline_ns

    def on_start(k: int) -> None:
        if executor is None:
            begin(k)
        else:  # wait until this loop counted it, so ``concurrent`` is exact
            asyncio.run_coroutine_threadsafe(_call(begin, k), loop).result()

    def on_record(k: int, rec: dict[str, Any]) -> None:
        if executor is None:
            end(k, rec)
        else:
            loop.call_soon_threadsafe(end, k, rec)

    if not keep_going():
        return
    called = (now_ns(), board.active + 1)
    call = run_conversation_items(
        url, plan.items, plan.think_s, bench, on_record, keep_going, on_start
    )
    try:
        if executor is None:
            await call
        else:
            await loop.run_in_executor(executor, asyncio.run, call)
    finally:
        leave()
    await asyncio.sleep(0)  # let the last record's callback run before the step ends


async def _call(fn: Callable[[int], None], k: int) -> None:
    fn(k)


async def _session_per_turn(
    url: str,
    plan: CallerPlan,
    bench: BenchOptions,
    t0_ns: int,
    deadline_ns: int | None,
    board: CallerBoard,
    on_turn: Callable[[dict[str, Any]], None],
    executor: Executor | None,
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Callers without a conversation client (the browser): a session per recording."""

    def on_thread(item: CorpusItem) -> list[dict[str, Any]]:
        return asyncio.run(run_items(url, [item], bench))[0]

    for k, item in enumerate(plan.items):
        start = now_ns()
        if deadline_ns is not None and start >= deadline_ns:
            return
        board.active += 1
        concurrent = board.active
        try:
            if executor is None:
                recs, _audio_s = await run_items(url, [item], bench)
            else:
                recs = await loop.run_in_executor(executor, on_thread, item)
        finally:
            board.active -= 1
        board.done += 1
        on_turn(_load_fields(recs[0], plan, k, concurrent, start, t0_ns))
        if k + 1 < len(plan.items):
            await asyncio.sleep(plan.think_s[k])

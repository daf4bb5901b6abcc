"""What the soak's flat RSS rests on, cheap enough for every run (no 10-minute soak here).

``benchmarks/soak.py`` found the server's RSS growing in steps (+84 MB in 10 minutes); the
steps were the final STT lane freeing a replaced worker's model and later loading another
on a new thread, which leaves the freed memory in glibc's per-thread arenas
(``stt/decode_lanes.py``).  These tests hold the two properties that keep it flat:

* a decode lane never frees a model it loaded and stops loading once it holds enough
  workers, however many swaps follow;
* decoding utterances of new lengths does not grow native memory (oneDNN's shape-keyed
  primitive cache under CTranslate2 is bounded, ``stt/native_caches.py``);
* a session leaves nothing behind when it ends: no session, turn or connection object,
  no asyncio task, and Python's traced memory does not grow with the number of sessions.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
import weakref
from pathlib import Path

from halfsec.audio.io import load_audio
from halfsec.config import load_config
from halfsec.lab.clients.websocket import run_recording
from halfsec.runtime.engines import Engines
from halfsec.runtime.session import VoiceSession
from halfsec.runtime.turn_task import TurnTask
from halfsec.server.app import ServerOptions, start_server
from halfsec.server.connection import ClientConnection
from halfsec.server.metrics import SessionMetrics
from halfsec.stt.decode_lanes import ReplaceableLane
from halfsec.stt.native_caches import ONEDNN_CACHE_VAR


class _Model:
    """A toy model whose loads and frees are counted."""

    def __init__(self, loads: list[int], freed: list[int]) -> None:
        loads.append(1)
        weakref.finalize(self, freed.append, 1)


async def _burst(lane: ReplaceableLane[_Model], hangs: int, seconds: float) -> None:
    """``hangs`` decodes in a row that nobody waits for, each replaced while running."""

    def stall(model: _Model) -> None:
        time.sleep(seconds)

    for _ in range(hangs):
        fut = lane.submit(stall)
        await asyncio.sleep(0.03)  # running now
        lane.abandon(fut)  # replaced at once (hung_after_s=0) by a spare or a load
    assert await lane.submit(lambda m: "ok") == "ok"
    await asyncio.sleep(seconds + 0.2)  # every hung decode ended: its worker came back
    await lane.submit(lambda m: None)  # settles the ones that came back


async def test_a_lane_keeps_its_models_so_repeated_swaps_load_and_free_nothing() -> None:
    loads: list[int] = []
    freed: list[int] = []
    lane: ReplaceableLane[_Model] = ReplaceableLane(
        "toy", lambda: _Model(loads, freed), standby=True, hung_after_s=0.0, max_hung=3
    )
    try:
        await _burst(lane, hangs=3, seconds=0.3)
        grown = len(loads)
        assert lane.workers <= lane.max_workers == 1 + lane.max_spares + lane.max_hung
        assert lane.replacements == 3 and grown > 2, "the burst made the pool grow"
        for _ in range(3):  # the same hangs again: the pool already holds what they need
            await _burst(lane, hangs=3, seconds=0.3)
        gc.collect()
        assert len(loads) == grown, f"loaded {len(loads) - grown} more model(s) after the pool grew"
        assert freed == [], f"{len(freed)} loaded model(s) freed (their memory stays in the arenas)"
        assert lane.workers == grown and lane.hung_workers == 0
    finally:
        lane.close()


async def test_a_lane_without_standby_reuses_a_replaced_worker_instead_of_loading() -> None:
    """The partial lane keeps no spares, but a worker that hung and came back is kept for
    the next replacement: a load there would sit on the critical path and free a model."""
    loads: list[int] = []
    freed: list[int] = []
    lane: ReplaceableLane[_Model] = ReplaceableLane(
        "toy-partial", lambda: _Model(loads, freed), hung_after_s=0.0
    )
    try:
        await _burst(lane, hangs=1, seconds=0.2)
        assert len(loads) == 2 and lane.spares == 1, "the hung worker came back as a spare"
        for _ in range(3):
            await _burst(lane, hangs=1, seconds=0.2)
        gc.collect()
        assert len(loads) == 2 and freed == [], (len(loads), len(freed))
    finally:
        lane.close()


def test_a_job_whose_loop_closed_is_forgotten_with_what_it_held() -> None:
    """One engine set may outlive several event loops (the test suite; an app that runs
    ``asyncio.run`` twice).  A decode that ends after its loop closed is never settled; the
    lane used to keep it (and through its closure a session's stream and turn) forever."""

    class Held:
        """Stands for what a decode's closure holds (a session's stream, its turn)."""

    loads: list[int] = []
    lane: ReplaceableLane[_Model] = ReplaceableLane("toy-loops", lambda: _Model(loads, []))
    gone: list[int] = []

    async def first_loop() -> None:
        held = Held()
        weakref.finalize(held, gone.append, 1)

        def decode(model: _Model, held: Held = held) -> None:
            time.sleep(0.3)  # still running when this loop closes

        lane.submit(decode)
        await asyncio.sleep(0.05)

    async def second_loop() -> None:
        assert await lane.submit(lambda m: "ok") == "ok"

    try:
        asyncio.run(first_loop())
        time.sleep(0.4)  # the first decode ends; nobody can settle it
        asyncio.run(second_loop())
        gc.collect()
        assert gone == [1], "the orphaned job still holds what its decode closed over"
    finally:
        lane.close()


def _alive(kinds: tuple[type, ...], known: list[object] | None = None) -> dict[str, int]:
    """Objects of ``kinds`` alive now, by type name, leaving out those in ``known``
    (objects that were alive before: in the full suite, earlier tests on the shared
    engines may still hold some of their own, e.g. a decode they abandoned)."""
    gc.collect()
    skip = {id(o) for o in known or []}
    out: dict[str, int] = {}
    for o in gc.get_objects():
        if isinstance(o, kinds) and id(o) not in skip:
            out[type(o).__name__] = out.get(type(o).__name__, 0) + 1
    return out


def _objects(kinds: tuple[type, ...]) -> list[object]:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, kinds)]


async def test_sessions_leave_nothing_behind(engines: Engines, speech_dir: Path) -> None:
    pcm = load_audio(speech_dir / "audio/vctk_p225_001.flac")
    server, runner, port = await start_server(
        engines, load_config(), ServerOptions(host="127.0.0.1", port=0)
    )
    url = f"ws://127.0.0.1:{port}/ws"
    per_session = (VoiceSession, TurnTask, ClientConnection, SessionMetrics)

    async def call() -> None:
        run = await run_recording(url, pcm)
        assert run.error is None, run.error
        for _ in range(100):  # the server side closes just after the client
            if not server.services.connections:
                break
            await asyncio.sleep(0.02)

    def baseline_tasks() -> int:
        return len(asyncio.all_tasks())

    tracemalloc.start(1)
    try:
        for _ in range(2):  # warm: caches, lazily loaded models, first-run buffers
            await call()
        tasks0 = baseline_tasks()
        known = _objects(per_session)  # held (alive anyway) so their ids stay theirs
        gc.collect()
        before = tracemalloc.take_snapshot()
        n = 5
        for _ in range(n):
            await call()
        await asyncio.sleep(0.1)
        assert server.services.connections == {}, "a closed session is still registered"
        left = _alive(per_session, known)
        for _ in range(40):  # a speculative turn's abandoned decode may still be running
            if not left:
                break
            await asyncio.sleep(0.05)
            left = _alive(per_session, known)
        assert left == {}, "per-session objects outlived their session"
        del known
        assert baseline_tasks() <= tasks0, "asyncio tasks left behind by ended sessions"
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
        await runner.cleanup()
    # Memory that halfsec's own lines allocated and still hold (imports, the interpreter's
    # and libraries' one-off caches are other files).  A leak of a session's audio alone
    # would be ~200 KB a session (3 s in, the reply out, 16 kHz int16).
    ours = [tracemalloc.Filter(True, "*/halfsec/*")]
    diff = after.filter_traces(ours).compare_to(before.filter_traces(ours), "lineno")
    growth = sum(d.size_diff for d in diff)
    top = "; ".join(str(d) for d in diff[:5])
    assert growth < 160 * 1024, (
        f"halfsec held {growth / 1024:.0f} KB more after {n} sessions: {top}"
    )


_DECODE_NEW_LENGTHS = """
import ctypes, json, sys
from pathlib import Path
from halfsec.audio.io import load_audio
from halfsec.stt.whisper import WhisperEngine

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def in_use() -> int:  # bytes malloc has handed out and not had back (all arenas, mmaps)
    m = libc.mallinfo2()
    return m.uordblks + m.hblkhd

engine = WhisperEngine()
pcms = [load_audio(f) for f in sorted(Path(sys.argv[1]).glob("*.flac"))[:26]]
for pcm in pcms[:6]:
    engine.run_blocking(pcm)
before = in_use()
for pcm in pcms[6:]:
    engine.run_blocking(pcm)
print(json.dumps({"growth": in_use() - before, "lengths": len({len(p) for p in pcms[6:]})}))
"""


def test_decoding_new_lengths_does_not_grow_native_memory(speech_dir: Path) -> None:
    """A fresh process (the cache is sized at the first decode): 20 utterances of 20
    lengths after 6 warm ones.  With oneDNN's default cache this grew 11 MB."""
    env = {k: v for k, v in os.environ.items() if k != ONEDNN_CACHE_VAR}
    out = subprocess.run(
        [sys.executable, "-c", _DECODE_NEW_LENGTHS, str(speech_dir / "audio")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["lengths"] >= 15, r
    assert r["growth"] < 4 * 2**20, f"native memory grew {r['growth'] / 2**20:.1f} MB"

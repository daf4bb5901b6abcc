"""Barge-in that people expect: the reply pauses at once, a backchannel resumes it, an
interruption stops it (``runtime/barge_in.py``).

The decision rules and the pausable pieces (client timeline, paced Opus sender) are
tested alone; then real recordings through the real engines: a coffee order, and while
its reply plays, a backchannel ("okay", "mm-hmm", a person's "yes") or an interruption
("hold on", a person's "stop"), at real-time pace.  Last, the lab's interrupt client
through a real server over WebSocket, measured at the client.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from halfsec.audio.framing import frames_of
from halfsec.audio.io import load_audio
from halfsec.audio.timeline import PlaybackTimeline
from halfsec.clock import now_ns
from halfsec.config import load_config
from halfsec.frames import (
    EndOfTurn,
    Frame,
    Interruption,
    ReplyAudio,
    ReplyPaused,
    ReplyResumed,
    SpeechStarted,
    TimingMark,
)
from halfsec.lab.clients.interrupt import run_barge_in
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.runtime.barge_in import NOISE_GAP_MS, PausedReply, classify, is_backchannel
from halfsec.runtime.engines import Engines
from halfsec.runtime.options import SessionOptions
from halfsec.runtime.session import VoiceSession
from halfsec.server.app import start_server
from halfsec.server.options import ServerOptions
from halfsec.wire.protocol import frame_to_event
from halfsec.wire.realtime_audio import PacedOpusOut

CLIPS = Path(__file__).parent / "data" / "barge_in"
GAP_S = 2.0
"""Silence after the order's last voiced sample before the clip: past the 1.5 s after the
end of turn in which speech continues the user's turn instead (``continuation_ms``)."""


# ------------------------------------------------------------------ the rules alone


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Uh-huh.", True),
        ("mm-mm,", True),
        ("Mm-hmm.", True),
        ("Yeah, yeah, yeah.", True),
        ("Okay.", True),
        ("I see.", True),
        ("", True),
        ("Wait,", False),
        ("No, stop.", False),
        ("okay wait", False),
        ("actually make it a small one.", False),
    ],
)
def test_backchannel_words(text: str, expected: bool) -> None:
    assert is_backchannel(text) is expected


def test_short_unknown_speech_is_unclear_unless_the_domain_understands_it() -> None:
    def understood(text: str) -> bool:
        return "large" in text.lower()

    assert classify("and mama.", understood) == "unclear"  # Whisper's reading of a hum
    assert classify("Large.", understood) == "interrupt"  # an answer to the reply
    assert classify("now,", understood) == "interrupt"  # a clipped "no"
    assert classify("the weather today", understood) == "interrupt"  # three words
    assert classify("Mm-hmm.", understood) == "backchannel"


def test_verdicts() -> None:
    opt = SessionOptions(interrupt_min_speech_ms=100, backchannel_wait_ms=500)
    p = PausedReply(1, 1000.0)
    # No turn yet: voiced windows keep it pending, a gap of NOISE_GAP_MS resumes it.
    assert p.verdict(False, False, True, 1020.0, None, 0.0, opt) is None
    assert p.verdict(False, False, False, 1020.0 + NOISE_GAP_MS - 1, None, 0, opt) is None
    assert p.verdict(False, False, False, 1020.0 + NOISE_GAP_MS, None, 0, opt) == "noise"
    # A turn: long speech interrupts whatever it says.
    q = PausedReply(1, 0.0)
    verdicts = [q.verdict(True, True, True, 0.0, None, 0.0, opt) for _ in range(5)]
    assert verdicts == [None, None, None, None, "interrupt"]
    # Short speech: the transcript decides; none in time resumes.
    assert q.verdict(True, False, False, 0, "Uh-huh.", 199, opt) is None  # a dip, maybe
    assert q.verdict(True, False, False, 0, "Uh-huh.", 200, opt) == "backchannel"
    assert q.verdict(True, False, False, 0, "Wait.", 200, opt) == "interrupt"
    assert q.verdict(True, False, False, 0, " ", 200, opt) == "noise"
    assert q.verdict(True, False, False, 0, None, 499, opt) is None
    assert q.verdict(True, False, False, 0, None, 500, opt) == "timeout"


def test_events_on_the_wire() -> None:
    ev = frame_to_event(ReplyPaused(turn_id=3, t_ns=5, audio_ms=1200.0))
    assert ev == {"type": "reply.paused", "turn_id": 3, "t_server_ns": 5, "audio_ms": 1200.0}
    ev = frame_to_event(ReplyResumed(turn_id=3, t_ns=6, paused_ms=700.0, reason="backchannel"))
    assert ev is not None and ev["type"] == "reply.resumed" and ev["reason"] == "backchannel"


def test_timeline_pause_keeps_the_rest_and_resume_plays_it() -> None:
    tl = PlaybackTimeline(1000, 0)  # 1 sample per ms
    tl.place(np.full(500, 7, np.int16), 0, 1)  # plays 0..500
    tl.pause(200_000_000)  # at 200 ms
    tl.place(np.full(100, 9, np.int16), 300_000_000, 1)  # arrives while paused
    assert tl.played.size == 200 and tl.played[199] == 7
    tl.resume(1_000_000_000)  # at 1 s: the 300 held + 100 new play from there
    played = tl.played
    assert played[:200].tolist() == [7] * 200
    assert not played[200:1000].any()
    assert played[1000:1300].tolist() == [7] * 300 and played[1300:1400].tolist() == [9] * 100
    tl.pause(1_100_000_000)
    tl.stop(1_100_000_000)  # an interruption while paused drops what was kept
    tl.resume(2_000_000_000)
    assert tl.played.size == 1100


async def test_paced_opus_holds_a_paused_turn() -> None:
    out = PacedOpusOut(16_000)
    out.put(1, np.full(320 * 3, 1000, np.int16))
    assert (await asyncio.wait_for(out.next_slot(), 1)).turn_id == 1
    out.pause(1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(out.next_slot(), 0.15)
    out.resume(1)
    assert (await asyncio.wait_for(out.next_slot(), 1)).turn_id == 1
    out.pause(1)
    out.flush(1)  # interrupted while paused: nothing of it is ever sent
    out.put(2, np.full(320, 1000, np.int16))
    assert (await asyncio.wait_for(out.next_slot(), 1)).turn_id == 2


# ------------------------------------------------------------------ real speech, a session


def _order(rows: list[dict[str, str]], speech_dir: Path) -> np.ndarray:
    row = min(
        (r for r in rows if r["intent"] == "orderDrink"), key=lambda r: float(r["duration_s"])
    )
    pcm = load_audio(speech_dir / row["file"])
    b = voiced_bounds(pcm)
    assert b is not None
    return pcm[max(0, b[0] - 4800) : b[1] + 1]


async def _converse(
    engines: Engines, order: np.ndarray, clip: np.ndarray, **session: str
) -> tuple[list[Frame], float]:
    """Order, ``GAP_S`` of silence, ``clip``, 4 s of silence, at real-time pace; returns
    the session's frames and the clip's voiced onset (ms on the session's input)."""
    cfg = load_config(None, [f"session.{k}={v}" for k, v in session.items()])
    vs = VoiceSession(engines, cfg.turn, cfg.session, output_rate=cfg.audio.output_rate)
    gap = np.zeros(int(16_000 * GAP_S), np.int16)
    pcm = np.concatenate([order, gap, clip, np.zeros(64_000, np.int16)])
    b = voiced_bounds(clip)
    assert b is not None
    onset_ms = (order.size + gap.size + b[0]) / 16.0
    frames: list[Frame] = []

    async def read() -> None:
        async for f in vs.events():
            frames.append(f)

    reader = asyncio.create_task(read())
    t0 = now_ns()
    for k, frame in enumerate(frames_of(pcm)):
        await asyncio.sleep(max(0.0, (t0 + (k + 1) * 20_000_000 - now_ns()) / 1e9))
        await vs.push(frame)
    await vs.close()
    await reader
    return frames, onset_ms


def _told(frames: list[Frame]) -> list[str]:
    """What the session said besides audio, for failure messages."""
    return [repr(f) for f in frames if not isinstance(f, ReplyAudio | TimingMark)]


def _of(frames: list[Frame], kind: type[Frame]) -> list[Frame]:
    return [f for f in frames if isinstance(f, kind)]


def _reply_ms(frames: list[Frame], turn_id: int) -> float:
    return sum(
        f.pcm.size * 1000 / f.sample_rate
        for f in frames
        if isinstance(f, ReplyAudio) and f.turn_id == turn_id
    )


@pytest.mark.parametrize(
    "clip", ["backchannel_okay_piper.flac", "backchannel_mm_hmm_espeak.flac", "human_yes"]
)
async def test_a_backchannel_pauses_the_reply_and_resumes_it(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path, clip: str
) -> None:
    path = (
        speech_dir / "audio" / "speechcommands_yes_439c84f4_nohash_1.flac"
        if clip == "human_yes"
        else CLIPS / clip
    )
    frames, onset_ms = await _converse(engines, _order(rows, speech_dir), load_audio(path))
    assert _reply_ms(frames, 1) > GAP_S * 1000 + 500, "the reply must still play at the clip"
    paused = _of(frames, ReplyPaused)
    resumed = _of(frames, ReplyResumed)
    assert [f.turn_id for f in paused] == [1], _told(frames)
    assert isinstance(paused[0], ReplyPaused)
    # Paused within a few VAD windows of the onset (generous: the target is a benchmark's).
    assert 0 <= paused[0].audio_ms - onset_ms <= 300, (paused[0].audio_ms, onset_ms)
    assert [f.turn_id for f in resumed] == [1], _told(frames)
    assert isinstance(resumed[0], ReplyResumed)
    assert resumed[0].reason == "backchannel", resumed[0]
    assert 0 < resumed[0].paused_ms < 2000
    assert not _of(frames, Interruption)
    # The backchannel never became a turn anyone sees.
    assert [f.turn_id for f in _of(frames, SpeechStarted)] == [1]
    assert {f.turn_id for f in frames} == {1}


@pytest.mark.parametrize("clip", ["interruption_hold_on_piper.flac", "human_stop"])
async def test_an_interruption_pauses_then_cancels_the_reply(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path, clip: str
) -> None:
    path = (
        speech_dir / "audio" / "speechcommands_stop_a9abc695_nohash_1.flac"
        if clip == "human_stop"
        else CLIPS / clip
    )
    frames, onset_ms = await _converse(engines, _order(rows, speech_dir), load_audio(path))
    kinds = [type(f).__name__ for f in frames if isinstance(f, ReplyPaused | Interruption)]
    assert kinds == ["ReplyPaused", "Interruption"], _told(frames)
    paused = _of(frames, ReplyPaused)[0]
    assert isinstance(paused, ReplyPaused)
    assert 0 <= paused.audio_ms - onset_ms <= 300, (paused.audio_ms, onset_ms)
    assert not _of(frames, ReplyResumed)
    # The interruption is a turn: started (after the interruption), ended, answered.
    i_intr = next(i for i, f in enumerate(frames) if isinstance(f, Interruption))
    i_start = next(
        i for i, f in enumerate(frames) if isinstance(f, SpeechStarted) and f.turn_id == 2
    )
    assert i_intr < i_start
    assert [f.turn_id for f in _of(frames, EndOfTurn)] == [1, 2]


async def test_cancel_mode_cancels_without_pausing(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    frames, _ = await _converse(
        engines,
        _order(rows, speech_dir),
        load_audio(CLIPS / "backchannel_okay_piper.flac"),
        barge_in="cancel",
    )
    assert not _of(frames, ReplyPaused) and not _of(frames, ReplyResumed)
    assert [f.turn_id for f in _of(frames, Interruption)] == [1]


# ------------------------------------------------------------------ the client's view


async def test_the_interrupt_client_hears_the_pause_and_the_stop(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    _server, runner, port = await start_server(
        engines, load_config(), ServerOptions(host="127.0.0.1", port=0)
    )
    url = f"ws://127.0.0.1:{port}/ws"
    order = _order(rows, speech_dir)
    try:
        bc = await run_barge_in(url, order, load_audio(CLIPS / "backchannel_okay_piper.flac"), 1800)
        it = await run_barge_in(
            url, order, load_audio(CLIPS / "interruption_hold_on_piper.flac"), 1800
        )
    finally:
        await runner.cleanup()
    assert bc.error is None and it.error is None, (bc.error, it.error)
    assert bc.paused and bc.resumed and not bc.cancelled, bc
    assert bc.stop_ms is not None and bc.stop_ms < 250, bc.stop_ms
    assert bc.pause_heard_ms is not None and 0 < bc.pause_heard_ms < 2500, bc.pause_heard_ms
    assert it.paused and it.cancelled and not it.resumed, it
    assert it.stop_ms is not None and it.stop_ms < 250, it.stop_ms

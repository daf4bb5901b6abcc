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
from halfsec.lab.clients.interrupt import BargeInRun, _measure, _Player, final_stop, run_barge_in
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.runtime.barge_in import (
    ENERGY_HOLD_MS,
    ENERGY_ONLY_MAX_MS,
    NOISE_GAP_MS,
    UNVOICED_LEAD_MS,
    PausedReply,
    classify,
    is_backchannel,
)
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


def test_an_energy_pause_waits_for_the_vad_past_a_closure() -> None:
    """The "s" of "stop" pauses the reply on energy; 100-150 ms of closure follow before
    the vowel Silero hears.  Resuming there (and pausing again at the vowel) let the
    reply sound in between: the pause is kept ``ENERGY_HOLD_MS`` after the last loud
    frame, and bounded by ``ENERGY_ONLY_MAX_MS`` when no voiced window ever comes."""
    opt = SessionOptions()
    p = PausedReply(1, 1000.0)
    assert p.verdict(False, False, False, 1020.0, None, 0.0, opt, loud=True) is None  # "s"
    assert p.verdict(False, False, False, 1060.0, None, 0.0, opt, loud=True) is None
    assert p.verdict(False, False, False, 1200.0, None, 0.0, opt) is None  # 140 ms closure
    assert p.verdict(False, False, True, 1220.0, None, 0.0, opt) is None  # the vowel
    # A click: resumed once it has been gone ENERGY_HOLD_MS; energy still pauses later.
    q = PausedReply(1, 0.0)
    assert q.verdict(False, False, False, 20.0, None, 0.0, opt, loud=True) is None
    assert q.verdict(False, False, False, 20.0 + ENERGY_HOLD_MS - 20, None, 0, opt) is None
    assert q.verdict(False, False, False, 20.0 + ENERGY_HOLD_MS, None, 0, opt) == "noise"
    assert not q.hum
    # A hum: loud on and on, never voiced: resumed at the bound, and energy is off.
    h = PausedReply(1, 0.0)
    pos = [20.0 * k for k in range(1, int(ENERGY_ONLY_MAX_MS // 20) + 1)]
    got = [h.verdict(False, False, False, t, None, 0.0, opt, loud=True) for t in pos]
    assert got[:-1] == [None] * (len(pos) - 1) and got[-1] == "noise" and h.hum


def test_unclear_words_that_began_unvoiced_interrupt() -> None:
    """Whisper misreads a person's "stop" as "start,": one word, no cue, so ``unclear``,
    which resumes (hums come out as words too).  But a hum is voiced from its first
    sound, and this began with the "s" and closure: loud, unvoiced, for 160 ms."""
    opt = SessionOptions()
    s = PausedReply(1, 1000.0)
    assert s.verdict(False, False, False, 1020.0, None, 0.0, opt, loud=True) is None
    assert s.verdict(False, False, True, 1000.0 + UNVOICED_LEAD_MS, None, 0, opt) is None
    assert s.verdict(True, False, False, 0, "start,", 200, opt) == "interrupt"
    m = PausedReply(1, 1000.0)  # "mm-hmm": voiced at once
    assert m.verdict(False, False, True, 1040.0, None, 0.0, opt) is None
    assert m.verdict(True, False, False, 0, "and mama.", 200, opt) == "unclear"
    assert m.verdict(True, False, False, 0, "Uh-huh.", 200, opt) == "backchannel"


def test_the_final_stop_is_the_pause_no_resume_undid() -> None:
    ms = 1_000_000
    pause, resume, cancel = "reply.paused", "reply.resumed", "interruption"
    flap = [
        (100 * ms, pause, 1),
        (250 * ms, resume, 1),
        (300 * ms, pause, 1),
        (900 * ms, cancel, 1),
    ]
    assert final_stop(flap, 1, 0) == 300 * ms  # not the first pause: it resumed
    assert final_stop([(100 * ms, pause, 1), (900 * ms, cancel, 1)], 1, 0) == 100 * ms
    assert final_stop([(100 * ms, pause, 1), (600 * ms, resume, 1)], 1, 0) is None
    assert final_stop([(50 * ms, pause, 2), (100 * ms, cancel, 1)], 1, 0) == 100 * ms
    assert final_stop([(50 * ms, pause, 1), (60 * ms, resume, 1)], 1, 55 * ms) is None


def test_the_client_measures_to_the_final_stop() -> None:
    """Reply audio heard between a resume and the second pause counts; an interruption
    whose pause was resumed for good did not stop the reply."""
    ms = 1_000_000

    def run(events: list[tuple[int, str]]) -> BargeInRun:
        player = _Player(1000, 0)  # 1 sample per ms
        player.audio(1, np.full(2000, 8000, np.int16), 0)  # the reply: 0..2000 ms
        out = BargeInRun(at_ms=0.0, onset_sample=1000, clip_ns=950 * ms, reply_turn=1)
        for t, kind in events:
            ev = {"type": kind, "turn_id": 1}
            out.events.append((t * ms, ev))
            player.event(ev, t * ms)
        _measure(player, out)
        return out

    flap = run(
        [
            (1020, "reply.paused"),
            (1150, "reply.resumed"),
            (1230, "reply.paused"),
            (1600, "interruption"),
        ]
    )
    assert flap.stopped and flap.cancelled and flap.pauses == 2
    assert flap.stop_ms == pytest.approx(230, abs=2) and flap.cut_ms == pytest.approx(230, abs=2)
    once = run([(1020, "reply.paused"), (1600, "interruption")])
    assert once.stop_ms == pytest.approx(20, abs=2) and once.cut_ms == pytest.approx(20, abs=2)
    before = run([(400, "reply.paused"), (500, "reply.resumed"), (1020, "reply.paused")])
    assert before.pauses == 1 and before.paused and not before.resumed  # the clip's pause
    missed = run([(1020, "reply.paused"), (1300, "reply.resumed")])
    assert not missed.stopped and missed.cut_ms is None
    assert missed.stop_ms == pytest.approx(1280, abs=2)  # the reply played on to its end


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
    # Whisper tiny writes the synthetic hum "Mm-hmm." or, on a loaded box, "you": both
    # resume (``unclear``: a hum read as a word), neither is an interruption.
    assert resumed[0].reason in ("backchannel", "unclear"), resumed[0]
    assert 0 < resumed[0].paused_ms < 3500  # the speech + backchannel_wait_ms, and slack
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


async def test_a_stop_after_its_closure_pauses_the_reply_once(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    """A person's "stop" whose "s" is followed by 120 ms of closure before the vowel:
    the reply paused on the "s", resumed as noise in the closure and paused again at the
    vowel (it sounded in between).  Now it pauses once, until the speech is judged."""
    stop = load_audio(speech_dir / "audio" / "speechcommands_stop_1eddce1d_nohash_3.flac")
    frames, onset_ms = await _converse(engines, _order(rows, speech_dir), stop)
    assert _reply_ms(frames, 1) > GAP_S * 1000 + 500, "the reply must still play at the clip"
    marks = [f for f in frames if isinstance(f, ReplyPaused | ReplyResumed | Interruption)]
    assert isinstance(marks[0], ReplyPaused), _told(frames)
    assert 0 <= marks[0].audio_ms - onset_ms <= 100, (marks[0].audio_ms, onset_ms)
    # Whisper reads it "start," or "Stop.": an interruption either way (its "s" and
    # closure are no hum).
    assert [type(f).__name__ for f in marks] == ["ReplyPaused", "Interruption"], _told(frames)


async def test_a_click_does_not_leave_the_next_interruption_to_the_vad(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    """A click pauses the reply and resumes it as noise; energy must go on pausing that
    reply, or the next interruption waits for Silero's vowel.  The person's "stop" here
    is loud 200 ms before the VAD hears speech in it."""
    click = (np.random.default_rng(0).standard_normal(640) * 3000).astype(np.int16)
    stop = load_audio(speech_dir / "audio" / "speechcommands_stop_a9abc695_nohash_1.flac")
    b = voiced_bounds(stop)
    assert b is not None
    lead = np.concatenate([click, np.zeros(8000, np.int16)])  # 40 ms click, 500 ms quiet
    clip = np.concatenate([lead, stop])
    frames, at_ms = await _converse(engines, _order(rows, speech_dir), clip)
    vb = voiced_bounds(clip)
    assert vb is not None
    onset_ms = at_ms + (lead.size + b[0] - vb[0]) / 16.0  # the "s" of "stop"
    marks = [f for f in frames if isinstance(f, ReplyPaused | ReplyResumed | Interruption)]
    kinds = [type(f).__name__ for f in marks]
    assert kinds[:3] == ["ReplyPaused", "ReplyResumed", "ReplyPaused"], _told(frames)
    assert isinstance(marks[1], ReplyResumed) and marks[1].reason == "noise", marks
    assert isinstance(marks[2], ReplyPaused)
    assert 0 <= marks[2].audio_ms - onset_ms <= 100, (marks[2].audio_ms, onset_ms)
    assert kinds[3:] == ["Interruption"], _told(frames)


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
    assert bc.pauses == 1 and not bc.stopped and bc.cut_ms is None, bc  # a pause, no stop
    assert bc.pause_heard_ms is not None and 0 < bc.pause_heard_ms < 2500, bc.pause_heard_ms
    assert it.paused and it.cancelled and not it.resumed and it.stopped, it
    assert it.stop_ms is not None and it.stop_ms < 250, it.stop_ms
    assert it.cut_ms is not None and it.stop_ms <= it.cut_ms < 250, it.cut_ms  # the pause

"""Adaptive jitter buffer under the lab's network profiles (seeded), in simulated time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from halfsec import FRAME_SAMPLES
from halfsec.lab.netem.packet_sim import run_simulation, simulate_arrivals
from halfsec.lab.netem.profile import PROFILES, NetSpec
from halfsec.wire.frame_decoders import OpusFrameDecoder, Pcm16FrameDecoder
from halfsec.wire.jitter import JitterBuffer, JitterConfig, JitterPacket
from halfsec.wire.opus import OpusEncoder
from halfsec.wire.playout import play_when_due, playout_loop
from halfsec.wire.realtime_audio import FRAME_TICKS, PacedOpusOut

MS = 1_000_000
TS = 960  # 20 ms at the 48 kHz RTP clock


def speech(speech_dir: Path, n: int = 6) -> np.ndarray:
    parts = [
        sf.read(speech_dir / f"audio/ljspeech_LJ001-000{i}.flac", dtype="int16")[0]
        for i in range(1, n + 1)
    ]
    return np.concatenate(parts)


def tagged_frames(n: int, amp: int = 3000) -> list[bytes]:
    """PCM frames whose last sample carries the frame index, so order can be checked."""
    out = []
    for i in range(n):
        f = np.full(FRAME_SAMPLES, amp, np.int16)
        f[-1] = i % 30000
        out.append(f.astype("<i2").tobytes())
    return out


def pkt(i: int, payload: bytes) -> JitterPacket:
    return JitterPacket(i % 65536, (i * TS) % (1 << 32), payload)


def test_reordering_and_duplicates_play_in_order() -> None:
    n = 1500
    frames = tagged_frames(n)
    prof = NetSpec(delay_ms=30.0, jitter_ms=25.0, reorder=0.05, dup=0.03, name="reorder")
    events = simulate_arrivals(prof, frames, seed=7)
    arrival_order = [e[1].seq for e in events]
    inversions = sum(a > b for a, b in zip(arrival_order, arrival_order[1:], strict=False))
    assert inversions > 50  # the network really reordered
    jb = JitterBuffer(Pcm16FrameDecoder())
    out = run_simulation(jb, events, n)
    # Real frames, not PLC: a PLC frame starts at the last frame's level and fades, so
    # its first sample alone does not tell (netem's reordering makes the buffer stretch
    # right after a real frame).
    tags = [int(f[-1]) for f in out if int(f[0]) == 3000 and int(f[-2]) == 3000]
    assert tags == sorted(tags) and len(set(tags)) == len(tags)
    assert len(tags) >= n * 0.99
    assert jb.stats.duplicates >= 20
    assert jb.stats.duplicates == len(events) - n


def test_4g_opus_speech_meets_delay_and_concealment_targets(speech_dir: Path) -> None:
    """The lab's ``4g``: its jitter is normal (sd 15 ms) and in order, so a p98 target
    sits about two standard deviations (~31 ms) above the median transit, and the
    simulation's fixed 20 ms pop grid adds 0-20 ms: a median near 40 ms (38.7 and 40.2
    on these seeds).  45 ms is that, not the 40 ms once met on a uniform +/-15 ms link."""
    pcm = speech(speech_dir)
    enc = OpusEncoder(16000, expected_loss_pct=5)
    packets = [enc.encode(pcm[i * 320 : (i + 1) * 320]) for i in range(pcm.size // 320)]
    for seed in (1, 2):
        jb = JitterBuffer(OpusFrameDecoder(16000))
        events = simulate_arrivals(PROFILES["4g"], packets, seed=seed)
        lost = len(packets) - len({e[1].seq for e in events})
        assert lost > 0
        out = run_simulation(jb, events, len(packets), tick_phase_ms=seed * 6.0)
        s = jb.stats.summary()
        assert all(f.size == FRAME_SAMPLES for f in out)
        assert s["concealed_pct"] <= 1.0, s
        assert s["fec_recovered"] > 0, s
        assert s["delay_p50_ms"] <= 45.0, s
        assert abs(len(out) - len(packets)) <= 30, (len(out), len(packets))


def _phased_events(payloads: list[bytes], phases: list[tuple[int, float]], seed: int = 3):
    """Arrivals where frame i gets +/- jitter of the phase it falls in."""
    rng = np.random.default_rng(seed)
    events = []
    i = 0
    for count, jitter in phases:
        for _ in range(count):
            d = 20.0 + rng.uniform(-jitter, jitter) if jitter else 20.0
            events.append((1_000 * MS + i * 20 * MS + int(max(0.0, d) * MS), pkt(i, payloads[i])))
            i += 1
    events.sort(key=lambda e: e[0])
    return events


def test_target_grows_on_jitter_and_shrinks_after(speech_dir: Path) -> None:
    pcm = speech(speech_dir, 8)
    n = pcm.size // FRAME_SAMPLES
    payloads = [pcm[i * 320 : (i + 1) * 320].astype("<i2").tobytes() for i in range(n)]
    calm, rough = 500, 500  # 10 s each
    events = _phased_events(payloads, [(calm, 0.5), (rough, 40.0), (n - calm - rough, 0.5)])
    jb = JitterBuffer(Pcm16FrameDecoder())
    targets: list[float] = []
    currents: list[float] = []
    period = 20 * MS
    t, k = events[0][0], 0
    while k < len(events) or jb.buffered:
        while k < len(events) and events[k][0] <= t:
            jb.push(events[k][1], events[k][0])
            k += 1
        if jb.pop(t) is not None:
            targets.append(jb.target_delay_ms)
            currents.append(jb.stats.current_delay_ms)
        t += period
    assert max(targets[100:calm]) < 10.0
    assert max(targets[calm : calm + rough]) > 50.0
    # Shrinks back once the jitter is over: target and the real delay both come down.
    assert targets[-1] < 10.0, targets[-50:]
    assert np.median(currents[-100:]) < 30.0, currents[-100:]
    assert jb.stats.dropped_for_delay > 0
    # The way down is smooth: the target never falls more than shrink rate allows.
    falls = [a - b for a, b in zip(targets, targets[1:], strict=False) if a > b]
    assert max(falls) <= jb.cfg.shrink_ms_per_s * 0.02 * 2 + 1e-6


def test_fec_from_buffered_successor_and_late_packet_dropped(speech_dir: Path) -> None:
    pcm = speech(speech_dir, 1)
    enc = OpusEncoder(16000, expected_loss_pct=10)
    packets = [enc.encode(pcm[i * 320 : (i + 1) * 320]) for i in range(40)]
    jb = JitterBuffer(OpusFrameDecoder(16000), JitterConfig(min_delay_ms=40.0))
    t0 = 1_000 * MS
    for i in range(10):
        if i != 5:
            jb.push(pkt(i, packets[i]), t0 + i * 20 * MS)
    played = [jb.pop(t0 + 40 * MS + j * 20 * MS) for j in range(7)]
    assert all(p is not None for p in played)
    assert jb.stats.fec_recovered == 1 and jb.stats.concealed == 0
    jb.push(pkt(5, packets[5]), t0 + 200 * MS)  # finally arrives: too late
    assert jb.stats.late_dropped == 1
    jb.push(pkt(6, packets[6]), t0 + 201 * MS)  # a duplicate of one already played
    assert jb.stats.duplicates == 1


def test_sequence_wraparound_keeps_order() -> None:
    frames = tagged_frames(200)
    jb = JitterBuffer(Pcm16FrameDecoder())
    start = 65500
    out = []
    for i in range(200):
        seq = (start + i) % 65536
        ts = ((start + i) * TS) % (1 << 32)
        jb.push(JitterPacket(seq, ts, frames[i]), 1_000 * MS + i * 20 * MS)
        f = jb.pop(1_000 * MS + i * 20 * MS + 1)
        if f is not None:
            out.append(int(f[-1]))
    assert out == list(range(len(out))) and len(out) > 190


def test_missing_frame_with_nothing_after_stretches_then_plays_late_arrival() -> None:
    frames = tagged_frames(10)
    jb = JitterBuffer(Pcm16FrameDecoder())
    for i in range(3):
        jb.push(pkt(i, frames[i]), i * 20 * MS)
        assert jb.pop(i * 20 * MS + 10 * MS) is not None
    stretched = jb.pop(70 * MS)  # frame 3 is late: conceal without skipping it
    assert stretched is not None and jb.stats.stretched == 1
    jb.push(pkt(3, frames[3]), 75 * MS)
    f = jb.pop(90 * MS)
    assert f is not None and int(f[-1]) == 3
    assert jb.stats.late_dropped == 0 and jb.stats.concealed == 0


def test_turn_summary_reports_and_resets() -> None:
    frames = tagged_frames(100)
    jb = JitterBuffer(Pcm16FrameDecoder())
    events = simulate_arrivals(PROFILES["wifi"], frames, seed=1)
    run_simulation(jb, events, 100)
    s = jb.turn_summary()
    assert s["played"] >= 99 and s["delay_p50_ms"] is not None
    assert s["jitter_buffer_ms"] == s["delay_p50_ms"]
    assert s["delay_p95_ms"] >= s["delay_p50_ms"]
    assert jb.turn_summary()["played"] == 0
    assert jb.stats.played >= 99


def test_idle_sender_resets_playout() -> None:
    frames = tagged_frames(5)
    jb = JitterBuffer(Pcm16FrameDecoder())
    for i in range(5):
        jb.push(pkt(i, frames[i]), i * 20 * MS)
        jb.pop(i * 20 * MS)
    outs = [jb.pop((5 + j) * 20 * MS) for j in range(40)]
    assert outs[-1] is None  # after idle_reset_ms the buffer stops producing frames


async def test_playout_loop_real_time() -> None:
    frames = tagged_frames(20)
    jb = JitterBuffer(Pcm16FrameDecoder())
    got: list[tuple[int, int, bool]] = []
    stop = asyncio.Event()

    async def sender() -> None:
        for i in range(20):
            jb.push(pkt(i, frames[i]))
            await asyncio.sleep(0.02)

    def sink(frame: np.ndarray) -> None:
        real = int(frame[0]) == 3000 and int(frame[-2]) == 3000  # PLC frames are faded
        got.append((time.monotonic_ns(), int(frame[-1]), real))

    task = asyncio.create_task(playout_loop(jb, sink, stop))
    await sender()
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 1.0)
    assert len(got) >= 18
    # Real frames in order, none lost; a concealment frame inserted when the loaded
    # machine delivered a packet late is allowed (it is not one of the tagged frames).
    tags = [g[1] for g in got if g[2]]
    assert tags[:18] == list(range(18)), got
    gaps = np.diff([g[0] for g in got]) / 1e6
    assert 15.0 < float(np.median(gaps)) < 25.0


def test_next_due_is_send_time_plus_min_transit_plus_target() -> None:
    """On a clean link a frame is due ~target (margin) after it arrived, not on a grid."""
    frames = tagged_frames(10)
    jb = JitterBuffer(Pcm16FrameDecoder())
    assert jb.next_due_ns() is None
    t0 = 1_000 * MS
    jb.push(pkt(0, frames[0]), t0 + 5 * MS)  # 5 ms transit
    due = jb.next_due_ns()
    assert due is not None and due - (t0 + 5 * MS) <= 3 * MS
    assert jb.pop(due) is not None
    jb.push(pkt(1, frames[1]), t0 + 25 * MS)
    assert jb.next_due_ns() == due + 20 * MS
    # A sender pause is a timestamp jump: the packet after it is due at its own time.
    jb.pop(due + 20 * MS)
    jb.push(JitterPacket(2, 50 * TS, frames[2]), t0 + 1_005 * MS)
    nxt = jb.next_due_ns()
    assert nxt is not None and nxt - (t0 + 1_005 * MS) <= 3 * MS


async def test_play_when_due_hands_frames_on_within_a_few_ms() -> None:
    frames = tagged_frames(15)
    jb = JitterBuffer(Pcm16FrameDecoder())
    wake = asyncio.Event()
    waits: list[float] = []
    sent: dict[int, int] = {}

    def handle(frame: np.ndarray | None, now: int) -> None:
        # The wait beyond the buffer's own target: that much is the playout loop's.  (The
        # target itself follows the measured jitter, which on a loaded machine includes
        # this test's own sleep lateness.)  A fixed 20 ms grid would add 0-20 ms here.
        if frame is not None and int(frame[0]) == 3000 and int(frame[-1]) in sent:
            waits.append((now - sent[int(frame[-1])]) / 1e6 - jb.target_delay_ms)

    task = asyncio.create_task(play_when_due(jb, handle, wake))
    t0 = time.monotonic_ns()
    for i in range(15):
        await asyncio.sleep(max(0.0, (t0 + i * 20 * MS - time.monotonic_ns()) / 1e9))
        sent[i] = time.monotonic_ns()
        jb.push(pkt(i, frames[i]), sent[i])
        wake.set()
    await asyncio.sleep(0.05)
    task.cancel()
    assert len(waits) >= 14
    assert float(np.median(waits)) < 6.0, waits


async def test_reply_pacing_reanchors_at_each_replys_first_packet() -> None:
    """A reply queued between slots leaves at once (not on the previous reply's grid),
    with its exact elapsed time as timestamp; later frames follow every 20 ms."""
    out = PacedOpusOut(16_000)
    first = await out.next_slot(continuous=True)  # the session's first (silent) packet
    t_origin = time.monotonic_ns()
    await asyncio.sleep(0.013)  # mid-slot

    async def put_later() -> None:
        await asyncio.sleep(0.017)
        out.put(1, np.full(16_000 * 60 // 1000, 1000, np.int16))  # 3 frames

    task = asyncio.create_task(put_later())
    slots, times = [], []
    for _ in range(3):
        slots.append(await out.next_slot())
        times.append(time.monotonic_ns())
    await task
    assert first.pts == 0 and slots[0].first_of_turn and slots[0].turn_id == 1
    elapsed_ms = (times[0] - t_origin) / 1e6
    assert 28.0 < elapsed_ms < 36.0  # ~30 ms: when it was queued, not the 40 ms slot
    # Its timestamp is when it left, not the grid's 40 ms: the two clocks are read a few
    # loop turns apart (3.3 ms seen on a 2-core box under a full test load), so 6 ms.
    assert abs(slots[0].pts / 48 - elapsed_ms) < 6.0
    assert [s.pts - slots[0].pts for s in slots] == [0, FRAME_TICKS, 2 * FRAME_TICKS]
    gaps = np.diff(times) / 1e6
    assert all(15.0 < g < 25.0 for g in gaps), gaps


def test_jitter_estimate_survives_sender_pauses() -> None:
    """DTX between replies: seconds without packets must not erase what the buffer
    learnt about the link, or the next reply starts with no margin and conceals.

    Two 2 s talk spurts over a +/-15 ms jittery link, 5 s of silence between them
    (sent as a timestamp jump, as RTP does).  The second spurt must start with about
    the target the first one ended with, and conceal (almost) nothing."""
    rng = np.random.default_rng(7)
    frames = tagged_frames(200)
    jb = JitterBuffer(Pcm16FrameDecoder())
    events: list[tuple[int, JitterPacket]] = []
    start = 1_000 * MS
    for i in range(200):
        gap = 0 if i < 100 else 5_000 * MS  # the pause: 5 s of send time skipped
        sent = start + i * 20 * MS + gap
        ts = (i * TS + (gap * 48_000 // 1_000_000_000)) % (1 << 32)
        arrival = sent + int((30.0 + rng.uniform(-15.0, 15.0)) * MS)
        events.append((arrival, JitterPacket(i, ts, frames[i])))
    events.sort(key=lambda e: e[0])
    first_targets: list[float] = []
    second: dict[str, Any] | None = None
    # Popped the way ``wire.playout.play_when_due`` pops: at each frame's due time,
    # never while nothing is buffered (so nothing runs during the pause).
    t, k, last = events[0][0], 0, None
    end = events[-1][0] + 1_000 * MS
    while t < end:
        while k < len(events) and events[k][0] <= t:
            jb.push(events[k][1], events[k][0])
            if events[k][1].seq == 100:
                first_targets.append(jb.target_delay_ms)
                jb.turn_summary()  # count the second spurt on its own
            k += 1
        due = jb.next_due_ns()
        if due is not None and last is not None:
            due = max(due, last + 20 * MS)
        if due is not None and due <= t:
            if jb.pop(t) is not None:
                last = due
            if second is None and jb.stats.decoded == 200:
                second = jb.turn_summary()  # up to its last frame (not the tail after it)
        t += MS
    assert second is not None
    assert first_targets, "the second spurt never arrived"
    # 20 ms/s of shrink over 5 s would have taken the whole 30 ms margin away.
    assert first_targets[0] > 15.0, first_targets
    assert second["late_dropped"] == 0 and second["decoded"] == 100, second
    assert second["stretched"] + second["concealed"] <= 2, second


def test_sender_pause_mid_stream_loses_nothing() -> None:
    """A DTX pause shorter than the idle reset (a TTS underrun mid-reply): the next
    packet has the next sequence number and a timestamp 400 ms ahead.  It and all that
    follow must play, none dropped as late."""
    frames = tagged_frames(20)
    jb = JitterBuffer(Pcm16FrameDecoder())
    played: list[int] = []
    t = 0
    for i in range(20):
        pause = 0 if i < 10 else 400 * MS
        sent = i * 20 * MS + pause
        while t < sent:  # the receiver plays on while it waits (through the pause)
            f = jb.pop(t)
            if f is not None and int(f[-2]) == 3000:  # a real frame, not a faded PLC one
                played.append(int(f[-1]))
            t += 20 * MS
        jb.push(JitterPacket(i, (sent * 48_000 // 1_000_000_000) % (1 << 32), frames[i]), sent)
    while jb.buffered:
        f = jb.pop(t)
        if f is not None and int(f[-2]) == 3000:
            played.append(int(f[-1]))
        t += 20 * MS
    assert played == list(range(20)), played
    assert jb.stats.late_dropped == 0 and jb.stats.decoded == 20

"""Embed halfsec in a program: a voice session fed by a microphone-like async source.

    python examples/embed_session.py examples/coffee_order.flac examples/off_topic_lamp.flac

A real program reads its microphone (sounddevice, PyAudio, a WebRTC track, a phone line)
and hands each 20 ms of 16 kHz int16 audio to ``VoiceSession.push``; here ``microphone``
stands in for one: it plays each file at the pace a microphone delivers it (one 20 ms
frame every 20 ms) and, like a live microphone, keeps sending silence after it, until the
agent has answered.  Then the "user" speaks the next file, in the same conversation.

The session's events are printed as they happen: what the user said, what the agent
understood and answers, and when its first reply audio came.  A real program would also
play the ``ReplyAudio`` frames (int16 at ``session.output_rate``) on its speaker, and stop
playing at an ``Interruption`` (the user spoke over the reply).

docs/api.md describes the API this uses.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np

from halfsec import (
    FRAME_MS,
    FRAME_SAMPLES,
    EndOfTurn,
    Engines,
    ErrorFrame,
    FinalTranscript,
    HalfsecConfig,
    HalfsecError,
    IntentFrame,
    Interruption,
    ReplyAudio,
    ReplyDone,
    ReplyText,
    VoiceSession,
    build_engines,
    frames_of,
    load_audio,
    load_config,
    open_session,
)

MAX_WAIT_S = 10.0
"""Silence sent after a file before giving up on an answer (a file with no speech)."""


async def microphone(paths: Sequence[Path], answered: asyncio.Event) -> AsyncIterator[np.ndarray]:
    """20 ms frames of each file in turn at real-time pace, each followed by silence
    until ``answered`` is set (at most ``MAX_WAIT_S``)."""
    loop = asyncio.get_running_loop()
    silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
    wait_frames = int(MAX_WAIT_S * 1000 / FRAME_MS)
    t0 = loop.time()
    k = 0
    for path in paths:
        answered.clear()
        speech = list(frames_of(load_audio(path)))
        for i, frame in enumerate(itertools.chain(speech, itertools.repeat(silence))):
            if i >= len(speech) and (answered.is_set() or i >= len(speech) + wait_frames):
                break
            k += 1
            # A microphone cannot deliver a frame before its last sample was spoken.
            await asyncio.sleep(max(0.0, t0 + k * FRAME_MS / 1000 - loop.time()))
            yield frame


async def show_events(session: VoiceSession, replied: asyncio.Event) -> None:
    """Print what the session says; set ``replied`` when a turn's reply is complete."""
    end_of_turn_ns: dict[int, int] = {}
    audio_s: dict[int, float] = {}
    async for f in session.events():
        if isinstance(f, EndOfTurn):
            end_of_turn_ns[f.turn_id] = f.t_ns
        elif isinstance(f, FinalTranscript):
            print(f"you: {f.text}", flush=True)
        elif isinstance(f, IntentFrame) and f.intent:
            print(f"intent: {f.intent} {f.slots}", flush=True)
        elif isinstance(f, ReplyText):
            print(f"agent: {f.text}", flush=True)
        elif isinstance(f, ReplyAudio):
            if f.turn_id not in audio_s and f.turn_id in end_of_turn_ns:
                wait_ms = (time.monotonic_ns() - end_of_turn_ns[f.turn_id]) / 1e6
                print(f"  (first reply audio {wait_ms:.0f} ms after the end of turn)", flush=True)
            audio_s[f.turn_id] = audio_s.get(f.turn_id, 0.0) + f.pcm.size / f.sample_rate
        elif isinstance(f, ReplyDone):
            seconds = audio_s.get(f.turn_id, 0.0)
            print(f"  (reply: {seconds:.1f} s of audio at {session.output_rate} Hz)", flush=True)
            replied.set()
        elif isinstance(f, Interruption):
            print("  (the user spoke over the reply: stop playing it)", flush=True)
        elif isinstance(f, ErrorFrame):
            print(f"error: {f.code}: {f.message}", flush=True)


async def converse(engines: Engines, config: HalfsecConfig, paths: Sequence[Path]) -> None:
    session = open_session(engines, config)  # one conversation on the shared engines
    replied = asyncio.Event()  # a reply was synthesized ...
    answered = asyncio.Event()  # ... and has finished playing: the user may speak again
    printer = asyncio.create_task(show_events(session, replied))
    try:
        async for frame in microphone(paths, answered):
            await session.push(frame)
            if replied.is_set() and session.idle:
                replied.clear()
                answered.set()
    finally:
        await session.close()  # ends session.events()
        await printer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="recordings the user speaks, in order")
    parser.add_argument("--config", type=Path, help="a halfsec TOML configuration")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        engines = build_engines(config)  # loads the models once; share them between sessions
    except HalfsecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(converse(engines, config, args.files))
    except HalfsecError as e:  # e.g. a file that is not audio
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

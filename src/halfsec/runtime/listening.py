"""``ListeningTurn``: what the session keeps of the turn the user is speaking.

The reply side of a turn lives in ``TurnTask``; this is the listening side: the STT
stream being fed, the audio heard so far (the STT fallback's material), the frames held
back during a pause (so a speculative final covers exactly the speech), and the partial
decode in flight.  A module of its own so that ``runtime/session.py`` keeps to the flow
of frames and events."""

from __future__ import annotations

import asyncio

import numpy as np

from halfsec.runtime.ladder import HeardSoFar
from halfsec.runtime.turn_task import TurnTask
from halfsec.stt.engine import STTStream


class ListeningTurn:
    """Listening state of the turn being spoken."""

    def __init__(self, turn_id: int, stream: STTStream, start_ms: float) -> None:
        self.id = turn_id
        self.stream = stream
        self.start_ms = start_ms
        self.audio: list[np.ndarray] = []
        self.held: list[np.ndarray] = []
        self.task: TurnTask | None = None
        self.fed_since_partial_ms = 0.0
        self.partial_task: asyncio.Task[None] | None = None
        self.heard = HeardSoFar(self.audio)
        """The STT fallback's material: this audio and the latest partial transcript."""
        self.carried_ms = 0.0
        """Audio of an interrupted turn this one continues: it counts towards
        ``max_turn_s`` too, or a user who keeps pausing and going on never hits it."""

    def feed(self, frame: np.ndarray) -> None:
        self.stream.feed(frame)
        self.audio.append(frame)

"""The part of a Wyoming command the recognizer hears: what a ``halfsec run`` turn feeds it.

Home Assistant sends the whole command, silence around it included (its own VAD keeps
some before and ends the stream a while after the speech).  Fed whole, Whisper heard
more than it does in a live turn, where the session's VAD decides what goes into the
STT stream: the 300 ms before the speech started (``turn.preroll_ms``), the speech, and
nothing of the pause the final is computed at.  The extra silence changes what
Whisper hears on short clips: over the 36 transcribed shared recordings, whole-file
transcripts differed from ``halfsec run``'s on 4 ("No." -> "now,", "Dell," -> "go,"),
and scored 12.0 % WER against 10.6 % in an earlier run (``benchmarks/wyoming_bench.py``;
gated, 35 of 36 texts are identical and the WER is the same).

``SpeechGate`` runs the same ``TurnDetector`` (same options) over the command's 20 ms
frames and keeps what ``VoiceSession`` would feed one turn:

* before speech starts, only the latest ``preroll_ms`` of audio;
* speech, and a pause the speaker resumes after (a pause longer than the turn's
  silence window, which would have ended a live turn, keeps only its last
  ``preroll_ms``, as the next turn's pre-roll would be);
* not the pause the command ends with.

A command in which the VAD never hears speech is kept whole: Home Assistant already
decided it holds speech, and a quiet word is better transcribed than dropped.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from halfsec import FRAME_MS
from halfsec.audio.framing import Framer
from halfsec.turn.detector import TurnDetector, VadState
from halfsec.turn.options import TurnOptions

__all__ = ["SpeechGate"]


class SpeechGate:
    """One command's audio in, the turn's STT input out (``feed`` then ``finish``)."""

    def __init__(self, options: TurnOptions) -> None:
        self._detector = TurnDetector(options)
        self._framer = Framer()
        self._preroll_frames = max(1, int(options.preroll_ms // FRAME_MS))
        self._preroll: deque[np.ndarray] = deque(maxlen=self._preroll_frames)
        self._silence_frames = max(1, int(options.silence_ms // FRAME_MS))
        self._held: list[np.ndarray] = []
        self._all: list[np.ndarray] = []
        self._started = False

    def feed(self, pcm: np.ndarray) -> list[np.ndarray]:
        """16 kHz int16 audio of any length -> the frames the STT stream gets now (the
        pipeline's timing: speech is passed on as it is heard, a pause is held)."""
        out: list[np.ndarray] = []
        for frame in self._framer.push(pcm):
            if not self._started:
                self._all.append(frame)
            for ev in self._detector.process(frame):
                if ev.kind == "start" and not self._started:
                    self._started = True
                    out.extend(self._preroll)
                    self._preroll.clear()
                    self._all = []
                elif ev.kind == "start" or ev.kind == "resume":
                    out.extend(self._resumed())
            if not self._started:
                self._preroll.append(frame)
            elif self._detector.state is VadState.PAUSE:
                self._held.append(frame)
            else:
                out.extend(self._resumed())
                out.append(frame)
        return out

    def _resumed(self) -> list[np.ndarray]:
        held, self._held = self._held, []
        if len(held) > self._silence_frames:
            return held[-self._preroll_frames :]
        return held

    def finish(self) -> np.ndarray | None:
        """The end of the command: None when everything it fed was right, else the
        whole command to use instead (the VAD never heard speech in it)."""
        if self._started:
            return None
        return np.concatenate(self._all) if self._all else np.zeros(0, np.int16)

    @property
    def speech_heard(self) -> bool:
        return self._started

    @property
    def paused(self) -> bool:
        """Speech was heard and the VAD now hears a pause: where a live turn starts its
        speculative final."""
        return self._started and self._detector.state is VadState.PAUSE

"""The speech/pause state machine that turns VAD probabilities into turn events.

States: ``silence`` -> ``speech`` (probability held >= threshold for ``min_speech_ms``)
-> ``pause`` (probability < neg_threshold) -> ``speech`` again (resumed) or end of turn
(decided by the session with an ``EndOfTurnPolicy``, because the decision may depend on
the speculative transcript).

The key number is ``speech_end_ms``: the estimated real end of speech.  Silero's
probability falls ~70-100 ms after the voice stops; counting the silence window from the
drop would add that lag to every turn.  The detector keeps 10 ms frame energies and, at
the drop, looks back for the last frame clearly above the running noise floor.

It also keeps the turn's last few seconds of audio (``turn_audio``) and counts pauses
(``pauses``), which is all an audio end-of-turn model (``turn/smart_turn.py``) needs from
it: the combined policy asks the model about the turn so far at each new pause, or a
little before it, once the voice has gone quiet (``quiet_end``), so that the model's
~30 ms of CPU is spent before the speculative final decode starts at the pause rather
than beside it.  ``listeners`` are called after every frame (the policy's hook)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np

from halfsec import FRAME_MS, FRAME_SAMPLES, INTERNAL_RATE
from halfsec.turn.options import TurnOptions
from halfsec.turn.vad import WINDOW_MS, SileroVAD


class VadState(Enum):
    SILENCE = "silence"
    SPEECH = "speech"
    PAUSE = "pause"


@dataclass(frozen=True, slots=True)
class VadEvent:
    kind: str
    """``start``, ``pause`` or ``resume``."""
    audio_ms: float
    """Stream position (ms since the session's first sample) when the event was decided."""
    speech_ms: float
    """For ``start``: estimated speech onset.  For ``pause``: estimated real end of speech."""


KEEP_AUDIO_MS = 8500.0
"""Audio kept for ``turn_audio``: Smart Turn reads the last 8 s of a turn, plus its
pre-roll."""
TURN_AUDIO_PREROLL_MS = 500.0
"""Audio before the onset that ``turn_audio`` includes (pipecat's ``pre_speech_ms``, what
Smart Turn saw in training)."""
QUIET_END_MS = 20.0
"""Frame energy below the end-of-speech level for this long, while Silero still says
speech, is a likely end (``quiet_end``).  Silero drops below ``neg_threshold`` ~70 ms
after the real end (median); the energy says so ~20 ms after it.  Over the 186 shared
recordings 262 of 314 pauses were preceded by such a moment at the same estimated end,
a median 60 ms before the pause (``benchmarks/eot_bench.py``, 2026-12-01)."""


RELEASE_DB = 20.0
"""A 10 ms frame within this much of the turn's loudest, heard during a pause, is voice
the VAD missed, and the silence count restarts after it.  Why: a word-final stop ("milk")
is a closure of ~100-200 ms of near silence, then a release burst and its aspiration;
Silero calls the closure a pause and the burst no speech, so the turn could end and the
reply be heard over the word's last sound (picovoice_273ecb20: the reply audible under
the /k/ released 160 ms after the closure, hand-marked in
tests/data/end_of_speech_marks.tsv; premature in every live run).  Over the final pauses
of the 186 shared recordings such a frame follows 6 ends within ``RELEASE_WINDOW_MS``:
that /k/, and five one-second speech commands recorded in loud noise, where it also costs
time; quieter sounds (breath, room: 25-35 dB under the peak) never restart the count."""
RELEASE_WINDOW_MS = 300.0
"""Only sounds this soon after the estimated end restart the count, so that a steady loud
noise after the voice delays a turn's end by at most this much."""


class TurnDetector:
    def __init__(self, options: TurnOptions) -> None:
        self.opt = options
        self.vad = SileroVAD()
        self.state = VadState.SILENCE
        self.pos_ms = 0.0
        self.speech_end_ms = 0.0
        self.last_prob = 0.0
        self._run_ms = 0.0  # consecutive speech-window duration while in SILENCE
        self._db: deque[tuple[float, float]] = deque(maxlen=60)  # (end_ms, dB) per 10 ms
        self._floor_db = -70.0
        self._peak_db = -20.0
        self.turn_onset_ms: float | None = None
        """Estimated onset of the turn being spoken (None between turns)."""
        self.pauses = 0
        """Pauses seen so far: a new value means a new pause."""
        self._pause_end_ms = 0.0  # the pause's first estimated end (``RELEASE_WINDOW_MS``)
        self._recent: deque[np.ndarray] = deque(maxlen=int(KEEP_AUDIO_MS // FRAME_MS))
        self.listeners: list[Callable[[], None]] = []
        """Called after each frame has been processed (its events decided)."""

    # -- energy bookkeeping -------------------------------------------------------------
    def _track_energy(self, frame: np.ndarray) -> list[tuple[float, float]]:
        """Record the frame's 10 ms energies (each half of the 20 ms frame) and update
        the noise floor and the turn's peak; the frame's ``(end_ms, dB)`` entries."""
        half = frame.size // 2
        entries: list[tuple[float, float]] = []
        for k, part in enumerate((frame[:half], frame[half:])):
            x = part.astype(np.float64) / 32768.0
            db = 20.0 * float(np.log10(max(float(np.sqrt(np.mean(x * x))), 1e-6)))
            end_ms = self.pos_ms + (k + 1) * FRAME_MS / 2
            self._db.append((end_ms, db))
            entries.append((end_ms, db))
            # Slow floor tracker: falls fast, rises slowly (speech must not lift it).
            if db < self._floor_db:
                self._floor_db = 0.7 * self._floor_db + 0.3 * db
            else:
                self._floor_db += 0.002 * (db - self._floor_db)
            if self.state is VadState.SPEECH and db > self._peak_db:
                self._peak_db = db
        return entries

    def _last_loud(self) -> float | None:
        """End of the last 10 ms clearly above the noise floor (None: none kept)."""
        thr = max(self._floor_db + 12.0, self._peak_db - 35.0)
        for end_ms, db in reversed(self._db):
            if db > thr:
                return min(end_ms, self.pos_ms)
        return None

    def _estimate_end(self) -> float:
        loud = self._last_loud()
        return self.pos_ms - self.opt.vad_lag_ms if loud is None else loud

    # -- main entry ---------------------------------------------------------------------
    def process(self, frame: np.ndarray) -> list[VadEvent]:
        """Consume one 20 ms frame; return the events it caused."""
        heard = self._track_energy(frame)
        self._recent.append(frame)
        probs = self.vad.push(frame)
        self.pos_ms += frame.size * 1000.0 / INTERNAL_RATE
        if self.state is VadState.PAUSE:
            self._released(heard)
        events: list[VadEvent] = []
        for p in probs:
            self.last_prob = p
            if self.state is VadState.SILENCE:
                if p >= self.opt.threshold:
                    self._run_ms += WINDOW_MS
                    if self._run_ms >= self.opt.min_speech_ms:
                        self.state = VadState.SPEECH
                        self._peak_db = -60.0
                        self.turn_onset_ms = self.pos_ms - self._run_ms
                        events.append(VadEvent("start", self.pos_ms, self.turn_onset_ms))
                else:
                    self._run_ms = 0.0
            elif self.state is VadState.SPEECH:
                if p < self.opt.neg_threshold:
                    self.state = VadState.PAUSE
                    self.speech_end_ms = self._pause_end_ms = self._estimate_end()
                    self.pauses += 1
                    events.append(VadEvent("pause", self.pos_ms, self.speech_end_ms))
            elif self.state is VadState.PAUSE:
                if p >= self.opt.threshold:
                    self.state = VadState.SPEECH
                    events.append(VadEvent("resume", self.pos_ms, self.pos_ms))
        for listener in self.listeners:
            listener()
        return events

    def _released(self, heard: list[tuple[float, float]]) -> None:
        """In a pause: a sound in this frame's ``(end_ms, dB)`` entries (``heard``) as loud
        as the voice (``RELEASE_DB``) soon after the end (``RELEASE_WINDOW_MS``) moves the
        estimated end of speech to it."""
        for end_ms, db in heard:
            if (
                end_ms > self.speech_end_ms
                and end_ms - self._pause_end_ms <= RELEASE_WINDOW_MS
                and db >= self._peak_db - RELEASE_DB
            ):
                self.speech_end_ms = end_ms

    def quiet_end(self) -> float | None:
        """While speech lasts: the estimated end of speech once frame energy has stayed
        below the end-of-speech level for ``QUIET_END_MS`` (a likely pause Silero has not
        confirmed yet); else None.  If the pause comes, its ``speech_end_ms`` is this
        same value unless the voice came back in between."""
        end = self._last_loud() if self.state is VadState.SPEECH else None
        return end if end is not None and self.pos_ms - end >= QUIET_END_MS else None

    @property
    def silence_ms(self) -> float:
        """Real silence so far in a pause (position minus estimated end of speech)."""
        return self.pos_ms - self.speech_end_ms if self.state is VadState.PAUSE else 0.0

    def turn_audio(self) -> np.ndarray:
        """The turn's audio so far, from ``TURN_AUDIO_PREROLL_MS`` before its onset (at
        most ``KEEP_AUDIO_MS``); empty between turns."""
        if self.turn_onset_ms is None or not self._recent:
            return np.zeros(0, dtype=np.int16)
        keep_ms = self.pos_ms - (self.turn_onset_ms - TURN_AUDIO_PREROLL_MS)
        frames = list(self._recent)[-max(1, int(keep_ms // FRAME_MS)) :]
        return np.concatenate(frames)[-int(KEEP_AUDIO_MS * FRAME_SAMPLES // FRAME_MS) :]

    def end_turn(self) -> None:
        """The session decided the turn is over: listen for the next one."""
        self.state = VadState.SILENCE
        self._run_ms = 0.0
        self.turn_onset_ms = None

"""The combined end-of-turn policy at run time, and the choice of policy for a session.

``CombinedPolicy`` is ``turn.policy.required_silence`` wired to a live session: it
watches the pause detector for new pauses, asks Smart Turn about the turn's audio at
each (and again as the pause lasts, ``SMART_TURN_SCHEDULE_MS``) in the model's own
thread with a deadline, and answers the session's per-frame question from whatever
verdicts, transcript and domain judgement have arrived by then.

Smart Turn ships inside the ``pipecat-ai`` package (a core dependency, so every install
runs the measured model).  Where it is missing (a broken install) the combined policy runs
on words and meaning alone, with the windows tuned for that (``TEXT_WINDOWS``), and says
so once in the log."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from halfsec.errors import EngineUnavailable
from halfsec.turn.detector import TurnDetector
from halfsec.turn.end_of_turn import EndOfTurnPolicy, SilenceWindowPolicy, TranscriptAwarePolicy
from halfsec.turn.options import TurnOptions
from halfsec.turn.policy import (
    SMART_TURN_SCHEDULE_MS,
    TEXT_WINDOWS,
    Evidence,
    Windows,
    reask,
    required_silence,
)
from halfsec.turn.smart_turn import SmartTurn

log = logging.getLogger(__name__)

POLICIES = ("combined", "transcript", "silence")
"""``session.end_of_turn`` values: the combined policy (default), the transcript-aware
windows alone, or a fixed silence window."""

_SHARED: dict[int, SmartTurn | None] = {}
_LOCK = threading.Lock()


def shared_smart_turn(threads: int) -> SmartTurn | None:
    """One model per process (sessions share it; calls queue on its thread); None, with
    one warning, when pipecat-ai is not installed."""
    with _LOCK:
        if threads not in _SHARED:
            try:
                _SHARED[threads] = SmartTurn(threads=threads)
            except EngineUnavailable as e:
                log.warning("end of turn without Smart Turn (words and meaning only): %s", e)
                _SHARED[threads] = None
        return _SHARED[threads]


def smart_turn_loaded(threads: int) -> bool:
    """Has this process made its shared model for ``threads`` (or found it missing)?"""
    return threads in _SHARED


def build_policy(
    kind: str,
    options: TurnOptions,
    detector: TurnDetector,
    completeness: Callable[[str], bool | None] | None,
    tail: Callable[[str], bool | None] | None = None,
) -> EndOfTurnPolicy:
    """The policy ``session.end_of_turn`` names, for one session (``tail``: the domain's
    ``LogicEngine.tail_said``, read by the combined policy only)."""
    if kind == "silence":
        return SilenceWindowPolicy(options)
    if kind == "transcript":
        return TranscriptAwarePolicy(options, completeness)
    smart = shared_smart_turn(options.smart_turn_threads) if options.smart_turn else None
    return CombinedPolicy(
        detector,
        completeness,
        smart,
        Windows() if smart is not None else TEXT_WINDOWS,
        options.smart_turn_deadline_ms,
        tail,
    )


class CombinedPolicy(EndOfTurnPolicy):
    """``required_silence`` as the session's policy: it watches the detector for new
    pauses, asks Smart Turn about the turn's audio at each (and again at
    ``SMART_TURN_SCHEDULE_MS`` of silence while the model is unsure) off the event loop,
    and answers from whatever verdicts, transcript and domain judgement have arrived.
    Without a model (``smart=None``) it is the same policy on words and meaning alone.

    The first question of a pause is asked before the pause when it can be: once the
    voice has gone quiet (``TurnDetector.quiet_end``), ~50 ms before Silero confirms the
    pause.  Its ~30 ms of CPU then no longer runs beside the speculative final decode that
    starts at the pause (on the 2-core box a concurrent call made that decode ~30 ms
    slower: 105 -> 137 ms median over 12 coffee orders).  The verdict counts for the pause
    only when the pause ends speech where the early question assumed (same estimated end);
    otherwise the model is asked at the pause as before."""

    def __init__(
        self,
        detector: TurnDetector,
        completeness: Callable[[str], bool | None] | None = None,
        smart: SmartTurn | None = None,
        windows: Windows | None = None,
        deadline_ms: float = 150.0,
        tail: Callable[[str], bool | None] | None = None,
    ) -> None:
        self.detector = detector
        self.completeness = completeness
        self.tail = tail
        self.smart = smart
        self.windows = windows or Windows()
        self.deadline_ms = deadline_ms
        self._pause = -1
        self._asked: set[float] = set()
        self._p: float | None = None
        self._early: tuple[int, float] | None = None
        """(pause it is for, estimated end) of the question asked before the pause."""
        self._early_p: float | None = None
        self._judged: tuple[str, bool | None, bool | None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        if smart is not None:
            detector.listeners.append(self._before_pause)

    def _judge(self, transcript: str) -> tuple[bool | None, bool | None]:
        """The domain's (completeness, tail) verdicts on a transcript, once per text."""
        if self._judged is None or self._judged[0] != transcript:
            complete = self.completeness(transcript) if self.completeness else None
            tail = self.tail(transcript) if self.tail and complete else None
            self._judged = (transcript, complete, tail)
        return self._judged[1], self._judged[2]

    def _ask(self, pause: int, early: tuple[int, float] | None = None) -> None:
        """Ask the model about the turn's audio so far, for pause number ``pause``
        (``early``: asked before that pause, for its expected end)."""
        smart = self.smart
        if smart is None:
            return
        audio = self.detector.turn_audio()

        async def run() -> None:
            p = await smart.predict(audio, self.deadline_ms)
            if p is None:
                return
            if early is not None:
                if self._early != early:
                    return  # the voice came back: a newer question replaced it
                self._early_p = p
            if self._pause == pause:
                self._p = p

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _before_pause(self) -> None:
        """Per frame (detector hook): ask early once the voice has gone quiet."""
        end = self.detector.quiet_end()
        if end is None:
            return
        early = (self.detector.pauses + 1, end)
        if early != self._early:
            self._early, self._early_p = early, None
            self._ask(early[0], early)

    def _listen(self) -> None:
        d = self.detector
        if d.pauses != self._pause:
            self._pause, self._asked, self._p = d.pauses, set(), None
            if self._early == (d.pauses, d.speech_end_ms):
                self._asked.add(0.0)  # answered (or being answered) before the pause
                self._p = self._early_p
        if 0.0 not in self._asked:
            self._asked.add(0.0)
            self._ask(self._pause)
        for at in SMART_TURN_SCHEDULE_MS:
            if at not in self._asked and d.silence_ms >= at:
                self._asked.add(at)
                if reask(self._p):
                    self._ask(self._pause)

    def required_silence_ms(self, transcript: str | None) -> float:
        self._listen()
        complete, tail = (
            self._judge(transcript) if transcript and transcript.strip() else (None, None)
        )
        return required_silence(Evidence(transcript, complete, self._p, tail), self.windows)

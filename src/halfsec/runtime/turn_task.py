"""One user turn's work: final transcript -> understanding -> reply clauses -> reply audio.

The work starts *speculatively* when the user pauses, and its frames are held behind a
gate until the session commits the turn (end-of-turn decision).  If the user resumes
speaking, the task is cancelled and nothing it produced is ever seen.  After the commit
the gate is open and frames flow out as they are produced.  Cancelling the task (barge-in)
stops everything the turn still had queued or in flight.

The conversation's next dialogue state goes through the same gate: the task computes it
from the state it started with (a value) and hands it to ``on_dialogue`` only once the
gate is open, so a cancelled speculative turn leaves the session's state untouched.  Once
the reply has been said (or cut off by a barge-in) the state with the exchange in its chat
history follows."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from halfsec.audio.resample import StreamResampler, resample
from halfsec.clock import now_ns
from halfsec.frames import (
    AudioFrame,
    ErrorFrame,
    FinalTranscript,
    Frame,
    IntentFrame,
    ReplyAudio,
    ReplyDone,
    ReplyText,
    TimingMark,
)
from halfsec.logic.engine import DialogueTurn, ReplyClause
from halfsec.logic.state import DialogueState
from halfsec.runtime.deadlines import Deadlines
from halfsec.runtime.engines import Engines
from halfsec.runtime.fallback import APOLOGY_TEXT
from halfsec.runtime.faults import FaultSpec, SessionFaults, TurnFaults, enter_turn
from halfsec.runtime.ladder import HeardSoFar, TurnLadder
from halfsec.runtime.options import SessionOptions
from halfsec.stt.engine import STTStream, Transcript
from halfsec.trace import names
from halfsec.tts.engine import set_clause_index


class TurnTask:
    def __init__(
        self,
        turn_id: int,
        stream: STTStream,
        engines: Engines,
        output_rate: int,
        emit: Callable[[Frame], None],
        dialogue: DialogueState | None = None,
        on_dialogue: Callable[[DialogueState], None] | None = None,
        deadlines: Deadlines | None = None,
        heard: HeardSoFar | None = None,
        faults: SessionFaults | None = None,
    ) -> None:
        self.turn_id = turn_id
        self.stream = stream
        self.engines = engines
        self.output_rate = output_rate
        self._emit_out = emit
        self._pending: list[Frame] = []
        self.committed = False
        self.transcript: Transcript | None = None
        self.marks: dict[str, int] = {}
        self.reply_text: list[str] = []
        self.task: asyncio.Task[None] | None = None
        self.done = asyncio.Event()
        self.dialogue_before = dialogue if dialogue is not None else DialogueState()
        """The conversation as this turn found it (what a continuation goes back to)."""
        self._on_dialogue = on_dialogue
        self._held_dialogue: DialogueState | None = None
        self._answer: DialogueTurn | None = None
        self._said_all = False
        self.deadlines = deadlines or Deadlines.from_options(SessionOptions())
        self.heard = heard
        self._session_faults = faults
        self._faults: TurnFaults | None = None
        self._ladder: TurnLadder | None = None
        self._resampler: StreamResampler | None = None
        self._spoke = False

    # -- gate ---------------------------------------------------------------------------
    def _emit(self, frame: Frame) -> None:
        if self.committed:
            self._emit_out(frame)
        else:
            self._pending.append(frame)

    def mark(self, name: str, **attrs: Any) -> None:
        t = now_ns()
        self.marks[name] = t
        self._emit(TimingMark(turn_id=self.turn_id, t_ns=t, name=name, attrs=attrs))

    def _offer_dialogue(self, state: DialogueState) -> None:
        """The next dialogue state, through the gate like a frame."""
        if self.committed:
            if self._on_dialogue is not None:
                self._on_dialogue(state)
        else:
            self._held_dialogue = state

    def commit(self) -> None:
        """Open the gate: release held frames in order, then stream the rest live."""
        if self.committed:
            return
        self.committed = True
        self.mark(names.MARK_TURN_COMMIT)
        pending, self._pending = self._pending, []
        for f in pending:
            self._emit_out(f)
        held, self._held_dialogue = self._held_dialogue, None
        if held is not None:
            self._offer_dialogue(held)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"turn-{self.turn_id}")

    async def cancel(self) -> float:
        """Cancel queued and in-flight work; returns how long cancelling took (ms)."""
        t0 = now_ns()
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        self._pending.clear()
        self._held_dialogue = None
        return (now_ns() - t0) / 1e6

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    # -- the work -----------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            await self._work()
        except asyncio.CancelledError:
            answer = self._answer
            if self.committed and answer is not None and not self._said_all:
                # Barge-in: the history keeps what the agent had said up to here.
                self._offer_dialogue(answer.remember(" ".join(self.reply_text)))
            raise
        except Exception as e:  # one failing engine call must not end the session
            self._fail(f"{type(e).__name__}: {e}")
        finally:
            self.done.set()

    def _fail(self, reason: str) -> None:
        """Total failure: the apology (rendered at start-up) and ``reply.done`` when the
        user has heard nothing yet; ``turn_failed`` only when there is no apology."""
        clip = None if self._spoke or self._ladder is None else self._ladder.apology(reason)
        if clip is not None:
            pcm, rate = clip
            index = len(self.reply_text)
            self._emit(
                ReplyText(turn_id=self.turn_id, text=APOLOGY_TEXT, index=index, source="fallback")
            )
            self.reply_text = [APOLOGY_TEXT]  # what was heard: clauses before it were not
            self._mark_once(names.MARK_TTS_START)
            self._mark_once(names.MARK_TTS_FIRST_AUDIO)
            self._emit(self._audio(resample(pcm, rate, self.output_rate), index))
            self._spoke = True
        elif not self._spoke:
            self._emit(ErrorFrame(turn_id=self.turn_id, code="turn_failed", message=reason))
            self.reply_text = []
        self._reply_done()

    def _mark_once(self, name: str) -> None:
        if name not in self.marks:
            self.mark(name)

    def _reply_done(self) -> None:
        self._emit(
            ReplyDone(
                turn_id=self.turn_id,
                text=" ".join(self.reply_text),
                fallbacks=tuple(self._ladder.used) if self._ladder is not None else (),
                faults=tuple(self._faults.fired) if self._faults is not None else (),
            )
        )

    def _enter_faults(self) -> TurnFaults | None:
        """This turn's share of the lab's fault plan, visible to the engine wrappers."""
        if self._session_faults is None or not self._session_faults.armed:
            return None
        faults = self._session_faults.turn(self.turn_id, self._fault_fired)
        enter_turn(faults)
        self.mark(names.MARK_FAULTS_ARMED)
        return faults

    def _fault_fired(self, spec: FaultSpec) -> None:
        self.mark(names.MARK_FAULT, fault=spec.kind, spec=str(spec))

    async def _work(self) -> None:
        self._faults = faults = self._enter_faults()
        ladder = TurnLadder(self.engines, self.deadlines, self.heard, faults, self.mark)
        self._ladder = ladder
        if faults is not None:
            faults.stall_loop()
        self.mark(names.MARK_STT_START)
        tr = await ladder.transcript(self.stream, self.marks[names.MARK_STT_START])
        if tr is None:
            self._fail(f"{ladder.stt_failure} (and no fallback transcript)")
            return
        self.transcript = tr
        self.mark(names.MARK_STT_END, compute_ms=tr.compute_ms, audio_ms=tr.audio_ms)
        self._emit(FinalTranscript(turn_id=self.turn_id, text=tr.text, stt_ms=tr.compute_ms))
        text = tr.text.strip()
        if not text:
            self._reply_done()
            return
        self.mark(names.MARK_LOGIC_START)
        answer = self.engines.logic.respond(text, self.dialogue_before)
        self._answer = answer
        u = answer.understanding
        self._offer_dialogue(answer.state)
        self._emit(
            IntentFrame(
                turn_id=self.turn_id, intent=u.intent, slots=dict(u.slots), confidence=u.confidence
            )
        )
        index = 0

        def again() -> AsyncIterator[ReplyClause]:
            return self.engines.logic.respond(text, self.dialogue_before).clauses

        async for clause in ladder.clauses(answer.clauses, again, u):
            if index == 0:
                self.mark(names.MARK_LOGIC_FIRST_CLAUSE, source=clause.source)
            self._emit(
                ReplyText(turn_id=self.turn_id, text=clause.text, index=index, source=clause.source)
            )
            self.reply_text.append(clause.text)
            if index == 0:
                self.mark(names.MARK_TTS_START)
            first = True
            set_clause_index(index)  # a shared TTS serves first clauses first
            async for chunk, rate in ladder.speak(clause.text):
                out = self._resample(chunk, rate, index)
                if out.size == 0:
                    continue
                if first and index == 0:
                    self.mark(names.MARK_TTS_FIRST_AUDIO)
                first = False
                self._emit(self._audio(out, index))
                self._spoke = True
            index += 1
        self._flush_resampler(max(0, index - 1))
        self.mark(names.MARK_TTS_END)
        self._said_all = True
        self._offer_dialogue(answer.remember(" ".join(self.reply_text)))
        self._reply_done()

    def _resample(self, pcm: np.ndarray, rate: int, clause: int) -> np.ndarray:
        """Reply audio at the output rate; a fallback voice at another rate gets a
        resampler of its own, after the previous one's tail."""
        if self._resampler is None or self._resampler.in_rate != rate:
            self._flush_resampler(clause)
            self._resampler = StreamResampler(rate, self.output_rate)
        return self._resampler.process(pcm)

    def _flush_resampler(self, clause: int) -> None:
        if self._resampler is not None:
            tail = self._resampler.process(np.zeros(0, dtype=np.int16), last=True)
            if tail.size:
                self._emit(self._audio(tail, clause))
            self._resampler = None

    def _audio(self, pcm: np.ndarray, clause: int) -> AudioFrame:
        return ReplyAudio(
            turn_id=self.turn_id,
            pcm=pcm.astype(np.int16),
            sample_rate=self.output_rate,
            clause_index=clause,
        )

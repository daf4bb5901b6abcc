"""One user turn's work: final transcript -> understanding -> reply clauses -> reply audio.

The work starts *speculatively* when the user pauses, and its frames are held behind a
gate until the session commits the turn (end-of-turn decision).  If the user resumes
speaking, the task is cancelled and nothing it produced is ever seen.  After the commit
the gate is open and frames flow out as they are produced.  Cancelling the task (barge-in)
stops everything the turn still had queued or in flight.

The conversation's next dialogue state goes through the same gate: the task computes it
from the state it started with (a value) and hands it to ``on_dialogue`` only once the
gate is open, so a cancelled speculative turn leaves the session's state untouched; the
state with the exchange in its chat history follows once the reply is said (or cut off).

**Early start.**  Where the final decode is slow (a CPU without AVX-512: ~280 ms, the
floor of every turn) the task does not wait for it when it need not: if the latest
partial transcript already covers the audio up to the pause (``EARLY_COVER_SLACK_MS``),
logic and the first clause's synthesis start from it while the final decodes, behind a
second gate.  When the final arrives it confirms or refutes: the same intent and slots
(or the same words) keep the early reply, which is released at once; anything else
drops it unheard and the reply is redone from the final.  ``stt.end`` says which
(``early``: ``kept``, ``redone`` or ``none``).  Only where finals are slow lately
(``runtime/final_pace.py``): beside a fast final it hides nothing and slows the final."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from halfsec import INTERNAL_RATE
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
from halfsec.runtime.early_confirm import confirmed_turn
from halfsec.runtime.engines import Engines
from halfsec.runtime.fallback import APOLOGY_TEXT
from halfsec.runtime.faults import FaultSpec, SessionFaults, TurnFaults, enter_turn
from halfsec.runtime.final_pace import FINAL_PACE, FinalPace
from halfsec.runtime.ladder import HeardSoFar, TurnLadder
from halfsec.runtime.options import SessionOptions
from halfsec.runtime.tasks import cancel_and_wait
from halfsec.stt.engine import STTStream, Transcript
from halfsec.trace import names
from halfsec.tts.engine import set_clause_index

EARLY_COVER_SLACK_MS = 100.0
"""A partial covers the audio up to the pause when it misses at most this much of its end:
the detector sees a pause 70-100 ms after the voice stops (Silero's lag): silence."""
EARLY_POLL_S = 0.01
"""How often the task looks for a covering partial while the final decodes."""


@dataclass(frozen=True, slots=True)
class _Offer:
    """A dialogue state an early reply would offer (``said``: None once released)."""

    said: str | None
    done: bool = False  # not a state: the ``reply.done`` an early reply had reached


def _failed(task: asyncio.Task[None]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is not None


def _dropped(frame: Frame) -> None:
    """Where the frames of a turn that would not stop go (``TurnTask.cancel``)."""


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
        early_start: bool = True,
        pace: FinalPace = FINAL_PACE,
        on_final: Callable[[], None] | None = None,
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
        # The conversation as this turn found it (what a continuation goes back to).
        self.dialogue_before = dialogue if dialogue is not None else DialogueState()
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
        self.early_start = early_start
        self.pace = pace  # recent finals' compute time: early start only while slow
        self.on_final = on_final  # the session decides the turn's end as the final lands
        self._early_hold: list[Frame | _Offer] | None = None  # early reply awaiting the final
        self._early_text = ""
        self._early_answer: DialogueTurn | None = None
        self.early = "none"  # ``kept`` or ``redone``: what became of an early start
        self._confirmed = asyncio.Event()  # an early reply's clauses after its first wait

    # -- gate ---------------------------------------------------------------------------
    def _emit(self, frame: Frame) -> None:
        if self._early_hold is not None:
            self._early_hold.append(frame)
        elif self.committed:
            self._emit_out(frame)
        else:
            self._pending.append(frame)

    def mark(self, name: str, **attrs: Any) -> None:
        t = now_ns()
        self.marks[name] = t
        self._emit(TimingMark(turn_id=self.turn_id, t_ns=t, name=name, attrs=attrs))

    def _offer_dialogue(self, state: DialogueState) -> None:
        """The next dialogue state, through the gate like a frame."""
        if self._early_hold is not None:
            return  # an early reply's states are re-made from the final (``_Offer``)
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
        """Cancel queued and in-flight work; returns how long cancelling took (ms).  Work
        still running at the stop deadline (``runtime/tasks.py``) is let go behind a gate
        shut for good: nothing it makes reaches the session, which goes on without it."""
        t0 = now_ns()
        if self.task is not None and not await cancel_and_wait(self.task):
            self._emit_out, self._on_dialogue, self.on_final = _dropped, None, None
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
        if self._early_hold is not None:  # made on release: fallbacks may come until then
            self._early_hold.append(_Offer(None, done=True))
            return
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
        final = asyncio.ensure_future(
            ladder.transcript(self.stream, self.marks[names.MARK_STT_START])
        )
        early: asyncio.Task[None] | None = None
        try:
            if self.early_start and self.heard is not None and self.pace.slow():
                early = await self._start_early(final, ladder)
            tr = await final
        except BaseException:
            final.cancel()
            await self._drop_early(early)
            raise
        if tr is None:
            await self._drop_early(early)
            self._fail(f"{ladder.stt_failure} (and no fallback transcript)")
            return
        self.transcript = tr
        self.pace.record(tr.compute_ms)
        text = tr.text.strip()
        held: list[Frame | _Offer] = []
        if early is not None and text and not _failed(early) and self._confirms(text):
            self.early = "kept"
            held, self._early_hold = self._early_hold or [], None
        elif early is not None:
            self.early = "redone"
            await self._drop_early(early)
            early = None
        behind = round(tr.audio_ms - (self.heard.partial_audio_ms if self.heard else 0.0), 1)
        attrs = {"compute_ms": tr.compute_ms, "audio_ms": tr.audio_ms, "early": self.early}
        self.mark(names.MARK_STT_END, **attrs, partial_behind_ms=behind)  # the partial missed
        self._emit(FinalTranscript(turn_id=self.turn_id, text=tr.text, stt_ms=tr.compute_ms))
        if self.on_final is not None:
            self.on_final()
        if early is not None:
            self._release_early(held)
            await early
            return
        if not text:
            self._reply_done()
            return
        await self._reply(text, ladder, self.engines.logic.respond(text, self.dialogue_before))

    async def _start_early(
        self, final: asyncio.Future[Transcript | None], ladder: TurnLadder
    ) -> asyncio.Task[None] | None:
        """Wait for the final or for a partial that covers the audio up to the pause,
        whichever comes first; on the latter, start the reply from it behind the early
        gate and return its task."""
        heard = self.heard
        assert heard is not None
        paused_ms = sum(f.size for f in heard.audio) * 1000.0 / INTERNAL_RATE
        while not final.done():
            text = heard.partial.strip()
            if text and heard.partial_audio_ms >= paused_ms - EARLY_COVER_SLACK_MS:
                self._early_hold = []
                self._early_text = text
                self._early_answer = answer = self.engines.logic.respond(text, self.dialogue_before)
                return asyncio.create_task(self._reply(text, ladder, answer))
            await asyncio.wait([final], timeout=EARLY_POLL_S)
        return None

    def _confirms(self, final_text: str) -> bool:
        """Does the final ask for what the early reply answers (``early_confirm``)?"""
        answer = self._early_answer
        if answer is None:
            return False
        logic, before = self.engines.logic, self.dialogue_before
        kept = confirmed_turn(logic, self._early_text, answer, final_text, before)
        if kept is not None:
            self._early_answer = kept  # the conversation remembers the final's words
        return kept is not None

    def _release_early(self, held: list[Frame | _Offer]) -> None:
        """The final confirmed the early reply: what it held goes out in order, after
        the final transcript (its dialogue states from the final's words, ``_confirms``)."""
        answer = self._early_answer
        assert answer is not None
        self._answer = answer
        self._confirmed.set()
        for item in held:
            if isinstance(item, _Offer) and item.done:
                self._reply_done()
            elif isinstance(item, _Offer):
                self._offer_dialogue(
                    answer.state if item.said is None else answer.remember(item.said)
                )
            else:
                self._emit(item)

    async def _drop_early(self, early: asyncio.Task[None] | None) -> None:
        """Refuted (or the turn ends): the early reply is cancelled and nothing of it
        was heard, so the turn starts its reply afresh."""
        if early is None:
            return
        self._confirmed.set()  # one that swallowed its cancel must not wait for a final
        await cancel_and_wait(early)
        logic = (names.MARK_LOGIC_START, names.MARK_LOGIC_FIRST_CLAUSE)
        for name in (*logic, names.MARK_TTS_START, names.MARK_TTS_FIRST_AUDIO):
            self.marks.pop(name, None)
        self._early_hold = None
        self._early_answer = None
        self._answer = None
        self.reply_text = []
        self._spoke = False
        self._said_all = False
        self._resampler = None

    async def _reply(self, text: str, ladder: TurnLadder, answer: DialogueTurn) -> None:
        """The reply's clauses and audio for ``text`` (``answer``: logic's turn for it)."""
        self.mark(names.MARK_LOGIC_START)
        self._answer = answer
        u = answer.understanding
        self._offer(None, answer)
        self._emit(
            IntentFrame(
                turn_id=self.turn_id, intent=u.intent, slots=dict(u.slots), confidence=u.confidence
            )
        )
        index = 0

        def again() -> AsyncIterator[ReplyClause]:
            return self.engines.logic.respond(text, self.dialogue_before).clauses

        async for clause in ladder.clauses(answer.clauses, again, u):
            if index and self._early_hold is not None:  # early: the first clause only, as
                await self._confirmed.wait()  # the rest's synthesis would slow the final
                if self._early_hold is not None:
                    return  # dropped, not confirmed (``_drop_early``)
            if index == 0:
                self.mark(names.MARK_LOGIC_FIRST_CLAUSE, source=clause.source)
            self._emit(
                ReplyText(turn_id=self.turn_id, text=clause.text, index=index, source=clause.source)
            )
            self.reply_text.append(clause.text)
            if index == 0:
                self.mark(names.MARK_TTS_START)
            first = True
            set_clause_index(index)  # the TTS engine hurries a reply's first clause
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
        self._offer(" ".join(self.reply_text), answer)
        self._reply_done()

    def _offer(self, said: str | None, answer: DialogueTurn) -> None:
        """The state after this reply (``said``: None before it is spoken); an early
        reply's waits as an ``_Offer`` to be made from the confirmed turn."""
        if self._early_hold is not None:
            self._early_hold.append(_Offer(said))
            return
        turn = self._answer or answer
        self._offer_dialogue(turn.state if said is None else turn.remember(said))

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

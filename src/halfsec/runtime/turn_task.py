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
from collections.abc import Callable
from typing import Any

import numpy as np

from halfsec.audio.resample import StreamResampler
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
from halfsec.logic.engine import DialogueTurn
from halfsec.logic.state import DialogueState
from halfsec.runtime.engines import Engines
from halfsec.stt.engine import STTStream, Transcript
from halfsec.trace import names


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
            self._emit(
                ErrorFrame(
                    turn_id=self.turn_id, code="turn_failed", message=f"{type(e).__name__}: {e}"
                )
            )
        finally:
            self.done.set()

    async def _work(self) -> None:
        self.mark(names.MARK_STT_START)
        tr = await self.stream.hypothesis(final=True)
        self.transcript = tr
        self.mark(names.MARK_STT_END, compute_ms=tr.compute_ms, audio_ms=tr.audio_ms)
        self._emit(FinalTranscript(turn_id=self.turn_id, text=tr.text, stt_ms=tr.compute_ms))
        text = tr.text.strip()
        if not text:
            self._emit(ReplyDone(turn_id=self.turn_id, text=""))
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
        resampler = StreamResampler(self.engines.tts.sample_rate, self.output_rate)
        index = 0
        async for clause in answer.clauses:
            if index == 0:
                self.mark(names.MARK_LOGIC_FIRST_CLAUSE, source=clause.source)
            self._emit(
                ReplyText(turn_id=self.turn_id, text=clause.text, index=index, source=clause.source)
            )
            self.reply_text.append(clause.text)
            if index == 0:
                self.mark(names.MARK_TTS_START)
            first = True
            async for chunk in self.engines.tts.synthesize(clause.text):
                out = resampler.process(chunk)
                if out.size == 0:
                    continue
                if first and index == 0:
                    self.mark(names.MARK_TTS_FIRST_AUDIO)
                first = False
                self._emit(self._audio(out, index))
            index += 1
        tail = resampler.process(np.zeros(0, dtype=np.int16), last=True)
        if tail.size:
            self._emit(self._audio(tail, max(0, index - 1)))
        self.mark(names.MARK_TTS_END)
        self._said_all = True
        self._offer_dialogue(answer.remember(" ".join(self.reply_text)))
        self._emit(ReplyDone(turn_id=self.turn_id, text=" ".join(self.reply_text)))

    def _audio(self, pcm: np.ndarray, clause: int) -> AudioFrame:
        return ReplyAudio(
            turn_id=self.turn_id,
            pcm=pcm.astype(np.int16),
            sample_rate=self.output_rate,
            clause_index=clause,
        )

"""One turn's way down the fallback ladder (the rungs: ``runtime/fallback.py``).

``TurnTask`` asks this for the transcript, the reply clauses and each clause's audio;
each answers on time or falls back, records which rung answered (``used``) and stamps a
``fallback`` mark with the reason.  Waiting is always bounded by a deadline
(``runtime/deadlines.py``); what was abandoned is cancelled, and an abandoned Whisper
decode gives up its lane (``stt/decode_lanes.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from halfsec.clock import now_ns
from halfsec.logic.engine import ReplyClause, Understanding
from halfsec.logic.llm import STREAM_ACTIVITY, StreamActivity
from halfsec.runtime.deadlines import Deadlines
from halfsec.runtime.engines import Engines
from halfsec.runtime.fallback import (
    FILLER_TEXT,
    LOGIC_CUT,
    LOGIC_FILLER,
    LOGIC_RETRY,
    LOGIC_TEMPLATES,
    SOURCE_FILLER,
    STT_PARTIAL,
    TURN_APOLOGY,
    stt_rung,
    tts_rung,
)
from halfsec.runtime.faults import TurnFaults
from halfsec.runtime.tasks import cancel_and_wait
from halfsec.stt.engine import STTStream, Transcript
from halfsec.trace import names

log = logging.getLogger(__name__)

_END = object()


@dataclass
class HeardSoFar:
    """What the listening side has of a turn: the STT rung's material when the final
    transcript does not come."""

    audio: list[np.ndarray] = field(default_factory=list)
    """The turn's audio as fed to its STT stream (shared with the session's turn)."""
    partial: str = ""
    """The latest partial transcript of the turn."""
    partial_audio_ms: float = 0.0


def _reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


async def _aclose(items: object) -> None:
    closer = getattr(items, "aclose", None)
    if closer is not None:
        with contextlib.suppress(Exception):
            await closer()


class _Attempt:
    """One reply attempt read into a shared queue by a task of its own, so it goes on
    while the filler is spoken and another attempt runs beside it."""

    def __init__(self, number: int, clauses: AsyncIterator[ReplyClause], out: asyncio.Queue[Any]):
        self.number = number
        self.activity = StreamActivity()
        """Deltas its LLM stream received (an LLM still writing its first clause is not
        silent)."""
        context = contextvars.copy_context()
        context.run(STREAM_ACTIVITY.set, self.activity)
        self.task = asyncio.create_task(self._pump(clauses, out), context=context)

    async def _pump(self, clauses: AsyncIterator[ReplyClause], out: asyncio.Queue[Any]) -> None:
        try:
            async for clause in clauses:
                out.put_nowait((self.number, clause))
            out.put_nowait((self.number, _END))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            out.put_nowait((self.number, e))
        finally:
            await _aclose(clauses)

    async def stop(self) -> None:
        await cancel_and_wait(self.task)


class TurnLadder:
    def __init__(
        self,
        engines: Engines,
        deadlines: Deadlines,
        heard: HeardSoFar | None,
        faults: TurnFaults | None,
        mark: Callable[..., None],
    ) -> None:
        self.engines = engines
        self.deadlines = deadlines
        self.heard = heard
        self.faults = faults
        self._mark = mark
        self.used: list[str] = []
        """Rungs that answered this turn, in order, each once."""
        self._tts_failed = False
        self.stt_failure = ""
        """Why the final transcript and every STT rung failed (set with a None transcript)."""

    def fell_back(self, rung: str, reason: str) -> None:
        if rung not in self.used:
            self.used.append(rung)
        self._mark(names.MARK_FALLBACK, rung=rung, reason=reason)
        log.info("fallback %s: %s", rung, reason)

    # -- STT ------------------------------------------------------------------------------
    async def transcript(self, stream: STTStream, started_ns: int) -> Transcript | None:
        """The final transcript; when it is late or fails, the best partial, else the
        backup recognizer (PocketSphinx, or Whisper behind a remote engine) on the turn's
        audio.  None: nothing usable was heard."""
        left_s = self.deadlines.stt_final_ms / 1000.0 - (now_ns() - started_ns) / 1e9
        try:
            return await asyncio.wait_for(stream.hypothesis(final=True), max(0.0, left_s))
        except TimeoutError:
            reason = f"no final transcript within {self.deadlines.stt_final_ms:g} ms"
        except Exception as e:
            reason = _reason(e)
        heard = self.heard
        if heard is not None and heard.partial.strip():
            self.fell_back(STT_PARTIAL, reason)
            return Transcript(heard.partial, True, 0.0, heard.partial_audio_ms)
        fallback = self.engines.fallback
        if fallback is not None and fallback.stt is not None and heard is not None and heard.audio:
            backup = fallback.stt.open_stream()
            try:
                backup.feed(np.concatenate(heard.audio))
                tr = await asyncio.wait_for(
                    backup.hypothesis(final=True), self.deadlines.stt_final_ms / 1000.0
                )
            except Exception as e:  # the backup failing leaves only the apology
                log.warning("%s fallback failed: %s", fallback.stt.name, _reason(e))
            else:
                if tr.text.strip():
                    self.fell_back(stt_rung(fallback.stt), reason)
                    return tr
            finally:
                backup.close()
        log.warning("no transcript for the turn: %s", reason)
        self.stt_failure = reason
        return None

    # -- logic ----------------------------------------------------------------------------
    async def clauses(
        self,
        first: AsyncIterator[ReplyClause],
        again: Callable[[], AsyncIterator[ReplyClause]],
        understanding: Understanding,
    ) -> AsyncIterator[ReplyClause]:
        """The reply's clauses.  No first clause within the logic deadline (an LLM still
        receiving text for it has until that long after its latest delta): "One moment."
        (a clause of source ``filler``) while a second attempt runs beside the first;
        no clause from either within the retry deadline, or both failing: the domain's
        templates.  A reply that goes quiet half-way ends there."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        attempts = [_Attempt(1, self._faulty(first), queue)]
        failed: set[int] = set()
        reason = ""
        wait_ns = int(self.deadlines.logic_first_clause_ms * 1e6)
        deadline = now_ns() + wait_ns
        said_filler = False
        winner: int | None = None
        try:
            while winner is None:
                left_s = (deadline - now_ns()) / 1e9
                writing = max(a.activity.last_ns for a in attempts) + wait_ns
                if left_s <= 0 and writing > now_ns():
                    deadline = writing  # an LLM still writing its first clause is not silent
                    continue
                if left_s <= 0:
                    if said_filler:
                        reason = reason or (
                            f"no reply within {self.deadlines.logic_retry_ms:g} ms of the retry"
                        )
                        break
                    said_filler = True
                    reason = f"no reply within {self.deadlines.logic_first_clause_ms:g} ms"
                    self.fell_back(LOGIC_FILLER, reason)
                    self._retry(attempts, queue, again, reason)
                    deadline = now_ns() + int(self.deadlines.logic_retry_ms * 1e6)
                    yield ReplyClause(FILLER_TEXT, SOURCE_FILLER)
                    continue
                try:
                    number, item = await asyncio.wait_for(queue.get(), left_s)
                except TimeoutError:
                    continue
                if isinstance(item, ReplyClause):
                    winner = number
                    yield item
                    break
                failed.add(number)
                reason = _reason(item) if isinstance(item, Exception) else "an empty reply"
                if len(failed) == len(attempts):
                    if len(attempts) > 1:
                        break
                    self._retry(attempts, queue, again, reason)
            for a in attempts:
                if a.number != winner:
                    await a.stop()
            if winner is None:
                async for clause in self._templates(understanding, reason):
                    yield clause
                return
            async for clause in self._rest(winner, queue):
                yield clause
        finally:
            for a in attempts:
                await a.stop()

    def _retry(
        self,
        attempts: list[_Attempt],
        queue: asyncio.Queue[Any],
        again: Callable[[], AsyncIterator[ReplyClause]],
        reason: str,
    ) -> None:
        if len(attempts) > 1:
            return
        self.fell_back(LOGIC_RETRY, reason)
        attempts.append(_Attempt(2, self._faulty(_opened(again)), queue))

    async def _rest(self, winner: int, queue: asyncio.Queue[Any]) -> AsyncIterator[ReplyClause]:
        gap_s = self.deadlines.logic_gap_ms / 1000.0
        while True:
            try:
                number, item = await asyncio.wait_for(queue.get(), gap_s)
            except TimeoutError:
                self.fell_back(LOGIC_CUT, f"the reply went quiet for {gap_s * 1000:g} ms")
                return
            if number != winner:
                continue
            if item is _END:
                return
            if isinstance(item, Exception):
                self.fell_back(LOGIC_CUT, _reason(item))
                return
            yield item

    async def _templates(
        self, understanding: Understanding, reason: str
    ) -> AsyncIterator[ReplyClause]:
        fallback = self.engines.fallback
        texts: list[str] = []
        if fallback is not None and fallback.templates is not None:
            try:
                texts = [t for t in fallback.templates(understanding) if t.strip()]
            except Exception as e:
                log.warning("the domain's templates failed: %s", _reason(e))
        if texts:
            self.fell_back(LOGIC_TEMPLATES, reason)
            for text in texts:
                yield ReplyClause(text, "fallback")
            return
        raise NoReply(reason)

    def _faulty(self, clauses: AsyncIterator[ReplyClause]) -> AsyncIterator[ReplyClause]:
        return self.faults.stream("llm", clauses) if self.faults is not None else clauses

    # -- TTS ------------------------------------------------------------------------------
    async def speak(self, text: str) -> AsyncIterator[tuple[np.ndarray, int]]:
        """``text`` as (int16 audio, rate) chunks: the configured engine while it answers
        on time, the backup voice (espeak-ng; Piper behind a remote voice) for the rest
        of the turn once it did not."""
        primary = self.engines.tts
        fallback = self.engines.fallback
        backup = fallback.tts if fallback is not None else None
        if not self._tts_failed:
            spoke = False
            try:
                async for pcm in self._timed(primary.synthesize(text)):
                    spoke = True
                    yield pcm, primary.sample_rate
                return
            except Exception as e:
                if backup is None:
                    raise
                self._tts_failed = True
                self.fell_back(tts_rung(backup), _reason(e))
                if spoke:
                    return  # the clause was partly heard; saying it again would repeat it
        if backup is None:
            return
        async for pcm in self._timed(backup.synthesize(text)):
            yield pcm, backup.sample_rate

    async def _timed(self, chunks: AsyncIterator[np.ndarray]) -> AsyncIterator[np.ndarray]:
        """``chunks``, or ``TimeoutError`` when the first (or the next) is late."""
        limit_s = self.deadlines.tts_first_audio_ms / 1000.0
        it = chunks.__aiter__()
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(it.__anext__(), limit_s)
                except StopAsyncIteration:
                    return
                except TimeoutError as e:
                    raise TimeoutError(
                        f"no audio within {self.deadlines.tts_first_audio_ms:g} ms"
                    ) from e
                yield chunk
        finally:
            await _aclose(it)

    def apology(self, reason: str) -> tuple[np.ndarray, int] | None:
        """The pre-rendered apology (None when there is none: no engine could render it)."""
        fallback = self.engines.fallback
        if fallback is None or fallback.apology is None:
            return None
        self.fell_back(TURN_APOLOGY, reason)
        return fallback.apology


class NoReply(Exception):
    """Neither the logic engine nor the templates gave a reply."""


async def _opened(again: Callable[[], AsyncIterator[ReplyClause]]) -> AsyncIterator[ReplyClause]:
    """``again()``'s clauses, opened inside the attempt's task (so that an engine failing
    as it is asked fails that attempt, like any other error)."""
    async for clause in again():
        yield clause

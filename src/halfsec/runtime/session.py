"""``VoiceSession``: one conversation, from microphone frames to reply frames.

A transport (or the CLI's simulated microphone) calls ``push`` with 16 kHz int16 audio as
it arrives and reads ``events()``.  Per 20 ms frame:

1. the turn detector runs Silero VAD (~70 us, inline) and says start / pause / resume;
2. speech frames are fed to the turn's STT stream; pause frames are held back, so that a
   speculative final transcript requested at the pause covers exactly the speech;
3. at a pause, a ``TurnTask`` starts STT final -> logic -> TTS behind a closed gate;
4. each paused frame asks the end-of-turn policy whether the silence so far ends the turn
   (it may look at the speculative transcript); if so the gate opens and the reply flows;
5. speech during a reply pauses it at once (``ReplyPaused``); the speech then either
   resumes it (``ReplyResumed``: a backchannel or noise) or interrupts it (the reply task
   is cancelled and an ``Interruption`` tells the transport to drop it); see
   ``runtime/barge_in.py``.

"During a reply" lasts until the client has played the reply's last sample, which only
the transport can know: it tells the session with ``playback_ended``
(``runtime/playback.py`` keeps the model).

The session owns its conversation's dialogue state (``dialogue``); the engines it shares
with other sessions keep none.  A turn task starts from the committed state and hands its
next state back only through its gate (see ``TurnTask``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

import numpy as np

from halfsec import FRAME_MS, INTERNAL_RATE
from halfsec.audio.framing import Framer
from halfsec.clock import now_ns
from halfsec.frames import (
    EndOfTurn,
    ErrorFrame,
    Frame,
    Interruption,
    PartialTranscript,
    ReplyAudio,
    ReplyPaused,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    TimingMark,
)
from halfsec.logic.state import DialogueState
from halfsec.runtime.barge_in import EnergyOnset, PausedReply
from halfsec.runtime.deadlines import Deadlines
from halfsec.runtime.engines import Engines
from halfsec.runtime.listening import ListeningTurn
from halfsec.runtime.options import SessionOptions
from halfsec.runtime.playback import PlaybackModel
from halfsec.runtime.tasks import cancel_and_wait
from halfsec.runtime.turn_task import TurnTask
from halfsec.turn.combined import build_policy
from halfsec.turn.detector import TurnDetector, VadState
from halfsec.turn.end_of_turn import EndOfTurnPolicy
from halfsec.turn.options import TurnOptions

_CLOSED = object()

MAX_QUEUED_FRAMES = 512
"""Frames waiting for the transport beyond which ``push`` waits until half have gone
(back-pressure).  A transport reads them as fast as they come; one that cannot (its client
stopped reading) stops the session's input instead of growing this queue without bound.
Emitters never wait: what a reply in flight still produces is one reply's worth."""
YIELD_EVERY_FRAMES = 5
"""``push`` of a long chunk lets the other sessions run after this many frames (VAD runs
on the event loop they share)."""


class VoiceSession:
    def __init__(
        self,
        engines: Engines,
        turn: TurnOptions | None = None,
        options: SessionOptions | None = None,
        output_rate: int = INTERNAL_RATE,
        dialogue: DialogueState | None = None,
    ) -> None:
        self.engines = engines
        self.dialogue = dialogue if dialogue is not None else DialogueState()
        """This conversation's state after its last released turn."""
        self.turn_opt = turn or TurnOptions()
        self.opt = options or SessionOptions()
        self.deadlines = Deadlines.from_options(self.opt)
        self.faults = engines.faults.session() if engines.faults is not None else None
        """This session's share of the lab's ``--fault`` plan (None: no plan)."""
        self.output_rate = output_rate
        self.detector = TurnDetector(self.turn_opt)
        self.policy: EndOfTurnPolicy = build_policy(
            self.opt.end_of_turn,
            self.turn_opt,
            self.detector,
            (lambda text: engines.logic.is_complete(text, self.dialogue))
            if engines.logic
            else None,
            (lambda text: engines.logic.tail_said(text, self.dialogue)) if engines.logic else None,
        )
        self._framer = Framer()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._room = asyncio.Event()
        """Set while the queue has room for what ``push`` produces (``MAX_QUEUED_FRAMES``)."""
        self._room.set()
        preroll = max(1, int(self.turn_opt.preroll_ms // FRAME_MS))
        self._preroll: deque[np.ndarray] = deque(maxlen=preroll)
        self._next_turn_id = 1
        self._turn: ListeningTurn | None = None  # being spoken
        self._reply: TurnTask | None = None  # committed, possibly still speaking
        self._reply_eot_ms = 0.0
        self._reply_audio: list[np.ndarray] = []  # the committed turn's user audio
        self.playback = PlaybackModel()
        self._paused: PausedReply | None = None
        self._onset = EnergyOnset()
        self._loud = False
        self._energy_off: TurnTask | None = None  # a reply energy may no longer pause
        self._carried: list[np.ndarray] = []  # an interrupted turn's audio the next continues
        self._closed = False

    # -- output -------------------------------------------------------------------------
    def _emit(self, frame: Frame) -> None:
        if self._paused is not None and self._paused.hold(frame):
            return
        if isinstance(frame, ReplyAudio):
            self.playback.audio(frame)  # used to decide whether speech is a barge-in
        self._queue.put_nowait(frame)
        if self._queue.qsize() >= MAX_QUEUED_FRAMES:
            self._room.clear()

    async def events(self) -> AsyncIterator[Frame]:
        """Frames in the order they happened; ends after ``close``."""
        while True:
            item = await self._queue.get()
            if self._queue.qsize() <= MAX_QUEUED_FRAMES // 2:
                self._room.set()
            if item is _CLOSED:
                return
            assert isinstance(item, Frame)
            yield item

    @property
    def position_ms(self) -> float:
        return self.detector.pos_ms

    @property
    def agent_speaking(self) -> bool:
        r = self._reply
        return r is not None and (r.running or now_ns() < self.playback.end_ns(r.turn_id))

    def playback_ended(self, turn_id: int, at_ns: int | None = None) -> None:
        """The transport says turn ``turn_id``'s reply finished playing on the client at
        ``at_ns`` (monotonic ns of this process; may lie ahead; None: now).

        From the first report on, the session trusts reports over its guess
        (``runtime/playback.py``)."""
        self.playback.report(turn_id, at_ns, self._reply.turn_id if self._reply else None)

    @property
    def idle(self) -> bool:
        """No turn being spoken, no reply being produced or played."""
        return self._turn is None and not self.agent_speaking

    # -- input --------------------------------------------------------------------------
    async def push(self, pcm: np.ndarray) -> None:
        """Feed 16 kHz mono int16 audio of any length (20 ms frames are cut here).

        Waits while ``MAX_QUEUED_FRAMES`` events are not yet read (returns early if the
        session closes meanwhile), and lets other tasks run every few frames."""
        if self._closed:
            raise RuntimeError("session is closed")
        for i, frame in enumerate(self._framer.push(pcm)):
            if not self._room.is_set():
                await self._room.wait()
                if self._closed:
                    return
            elif i and i % YIELD_EVERY_FRAMES == 0:
                await asyncio.sleep(0)
            await self._process(frame)

    async def _process(self, frame: np.ndarray) -> None:
        events = self.detector.process(frame)
        self._loud = self._onset.loud(frame) and self._reply is not self._energy_off
        if self._paused is None and self._turn is None and self.opt.barge_in == "pause":
            voiced = self.detector.last_prob >= self.turn_opt.threshold
            reply = self._reply
            # Energy alone pauses only a reply already heard (runtime/playback.py).
            loud = self._loud and reply is not None and self.playback.started(reply.turn_id)
            if (voiced or loud) and reply is not None and self.agent_speaking:
                self._paused = PausedReply(reply.turn_id, self.position_ms)
                self._emit(ReplyPaused(turn_id=reply.turn_id, audio_ms=self.position_ms))
        turn = self._turn
        for ev in events:
            if ev.kind == "start":
                turn = await self._on_start(ev.audio_ms, ev.speech_ms)
            elif ev.kind == "pause" and turn is not None:
                self._on_pause(turn, ev.audio_ms, ev.speech_ms)
            elif ev.kind == "resume" and turn is not None:
                await self._on_resume(turn, ev.audio_ms)

        if self._paused is not None and await self._barge_in(turn):
            turn = self._turn
        if turn is None:
            self._preroll.append(frame)
            return
        if self.detector.state is VadState.PAUSE:
            turn.held.append(frame)
            if self._paused is None:
                self._maybe_end_turn(turn)
        else:
            turn.feed(frame)
            self._maybe_partial(turn)
            if self.position_ms - turn.start_ms + turn.carried_ms > self.opt.max_turn_s * 1000:
                self._on_pause(turn, self.position_ms, self.position_ms)
                self._end_turn(turn, "max_turn_length")

    # -- barge-in (runtime/barge_in.py) ---------------------------------------------------
    async def _barge_in(self, turn: ListeningTurn | None) -> bool:
        """Advance the pending pause by one frame; True once it is decided."""
        p = self._paused
        assert p is not None
        cand = turn if turn is not None and turn.id == p.candidate else None
        speaking = self.detector.state is VadState.SPEECH
        if cand is not None and cand.task is None and not speaking:
            self._start_task(cand)  # its transcript decides (no speculation configured)
        tr = cand.task.transcript if cand is not None and cand.task is not None else None
        voiced = self.detector.last_prob >= self.turn_opt.threshold
        text = tr.text if tr is not None else None
        args = (speaking, voiced, self.position_ms, text, self.detector.silence_ms)
        verdict = p.verdict(cand is not None, *args, self.opt, self._understood, self._loud)
        if verdict is None:
            return False
        self._paused = None
        if p.hum:
            self._energy_off = self._reply  # a steady sound, no speech: VAD alone from now on
        if verdict == "interrupt":
            await self._interrupt(self.position_ms)
            for f in p.held:
                self._emit(f)
            return True
        if cand is not None:  # never a turn: forget it
            if cand.task is not None:
                await cand.task.cancel()
            if cand.partial_task is not None:
                cand.partial_task.cancel()
            cand.stream.close()
            self.detector.end_turn()
            self._turn = None
        resumed = p.resumed(verdict, text or "")
        self.playback.delay(int(resumed.paused_ms * 1e6))
        self._emit(resumed)
        return True

    def _understood(self, text: str) -> bool:
        """Does the domain make sense of ``text`` (an answer, not a hum)?"""
        logic = self.engines.logic
        return logic is not None and logic.understand(text).intent is not None

    async def _interrupt(self, audio_ms: float, onset_ms: float | None = None) -> None:
        """Cancel the reply for good.  ``onset_ms``: the interrupting speech's onset, to
        tell whether it continues the interrupted turn (only when it is decided at once)."""
        reply = self._reply
        if reply is None:
            return
        t = now_ns()
        cancel_ms = await reply.cancel()
        self._emit(
            Interruption(turn_id=reply.turn_id, t_ns=t, audio_ms=audio_ms, cancel_ms=cancel_ms)
        )
        self.playback.reset()
        self._reply = None
        if onset_ms is not None and onset_ms - self._reply_eot_ms <= self.turn_opt.continuation_ms:
            # The user had only paused: this speech continues the interrupted turn,
            # which is answered afresh from the conversation as it was before it.
            self._carried = self._reply_audio
            self.dialogue = reply.dialogue_before

    # -- events -------------------------------------------------------------------------
    async def _on_start(self, audio_ms: float, onset_ms: float) -> ListeningTurn:
        t_detect = now_ns()
        self._carried = []
        if self._paused is not None or (self.agent_speaking and self._reply is not None):
            continuing = onset_ms - self._reply_eot_ms <= self.turn_opt.continuation_ms
            if self._paused is not None and self._reply is not None and not continuing:
                self._paused.candidate = self._next_turn_id  # its frames wait for a verdict
            else:
                self._paused = None
                await self._interrupt(audio_ms, onset_ms)
        carried, self._carried = self._carried, []
        turn_id = self._next_turn_id
        self._next_turn_id += 1
        turn = ListeningTurn(turn_id, self.engines.stt.open_stream(), onset_ms)
        for f in carried:
            turn.feed(f)
        turn.carried_ms = len(carried) * FRAME_MS
        for f in self._preroll:
            turn.feed(f)
        self._preroll.clear()
        self._turn = turn
        self._emit(SpeechStarted(turn_id=turn_id, t_ns=t_detect, audio_ms=onset_ms))
        if carried:
            self._emit(
                TimingMark(
                    turn_id=turn_id,
                    name="turn.continues",
                    attrs={"carried_ms": len(carried) * FRAME_MS},
                )
            )
        return turn

    def _on_pause(self, turn: ListeningTurn, audio_ms: float, speech_end_ms: float) -> None:
        self._emit(SpeechPaused(turn_id=turn.id, audio_ms=audio_ms, speech_end_ms=speech_end_ms))
        if self.opt.speculate:
            self._start_task(turn)

    async def _on_resume(self, turn: ListeningTurn, audio_ms: float) -> None:
        self._emit(SpeechResumed(turn_id=turn.id, audio_ms=audio_ms))
        if turn.task is not None:
            await turn.task.cancel()
            turn.task = None
        for f in turn.held:
            turn.feed(f)
        turn.held.clear()

    def _start_task(self, turn: ListeningTurn) -> None:
        task = TurnTask(
            turn.id,
            turn.stream,
            self.engines,
            self.output_rate,
            self._emit,
            dialogue=self.dialogue,
            on_dialogue=self._commit_dialogue,
            deadlines=self.deadlines,
            heard=turn.heard,
            faults=self.faults,
            on_final=lambda: self._on_final(turn),
        )
        task.start()
        turn.task = task

    def _on_final(self, turn: ListeningTurn) -> None:
        """The turn's final transcript has just landed: if the silence heard so far is
        already enough for it, end the turn now rather than on the next frame.

        Why: a live turn on this box is bound by its transcript (Silero sees the pause
        ~70 ms after the voice stops, the final takes ~110 ms), not by its window, and the
        decision waited for the next 20 ms frame after the transcript: ~13 ms at the
        median (stop 11's probe of 30 coffee orders).  Only silence already received
        counts, so the decision is the one the next frame would take, only sooner."""
        if (
            self._turn is turn
            and self._paused is None
            and not self._closed
            and self.detector.state is VadState.PAUSE
        ):
            self._maybe_end_turn(turn)

    def _commit_dialogue(self, state: DialogueState) -> None:
        self.dialogue = state

    def _maybe_end_turn(self, turn: ListeningTurn) -> None:
        silence = self.detector.silence_ms
        tr = turn.task.transcript if turn.task is not None else None
        need = self.policy.required_silence_ms(tr.text if tr is not None else None)
        if silence < need:
            return
        if (
            self.opt.speculate
            and tr is None
            and silence < need + self.turn_opt.max_wait_for_transcript_ms
        ):
            return  # the transcript is due any moment and may ask for a longer window
        self._end_turn(
            turn, "silence" if need <= self.turn_opt.silence_ms else "silence_incomplete"
        )

    def _end_turn(self, turn: ListeningTurn, reason: str) -> None:
        self.detector.end_turn()
        self._turn = None
        self._preroll.extend(turn.held)  # bounded deque: keeps the latest frames
        if turn.task is None:
            self._start_task(turn)
        task = turn.task
        assert task is not None
        self._emit(
            EndOfTurn(
                turn_id=turn.id,
                audio_ms=self.position_ms,
                speech_end_ms=self.detector.speech_end_ms,
                reason=reason,
            )
        )
        task.commit()
        if task.task is not None:  # its final is the turn's last use of the stream
            task.task.add_done_callback(lambda _: turn.stream.close())
        self._reply = task
        self._reply_eot_ms = self.position_ms
        self._reply_audio = turn.audio
        if turn.partial_task is not None:
            turn.partial_task.cancel()

    # -- partial transcripts ------------------------------------------------------------
    def _maybe_partial(self, turn: ListeningTurn) -> None:
        if not self.opt.partials:
            return
        turn.fed_since_partial_ms += FRAME_MS
        if turn.fed_since_partial_ms < self.opt.partial_interval_ms:
            return
        if turn.partial_task is not None and not turn.partial_task.done():
            return
        turn.fed_since_partial_ms = 0.0
        turn.partial_task = asyncio.create_task(self._partial(turn))

    async def _partial(self, turn: ListeningTurn) -> None:
        try:
            tr = await turn.stream.hypothesis(final=False)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._emit(ErrorFrame(turn_id=turn.id, code="stt_partial_failed", message=str(e)))
            return
        if tr.text and self._turn is turn:
            turn.heard.partial, turn.heard.partial_audio_ms = tr.text, tr.audio_ms
            self._emit(PartialTranscript(turn_id=turn.id, text=tr.text))

    # -- shutdown -----------------------------------------------------------------------
    async def close(self) -> None:
        """Cancel everything in flight and end ``events()``."""
        if self._closed:
            return
        self._closed = True
        for t in (self._turn.task if self._turn else None, self._reply):
            if t is not None:
                await t.cancel()
        if self._turn is not None and self._turn.partial_task is not None:
            await cancel_and_wait(self._turn.partial_task)
        if self._turn is not None:
            self._turn.stream.close()  # (a PocketSphinx decoder goes back to its pool)
        self._queue.put_nowait(_CLOSED)
        self._room.set()

"""Dialogue state per session: slot filling, corrections, read-back, chat history, and
speculation that never commits a cancelled turn's state.

The first half drives the policy with transcripts (fast); the second runs the real
pipeline (Silero, Whisper, Piper) on speech synthesized by Piper, at real-time pace."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import FrozenInstanceError
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from llm_double import LLMDouble

from halfsec.audio.io import load_audio, write_wav
from halfsec.audio.resample import resample
from halfsec.cli.run import run_turns
from halfsec.config import load_config
from halfsec.frames import Frame, SpeechResumed
from halfsec.logic import LogicOptions, load_domain
from halfsec.logic.domain_logic import DomainLogic
from halfsec.logic.engine import DialogueTurn, LogicEngine, ReplyClause, Understanding
from halfsec.logic.llm import ChatMessage, trim_history
from halfsec.logic.state import DialogueState
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.runtime.engines import Engines
from halfsec.runtime.file_run import run_conversation, run_file
from halfsec.runtime.session import VoiceSession
from halfsec.runtime.turn_task import TurnTask
from halfsec.stt.engine import STTStream, Transcript
from halfsec.tts.engine import TTSEngine


@pytest.fixture(scope="module")
def coffee() -> DomainLogic:
    return DomainLogic(load_domain("coffee"))


async def say(logic: LogicEngine, state: DialogueState, text: str) -> tuple[DialogueState, str]:
    """One turn, the reply said in full: (next state, reply text)."""
    turn = logic.respond(text, state)
    reply = " ".join([c.text async for c in turn.clauses])
    return turn.remember(reply), reply


async def conversation(logic: LogicEngine, *utterances: str) -> tuple[DialogueState, list[str]]:
    state, replies = DialogueState(), []
    for text in utterances:
        state, reply = await say(logic, state, text)
        replies.append(reply)
    return state, replies


def order(state: DialogueState) -> dict[str, str] | None:
    return dict(state.order.slots) if state.order is not None else None


# ------------------------------------------------------------------ the policy


async def test_a_follow_up_question_and_its_answer_complete_the_order(coffee: DomainLogic) -> None:
    state, replies = await conversation(coffee, "I'd like a latte", "Large.", "Iced, please.")
    assert "what size" in replies[0].lower()
    assert replies[1] == "Sure. One large latte. Is that right?"
    assert replies[2] == "Sure. One large iced latte. Is that right?"
    assert order(state) == {"coffeeDrink": "latte", "size": "large", "temperature": "iced"}
    assert state.confirming and state.request is not None and state.turns == 3


async def test_a_correction_replaces_the_slot_and_yes_places_the_order(
    coffee: DomainLogic,
) -> None:
    state, replies = await conversation(
        coffee, "A small americano.", "No, make it a large.", "Yes."
    )
    assert replies[1] == "Sure. One large americano. Is that right?"
    assert replies[2].startswith("Got it. One large americano, coming right up.")
    assert state.request is None and not state.confirming
    assert [dict(r.slots) for r in state.done] == [{"size": "large", "coffeeDrink": "americano"}]


async def test_no_asks_what_to_change_and_the_answer_is_read_back(coffee: DomainLogic) -> None:
    state, replies = await conversation(coffee, "a large mocha", "no", "a small one")
    assert replies[1] == "Okay. What would you like to change?"
    assert replies[2] == "Sure. One small mocha. Is that right?"
    assert order(state) == {"size": "small", "coffeeDrink": "mocha"}


async def test_a_correction_after_the_order_was_placed_reopens_it(coffee: DomainLogic) -> None:
    state, _ = await conversation(coffee, "a large latte", "yes", "no, make it iced")
    assert state.done == () and state.confirming
    assert order(state) == {"size": "large", "coffeeDrink": "latte", "temperature": "iced"}


async def test_cancel_drops_the_open_request(coffee: DomainLogic) -> None:
    state, replies = await conversation(coffee, "a large latte", "never mind")
    assert "cancelled" in replies[1] and state.order is None


async def test_a_declined_follow_up_is_not_asked_again(coffee: DomainLogic) -> None:
    state, replies = await conversation(coffee, "a latte", "doesn't matter")
    assert replies[1] == "Sure. One latte. Is that right?"
    assert state.confirming and order(state) == {"coffeeDrink": "latte"}


async def test_speech_off_the_topic_keeps_the_question_open(coffee: DomainLogic) -> None:
    state, replies = await conversation(coffee, "a latte", "what's the weather like", "small")
    assert (
        replies[1]
        == "Sorry, I didn't catch that. What size would you like: small, medium or large?"
    )
    assert order(state) == {"coffeeDrink": "latte", "size": "small"}


async def test_a_second_drink_starts_a_second_request(coffee: DomainLogic) -> None:
    state, _ = await conversation(coffee, "a large latte", "and a small cappuccino too")
    assert [dict(r.slots) for r in state.done] == [{"size": "large", "coffeeDrink": "latte"}]
    assert order(state) == {"size": "small", "coffeeDrink": "cappuccino"}


def test_turn_completeness_follows_the_conversation(coffee: DomainLogic) -> None:
    fresh = DialogueState()
    asked = coffee.respond("I'd like a latte", fresh).state
    confirming = coffee.respond("a large latte", fresh).state
    # On its own "Large." names no drink: a pause inside a turn (long window) ...
    assert coffee.is_complete("Large.", fresh) is False
    # ... but it answers "What size?" and "Yes." answers the read-back.
    assert coffee.is_complete("Large.", asked) is True
    assert coffee.is_complete("Yes.", confirming) is True
    assert coffee.is_complete("what's the weather like", asked) is None
    assert coffee.is_complete("a large latte", fresh) is True


async def test_respond_leaves_the_state_it_was_given_alone(coffee: DomainLogic) -> None:
    start, _ = await conversation(coffee, "I'd like a latte")
    before = (start.request, start.asking, start.confirming, start.done, start.history)
    turn = coffee.respond("Large.", start)
    [c async for c in turn.clauses]
    turn.remember("Sure. One large latte. Is that right?")
    assert (start.request, start.asking, start.confirming, start.done, start.history) == before
    assert start.request is not None and dict(start.request.slots) == {"coffeeDrink": "latte"}
    with pytest.raises(TypeError):
        start.request.slots["size"] = "large"  # type: ignore[index]
    with pytest.raises(FrozenInstanceError):
        start.turns = 5  # type: ignore[misc]


def test_history_keeps_the_latest_whole_exchanges_within_the_budget() -> None:
    msgs = [
        ChatMessage("user" if i % 2 == 0 else "assistant", f"message number {i} " * 5)
        for i in range(10)
    ]
    kept = trim_history(msgs, 100)
    assert kept == tuple(msgs[-len(kept) :]) and 0 < len(kept) < 10
    assert kept[0].role == "user", "an answer is never kept without its question"
    assert trim_history(msgs[:1], 0) == (msgs[0],), "the user's current words always go"


async def test_the_llm_gets_the_conversation_within_its_token_budget() -> None:
    """The LLM (a local TEST DOUBLE for an OpenAI-compatible API) sees earlier turns of
    its own session only, oldest dropped first when the budget is small."""
    tokens = ["We open at seven.", " See you then."]
    async with LLMDouble(tokens=tokens) as llm:
        opts = LogicOptions(llm_base_url=llm.base_url, llm_history_tokens=40)
        logic = DomainLogic(load_domain("coffee"), opts)
        try:
            a, _ = await say(logic, DialogueState(), "When do you open tomorrow?")
            b, _ = await say(logic, DialogueState(), "Do you have wifi here?")
            a, _ = await say(logic, a, "And on Sunday?")
            a, _ = await say(logic, a, "Is there parking nearby, by the way?")
        finally:
            await logic.aclose()
        bodies = [r.body["messages"] for r in llm.requests]
    third = [m["content"] for m in bodies[2] if m["role"] != "system"]
    assert third == [
        "When do you open tomorrow?",
        "We open at seven. See you then.",
        "And on Sunday?",
    ]
    assert [m["content"] for m in bodies[1] if m["role"] != "system"] == ["Do you have wifi here?"]
    fourth = [m["content"] for m in bodies[3] if m["role"] != "system"]
    assert fourth[-1] == "Is there parking nearby, by the way?"
    assert "When do you open tomorrow?" not in fourth, "the oldest exchange went first"
    # What the session keeps is trimmed the same way, so it stays bounded.
    assert a.history[0].role == "user" and a.history[-1].role == "assistant"
    assert len(a.history) < 2 * a.turns and len(b.history) == 2


# ------------------------------------------------------------------ the gate


class _Stream(STTStream):
    def __init__(self, text: str) -> None:
        self.text = text

    def feed(self, pcm: np.ndarray) -> None:
        pass

    async def hypothesis(self, final: bool) -> Transcript:
        return Transcript(self.text, final, 1.0, 1000.0)


class _SlowTTS(TTSEngine):
    """20 ms of tone per chunk, three chunks a clause, a pause between chunks."""

    sample_rate = 16_000

    def __init__(self) -> None:
        self.speaking = asyncio.Event()

    async def synthesize(self, text: str) -> AsyncIterator[np.ndarray]:
        self.speaking.set()
        for _ in range(3):
            await asyncio.sleep(0.01)
            yield np.full(320, 1000, dtype=np.int16)


def _task(
    logic: DomainLogic,
    text: str,
    state: DialogueState,
    sink: list[DialogueState],
    tts: _SlowTTS | None = None,
) -> TurnTask:
    engines = Engines(stt=None, logic=logic, tts=tts or _SlowTTS())  # type: ignore[arg-type]
    frames: list[Frame] = []
    return TurnTask(1, _Stream(text), engines, 16_000, frames.append, state, sink.append)


async def test_a_speculative_turn_commits_no_state_until_its_gate_opens(
    coffee: DomainLogic,
) -> None:
    start = DialogueState()
    committed: list[DialogueState] = []
    task = _task(coffee, "a large latte", start, committed)
    task.start()
    await asyncio.wait_for(task.done.wait(), 5)
    assert committed == [], "the whole reply was computed, but behind the closed gate"
    await task.cancel()  # the user went on speaking
    assert committed == [] and task.dialogue_before is start

    task = _task(coffee, "a large latte", start, committed)
    task.start()
    await asyncio.wait_for(task.done.wait(), 5)
    task.commit()
    assert order(committed[-1]) == {"size": "large", "coffeeDrink": "latte"}
    assert [m.role for m in committed[-1].history] == ["user", "assistant"]


async def test_a_barge_in_keeps_what_was_said_in_the_history(coffee: DomainLogic) -> None:
    committed: list[DialogueState] = []
    tts = _SlowTTS()
    task = _task(coffee, "a large latte", DialogueState(), committed, tts)
    task.commit()  # sequential turn: the gate is open from the start
    task.start()
    await asyncio.wait_for(tts.speaking.wait(), 5)  # the first clause, "Sure.", is out
    await task.cancel()
    assert committed[0].confirming and len(committed) == 2
    assert committed[-1].history[-1] == ChatMessage("assistant", "Sure.")


# ------------------------------------------------------------------ the real pipeline


SPEECH_DIR = Path(__file__).parent / "data" / "dialogue"


async def _speech(engines: Engines, text: str) -> np.ndarray:
    """Piper's voice at 16 kHz, trimmed to its voiced part, from tests/data/dialogue.

    The clips are committed, not synthesized per run: Piper draws noise, so every run
    spoke a slightly different clip, and one in a few of those Whisper heard differently
    ("latte" missing), which made these end-to-end tests flaky.  These tests are about
    the dialogue state, not recognition, so the committed clips are ones Whisper hears
    right (the first "I'd like a latte." drawn was heard as "I'd lik..." and was drawn
    again).  A missing clip is made with Piper and written there; commit it."""
    path = SPEECH_DIR / (re.sub(r"[^a-z]+", "_", text.lower()).strip("_") + ".flac")
    if path.exists():
        return load_audio(path)
    chunks = [c async for c in engines.tts.synthesize(text)]
    pcm = resample(np.concatenate(chunks).astype(np.int16), engines.tts.sample_rate, 16_000)
    pcm = pcm.astype(np.int16)
    bounds = voiced_bounds(pcm)
    assert bounds is not None
    pcm = pcm[max(0, bounds[0] - 800) : bounds[1]]
    SPEECH_DIR.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), pcm, 16_000, subtype="PCM_16")
    return pcm


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(16_000 * seconds), dtype=np.int16)


class _Spy(LogicEngine):
    """The coffee logic, noting every transcript it was asked to answer."""

    def __init__(self, logic: LogicEngine) -> None:
        self.logic = logic
        self.asked: list[str] = []

    def understand(self, text: str) -> Understanding:
        return self.logic.understand(text)

    def is_complete(self, text: str, state: DialogueState | None = None) -> bool | None:
        return self.logic.is_complete(text, state)

    def reply(self, text: str, understanding: Understanding) -> AsyncIterator[ReplyClause]:
        return self.logic.reply(text, understanding)

    def respond(self, text: str, state: DialogueState) -> DialogueTurn:
        self.asked.append(text)
        return self.logic.respond(text, state)


async def test_two_turn_conversation_through_the_pipeline(engines: Engines, tmp_path: Path) -> None:
    """``halfsec run --conversation`` on two recordings: "I'd like a latte." / "Large."."""
    first = np.concatenate(
        [_silence(0.5), await _speech(engines, "I'd like a latte."), _silence(0.5)]
    )
    second = np.concatenate([_silence(0.5), await _speech(engines, "Large."), _silence(0.5)])
    paths = [tmp_path / "1.wav", tmp_path / "2.wav"]
    for p, pcm in zip(paths, (first, second), strict=True):
        write_wav(p, pcm, 16_000)
    results = await run_turns(paths, engines, load_config(), tmp_path)
    assert [r["turn"] for r in results] == [1, 2]
    for r in results:
        assert r["errors"] == [] and r["v2v_ms"] is not None and r["v2v_ms"] > 0, r
    assert "size" in results[0]["reply_text"].lower() and results[0]["dialogue"]["asking"] == "size"
    assert results[1]["intent"] == "orderDrink" and results[1]["slots"] == {"size": "large"}
    state = results[1]["dialogue"]
    assert state["request"] == {
        "intent": "orderDrink",
        "slots": {"coffeeDrink": "latte", "size": "large"},
    }
    assert state["confirming"] and state["turns"] == 2 and state["history_messages"] == 4


async def test_a_cancelled_speculation_leaves_the_session_state_untouched(engines: Engines) -> None:
    """'Can I get a large' [pause] 'latte, please': the pause starts a speculative turn,
    which computes its next state (an order for a large something, asking for the drink)
    behind the closed gate; the user goes on, the turn is cancelled, and the session
    answers only the whole utterance."""
    spy = _Spy(DomainLogic(load_domain("coffee")))
    local = Engines(stt=engines.stt, logic=spy, tts=engines.tts)
    head = await _speech(engines, "Can I get a large")
    tail = await _speech(engines, "latte, please.")
    pcm = np.concatenate([_silence(0.5), head, _silence(0.5), tail, _silence(0.5)])
    session = VoiceSession(local)
    frames: list[Frame] = []
    real_emit = session._emit

    def tap(frame: Frame) -> None:
        frames.append(frame)
        real_emit(frame)

    session._emit = tap  # type: ignore[method-assign]
    run = await run_file(session, pcm)
    assert any(isinstance(f, SpeechResumed) for f in frames), "the user resumed after the pause"
    assert len(spy.asked) >= 2, f"a speculative turn was answered before the resume: {spy.asked}"
    state = run.dialogue
    assert state is not None and state.turns == 1, state
    assert [m.content for m in state.history if m.role == "user"] == [spy.asked[-1]]
    assert order(state) == {"size": "large", "coffeeDrink": "latte"}, spy.asked


async def test_a_continuation_answers_from_the_state_before_the_cut_off_turn(
    engines: Engines,
) -> None:
    """'A small latte.' is answered, then the user adds 'No wait, iced.' while the read-back
    plays: the interrupted turn's state is rolled back and the whole utterance answered."""
    pcm = np.concatenate(
        [
            _silence(0.5),
            await _speech(engines, "A small latte."),
            _silence(0.7),
            await _speech(engines, "Make it iced."),
            _silence(0.5),
        ]
    )
    session = VoiceSession(engines)
    run = await run_file(session, pcm)
    assert run.interruptions, "the second phrase barged in on the read-back"
    state = run.dialogue
    assert state is not None and state.turns == 1, state
    assert order(state) == {"size": "small", "coffeeDrink": "latte", "temperature": "iced"}


async def test_sessions_keep_their_own_conversations(engines: Engines) -> None:
    one, two = VoiceSession(engines), VoiceSession(engines)
    pcm = np.concatenate(
        [_silence(0.5), await _speech(engines, "I'd like a latte."), _silence(0.5)]
    )
    runs = await run_conversation(one, [pcm])
    assert runs[0].dialogue is not None and runs[0].dialogue.asking == "size"
    assert two.dialogue == DialogueState() and one.dialogue is not two.dialogue

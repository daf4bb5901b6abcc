"""TTS engines, run for real (Piper voice and libespeak-ng are packaged, nothing mocked).

Engines are loaded once per module: Piper's model takes ~0.3 s to load, everything
else here takes milliseconds.  The round-trip tests feed the streamed, trimmed audio to
pocketsphinx (a dependency of halfsec, bundled English model), so "it sounds like the
text" is checked by a recogniser, not by a human.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr

from halfsec.errors import ConfigError, EngineUnavailable
from halfsec.logic.factory import create_logic
from halfsec.logic.options import LogicOptions
from halfsec.runtime.build import fixed_clauses
from halfsec.tts import TTSEngine, TTSOptions, available_engines, create_tts
from halfsec.tts.engine import set_clause_index
from halfsec.tts.espeak import EspeakEngine
from halfsec.tts.phrase_cache import PhraseCache
from halfsec.tts.piper import PiperEngine, _split_clauses
from halfsec.tts.silence_trim import LeadingSilenceTrimmer

TWO_SENTENCES = "Sure, I can do that. Your order will be ready in five minutes."
LONG_TEXT = " ".join(f"This is sentence number {n} of a long answer." for n in range(40))


@pytest.fixture(scope="module")
def piper() -> Iterator[PiperEngine]:
    engine = create_tts(TTSOptions(engine="piper"))
    assert isinstance(engine, PiperEngine)
    engine.warmup()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def espeak() -> Iterator[EspeakEngine]:
    engine = create_tts(TTSOptions(engine="espeak"))
    assert isinstance(engine, EspeakEngine)
    engine.warmup()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def recognizer() -> Any:
    """pocketsphinx with its general English LM plus a digits-only grammar."""
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=16_000, loglevel="FATAL")
    decoder.add_jsgf_string(
        "digits",
        "#JSGF V1.0; grammar digits; public <d> = "
        "( zero | one | two | three | four | five | six | seven | eight | nine )+ ;",
    )
    return decoder


async def collect(engine: TTSEngine, text: str) -> list[np.ndarray]:
    return [chunk async for chunk in engine.synthesize(text)]


def audible_onset_ms(pcm: np.ndarray, rate: int, threshold: int = 100) -> float:
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > threshold)
    assert loud.size, "no audible sample at all"
    return float(loud[0]) * 1000 / rate


def transcribe(decoder: Any, pcm: np.ndarray, rate: int, search: str) -> str:
    audio = soxr.resample(pcm.astype(np.float32) / 32768, rate, 16_000)
    pcm16 = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    pad = np.zeros(3200, dtype=np.int16)  # 200 ms either side, as a recogniser expects
    d = decoder
    d.activate_search(search)
    d.start_utt()
    d.process_raw(np.concatenate((pad, pcm16, pad)).tobytes(), full_utt=True)
    d.end_utt()
    hyp = d.hyp()
    return hyp.hypstr if hyp is not None else ""


# -- options and factory ---------------------------------------------------------------


def test_options_defaults_and_validation() -> None:
    opts = TTSOptions()
    assert opts.engine == "piper" and opts.threads == 2 and opts.trim_leading_silence
    from_config: Any = "/x/voice.onnx"  # config files hand paths over as strings
    assert TTSOptions(model_path=from_config).model_path == Path("/x/voice.onnx")
    for bad in (
        {"engine": "festival"},
        {"threads": 0},
        {"length_scale": 0.0},
        {"espeak_rate": 20},
        {"keep_leading_ms": -1.0},
    ):
        with pytest.raises(ConfigError):
            TTSOptions(**bad)


def test_available_engines_reports_both_usable() -> None:
    engines = {name: (ok, detail) for name, ok, detail in available_engines()}
    assert set(engines) == {"piper", "espeak"}
    assert engines["piper"][0], engines["piper"][1]
    assert engines["espeak"][0], engines["espeak"][1]
    assert "joe" in engines["piper"][1]


def test_missing_voice_is_engine_unavailable(tmp_path: Path) -> None:
    missing = TTSOptions(model_path=tmp_path / "nope.onnx")
    with pytest.raises(EngineUnavailable, match="model_path"):
        create_tts(missing)
    (name, ok, detail) = available_engines(missing)[0]
    assert name == "piper" and not ok and "nope.onnx" in detail
    with pytest.raises(EngineUnavailable, match="voice"):
        create_tts(TTSOptions(engine="espeak", espeak_voice="no-such-voice"))


# -- leading-silence trimmer ------------------------------------------------------------


def test_trimmer_keeps_preroll_across_chunks() -> None:
    trimmer = LeadingSilenceTrimmer(threshold=100, keep=4)
    silence = np.zeros(10, dtype=np.int16)
    assert trimmer.feed(silence).size == 0
    onset = np.array([1, 2, 500, 7], dtype=np.int16)
    out = trimmer.feed(onset)
    # 4 samples kept before the 500: the last 2 of the silence and the first 2 of onset.
    assert out.tolist() == [0, 0, 1, 2, 500, 7]
    assert trimmer.trimmed == 8
    later = np.zeros(5, dtype=np.int16)  # silence after the onset is never touched
    assert trimmer.feed(later).size == 5


def test_trimmer_disabled_passes_everything() -> None:
    trimmer = LeadingSilenceTrimmer(threshold=100, keep=4, enabled=False)
    assert trimmer.feed(np.zeros(10, dtype=np.int16)).size == 10


# -- Piper ---------------------------------------------------------------------------


async def test_piper_audio_format_and_duration(piper: PiperEngine) -> None:
    assert piper.sample_rate == 22_050
    chunks = await collect(piper, "One large latte, coming up.")
    assert chunks and all(c.dtype == np.int16 and c.ndim == 1 for c in chunks)
    pcm = np.concatenate(chunks)
    seconds = pcm.size / piper.sample_rate
    assert 0.9 < seconds < 3.5, seconds  # 5 words at conversational pace
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    assert rms > 500, rms  # clearly not silence (-36 dBFS)
    assert np.abs(pcm).max() < 32767  # no clipping at unit volume


async def test_piper_first_chunk_before_whole_text(piper: PiperEngine) -> None:
    t0 = time.monotonic()
    stamps: list[float] = []
    async for _chunk in piper.synthesize(TWO_SENTENCES):
        stamps.append(time.monotonic() - t0)
    assert len(stamps) == 2, "one chunk per sentence expected"
    # The second sentence takes >15 ms to render, so the first chunk must come earlier.
    assert stamps[1] - stamps[0] > 0.010, stamps


async def test_piper_trims_leading_silence(piper: PiperEngine) -> None:
    text = "one two three"
    raw = piper.render_blocking(text)  # untrimmed: Piper leads with ~70 ms of silence here
    raw_onset = audible_onset_ms(raw, piper.sample_rate)
    first = (await collect(piper, text))[0]
    onset = audible_onset_ms(first, piper.sample_rate)
    keep = piper.options.keep_leading_ms
    assert onset <= keep + 1.0, onset
    assert onset >= keep - 1.0, onset  # the pre-roll is kept, onset not clipped
    assert raw_onset > onset + 20, (raw_onset, onset)


async def test_piper_loudness_is_not_normalised_per_sentence(piper: PiperEngine) -> None:
    """With per-sentence normalisation every sentence peaks at full scale."""
    peaks = [int(np.abs(c).max()) for c in await collect(piper, TWO_SENTENCES)]
    assert all(p < 30_000 for p in peaks), peaks


async def test_piper_cancellation_stops_at_next_chunk(piper: PiperEngine) -> None:
    full_start = time.monotonic()
    piper.render_blocking(LONG_TEXT)
    full = time.monotonic() - full_start

    first_seen = asyncio.Event()

    async def consume() -> None:
        async for _chunk in piper.synthesize(LONG_TEXT):
            first_seen.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_seen.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The worker must be free after at most one more sentence, not the whole text.
    start = time.monotonic()
    chunks = await collect(piper, "Okay.")
    waited = time.monotonic() - start
    assert chunks
    assert waited < full / 4, (waited, full)


async def test_piper_never_blocks_the_event_loop(piper: PiperEngine) -> None:
    """Inference runs on the worker: a 1 ms ticker keeps ticking during a long render."""
    text = "This single rather long sentence keeps the voice model busy for quite a while."
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick_task = asyncio.create_task(ticker())
    start = time.monotonic()
    await collect(piper, text)
    render = time.monotonic() - start
    done.set()
    await tick_task
    assert render > 0.05, render  # long enough that blocking would show
    assert max(gaps) < render / 2, (max(gaps), render)


def test_split_clauses_keeps_marks_with_the_piece_before() -> None:
    assert _split_clauses(list("ab, cd; ef.")) == [list("ab, "), list("cd; "), list("ef.")]
    assert _split_clauses(list("abc.")) == [list("abc.")]
    assert _split_clauses(list("ab, ")) == [list("ab, ")]


async def test_piper_split_clauses_gives_earlier_first_chunk(piper: PiperEngine) -> None:
    split = PiperEngine(TTSOptions(piper_split_clauses=True))
    try:
        split.warmup()
        text = "Got it, a small cappuccino with oat milk."
        whole = await collect(piper, text)
        pieces = await collect(split, text)
        assert len(whole) == 1 and len(pieces) == 2
        # "Got it," is a fraction of the sentence; the rest follows as the second chunk.
        assert pieces[0].size < 0.5 * whole[0].size
        total = sum(p.size for p in pieces)
        assert 0.8 < total / whole[0].size < 1.25
    finally:
        split.close()


async def test_piper_empty_text_yields_nothing(piper: PiperEngine) -> None:
    for text in ("", "   ", "\n\t "):
        assert await collect(piper, text) == []


async def test_piper_round_trip_recognised(piper: PiperEngine, recognizer: Any) -> None:
    """The streamed (trimmed) audio is recognised as the words.

    Piper samples noise, so every run differs; these phrases were recognised 40/40 times
    (open LM, then digits grammar).  Others were not ("eight two six" -> "eighty six")."""
    pcm = np.concatenate(await collect(piper, "one two three"))
    assert transcribe(recognizer, pcm, piper.sample_rate, "_default") == "one two three"
    pcm = np.concatenate(await collect(piper, "nine eight seven"))
    assert transcribe(recognizer, pcm, piper.sample_rate, "digits") == "nine eight seven"


# -- espeak --------------------------------------------------------------------------


async def test_espeak_audio_format_and_duration(espeak: EspeakEngine) -> None:
    assert espeak.sample_rate == 22_050
    chunks = await collect(espeak, "One large latte, coming up.")
    assert len(chunks) > 5  # streamed in espeak_chunk_ms pieces, not one block
    assert all(c.dtype == np.int16 and c.ndim == 1 for c in chunks)
    pcm = np.concatenate(chunks)
    assert 0.9 < pcm.size / espeak.sample_rate < 3.5
    assert float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) > 500
    assert audible_onset_ms(pcm, espeak.sample_rate) <= espeak.options.keep_leading_ms + 1.0


async def test_espeak_first_audio_is_fast(espeak: EspeakEngine) -> None:
    times = []
    for _ in range(5):
        start = time.monotonic()
        async for _chunk in espeak.synthesize("One large latte, coming up."):
            times.append(time.monotonic() - start)
            break
    assert sorted(times)[2] < 0.020, times  # ~1 ms measured; generous for shared CPUs


async def test_espeak_repeated_and_concurrent(espeak: EspeakEngine) -> None:
    sizes = [sum(c.size for c in await collect(espeak, "Hello there.")) for _ in range(20)]
    # espeak-ng adds a little random jitter (a few samples), otherwise the same audio.
    assert min(sizes) > 0.5 * espeak.sample_rate
    assert max(sizes) - min(sizes) < 0.01 * min(sizes), sizes
    a, b = await asyncio.gather(collect(espeak, "first one"), collect(espeak, "second one"))
    assert a and b
    # Calling from a fresh event loop on another thread must work too (the library is
    # process-global; the worker thread is shared).
    other = await asyncio.to_thread(asyncio.run, collect(espeak, "from another loop"))
    assert other


async def test_espeak_cancellation_stops_synthesis(espeak: EspeakEngine) -> None:
    text = LONG_TEXT * 5
    start = time.monotonic()
    full_samples = espeak.render_blocking(text).size
    full = time.monotonic() - start

    got = 0
    stream = espeak.synthesize(text)
    assert isinstance(stream, AsyncGenerator)
    async for chunk in stream:
        got += chunk.size
        break
    await stream.aclose()
    start = time.monotonic()
    assert await collect(espeak, "Next.")
    waited = time.monotonic() - start
    assert got < full_samples
    assert waited < max(full / 4, 0.005), (waited, full)


async def test_espeak_empty_text_yields_nothing(espeak: EspeakEngine) -> None:
    for text in ("", "  ", "\n"):
        assert await collect(espeak, text) == []


async def test_espeak_round_trip_recognised(espeak: EspeakEngine, recognizer: Any) -> None:
    """espeak's robotic voice defeats the open LM; with a digits grammar "one two three"
    was recognised 80/80 times (pocketsphinx mishears its "seven" and "eight")."""
    pcm = np.concatenate(await collect(espeak, "one two three"))
    assert transcribe(recognizer, pcm, espeak.sample_rate, "digits") == "one two three"


async def test_both_engines_in_one_process(piper: PiperEngine, espeak: EspeakEngine) -> None:
    """Piper links its own static espeak-ng; the two copies must not interfere."""
    a, b, c = await asyncio.gather(
        collect(piper, "Piper speaks."),
        collect(espeak, "Espeak speaks."),
        collect(piper, "And again."),
    )
    assert a and b and c


# -- the phrase cache (tts/phrase_cache.py) ---------------------------------------------
class CountingEspeak(EspeakEngine):
    """The real espeak-ng engine, counting how often it is asked to render."""

    calls = 0

    async def synthesize(self, text: str) -> AsyncIterator[np.ndarray]:
        self.calls += 1
        async for chunk in super().synthesize(text):
            yield chunk


@pytest.fixture
def counting() -> Iterator[CountingEspeak]:
    engine = CountingEspeak(TTSOptions(engine="espeak"))
    yield engine
    engine.close()


async def test_phrase_cache_replays_a_kept_clause(counting: CountingEspeak) -> None:
    cache = PhraseCache(counting, entries=4, max_chars=48)
    first = await collect(cache, "Sure.")
    again = await collect(cache, "Sure.")
    assert counting.calls == 1 and (cache.hits, cache.misses) == (1, 1)
    assert np.array_equal(np.concatenate(first), np.concatenate(again))
    again[0][:] = 0  # a consumer scaling in place must not change what is kept
    assert np.array_equal(np.concatenate(await collect(cache, "Sure.")), np.concatenate(first))


async def test_phrase_cache_keeps_openers_apart_from_later_clauses(
    counting: CountingEspeak,
) -> None:
    """Engines trim a reply's first clause only, so the same words later in a reply are
    another rendering."""
    cache = PhraseCache(counting, entries=4, max_chars=48)
    await collect(cache, "Got it.")

    async def later() -> None:
        set_clause_index(1)
        await collect(cache, "Got it.")

    await asyncio.create_task(later())
    assert counting.calls == 2
    assert cache.kept("Got it.", first=True) and cache.kept("Got it.", first=False)


async def test_phrase_cache_skips_long_and_unfinished_clauses(counting: CountingEspeak) -> None:
    cache = PhraseCache(counting, entries=4, max_chars=20)
    long = "One large latte with oat milk, coming right up."
    await collect(cache, long)
    await collect(cache, long)
    assert counting.calls == 2 and not cache.kept(long)
    stream = cache.synthesize("Hello there, friend.")
    assert isinstance(stream, AsyncGenerator)
    await stream.__anext__()
    await stream.aclose()  # the consumer stopped (barge-in): a partial clause is not kept
    assert not cache.kept("Hello there, friend.")


async def test_phrase_cache_is_bounded_least_recently_used_out(counting: CountingEspeak) -> None:
    cache = PhraseCache(counting, entries=2, max_chars=48)
    for text in ("Sure.", "Got it.", "Sure.", "Okay."):
        await collect(cache, text)
    assert cache.kept("Sure.") and cache.kept("Okay.") and not cache.kept("Got it.")
    assert PhraseCache(counting, entries=0, max_chars=48).kept("Sure.") is False


async def test_phrase_cache_prefills_at_warmup_inside_a_running_loop(
    counting: CountingEspeak,
) -> None:
    cache = PhraseCache(counting, entries=8, max_chars=48, prefill=["Sure.", " Sure.", "Got it."])
    cache.warmup()  # called from a running loop, as a server's startup does
    assert cache.kept("Sure.") and cache.kept("Got it.") and counting.calls == 2
    assert len(await collect(cache, "Got it.")) > 0 and counting.calls == 2


def test_fixed_clauses_are_the_domain_replies_without_slots() -> None:
    fixed = fixed_clauses(create_logic(LogicOptions()))
    assert "Sure." in fixed and "Got it." in fixed
    assert not [t for t in fixed if "{" in t or "[" in t]

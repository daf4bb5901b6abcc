"""PocketSphinx 5 (bundled en-us model): true streaming recognition, small and fast.

Less accurate than Whisper, but its cost is spread over the utterance: audio is decoded
as it arrives, so a final only has to close the utterance (~50 ms).  ``process_raw``
costs ~1.5-2.5 ms per 20 ms frame here, too much to run inside ``feed`` on the event
loop, so ``feed`` only queues the audio and the engine's single inference thread
decodes the queue.

A PocketSphinx decoder holds one utterance's search state and takes ~250 ms to load, so
the engine keeps a pool: ``open_stream`` borrows an idle decoder (or loads one on the
inference thread), ``close`` gives it back.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from halfsec.errors import EngineUnavailable
from halfsec.stt.engine import STTEngine, STTStream, Transcript
from halfsec.stt.lane_threads import inference_executor, lower_thread_priority
from halfsec.stt.options import STTOptions
from halfsec.stt.pcm_input import SAMPLE_RATE, as_pcm16

__all__ = ["PocketSphinxEngine", "PocketSphinxStream"]


def _import_pocketsphinx() -> Any:
    try:
        import pocketsphinx
    except ImportError as e:
        raise EngineUnavailable(
            "PocketSphinx STT needs the pocketsphinx package: pip install 'pocketsphinx>=5'"
        ) from e
    return pocketsphinx


@dataclass(frozen=True, slots=True)
class _Result:
    text: str
    compute_ms: float


class PocketSphinxEngine(STTEngine):
    """Streaming PocketSphinx with the bundled en-us acoustic model, LM and dictionary."""

    name = "pocketsphinx"

    def __init__(self, options: STTOptions | None = None) -> None:
        self.options = options or STTOptions(engine="pocketsphinx")
        ps = _import_pocketsphinx()
        self._ps = ps
        base = Path(ps.get_model_path())
        # model_path names an acoustic model directory; the bundled LM and dictionary stay.
        model = self.options.model_path
        self._hmm = Path(model) if model else base / "en-us" / "en-us"
        self._lm = base / "en-us" / "en-us.lm.bin"
        self._dict = base / "en-us" / "cmudict-en-us.dict"
        for p in (self._hmm, self._lm, self._dict):
            if not p.exists():
                raise EngineUnavailable(
                    f"PocketSphinx model file {p} is missing: reinstall pocketsphinx>=5 "
                    "(it bundles the en-us model) or fix stt.model_path"
                )
        self._executor = inference_executor(self.name)
        self._pool: list[Any] = [self._new_decoder()]
        self._pool_lock = threading.Lock()

    def _new_decoder(self) -> Any:
        return self._ps.Decoder(
            hmm=str(self._hmm),
            lm=str(self._lm),
            dict=str(self._dict),
            samprate=SAMPLE_RATE,
            loglevel="FATAL",
        )

    def acquire(self) -> Future[Any]:
        """An idle decoder, or one loaded on the inference thread."""
        with self._pool_lock:
            if self._pool:
                ready: Future[Any] = Future()
                ready.set_result(self._pool.pop())
                return ready
        return self._executor.submit(self._new_decoder)

    def release(self, decoder: Any) -> None:
        with self._pool_lock:
            self._pool.append(decoder)

    def submit(self, fn: Any) -> Future[Any]:
        return self._executor.submit(fn)

    def lower_priority(self, nice: int) -> None:
        """Run every later decode at nice value ``nice`` (lower CPU priority): for the
        engine as a fallback, whose work must not slow other sessions (see
        ``runtime.fallback.FALLBACK_NICE``).  PocketSphinx decodes on this one thread
        and starts no threads of its own, so setting it now covers everything after."""
        self._executor.submit(lower_thread_priority, nice).result()

    def open_stream(self) -> PocketSphinxStream:
        return PocketSphinxStream(self)

    def warmup(self) -> None:
        """One short utterance so the search's buffers exist before the first turn."""
        decoder = self.acquire().result()
        rng = np.random.default_rng(0)
        decoder.start_utt()
        decoder.process_raw((rng.standard_normal(SAMPLE_RATE) * 1000).astype(np.int16).tobytes())
        decoder.end_utt()
        self.release(decoder)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class PocketSphinxStream(STTStream):
    """One utterance on a pooled decoder.

    ``feed`` appends to a queue and, if no drain is pending, schedules one on the
    inference thread; the drain runs ``process_raw`` on everything queued.  All decoder
    calls happen on that one thread, in order.  A final ends the utterance; if audio is
    fed after it, the next request restarts the utterance and re-decodes everything
    fed so far, so every hypothesis still covers all the audio.  Caching follows
    ``engine.py``: a repeated final with nothing fed in between is free, and one that
    arrives while the same final is being computed awaits it.
    """

    def __init__(self, engine: PocketSphinxEngine) -> None:
        self._engine = engine
        self._decoder_future = engine.acquire()
        self._lock = threading.Lock()
        self._all: list[np.ndarray] = []
        self._pending: list[np.ndarray] = []
        self._samples = 0
        self._drain_scheduled = False
        # Worker-thread state.
        self._in_utt = False
        self._decoded_samples = 0
        self._ended = False
        # Event-loop state.
        self._done: dict[bool, tuple[int, _Result]] = {}
        self._inflight: dict[bool, tuple[int, asyncio.Future[_Result]]] = {}
        self._closed = False

    def feed(self, pcm: np.ndarray) -> None:
        chunk = as_pcm16(pcm)
        if not chunk.size:
            return
        with self._lock:
            self._all.append(chunk)
            self._pending.append(chunk)
            self._samples += chunk.size
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        self._engine.submit(self._drain)

    # -- worker thread ------------------------------------------------------------------

    def _drain(self) -> None:
        """Decode everything queued (restarting the utterance after a final)."""
        decoder = self._decoder_future.result()
        with self._lock:
            self._drain_scheduled = False
            if self._ended:
                chunks = list(self._all)
                self._pending.clear()
            else:
                chunks = self._pending
                self._pending = []
        if self._ended:
            self._ended = False
            self._in_utt = False
            self._decoded_samples = 0
        if not self._in_utt:
            decoder.start_utt()
            self._in_utt = True
        for chunk in chunks:
            decoder.process_raw(chunk.tobytes(), False, False)
            self._decoded_samples += chunk.size

    def _hyp_text(self, decoder: Any) -> str:
        hyp = decoder.hyp()
        return " ".join(hyp.hypstr.split()) if hyp is not None else ""

    def _compute(self, final: bool) -> _Result:
        t0 = time.perf_counter()
        decoder = self._decoder_future.result()
        if self._ended and self._decoded_samples == self._samples_now():
            text = self._hyp_text(decoder)
        else:
            self._drain()
            if final:
                decoder.end_utt()
                self._in_utt = False
                self._ended = True
            text = self._hyp_text(decoder)
        return _Result(text, (time.perf_counter() - t0) * 1000.0)

    def _samples_now(self) -> int:
        with self._lock:
            return self._samples

    # -- event loop ---------------------------------------------------------------------

    def _transcript(self, r: _Result, final: bool, version: int, cached: bool) -> Transcript:
        return Transcript(
            text=r.text,
            final=final,
            compute_ms=0.0 if cached else r.compute_ms,
            audio_ms=version * 1000.0 / SAMPLE_RATE,
        )

    async def hypothesis(self, final: bool) -> Transcript:
        version = self._samples
        done_final = self._done.get(True)
        if done_final is not None and done_final[0] == version:
            return self._transcript(done_final[1], final, version, cached=True)
        done = self._done.get(final)
        if done is not None and done[0] == version:
            return self._transcript(done[1], final, version, cached=True)
        inflight = self._inflight.get(final)
        if inflight is not None and inflight[0] == version:
            r = await asyncio.shield(inflight[1])
            return self._transcript(r, final, version, cached=False)
        future = asyncio.wrap_future(self._engine.submit(lambda: self._compute(final)))
        self._inflight[final] = (version, future)

        def settle(f: asyncio.Future[_Result]) -> None:
            if self._inflight.get(final, (None, None))[1] is f:
                del self._inflight[final]
            if not f.cancelled() and f.exception() is None:
                self._done[final] = (version, f.result())

        future.add_done_callback(settle)
        r = await asyncio.shield(future)
        return self._transcript(r, final, version, cached=False)

    def close(self) -> None:
        """Give the decoder back to the pool once queued work on it has run."""
        if self._closed:
            return
        self._closed = True

        def give_back() -> None:
            decoder = self._decoder_future.result()
            if self._in_utt:
                decoder.end_utt()
                self._in_utt = False
            self._engine.release(decoder)

        self._engine.submit(give_back)

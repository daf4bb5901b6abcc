"""Whisper as a streaming ``STTEngine``: two decode lanes and a per-utterance cache.

The decode itself (short windows, their guards, the 30 s fallback) is
``whisper_decoder.WhisperDecoder``; this module decides *when* it runs and on which
thread: finals on a lane of their own, partials on a low-priority one, and a stream that
never decodes the same audio twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np

from halfsec.stt.decode_lanes import DecodeAbandoned, ReplaceableLane
from halfsec.stt.engine import STTEngine, STTStream, Transcript
from halfsec.stt.options import STTOptions
from halfsec.stt.pcm_input import SAMPLE_RATE, as_pcm16
from halfsec.stt.whisper_decoder import Decoded, WhisperDecoder

__all__ = ["PARTIAL_NICE", "WhisperEngine", "WhisperStream"]


PARTIAL_NICE = 19
"""Nice value of the partial lane's threads (Linux; 19 is the lowest priority: scheduler
weight 15 against 1024 for a normal thread): a preview must not slow the final or TTS.  Measured with
``benchmarks/run_corpus.py --only coffee --limit 20`` on a 2-core AVX2 EPYC: v2v p50/p95
523/781 ms at nice 10, 489/730 ms at nice 19 (one run each)."""


PARTIAL_HUNG_FACTOR = 5.0
"""A partial is hung only after this many times the final's hung time, and a partial
queued behind an abandoned one simply waits: previews are slow at low priority on a busy
machine, and loading a fresh model for a preview would cost more than it saves."""


BUSY_FACTOR = 0.15
"""A final submitted while another has been decoding for this share of the hung time
(150 ms of the default 1 s) runs on a warm spare rather than wait: a healthy final takes
~90 ms on a quiet 2-core box, so one still running then is long or stuck, and the user
behind it has no reason to wait for either (on a busy box two healthy finals then decode
side by side, which costs the pair no more CPU)."""


class WhisperEngine(STTEngine):
    """Whisper tiny.en (int8) with short-window decoding, on two lanes.

    The final decode is on every turn's critical path (the end-of-turn decision waits
    for its transcript), so it has a model and a worker of its own, with
    ``cpu_threads`` threads, and never queues behind a partial.  Partials run on a
    second copy of the model: one thread, lower CPU priority.  CTranslate2 cannot abort
    a decode, and with one worker a partial that began just before the user paused
    delayed the final by a whole decode (measured on a 2-core AVX2 EPYC,
    ``benchmarks/run_corpus.py --only coffee --limit 20``: v2v p95 1053 ms with partials
    vs 814 ms without).
    """

    name = "whisper"

    def __init__(
        self,
        options: STTOptions | None = None,
        decoder: Callable[[STTOptions], WhisperDecoder] = WhisperDecoder,
        partial_decoder: Callable[[STTOptions], WhisperDecoder] | None = None,
    ) -> None:
        """``decoder`` loads one model copy (each lane and spare has its own): another
        model than ``options`` names, such as the phone path's (``stt.phone_model``).
        ``partial_decoder``: the partial lane's model when it is not the final's (the
        phone path previews on tiny.en and decodes its final on base); a partial of
        another model is then never promoted to a final (``WhisperStream``)."""
        self.options = options or STTOptions()
        self.partials_are_finals = partial_decoder is None
        """Partials decode with the final's model and settings, so a partial of the
        final's audio is that final."""
        make_partial = decoder if partial_decoder is None else partial_decoder
        rng = np.random.default_rng(0)
        noise = (rng.standard_normal(SAMPLE_RATE) * 3000).astype(np.int16)

        def warm_spare(decoder: WhisperDecoder) -> None:
            # A final on the short window (with the domain prompt, as a real final): a
            # spare loads while others decode, so the rare 30 s fallback pays its own
            # first-run cost rather than every load paying for it.
            decoder.decode(noise, final=True)

        # A hung final stalls every session's turn: the lane keeps warm spare models so
        # that replacing a hung worker costs no load on the critical path.
        self._final_lane: ReplaceableLane[WhisperDecoder] = ReplaceableLane(
            self.name,
            lambda: decoder(self.options),
            warm=warm_spare,
            standby=True,
            busy_after_s=BUSY_FACTOR * 1.0,
        )
        # Loaded on its own worker so that CTranslate2's compute thread inherits the
        # worker's lower priority.
        self._partial_lane: ReplaceableLane[WhisperDecoder] = ReplaceableLane(
            f"{self.name}-partial",
            lambda: make_partial(replace(self.options, cpu_threads=1)),
            nice=PARTIAL_NICE,
            hung_after_s=PARTIAL_HUNG_FACTOR * self._final_lane.hung_after_s,
            replace_when_waiting=False,
            shed=True,  # a preview is refused, not queued, under load (stt/lane_load.py)
        )
        self._noise = noise
        self.fault_hook: Callable[[bool], Callable[[], None] | None] | None = None
        """Fault injection (``runtime.faults``): called on the event loop for each decode
        (``final`` flag); what it returns runs on the lane's worker before the decode, so
        an injected stall holds the worker as a hung CTranslate2 decode would."""

    @property
    def decoder(self) -> WhisperDecoder:
        """The final lane's model (a replaced worker brings a new one)."""
        return self._final_lane.model

    @property
    def partial_decoder(self) -> WhisperDecoder:
        return self._partial_lane.model

    @property
    def _executor(self) -> ThreadPoolExecutor:
        return self._final_lane.executor

    @property
    def _partial_executor(self) -> ThreadPoolExecutor:
        return self._partial_lane.executor

    @property
    def hung_after_ms(self) -> float:
        """An abandoned final still decoding this long after it started loses its worker."""
        return self._final_lane.hung_after_s * 1000.0

    @hung_after_ms.setter
    def hung_after_ms(self, value: float) -> None:
        self._final_lane.hung_after_s = value / 1000.0
        self._final_lane.busy_after_s = BUSY_FACTOR * value / 1000.0
        self._partial_lane.hung_after_s = PARTIAL_HUNG_FACTOR * value / 1000.0

    @property
    def replaced_workers(self) -> int:
        """Workers replaced so far for running a decode nobody waits for, both lanes."""
        return self._final_lane.replacements + self._partial_lane.replacements

    @property
    def overflowed_finals(self) -> int:
        """Finals that went to the standby rather than wait behind a long decode."""
        return self._final_lane.overflows

    def open_stream(self) -> WhisperStream:
        return WhisperStream(self)

    def warmup(self) -> None:
        """Decodes on both lanes (short window and 30 s fallback) so buffers are
        allocated and the first user's final costs what every later one does."""
        self.decoder.decode(self._noise, final=False)
        self.decoder.decode_padded(self._noise.astype(np.float32) / 32768.0, 1.0)
        self._partial_executor.submit(
            self.partial_decoder.decode, self._noise, final=False
        ).result()

    def run_blocking(self, pcm: np.ndarray, final: bool = True) -> Decoded:
        """Decode on the caller's thread: for benchmarks and tools, not the event loop."""
        return self.decoder.decode(as_pcm16(pcm), final=final)

    def submit(
        self, pcm: np.ndarray, final: bool, short: Decoded | None
    ) -> asyncio.Future[Decoded]:
        """Schedule a decode on its lane: finals on the final worker, partials on the
        low-priority one."""
        fault = self.fault_hook(final) if self.fault_hook is not None else None
        lane = self._final_lane if final else self._partial_lane
        submitted: list[asyncio.Future[Decoded]] = []

        def job(decoder: WhisperDecoder) -> Decoded:
            if fault is not None:
                fault()
                # A decode held up by a stall and abandoned meanwhile is not run: its
                # ~0.1 CPU s would only slow whichever healthy turn runs then.
                if submitted and not lane.wanted(submitted[0]):
                    raise DecodeAbandoned("nobody waits for this decode any more")
            if final:
                return decoder.decode(pcm, final=True, short=short)
            return decoder.decode(pcm, final=False)

        future = lane.submit(job)
        submitted.append(future)
        return future

    def abandon(self, future: asyncio.Future[Decoded], final: bool) -> None:
        """Nobody waits for this decode any more: drop it if queued; a running one that
        hangs loses its worker (``ReplaceableLane``)."""
        (self._final_lane if final else self._partial_lane).abandon(future)

    def close(self) -> None:
        self._final_lane.close()
        self._partial_lane.close()


class WhisperStream(STTStream):
    """Audio of one utterance plus the cache that makes a repeated final free.

    The cache is keyed by the number of samples fed (``version``): any ``feed`` makes
    every cached or in-flight result stale.  Rules:

    * a final for the same version as a finished final: served from cache, ``compute_ms=0``;
    * a final for the same version as an in-flight final: awaits that decode (and returns
      its ``Transcript``, whose ``compute_ms`` is the decode's), never starts a second one;
    * a final for the same version as a partial (finished or in flight) that is not
      broken: the partial's text is promoted, since it used the same decode settings
      (only when it did: ``partials_are_finals``; else the final is decoded at once);
    * a partial for a version that has a final: the final's text, ``compute_ms=0``;
    * a partial while an older partial is still in flight: that partial's result (a
      slightly stale preview), so partials never pile up;
    * a final never waits for a partial of *older* audio: it starts at once on the
      final lane (the stale partial finishes on its own, at low priority);
    * a decode whose every waiter was cancelled (a deadline, a resumed user, a barge-in)
      is abandoned: dropped from its lane if queued, and its worker replaced if it hangs,
      so it never holds up another session's final.
    """

    def __init__(self, engine: WhisperEngine) -> None:
        self._engine = engine
        self._chunks: list[np.ndarray] = []
        self._samples = 0
        self._done: dict[bool, tuple[int, Decoded]] = {}
        self._inflight: dict[bool, tuple[int, asyncio.Future[Decoded]]] = {}
        self._waiters: dict[asyncio.Future[Decoded], int] = {}

    def feed(self, pcm: np.ndarray) -> None:
        chunk = as_pcm16(pcm)
        if chunk.size:
            self._chunks.append(chunk)
            self._samples += chunk.size

    @property
    def audio_ms(self) -> float:
        return self._samples * 1000.0 / SAMPLE_RATE

    def _snapshot(self) -> np.ndarray:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, np.int16)

    def _transcript(self, d: Decoded, final: bool, version: int, cached: bool) -> Transcript:
        return Transcript(
            text=d.text,
            final=final,
            compute_ms=0.0 if cached else d.compute_ms,
            audio_ms=version * 1000.0 / SAMPLE_RATE,
        )

    async def _wait(self, future: asyncio.Future[Decoded], final: bool) -> Decoded:
        """Await a decode that other callers may share; the last waiter to be cancelled
        abandons it."""
        self._waiters[future] = self._waiters.get(future, 0) + 1
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if not future.done() and self._waiters.get(future) == 1:
                self._engine.abandon(future, final)
            raise
        finally:
            left = self._waiters.get(future, 1) - 1
            if left:
                self._waiters[future] = left
            else:
                self._waiters.pop(future, None)

    def _start(self, final: bool, short: Decoded | None) -> asyncio.Future[Decoded]:
        version = self._samples
        future = self._engine.submit(self._snapshot(), final, short)
        self._inflight[final] = (version, future)

        def settle(f: asyncio.Future[Decoded]) -> None:
            if self._inflight.get(final, (None, None))[1] is f:
                del self._inflight[final]
            if not f.cancelled() and f.exception() is None:
                prev = self._done.get(final)
                if prev is None or prev[0] <= version:
                    self._done[final] = (version, f.result())

        future.add_done_callback(settle)
        return future

    async def hypothesis(self, final: bool) -> Transcript:
        version = self._samples
        done_final = self._done.get(True)
        if done_final is not None and done_final[0] == version:
            return self._transcript(done_final[1], final, version, cached=True)
        if final:
            return await self._final(version)
        return await self._partial(version)

    async def _final(self, version: int) -> Transcript:
        inflight = self._inflight.get(True)
        if inflight is not None and inflight[0] == version:
            d = await self._wait(inflight[1], True)
            return self._transcript(d, True, version, cached=False)
        short: Decoded | None = None
        promoted_ms = 0.0
        done_partial = self._done.get(False)
        partial_inflight = self._inflight.get(False)
        if not self._engine.partials_are_finals:
            pass  # another model's preview says nothing about this final: decode it
        elif done_partial is not None and done_partial[0] == version:
            short = done_partial[1]
        elif partial_inflight is not None and partial_inflight[0] == version:
            short = await self._wait(partial_inflight[1], False)
            promoted_ms = short.compute_ms
            if self._samples != version:  # fed while we waited: decode afresh
                return await self.hypothesis(final=True)
            done_final = self._done.get(True)
            if done_final is not None and done_final[0] == version:
                return self._transcript(done_final[1], True, version, cached=True)
        if short is not None and not short.broken:
            d = Decoded(short.text, False, promoted_ms, no_speech_prob=short.no_speech_prob)
            self._done[True] = (version, d)
            return self._transcript(d, True, version, cached=False)
        d = await self._wait(self._start(True, short), True)
        return self._transcript(d, True, version, cached=False)

    async def _partial(self, version: int) -> Transcript:
        done = self._done.get(False)
        if done is not None and done[0] == version:
            return self._transcript(done[1], False, version, cached=True)
        inflight = self._inflight.get(False)
        if inflight is not None:
            d = await self._wait(inflight[1], False)
            return self._transcript(d, False, inflight[0], cached=inflight[0] != version)
        d = await self._wait(self._start(False, None), False)
        return self._transcript(d, False, version, cached=False)

    def close(self) -> None:
        """Drop the audio (the stream must not be fed or asked again after this)."""
        self._chunks = []

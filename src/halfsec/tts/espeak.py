"""espeak-ng through its C library (ctypes), behind ``TTSEngine``.

Why the library and not the ``espeak-ng`` command: a process per clause costs ~10 ms
of fork/exec and data loading, while the library, loaded once, delivers its first
20 ms of audio in well under a millisecond.  ``espeakng-loader`` ships
``libespeak-ng.so`` and its data, so nothing is installed system-wide or downloaded.

How audio crosses threads: espeak-ng runs in ``AUDIO_OUTPUT_SYNCHRONOUS`` mode, so
``espeak_Synth`` blocks its caller (our worker thread) and invokes the synth callback on
that same thread every ``espeak_chunk_ms`` of audio.  The callback copies the samples
and posts them onto the event loop with ``call_soon_threadsafe``, so the consumer
starts playing while the rest of the clause is still being synthesised.  When the
consumer goes away (cancelled or closed), a flag makes the callback return 1, which is
espeak-ng's documented way to abort synthesis at the next buffer.

espeak-ng keeps global state (one voice, one callback, one set of parameters per
process), so every call into it is serialised by one process-wide lock, and voice and
rate are re-applied at the start of every utterance in case two engines with different
options share the process.

Measured here (benchmarks/tts_bench.py, 2-core x86): first audio 0.2 ms p50 through the
whole async path, a full clause in 1-2 ms (RTF ~0.001).  espeak-ng starts speaking
within ~1 ms of the buffer (onset at 0.6 ms for "one two three"), so leading-silence
trimming saves almost nothing here; it runs anyway so both engines behave alike.
Its output is not bit-exact between runs (a few samples of random jitter).
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from halfsec.errors import EngineUnavailable
from halfsec.tts.engine import TTSEngine
from halfsec.tts.options import TTSOptions
from halfsec.tts.silence_trim import LeadingSilenceTrimmer

_INSTALL_HINT = "install it with: pip install espeakng-loader"

# Constants from espeak-ng's speak_lib.h (stable public ABI since espeak 1.x).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_PARAM_RATE = 1
_EE_OK = 0

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

Sink = Callable[[np.ndarray], bool]
"""Receives each chunk on the worker thread; returns False to abort synthesis."""


class EspeakLibrary:
    """The one process-wide libespeak-ng instance."""

    _instance: EspeakLibrary | None = None
    _instance_lock = threading.Lock()

    def __init__(self, library_path: str, data_path: str, chunk_ms: int) -> None:
        self._lib = ctypes.CDLL(library_path)
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int

        # espeak-ng's data path argument is the directory *containing* espeak-ng-data.
        parent = str(Path(data_path).parent).encode()
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, chunk_ms, parent, _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise EngineUnavailable(
                f"libespeak-ng failed to initialise with data in {data_path} (code {rate}); "
                f"reinstall it: pip install --force-reinstall espeakng-loader"
            )
        self.sample_rate = int(rate)
        self.chunk_ms = chunk_ms
        self.lock = threading.Lock()
        """Held for the whole of each utterance: espeak-ng is not re-entrant."""
        self._sink: Sink | None = None
        # Keep a reference: ctypes frees the trampoline when the Python object dies.
        self._callback = _SynthCallback(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls, chunk_ms: int) -> EspeakLibrary:
        """Load and initialise the library on first use; later calls share it.

        ``chunk_ms`` only takes effect on the first call (espeak-ng fixes its buffer
        length at initialisation)."""
        with cls._instance_lock:
            if cls._instance is None:
                try:
                    import espeakng_loader
                except ImportError as exc:
                    raise EngineUnavailable(
                        f"espeak-ng library is missing ({exc}); {_INSTALL_HINT}"
                    ) from exc
                try:
                    library_path = espeakng_loader.get_library_path()
                    data_path = espeakng_loader.get_data_path()
                    cls._instance = cls(library_path, data_path, chunk_ms)
                except (OSError, RuntimeError) as exc:
                    raise EngineUnavailable(
                        f"cannot load libespeak-ng ({exc}); {_INSTALL_HINT}"
                    ) from exc
            return cls._instance

    def _on_audio(self, wav: ctypes._Pointer[ctypes.c_short], count: int, _events: int) -> int:
        """espeak-ng's synth callback (worker thread).  Returning 1 aborts synthesis."""
        sink = self._sink
        if sink is None:
            return 1
        if not wav or count <= 0:  # NULL buffer marks the end of the utterance
            return 0
        chunk = np.ctypeslib.as_array(wav, shape=(count,)).astype(np.int16, copy=True)
        try:
            return 0 if sink(chunk) else 1
        except Exception:  # an exception must never unwind through C frames
            return 1

    def set_voice(self, voice: str) -> None:
        """Select ``voice``; caller holds ``lock``."""
        if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise EngineUnavailable(
                f"espeak-ng has no voice {voice!r}; `espeak-ng --voices` lists them "
                f"(e.g. en-us, en-gb, de, fr)"
            )

    def synth(self, text: str, voice: str, rate: int, sink: Sink) -> None:
        """Synthesise ``text`` synchronously, handing each chunk to ``sink``."""
        data = text.encode("utf-8")
        buffer = ctypes.create_string_buffer(data)
        with self.lock:
            self.set_voice(voice)
            self._lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
            self._sink = sink
            try:
                code = self._lib.espeak_Synth(
                    buffer, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
                )
            finally:
                self._sink = None
        if code != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with code {code}")


class EspeakEngine(TTSEngine):
    """Formant TTS: robotic, but first audio in ~1 ms and no model to load.

    Audio arrives in ``espeak_chunk_ms`` pieces while the clause is still being
    synthesised.  Safe to share between sessions: utterances are serialised.
    """

    prefill_safe = True  # per-call loop objects only: safe on a private warmup loop

    name = "espeak"

    def __init__(self, options: TTSOptions | None = None) -> None:
        self.options = options or TTSOptions(engine="espeak")
        self._lib = EspeakLibrary.get(self.options.espeak_chunk_ms)
        self.sample_rate = self._lib.sample_rate
        with self._lib.lock:  # fail now, not in the first turn, if the voice is unknown
            self._lib.set_voice(self.options.espeak_voice)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="halfsec-espeak")
        self._keep = round(self.options.keep_leading_ms * self.sample_rate / 1000)

    def render_blocking(self, text: str) -> np.ndarray:
        """Whole text, synchronously, untrimmed: for tests, warmup and offline tools."""
        chunks: list[np.ndarray] = []

        def collect(chunk: np.ndarray) -> bool:
            chunks.append(chunk)
            return True

        if text.strip():
            self._lib.synth(text, self.options.espeak_voice, self.options.espeak_rate, collect)
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    async def synthesize(self, text: str) -> AsyncIterator[np.ndarray]:
        """Yield int16 chunks while espeak-ng is still synthesising the rest.

        Stopping early (cancellation, ``aclose``, ``break``) makes the callback abort
        synthesis at its next buffer, so the worker is free again within one chunk."""
        if not text or not text.strip():
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[np.ndarray | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def post(item: np.ndarray | BaseException | None) -> bool:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                return False
            return True

        def sink(chunk: np.ndarray) -> bool:
            return not stop.is_set() and post(chunk)

        def job() -> None:
            if stop.is_set():  # cancelled while queued behind another utterance
                post(None)
                return
            try:
                self._lib.synth(text, self.options.espeak_voice, self.options.espeak_rate, sink)
            except BaseException as exc:
                post(exc)
            else:
                post(None)

        trimmer = LeadingSilenceTrimmer(
            self.options.silence_threshold, self._keep, enabled=self.options.trim_leading_silence
        )
        self._executor.submit(job)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                pcm = trimmer.feed(item)
                if pcm.size:
                    yield pcm
        finally:
            stop.set()

    def warmup(self) -> None:
        """Synthesise one word: loads the voice's dictionary and phoneme tables."""
        self._executor.submit(self.render_blocking, "Okay.").result()

    def close(self) -> None:
        """Stop the worker thread (pending jobs are dropped)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

"""Small helpers shared by the STT engines."""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from halfsec.errors import AudioInputError

SAMPLE_RATE = 16_000


def as_pcm16(pcm: np.ndarray) -> np.ndarray:
    """Validate one fed chunk and return an owned 1-D int16 copy.

    A copy, because transports reuse their receive buffers: a view would change under the
    decoder.  Float input is rejected rather than guessed at, since a wrong scale turns
    into silently empty transcripts.
    """
    arr = np.asarray(pcm)
    if arr.dtype != np.int16:
        raise AudioInputError(
            f"STT expects 16 kHz mono int16 PCM, got dtype {arr.dtype}; convert with "
            "(x * 32767).astype(np.int16) for float audio in [-1, 1]"
        )
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise AudioInputError(f"STT expects mono audio, got an array of shape {arr.shape}")
    return arr.copy()


def loudest_frame_dbfs(audio: np.ndarray, frame: int = 320) -> float:
    """Level of the loudest 20 ms frame of float audio in [-1, 1], in dBFS.

    The loudest frame rather than the mean: a short "yes" in a long silent buffer must
    not read as silence.
    """
    if audio.size == 0:
        return -120.0
    n = audio.size // frame * frame
    if n == 0:
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    else:
        frames = audio[:n].reshape(-1, frame).astype(np.float64)
        rms = float(np.sqrt(np.max(np.mean(np.square(frames), axis=1))))
    return 20.0 * float(np.log10(max(rms, 1e-6)))


def inference_executor(name: str, nice: int = 0) -> ThreadPoolExecutor:
    """One worker thread: decodes run one at a time, in order, off the event loop.

    ``nice`` > 0 sets the worker's nice value, i.e. lowers its CPU priority (Linux:
    per thread; where that is not permitted the worker runs at normal priority).  Threads created
    from the worker inherit it, which is why a model meant to run at low priority must be
    *loaded* on its worker (CTranslate2 starts its compute threads at load time).  Used
    for background work such as partial transcripts, which must yield the CPU to the
    final decode and TTS on a 2-core machine rather than halve their speed.
    """

    def lower_priority() -> None:
        if nice > 0 and hasattr(os, "setpriority"):
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
            except OSError:  # not permitted here: run at normal priority
                pass

    return ThreadPoolExecutor(
        max_workers=1, thread_name_prefix=f"halfsec-stt-{name}", initializer=lower_priority
    )


_WORD_RE = re.compile(r"\S+")


def _norm(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


def cut_repetition_loop(text: str) -> tuple[str, bool]:
    """Cut a trailing repetition loop; return (text, whether a loop was found).

    Whisper on a short window tends to repeat its last phrase until the token cap
    ("Please call Stella. Please call Stella. Please call ...").  A loop is a periodic
    tail: a unit of k words repeated back to back up to the end of the text, at least
    3.5 times for single words, 2.5 times for units of 2-3 words, 1.5 times for longer
    phrases (the last copy is often cut short by the token cap).  People do say "no, no"
    or "yes yes", so short units need more repeats before they count.  The returned text
    keeps the first copy.  Comparison ignores case and punctuation.
    """
    spans = [(m.start(), m.end()) for m in _WORD_RE.finditer(text)]
    words = [_norm(text[s:e]) for s, e in spans]
    n = len(words)
    best: int | None = None
    for k in range(1, n // 2 + 1):
        needed = 3.5 if k == 1 else 2.5 if k <= 3 else 1.5
        start = n - k  # earliest index of the periodic tail with period k
        while start - 1 >= 0 and start - 1 + k < n and words[start - 1] == words[start - 1 + k]:
            start -= 1
        # words[start:] has period k; it must hold enough copies of a real (non-empty) unit.
        if (n - start) / k >= needed and all(words[start : start + k]):
            keep = start + k
            best = keep if best is None else min(best, keep)
    if best is None:
        return text, False
    return text[: spans[best - 1][1]].strip(), True

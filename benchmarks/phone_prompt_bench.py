"""Which prompt and window should Whisper base decode calls with?  Chosen on audio the
Twilio bench never plays.

    python benchmarks/phone_prompt_bench.py [--variants a,b,...] [--json OUT]

Why a split of its own: ``twilio_bench.py`` judges calls on the 16 shortest coffee orders
and the 16 transcribed sentences of ``../shared/speech``; choosing base's prompt on those
would fit their words.  So variants are *chosen* here on the **tuning split**, which shares
no recording with the bench:

* ``coffee``: the 134 coffee orders that are not among the bench's 16 shortest, as a call
  carries them, scored by command acceptance (intent and every slot, the domain's own
  matcher) and by words changed against tiny.en's wideband transcript of the same clip;
* ``commands``: the 20 Google Speech Commands single words (WER; the bench skips clips
  under three words, and short clips are where a small window or a prose prompt misleads
  base);
* ``synth``: 44 out-of-domain sentences (IEEE "Harvard" lists 1-4 and four assistant
  requests) spoken by Piper at two speeds, as a call carries them (WER): the bench's WER
  line is on out-of-domain read speech, which the coffee orders do not cover.

Every clip goes through the call's path (``telephone_band``, mu-law coded and decoded,
the server's ``LowDelayResampler``), cut 0.3 s before and 1 s after its speech as the
bench cuts its own.  A variant is ``prompt@window``: the prompt rule applied to the
domain's STT hint (``halfsec.stt.phone_model.PROMPT_RULES``, or one of the shorter
hints compared here: ``experiment_prompt``) and ``w<min>+<pad>`` for the
window ``max(min, audio + pad)`` (default: base's own).  ``wideband`` is the WebSocket
path's recognizer on the same clips before the phone line (tiny.en, its window, the
domain hint): the reference a phone variant's WER is compared with, on the held-out
``synth`` and ``commands`` sets (a phone-band WER line on audio the bench never plays);
``tiny`` is that recognizer on the phone audio (``stt.phone_model = "same"``).  ``compute_ms`` is the decoder's
time per clip (p50, mean) on the box as it is: run under the exclusive lock to compare.

Decoder changes other than the prompt, as suffixes of a variant: ``:beamN`` (beam search
of width N instead of greedy) and ``:float32`` (no int8 quantization), e.g.
``closer:beam2``.  ``pick`` decodes each clip with both ``tiny`` and ``closer`` and keeps
the text whose decoder was the more confident (``halfsec.stt.cascade``); ``cascade<T>``
(e.g. ``cascade-0.3``) decodes with ``closer`` only where tiny.en's average
log-probability is under T; their compute is every decode run, ``second_model_share`` the
share of clips base decoded too.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import twilio_bench as tb
from _cli import bench_parser, emit

from halfsec.audio.io import load_audio
from halfsec.audio.resample import resample
from halfsec.config import load_config
from halfsec.lab.report.json import accepted, default_meta
from halfsec.logic.factory import create_logic
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.measure.percentile import percentile
from halfsec.measure.wer import word_errors
from halfsec.stt.cascade import CascadeDecoder
from halfsec.stt.options import STTOptions
from halfsec.stt.phone_model import (
    PROMPT_CLOSER,
    PROMPT_RULES,
    base_options,
    base_prompt,
    phone_model_dir,
)
from halfsec.stt.whisper_decoder import WhisperDecoder, prompt_text
from halfsec.tts.options import TTSOptions
from halfsec.tts.piper import PiperEngine

SYNTH_TEXTS = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.",
    "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.",
    "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.",
    "Read verse out loud for pleasure.",
    "Hoist the load to your left shoulder.",
    "Take the winding path to reach the lake.",
    "Note closely the size of the gas tank.",
    "Wipe the grease off his dirty face.",
    "Mend the coat before you go out.",
    "The wrist was badly strained and hung limp.",
    "The stray cat gave birth to kittens.",
    "The young girl gave no clear response.",
    "The meal was cooked before the bell rang.",
    "What joy there is in living.",
    "Set a timer for ten minutes.",
    "What is the weather like tomorrow?",
    "Turn off the kitchen lights.",
    "Play some music in the bedroom.",
)
PIPER_SPEEDS = (1.0, 0.85)
DEFAULT = "closer,none,prefix,unique,first40,first20"


def _cut(pcm: np.ndarray) -> np.ndarray | None:
    b = voiced_bounds(pcm)
    return None if b is None else pcm[max(0, b[0] - 4800) : b[1] + 16000]


def tuning_split() -> list[dict[str, Any]]:
    """Every clip of the tuning split: kind, reference text (or labels) and both audios."""
    bench = {it.path.name for it, _ in tb.recordings(16)}
    out: list[dict[str, Any]] = []
    for it in tb.load_corpus(tb.MANIFEST).items:
        if it.path.name in bench:
            continue
        if it.intent:
            kind = "coffee"
        elif "speechcommands" in it.path.name and it.transcript:
            kind = "commands"
        else:
            continue
        clip = _cut(load_audio(it.path))
        if clip is not None:
            out.append({"kind": kind, "name": it.path.name, "item": it, "wide": clip})
    for speed in PIPER_SPEEDS:
        eng = PiperEngine(TTSOptions(engine="piper", length_scale=speed))
        for i, text in enumerate(SYNTH_TEXTS):
            raw = eng.render_blocking(text).astype(np.int16)
            pcm = np.asarray(resample(raw, eng.sample_rate, 16_000), np.int16)
            pad = np.zeros(8000, np.int16)  # room for the 0.3 s / 1 s cut
            clip = _cut(np.concatenate([pad, pcm, pad, pad, pad]))
            if clip is not None:
                out.append(
                    {"kind": "synth", "name": f"piper-x{speed}-{i}", "text": text, "wide": clip}
                )
        eng.close()
    for c in out:
        c["phone"] = tb._phone(c["wide"])
    return out


EXPERIMENT_RULES = ("prefix", "unique", "firstN")
"""Shorter hints compared with the product's rules (``firstN``: ``first`` and a number)."""


def experiment_prompt(prompt: str | None, rule: str) -> str | None:
    """Base's prompt by ``rule``: a product rule (``PROMPT_RULES``) as calls make it, or a
    shorter hint and the closer: ``prefix`` the hint's heading (before its first colon);
    ``unique`` every word of the hint once, in order; ``firstN`` its first N
    comma-separated items."""
    if rule in PROMPT_RULES:
        return base_prompt(prompt, rule)
    text = prompt_text(prompt)
    if not text:
        return None
    head, colon, body = text.partition(":")
    if not colon:
        head, body = "", text
    lead = f"{head}: " if head else ""
    items = [w.strip(" .") for w in body.split(",") if w.strip(" .")]
    if rule == "prefix":
        kept = f"{head}." if head else ""
    elif rule == "unique":
        words: list[str] = []
        for w in " ".join(items).split():
            if w not in words:
                words.append(w)
        kept = lead + ", ".join(words) + "."
    elif rule.startswith("first") and rule[5:].isdigit():
        kept = lead + ", ".join(items[: int(rule[5:])]) + "."
    else:
        known = ", ".join((*PROMPT_RULES, *EXPERIMENT_RULES))
        raise ValueError(f"unknown prompt rule {rule!r}: one of {known}")
    return f"{kept} {PROMPT_CLOSER}".strip()


def _decoder(
    prompt: str, rule: str, window: str | None, mods: Sequence[str] = ()
) -> WhisperDecoder:
    """Base as ``PhoneWhisperEngine`` builds it, with ``rule``, ``window`` and the decoder
    modifiers ``mods`` (``beamN``, ``float32``) instead."""
    opt = dataclasses.replace(
        base_options(STTOptions(prompt=prompt)), prompt=experiment_prompt(prompt, rule)
    )
    if window:
        lo, pad = (float(v) for v in window[1:].split("+"))
        opt = dataclasses.replace(opt, min_window_s=lo, tail_pad_s=pad)
    for m in mods:
        if m.startswith("beam") and m[4:].isdigit():
            opt = dataclasses.replace(opt, beam_size=int(m[4:]))
        elif m == "float32":
            opt = dataclasses.replace(opt, compute_type="float32")
        else:
            raise ValueError(f"unknown decoder modifier {m!r}: beamN or float32")
    return WhisperDecoder(dataclasses.replace(opt, model_path=str(phone_model_dir())))


def main(variants: list[str]) -> dict[str, Any]:
    logic = create_logic(load_config(environ={}).logic)
    prompt = logic.domain.stt_prompt()  # type: ignore[attr-defined]
    data = tuning_split()
    tiny = WhisperDecoder(STTOptions(prompt=prompt))
    ref = {
        c["name"]: tiny.decode(c["wide"], final=True).text for c in data if c["kind"] == "coffee"
    }
    n = {k: sum(c["kind"] == k for c in data) for k in ("coffee", "commands", "synth")}
    print(f"tuning split: {n}", file=sys.stderr)
    results: dict[str, Any] = {}
    for v in variants:
        head, *mods = v.split(":")
        rule, _, window = head.partition("@")
        wide = rule == "wideband"
        dec: WhisperDecoder | CascadeDecoder
        if rule == "pick" or rule.startswith("cascade"):
            # ``cascade<T>``: base only when tiny.en's confidence is under T; ``pick``: always.
            floor = math.inf if rule == "pick" else float(rule[len("cascade") :])
            dec = CascadeDecoder(tiny, _decoder(prompt, "closer", window or None, mods), floor)
        elif rule in ("wideband", "tiny"):
            dec = tiny
        else:
            dec = _decoder(prompt, rule, window or None, mods)
        r: dict[str, Any] = {"prompt_tokens": len(dec.prompt_ids), "coffee_accepted": 0}
        errs = {k: [0, 0] for k in ("changed", "commands", "synth")}
        ms: list[float] = []
        wrong: list[str] = []
        for c in data:
            got = dec.decode(c["wide" if wide else "phone"], final=True)
            ms.append(got.compute_ms)
            if c["kind"] == "coffee":
                it = c["item"]
                u = logic.understand(got.text)
                r["coffee_accepted"] += accepted(u.intent, u.slots, it.intent, it.slots)
                key, want = "changed", ref[c["name"]]
            else:
                key = c["kind"]
                want = c["text"] if key == "synth" else c["item"].transcript
            e, w = word_errors(want, got.text)
            errs[key][0] += e
            errs[key][1] += w
            if e and key != "changed":
                wrong.append(f"{want} -> {got.text}")
        r |= {f"{k}_pct": round(100 * e / max(1, w), 2) for k, (e, w) in errs.items()}
        r |= {f"{k}_errors": e for k, (e, _) in errs.items()}
        r["coffee_n"] = n["coffee"]
        r["compute_ms_p50"] = round(float(percentile(ms, 50) or 0.0), 1)
        r["compute_ms_mean"] = round(float(np.mean(ms)), 1)
        r["misheard"] = wrong
        if isinstance(dec, CascadeDecoder):
            r["second_model_share"] = round(dec.escalated / len(data), 3)
        results[v] = r
        print(
            f"{v:18s} tokens {r['prompt_tokens']:3d} | coffee {r['coffee_accepted']}/{n['coffee']}"
            f" changed {r['changed_pct']} % | commands {r['commands_errors']} | synth "
            f"{r['synth_errors']} ({r['synth_pct']} %) | {r['compute_ms_p50']} / "
            f"{r['compute_ms_mean']} ms",
            file=sys.stderr,
            flush=True,
        )
    meta = default_meta("python " + " ".join(sys.argv))
    meta["split"] = n
    return {"meta": meta, "variants": results}


if __name__ == "__main__":
    ap = bench_parser(__doc__)
    ap.add_argument(
        "--variants",
        default=DEFAULT,
        help="rule[@wMIN+PAD][:beamN][:float32], or pick; comma-separated",
    )
    a = ap.parse_args()
    out = main(a.variants.split(","))
    emit(out, a.json)

"""Where a Whisper final's time goes on *this* CPU: encoder, domain prompt, tokens.

Usage::

    python benchmarks/whisper_cost_bench.py [--limit 12] [--threads 1,2] [--json OUT]

The final decode is what the end-of-turn decision waits for, and its cost differs by a
factor of four between CPUs with and without AVX-512 VNNI (CTranslate2's fastest int8
path).  For the first ``--limit`` coffee orders of ``../shared/speech`` this splits one
final, as ``WhisperDecoder`` runs it (packaged tiny.en, int8, the runtime's window rule),
into:

* ``encode_ms``: the encoder on the window (``max(min_window_s, audio + tail_pad_s)``);
* ``prompt_ms``: the cost of the domain vocabulary prompt (``<|startofprev|>`` text),
  measured as one generated token with the prompt minus one without it;
* ``per_token_ms``: the slope of generation time over the tokens of the transcript;
* ``final_ms``: the whole ``WhisperDecoder.decode`` call (what the runtime pays);
* ``forced_prefix_ms`` against ``generated_same_ms``: the transcript's tokens but the last
  forced as a decoder prefix, then one generated, against generating them all; equal
  figures mean a previous partial's words would save nothing as a prefix.

``CT2_USE_MKL=1 python benchmarks/whisper_cost_bench.py`` measures CTranslate2's Intel
MKL backend instead of its default for the CPU (oneDNN on AMD).

for each thread count in ``--threads``.  Each figure is the median over recordings of
the fastest of ``--reps`` repetitions (the box is shared; the fastest is the cost, the
rest is interference).  The CPU's vector extensions and CTranslate2's choices are
printed first, since they explain most of the spread between machines.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from _cli import bench_parser, emit, pct
from _speech import SPEECH, manifest_rows

from halfsec.audio.io import load_audio
from halfsec.config import load_config
from halfsec.lab.report.json import cpu_info, default_meta
from halfsec.logic.factory import create_logic
from halfsec.stt.options import STTOptions
from halfsec.stt.whisper_decoder import WhisperDecoder


def fastest_ms(fn: Callable[[], Any], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t0) * 1000.0)
    return best


def split_one(
    dec: WhisperDecoder, bare: WhisperDecoder, pcm: np.ndarray, reps: int
) -> dict[str, float]:
    """One recording's final, split into encoder, prompt, per-token and whole-call ms."""
    audio = pcm.astype(np.float32) / 32768.0
    feats = dec.encoder_input(audio, dec._window_s(audio.size / 16000))
    out = {"encode": fastest_ms(lambda: dec.model.encode(feats, to_cpu=True), reps)}
    enc = dec.model.encode(feats, to_cpu=True)

    def gen(d: WhisperDecoder, n: int, forced: list[int] | None = None) -> Any:
        prompt = d.prompt_ids + (forced or [])
        return d.model.generate(
            enc,
            [prompt],
            beam_size=1,
            max_length=len(prompt) + n,
            suppress_blank=True,
            suppress_tokens=[-1],
        )[0]

    one_prompt = fastest_ms(lambda: gen(dec, 1), reps)
    out["prompt"] = one_prompt - fastest_ms(lambda: gen(bare, 1), reps)
    ids = gen(dec, 64).sequences_ids[0]
    tokens = len(ids)
    if tokens > 1:
        full = fastest_ms(lambda: gen(dec, tokens), reps)
        out["per_token"] = (full - one_prompt) / (tokens - 1)
        # All but the last token forced as a decoder prefix (as a previous partial's
        # words would be): cheaper only if CTranslate2 runs the prefix in one pass.
        out["forced_prefix"] = fastest_ms(lambda: gen(dec, 1, ids[:-1]), reps)
        out["generated_same"] = full
    out["final"] = fastest_ms(lambda: dec.decode(pcm, final=True), reps)
    return out


def measure(opt: STTOptions, clips: list[np.ndarray], reps: int) -> dict[str, float | None]:
    dec = WhisperDecoder(opt)
    bare = WhisperDecoder(dataclasses.replace(opt, prompt=None))
    dec.decode(clips[0], final=True)  # allocate buffers
    rows: dict[str, list[float]] = {}
    for pcm in clips:
        for k, v in split_one(dec, bare, pcm, reps).items():
            rows.setdefault(k, []).append(v)
    return {f"{k}_ms": pct(v, 50) for k, v in rows.items()}


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--limit", type=int, default=12)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    rows = [r for r in manifest_rows() if r.get("intent")]
    clips = [load_audio(SPEECH / r["file"]) for r in rows[: args.limit]]
    cfg = load_config()
    domain = getattr(create_logic(cfg.logic), "domain", None)
    prompt = domain.stt_prompt() if domain is not None else None
    base = dataclasses.replace(cfg.stt, prompt=prompt)

    import ctranslate2

    meta = default_meta(
        "python " + " ".join(sys.argv),
        cpu=cpu_info()["model"],
        cpu_flags=cpu_info()["isa"],
        ctranslate2=ctranslate2.__version__,
        ct2_use_mkl=os.environ.get("CT2_USE_MKL", "default"),
        compute_types=sorted(ctranslate2.get_supported_compute_types("cpu")),
        recordings=len(clips),
        window_s=f"max({base.min_window_s}, audio + {base.tail_pad_s})",
    )
    out: dict[str, Any] = {"meta": meta, "by_threads": {}}
    print(
        f"{meta['cpu']}  flags: {' '.join(meta['cpu_flags'])}  ct2 {meta['ctranslate2']}"
        f"  CT2_USE_MKL={meta['ct2_use_mkl']}",
        file=sys.stderr,  # the table on stderr, the JSON on stdout
    )
    print(
        f"{'threads':>7} {'encode':>8} {'prompt':>8} {'per token':>10} {'final':>8} "
        f"{'prefix':>8} {'same gen':>8}  (ms)",
        file=sys.stderr,
    )
    for n in [int(x) for x in args.threads.split(",") if x.strip()]:
        r = measure(dataclasses.replace(base, cpu_threads=n), clips, args.reps)
        out["by_threads"][str(n)] = r
        print(
            f"{n:>7} {r['encode_ms']:>8} {r['prompt_ms']:>8} "
            f"{r.get('per_token_ms', float('nan')):>10} {r['final_ms']:>8} "
            f"{r.get('forced_prefix_ms', float('nan')):>8} "
            f"{r.get('generated_same_ms', float('nan')):>8}",
            flush=True,
            file=sys.stderr,
        )
    emit(out, args.json)


if __name__ == "__main__":
    main()

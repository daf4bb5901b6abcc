"""The ``halfsec`` command as a user runs it: a real subprocess, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from halfsec.audio.io import load_audio

HALFSEC = [sys.executable, "-m", "halfsec.cli.main"]


def _run(args: list[str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run(HALFSEC + args, capture_output=True, text=True, timeout=timeout, env=env)


def test_run_mixed_inputs_json(
    tmp_path: Path, speech_dir: Path, rows: list[dict[str, str]]
) -> None:
    """Good, corrupt, silent and too-long inputs in one run: each gets its answer or a
    clear error, and the good one still completes."""
    good = next(r for r in rows if r["intent"] and float(r["duration_s"]) < 6.5)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, dtype=np.int16), 16000)
    long = tmp_path / "ten_minutes.wav"
    sf.write(long, np.zeros(16000 * 600, dtype=np.int16), 16000)
    out = tmp_path / "out"
    p = _run(
        [
            "run",
            str(corrupt),
            str(speech_dir / good["file"]),
            str(silent),
            str(long),
            "--out-dir",
            str(out),
            "--json",
        ]
    )
    assert p.returncode == 0, p.stderr
    res = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    assert len(res) == 4
    by = {Path(r["input"]).name: r for r in res}
    assert "not a readable audio file" in by["corrupt.wav"]["error"]
    assert "over the 120 s limit" in by["ten_minutes.wav"]["error"]
    assert "no speech detected in the input" in by["silent.wav"]["errors"]
    g = by[Path(good["file"]).name]
    for key in ("input", "transcript", "intent", "slots", "reply_text", "v2v_ms", "stages"):
        assert key in g
    assert g["intent"] == "orderDrink" and g["v2v_ms"] > 0
    assert g["stages"]["endpointing_ms"] > 0
    # The reply file is on the input's timeline: at least as long as the input, silent
    # until after the user's speech.
    wav, rate = sf.read(g["reply_wav"], dtype="int16")
    pcm = load_audio(speech_dir / good["file"])
    assert rate == 16000 and wav.size >= pcm.size
    first = int(np.flatnonzero(np.abs(wav.astype(np.int32)) > 184)[0])
    assert abs(first / 16.0 - g["first_audible_ms"]) < 1.0


def test_bad_domain_file_is_a_clear_error(tmp_path: Path, speech_dir: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: broken\nintents:\n  order:\n    examples: [\n")
    p = _run(
        [
            "run",
            str(speech_dir / "audio" / "vctk_p225_001.flac"),
            "--domain",
            str(bad),
            "--out-dir",
            str(tmp_path),
        ]
    )
    assert p.returncode == 2
    assert "bad.yaml" in p.stderr


def test_bad_override_is_a_clear_error(tmp_path: Path) -> None:
    p = _run(["run", "x.wav", "--set", "turn.silence_ms=fast", "--out-dir", str(tmp_path)])
    assert p.returncode == 2 and "turn.silence_ms" in p.stderr


def test_engines_lists_usable_engines() -> None:
    p = _run(["engines", "--json"])
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    usable = {(r["kind"], r["name"]) for r in rows if r["usable"]}
    for need in [
        ("vad", "silero"),
        ("stt", "whisper"),
        ("stt", "pocketsphinx"),
        ("tts", "piper"),
        ("tts", "espeak"),
    ]:
        assert need in usable, rows


def test_bench_net_none_means_no_network_and_bad_profiles_are_refused() -> None:
    """``--net none`` is accepted (so it reaches the next check: namespace mode needs a
    real network); an unknown profile is refused with the list of profiles."""
    p = _run(["bench", "--net", "none", "--net-mode", "namespace", "--limit", "1"])
    assert p.returncode == 2 and "needs --net" in p.stderr, p.stderr
    p = _run(["bench", "--net", "5g", "--limit", "1"])
    assert p.returncode == 2 and "unknown profile" in p.stderr and "4g" in p.stderr, p.stderr

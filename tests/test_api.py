"""The Python API: `from halfsec import ...`, lazy, and the embedding example that uses it."""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

import halfsec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
ENGINE_PACKAGES = ("onnxruntime", "ctranslate2", "faster_whisper", "piper", "pocketsphinx")

NEEDS_ENGINES = {
    "build_engines",
    "open_session",
    "VoiceSession",
    "run_file",
    "run_conversation",
    "FileRun",
    "VoiceServer",
    "ServerOptions",
    "start_server",
}
"""What runs the pipeline (and so loads onnxruntime); everything else is types, config
and errors, importable where no engine is installed."""


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_every_public_name_is_the_one_its_module_defines() -> None:
    assert set(halfsec.__all__) >= set(halfsec._API)
    for name, module in halfsec._API.items():
        obj = getattr(halfsec, name)
        assert obj is getattr(importlib.import_module(module), name), name
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__ == module, (name, obj.__module__)
    assert set(halfsec._API) <= set(dir(halfsec))
    with pytest.raises(AttributeError, match="no attribute 'VoiceSesion'"):
        _ = halfsec.VoiceSesion


def test_import_halfsec_loads_nothing_else() -> None:
    r = python(
        "import sys, halfsec\n"
        "extra = sorted(m for m in sys.modules if m.startswith('halfsec.') or m in "
        "('numpy', 'onnxruntime', 'aiohttp'))\n"
        "assert not extra, extra\n"
        "print(halfsec.__version__, halfsec.INTERNAL_RATE)\n"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [halfsec.__version__, "16000"]


def test_types_config_and_errors_import_without_any_engine() -> None:
    light = sorted(set(halfsec._API) - NEEDS_ENGINES)
    r = python(
        f"import sys\nfor name in {ENGINE_PACKAGES!r}:\n    sys.modules[name] = None\n"
        "import halfsec\n"
        f"for name in {light!r}:\n    getattr(halfsec, name)\n"
        "halfsec.load_config()\n"
        "try:\n    halfsec.VoiceSession\nexcept ImportError:\n    print('engines needed')\n"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "engines needed"


@pytest.mark.slow
def test_the_embedding_example_converses_from_a_paced_source() -> None:
    files = sorted(EXAMPLES.glob("*.flac"))
    assert [f.name for f in files] == [
        "coffee_order.flac",
        "coffee_order_2.flac",
        "off_topic_lamp.flac",
    ]
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / "embed_session.py"), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    said = [line[len("you: ") :].lower() for line in lines if line.startswith("you: ")]
    assert len(said) == 3, r.stdout
    assert "soy" in said[0] and "latte" in said[1] and "lamp" in said[2], said
    # Each thing the user said is answered before the next one is spoken.
    you = [i for i, line in enumerate(lines) if line.startswith("you: ")]
    for start, end in zip(you, [*you[1:], len(lines)], strict=True):
        assert any(line.startswith("agent: ") for line in lines[start:end]), lines[start:end]
        assert any(re.match(r"  \(reply: [1-9]", line) for line in lines[start:end])
    assert "intent: orderDrink" in r.stdout
    # A microphone delivers audio no faster than it is spoken.
    spoken_s = sum(sf.info(str(f)).duration for f in files)
    assert elapsed > spoken_s, (elapsed, spoken_s)

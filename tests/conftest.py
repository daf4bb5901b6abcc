"""Shared fixtures: the real human speech corpus beside the repo (``../shared/speech``)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "speech"


def manifest_rows() -> list[dict[str, str]]:
    with open(SPEECH / "manifest.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    assert (SPEECH / "manifest.tsv").exists(), (
        f"real speech corpus not found at {SPEECH}; clone the project with ../shared beside it"
    )
    return SPEECH


@pytest.fixture(scope="session")
def rows(speech_dir: Path) -> list[dict[str, str]]:
    return manifest_rows()


@pytest.fixture(scope="session")
def engines():  # type: ignore[no-untyped-def]
    """The embedded default engines, loaded once for the whole test run."""
    from halfsec.config import load_config
    from halfsec.runtime.build import build_engines

    return build_engines(load_config())


@pytest.fixture
def pushed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every chunk a transport pushes into a ``VoiceSession``, in order (the
    session still gets them): whether each client chunk completes its frames on time."""
    from halfsec.runtime.session import VoiceSession

    sizes: list[int] = []
    original = VoiceSession.push

    async def spy(self: VoiceSession, pcm):  # type: ignore[no-untyped-def]
        sizes.append(int(pcm.size))
        await original(self, pcm)

    monkeypatch.setattr(VoiceSession, "push", spy)
    return sizes

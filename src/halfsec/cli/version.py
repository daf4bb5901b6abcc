"""``halfsec --version``: halfsec's version and those of the packages that decide what it
does (a bug report that says "halfsec 0.1.0, ctranslate2 4.5" can be reproduced)."""

from __future__ import annotations

import platform
from importlib import metadata

from halfsec import __version__

KEY_PACKAGES = (
    "faster-whisper",
    "ctranslate2",
    "onnxruntime",
    "piper-tts",
    "pocketsphinx",
    "espeakng-loader",
    "numpy",
    "aiohttp",
    "aiortc",
    "wyoming",
)


def version_lines() -> list[str]:
    lines = [f"halfsec {__version__}", f"python {platform.python_version()}"]
    for name in KEY_PACKAGES:
        try:
            lines.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{name} (not installed)")
    return lines

"""Collect end-of-turn evidence for a set of recordings (with a progress bar), or load it
from an earlier run's JSON so the policies can be swept again without decoding."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import track

from halfsec.lab.eot.recordings import Recording
from halfsec.lab.eot.replay import Replayed, replay
from halfsec.runtime.engines import Engines
from halfsec.turn.smart_turn import SmartTurn


async def collect(
    recs: Sequence[Recording], engines: Engines, smart: SmartTurn | None, console: Console
) -> list[Replayed]:
    out: list[Replayed] = []
    for rec in track(recs, description="replaying pauses", console=console):
        r = await replay(rec, engines.stt, engines.logic, smart)
        if r is not None:
            out.append(r)
    return out


def save(path: Path, recs: Sequence[Replayed]) -> None:
    path.write_text(json.dumps([r.as_dict() for r in recs]))


def load(path: Path) -> list[Replayed]:
    """Evidence saved by ``save``; a clear error when the file is not that."""
    try:
        data = json.loads(path.read_text())
        return [Replayed.from_dict(d) for d in data]
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise SystemExit(
            f"cannot read end-of-turn evidence from {path} ({e}); "
            "run without --evidence to collect it afresh"
        ) from e

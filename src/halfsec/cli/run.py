"""``halfsec run``: play files through the full pipeline at real-time pace.

Each file is its own session by default; with ``--conversation`` the files are the turns
of one conversation in one session, and each result adds the dialogue state after it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from halfsec.audio.io import load_audio, write_wav
from halfsec.cli.common import err
from halfsec.config import HalfsecConfig
from halfsec.errors import HalfsecError
from halfsec.runtime.build import build_engines
from halfsec.runtime.engines import Engines
from halfsec.runtime.file_run import FileRun, run_conversation, run_file
from halfsec.runtime.session import VoiceSession


async def run_one(
    path: Path, engines: Engines, config: HalfsecConfig, out_dir: Path
) -> dict[str, Any]:
    result: dict[str, Any] = {"input": str(path)}
    try:
        pcm = load_audio(path, max_seconds=config.audio.max_input_s)
    except HalfsecError as e:
        result.update(error=str(e), v2v_ms=None)
        return result
    session = VoiceSession(
        engines, config.turn, config.session, output_rate=config.audio.output_rate
    )
    run = await run_file(session, pcm)
    return _result(result, run, config, out_dir / f"{path.stem}.reply.wav")


async def run_turns(
    paths: list[Path], engines: Engines, config: HalfsecConfig, out_dir: Path
) -> list[dict[str, Any]]:
    """The files as the turns of one conversation (a file that cannot be read is reported
    and left out; the conversation goes on without it).  ``out_dir`` must exist."""
    results: list[dict[str, Any]] = [{"input": str(p)} for p in paths]
    pcms: list[tuple[int, np.ndarray]] = []
    for i, path in enumerate(paths):
        try:
            pcms.append((i, load_audio(path, max_seconds=config.audio.max_input_s)))
        except HalfsecError as e:
            results[i].update(error=str(e), v2v_ms=None)
    session = VoiceSession(
        engines, config.turn, config.session, output_rate=config.audio.output_rate
    )
    runs = await run_conversation(session, [pcm for _, pcm in pcms])
    for turn, ((i, _), run) in enumerate(zip(pcms, runs, strict=True), start=1):
        results[i]["turn"] = turn
        # Numbered: one recording may be said twice in a conversation ("yes").
        _result(results[i], run, config, out_dir / f"{turn:02d}-{paths[i].stem}.reply.wav")
        results[i]["dialogue"] = run.dialogue.as_dict() if run.dialogue is not None else None
    return results


def _result(
    result: dict[str, Any], run: FileRun, config: HalfsecConfig, reply_wav: Path
) -> dict[str, Any]:
    result.update(run.summary(config.audio.audible_dbfs))
    write_wav(reply_wav, run.reply_audio(), config.audio.output_rate)
    result["reply_wav"] = str(reply_wav)
    return result


def run_command(
    files: list[Path],
    out_dir: Path,
    as_json: bool,
    config: HalfsecConfig,
    *,
    conversation: bool = False,
) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with err.status("loading engines..."):
            engines = build_engines(config, phone=False)
    except HalfsecError as e:
        err.print(f"[red]error:[/red] {e}")
        return 2
    results: list[dict[str, Any]] = []
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )

    def emit(r: dict[str, Any]) -> None:
        results.append(r)
        if as_json:
            sys.stdout.write(json.dumps(r) + "\n")
            sys.stdout.flush()

    async def main() -> None:
        if conversation:
            with err.status(f"playing {len(files)} turns as one conversation..."):
                for r in await run_turns(files, engines, config, out_dir):
                    emit(r)
            return
        with progress:
            task = progress.add_task("running", total=len(files))
            for f in files:
                progress.update(task, description=f"running {f.name}")
                emit(await run_one(f, engines, config, out_dir))
                progress.advance(task)

    asyncio.run(main())
    if not as_json:
        table = Table(title="halfsec run" + (" --conversation" if conversation else ""))
        cols = ["input", "v2v ms", "transcript", "intent", "reply"]
        for col in cols + (["order"] if conversation else []):
            table.add_column(col, overflow="fold")
        for r in results:
            v2v = r.get("v2v_ms")
            row = [
                Path(r["input"]).name,
                "-" if v2v is None else f"{v2v:.0f}",
                r.get("transcript", "") or r.get("error", ""),
                str(r.get("intent") or ""),
                r.get("reply_text", ""),
            ]
            if conversation:
                row.append(_order_text(r.get("dialogue")))
            table.add_row(*row)
        err.print(table)
    failed = [r for r in results if r.get("error")]
    for r in failed:
        err.print(f"[red]{r['input']}:[/red] {r['error']}")
    return 1 if failed and len(failed) == len(results) else 0


def _order_text(dialogue: dict[str, Any] | None) -> str:
    """The open request (or the last one done) in a table cell."""
    if not dialogue:
        return ""
    request = dialogue.get("request") or (dialogue["done"][-1] if dialogue.get("done") else None)
    if request is None:
        return ""
    state = "open" if dialogue.get("request") else "done"
    values = ", ".join(f"{k}={v}" for k, v in request["slots"].items())
    return f"{state}: {values}"

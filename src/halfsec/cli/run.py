"""``halfsec run``: play files through the full pipeline at real-time pace."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from halfsec.audio.io import load_audio, write_wav
from halfsec.cli.common import err
from halfsec.config import HalfsecConfig
from halfsec.errors import HalfsecError
from halfsec.runtime.build import build_engines
from halfsec.runtime.engines import Engines
from halfsec.runtime.file_run import run_file
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
    result.update(run.summary(config.audio.audible_dbfs))
    out = out_dir / f"{path.stem}.reply.wav"
    write_wav(out, run.reply_audio(), config.audio.output_rate)
    result["reply_wav"] = str(out)
    return result


def run_command(files: list[Path], out_dir: Path, as_json: bool, config: HalfsecConfig) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with err.status("loading engines..."):
            engines = build_engines(config)
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

    async def main() -> None:
        with progress:
            task = progress.add_task("running", total=len(files))
            for f in files:
                progress.update(task, description=f"running {f.name}")
                r = await run_one(f, engines, config, out_dir)
                results.append(r)
                if as_json:
                    sys.stdout.write(json.dumps(r) + "\n")
                    sys.stdout.flush()
                progress.advance(task)

    asyncio.run(main())
    if not as_json:
        table = Table(title="halfsec run")
        for col in ("input", "v2v ms", "transcript", "intent", "reply"):
            table.add_column(col, overflow="fold")
        for r in results:
            v2v = r.get("v2v_ms")
            table.add_row(
                Path(r["input"]).name,
                "-" if v2v is None else f"{v2v:.0f}",
                r.get("transcript", "") or r.get("error", ""),
                str(r.get("intent") or ""),
                r.get("reply_text", ""),
            )
        err.print(table)
    failed = [r for r in results if r.get("error")]
    for r in failed:
        err.print(f"[red]{r['input']}:[/red] {r['error']}")
    return 1 if failed and len(failed) == len(results) else 0

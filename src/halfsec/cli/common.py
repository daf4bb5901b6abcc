"""Options shared by commands: configuration file, overrides and engine shortcuts."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ..config import HalfsecConfig, load_config
from ..errors import HalfsecError

err = Console(stderr=True)


def config_from_cli(
    config: Path | None,
    overrides: list[str] | None,
    stt: str | None = None,
    tts: str | None = None,
    domain: str | None = None,
) -> HalfsecConfig:
    ov = list(overrides or [])
    if stt:
        ov.append(f"stt.engine={stt}")
    if tts:
        ov.append(f"tts.engine={tts}")
    if domain:
        ov.append(f"logic.domain={domain}")
    try:
        return load_config(config, ov)
    except HalfsecError as e:
        err.print(f"[red]config error:[/red] {e}")
        raise typer.Exit(2) from e


ConfigOpt = typer.Option(
    None,
    "--config",
    "-c",
    help="TOML file with [audio] [turn] [stt] [logic] [tts] [session] tables.",
)
SetOpt = typer.Option(
    None, "--set", help="Override one key, e.g. --set turn.silence_ms=250 (repeatable)."
)

"""The ``halfsec`` command: each subcommand's work lives in its own module."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .common import ConfigOpt, SetOpt, config_from_cli

app = typer.Typer(
    help="halfsec: voice response pipelines that answer in under half a second.",
    no_args_is_help=True,
)


@app.command()
def run(
    files: list[Path] = typer.Argument(..., help="Audio files (WAV, FLAC, any rate)."),
    out_dir: Path = typer.Option(
        Path("out"), "--out-dir", "-o", help="Where <stem>.reply.wav files go."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per input on stdout."),
    config: Path | None = ConfigOpt,
    overrides: list[str] | None = SetOpt,
    stt: str | None = typer.Option(None, help="STT engine: whisper | pocketsphinx."),
    tts: str | None = typer.Option(None, help="TTS engine: piper | espeak."),
    domain: str | None = typer.Option(
        None, help="Logic domain: coffee | retail | path to a YAML file."
    ),
) -> None:
    """Play each file through the full pipeline at real-time pace like a live microphone."""
    from .run import run_command

    cfg = config_from_cli(config, overrides, stt, tts, domain)
    raise typer.Exit(run_command(files, out_dir, as_json, cfg))


@app.command()
def engines(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the engines and whether each is usable on this machine."""
    from .engines import engines_command

    rows = engines_command(as_json)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))


# --- serve / bench commands (transport + bench client) ---


# --- lab commands (runs, report, compare, import-trace) ---


if __name__ == "__main__":  # pragma: no cover
    app()

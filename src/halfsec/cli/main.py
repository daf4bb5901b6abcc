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


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback unless --token)."),
    port: int = typer.Option(8765, help="TCP port (0: any free port)."),
    config: Path | None = ConfigOpt,
    overrides: list[str] | None = SetOpt,
    token: str | None = typer.Option(
        None, help="Require 'Authorization: Bearer TOKEN' (or ?token=); needed off loopback."
    ),
    allow_origin: list[str] | None = typer.Option(
        None, "--allow-origin", help="Browser Origin allowed to connect (repeatable; '*' = any)."
    ),
    max_sessions: int = typer.Option(8, help="Concurrent sessions; more get HTTP 503."),
    inject_delay_ms: float = typer.Option(
        0.0, help="Fault injector: hold every reply-audio packet this long before sending."
    ),
    idle_timeout_s: float = typer.Option(30.0, help="Close sessions silent for this long."),
) -> None:
    """Serve the pipeline over WebSocket (/ws, protocol in docs/protocol.md) and /healthz."""
    from ..transport.server import ServeError, ServerOptions
    from .serve import serve_command

    cfg = config_from_cli(config, overrides)
    try:
        opts = ServerOptions(
            host=host,
            port=port,
            token=token,
            allow_origins=tuple(allow_origin or ()),
            max_sessions=max_sessions,
            inject_delay_ms=inject_delay_ms,
            idle_timeout_s=idle_timeout_s,
        )
    except ServeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    raise typer.Exit(serve_command(cfg, opts))


@app.command()
def bench(
    server: str | None = typer.Option(
        None, help="ws://host:port/ws of a running server; default: start one locally."
    ),
    corpus: Path | None = typer.Option(
        None, help="manifest.tsv or folder of audio; default: the built-in synthesized corpus."
    ),
    limit: int | None = typer.Option(None, help="Play only the first N recordings."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the JSON report here."),
    save_audio: Path | None = typer.Option(
        None, help="Write <stem>.sent.wav and <stem>.received.wav (one timeline) here."
    ),
    budget: Path | None = typer.Option(None, help="Latency budget TOML."),
    fail_over_budget: bool = typer.Option(False, help="Exit 1 if a budget line is exceeded."),
    html: Path | None = typer.Option(None, help="Write the HTML report here."),
    token: str | None = typer.Option(None, help="Token for the server."),
    config: Path | None = ConfigOpt,
    overrides: list[str] | None = SetOpt,
    inject_delay_ms: float = typer.Option(
        0.0, help="Self-test: the server the bench starts delays reply audio by this much."
    ),
    domain: str | None = typer.Option(
        None, help="Only recordings of this domain (coffee, retail)."
    ),
    store: bool = typer.Option(True, help="Save the run in the lab's SQLite store."),
    timeout_s: float = typer.Option(
        10.0, help="Seconds after a recording to wait for the reply before failing the turn."
    ),
) -> None:
    """Measure voice-to-voice at a real client: play a corpus over WebSocket in real time."""
    from .bench import bench_command

    raise typer.Exit(
        bench_command(
            server,
            corpus,
            limit,
            json_out,
            save_audio,
            budget,
            fail_over_budget,
            html,
            token,
            config,
            list(overrides or []),
            inject_delay_ms,
            domain,
            store,
            timeout_s,
        )
    )


# --- lab commands (runs, report, compare, import-trace) ---


if __name__ == "__main__":  # pragma: no cover
    app()

"""The ``halfsec`` command: each subcommand's work lives in its own module."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from halfsec.cli.common import ConfigOpt, SetOpt, config_from_cli

app = typer.Typer(
    help="halfsec: voice response pipelines that answer in under half a second.",
    no_args_is_help=True,
)


def _print_version(value: bool) -> None:
    if value:
        from halfsec.cli.version import version_lines

        typer.echo("\n".join(version_lines()))
        raise typer.Exit()


@app.callback()
def _global_options(
    ctx: typer.Context,
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print halfsec's version and its engine packages' versions, then exit.",
    ),
    log_level: str | None = typer.Option(
        None, "--log-level", help="debug | info | warning | error (default: per command)."
    ),
    log_json: bool = typer.Option(False, "--log-json", help="Log one JSON object per line."),
) -> None:
    # Options that come before the command and hold for every command.
    if log_level is None and not log_json:
        return
    import logging

    from halfsec import __version__
    from halfsec.cli.logs import configure_logging

    try:
        configure_logging(log_level or "info", log_json)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--log-level") from e
    logging.getLogger("halfsec.cli").debug(
        "halfsec %s: %s", __version__, ctx.invoked_subcommand or "-"
    )


@app.command()
def run(
    files: list[Path] = typer.Argument(..., help="Audio files (WAV, FLAC, any rate)."),
    out_dir: Path = typer.Option(
        Path("out"), "--out-dir", "-o", help="Where <stem>.reply.wav files go."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per input on stdout."),
    conversation: bool = typer.Option(
        False,
        "--conversation",
        help="Play the files as one conversation in one session, each after the previous "
        "reply has finished playing; each line adds the dialogue state.",
    ),
    config: Path | None = ConfigOpt,
    overrides: list[str] | None = SetOpt,
    stt: str | None = typer.Option(None, help="STT engine: whisper | pocketsphinx."),
    tts: str | None = typer.Option(None, help="TTS engine: piper | espeak."),
    domain: str | None = typer.Option(
        None, help="Logic domain: coffee | retail | path to a YAML file."
    ),
) -> None:
    """Play each file through the full pipeline at real-time pace like a live microphone."""
    from halfsec.cli.run import run_command

    cfg = config_from_cli(config, overrides, stt, tts, domain)
    raise typer.Exit(run_command(files, out_dir, as_json, cfg, conversation=conversation))


@app.command()
def engines(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the engines and whether each is usable on this machine."""
    from halfsec.cli.engines import engines_command

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
    max_sessions: int = typer.Option(64, help="Hard cap on open sessions per worker."),
    capacity: float | None = typer.Option(None, help="Active turns a worker takes (busy past)."),
    workers: int = typer.Option(1, help="Worker processes on the port; a dead one is replaced."),
    drain_s: float = typer.Option(20.0, help="SIGTERM: no new sessions, open ones get this long."),
    inject_delay_ms: float = typer.Option(
        0.0, help="Fault injector: hold every reply-audio packet this long before sending."
    ),
    idle_timeout_s: float = typer.Option(30.0, help="Close sessions silent for this long."),
    otlp_endpoint: str | None = typer.Option(
        None, help="Also export turn spans over OTLP/HTTP to this collector (http://host:4318)."
    ),
    trace_file: Path | None = typer.Option(
        None,
        help="JSON-lines span file (default ~/.local/share/halfsec/traces/halfsec-server.jsonl).",
    ),
    trace: bool = typer.Option(True, help="Record each turn's OpenTelemetry spans."),
    fault: list[str] | None = typer.Option(
        None,
        "--fault",
        help="Lab: inject a fault, KIND[:DURATION][@PROBABILITY] (repeatable): stt.stall:5s, "
        "stt.error, tts.stall:2s, tts.error@0.3, llm.stall, llm.error, loop.stall:200ms, "
        "worker.kill. See docs/reliability.md.",
    ),
    fault_seed: int = typer.Option(0, help="Seed of the --fault draws (same seed, same run)."),
    fault_every: int = typer.Option(
        1, help="Arm --fault in one session of every N (1: all; 2: sessions 1, 3, 5...)."
    ),
    resume_key: str | None = typer.Option(
        None, envvar="HALFSEC_RESUME_KEY", help="Deployment key: signs resumable context."
    ),
) -> None:
    """Serve the pipeline over WebSocket (/ws, protocol in docs/protocol.md) and /healthz."""
    from halfsec.cli.serve import serve_command
    from halfsec.server.app import ServeError, ServerOptions

    cfg = config_from_cli(config, overrides)
    try:
        opts = ServerOptions(
            host=host,
            port=port,
            token=token,
            allow_origins=tuple(allow_origin or ()),
            max_sessions=max_sessions,
            capacity=capacity,
            workers=workers,
            drain_s=drain_s,
            inject_delay_ms=inject_delay_ms,
            idle_timeout_s=idle_timeout_s,
            trace=trace,
            trace_file=str(trace_file) if trace_file is not None else None,
            otlp_endpoint=otlp_endpoint,
            resume_key=resume_key,
        )
    except ServeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    raise typer.Exit(serve_command(cfg, opts, list(fault or []), fault_seed, fault_every))


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
    otlp_endpoint: str | None = typer.Option(
        None,
        help="Export client spans (and the local server's) over OTLP/HTTP to this collector.",
    ),
    transport: str = typer.Option(
        "websocket",
        help="websocket, webrtc (aiortc client, Opus, events data channel) or twilio (a "
        "phone call over Twilio Media Streams, mu-law 8 kHz; docs/twilio.md).",
    ),
    codec: str = typer.Option("pcm16", help="WebSocket audio both ways: pcm16 or opus."),
    net: str | None = typer.Option(
        None,
        help="Simulated network (netem profile such as 4g, or a spec); see docs/network-lab.md.",
    ),
    client: str = typer.Option(
        "python",
        help="python (this package's client) or browser (headless Chromium plays the page "
        "at /; see docs/browser.md).",
    ),
    net_mode: str = typer.Option(
        "relay",
        "--net-mode",
        help="Where --net is applied: relay (loopback relays) or namespace (client, relays "
        "and server in network namespaces over veths; root). See docs/network-lab.md.",
    ),
    pcap: Path | None = typer.Option(
        None, "--pcap", help="Namespace mode: tcpdump the run here; packet RTT/jitter/loss."
    ),
    fault: list[str] | None = typer.Option(
        None,
        "--fault",
        help="Inject this fault in the server the bench starts (repeatable; as halfsec serve "
        "--fault). The report says which faults fired and which fallback answered each turn.",
    ),
    fault_seed: int = typer.Option(0, help="Seed of the --fault draws."),
    fault_every: int = typer.Option(1, help="Arm --fault in one session of every N."),
    sessions: int | None = typer.Option(None, help="Load: N callers at once (docs/scaling.md)."),
    ramp: str | None = typer.Option(
        None, help="Load: steps of callers (START:STOP[:STEP], 1,2,4 or auto) up to the knee."
    ),
    turns: int = typer.Option(3, help="Load: turns per caller per step."),
    think: str = typer.Option("1:2", help="Load: a caller's think time, MIN:MAX seconds."),
    seed: int = typer.Option(0, help="Load: seed of the recording order and think times."),
    max_sessions: int | None = typer.Option(None, help="Load: the server's --max-sessions."),
    slo_p95_ms: float = typer.Option(500.0, help="Load: the SLO's v2v p95 bound."),
    refusals_ok: bool = typer.Option(False, help="Load: busy refusals do not break the SLO."),
) -> None:
    """Measure voice-to-voice at a real client: play a corpus over WebSocket, WebRTC or a
    phone call (Twilio Media Streams); with --sessions or --ramp, many callers at once."""
    from halfsec.cli.bench import bench_command

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
            otlp_endpoint,
            transport,
            codec,
            net,
            client,
            net_mode,
            pcap,
            list(fault or []),
            fault_seed,
            fault_every=fault_every,
            sessions=sessions,
            ramp=ramp,
            load={
                "turns": turns,
                "think": think,
                "seed": seed,
                "max_sessions": max_sessions,
                "slo_p95_ms": slo_p95_ms,
                "refusals_ok": refusals_ok,
            },
        )
    )


@app.command()
def wyoming(
    uri: str = typer.Option(
        "tcp://127.0.0.1:10300", help="tcp://HOST:PORT (port 0: any free port) or unix://PATH."
    ),
    allow_remote: bool = typer.Option(
        False, help="Listen on a non-loopback address (Wyoming has no authentication)."
    ),
    config: Path | None = ConfigOpt,
    overrides: list[str] | None = SetOpt,
    stt: str | None = typer.Option(None, help="STT engine: whisper | pocketsphinx | openai."),
    tts: str | None = typer.Option(None, help="TTS engine: piper | espeak | openai."),
    domain: str | None = typer.Option(
        None, help="Logic domain for intents: coffee | retail | path to a YAML file."
    ),
) -> None:
    """Serve speech to text, text to speech and intents to Home Assistant (Wyoming)."""
    from halfsec.cli.wyoming import wyoming_command

    cfg = config_from_cli(config, overrides, stt, tts, domain)
    raise typer.Exit(wyoming_command(cfg, uri, allow_remote))


# --- edge command (edge gateway) ---


@app.command()
def edge(
    origin: str = typer.Option(..., help="ws://HOST:PORT/ws of the origin `halfsec serve`."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback unless --token)."),
    port: int = typer.Option(8766, help="TCP port (0: any free port)."),
    token: str | None = typer.Option(
        None, help="Require 'Authorization: Bearer TOKEN' (or ?token=) from clients."
    ),
    origin_token: str | None = typer.Option(None, help="Token the edge sends to the origin."),
    allow_origin: list[str] | None = typer.Option(
        None, "--allow-origin", help="Browser Origin allowed to connect (repeatable; '*' = any)."
    ),
    pool_size: int = typer.Option(2, help="Pre-started origin sessions kept warm."),
    preroll_ms: float = typer.Option(500.0, help="Audio before the speech onset forwarded."),
    max_sessions: int = typer.Option(32, help="Concurrent client sessions; more get HTTP 503."),
    config: Path | None = ConfigOpt,
    overrides: list[str] | None = SetOpt,
) -> None:
    """Gateway near the user: local handshake and VAD, only speech crosses to the origin."""
    from halfsec.cli.edge import edge_command
    from halfsec.edge.gateway import EdgeError, EdgeOptions

    cfg = config_from_cli(config, overrides)
    try:
        opts = EdgeOptions(
            origin=origin,
            host=host,
            port=port,
            token=token,
            origin_token=origin_token,
            allow_origins=tuple(allow_origin or ()),
            pool_size=pool_size,
            preroll_ms=preroll_ms,
            max_sessions=max_sessions,
        )
    except EdgeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    raise typer.Exit(edge_command(cfg, opts))


# --- lab commands (runs, report, compare, import-trace) ---

DbOpt = typer.Option(
    None, "--db", help="Lab database (default $HALFSEC_DB or ~/.local/share/halfsec/lab.db)."
)


@app.command()
def runs(
    db: Path | None = DbOpt,
    limit: int = typer.Option(50, help="Show at most this many (newest first)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List stored lab runs."""
    from halfsec.cli.lab import runs_command

    raise typer.Exit(runs_command(db, limit, as_json))


@app.command()
def report(
    run: str = typer.Argument(..., help="Run id, 'latest', or -N (N-th newest)."),
    db: Path | None = DbOpt,
    html: Path | None = typer.Option(None, "--html", help="Write the HTML report here."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the JSON report here."),
    budget: Path | None = typer.Option(None, help="Re-check against this budget TOML."),
    fail_over_budget: bool = typer.Option(False, help="Exit 1 if a budget line is exceeded."),
) -> None:
    """Re-render a stored run (terminal summary, optional HTML/JSON)."""
    from halfsec.cli.lab import report_command

    raise typer.Exit(report_command(run, db, html, json_out, budget, fail_over_budget))


@app.command()
def compare(
    a: str = typer.Argument(..., help="Baseline: run id, 'latest', -N, or report .json."),
    b: str = typer.Argument(..., help="Candidate: run id, 'latest', -N, or report .json."),
    db: Path | None = DbOpt,
    threshold_ms: float = typer.Option(10.0, help="Regression only if slower by >= this."),
    threshold_pct: float = typer.Option(5.0, help="...and by >= this percent of A."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the comparison here."),
) -> None:
    """Compare B against A: p50/p95 difference with a bootstrap CI; exit 1 on regression."""
    from halfsec.cli.lab import compare_command

    raise typer.Exit(compare_command(a, b, db, threshold_ms, threshold_pct, json_out))


@app.command("import-trace")
def import_trace(
    file: Path = typer.Argument(..., help="OTLP JSON from Pipecat, LiveKit Agents or halfsec."),
    budget: Path | None = typer.Option(None, help="Latency budget TOML."),
    html: Path | None = typer.Option(None, "--html", help="Write the HTML report here."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the JSON report here."),
    store: bool = typer.Option(False, help="Save the imported run in the lab store."),
    db: Path | None = DbOpt,
    fail_over_budget: bool = typer.Option(False, help="Exit 1 if a budget line is exceeded."),
) -> None:
    """Map another framework's trace onto halfsec's stages and show the budget view."""
    from halfsec.cli.lab import import_trace_command

    raise typer.Exit(
        import_trace_command(file, budget, html, json_out, store, db, fail_over_budget)
    )


# --- gateway command (Envoy in front of many servers; its flags are in cli/gateway.py) ---
from halfsec.cli.gateway import gateway as _gateway  # noqa: E402 - registered here, lazily loads

app.command("gateway")(_gateway)


if __name__ == "__main__":  # pragma: no cover
    app()

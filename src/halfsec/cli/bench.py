"""``halfsec bench``: play a corpus through a server and report where the time went."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from halfsec.cli.common import err
from halfsec.config import load_config
from halfsec.errors import HalfsecError
from halfsec.lab.bench.builtin_corpus import ensure_builtin_corpus
from halfsec.lab.bench.corpus import Corpus, filter_domain, load_corpus
from halfsec.lab.bench.namespace import namespace_problem
from halfsec.lab.bench.options import BenchOptions
from halfsec.lab.bench.run import run_bench
from halfsec.lab.clients.options import ClientOptions
from halfsec.lab.netem.path import no_net
from halfsec.lab.netem.profile import parse_net
from halfsec.lab.report import json as report_json
from halfsec.lab.report.budget import check_budget, load_budget
from halfsec.lab.report.html import write_html
from halfsec.lab.report.store import RunWriter, save_run
from halfsec.lab.report.term import print_summary


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )


def builtin_corpus() -> Corpus:
    """The synthesized corpus, built (with a progress bar) on first use."""
    with _progress() as p:
        task = p.add_task("synthesizing built-in corpus (once)", total=None)

        def tick(done: int, total: int) -> None:
            p.update(task, completed=done, total=total)

        manifest = ensure_builtin_corpus(progress=tick)
    return load_corpus(manifest)


def domain_intents(domain: str | None) -> frozenset[str] | None:
    """The intents logic domain ``domain`` understands: ``--domain`` picks a manifest's
    rows by them where it has no domain column.  None: no domain, or none loadable."""
    if domain is None or domain == "all":
        return None
    from halfsec.logic.domain import load_domain

    try:
        return frozenset(load_domain(domain).intents)
    except HalfsecError:
        return None


def _warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(message)}")


class _TurnSaver:
    """Saves each finished turn as it comes (``RunWriter``), so a bench killed mid-run
    leaves a run holding every turn it finished.  The run is stored with its first
    turn: a bench that fails before any (no server) leaves nothing behind.  The store is
    a convenience: a failure is said once and the run goes on (the final save tries
    again with every turn)."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = meta
        self.writer: RunWriter | None = None
        self.failed = False

    def add_turn(self, rec: dict[str, Any]) -> None:
        if self.failed:
            return
        try:
            if self.writer is None:
                self.writer = RunWriter.begin(self.meta)
            self.writer.add_turn(rec)
        except HalfsecError as e:
            self.failed = True
            _warn(f"could not save the turn that just finished ({e}); saving at the end")

    def finish(self, report: dict[str, Any], spans: list[dict[str, Any]]) -> None:
        """The whole report in place of the turns saved so far (or a new run if none
        were).  The run's output is already out, so a failure here is a warning."""
        try:
            if self.writer is not None:
                run_id = self.writer.finish(report, spans, warn=_warn)
            else:
                run_id = save_run(report, spans=spans, warn=_warn)
            err.print(f"saved as run {run_id}")
        except HalfsecError as e:
            _warn(f"could not save the run ({e})")


def _turn_saver(store: bool, corpus: Path, opts: BenchOptions) -> _TurnSaver | None:
    if not store:
        return None
    meta = report_json.default_meta(
        "halfsec bench", corpus=str(corpus), transport=opts.transport, net=opts.net
    )
    meta["server_url"] = opts.server
    return _TurnSaver(meta)


def bench_command(
    server: str | None,
    corpus_path: Path | None,
    limit: int | None,
    json_out: Path | None,
    save_audio: Path | None,
    budget_path: Path | None,
    fail_over_budget: bool,
    html_out: Path | None,
    token: str | None,
    config: Path | None,
    overrides: list[str],
    inject_delay_ms: float,
    domain: str | None,
    store: bool,
    timeout_s: float,
    otlp_endpoint: str | None = None,
    transport: str = "websocket",
    codec: str = "pcm16",
    net: str | None = None,
    client: str = "python",
    net_mode: str = "relay",
    pcap: Path | None = None,
    faults: list[str] | None = None,
    fault_seed: int = 0,
    fault_every: int = 1,
    sessions: int | None = None,
    ramp: str | None = None,
    load: dict[str, Any] | None = None,
) -> int:
    if client not in ("python", "browser"):
        err.print(f"[red]error:[/red] --client must be python or browser, not {client!r}")
        return 2
    if client == "browser" and codec != "pcm16":
        # The page picks its own codec (PCM over WebSocket, Opus over WebRTC).
        err.print("[red]error:[/red] --client browser takes no --codec (the page picks it)")
        return 2
    if net_mode not in ("relay", "namespace"):
        err.print(f"[red]error:[/red] --net-mode must be relay or namespace, not {net_mode!r}")
        return 2
    if transport not in ("websocket", "webrtc", "twilio"):
        err.print(
            f"[red]error:[/red] --transport must be websocket, webrtc or twilio, not {transport!r}"
        )
        return 2
    if transport == "twilio" and (codec != "pcm16" or client != "python"):
        # A phone line carries mu-law at 8 kHz, and only the Python client plays Twilio.
        err.print("[red]error:[/red] --transport twilio takes no --codec and no --client browser")
        return 2
    if codec not in ("pcm16", "opus"):
        err.print(f"[red]error:[/red] --codec must be pcm16 or opus, not {codec!r}")
        return 2
    if faults and server is not None:
        err.print(
            "[red]error:[/red] --fault applies to the server the bench starts; drop --server "
            "(or start that server with halfsec serve --fault)"
        )
        return 2
    if no_net(net):
        net = None  # "--net none": the same as no --net, handy in scripts that loop
    if net:
        try:
            parse_net(net)
        except (HalfsecError, ValueError) as e:
            err.print(f"[red]error:[/red] --net {net!r}: {e}")
            return 2
    if net_mode == "namespace":
        # Checked before any corpus is built or server started: a clear refusal, never a
        # silent fall-back to loopback (which would measure another network).
        if not net or net.strip().lower() == "none":
            err.print("[red]error:[/red] --net-mode namespace needs --net PROFILE")
            return 2
        if server is not None:
            err.print(
                "[red]error:[/red] --net-mode namespace starts its own server in the server "
                "namespace; drop --server (or use --net-mode relay)"
            )
            return 2
        problem = namespace_problem()
        if problem is not None:
            err.print(f"[red]error:[/red] {problem}")
            return 2
    if pcap is not None and net_mode != "namespace":
        err.print("[red]error:[/red] --pcap captures the namespace lab: add --net-mode namespace")
        return 2
    if server is None:
        # The server the bench starts reads the same configuration: a bad key or value
        # fails here in milliseconds, with its message, not as a server that never starts.
        try:
            load_config(config, overrides)
        except HalfsecError as e:
            err.print(f"[red]config error:[/red] {escape(str(e))}")
            return 2
    try:
        corpus = load_corpus(corpus_path) if corpus_path is not None else builtin_corpus()
    except HalfsecError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}")
        return 2
    for w in corpus.warnings:
        err.print(f"[yellow]warning:[/yellow] {w}")
    try:
        items = filter_domain(corpus.items, domain, domain_intents(domain))
    except HalfsecError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}")
        return 2
    if limit is not None:
        items = items[:limit]
    if not items:
        err.print("[red]error:[/red] the corpus has no recordings to play (check --domain/--limit)")
        return 2
    budget = None
    if budget_path is not None or fail_over_budget:
        try:
            budget = load_budget(budget_path)
        except HalfsecError as e:
            err.print(f"[red]error:[/red] {escape(str(e))}")
            return 2
    try:
        opts = BenchOptions(
            server=server,
            token=token,
            config=config,
            overrides=overrides,
            inject_delay_ms=inject_delay_ms,
            save_audio=save_audio,
            client=ClientOptions(token=token, max_tail_s=timeout_s, codec=codec),
            otlp_endpoint=otlp_endpoint,
            transport=transport,
            net=net,
            net_mode=net_mode,
            pcap=pcap,
            client_kind=client,
            faults=list(faults or []),
            fault_seed=fault_seed,
            fault_every=fault_every,
        )
    except HalfsecError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}")
        return 2
    if sessions is not None or ramp is not None:
        return load_command(items, opts, sessions, ramp, load or {}, json_out, html_out)
    saver = _turn_saver(store, corpus.source, opts)
    progress = _progress()

    async def main() -> Any:
        with progress:
            task = progress.add_task("bench", total=len(items))

            def on_record(rec: dict[str, Any]) -> None:
                if saver is not None:  # stored before it is shown: a turn seen is kept
                    saver.add_turn(rec)
                v = rec.get("v2v_ms")
                tag = f"{v:.0f} ms" if v is not None else f"[red]failed[/red]: {rec.get('error')}"
                progress.console.print(f"{Path(rec['file']).name}: {tag}", highlight=False)
                progress.advance(task)

            return await run_bench(
                items, opts, on_record, lambda s: progress.update(task, description=s)
            )

    try:
        result = asyncio.run(main())
    except HalfsecError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}")
        return 2
    meta = dict(result.meta)
    meta["corpus"] = str(corpus.source)
    full_meta = report_json.default_meta("halfsec bench", **meta)
    full_meta["server_url"] = server or (meta["servers"][0]["url"] if meta["servers"] else None)
    report = report_json.build_report(result.records, full_meta, budget)
    print_summary(report)
    c = meta["client"]
    err.print(
        f"bench client overhead: {c['cpu_per_audio_s']} CPU s per audio s, send lateness "
        f"p50 {c['send_late_p50_ms']} ms / p99 {c['send_late_p99_ms']} ms"
    )
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        err.print(f"wrote {json_out}")
    if html_out is not None:
        write_html(report, html_out)
        err.print(f"wrote {html_out}")
    if saver is not None:
        saver.finish(report, result.spans)
    rc = 0
    if fail_over_budget:
        violations = check_budget(report, budget)
        for v in violations:
            err.print(f"[red]over budget:[/red] {v}")
        if violations:
            rc = 1
    if all(not r["ok"] for r in result.records):
        rc = 1
    return rc


def load_command(
    items: list[Any],
    opts: BenchOptions,
    sessions: int | None,
    ramp: str | None,
    load: dict[str, Any],
    json_out: Path | None,
    html_out: Path | None,
) -> int:
    """``halfsec bench --sessions N`` / ``--ramp``: many callers at once (``lab.load``);
    ``load`` holds turns, think, seed, max_sessions, slo_p95_ms and refusals_ok."""
    from halfsec.lab.load.live import LiveLoad
    from halfsec.lab.load.options import LoadOptions, Slo, parse_ramp
    from halfsec.lab.load.report import build_load_report, print_load, write_load
    from halfsec.lab.load.run import run_ramp

    if opts.client_kind != "python" or opts.net_mode != "relay":
        err.print("[red]error:[/red] load runs use the Python client over loopback relays")
        return 2
    if opts.transport not in ("websocket", "webrtc"):
        err.print("[red]error:[/red] load runs take --transport websocket or webrtc")
        return 2
    try:
        steps = [sessions] if sessions is not None and ramp is None else parse_ramp(ramp)
        if sessions is not None and ramp is not None:
            raise HalfsecError("give --sessions N (one step) or --ramp (steps), not both")
        if steps[0] < 1:
            raise HalfsecError(f"--sessions {steps[0]}: at least one caller")
        think = str(load.get("think") or "1:2").split(":")
        lo = float(think[0])
        lopts = LoadOptions(
            turns=int(load.get("turns") or 3),
            think_min_s=lo,
            think_max_s=float(think[1]) if len(think) > 1 else lo,
            seed=int(load.get("seed") or 0),
        )
        slo = Slo(
            p95_ms=float(load.get("slo_p95_ms") or 500.0),
            refusals_break=not load.get("refusals_ok"),
        )
    except (HalfsecError, ValueError) as e:
        err.print(f"[red]error:[/red] {escape(str(e))}")
        return 2
    try:
        with LiveLoad(err) as live:
            result = asyncio.run(
                run_ramp(items, steps, lopts, opts, slo, live, load.get("max_sessions"))
            )
    except HalfsecError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}")
        return 2
    meta = {
        "server_url": result.server.url,
        "started_by_bench": result.server.started_by_bench,
        "health": result.server.health,
        "transport": opts.transport,
        "codec": opts.codec,
        "net": opts.net,
        "ramp": steps,
        "overrides": list(opts.overrides),
        "faults": list(opts.faults),
        "max_sessions": load.get("max_sessions") or max(steps),
    }
    report = build_load_report(
        result.steps, result.turns, result.knee, result.stop_reason, lopts, slo, meta
    )
    print_load(report, err)
    write_load(report, json_out, html_out)
    for out in (json_out, html_out):
        if out is not None:
            err.print(f"wrote {out}")
    return 0 if any(s["ok"] for s in result.steps) else 1

"""Options shared by commands: configuration file, overrides and engine shortcuts."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import typer
from aiohttp.web import AppRunner
from rich.console import Console
from rich.markup import escape

from halfsec.config import HalfsecConfig, load_config
from halfsec.errors import HalfsecError

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
        err.print(f"[red]config error:[/red] {escape(str(e))}")  # "[turn]" is not markup
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


async def stop_signal() -> None:
    """Return at the first SIGINT or SIGTERM: every long-running command (``serve``,
    ``edge``, ``wyoming``) stops the same way, cleaning up in its ``finally``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on every platform
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def run_service(start: Callable[[], Awaitable[AppRunner]], host: str, port: int) -> int:
    """Run an aiohttp service until SIGINT/SIGTERM, then clean up; 2 if it cannot listen.

    ``start`` starts the app, prints where it listens and returns its runner.  Shared by
    ``halfsec serve`` and ``halfsec edge`` so both stop the same way."""

    async def main() -> None:
        runner = await start()
        try:
            await stop_signal()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except OSError as e:
        err.print(
            f"[red]error:[/red] cannot listen on {host}:{port} ({e}); "
            "pick another --port or stop the process using it"
        )
        return 2
    return 0

"""The live view of a load run: sessions active, turns done, the step's p95 so far.

A load step runs for minutes with nothing on screen otherwise; watching p95 climb as
callers pile up is also how one sees a run is pointless before it ends."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from halfsec.lab.load.caller import CallerBoard
from halfsec.lab.load.run import LoadObserver
from halfsec.lab.load.slo import step_stats

__all__ = ["LiveLoad"]


class LiveLoad(LoadObserver):
    """A rich progress bar per step; finished steps stay on screen as one line each.

    Use as a context manager around the run."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task: Any = None
        self.sessions = 0

    def __enter__(self) -> LiveLoad:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def step_started(self, sessions: int, expected_turns: int | None) -> None:
        self.sessions = sessions
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"{sessions} session(s): starting", total=expected_turns)

    def turn_done(
        self, rec: dict[str, Any], board: CallerBoard, step: list[dict[str, Any]]
    ) -> None:
        s = step_stats(self.sessions, step)
        p95 = s["v2v_ms"]["p95"]
        self.progress.update(
            self.task,
            advance=1,
            description=(
                f"{self.sessions} session(s): {board.active} active, p95 "
                f"{'–' if p95 is None else f'{p95:.0f}'} ms, {s['failed']} failed, "
                f"{s['refused']} refused"
            ),
        )

    def step_done(self, step: dict[str, Any]) -> None:
        v = step["v2v_ms"]
        mark = "[green]met[/green]" if step["met_slo"] else "[red]broke[/red]"
        self.progress.console.print(
            f"{step['sessions']:>3} session(s): {step['ok']}/{step['turns']} answered, "
            f"p50 {v['p50']} / p95 {v['p95']} / p99 {v['p99']} ms, {step['failed']} failed, "
            f"{step['refused']} refused: {mark} ({step['why']})",
            highlight=False,
        )

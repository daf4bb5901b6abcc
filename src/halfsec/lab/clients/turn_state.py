"""The client's view of whether the server still owes it something.

Shared by the WebSocket and WebRTC clients so both read the server's events the same
way and give up by the same rule."""

from __future__ import annotations

from typing import Any

from halfsec.lab.clients.client_run import ClientRun
from halfsec.lab.clients.errors import ClientError
from halfsec.lab.clients.options import ClientOptions


class TurnState:
    """Turns the server started, ended, finished (reply done, interrupted or failed)."""

    def __init__(self) -> None:
        self.started: set[int] = set()
        self.ended: set[int] = set()
        self.finished: set[int] = set()  # reply.done, interruption or turn error
        self.interrupted: set[int] = set()

    @property
    def pending(self) -> bool:
        return bool(self.started - self.ended) or bool(self.ended - self.finished)

    def tail_done(self, elapsed_s: float, playing: bool, opt: ClientOptions) -> bool:
        """After the recording: may the client stop sending silence?  Raises
        ``ClientError`` when the server has had its chance and did not answer."""
        if not self.started and elapsed_s >= opt.no_speech_grace_s:
            raise ClientError(
                "server never answered: no speech detected and no reply within "
                f"{opt.no_speech_grace_s:.0f} s after the recording ended"
            )
        if elapsed_s > opt.max_tail_s:
            if self.pending:
                raise ClientError(
                    "server never answered: the reply was not finished "
                    f"{opt.max_tail_s:.0f} s after the recording ended"
                )
            return True
        return bool(self.started) and elapsed_s >= opt.settle_s and not self.pending and not playing

    def apply(self, ev: dict[str, Any], t: int, run: ClientRun) -> bool:
        """Update from one server event received at ``t``; True on ``turn.end`` (the
        caller then sends a fresh trace context for the next turn)."""
        kind, tid = ev["type"], int(ev.get("turn_id", 0) or 0)
        if kind == "vad.speech_started":
            self.started.add(tid)
        elif kind == "turn.end":
            self.ended.add(tid)
            return True
        elif kind == "reply.done":
            self.finished.add(tid)
        elif kind == "interruption":
            self.interrupted.add(tid)
            self.finished.add(tid)
            if run.timeline is not None:
                run.timeline.stop(t)
        elif kind == "error":
            if tid:
                self.finished.add(tid)
                self.ended.add(tid)
            if ev.get("fatal"):
                run.closed_by_server = (
                    f"server reported a fatal error: {ev.get('code')}: {ev.get('message')}"
                )
        return False

"""``EdgeGate``: what of the client's audio the origin must hear, decided frame by frame.

The edge runs the same Silero ``TurnDetector`` the origin runs: nothing is forwarded while
the user is silent; when speech starts, a preroll longer than the origin's own (so its
VAD and STT hear the onset) and then everything; after speech pauses, silence until the
origin itself says ``turn.end`` (the origin still makes every end-of-turn decision; the
edge never invents one), then it stops.  Pure bookkeeping, no I/O, so it can be reasoned
about and tested on its own.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from halfsec import FRAME_MS
from halfsec.edge.options import EdgeOptions
from halfsec.turn.detector import TurnDetector, VadEvent, VadState
from halfsec.turn.options import TurnOptions


@dataclass
class GateOutput:
    """What one 20 ms frame made the gate do."""

    send: list[np.ndarray] = field(default_factory=list)
    """Frames to forward now, in order, as one message."""
    events: list[VadEvent] = field(default_factory=list)
    opened: bool = False
    closed: bool = False


class EdgeGate:
    """Decides, frame by frame, what of the client's audio the origin must hear.

    Pure bookkeeping over ``TurnDetector`` (no I/O), so it can be reasoned about and
    tested on its own.  ``origin_open_turns`` is fed by the origin's own events: the
    gate keeps forwarding silence while the origin has a turn that has not ended."""

    def __init__(self, options: EdgeOptions, turn: TurnOptions | None = None) -> None:
        self.opt = options
        self.detector = TurnDetector(turn or TurnOptions())
        self.preroll: deque[np.ndarray] = deque(maxlen=max(1, int(options.preroll_ms // FRAME_MS)))
        self.open = False
        self.origin_open_turns: set[int] = set()
        self._batch: list[np.ndarray] = []
        self._pause_pos_ms: float | None = None

    def process(self, frame: np.ndarray) -> GateOutput:
        out = GateOutput(events=self.detector.process(frame))
        state = self.detector.state
        if not self.open:
            self.preroll.append(frame)
            if any(e.kind == "start" for e in out.events):
                self.open, out.opened = True, True
                self._pause_pos_ms = None
                out.send = list(self.preroll)
                self.preroll.clear()
            return out
        if state is VadState.SPEECH:
            self._pause_pos_ms = None
            self._batch.append(frame)
            if len(self._batch) * FRAME_MS >= self.opt.speech_batch_ms:
                out.send, self._batch = self._batch, []
            return out
        # Paused (or silence after the origin's turn.end): flush now, frame by frame.
        out.send, self._batch = [*self._batch, frame], []
        if self._pause_pos_ms is None:
            self._pause_pos_ms = self.detector.pos_ms
        tail_ms = self.detector.pos_ms - self._pause_pos_ms
        if tail_ms >= self.opt.max_tail_ms or (
            tail_ms >= self.opt.hold_ms and not self.origin_open_turns
        ):
            # Either the origin has no turn to end (a blip only the edge heard, or its
            # turn already ended), or it never ended one: stop, or a cough would keep
            # the gate open forever.
            self._close(out)
        return out

    def origin_turn_ended(self) -> bool:
        """The origin committed a turn: if the user is not speaking, stop forwarding.

        Returns whether the gate closed.  This is where the silence saving comes from:
        the origin needed exactly the silence it took to decide, and not a frame more
        than the round trip its ``turn.end`` took to come back."""
        if self.open and self.detector.state is not VadState.SPEECH and not self.origin_open_turns:
            self.open = False
            self.detector.end_turn()
            self._batch = []
            return True
        return False

    def _close(self, out: GateOutput) -> None:
        self.open, out.closed = False, True
        self.detector.end_turn()
        self._batch = []

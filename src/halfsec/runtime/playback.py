"""The session's model of the client's playback: is the reply still being heard?

Speech while the reply is heard is a barge-in, speech after it a new turn, so the
session must know when the client plays the reply's last sample.  Only the transport
can know that (a WebSocket client says ``playback.done``; the WebRTC transport adds its
jitter estimate to the last packet's send time), so it reports it (``report``).  Until a
transport has done so once, the model guesses: reply audio plays as soon as it is
produced, back to back.  A pause (``runtime/barge_in.py``) moves the end by its length.
"""

from __future__ import annotations

from halfsec.clock import now_ns
from halfsec.frames import ReplyAudio

PLAYBACK_REPORT_GRACE_NS = 1_000_000_000
"""Once a transport reports playback ends, a reply whose report has not arrived yet is
taken as still playing for at most this long after the guessed end: the report may be on
its way (network, client buffer), but a lost one must not make every later word a
barge-in."""


class PlaybackModel:
    """Guessed and reported ends of the reply's playback on the client."""

    def __init__(self) -> None:
        self.guessed_end_ns = 0
        self.reported: tuple[int, int] | None = None
        """(turn_id, end ns) from the transport, for the reply in flight."""
        self.transport_reports = False
        self.audio_turn: int | None = None
        """The turn whose reply audio was produced last (None: none since a cancel)."""

    def audio(self, frame: ReplyAudio) -> None:
        """Reply audio produced: it plays from now or after what is queued."""
        dur_ns = int(frame.pcm.size * 1e9 / frame.sample_rate)
        self.guessed_end_ns = max(self.guessed_end_ns, frame.t_ns) + dur_ns
        self.audio_turn = frame.turn_id

    def started(self, turn_id: int) -> bool:
        """Has ``turn_id``'s reply produced audio, which the client plays as it arrives?
        Before that there is nothing to stop: a barge-in pause then only holds back the
        reply's first sample (a breath after the user's own turn would delay it)."""
        return self.audio_turn == turn_id

    def report(self, turn_id: int, at_ns: int | None, reply_turn_id: int | None) -> None:
        """The transport says ``turn_id``'s reply ends (ended) playing at ``at_ns``; only
        the reply in flight's report is kept (an older one no longer decides anything)."""
        self.transport_reports = True
        if reply_turn_id == turn_id:
            self.reported = (turn_id, now_ns() if at_ns is None else at_ns)

    def end_ns(self, turn_id: int) -> int:
        reported = self.reported
        if reported is not None and reported[0] == turn_id:
            return reported[1]
        if self.transport_reports:
            return self.guessed_end_ns + PLAYBACK_REPORT_GRACE_NS
        return self.guessed_end_ns

    def delay(self, ns: int) -> None:
        """The reply was paused for ``ns``: it ends that much later."""
        self.guessed_end_ns += ns
        if self.reported is not None:
            self.reported = (self.reported[0], self.reported[1] + ns)

    def reset(self) -> None:
        """The reply was cancelled: nothing is playing."""
        self.guessed_end_ns = 0
        self.reported = None
        self.audio_turn = None

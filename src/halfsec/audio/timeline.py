"""The client's playback timeline: where each reply sample was heard.

Reply audio is placed at the moment it *arrived at the client*, on the input's timeline
(sample 0 = the input's first sample), and played back to back from there, like a
speaker with no extra buffering.  An interruption stops playback at the moment it was
received.  The first audible sample of ``played`` stops the voice-to-voice clock
(``halfsec.measure.v2v``); the timeline itself only places audio and knows no threshold."""

from __future__ import annotations

import numpy as np


class PlaybackTimeline:
    def __init__(self, rate: int, t0_ns: int) -> None:
        self.rate = rate
        self.t0_ns = t0_ns
        self._buf = np.zeros(rate * 10, dtype=np.int16)
        self._len = 0
        self.cursor = 0
        """Next free sample: playback is busy until here."""
        self.chunks: list[tuple[int, int, int, int]] = []
        """(turn_id, first sample, sample count, arrival sample) of each chunk placed."""
        self.held: list[tuple[np.ndarray, int]] | None = None
        """While paused (``pause``): audio not yet heard, (pcm, turn_id), in order."""

    def sample_at(self, t_ns: int) -> int:
        return max(0, round((t_ns - self.t0_ns) * self.rate / 1e9))

    def place(self, pcm: np.ndarray, t_ns: int, turn_id: int) -> int:
        """Play ``pcm`` from its arrival time or when the previous chunk ends; returns start
        (while paused: keeps it for ``resume`` and returns where it would start now)."""
        if self.held is not None:
            self.held.append((pcm, turn_id))
            return self.cursor + sum(p.size for p, _ in self.held) - pcm.size
        arrival = self.sample_at(t_ns)
        start = max(arrival, self.cursor)
        end = start + pcm.size
        if end > self._buf.size:
            grown = np.zeros(max(end, self._buf.size * 2), dtype=np.int16)
            grown[: self._len] = self._buf[: self._len]
            self._buf = grown
        self._buf[start:end] = pcm
        self._len = max(self._len, end)
        self.cursor = end
        self.chunks.append((turn_id, start, pcm.size, arrival))
        return start

    def pause(self, t_ns: int) -> None:
        """Pause playback at ``t_ns`` (``reply.paused``): what was to play after it is
        kept, and so is audio placed until ``resume``."""
        if self.held is not None:
            return
        cut = self.sample_at(t_ns)
        turn_id = self.chunks[-1][0] if self.chunks else 0
        rest = self._buf[cut : self._len].copy() if cut < self._len else None
        self.stop(t_ns)
        self.held = [(rest, turn_id)] if rest is not None else []

    def resume(self, t_ns: int) -> None:
        """Play what ``pause`` kept from ``t_ns`` on (``reply.resumed``)."""
        held, self.held = self.held, None
        for pcm, turn_id in held or []:
            self.place(pcm, t_ns, turn_id)

    def stop(self, t_ns: int) -> None:
        """Stop playback at ``t_ns`` (barge-in): nothing after it is heard."""
        self.held = None
        cut = self.sample_at(t_ns)
        if cut < self._len:
            self._buf[cut : self._len] = 0
            self._len = max(cut, 0)
        self.cursor = min(self.cursor, cut)

    @property
    def playing_until_ns(self) -> int:
        return self.t0_ns + int(self.cursor * 1e9 / self.rate)

    @property
    def played(self) -> np.ndarray:
        """What has been played so far, sample 0 = the input's first sample (a view, no copy)."""
        return self._buf[: self._len]

    def audio(self, min_len: int = 0) -> np.ndarray:
        """A copy of ``played``, zero-padded to at least ``min_len`` samples."""
        n = max(self._len, min_len)
        out = np.zeros(n, dtype=np.int16)
        out[: self._len] = self._buf[: self._len]
        return out

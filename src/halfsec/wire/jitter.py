"""Adaptive jitter buffer for received audio packets (Opus or PCM16 frames).

Why it exists
-------------
Packets leave the sender every 20 ms but arrive with varying delay.  Playing each one
on arrival stutters; buffering a fixed 200 ms wastes most of the half-second budget.
This buffer holds packets just long enough that almost all arrive before they are due:

* **Target delay** = a high quantile (default p98) of each packet's *transit excess*
  (arrival - send time, minus the smallest transit seen in the window) over a sliding
  window, plus a small margin, clamped to ``[min_delay_ms, max_delay_ms]``.  Transit is
  measured from the RTP-style timestamp, so reordering and sender pauses do not fool it.
* **Grows fast**: a packet that arrives later than the current target raises the target
  to its own excess at once, and when the playout catches up with the newest packet
  (underrun) one concealment frame is inserted *without* skipping the missing frame
  ("stretch"), so a late packet still plays instead of being thrown away.
* **Shrinks smoothly**: the target decays at most ``shrink_ms_per_s``; the real delay
  falls only by dropping a frame of *silence* (crossfaded, so no click), or, when it is
  more than two frames too long, any frame, crossfaded.
* **Loss**: a missing frame whose successor is already buffered is rebuilt from the
  successor's Opus in-band FEC; otherwise it is concealed with Opus PLC (or faded
  repetition for PCM).  Duplicates are dropped and counted; packets that arrive after
  their frame was played are dropped as late; playout order is strictly by sequence.

Time is injected: ``push(packet, arrival_ns)`` and ``pop(now_ns)`` take monotonic
nanoseconds, so tests and the lab's packet simulator (``lab.netem.packet_sim``) run
simulated time without sleeping; ``wire.playout`` holds the loops that pop it in real
time, and ``wire.frame_decoders`` the codecs (Opus, PCM16) it plays out.

Delay reported per played frame is the honest one: ``now - arrival`` of the packet that
frame came from (the time the audio sat in this buffer), which the lab shows as the
``jitter_buffer_ms`` stage.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from halfsec import FRAME_MS
from halfsec.audio.levels import frame_rms_dbfs
from halfsec.errors import AudioInputError
from halfsec.measure.percentile import percentile
from halfsec.wire.frame_decoders import FrameDecoder

__all__ = [
    "RTP_CLOCK",
    "SEQ_MOD",
    "TS_MOD",
    "JitterBuffer",
    "JitterConfig",
    "JitterPacket",
    "JitterStats",
]

RTP_CLOCK = 48_000
"""Opus RTP timestamps always count 48 kHz samples (RFC 7587), whatever the audio rate."""
SEQ_MOD = 1 << 16
"""RTP sequence numbers are 16 bits and wrap."""
TS_MOD = 1 << 32
"""RTP timestamps are 32 bits and wrap."""


@dataclass(frozen=True, slots=True)
class JitterPacket:
    """One received packet: RTP-style 16-bit ``seq``, 32-bit ``timestamp`` in units of
    the buffer's ``clock_rate`` (48 kHz for Opus over RTP), and the payload."""

    seq: int
    timestamp: int
    payload: bytes


@dataclass
class JitterConfig:
    """Tuning.  On the lab's ``4g`` profile (30 ms one way, 15 ms jitter standard
    deviation in order, 1 % loss) the defaults conceal under 1 % of frames with a median
    buffer delay near 40 ms: the p98 target sits about two standard deviations above the
    median transit (``benchmarks/jitter_bench.py``)."""

    frame_ms: int = FRAME_MS
    clock_rate: int = RTP_CLOCK
    min_delay_ms: float = 0.0
    max_delay_ms: float = 300.0
    quantile: float = 0.98
    margin_ms: float = 2.0
    window_ms: float = 3000.0
    shrink_ms_per_s: float = 20.0
    silence_dbfs: float = -40.0
    crossfade_ms: float = 2.5
    idle_reset_ms: float = 500.0
    max_packets: int = 500


@dataclass
class JitterStats:
    """Counters since creation (``stats``) or since the last ``turn_summary``."""

    current_delay_ms: float = 0.0
    target_delay_ms: float = 0.0
    received: int = 0
    played: int = 0
    decoded: int = 0
    concealed: int = 0
    stretched: int = 0
    fec_recovered: int = 0
    dropped_for_delay: int = 0
    late_dropped: int = 0
    duplicates: int = 0
    malformed: int = 0
    delays_ms: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        delays = d.pop("delays_ms")
        d["delay_p50_ms"] = percentile(delays, 50)
        d["delay_p95_ms"] = percentile(delays, 95)
        d["concealed_pct"] = 100.0 * self.concealed / self.played if self.played else 0.0
        synthetic = self.concealed + self.stretched
        d["synthetic_pct"] = 100.0 * synthetic / self.played if self.played else 0.0
        return d


class _Unwrapper:
    """Extends wrapping RTP counters to a monotonic integer line."""

    def __init__(self, modulus: int) -> None:
        self._mod = modulus
        self._last: int | None = None

    def __call__(self, value: int) -> int:
        v = value % self._mod
        if self._last is None:
            self._last = v
            return v
        base = self._last - self._last % self._mod
        cands = (base + v - self._mod, base + v, base + v + self._mod)
        ext = min(cands, key=lambda c: abs(c - self._last))  # type: ignore[operator]
        if ext > self._last:
            self._last = ext
        return ext


class JitterBuffer:
    """Adaptive jitter buffer; see the module docstring for the policy.

    ``pop`` returns one int16 frame (``decoder.frame_samples``) or ``None`` when there
    is nothing to play (before the first packet has waited its target delay, and after
    the sender has gone quiet for ``idle_reset_ms``; the next talk spurt then starts
    buffering afresh).
    """

    def __init__(
        self,
        decoder: FrameDecoder,
        config: JitterConfig | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.decoder = decoder
        self.cfg = config or JitterConfig()
        self.clock = clock
        self._frame_ns = self.cfg.frame_ms * 1_000_000
        self._seq = _Unwrapper(SEQ_MOD)
        self._ts = _Unwrapper(TS_MOD)
        self._packets: dict[int, tuple[int, int, bytes]] = {}  # seq -> (ts_ns, arrival, payload)
        self._window: deque[tuple[int, int]] = deque()  # (arrival_ns, transit_ns)
        self._sorted: list[int] = []  # transits in the window, sorted
        self._target_ns = int(self.cfg.min_delay_ms * 1e6)
        self._target_at = 0
        self._next: int | None = None  # next seq to play
        self._next_ts_ns = 0
        self._last_arrival = 0
        self._paused_ns = 0
        """Sum of the sender's silences (DTX gaps): excluded from the window's clock."""
        self._highest: int | None = None
        self._seen_recent: deque[int] = deque(maxlen=4096)
        self._seen: set[int] = set()
        self._last_out: np.ndarray | None = None
        self.stats = JitterStats()
        self._turn = JitterStats()

    # ------------------------------------------------------------------ arrivals
    def push(self, packet: JitterPacket, arrival_ns: int | None = None) -> None:
        """Accept a packet that arrived at ``arrival_ns`` (monotonic; default: now)."""
        now = self.clock() if arrival_ns is None else arrival_ns
        seq = self._seq(packet.seq)
        ts_ns = self._ts(packet.timestamp) * 1_000_000_000 // self.cfg.clock_rate
        for s in (self.stats, self._turn):
            s.received += 1
        if seq in self._seen:
            for s in (self.stats, self._turn):
                s.duplicates += 1
            return
        if len(self._seen_recent) == self._seen_recent.maxlen:
            self._seen.discard(self._seen_recent[0])
        self._seen_recent.append(seq)
        self._seen.add(seq)
        if self._last_arrival and now - self._last_arrival > self.cfg.idle_reset_ms * 1e6:
            # The sender paused (DTX between replies).  A pause says nothing about the
            # link, so it must not age the jitter estimate out of the window: the first
            # reply after a long silence would otherwise play with no margin and be
            # concealed on any jittery link.
            self._paused_ns += now - self._last_arrival - self._frame_ns
        self._last_arrival = now
        self._observe(now - self._paused_ns, now - ts_ns)
        if self._next is not None and seq < self._next:
            for s in (self.stats, self._turn):
                s.late_dropped += 1
            return
        if len(self._packets) >= self.cfg.max_packets:
            # A flood (or a sender far ahead of us) must not grow memory without bound.
            self._packets.pop(min(self._packets))
        self._packets[seq] = (ts_ns, now, bytes(packet.payload))
        if self._highest is None or seq > self._highest:
            self._highest = seq

    def refuse(self) -> None:
        """A packet was refused at the door (``wire.opus.packet_problem``) and never
        buffered: count it with the malformed ones, its frame is concealed as lost."""
        self._count("malformed")

    def _observe(self, now: int, transit: int) -> None:
        """``now``: the link's active clock (wall time minus sender pauses)."""
        win = int(self.cfg.window_ms * 1e6)
        self._window.append((now, transit))
        bisect.insort(self._sorted, transit)
        while self._window and now - self._window[0][0] > win:
            _, old = self._window.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        base = self._sorted[0]
        # Immediate growth: this packet's excess transit is a delay we must cover.
        need = transit - base + int(self.cfg.margin_ms * 1e6)
        if need > self._target_ns:
            self._set_target(need, now)
        else:
            self._decay(now)

    def _desired_ns(self) -> int:
        s = self._sorted
        if not s:
            return int(self.cfg.min_delay_ms * 1e6)
        q = s[min(len(s) - 1, int(self.cfg.quantile * len(s)))]
        return q - s[0] + int(self.cfg.margin_ms * 1e6)

    def _set_target(self, value: int, now: int) -> None:
        lo, hi = int(self.cfg.min_delay_ms * 1e6), int(self.cfg.max_delay_ms * 1e6)
        self._target_ns = max(lo, min(hi, value))
        self._target_at = now

    def _decay(self, now: int) -> None:
        desired = self._desired_ns()
        if desired >= self._target_ns:
            self._set_target(desired, now)
            return
        step = int(self.cfg.shrink_ms_per_s * (now - self._target_at) / 1e3)
        if step > 0:
            self._set_target(max(desired, self._target_ns - step), now)

    # ------------------------------------------------------------------ playout
    @property
    def buffered(self) -> int:
        """Packets waiting to be played."""
        return len(self._packets)

    @property
    def target_delay_ms(self) -> float:
        return self._target_ns / 1e6

    def _current_ns(self, now: int) -> int:
        """How far behind the earliest possible playout of the next frame we are."""
        base = self._sorted[0] if self._sorted else 0
        return now - (self._next_ts_ns + base)

    def next_due_ns(self) -> int | None:
        """When the next frame is due (monotonic ns), or ``None`` with nothing buffered.

        Due = the frame's send time (its timestamp) + the smallest transit in the window
        + the target delay: the moment the buffer has held it exactly as long as the
        target.  A real-time caller that pops at this time, rather than on a fixed 20 ms
        grid started at some first packet, hands each frame on as soon as it may: a fixed
        grid's arbitrary phase costs 0-20 ms per frame (10 on average), and when its
        phase happens to sit just before the packets arrive, every jitter blip is an
        underrun.  While packet ``n`` is missing the due time is in the past (the
        caller conceals at its own real-time pace; see ``wire.playout.play_when_due``).
        A packet whose timestamp jumped ahead of the expected one (the sender paused:
        RTP silence is a timestamp jump) is due at its own timestamp, not early."""
        base = self._sorted[0] if self._sorted else 0
        if self._next is None:
            if not self._packets:
                return None
            ts = self._packets[min(self._packets)][0]
        else:
            ts = self._next_ts_ns
            pkt = self._packets.get(self._next)
            if pkt is not None and pkt[0] > ts:
                ts = pkt[0]
        return ts + base + self._target_ns

    def pop(self, now_ns: int | None = None) -> np.ndarray | None:
        """The frame to play now (call every ``frame_ms``, or at ``next_due_ns``), or
        ``None``."""
        now = self.clock() if now_ns is None else now_ns
        self._decay(now - self._paused_ns)
        if self._next is None:
            if not self._packets:
                return None
            first = min(self._packets)
            self._next = first
            self._next_ts_ns = self._packets[first][0]
            if self._current_ns(now) < self._target_ns:
                self._next = None
                return None
        elif not self._packets and now - self._last_arrival > self.cfg.idle_reset_ms * 1e6:
            self._next = None  # the talker went quiet; start the next spurt afresh
            return None
        pkt = self._packets.get(self._next)
        if pkt is not None and pkt[0] > self._next_ts_ns:
            # The sender skipped time (silence as a timestamp jump): measure our delay
            # against this packet's own send time, or it would look a pause too late.
            self._next_ts_ns = pkt[0]
        cur = self._current_ns(now)
        for s in (self.stats, self._turn):
            s.current_delay_ms = cur / 1e6
            s.target_delay_ms = self._target_ns / 1e6
        out = self._play(now, cur)
        self._last_out = out
        for s in (self.stats, self._turn):
            s.played += 1
        return out

    def _advance(self) -> None:
        assert self._next is not None
        self._next += 1
        self._next_ts_ns += self._frame_ns

    def _count(self, name: str, delay_ms: float | None = None) -> None:
        for s in (self.stats, self._turn):
            setattr(s, name, getattr(s, name) + 1)
            if delay_ms is not None:
                s.delays_ms.append(delay_ms)

    def _decode(self, seq: int) -> np.ndarray | None:
        _, _, payload = self._packets.pop(seq)
        try:
            return self.decoder.decode(payload)
        except AudioInputError:
            self._count("malformed")
            return None

    def _play(self, now: int, cur: int) -> np.ndarray:
        n = self._next
        assert n is not None
        later = (
            self._highest is not None and self._highest > n and any(s > n for s in self._packets)
        )
        if n in self._packets:
            # Too far below target (the target just grew): stretch before playing n.
            if cur + self._frame_ns <= self._target_ns:
                self._count("stretched")
                return self.decoder.conceal()
            ts_ns, arrival, _ = self._packets[n]
            self._next_ts_ns = ts_ns
            pcm = self._decode(n)
            delay_ms = (now - arrival) / 1e6
            self._advance()
            if pcm is None:
                self._count("concealed")
                return self.decoder.conceal()
            self._count("decoded", delay_ms)
            surplus = cur - self._frame_ns - self._target_ns
            silent = frame_rms_dbfs(pcm) < self.cfg.silence_dbfs
            if surplus >= 0 and (silent or surplus >= 2 * self._frame_ns):
                nxt = self._next
                if nxt in self._packets:
                    pcm2 = self._decode(nxt)
                    self._advance()
                    if pcm2 is not None:
                        self._count("dropped_for_delay")
                        return self._crossfade(pcm, pcm2)
                    self._count("concealed")
                    return pcm
            return pcm
        # n is missing.
        if n + 1 in self._packets:
            try:
                rec = self.decoder.decode_fec(self._packets[n + 1][2])
            except AudioInputError:
                # A malformed successor carries no FEC: conceal n and move on (it is
                # counted when its own turn comes).  Raising here left ``_next`` on n,
                # so every later pop concealed the same frame until the flood guard
                # evicted the bad packet, 500 packets (10 s) later.
                rec = None
            self._advance()
            if rec is not None:
                self._count("fec_recovered")
                return rec
            self._count("concealed")
            return self.decoder.conceal()
        if later:
            self._advance()
            self._count("concealed")
            return self.decoder.conceal()
        # Underrun: nothing newer is here yet.  Conceal *without* skipping n, so if n is
        # merely late it still plays, and if it is lost its successor's FEC can rebuild it.
        # However long this lasts (until ``idle_reset_ms``): with DTX the sender sends
        # nothing while it has nothing to say (a TTS underrun mid-reply), and its next
        # packet carries the next sequence number with a timestamp jump.  Skipping n
        # after some delay bound would drop that packet, and the rest of the reply, as
        # "late" (seen: a reply cut after its first sentence on a slow machine).
        self._count("stretched")
        return self.decoder.conceal()

    def _crossfade(self, dropped: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """Play ``nxt`` in place of ``dropped``; its first few ms fade in from ``dropped``
        (which continues the waveform already played), so the splice does not click."""
        k = min(int(self.cfg.crossfade_ms * nxt.size / self.cfg.frame_ms), nxt.size, dropped.size)
        out = nxt.astype(np.float32)
        if k > 0:
            w = np.linspace(0.0, 1.0, k, dtype=np.float32)
            out[:k] = (1.0 - w) * dropped[:k].astype(np.float32) + w * out[:k]
        return np.clip(out, -32768, 32767).astype(np.int16)

    # ------------------------------------------------------------------ reporting
    def turn_summary(self) -> dict[str, Any]:
        """Stats since the previous call (one user turn), with buffer delay p50/p95 of
        the frames played; the lab shows ``delay_p50_ms`` as ``jitter_buffer_ms``."""
        d = self._turn.summary()
        d["jitter_buffer_ms"] = d["delay_p50_ms"]
        self._turn = JitterStats(
            current_delay_ms=self._turn.current_delay_ms,
            target_delay_ms=self._turn.target_delay_ms,
        )
        return d

"""What the bench client itself costs, to show it does not perturb the server it measures."""

from __future__ import annotations

from collections.abc import Sequence

from halfsec.measure.percentile import percentile

__all__ = ["client_overhead"]


def client_overhead(
    cpu_s: float, audio_s: float, late_ms: Sequence[float]
) -> dict[str, float | None]:
    """``cpu_per_audio_s`` is client CPU seconds per second of audio streamed (a real-time
    client at 0.02 uses 2% of one core); ``send_late_*`` is how far after its due time
    each 20 ms frame left (pacing jitter the server sees as network jitter)."""
    return {
        "cpu_s": round(cpu_s, 3),
        "audio_s": round(audio_s, 3),
        "cpu_per_audio_s": round(cpu_s / audio_s, 4) if audio_s > 0 else None,
        "send_late_p50_ms": _r(percentile(late_ms, 50)),
        "send_late_p99_ms": _r(percentile(late_ms, 99)),
        "send_late_max_ms": _r(max(late_ms) if late_ms else None),
        "frames": float(len(late_ms)),
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)

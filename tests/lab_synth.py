"""Synthetic turn records for lab tests: stages that add up to v2v, like the bench's."""

from __future__ import annotations

from typing import Any

import numpy as np

STAGES = ("endpointing", "stt", "logic", "tts", "server_send", "network_buffer")


def synthetic_turns(
    n: int = 60,
    *,
    seed: int = 1,
    logic_shift_ms: float = 0.0,
    failed: int = 0,
) -> list[dict[str, Any]]:
    """``n`` turns whose stages telescope into ``v2v_ms``; ``failed`` extra failing turns."""
    rng = np.random.default_rng(seed)
    turns: list[dict[str, Any]] = []
    for i in range(n):
        st = {
            "endpointing_ms": float(rng.normal(205, 12)),
            "stt_ms": float(rng.gamma(4, 12)),
            "logic_ms": float(rng.gamma(3, 25)) + logic_shift_ms,
            "tts_ms": float(rng.gamma(5, 9)),
            "server_send_ms": float(rng.uniform(0.5, 3)),
            "network_buffer_ms": float(rng.uniform(15, 45)),
        }
        v2v = sum(st.values())
        dom = max(st, key=lambda k: st[k])[:-3]
        turns.append(
            {
                "file": f"corpus/order_{i:03d}.wav",
                "ok": True,
                "error": None,
                "transcript": "i would like a large latte"
                if i % 5
                else "i would like a large late",
                "ref_transcript": "I would like a large latte",
                "intent": "order" if i % 7 else "greet",
                "slots": {"drink": "latte", "size": "large"},
                "ref_intent": "order",
                "ref_slots": "drink=latte;size=large",
                "reply_text": "One large latte, coming up.",
                "v2v_ms": v2v,
                "stages": st,
                "dominant_stage": dom,
                "trace_id": f"{i + 1:032x}",
                "clock_offset_ms": 0.0,
                "clock_uncertainty_ms": 0.2,
                "interruptions": 0,
                "premature_replies": 0,
                "server_events": [],
            }
        )
    for j in range(failed):
        turns.append(
            {
                "file": f"corpus/broken_{j}.wav",
                "ok": False,
                "error": "timeout: no reply audio within 10 s",
                "transcript": "",
                "ref_transcript": "two espressos please",
                "intent": None,
                "slots": {},
                "ref_intent": "order",
                "ref_slots": "drink=espresso;quantity=2",
                "reply_text": "",
                "v2v_ms": None,
                "stages": {},
                "dominant_stage": None,
                "trace_id": None,
                "clock_offset_ms": 0.0,
                "clock_uncertainty_ms": 0.2,
                "interruptions": 0,
                "premature_replies": 0,
                "server_events": [],
            }
        )
    return turns

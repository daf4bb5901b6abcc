"""Writes the OTLP-JSON fixtures for the import tests (run by hand; output is committed).

The span names and attributes follow Pipecat's and LiveKit Agents' documented tracing
(Pipecat: ``conversation`` > ``turn`` > ``stt``/``llm``/``tts`` with ``metrics.ttfb`` in
seconds; LiveKit: ``agent_session`` > ``user_turn`` > ``eou_wait`` > ``eou_detection``,
``agent_turn`` > ``llm_node`` > ``llm_request``, ``tts_node`` > ``tts_request``,
``agent_speaking``).  Times are chosen so the expected stages are round numbers.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

T0 = 1_717_171_717_000_000_000  # epoch ns
_ids = itertools.count(1)


def sid() -> str:
    return f"{next(_ids):016x}"


def attrs(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for k, v in d.items():
        if isinstance(v, bool):
            val: dict[str, Any] = {"boolValue": v}
        elif isinstance(v, int):
            val = {"intValue": str(v)}
        elif isinstance(v, float):
            val = {"doubleValue": v}
        else:
            val = {"stringValue": str(v)}
        out.append({"key": k, "value": val})
    return out


def span(
    trace: str, parent: str, name: str, t0_ms: float, t1_ms: float, a: dict[str, Any], kind: int = 1
) -> dict[str, Any]:
    return {
        "traceId": trace,
        "spanId": sid(),
        "parentSpanId": parent,
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(T0 + int(t0_ms * 1e6)),
        "endTimeUnixNano": str(T0 + int(t1_ms * 1e6)),
        "attributes": attrs(a),
        "status": {},
    }


def doc(service: str, scope: str, spans: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": attrs(
                        {"service.name": service, "telemetry.sdk.language": "python"}
                    )
                },
                "scopeSpans": [{"scope": {"name": scope}, "spans": spans}],
            }
        ]
    }


def pipecat() -> dict[str, Any]:
    tr = "4bf92f3577b34da6a3ce929d0e0e4736"
    conv = span(
        tr,
        "",
        "conversation",
        0,
        30_000,
        {"conversation.id": "c-123", "conversation.type": "voice"},
    )
    spans = [conv]
    # (turn start, speech end(VAD stop), stt ttfb, llm start gap, llm ttfb, tts start gap, tts ttfb)
    turns = [
        (
            1_000,
            3_000,
            180.0,
            20.0,
            410.0,
            150.0,
            120.0,
            "I'd like a large latte",
            "One large latte.",
        ),
        (9_000, 11_500, 220.0, 15.0, 380.0, 90.0, 140.0, "make it oat milk", "Oat milk it is."),
    ]
    for n, (ts, vad_stop, stt_ttfb, gap1, llm_ttfb, gap2, tts_ttfb, heard, said) in enumerate(
        turns, 1
    ):
        t = span(
            tr,
            conv["spanId"],
            "turn",
            ts,
            ts + 6_000,
            {
                "turn.number": n,
                "turn.type": "conversation",
                "conversation.id": "c-123",
                "turn.was_interrupted": False,
            },
        )
        stt_end = vad_stop + stt_ttfb
        llm0 = stt_end + gap1
        tok = llm0 + llm_ttfb
        tts0 = tok + gap2
        spans += [
            t,
            span(
                tr,
                t["spanId"],
                "stt",
                stt_end - 5,
                stt_end,
                {
                    "gen_ai.system": "deepgram",
                    "gen_ai.request.model": "nova-3",
                    "transcript": heard,
                    "is_final": True,
                    "language": "en-US",
                    "vad_enabled": True,
                    "metrics.ttfb": stt_ttfb / 1000,
                },
            ),
            span(
                tr,
                t["spanId"],
                "llm",
                llm0,
                llm0 + 900,
                {
                    "gen_ai.system": "openai",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.operation.name": "chat",
                    "stream": True,
                    "output": said,
                    "gen_ai.usage.input_tokens": 312,
                    "gen_ai.usage.output_tokens": 9,
                    "metrics.ttfb": llm_ttfb / 1000,
                },
            ),
            span(
                tr,
                t["spanId"],
                "tts",
                tts0,
                tts0 + 700,
                {
                    "gen_ai.system": "cartesia",
                    "gen_ai.request.model": "sonic-2",
                    "voice_id": "a0e99841",
                    "text": said,
                    "metrics.character_count": len(said),
                    "metrics.ttfb": tts_ttfb / 1000,
                },
            ),
        ]
    # Turn 3: the user barged in before any reply audio: no tts span.
    t = span(
        tr,
        conv["spanId"],
        "turn",
        17_000,
        19_000,
        {
            "turn.number": 3,
            "turn.type": "conversation",
            "conversation.id": "c-123",
            "turn.was_interrupted": True,
        },
    )
    spans += [
        t,
        span(
            tr,
            t["spanId"],
            "stt",
            18_195,
            18_200,
            {
                "gen_ai.system": "deepgram",
                "gen_ai.request.model": "nova-3",
                "transcript": "actually wait",
                "is_final": True,
                "metrics.ttfb": 0.2,
            },
        ),
        span(
            tr,
            t["spanId"],
            "llm",
            18_210,
            18_500,
            {
                "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "metrics.ttfb": 0.35,
            },
        ),
    ]
    return doc("pipecat-voice-bot", "pipecat", spans)


def livekit() -> dict[str, Any]:
    tr = "0af7651916cd43dd8448eb211c80319c"
    job = span(
        tr, "", "job_entrypoint", 0, 40_000, {"lk.job_id": "AJ_abc", "lk.room_name": "room-1"}
    )
    sess = span(tr, job["spanId"], "agent_session", 100, 39_900, {"lk.session_id": "s-1"})
    spans = [job, sess]
    # (user speech start, last speech, eou wait, handoff, ttft, tts, with ttft attribute?)
    turns = [
        (
            2_000,
            4_000,
            500.0,
            30.0,
            350.0,
            180.0,
            True,
            "what time do you close",
            "We close at nine.",
        ),
        (
            12_000,
            13_200,
            640.0,
            25.0,
            420.0,
            210.0,
            False,
            "and on sundays",
            "Sundays we close at six.",
        ),
    ]
    for s0, last, eou, handoff, ttft, tts, with_attr, heard, said in turns:
        ut = span(
            tr,
            sess["spanId"],
            "user_turn",
            s0,
            last + eou,
            {"lk.user_transcript": heard, "lk.transcript_confidence": 0.93},
        )
        w = span(tr, ut["spanId"], "eou_wait", last, last + eou, {"lk.eou.outcome": "end_of_turn"})
        det = span(
            tr,
            w["spanId"],
            "eou_detection",
            last + 40,
            last + 70,
            {
                "lk.eou.probability": 0.91,
                "lk.eou.endpointing_delay": eou / 1000,
                "lk.eou.language": "en",
            },
        )
        a0 = last + eou
        at = span(
            tr,
            sess["spanId"],
            "agent_turn",
            a0,
            a0 + 3_000,
            {"lk.response.text": said, "lk.generation_id": "g-1"},
        )
        ln0 = a0 + handoff
        ln = span(tr, at["spanId"], "llm_node", ln0, ln0 + 1_200, {})
        req_attrs: dict[str, Any] = {
            "gen_ai.request.model": "gpt-4.1-mini",
            "gen_ai.provider.name": "openai",
            "gen_ai.usage.input_tokens": 420,
        }
        if with_attr:
            req_attrs["lk.response.ttft"] = ttft / 1000
        req = span(tr, ln["spanId"], "llm_request", ln0, ln0 + 1_150, req_attrs)
        tok = ln0 + ttft
        tn = span(tr, at["spanId"], "tts_node", tok, tok + 1_500, {})
        treq = span(
            tr,
            tn["spanId"],
            "tts_request",
            tok + 2,
            tok + 1_400,
            {"gen_ai.request.model": "sonic-2", "lk.tts.provider": "cartesia"},
        )
        spk = span(tr, sess["spanId"], "agent_speaking", tok + tts, tok + tts + 1_800, {})
        spans += [ut, w, det, at, ln, req, tn, treq, spk]
    return doc("livekit-agents", "livekit-agents", spans)


if __name__ == "__main__":
    here = Path(__file__).parent
    (here / "pipecat_trace.otlp.json").write_text(json.dumps(pipecat(), indent=1) + "\n")
    (here / "livekit_trace.otlp.json").write_text(json.dumps(livekit(), indent=1) + "\n")

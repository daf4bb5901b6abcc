"""Import another framework's OpenTelemetry trace as turn records.

Why: "our p95 is 480 ms" means little until the same budget view is applied to the
pipeline you are comparing against.  Pipecat and LiveKit Agents both export OTLP spans per
turn; this module maps their spans onto halfsec's stages so ``build_report`` and the
budget check work unchanged.

The mapping is honest about what a server-side trace can see.  Neither framework's
spans contain the client's playout, so imported turns have no ``server_send`` /
``network_buffer`` stages and their ``v2v_ms`` is measured *at the agent*, from the
earliest instant the trace shows after the user stopped speaking to the first reply
audio leaving the agent; the report's ``meta.source`` says so.  Per framework:

Pipecat (``turn`` spans with ``stt``/``llm``/``tts`` service spans, ``metrics.ttfb`` in s):
  anchor = end of the final ``stt`` span minus its TTFB (the VAD's "user stopped speaking";
  Pipecat's VAD stop delay happens *before* it and is not in the trace, so endpointing is
  unknown); stt = STT TTFB; logic = stt end -> llm start + llm TTFB; tts = first LLM
  token -> tts start + tts TTFB.

LiveKit Agents (``user_turn``/``eou_wait``/``agent_turn``/``llm_node``/``tts_node``/
``agent_speaking``):
  anchor = ``eou_wait`` start (the user's last speech); endpointing = ``eou_wait``;
  stt = decision -> ``llm_node`` start (final transcript hand-off); logic = ``llm_node``
  start -> first token (TTFT attribute, else ``tts_node`` start); tts = first token ->
  ``agent_speaking`` start (else tts start + TTFB).

halfsec's own traces (``client.turn`` spans) carry the turn record's stages as
attributes and are imported as they are.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halfsec.errors import HalfsecError
from halfsec.trace import names
from halfsec.trace.jsonl import attrs_from_otlp

__all__ = ["SpanRec", "detect_framework", "import_trace", "load_spans"]


@dataclass
class SpanRec:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    start_ns: int
    end_ns: int
    attrs: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, int]] = field(default_factory=list)
    service: str = ""

    @property
    def start_ms(self) -> float:
        return self.start_ns / 1e6

    @property
    def end_ms(self) -> float:
        return self.end_ns / 1e6


def _hex(v: Any) -> str:
    return str(v or "").lower()


def _span(d: Mapping[str, Any], service: str) -> SpanRec:
    return SpanRec(
        trace_id=_hex(d.get("traceId")),
        span_id=_hex(d.get("spanId")),
        parent_id=_hex(d.get("parentSpanId")),
        name=str(d.get("name", "")),
        start_ns=int(d.get("startTimeUnixNano") or 0),
        end_ns=int(d.get("endTimeUnixNano") or 0),
        attrs=attrs_from_otlp(d.get("attributes")),
        events=[
            (str(e.get("name")), int(e.get("timeUnixNano") or 0)) for e in d.get("events") or []
        ],
        service=service,
    )


def _from_doc(doc: Mapping[str, Any]) -> list[SpanRec]:
    out: list[SpanRec] = []
    if "resourceSpans" in doc:
        for rs in doc.get("resourceSpans") or []:
            res = attrs_from_otlp((rs.get("resource") or {}).get("attributes"))
            service = str(res.get("service.name", ""))
            for ss in rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []:
                for s in ss.get("spans") or []:
                    out.append(_span(s, service))
    elif "spanId" in doc:  # one span per line (halfsec's JSON-lines exporter)
        res = attrs_from_otlp((doc.get("resource") or {}).get("attributes"))
        out.append(_span(doc, str(res.get("service.name", ""))))
    return out


def load_spans(path: Path | str) -> list[SpanRec]:
    """Spans from an OTLP-JSON file (one export request, or one request/span per line)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise HalfsecError(f"trace file not found: {p}") from e
    spans: list[SpanRec] = []
    try:
        spans = _from_doc(json.loads(text))
    except json.JSONDecodeError:
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    spans.extend(_from_doc(json.loads(line)))
                except json.JSONDecodeError as e:
                    raise HalfsecError(f"{p}:{n}: not JSON: {e}") from e
    if not spans:
        raise HalfsecError(f"{p}: no spans found (expected OTLP JSON with resourceSpans)")
    return sorted(spans, key=lambda s: s.start_ns)


def detect_framework(spans: Iterable[SpanRec]) -> str:
    seen = {s.name for s in spans}
    if seen & {names.SPAN_CLIENT_TURN, names.SPAN_SERVER_TURN}:
        return "halfsec"
    if seen & {
        names.LIVEKIT_USER_TURN,
        names.LIVEKIT_AGENT_TURN,
        names.LIVEKIT_EOU_WAIT,
        names.LIVEKIT_AGENT_SESSION,
    }:
        return "livekit"
    if names.PIPECAT_TURN in seen and any(_service_kind(n) for n in seen):
        return "pipecat"
    raise HalfsecError(
        "unrecognised trace: expected Pipecat (turn/stt/llm/tts), LiveKit Agents "
        f"(user_turn/agent_turn/...) or halfsec spans; saw {sorted(seen)[:12]}"
    )


def _service_kind(name: str) -> str | None:
    """Pipecat names service spans ``stt``/``llm``/``tts`` (older releases:
    ``stt_<service>``)."""
    for k in names.PIPECAT_SERVICE_KINDS:
        if name == k or name.startswith(k + "_"):
            return k
    return None


def _first(attrs: Mapping[str, Any], *keys: str) -> Any:
    for k in keys:
        if k in attrs and attrs[k] not in (None, ""):
            return attrs[k]
    return None


def _descendants(root: SpanRec, by_parent: Mapping[str, list[SpanRec]]) -> list[SpanRec]:
    out: list[SpanRec] = []
    stack = list(by_parent.get(root.span_id, []))
    while stack:
        s = stack.pop()
        out.append(s)
        stack.extend(by_parent.get(s.span_id, []))
    return sorted(out, key=lambda s: s.start_ns)


def _by_parent(spans: list[SpanRec]) -> dict[str, list[SpanRec]]:
    d: dict[str, list[SpanRec]] = {}
    for s in spans:
        d.setdefault(s.parent_id, []).append(s)
    return d


def _record(file: str, **kw: Any) -> dict[str, Any]:
    stages = {k: v for k, v in (kw.pop("stages", None) or {}).items()}
    measured = {k: v for k, v in stages.items() if v is not None}
    dom = max(measured, key=lambda k: measured[k])[:-3] if measured else None
    rec: dict[str, Any] = {
        "file": file,
        "ok": True,
        "error": None,
        "transcript": None,
        "ref_transcript": None,
        "intent": None,
        "slots": {},
        "ref_intent": None,
        "ref_slots": None,
        "reply_text": None,
        "v2v_ms": round(sum(measured.values()), 3) if measured else None,
        "stages": {k: round(v, 3) for k, v in measured.items()},
        "dominant_stage": dom,
        "trace_id": None,
        "clock_offset_ms": None,
        "clock_uncertainty_ms": None,
        "interruptions": 0,
        "premature_replies": 0,
        "server_events": [],
    }
    rec.update(kw)
    if rec["v2v_ms"] is None and rec["ok"]:
        rec["ok"] = False
        rec["error"] = rec.get("error") or "trace has no reply for this turn"
    return rec


def _ttfb_ms(s: SpanRec) -> float | None:
    v = _first(s.attrs, "metrics.ttfb", "ttfb", "lk.ttfb")
    return None if v is None else float(v) * 1000.0


def _service_after(spans: list[SpanRec], kind: str, not_before_ns: int) -> SpanRec | None:
    """The first ``kind`` service span starting at or after ``not_before_ns``: a Pipecat
    turn's llm call follows its final transcript, and its tts follows the llm call."""
    return next(
        (s for s in spans if _service_kind(s.name) == kind and s.start_ns >= not_before_ns), None
    )


def _pipecat(spans: list[SpanRec], label: str) -> list[dict[str, Any]]:
    by_parent = _by_parent(spans)
    turns = [s for s in spans if s.name == names.PIPECAT_TURN]
    out: list[dict[str, Any]] = []
    for n, turn in enumerate(turns):
        kids = _descendants(turn, by_parent)
        stt = [s for s in kids if _service_kind(s.name) == "stt"]
        finals = [s for s in stt if s.attrs.get("is_final") in (True, "true", "True")] or stt
        num = turn.attrs.get("turn.number", n + 1)
        common: dict[str, Any] = {
            "trace_id": turn.trace_id,
            "interruptions": int(bool(turn.attrs.get("turn.was_interrupted"))),
        }
        name = f"{label}#turn-{num}"
        if not finals:
            out.append(_record(name, ok=False, error="no stt span in turn", **common))
            continue
        st = finals[-1]
        stt_ms = _ttfb_ms(st) or 0.0
        anchor = st.end_ms - stt_ms
        llm = _service_after(kids, "llm", st.start_ns)
        if llm is None:
            out.append(_record(name, ok=False, error="no llm span after the transcript", **common))
            continue
        first_token = llm.start_ms + (_ttfb_ms(llm) or 0.0)
        tts = _service_after(kids, "tts", llm.start_ns)
        if tts is None:
            out.append(_record(name, ok=False, error="no tts span after the llm", **common))
            continue
        first_audio = tts.start_ms + (_ttfb_ms(tts) or 0.0)
        stages = {
            "stt_ms": st.end_ms - anchor,
            "logic_ms": max(0.0, first_token - st.end_ms),
            "tts_ms": max(0.0, first_audio - first_token),
        }
        out.append(
            _record(
                name,
                stages=stages,
                transcript=_first(st.attrs, "transcript"),
                reply_text=_first(llm.attrs, "output"),
                **common,
            )
        )
    return out


def _livekit(spans: list[SpanRec], label: str) -> list[dict[str, Any]]:
    by_parent = _by_parent(spans)
    waits = [s for s in spans if s.name == names.LIVEKIT_EOU_WAIT]
    agent_turns = [s for s in spans if s.name == names.LIVEKIT_AGENT_TURN]
    speaking = [s for s in spans if s.name == names.LIVEKIT_AGENT_SPEAKING]
    user_turns = [s for s in spans if s.name == names.LIVEKIT_USER_TURN]
    out: list[dict[str, Any]] = []
    for n, w in enumerate(waits):
        nxt = waits[n + 1].start_ns if n + 1 < len(waits) else None
        at = next(
            (
                a
                for a in agent_turns
                if a.start_ns >= w.start_ns and (nxt is None or a.start_ns < nxt)
            ),
            None,
        )
        ut = next((u for u in user_turns if u.start_ns <= w.start_ns <= u.end_ns), None)
        ut_attrs = ut.attrs if ut is not None else {}
        transcript = _first(
            ut_attrs, "lk.user_transcript", "lk.pii.user_transcript", "user_transcript"
        )
        name = f"{label}#turn-{n + 1}"
        common: dict[str, Any] = {"trace_id": w.trace_id, "transcript": transcript}
        if at is None:
            out.append(
                _record(name, ok=False, error="no agent_turn after the end of turn", **common)
            )
            continue
        kids = _descendants(at, by_parent)
        llm_node = next((s for s in kids if s.name == names.LIVEKIT_LLM_NODE), None)
        tts_node = next((s for s in kids if s.name == names.LIVEKIT_TTS_NODE), None)
        llm_req = next((s for s in kids if s.name == names.LIVEKIT_LLM_REQUEST), None)
        tts_req = next((s for s in kids if s.name == names.LIVEKIT_TTS_REQUEST), None)
        if llm_node is None:
            out.append(_record(name, ok=False, error="no llm_node in agent_turn", **common))
            continue
        ttft = None
        if llm_req is not None:
            v = _first(llm_req.attrs, "lk.response.ttft", "lk.llm.ttft", "gen_ai.response.ttft")
            if v is not None:
                ttft = llm_req.start_ms + float(v) * 1000.0
        if ttft is None and tts_node is not None:
            ttft = tts_node.start_ms
        if ttft is None:
            out.append(_record(name, ok=False, error="no first token in agent_turn", **common))
            continue
        spk = next(
            (
                s
                for s in [*kids, *speaking]
                if s.name == names.LIVEKIT_AGENT_SPEAKING and s.start_ns >= at.start_ns
            ),
            None,
        )
        if spk is not None:
            first_audio = spk.start_ms
        elif tts_req is not None and _ttfb_ms(tts_req) is not None:
            first_audio = tts_req.start_ms + (_ttfb_ms(tts_req) or 0.0)
        else:
            out.append(_record(name, ok=False, error="no reply audio in agent_turn", **common))
            continue
        stages = {
            "endpointing_ms": w.end_ms - w.start_ms,
            "stt_ms": max(0.0, llm_node.start_ms - w.end_ms),
            "logic_ms": max(0.0, ttft - llm_node.start_ms),
            "tts_ms": max(0.0, first_audio - ttft),
        }
        out.append(
            _record(
                name,
                stages=stages,
                reply_text=_first(at.attrs, "lk.response.text", "lk.pii.response.text"),
                interruptions=int(bool(_first(at.attrs, "lk.interrupted"))),
                **common,
            )
        )
    return out


def _halfsec(spans: list[SpanRec], label: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n, s in enumerate(s for s in spans if s.name == names.SPAN_CLIENT_TURN):
        prefix = names.ATTR_STAGE_PREFIX
        stages = {k[len(prefix) :]: float(v) for k, v in s.attrs.items() if k.startswith(prefix)}
        rec = _record(
            str(s.attrs.get(names.ATTR_FILE) or f"{label}#turn-{n + 1}"),
            stages=stages,
            trace_id=s.trace_id,
        )
        if s.attrs.get(names.ATTR_V2V_MS) is not None:
            rec["v2v_ms"] = float(s.attrs[names.ATTR_V2V_MS])
            rec["ok"], rec["error"] = True, None
        out.append(rec)
    return out


_SOURCES = {
    "pipecat": "Pipecat trace: v2v at the agent, VAD stop -> first TTS byte; endpointing and network not in trace",
    "livekit": "LiveKit Agents trace: v2v at the agent, last user speech -> agent speaking; network not in trace",
    "halfsec": "halfsec trace: v2v at the client",
}


def import_trace(path: Path | str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Turn records and report ``meta`` extras (``framework``, ``source``, ``trace_file``)."""
    spans = load_spans(path)
    fw = detect_framework(spans)
    label = Path(path).name
    records = {"pipecat": _pipecat, "livekit": _livekit, "halfsec": _halfsec}[fw](spans, label)
    if not records:
        raise HalfsecError(f"{path}: recognised a {fw} trace but found no turns in it")
    return records, {"framework": fw, "source": _SOURCES[fw], "trace_file": str(path)}

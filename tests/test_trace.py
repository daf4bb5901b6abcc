"""Tracing: W3C context, clock anchor, and OTLP/HTTP export to a real receiver."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from otlp_receiver import OTLPReceiver

from halfsec.clock import now_ns
from halfsec.frames import (
    EndOfTurn,
    ErrorFrame,
    FinalTranscript,
    Frame,
    IntentFrame,
    ReplyAudio,
    ReplyDone,
    ReplyText,
    SpeechPaused,
    SpeechStarted,
    TimingMark,
)
from halfsec.lab.report.import_trace import import_trace
from halfsec.trace import (
    ClientTurnSpan,
    ClockAnchor,
    configure_tracing,
    emit_server_turn_spans,
    make_traceparent,
    parse_traceparent,
)
from halfsec.trace.jsonl import read_spans
from halfsec.trace.names import page_span_names
from halfsec.trace.turns import session_attributes

MS = 1_000_000


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    r = OTLPReceiver().start()
    yield r
    r.stop()


def test_traceparent_round_trip_and_rejects() -> None:
    tp = make_traceparent(0xABC, 0x123)
    assert tp == "00-00000000000000000000000000000abc-0000000000000123-01"
    p = parse_traceparent(tp)
    assert p is not None and p.trace_id == 0xABC and p.span_id == 0x123 and p.sampled
    assert str(p) == tp
    for bad in (
        None,
        "",
        "garbage",
        "00-" + "0" * 32 + "-0000000000000123-01",  # zero trace id
        "00-00000000000000000000000000000abc-" + "0" * 16 + "-01",  # zero span id
        "ff-00000000000000000000000000000abc-0000000000000123-01",  # forbidden version
        "00-00000000000000000000000000000abc-0000000000000123-01-extra",  # v00 is exact
        "00-00000000000000000000000000000ABG-0000000000000123-01",
    ):
        assert parse_traceparent(bad) is None, bad
    # A future version may carry more fields: parse the first four.
    assert (
        parse_traceparent("01-00000000000000000000000000000abc-0000000000000123-00-x") is not None
    )
    assert len({make_traceparent() for _ in range(50)}) == 50


def test_clock_anchor_preserves_monotonic_durations() -> None:
    a = ClockAnchor(mono_ns=1_000, epoch_ns=1_700_000_000_000_000_000)
    assert a.to_epoch_ns(1_000 + 250 * MS) - a.to_epoch_ns(1_000) == 250 * MS
    live = ClockAnchor.now()
    import time

    assert abs(live.to_epoch_ns(now_ns()) - time.time_ns()) < 50 * MS


def _turn_frames(t0: int, turn_id: int = 3) -> list[Frame]:
    """A committed turn as the session emits it: speech, pause, speculative STT, end of
    turn, logic, first clause, TTS, reply audio.  Times in ms after ``t0``."""

    def at(ms: float) -> int:
        return t0 + int(ms * MS)

    pcm = np.zeros(320, dtype=np.int16)
    return [
        SpeechStarted(turn_id=turn_id, t_ns=at(0), audio_ms=1000.0),
        SpeechPaused(turn_id=turn_id, t_ns=at(1100), audio_ms=2100.0, speech_end_ms=2030.0),
        TimingMark(turn_id=turn_id, t_ns=at(1105), name="stt.start"),
        TimingMark(
            turn_id=turn_id,
            t_ns=at(1180),
            name="stt.end",
            attrs={"compute_ms": 74.0, "audio_ms": 1100.0},
        ),
        FinalTranscript(turn_id=turn_id, t_ns=at(1181), text="a large latte", stt_ms=74.0),
        TimingMark(turn_id=turn_id, t_ns=at(1182), name="logic.start"),
        IntentFrame(
            turn_id=turn_id, t_ns=at(1183), intent="order", slots={"size": "large"}, confidence=0.9
        ),
        TimingMark(
            turn_id=turn_id, t_ns=at(1190), name="logic.first_clause", attrs={"source": "domain"}
        ),
        ReplyText(
            turn_id=turn_id, t_ns=at(1190), text="One large latte.", index=0, source="domain"
        ),
        TimingMark(turn_id=turn_id, t_ns=at(1191), name="tts.start", attrs={"clause": 0}),
        # Decision at 1230 ms: audio position 2230, estimated speech end 2030 -> 200 ms.
        EndOfTurn(
            turn_id=turn_id, t_ns=at(1230), audio_ms=2230.0, speech_end_ms=2030.0, reason="silence"
        ),
        TimingMark(turn_id=turn_id, t_ns=at(1231), name="turn.commit"),
        TimingMark(turn_id=turn_id, t_ns=at(1236), name="tts.first_audio"),
        ReplyAudio(turn_id=turn_id, t_ns=at(1236), pcm=pcm, sample_rate=16000, clause_index=0),
        TimingMark(turn_id=turn_id, t_ns=at(1400), name="tts.end"),
        ReplyDone(turn_id=turn_id, t_ns=at(1401), text="One large latte."),
        SpeechStarted(turn_id=turn_id + 1, t_ns=at(5000), audio_ms=6000.0),  # next turn: ignored
    ]


def test_otlp_client_and_server_spans_share_one_trace(
    receiver: OTLPReceiver, tmp_path: Path
) -> None:
    client = configure_tracing(
        "halfsec-bench",
        otlp_endpoint=receiver.endpoint,
        jsonl_path=tmp_path / "bench.jsonl",
        batch=False,
    )
    server = configure_tracing(
        "halfsec-server",
        otlp_endpoint=receiver.endpoint + "/v1/traces",
        jsonl_path=tmp_path / "server.jsonl",
        batch=True,
    )
    client_anchor, server_anchor = ClockAnchor.now(), ClockAnchor.now()
    t0 = now_ns()
    turn = ClientTurnSpan(
        tracer=client.tracer,
        anchor=client_anchor,
        start_mono_ns=t0 - 1000 * MS,
        turn_index=0,
        file="order_000.wav",
    )
    header = turn.traceparent  # all the server gets: a string over the wire
    trace_id = emit_server_turn_spans(
        _turn_frames(t0),
        traceparent=header,
        tracer=server.tracer,
        anchor=server_anchor,
        sent_first_audio_ns=t0 + 1238 * MS,
        models={"stt": "whisper-base.en", "tts": "piper-joe"},
        attributes=session_attributes("s1", {"stt": "whisper-base.en"}),
    )
    assert trace_id == turn.trace_id
    turn.speech_end(t0 + 1030 * MS)
    turn.first_audible(t0 + 1290 * MS)
    record = {
        "ok": True,
        "v2v_ms": 260.0,
        "stages": {
            "endpointing_ms": 200.0,
            "stt_ms": 0.0,
            "logic_ms": 0.0,
            "tts_ms": 6.0,
            "server_send_ms": 2.0,
            "network_buffer_ms": 52.0,
        },
        "dominant_stage": "endpointing",
        "clock_offset_ms": 0.1,
    }
    turn.finish(record=record)
    client.shutdown()
    server.shutdown()

    assert receiver.requests >= 2
    assert all(ct == "application/x-protobuf" for ct in receiver.content_types)
    names = {s.name for s in receiver.spans}
    assert names == {
        "client.turn",
        "client.v2v",
        "server.turn",
        "endpointing",
        "stt",
        "logic",
        "tts",
        "send",
    }
    assert {s.trace_id for s in receiver.spans} == {trace_id}
    (c,) = receiver.by_name("client.turn")
    (s,) = receiver.by_name("server.turn")
    assert c.parent_span_id == "" and c.service == "halfsec-bench" and c.kind == 3  # CLIENT
    assert s.parent_span_id == c.span_id, "server span must be a child of the client's span"
    assert s.service == "halfsec-server" and s.kind == 2  # SERVER
    assert {"client.speech_end", "client.first_audible"} <= set(c.events)
    assert c.attributes["halfsec.v2v_ms"] == 260.0
    assert c.attributes["halfsec.stage.network_buffer_ms"] == 52.0
    (v2v,) = receiver.by_name("client.v2v")
    assert v2v.parent_span_id == c.span_id and v2v.end_ns - v2v.start_ns == 260 * MS
    assert s.attributes["halfsec.turn_id"] == 3
    assert s.attributes["halfsec.transcript"] == "a large latte"
    assert s.attributes["halfsec.session_id"] == "s1"
    assert s.attributes["halfsec.model.stt"] == "whisper-base.en"
    stages = {x.name: x for x in receiver.spans if x.parent_span_id == s.span_id}
    assert set(stages) == {"endpointing", "stt", "logic", "tts", "send"}
    for name, sp in stages.items():
        assert sp.attributes["halfsec.turn_id"] == 3
        assert sp.service == "halfsec-server"
        assert sp.attributes["halfsec.stage"] == ("server_send" if name == "send" else name)
    assert stages["endpointing"].end_ns - stages["endpointing"].start_ns == 200 * MS
    assert stages["stt"].end_ns - stages["stt"].start_ns == 75 * MS
    assert stages["stt"].attributes["halfsec.speculative"] is True
    assert stages["stt"].attributes["gen_ai.request.model"] == "whisper-base.en"
    assert stages["stt"].attributes["gen_ai.operation.name"] == "speech_to_text"
    assert stages["tts"].attributes["gen_ai.request.model"] == "piper-joe"
    assert stages["tts"].attributes["halfsec.tts.first_audio_ms"] == 45.0
    assert "tts.first_audio" in stages["tts"].events
    assert stages["send"].end_ns - stages["send"].start_ns == 2 * MS
    assert stages["logic"].attributes["halfsec.logic.source"] == "domain"
    # Server span covers the turn from speech start to the last frame of *this* turn.
    assert s.end_ns - s.start_ns == 1401 * MS

    # The JSON-lines files hold the same spans, and import back as a halfsec turn.
    lines = read_spans(tmp_path / "bench.jsonl") + read_spans(tmp_path / "server.jsonl")
    assert {d["name"] for d in lines} == names
    merged = tmp_path / "all.jsonl"
    merged.write_text(
        (tmp_path / "bench.jsonl").read_text() + (tmp_path / "server.jsonl").read_text()
    )
    recs, meta = import_trace(merged)
    assert meta["framework"] == "halfsec" and len(recs) == 1
    assert recs[0]["v2v_ms"] == 260.0 and recs[0]["stages"]["endpointing_ms"] == 200.0
    assert recs[0]["trace_id"] == trace_id


def test_server_spans_without_or_with_bad_traceparent_start_a_trace(
    receiver: OTLPReceiver, tmp_path: Path
) -> None:
    server = configure_tracing(
        "halfsec-server", otlp_endpoint=receiver.endpoint, jsonl=False, batch=False
    )
    t0 = now_ns()
    frames = _turn_frames(t0, turn_id=1)
    frames.insert(5, ErrorFrame(turn_id=1, t_ns=t0 + 1200 * MS, code="tts_failed", message="x"))
    tid_a = emit_server_turn_spans(frames, tracer=server.tracer)
    tid_b = emit_server_turn_spans(frames, traceparent="00-bogus", tracer=server.tracer)
    assert emit_server_turn_spans([], tracer=server.tracer) is None
    server.shutdown()
    roots = receiver.by_name("server.turn")
    assert len(roots) == 2 and {r.trace_id for r in roots} == {tid_a, tid_b} and tid_a != tid_b
    assert all(r.parent_span_id == "" for r in roots)
    assert all(r.status_code == 2 for r in roots)  # ERROR
    assert all("halfsec.error" in r.events for r in roots)


def test_the_page_reads_every_mark_name_from_the_served_constants() -> None:
    """The page ends its waterfall stages on timing marks named by the server
    (``HALFSEC_CONSTANTS.span_names``): each key it reads must be served, and no served
    name may also be written into the page as a literal that could drift."""
    static = Path(__file__).parents[1] / "src/halfsec/server/static"
    js = "\n".join(f.read_text() for f in sorted(static.glob("*.js")))  # app.js + its modules
    served = page_span_names()
    used = set(re.findall(r"\bSPAN\.(\w+)", js))
    assert "HALFSEC_CONSTANTS.span_names" in js
    assert used and used <= set(served), used - set(served)
    assert not [name for name in served.values() if f'"{name}"' in js]

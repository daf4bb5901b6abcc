"""One real turn, traced end to end: bench client -> `halfsec serve` -> a real OTLP receiver.

Nothing is mocked: the bench starts `halfsec serve --otlp-endpoint` as a subprocess, plays
a short real recording at real-time pace, and both processes export OTLP/HTTP protobuf to
``tests/otlp_receiver.py``.  The test then checks what a trace viewer would show: client
and server spans in ONE trace, ``server.turn`` a child of ``client.turn``, every stage span
with its ``halfsec.*`` attributes, and stage boundaries that agree with the bench's own
stage breakdown (which is computed from the same server stamps, mapped by clock sync).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from otlp_receiver import OTLPReceiver, ReceivedSpan

from halfsec.audio.io import load_audio, write_wav
from halfsec.lab.bench.corpus import CorpusItem
from halfsec.lab.bench.options import BenchOptions
from halfsec.lab.bench.run import run_bench
from halfsec.measure.end_of_speech import voiced_bounds

SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "speech"
RECORDING = "audio/vctk_p225_001.flac"  # "Please call Stella." (2 s)
STAGES = ("endpointing", "stt", "logic", "tts", "send")
TOL_MS = 3.0


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    r = OTLPReceiver().start()
    yield r
    r.stop()


def _wait_for(receiver: OTLPReceiver, names: set[str], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if names <= {s.name for s in receiver.spans}:
            return
        time.sleep(0.1)


def _ms(ns: int) -> float:
    return ns / 1e6


@pytest.mark.slow
@pytest.mark.parametrize("speculate", [True, False], ids=["speculative", "sequential"])
def test_client_and_server_spans_share_one_trace(
    receiver: OTLPReceiver, tmp_path: Path, speculate: bool
) -> None:
    """With speculation the server's STT/logic/TTS run before the decision (the bench
    counts them as zero wait); without it every stage is on the critical path and each
    stage span's own duration must equal the bench's number for that stage."""
    pcm = load_audio(SPEECH / RECORDING)
    b = voiced_bounds(pcm)
    assert b is not None
    # 0.3 s before the speech, 1 s after: a short run with a natural end of turn.
    wav = tmp_path / "turn.wav"
    write_wav(wav, pcm[max(0, b[0] - 4800) : b[1] + 16000], 16000)

    result = asyncio.run(
        run_bench(
            [CorpusItem(wav)],
            BenchOptions(
                otlp_endpoint=receiver.endpoint,
                overrides=[f"session.speculate={str(speculate).lower()}"],
            ),
        )
    )
    (rec,) = result.records
    assert rec["v2v_ms"] is not None, rec
    _wait_for(receiver, {"client.turn", "server.turn", *STAGES})

    tid = rec["trace_id"]
    spans = [s for s in receiver.spans if s.trace_id == tid]
    by_name: dict[str, ReceivedSpan] = {}
    for s in spans:
        by_name.setdefault(s.name, s)
    assert {"client.turn", "client.v2v", "server.turn", *STAGES} <= set(by_name), sorted(by_name)
    assert "application/x-protobuf" in receiver.content_types

    client, server = by_name["client.turn"], by_name["server.turn"]
    assert client.service == "halfsec-bench" and server.service == "halfsec-server"
    assert client.parent_span_id == ""  # the root of the turn's trace
    assert server.parent_span_id == client.span_id
    assert by_name["client.v2v"].parent_span_id == client.span_id
    assert {"client.speech_end", "client.first_audible"} <= set(client.events)
    assert client.attributes["halfsec.v2v_ms"] == pytest.approx(rec["v2v_ms"], abs=0.01)
    for name in STAGES:
        sp = by_name[name]
        assert sp.parent_span_id == server.span_id, name
        assert sp.attributes["halfsec.turn_id"] == server.attributes["halfsec.turn_id"]
        assert sp.attributes["halfsec.stage"] in (name, "server_send")
        assert sp.attributes["halfsec.duration_ms"] == pytest.approx(
            _ms(sp.end_ns - sp.start_ns), abs=0.01
        )
    assert by_name["stt"].attributes["gen_ai.request.model"].startswith("whisper:")
    assert by_name["tts"].attributes["gen_ai.request.model"].startswith("piper:")
    assert server.attributes["halfsec.model.stt"].startswith("whisper:")
    assert server.attributes["halfsec.transcript"] == rec["transcript"]

    # The bench's breakdown telescopes from the reference end of speech through the
    # turn.end, stt.end, logic.first_clause, tts.first_audio and first-send stamps.
    # Rebuild the server-side part of it from the spans' end times alone.
    st = rec["stages"]
    tts = by_name["tts"]
    first_audio_ns = tts.start_ns + int(tts.attributes["halfsec.tts.first_audio_ms"] * 1e6)
    points = [
        by_name["endpointing"].end_ns,  # turn.end
        by_name["stt"].end_ns,
        by_name["logic"].end_ns,
        first_audio_ns,
        by_name["send"].end_ns,  # first reply packet handed to the socket
    ]
    prev = points[0]
    derived = {}
    for key, point in zip(
        ("stt_ms", "logic_ms", "tts_ms", "server_send_ms"), points[1:], strict=True
    ):
        cur = max(prev, point)
        derived[key] = _ms(cur - prev)
        prev = cur
    for key, value in derived.items():
        assert value == pytest.approx(st[key], abs=TOL_MS), (key, derived, st)
    if not speculate:
        # Sequential: each stage starts when the previous one ends, so the spans' own
        # durations are the user's wait per stage.
        own = {
            "stt_ms": _ms(by_name["stt"].end_ns - by_name["stt"].start_ns),
            "logic_ms": _ms(by_name["logic"].end_ns - by_name["logic"].start_ns),
            "tts_ms": tts.attributes["halfsec.tts.first_audio_ms"],
            "server_send_ms": _ms(by_name["send"].end_ns - by_name["send"].start_ns),
        }
        assert own["stt_ms"] > 5.0, own  # whisper really ran after the decision
        for key, value in own.items():
            assert value == pytest.approx(st[key], abs=TOL_MS), (key, own, st)
    # Endpointing crosses processes: from the client's speech-end instant (client span)
    # to the server's decision (server span); one host, so one wall clock.
    client_speech_end_ns = client.start_ns + int(rec["ref_end_ms"] * 1e6)
    endpointing_ms = _ms(by_name["endpointing"].end_ns - client_speech_end_ns)
    assert endpointing_ms == pytest.approx(st["endpointing_ms"], abs=TOL_MS), (endpointing_ms, st)
    # The user's wait on the client span equals the record's v2v.
    v2v = by_name["client.v2v"]
    assert _ms(v2v.end_ns - v2v.start_ns) == pytest.approx(rec["v2v_ms"], abs=0.01)

    # The run keeps both sides' spans for the store (the server's from its JSON lines).
    kept = {(s["name"], s["traceId"]) for s in result.spans}
    assert ("client.turn", tid) in kept and ("server.turn", tid) in kept
    assert ("send", tid) in kept


@pytest.mark.slow
def test_collector_down_never_breaks_a_session(tmp_path: Path) -> None:
    """Both processes export to a port nobody listens on: the turn is still answered and
    measured, and the run still ends (exports fail in the batch thread, bounded by the
    exporter's timeout, never on the event loop)."""
    from halfsec.lab.bench.server_process import free_port

    pcm = load_audio(SPEECH / RECORDING)
    b = voiced_bounds(pcm)
    assert b is not None
    wav = tmp_path / "turn.wav"
    write_wav(wav, pcm[max(0, b[0] - 4800) : b[1] + 16000], 16000)
    dead = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    result = asyncio.run(run_bench([CorpusItem(wav)], BenchOptions(otlp_endpoint=dead)))
    (rec,) = result.records
    assert rec["ok"] and rec["v2v_ms"] is not None, rec
    assert time.monotonic() - t0 < 60
    # The local copies (bench memory, server JSON lines) still hold the turn.
    names = {s["name"] for s in result.spans if s["traceId"] == rec["trace_id"]}
    assert {"client.turn", "server.turn", "stt"} <= names, names

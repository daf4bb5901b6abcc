"""Resume: signed context snapshots, and a conversation that moves to another server.

The first half checks the token (round trip, tampering, expiry, another key or domain);
the second runs two real servers (real models, shared engines, loopback), lets the lab's
resuming client talk to the first, stops that server while the second turn is in flight,
and checks the client reconnects to the other, replays the turn and gets the answer that
only the resumed context can give ("Large." -> "One large latte.")."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from halfsec.audio.io import load_audio
from halfsec.clock import now_ns
from halfsec.config import load_config
from halfsec.lab.clients.resume import ResumeOptions, converse_resuming
from halfsec.logic import load_domain
from halfsec.logic.domain_logic import DomainLogic
from halfsec.logic.state import DialogueState
from halfsec.runtime.engines import Engines
from halfsec.server.app import ServerOptions, start_server
from halfsec.server.options import ServeError
from halfsec.server.resume import ContextSealer, ResumeError, sealer_from_key
from halfsec.wire.protocol import parse_server_event, session_start_message

KEY = "k" * 32
CLIPS = Path(__file__).parent / "data" / "dialogue"


async def _latte_state() -> DialogueState:
    """The coffee logic's state after "I'd like a latte": it asked for the size."""
    logic = DomainLogic(load_domain("coffee"))
    turn = logic.respond("I'd like a latte", DialogueState())
    reply = " ".join([c.text async for c in turn.clauses])
    return turn.remember(reply)


# ------------------------------------------------------------------ the token


async def test_a_sealed_state_opens_to_the_same_state() -> None:
    state = await _latte_state()
    assert state.asking == "size" and len(state.history) == 2
    sealer = ContextSealer(KEY.encode())
    sealed = sealer.seal(state, "coffee", "abc")
    back, payload = sealer.open(sealed["token"], "coffee")
    assert back == state and payload["session"] == "abc"
    # Another server of the deployment (same key) answers the next turn the same way.
    logic = DomainLogic(load_domain("coffee"))
    assert logic.respond("Large.", back).state == logic.respond("Large.", state).state


async def test_changed_expired_foreign_and_garbled_tokens_are_refused() -> None:
    state = await _latte_state()
    now = [1000.0]
    sealer = ContextSealer(KEY.encode(), ttl_s=60, clock=lambda: now[0])
    token = sealer.seal(state, "coffee", "s")["token"]
    head, body, mac = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["state"]["request"]["slots"]["size"] = "large"  # a forged order
    forged_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    cases = {
        "changed": (f"{head}.{forged_body}.{mac}", "coffee", "resume_invalid"),
        "other key": (
            ContextSealer(b"x" * 32).seal(state, "coffee", "s")["token"],
            "coffee",
            "resume_invalid",
        ),
        "other domain": (token, "hotel", "resume_invalid"),
        "garbage": ("hs1.%%%.@@@", "coffee", "resume_invalid"),
        "not a string": (42, "coffee", "resume_invalid"),
    }
    for name, (tok, domain, code) in cases.items():
        with pytest.raises(ResumeError) as e:
            sealer.open(tok, domain)
        assert e.value.code == code, name
    sealer.open(token, "coffee")  # still fine before the expiry
    now[0] += 61
    with pytest.raises(ResumeError) as e:
        sealer.open(token, "coffee")
    assert e.value.code == "resume_expired"


def test_a_short_key_is_refused_before_anything_starts() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        sealer_from_key("short")
    with pytest.raises(ServeError, match="resume-key"):
        ServerOptions(resume_key="short")
    assert sealer_from_key(None) is None


# ------------------------------------------------------------------ real servers


@asynccontextmanager
async def _server(engines: Engines, key: str | None) -> AsyncIterator[tuple[str, object]]:
    _srv, runner, port = await start_server(
        engines, load_config(), ServerOptions(host="127.0.0.1", port=0, resume_key=key)
    )
    try:
        yield f"ws://127.0.0.1:{port}/ws", runner
    finally:
        await runner.cleanup()


async def _start(url: str, resume: object) -> list[dict[str, object]]:
    """session.start with ``resume``; the events up to the ping's pong."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        msg = json.loads(session_start_message())
        msg["resume"] = resume
        await ws.send_str(json.dumps(msg))
        await ws.send_str(json.dumps({"type": "ping", "id": 1, "t_client_ns": 1}))
        events = []
        while True:
            ev = parse_server_event((await ws.receive(timeout=10)).data)
            events.append(ev)
            if ev["type"] == "pong":
                return events


async def test_a_refused_resume_starts_fresh_with_a_documented_error(engines: Engines) -> None:
    async with _server(engines, KEY) as (keyed, _r1), _server(engines, None) as (plain, _r2):
        token = ContextSealer(KEY.encode()).seal(await _latte_state(), "coffee", "s")["token"]
        ok = await _start(keyed, token)
        assert ok[0]["type"] == "session.started" and ok[0]["resumed"] is True
        assert [e["type"] for e in ok] == ["session.started", "pong"]
        bad = await _start(keyed, token[:-4] + "AAAA")
        assert bad[0]["resumed"] is False and bad[1]["code"] == "resume_invalid"
        assert bad[1]["fatal"] is False
        none = await _start(plain, token)
        assert none[0]["resumed"] is False and none[1]["code"] == "resume_unavailable"


def test_the_resume_codes_are_in_the_protocols_error_table() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    for code in ("resume_invalid", "resume_expired", "resume_unavailable"):
        assert f"| `{code}` | no |" in doc


def _utterance(name: str) -> np.ndarray:
    pcm = load_audio(CLIPS / name)
    return np.concatenate([np.zeros(4800, np.int16), pcm.astype(np.int16)])


async def _failover(engines: Engines, key_b: str | None) -> tuple[object, float]:
    async with _server(engines, KEY) as (url_a, runner_a), _server(engines, key_b) as (url_b, _r):
        t_kill: list[int] = []

        async def kill_a_during_turn_two(index: int) -> None:
            if index == 1:
                t_kill.append(now_ns())
                await runner_a.cleanup()  # type: ignore[attr-defined]

        run = await asyncio.wait_for(
            converse_resuming(
                [url_a, url_b],
                [_utterance("i_d_like_a_latte.flac"), _utterance("large.flac")],
                ResumeOptions(reconnect_for_s=5, answer_timeout_s=12),
                on_sent=kill_a_during_turn_two,
            ),
            60,
        )
        second = run.turns[1]
        ms = (second.t_answer_ns - t_kill[0]) / 1e6 if second.t_answer_ns else float("inf")
        return run, ms


async def test_a_conversation_moves_to_another_server_without_losing_a_turn(
    engines: Engines,
) -> None:
    run, kill_to_answer_ms = await _failover(engines, KEY)
    assert run.error is None, run.error
    assert run.turns_lost == 0, [t.as_dict() for t in run.turns]
    first, second = run.turns
    assert "size" in first.reply.lower()
    # Only the resumed state knows "Large." is the latte's size.
    assert "large latte" in second.reply.lower(), second.reply
    assert second.attempts == 2 and first.session_id != second.session_id
    assert [leg.resumed for leg in run.legs] == [None, True]
    assert kill_to_answer_ms < 10_000  # generous: the 2 s target is the benchmark's


async def test_without_the_key_the_other_server_cannot_continue(engines: Engines) -> None:
    """The same failover to a server without the deployment's key: no turn is lost (the
    audio is replayed) but the context is: "Large." alone is not an order."""
    run, _ms = await _failover(engines, None)
    assert run.turns_lost == 0, [t.as_dict() for t in run.turns]
    assert "large latte" not in run.turns[1].reply.lower()
    assert run.legs[1].resumed is False and "resume_unavailable" in run.legs[1].errors

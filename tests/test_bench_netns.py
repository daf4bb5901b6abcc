"""``halfsec bench --net-mode namespace``: the bench's client, relays and server in three
network namespaces joined by veths (``lab/bench/namespace.py``), and the WebRTC relay
plumbing shared with the browser (``netem/rtc_path.py``, ``netem/sdp.py``).

The end-to-end test builds real namespaces and starts a real ``halfsec serve`` inside
the server namespace, so it needs root, iproute2 and nftables: CI runs as root
(``src/halfsec/lab/netem/setup_host.sh`` installs the tools)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from halfsec.cli.bench import bench_command
from halfsec.lab.bench import namespace as bench_ns
from halfsec.lab.bench.corpus import CorpusItem, parse_slots
from halfsec.lab.bench.namespace import namespace_server, with_token
from halfsec.lab.bench.options import BenchError, BenchOptions
from halfsec.lab.bench.run import run_items
from halfsec.lab.netem.namespaces import CLI_ADDR, MID_CLI_ADDR, namespaces_supported
from halfsec.lab.netem.sdp import SdpError, ipv4_host_candidate, only_candidate

NET = "delay=20ms,seed=2"

OFFER = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
    "a=candidate:1 1 udp 2113937151 3f2a9c1e-0b1d-4c55-9a2e-1d2b3c4d5e6f.local 50001 typ host\r\n"
    "a=candidate:2 1 udp 2113942271 fd00::2 50002 typ host generation 0\r\n"
    "a=candidate:3 1 udp 2113937151 192.0.2.2 50003 typ host generation 0\r\n"
    "a=candidate:4 1 tcp 1518280447 192.0.2.2 9 typ host tcptype active\r\n"
    "a=mid:0\r\n"
)


def test_rtc_path_picks_the_ipv4_candidate_and_drops_the_rest() -> None:
    assert ipv4_host_candidate(OFFER) == ("192.0.2.2", 50003)
    out = only_candidate(OFFER, "127.0.0.1", 40000)
    cands = [line for line in out.split("\r\n") if line.startswith("a=candidate")]
    assert cands == ["a=candidate:3 1 udp 2113937151 127.0.0.1 40000 typ host generation 0"]
    assert "m=application 40000 " in out and "c=IN IP4 127.0.0.1" in out
    # Chromium's default (mDNS names) cannot be relayed: the error says what to do.
    mdns = "\r\n".join(line for line in OFFER.split("\r\n") if "192.0.2.2" not in line)
    with pytest.raises(SdpError, match="WebRtcHideLocalIpsWithMdns"):
        ipv4_host_candidate(mdns)


def test_namespace_mode_refuses_bad_combinations_and_hosts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def cli(**kw: object) -> int:
        args: dict[str, object] = dict(
            server=None, corpus_path=tmp_path, limit=None, json_out=None, save_audio=None,
            budget_path=None, fail_over_budget=False, html_out=None, token=None, config=None,
            overrides=[], inject_delay_ms=0.0, domain=None, store=False, timeout_s=10.0,
            net="4g", net_mode="namespace",
        )  # fmt: skip
        args.update(kw)
        return bench_command(**args)  # type: ignore[arg-type]

    def err() -> str:
        return " ".join(capsys.readouterr().err.split())  # rich wraps long lines

    assert cli(net=None) == 2
    assert "--net-mode namespace needs --net PROFILE" in err()
    assert cli(server="ws://127.0.0.1:8765/ws") == 2
    assert "drop --server" in err()
    assert cli(net_mode="kernel") == 2
    assert "--net-mode must be relay or namespace" in err()
    # A host without root/ip/nft: a clear refusal with what to do, never loopback instead.
    monkeypatch.setattr(
        bench_ns, "namespaces_supported", lambda: (False, "namespace mode needs root")
    )
    assert cli() == 2
    text = err()
    assert "needs root" in text and "setup_host.sh" in text and "--net-mode relay" in text


async def test_namespace_server_refuses_without_support(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_ns, "namespaces_supported", lambda: (False, "'nft' not found"))
    opts = with_token(BenchOptions(net="4g", net_mode="namespace"))
    with pytest.raises(BenchError, match="'nft' not found.*setup_host.sh"):
        async with namespace_server(opts, [], []):
            pass


def _netns() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def _lab_namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return {ln.split()[0] for ln in out.stdout.splitlines() if ln.startswith("hs-")}


@pytest.mark.slow
async def test_python_client_in_namespace_mode_over_websocket_and_webrtc(
    rows: list[dict[str, str]], speech_dir: Path
) -> None:
    """Needs root (network namespaces, veths, nftables): CI runs as root.

    One server in the server namespace; one recording over WebSocket (a TCP relay in
    the middle namespace) and one over WebRTC (relays A and B in the middle; the Python
    client pins its candidate to 127.0.0.1, so forwarders in the client namespace
    bridge it to the veth).  Both must answer, measure v2v, and show the relays'
    packets both ways with the profile's delay really added."""
    ok, why = namespaces_supported()
    assert ok, why
    r = min((r for r in rows if r["intent"] == "orderDrink"), key=lambda r: float(r["duration_s"]))
    item = CorpusItem(speech_dir / r["file"], intent=r["intent"], slots=parse_slots(r["slots"]))
    opts = with_token(BenchOptions(net=NET, net_mode="namespace", trace=False))
    assert opts.token and opts.client.token == opts.token  # the server binds non-loopback
    own, before = _netns(), _lab_namespaces()
    records = {}
    async with namespace_server(opts, [], ["--no-trace", "--token", str(opts.token)]) as (
        proc,
        path,
    ):
        assert _netns() != own, "the client side runs in the client namespace"
        assert proc.url.startswith(f"ws://{MID_CLI_ADDR}:"), proc.url
        for transport in ("websocket", "webrtc"):
            recs, _ = await run_items(
                proc.url, [item], replace(opts, transport=transport), path=path
            )
            records[transport] = recs[0]
    assert _netns() == own, "the thread is back in its own namespace"
    assert _lab_namespaces() == before, "the lab's namespaces were deleted"

    for transport, rec in records.items():
        assert rec["ok"], (transport, rec["error"])
        assert rec["intent"] == "orderDrink" and rec["reply_text"], rec
        assert rec["v2v_ms"] is not None and 0 < rec["v2v_ms"] < 5000
        assert rec["net"]["mode"] == "namespace" and rec["net"]["arg"] == NET
        # The reply crossed the 20 ms down path after the server let it go.
        assert rec["stages"]["network_buffer_ms"] >= 20, rec["stages"]
    ws = records["websocket"]["net"]
    assert ws["counters"]["up"]["chunks"] >= 50 and ws["counters"]["down"]["chunks"] >= 5
    assert ws["counters"]["up"]["actual_delay_ms_p50"] >= 20
    rtc = records["webrtc"]["net"]
    a, b = rtc["relay_server_side"], rtc["relay_client_side"]
    assert rtc["bridged_loopback_client"] is True
    up = a["up"]["forwarded"] + b["down"]["forwarded"]
    down = a["down"]["forwarded"] + b["up"]["forwarded"]
    assert up >= 100 and down >= 100, (up, down)
    for d in (a["up"], a["down"], b["up"], b["down"]):
        if d["forwarded"] >= 50:
            assert d["actual_delay_ms_p50"] >= 20, rtc
    assert CLI_ADDR not in proc.url  # the client never talks to the server directly

"""What the server pays at start-up so its first minute is as fast as the later ones
(the soak's first-minute rule, ``lab.load.soak``)."""

from __future__ import annotations

from halfsec.config import load_config
from halfsec.runtime.build import build_engines
from halfsec.runtime.engines import Engines
from halfsec.server.app import ServerOptions, VoiceServer
from halfsec.stt.decode_lanes import ReplaceableLane
from halfsec.turn import combined, vad


def test_a_standby_lane_starts_with_every_spare_loaded_and_warm() -> None:
    loads: list[str] = []
    warmed: list[str] = []
    lane: ReplaceableLane[str] = ReplaceableLane(
        "toy", lambda: loads.append("m") or "m", standby=True, warm=warmed.append
    )
    try:
        # Constructed = ready: nothing is left loading when the first callers talk.
        assert len(loads) == 1 + lane.max_spares and lane.spares == lane.max_spares
        assert len(warmed) == lane.max_spares, "spares are warmed before the lane is used"
    finally:
        lane.close()
    partial: ReplaceableLane[str] = ReplaceableLane("toy", lambda: loads.append("p") or "p")
    try:
        assert loads.count("p") == 1 and partial.spares == 0, "a lane without standby loads one"
    finally:
        partial.close()


async def test_the_server_loads_the_shared_turn_models_before_it_listens(
    engines: Engines,
) -> None:
    config = load_config()
    vad._SESSION = None  # as in a fresh process: the first session would load them
    combined._SHARED.pop(config.turn.smart_turn_threads, None)
    VoiceServer(engines, config, ServerOptions(host="127.0.0.1", port=0))
    assert vad._SESSION is not None, "the VAD is loaded at start-up"
    assert config.session.end_of_turn == "combined" and config.turn.smart_turn
    assert combined._SHARED.get(config.turn.smart_turn_threads) is not None, "Smart Turn too"


def test_every_warmed_build_loads_the_shared_turn_models_too() -> None:
    """``halfsec run``, Wyoming and embedding programs build their engines without the
    server: a warmed build loads the turn models as the server's start-up does."""
    config = load_config()
    vad._SESSION = None
    combined._SHARED.pop(config.turn.smart_turn_threads, None)
    build_engines(config, warmup=False)
    assert vad._SESSION is None and not combined._SHARED, "nothing loaded unwarmed"
    build_engines(config)
    assert vad._SESSION is not None
    assert combined._SHARED.get(config.turn.smart_turn_threads) is not None

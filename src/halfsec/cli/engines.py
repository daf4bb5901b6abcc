"""``halfsec engines``: which engines exist and whether each is usable here."""

from __future__ import annotations

from rich.table import Table

from halfsec.cli.common import err
from halfsec.errors import EngineUnavailable
from halfsec.models import PINNED, checks
from halfsec.plugins import LOGIC_GROUP, STT_GROUP, TTS_GROUP, load_plugin, plugin_engines
from halfsec.stt.factory import available_engines as stt_engines
from halfsec.stt.phone_model import phone_model_status
from halfsec.tts.factory import available_engines as tts_engines
from halfsec.turn.smart_turn import smart_turn_model_path
from halfsec.turn.vad import silero_model_path


def engines_command(as_json: bool) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    try:
        rows.append(
            {"kind": "vad", "name": "silero", "usable": True, "detail": str(silero_model_path())}
        )
    except Exception as e:
        rows.append({"kind": "vad", "name": "silero", "usable": False, "detail": str(e)})
    try:
        st = str(smart_turn_model_path())
        rows.append({"kind": "turn", "name": "smart_turn", "usable": True, "detail": st})
    except Exception as e:
        rows.append({"kind": "turn", "name": "smart_turn", "usable": False, "detail": str(e)})
    for name, ok, detail in stt_engines():
        rows.append({"kind": "stt", "name": name, "usable": ok, "detail": detail})
    ok, detail = phone_model_status()
    rows.append({"kind": "stt", "name": "whisper-phone", "usable": ok, "detail": detail})
    rows.append(
        {
            "kind": "stt",
            "name": "openai",
            "usable": True,
            "detail": "any OpenAI-compatible /v1/audio/transcriptions (stt.openai_base_url)",
        }
    )
    for name, ok, detail in tts_engines():
        rows.append({"kind": "tts", "name": name, "usable": ok, "detail": detail})
    rows.append(
        {
            "kind": "tts",
            "name": "openai",
            "usable": True,
            "detail": "any OpenAI-compatible /v1/audio/speech (tts.openai_base_url)",
        }
    )
    rows.append(
        {
            "kind": "logic",
            "name": "domain",
            "usable": True,
            "detail": "intent + slot engine (coffee, retail)",
        }
    )
    rows.append(
        {
            "kind": "logic",
            "name": "llm",
            "usable": True,
            "detail": "any OpenAI-compatible endpoint (logic.llm_base_url)",
        }
    )
    rows += plugin_rows()
    rows += model_rows()
    if not as_json:
        t = Table(title="halfsec engines")
        for c in ("kind", "name", "usable", "detail"):
            t.add_column(c, overflow="fold")
        for r in rows:
            t.add_row(
                str(r["kind"]),
                str(r["name"]),
                "[green]yes[/green]" if r["usable"] else "[red]no[/red]",
                str(r["detail"]),
            )
        err.print(t)
    return rows


def model_rows() -> list[dict[str, object]]:
    """The SHA-256 check of each packaged model file the rows above located."""
    rows: list[dict[str, object]] = []
    for c in checks():
        pin = PINNED[c.key]
        detail = f"SHA-256 verified ({pin.package} {pin.version})"
        if not c.ok:
            detail = f"SHA-256 {c.actual} at {c.path}, pinned {pin.sha256}: reinstall {pin.package}"
        rows.append({"kind": "model", "name": c.key, "usable": c.ok, "detail": detail})
    return rows


def plugin_rows() -> list[dict[str, object]]:
    """Engines other packages add through entry points; usable when their module imports."""
    rows: list[dict[str, object]] = []
    for kind, group in (("stt", STT_GROUP), ("tts", TTS_GROUP), ("logic", LOGIC_GROUP)):
        for plugin in plugin_engines(group):
            origin = f" from {plugin.package}" if plugin.package else ""
            try:
                load_plugin(group, plugin.name)
                ok, detail = True, f"plugin {plugin.target}{origin}"
            except EngineUnavailable as e:
                ok, detail = False, str(e)
            rows.append({"kind": kind, "name": plugin.name, "usable": ok, "detail": detail})
    return rows

"""Every name a halfsec trace uses: spans, span events, attributes and timing marks.

One module, so that the emitters (``client_spans``, ``server_spans``), the readers
(``lab.report.import_trace``, the tests) and the browser page (through
:func:`page_span_names`) cannot drift apart: a span renamed here is renamed everywhere,
and a trace viewer query written against these names keeps working.  The idea is
LiveKit Agents' ``telemetry/trace_types.py``.

A turn's trace, and where each name appears::

    client.turn                      the user's turn, first sample sent -> first audible reply
      events: client.speech_end, client.first_audible
      client.v2v                     speech end -> first audible sample (the user's wait)
      server.turn                    speech start -> last frame of the turn
        events: halfsec.interruption, halfsec.error, halfsec.fallback, halfsec.fault
        endpointing                  estimated end of speech -> end-of-turn decision
          event: halfsec.speech_paused
        stt                          mark stt.start -> stt.end
        logic                        mark logic.start -> logic.first_clause
        tts                          mark tts.start -> tts.end
          event: tts.first_audio
        send                         first reply audio ready -> first audio written

Timing marks (``MARK_*``) are the named instants the pipeline stamps on a turn
(``TimingMark`` frames, sent to clients as ``timing`` events); the server's spans are
built from them after the turn, and the page's waterfall ends its stages on them.
"""

from __future__ import annotations

# -- tracers (instrumentation scopes) ----------------------------------------------------
TRACER_SERVICE = "halfsec"
"""The tracer ``configure_tracing`` hands out."""
TRACER_BENCH = "halfsec.bench"
TRACER_SERVER = "halfsec.server"

# -- spans -------------------------------------------------------------------------------
SPAN_CLIENT_TURN = "client.turn"
SPAN_CLIENT_V2V = "client.v2v"
SPAN_SERVER_TURN = "server.turn"
SPAN_ENDPOINTING = "endpointing"
SPAN_STT = "stt"
SPAN_LOGIC = "logic"
SPAN_TTS = "tts"
SPAN_SEND = "send"

# -- span events -------------------------------------------------------------------------
EVENT_SPEECH_END = "client.speech_end"
"""The last voiced sample of the user's speech left the client."""
EVENT_FIRST_AUDIBLE = "client.first_audible"
"""The first audible reply sample reached the client's playback point."""
EVENT_SPEECH_PAUSED = "halfsec.speech_paused"
EVENT_TTS_FIRST_AUDIO = "tts.first_audio"
EVENT_INTERRUPTION = "halfsec.interruption"
EVENT_ERROR = "halfsec.error"
EVENT_FALLBACK = "halfsec.fallback"
"""A rung of the fallback ladder answered (``runtime/fallback.py``)."""
EVENT_FAULT = "halfsec.fault"
"""An injected fault fired (``halfsec serve --fault``)."""

# -- timing marks (TimingMark.name) ------------------------------------------------------
MARK_STT_START = "stt.start"
MARK_STT_END = "stt.end"
MARK_LOGIC_START = "logic.start"
MARK_LOGIC_FIRST_CLAUSE = "logic.first_clause"
MARK_TTS_START = "tts.start"
MARK_TTS_FIRST_AUDIO = "tts.first_audio"
MARK_TTS_END = "tts.end"
MARK_TURN_COMMIT = "turn.commit"
MARK_FALLBACK = "fallback"
"""A fallback rung answered; attrs ``rung`` (``runtime/fallback.RUNGS``) and ``reason``."""
MARK_FAULT = "fault"
"""An injected fault fired; attrs ``fault`` (its kind) and ``spec``."""
MARK_FAULTS_ARMED = "faults.armed"
"""The turn's session is armed by ``--fault`` (once per turn, fired or not): the bench
tells faulted sessions from healthy ones beside them by it."""
MARK_AUDIO_SENT = "audio.sent"
"""A client's own mark: when the server wrote the turn's first reply audio (from the audio
header's server time, or WebRTC's ``reply.audio`` event).  Ends the ``server_send`` stage."""

# -- values of ATTR_STAGE (the stage names of the turn record's ``stages``) -------------
STAGE_ENDPOINTING = "endpointing"
STAGE_STT = "stt"
STAGE_LOGIC = "logic"
STAGE_TTS = "tts"
STAGE_SERVER_SEND = "server_send"
STAGE_V2V = "v2v"

# -- attributes --------------------------------------------------------------------------
ATTR_SESSION_ID = "halfsec.session_id"
ATTR_TURN_ID = "halfsec.turn_id"
ATTR_TURN_INDEX = "halfsec.turn_index"
ATTR_FILE = "halfsec.file"
"""The bench's name for the turn's audio (corpus file)."""
ATTR_STAGE = "halfsec.stage"
ATTR_DURATION_MS = "halfsec.duration_ms"
ATTR_V2V_MS = "halfsec.v2v_ms"
ATTR_DOMINANT_STAGE = "halfsec.dominant_stage"
ATTR_CLOCK_OFFSET_MS = "halfsec.clock_offset_ms"
ATTR_END_OF_TURN_REASON = "halfsec.end_of_turn.reason"
ATTR_SILENCE_MS = "halfsec.silence_ms"
ATTR_TRANSCRIPT = "halfsec.transcript"
ATTR_INTENT = "halfsec.intent"
ATTR_REPLY_TEXT = "halfsec.reply_text"
ATTR_SPECULATIVE = "halfsec.speculative"
"""True when STT started before the end-of-turn decision."""
ATTR_LOGIC_SOURCE = "halfsec.logic.source"
ATTR_LOGIC_CLAUSES = "halfsec.logic.clauses"
ATTR_TTS_FIRST_AUDIO_MS = "halfsec.tts.first_audio_ms"
ATTR_AUDIO_CHUNKS = "halfsec.audio_chunks"
ATTR_CANCEL_MS = "halfsec.cancel_ms"
ATTR_ERROR_CODE = "halfsec.error.code"
ATTR_ERROR_MESSAGE = "halfsec.error.message"
ATTR_FALLBACKS = "halfsec.fallbacks"
"""``server.turn``: the fallback rungs that answered the turn, in order."""
ATTR_FAULTS = "halfsec.faults"
"""``server.turn``: the injected faults that fired in the turn."""
ATTR_FALLBACK_RUNG = "halfsec.fallback.rung"
ATTR_FALLBACK_REASON = "halfsec.fallback.reason"
ATTR_FAULT_KIND = "halfsec.fault.kind"
ATTR_STAGE_PREFIX = "halfsec.stage."
"""``client.turn`` carries the turn record's stages as ``halfsec.stage.<stage>_ms``."""

# OpenTelemetry's GenAI semantic conventions, so generic viewers can read the model spans.
ATTR_GEN_AI_OPERATION = "gen_ai.operation.name"
ATTR_GEN_AI_MODEL = "gen_ai.request.model"
OP_SPEECH_TO_TEXT = "speech_to_text"
OP_TEXT_TO_SPEECH = "text_to_speech"
OP_CHAT = "chat"


def stage_attr(stage_key: str) -> str:
    """``halfsec.stage.<key>`` for a turn record's stage (``stt_ms`` or ``stt`` -> ``..stt_ms``)."""
    key = stage_key if stage_key.endswith("_ms") else f"{stage_key}_ms"
    return ATTR_STAGE_PREFIX + key


def stt_attr(key: str) -> str:
    """``halfsec.stt.<key>``: the recogniser's own numbers (``compute_ms``, ``audio_ms``)."""
    return f"halfsec.stt.{key}"


def model_attr(role: str) -> str:
    """``halfsec.model.<role>``: an engine's model name on ``server.turn`` (stt, tts, ...)."""
    return f"halfsec.model.{role}"


# -- other frameworks' spans, read by lab.report.import_trace ----------------------------
PIPECAT_TURN = "turn"
PIPECAT_SERVICE_KINDS = ("stt", "llm", "tts")
"""Pipecat names service spans by kind (older releases: ``<kind>_<service>``)."""
LIVEKIT_USER_TURN = "user_turn"
LIVEKIT_AGENT_TURN = "agent_turn"
LIVEKIT_EOU_WAIT = "eou_wait"
LIVEKIT_AGENT_SESSION = "agent_session"
LIVEKIT_AGENT_SPEAKING = "agent_speaking"
LIVEKIT_LLM_NODE = "llm_node"
LIVEKIT_TTS_NODE = "tts_node"
LIVEKIT_LLM_REQUEST = "llm_request"
LIVEKIT_TTS_REQUEST = "tts_request"


def page_span_names() -> dict[str, str]:
    """The timing-mark names the browser page reads, by the key ``app.js`` uses
    (``HALFSEC_CONSTANTS.span_names.<key>``): its waterfall ends each stage on one."""
    return {
        "stt_end": MARK_STT_END,
        "logic_first_clause": MARK_LOGIC_FIRST_CLAUSE,
        "tts_first_audio": MARK_TTS_FIRST_AUDIO,
        "audio_sent": MARK_AUDIO_SENT,
    }

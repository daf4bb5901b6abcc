"""The runtime: one ``VoiceSession`` per conversation, built from shared ``Engines``.

Where a frame goes next: ``session.VoiceSession.push`` frames audio -> ``turn.detector``
-> per-turn ``turn_task.TurnTask`` (STT -> logic -> TTS, speculative until the end of turn)
-> ``VoiceSession.events()``."""

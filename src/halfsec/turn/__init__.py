"""Turn detection: Silero VAD (``vad``), the pause/speech state machine (``detector``)
and the end-of-turn decision (``end_of_turn``)."""

"""Text to speech: engines behind one streaming interface (``engine.TTSEngine``)."""

"""Speech to text: engines behind one streaming interface (``engine.STTEngine``)."""

"""Audio in and out: decoding and validation (``io``), resampling (``resample``),
20 ms framing (``framing``), levels (``levels``)."""

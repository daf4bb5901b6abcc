"""The measurement rules, one definition each, shared by the product and the lab.

``audible`` (the -dBFS level at which a reply is heard), ``v2v`` (voice-to-voice: first
audible reply sample minus the reference end of speech), ``end_of_speech`` (that
reference), ``stages`` (the telescoping breakdown of v2v), ``percentile`` (the one
percentile rule), ``client_overhead`` (what the bench client costs) and ``wer``.
This package imports only the core and ``audio``: never the runtime, the server, an
engine or the lab, so a client measures exactly like ``halfsec run`` without them."""

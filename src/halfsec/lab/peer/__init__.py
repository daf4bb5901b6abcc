"""Side-by-side runs against other voice frameworks, measured by halfsec's client rule.

Only ``pipecat_harness`` so far.  It needs the optional ``peer`` extra (Pipecat), so
nothing here is imported by the rest of halfsec.
"""

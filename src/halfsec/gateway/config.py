"""``GatewayOptions`` and the Envoy configuration they stand for (pure: no I/O).

The routing model, chosen for voice sessions that last minutes and must start near:

* **One cluster, priorities by zone.**  Every server is an endpoint of cluster
  ``halfsec``; its zone's rank relative to the gateway's ``--zone`` is its Envoy priority
  (``upstream.zone_priorities``).  While the near zone is healthy it takes 100 % of new
  sessions (Envoy's overprovisioning factor, 140 % by default, keeps a zone at full load
  until fewer than ~72 % of its servers are healthy); as it loses servers, the load
  spills to the next priority, and with none left it all goes there.
* **Health is readiness, not liveness.**  Envoy polls each server's ``--health-path``
  (``/ready``: 503 when saturated or draining) every ``health_interval_s``; two misses
  take a server out, so a dead or full server stops getting sessions within about
  ``2 x interval + timeout`` (1.4 s by default), well inside the 3 s failover target.
  ``no_traffic_interval`` is the same interval, or a zone that gets no traffic (the far
  one) would be checked once a minute and fail over to a stale view.
* **Outlier detection** ejects a server that answers 5xx in a row (a server refusing
  sessions between two polls).  Connect failures are not ejected on (Envoy counts every
  WebSocket hang-up as one, see ``_cluster``); a refused connect is retried on another
  server instead, so a new session never waits for the next poll.
* **Panic routing is off** (``healthy_panic_threshold`` 0): with no ready server a new
  session gets 503 from the gateway instead of being pushed onto a saturated one.
* **Least request** inside a zone: a WebSocket session is one long request, so "fewest
  active requests" is "fewest open sessions".
* WebSocket upgrades (``/ws``, ``/twilio``) have no route timeout; the WebRTC offer
  (``POST /webrtc/offer``) is an ordinary request with one.  Only the offer passes the
  gateway: the media flows over UDP straight to the server whose ICE candidates the
  answer carries (docs/gateway.md).
* Every response names the server that answered (``x-halfsec-upstream``), so a client
  or the lab can tell where a session landed without asking Envoy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from halfsec.gateway.upstream import GatewayError, Upstream, zone_priorities
from halfsec.options_check import CommandFlags, at_least, between, check_fields, flags_of

__all__ = [
    "CLUSTER",
    "GatewayOptions",
    "STAT_PREFIX",
    "UPSTREAM_HEADER",
    "build_envoy_config",
]

CLUSTER = "halfsec"
STAT_PREFIX = "halfsec_gateway"
"""Envoy stats of the listener's HTTP connection manager: ``http.halfsec_gateway.*``."""
UPSTREAM_HEADER = "x-halfsec-upstream"
"""Response header: the ``NAME`` of the ``--upstream`` that answered."""
GATEWAY_READY_PATH = "/gateway/ready"
"""Answered by Envoy itself: 200, or 503 once the gateway drains (for whatever sits in
front of it: a cloud load balancer, a Kubernetes readiness probe)."""
_META = "halfsec"

_RULES = {
    "port": between(0, 65535),
    "admin_port": between(0, 65535),
    "health_interval_s": between(0.05, 60, "s"),
    "health_timeout_s": between(0.01, 60, "s"),
    "unhealthy_threshold": between(1, 100),
    "healthy_threshold": between(1, 100),
    "connect_timeout_s": between(0.01, 60, "s"),
    "offer_timeout_s": between(0.1, 600, "s"),
    "consecutive_5xx": between(1, 1000),
    "ejection_s": between(0.1, 3600, "s"),
    "overprovisioning_factor": at_least(100, "%", 100_000),
    "drain_time_s": between(0, 3600, "s"),
    "drain_timeout_s": between(0, 86_400, "s"),
    "concurrency": between(1, 1024),
}
_KEYS = CommandFlags(
    "halfsec gateway",
    "GatewayOptions",
    flags_of(*_RULES),
)


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    """Everything ``halfsec gateway`` needs; the CLI and ``lab.regions`` build one."""

    upstreams: tuple[Upstream, ...]
    zone: str | None = None
    """The gateway's own zone (priority 0); None: the first upstream's zone."""
    host: str = "127.0.0.1"
    port: int = 8780
    admin_host: str = "127.0.0.1"
    admin_port: int = 0
    """Envoy's admin interface (stats, /clusters, /ready); 0: any free port, reported
    through ``--admin-address-path``.  Keep it on loopback: it can stop Envoy."""
    health_path: str = "/ready"
    health_interval_s: float = 0.5
    health_timeout_s: float = 0.4
    unhealthy_threshold: int = 2
    healthy_threshold: int = 2
    connect_timeout_s: float = 1.0
    offer_timeout_s: float = 15.0
    consecutive_5xx: int = 3
    ejection_s: float = 10.0
    overprovisioning_factor: int = 140
    drain_time_s: int = 2
    """Envoy's graceful drain: how long after SIGTERM the listener still accepts (for a
    load balancer in front to notice ``/gateway/ready`` failing)."""
    drain_timeout_s: float = 120.0
    """After SIGTERM, how long open sessions may go on before Envoy stops regardless."""
    concurrency: int = 1
    """Envoy worker threads.  One thread carries thousands of voice sessions (a session
    is ~50 small messages a second); more only compete with the servers for cores."""

    def __post_init__(self) -> None:
        check_fields(self, _RULES, _KEYS, GatewayError)
        if not self.upstreams:
            raise GatewayError("halfsec gateway needs at least one --upstream NAME=URL[@zone]")
        names = [u.name for u in self.upstreams]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise GatewayError(f"--upstream names must be unique; repeated: {', '.join(dup)}")
        addrs = [u.address for u in self.upstreams]
        dup = sorted({a for a in addrs if addrs.count(a) > 1})
        if dup:
            raise GatewayError(f"two --upstream entries point at the same server: {dup}")
        if not self.health_path.startswith("/"):
            raise GatewayError(f"--health-path {self.health_path!r} must start with '/'")
        if self.health_timeout_s >= self.health_interval_s:
            raise GatewayError(
                f"--health-timeout-s ({self.health_timeout_s:g}) must be shorter than "
                f"--health-interval-s ({self.health_interval_s:g}), or checks pile up"
            )

    @property
    def own_zone(self) -> str:
        if self.zone is not None:
            return self.zone
        return self.upstreams[0].zone or "local"

    def priorities(self) -> dict[str, int]:
        return zone_priorities(self.upstreams, self.own_zone)

    def zone_of(self, upstream: Upstream) -> str:
        return upstream.zone_or(self.own_zone)

    def failover_budget_s(self) -> float:
        """Worst time for a dead server to stop getting sessions by health checks alone
        (outlier detection usually ejects it sooner, at the first refused connect)."""
        return self.unhealthy_threshold * self.health_interval_s + self.health_timeout_s


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}s"


def _endpoint(u: Upstream) -> dict[str, Any]:
    return {
        "endpoint": {
            "address": {"socket_address": {"address": u.host, "port_value": u.port}},
            "hostname": u.name,
        },
        "metadata": {"filter_metadata": {_META: {"name": u.name}}},
    }


def _load_assignment(o: GatewayOptions) -> dict[str, Any]:
    prio = o.priorities()
    groups: dict[str, list[Upstream]] = {}
    for u in o.upstreams:
        groups.setdefault(o.zone_of(u), []).append(u)
    return {
        "cluster_name": CLUSTER,
        "endpoints": [
            {
                "locality": {"zone": zone},
                "priority": prio[zone],
                "lb_endpoints": [_endpoint(u) for u in members],
            }
            for zone, members in sorted(groups.items(), key=lambda kv: prio[kv[0]])
        ],
        "policy": {"overprovisioning_factor": o.overprovisioning_factor},
    }


def _cluster(o: GatewayOptions) -> dict[str, Any]:
    return {
        "name": CLUSTER,
        # A DNS name (Kubernetes services, compose) is resolved and re-resolved by Envoy.
        "type": "STATIC" if all(u.is_ip for u in o.upstreams) else "STRICT_DNS",
        "connect_timeout": _duration(o.connect_timeout_s),
        "lb_policy": "LEAST_REQUEST",
        "common_lb_config": {"healthy_panic_threshold": {"value": 0.0}},
        "load_assignment": _load_assignment(o),
        "health_checks": [
            {
                "timeout": _duration(o.health_timeout_s),
                "interval": _duration(o.health_interval_s),
                "no_traffic_interval": _duration(o.health_interval_s),
                "unhealthy_interval": _duration(o.health_interval_s),
                "unhealthy_threshold": o.unhealthy_threshold,
                "healthy_threshold": o.healthy_threshold,
                "interval_jitter": "0s",
                "reuse_connection": True,
                "http_health_check": {"path": o.health_path},
            }
        ],
        "outlier_detection": {
            "consecutive_5xx": o.consecutive_5xx,
            "consecutive_gateway_failure": o.consecutive_5xx,
            # Local-origin errors (connect failures, resets) are counted apart and never
            # eject: Envoy reports the reset that ends every WebSocket as one
            # (envoyproxy/envoy#24690), so a busy healthy server would be ejected by its
            # own sessions hanging up.  A refused connect is retried on another server
            # (the routes' retry policy) and the health check takes a dead one out.
            "split_external_local_origin_errors": True,
            "enforcing_consecutive_local_origin_failure": 0,
            "interval": _duration(min(1.0, o.health_interval_s * 2)),
            "base_ejection_time": _duration(o.ejection_s),
            "max_ejection_percent": 100,
            # Success-rate ejection needs volume a voice fleet rarely has per interval.
            "enforcing_success_rate": 0,
        },
    }


def _routes(o: GatewayOptions) -> list[dict[str, Any]]:
    to_servers = {"cluster": CLUSTER}
    # A refused or reset connect, or a server's 503 ``busy`` (saturated or draining, sent
    # before the upgrade, so nothing of the session is lost) is retried on another
    # server, never the same one ...
    retry = {
        "retry_on": "connect-failure,reset,refused-stream,retriable-status-codes",
        "retriable_status_codes": [503],
        "num_retries": 2,
        # A refused connect on loopback or in a region fails in microseconds: no need
        # for Envoy's default 25 ms back-off before the next server.
        "retry_back_off": {"base_interval": "0.002s", "max_interval": "0.020s"},
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host."
                    "previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 3,
        # ... and in the next zone when the near one has no other server: the priority
        # load still says "all near" until the health check sees the server gone.
        "retry_priority": {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.priority."
                "previous_priorities.v3.PreviousPrioritiesConfig",
                "update_frequency": 1,
            },
        },
    }
    session = {**to_servers, "timeout": "0s", "retry_policy": retry}
    own = "Ask each server directly: behind the gateway this would be a random server's.\n"
    return [
        {"match": {"path": "/ws"}, "route": session},
        {"match": {"path": "/twilio"}, "route": session},
        {
            "match": {"path": "/webrtc/offer"},
            "route": {**to_servers, "timeout": _duration(o.offer_timeout_s), "retry_policy": retry},
        },
        {
            "match": {"path": o.health_path},
            "direct_response": {"status": 404, "body": {"inline_string": own}},
        },
        {
            "match": {"path": "/metrics"},
            "direct_response": {"status": 404, "body": {"inline_string": own}},
        },
        # The page, its static files, /healthz: ordinary requests to a ready server.
        {
            "match": {"prefix": "/"},
            "route": {**to_servers, "timeout": "30s", "retry_policy": retry},
        },
    ]


def _listener(o: GatewayOptions) -> dict[str, Any]:
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": STAT_PREFIX,
        "codec_type": "AUTO",
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        # Sessions send audio every 20 ms; 5 minutes of silence on a stream is a dead peer.
        "stream_idle_timeout": "300s",
        # When the server behind a WebSocket dies, Envoy would hold the client's side open
        # for its default 1 s delayed close before the client learns it must reconnect:
        # measured in the regions lab as ~1.06 s of a 1.47 s failover.  A voice client
        # reconnects at once, so close at once (88 ms on loopback).
        "delayed_close_timeout": "0s",
        "use_remote_address": True,
        "route_config": {
            "name": "halfsec",
            "response_headers_to_add": [
                {
                    "header": {
                        "key": UPSTREAM_HEADER,
                        "value": f"%UPSTREAM_METADATA({_META}:name)%",
                    },
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ],
            "virtual_hosts": [{"name": "halfsec", "domains": ["*"], "routes": _routes(o)}],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.health_check",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http."
                    "health_check.v3.HealthCheck",
                    "pass_through_mode": False,
                    "headers": [{"name": ":path", "string_match": {"exact": GATEWAY_READY_PATH}}],
                },
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            },
        ],
    }
    return {
        "name": "halfsec",
        "address": {"socket_address": {"address": o.host, "port_value": o.port}},
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }


def build_envoy_config(o: GatewayOptions) -> dict[str, Any]:
    """The whole Envoy bootstrap for ``o`` (JSON-able; Envoy reads it as ``.json``)."""
    if not o.upstreams:  # pragma: no cover - GatewayOptions refuses this already
        raise GatewayError("no upstreams")
    return {
        "node": {"id": "halfsec-gateway", "cluster": "halfsec", "locality": {"zone": o.own_zone}},
        "admin": {
            "address": {"socket_address": {"address": o.admin_host, "port_value": o.admin_port}}
        },
        "static_resources": {"listeners": [_listener(o)], "clusters": [_cluster(o)]},
    }

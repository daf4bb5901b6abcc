"""Where sessions went: per-upstream figures from Envoy's admin ``/clusters?format=json``.

The lab (``lab.regions``) and the tests read these instead of parsing Envoy's text
formats themselves.  Each row is keyed by the ``--upstream`` NAME (Envoy reports it as
the endpoint's ``hostname``, set by ``config``), with the zone and priority the gateway
gave it, whether Envoy would send it a session now, and its request counters: a
WebSocket session is one request, so ``rq_total`` counts sessions (and page fetches)
and ``rq_active`` the open ones.  Health-check traffic is not counted there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import aiohttp

from halfsec.gateway.config import CLUSTER
from halfsec.gateway.envoy_process import EnvoyGateway

__all__ = ["UpstreamStat", "fetch_upstream_stats", "main", "parse_upstream_stats"]


@dataclass(frozen=True, slots=True)
class UpstreamStat:
    """One server as Envoy sees it (``as_dict`` is the stable JSON form)."""

    name: str
    address: str
    zone: str
    priority: int
    healthy: bool
    """Envoy would pick it now: no failed health check, not ejected, not draining."""
    failed_health_check: bool
    ejected: bool
    rq_total: int
    rq_active: int
    cx_active: int
    cx_connect_fail: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stat(host: dict[str, Any], name: str) -> int:
    for s in host.get("stats", []):
        if s.get("name") == name:
            return int(s.get("value", 0))
    return 0


def parse_upstream_stats(clusters: dict[str, Any]) -> dict[str, UpstreamStat]:
    """NAME -> ``UpstreamStat`` from the JSON of ``/clusters?format=json``."""
    out: dict[str, UpstreamStat] = {}
    for cluster in clusters.get("cluster_statuses", []):
        if cluster.get("name") != CLUSTER:
            continue
        for h in cluster.get("host_statuses", []):
            sock = h.get("address", {}).get("socket_address", {})
            address = f"{sock.get('address', '')}:{sock.get('port_value', 0)}"
            health = h.get("health_status", {})
            failed_hc = bool(health.get("failed_active_health_check"))
            ejected = bool(health.get("failed_outlier_check"))
            other_bad = any(
                bool(health.get(k))
                for k in (
                    "failed_active_degraded_check",
                    "pending_active_hc",
                    "pending_dynamic_removal",
                )
            ) or health.get("eds_health_status", "HEALTHY") not in ("HEALTHY", "UNKNOWN")
            name = str(h.get("hostname") or address)
            out[name] = UpstreamStat(
                name=name,
                address=address,
                zone=str(h.get("locality", {}).get("zone", "")),
                priority=int(h.get("priority", 0)),
                healthy=not (failed_hc or ejected or other_bad),
                failed_health_check=failed_hc,
                ejected=ejected,
                rq_total=_stat(h, "rq_total"),
                rq_active=_stat(h, "rq_active"),
                cx_active=_stat(h, "cx_active"),
                cx_connect_fail=_stat(h, "cx_connect_fail"),
            )
    return out


async def fetch_upstream_stats(gateway: EnvoyGateway | str) -> dict[str, UpstreamStat]:
    """The current figures of a running gateway, or of the one whose admin interface is
    at ``gateway`` (``http://127.0.0.1:PORT``, what ``halfsec gateway`` prints)."""
    if isinstance(gateway, EnvoyGateway):
        return parse_upstream_stats(await gateway.admin("GET", "/clusters?format=json"))
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3.0)) as http,
        http.get(f"{gateway.rstrip('/')}/clusters?format=json") as r,
    ):
        r.raise_for_status()
        return parse_upstream_stats(await r.json(content_type=None))


def main(argv: list[str] | None = None) -> int:
    """``python -m halfsec.gateway.stats ADMIN_URL``: the rows as one JSON object, for a
    program that spawned ``halfsec gateway`` and may not import this package."""
    import argparse
    import asyncio
    import json
    import sys

    ap = argparse.ArgumentParser(prog="python -m halfsec.gateway.stats", description=main.__doc__)
    ap.add_argument("admin_url", help="Envoy's admin URL (admin_url of --info-file).")
    args = ap.parse_args(argv)
    try:
        rows = asyncio.run(fetch_upstream_stats(args.admin_url))
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        print(
            f"error: cannot read {args.admin_url}/clusters ({e}); is the gateway running?",
            file=sys.stderr,
        )
        return 2
    print(json.dumps({name: row.as_dict() for name, row in rows.items()}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

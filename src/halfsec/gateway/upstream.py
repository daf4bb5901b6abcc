"""One ``--upstream NAME=URL[@zone]``: a halfsec server the gateway may send sessions to.

The gateway routes by zone, so each server says where it stands.  ``NAME`` is what the
gateway reports (the ``x-halfsec-upstream`` response header, ``upstream_stats``) and must
be unique; ``URL`` is the server's base (``http://10.0.0.2:8765``; ``ws://``, a path such
as ``/ws`` and no scheme at all are accepted because users paste what ``halfsec serve``
printed); ``@zone`` is its locality.  A server without ``@zone`` stands in the gateway's
own zone.  Errors say which part of which ``--upstream`` is wrong and how to write it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from halfsec.errors import HalfsecError

__all__ = ["GatewayError", "Upstream", "parse_upstream", "zone_priorities"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_FORM = "NAME=URL[@zone], e.g. near1=http://127.0.0.1:8765@near"


class GatewayError(HalfsecError):
    """A gateway option or upstream is invalid, or Envoy could not run it."""


@dataclass(frozen=True, slots=True)
class Upstream:
    """A halfsec server behind the gateway."""

    name: str
    host: str
    """IP address or DNS name (a name makes the cluster resolve it: STRICT_DNS)."""
    port: int
    zone: str | None = None
    """Its locality; None: the gateway's own zone."""

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @property
    def address(self) -> str:
        """``host:port`` as Envoy reports it in ``/clusters`` (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def zone_or(self, own: str) -> str:
        return self.zone if self.zone is not None else own


def parse_upstream(spec: str) -> Upstream:
    """``NAME=URL[@zone]`` -> ``Upstream``; ``GatewayError`` saying what to fix."""
    name, sep, rest = spec.partition("=")
    if not sep or not rest:
        raise GatewayError(f"--upstream {spec!r} is not {_FORM}")
    if not _NAME.match(name):
        raise GatewayError(
            f"--upstream {spec!r}: name {name!r} must be letters, digits, '_', '.' or '-' "
            "(at most 63, starting with a letter or digit)"
        )
    zone: str | None = None
    # The zone follows the last '@' after the authority (a URL may hold user@host).
    url, at, z = rest.rpartition("@")
    if at and "/" not in z and ":" not in z:
        if not _NAME.match(z):
            raise GatewayError(
                f"--upstream {spec!r}: zone {z!r} must be letters, digits, '_', '.' or '-'"
            )
        rest, zone = url, z
    s = rest if "://" in rest else f"http://{rest}"
    u = urlsplit(s)
    if u.scheme not in ("http", "ws"):
        raise GatewayError(
            f"--upstream {spec!r}: scheme {u.scheme!r} is not supported; the gateway reaches "
            "servers over http:// (ws:// is read as http://); TLS ends at the gateway"
        )
    try:
        port = u.port
    except ValueError as e:
        raise GatewayError(f"--upstream {spec!r}: bad port ({e})") from e
    if not u.hostname or port is None or port == 0:
        raise GatewayError(f"--upstream {spec!r}: URL needs a host and a port ({_FORM})")
    if u.username or u.password or u.query or u.fragment:
        raise GatewayError(f"--upstream {spec!r}: URL must be http://HOST:PORT (no user or query)")
    return Upstream(name=name, host=u.hostname, port=port, zone=zone)


def zone_priorities(upstreams: tuple[Upstream, ...], own_zone: str) -> dict[str, int]:
    """Zone -> Envoy priority: the gateway's own zone is 0, the other zones follow in the
    order they first appear among the upstreams (list nearer zones first).  Zones are
    ranked, not measured: the operator knows which region is next nearest.

    Priorities, not locality weights, because failover must be all-or-nothing while the
    near zone is healthy: every session stays near until health checks or outlier
    detection take the near servers out, then the next priority takes the traffic."""
    zones = [u.zone_or(own_zone) for u in upstreams]
    # Priorities must run 0..N without a gap: a gateway in a zone with no server of its
    # own starts at the first zone listed.
    order = [own_zone] if own_zone in zones else []
    for u in upstreams:
        z = u.zone_or(own_zone)
        if z not in order:
            order.append(z)
    return {z: i for i, z in enumerate(order)}

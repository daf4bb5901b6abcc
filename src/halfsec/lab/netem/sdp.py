"""SDP candidate rewriting: how a relay is put in front of a WebRTC peer.

A peer reaches the other at the address in the other's ICE candidates.  Rewrite those
(and the SDP's default addresses) to a relay's address, and every packet crosses the
relay; start the relay with the original candidate as its target, and it forwards.
Used by the Python WebRTC client (which rewrites its own offer and answer) and by
``rtc_path`` (which rewrites a browser's on the way through the signaling proxy)."""

from __future__ import annotations

import ipaddress
import re

from halfsec.errors import HalfsecError

__all__ = [
    "SdpError",
    "host_candidate_port",
    "ipv4_host_candidate",
    "only_candidate",
    "rewrite_candidates",
]

_HOST_CAND = re.compile(r"^(a=candidate:\S+ \d+ udp \d+ )(\S+) (\d+)( typ host.*)$", re.M | re.I)
"""A UDP host candidate, in four parts: prefix, address, port, rest of the line."""
_CAND = re.compile(r"^a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ host\b", re.M | re.I)
_ANY_CAND = re.compile(r"^a=candidate:[^\r\n]*\r?\n", re.M)


class SdpError(HalfsecError):
    """The SDP offers nothing a relay can stand in front of."""


def rewrite_candidates(sdp: str, port: int, host: str = "127.0.0.1") -> str:
    """Point every host candidate (and the m-line's default address) at ``host:port``."""
    out = _HOST_CAND.sub(lambda m: f"{m.group(1)}{host} {port}{m.group(4)}", sdp)
    out = re.sub(r"^(m=audio )\d+", rf"\g<1>{port}", out, flags=re.M)
    out = re.sub(r"^(m=application )\d+", rf"\g<1>{port}", out, flags=re.M)
    return re.sub(r"^c=IN IP4 \S+", f"c=IN IP4 {host}", out, flags=re.M)


def host_candidate_port(sdp: str) -> int | None:
    """The port of the first UDP host candidate, or None when there is none."""
    m = _HOST_CAND.search(sdp)
    return int(m.group(3)) if m is not None else None


def ipv4_host_candidate(sdp: str) -> tuple[str, int]:
    """The first UDP host candidate with an IPv4 address: what relay B forwards to.

    mDNS names (``<uuid>.local``, Chromium's default) and IPv6 cannot be relayed (the
    relay speaks IPv4 and cannot resolve mDNS), hence the explicit error."""
    seen = []
    for m in _CAND.finditer(sdp):
        host, port = m.group(1), int(m.group(2))
        seen.append(host)
        try:
            if ipaddress.ip_address(host).version == 4:
                return host, port
        except ValueError:
            continue
    raise SdpError(
        f"the SDP has no IPv4 UDP host candidate (found: {seen or 'none'}); a browser "
        "must run with --disable-features=WebRtcHideLocalIpsWithMdns and have an IPv4 "
        "interface with a default route"
    )


def only_candidate(sdp: str, host: str, port: int) -> str:
    """``sdp`` with one host candidate left, at ``host:port``, and every default address
    pointing there too."""
    chosen = ipv4_host_candidate(sdp)

    def keep_chosen(m: re.Match[str]) -> str:
        c = _CAND.match(m.group(0))
        return m.group(0) if c and (c.group(1), int(c.group(2))) == chosen else ""

    # IPv6, TCP and mDNS candidates go: the relay cannot stand in front of them.
    return rewrite_candidates(_ANY_CAND.sub(keep_chosen, sdp), port, host)

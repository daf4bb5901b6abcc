"""Network lab: make loopback behave like Wi-Fi, 4G, 3G or a satellite link.

A latency number measured on loopback says nothing about what a caller on a phone
hears.  This package impairs real traffic reproducibly so the same bench can be run
"over 4G":

* :mod:`~halfsec.lab.netem.profile` -- named profiles and the ``--net`` spec string;
* :mod:`~halfsec.lab.netem.impair` -- the seeded per-packet model (loss, bursts, jitter,
  reordering, duplication, bandwidth);
* :mod:`~halfsec.lab.netem.udp_relay` / :mod:`~halfsec.lab.netem.tcp_relay` -- asyncio
  relays on 127.0.0.1 that apply a spec per direction to UDP datagrams / a TCP stream;
* :mod:`~halfsec.lab.netem.namespaces` -- the same relays between real network
  namespaces, with the kernel's drop (nftables) on veth links (the relays pace the rate);
* :mod:`~halfsec.lab.netem.probe` / :mod:`~halfsec.lab.netem.measure` -- stamped UDP probes
  and what their receiver saw (delay, jitter, loss), to check a relay against its spec;
* :mod:`~halfsec.lab.netem.packet_sim` -- the same per-packet model applied to an RTP
  audio stream in simulated time, feeding a jitter buffer without sockets or sleeping
  (not imported here: it brings in ``wire.jitter``, which the relays do not need).

The kernel's ``netem`` qdisc is not required (and is absent on some CI kernels).
"""

from halfsec.lab.netem.impair import Decision, Impairment, TcpImpairment, simulate
from halfsec.lab.netem.measure import PathReport, summarize
from halfsec.lab.netem.profile import (
    PROFILES,
    GilbertElliott,
    NetSpec,
    NetSpecError,
    parse_net,
    parse_spec,
)

__all__ = [
    "PROFILES",
    "Decision",
    "GilbertElliott",
    "Impairment",
    "NetSpec",
    "NetSpecError",
    "PathReport",
    "TcpImpairment",
    "parse_net",
    "parse_spec",
    "simulate",
    "summarize",
]

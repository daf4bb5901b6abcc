"""Namespace mode: impair real kernel network paths, not just loopback sockets.

Loopback skips most of the kernel's network stack (no qdisc, no veth, MTU 64 KiB).
Namespace mode builds a small isolated network instead::

    hs-cli-<id>                 hs-mid-<id>                    hs-srv-<id>
    c0 169.254.231.1/30 <-veth-> m-cli 169.254.231.2/30
                                m-srv 169.254.231.5/30 <-veth-> s0 169.254.231.6/30

The middle namespace does NOT route between its two links (forwarding stays off), so
the only way from client to server is the userspace relay bound in the middle
namespace: client -> 169.254.231.2:port -> relay -> 169.254.231.6:port.  The relay
applies delay, jitter, GE bursts, reordering, duplication and the bandwidth cap (the
kernel here has no ``netem``); with ``kernel_impair=True`` (default) the random loss is
applied by an nftables ``numgen random`` rule on the middle namespace's input, so it
goes through real kernel code (and TCP's real retransmission).  Kernel random loss is
not seeded -- use ``kernel_impair=False`` when a run must be bit-for-bit reproducible.

Why the rate cap is the relay's and not a ``tbf`` qdisc (as it was until 2026-12-01):
a kernel shaper's queue is a real delay the relay cannot see, so the lab's own figures
left it out -- ``--pcap`` showed the down path over ``4g`` (10 Mbit/s, TTS audio in
bursts of up to 64 KB, ~50 ms to serialize) up to 53 ms slower on the wire than the
relay reported.  The relay now serializes each chunk in MSS-sized pieces at the
profile's rate (``TcpImpairment.pieces``; the UDP relay per datagram), so every byte's
queueing delay is measured where it happens, and the kernel sends each piece at once.

The addresses are link-local (169.254.0.0/16) and exist only inside these
namespaces; nothing is added to the host's own namespace, and nothing is routed
anywhere.  Sockets are created inside a namespace by a short-lived thread that calls
``setns(2)`` (a socket keeps the namespace it was created in), so the relays and the
test's client and server all run in this process's event loop.

Needs root, ``ip`` (iproute2), ``tc`` and ``nft``; see ``setup_host.sh`` next to this
file.  :func:`namespaces_supported` says whether this host can do it and why not.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from types import TracebackType

from halfsec.lab.netem.profile import NetSpec
from halfsec.lab.netem.tcp_relay import TcpRelay
from halfsec.lab.netem.udp_relay import SocketFactory, UdpRelay, as_spec

__all__ = [
    "NamespaceLab",
    "enter_netns",
    "namespaces_supported",
    "remove_stale",
    "socket_in_netns",
]

_CLONE_NEWNET = 0x40000000
_CMD_TIMEOUT_S = 10.0
_counter = itertools.count()

CLI_ADDR = "169.254.231.1"
MID_CLI_ADDR = "169.254.231.2"
MID_SRV_ADDR = "169.254.231.5"
SRV_ADDR = "169.254.231.6"


def _run(*args: str, input_text: str | None = None) -> None:
    """Run one iproute2/nft command; raise with its stderr, never hang."""
    proc = subprocess.run(
        list(args),
        input=input_text,
        capture_output=True,
        text=True,
        timeout=_CMD_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def socket_in_netns(netns: str) -> SocketFactory:
    """A factory making sockets inside ``netns`` (by name, as ``ip netns`` knows it).

    Python 3.11 has no ``os.setns``; libc's ``setns`` moves only the calling thread, so
    a throwaway thread switches, creates the socket and exits, leaving the caller's
    threads where they were."""
    path = f"/run/netns/{netns}"

    def make(family: int, type_: int) -> socket.socket:
        result: list[socket.socket] = []
        error: list[BaseException] = []

        def worker() -> None:
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    if _libc().setns(fd, _CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns({path}): {os.strerror(err)}")
                finally:
                    os.close(fd)
                result.append(socket.socket(family, type_))
            except BaseException as exc:  # handed to the caller below
                error.append(exc)

        t = threading.Thread(target=worker, name=f"setns-{netns}", daemon=True)
        t.start()
        t.join(_CMD_TIMEOUT_S)
        if error:
            raise error[0]
        if not result:
            raise TimeoutError(f"creating a socket in {netns} timed out")
        return result[0]

    return make


def _setns(fd: int, what: str) -> None:
    if _libc().setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns({what}): {os.strerror(err)}")


@contextmanager
def enter_netns(netns: str) -> Iterator[None]:
    """Move the *calling thread* into ``netns`` for the block, then back where it was.

    Why a whole thread and not a socket factory: the bench's clients (aiohttp, aiortc's
    ICE, a Chromium child process) create their sockets deep inside libraries that take
    no factory.  Switching the event loop's thread makes every socket it creates, and
    every child process it forks, belong to ``netns`` -- the client namespace -- while
    other threads (span exporters, executor workers started earlier) stay put.  Only
    this thread moves (libc ``setns`` is per thread) and it is moved back even when
    the block raises, so a bench run leaves the process as it found it."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            _setns(fd, f"/run/netns/{netns}")
        finally:
            os.close(fd)
        try:
            yield
        finally:
            _setns(own, "the thread's own namespace")
    finally:
        os.close(own)


def namespaces_supported() -> tuple[bool, str]:
    """``(True, "")`` if this host can run namespace mode, else ``(False, why)``."""
    if os.geteuid() != 0:
        return False, "namespace mode needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)"
    for tool, pkg in (("ip", "iproute2"), ("tc", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return False, f"{tool!r} not found; install {pkg} (src/halfsec/lab/netem/setup_host.sh)"
    probe = f"hs-probe-{os.getpid()}-{next(_counter)}"
    try:
        _run("ip", "netns", "add", probe)
        socket_in_netns(probe)(socket.AF_INET, socket.SOCK_DGRAM).close()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return False, f"cannot create a network namespace: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=_CMD_TIMEOUT_S)
    return True, ""


class NamespaceLab:
    """Three namespaces, two veth links, relays in the middle; always cleaned up.

    ``with NamespaceLab(up="4g", down="4g") as lab:`` then, inside an event loop,
    ``async with lab.udp_relay(port) as relay:`` -- the client (sockets from
    ``lab.client_socket``) sends to ``(lab.relay_host, relay.port)`` and the server
    listens on ``(lab.server_host, port)`` with sockets from ``lab.server_socket``."""

    relay_host = MID_CLI_ADDR
    server_host = SRV_ADDR
    client_host = CLI_ADDR

    def __init__(
        self,
        up: NetSpec | str | None = None,
        down: NetSpec | str | None = None,
        *,
        lab_id: str | None = None,
        kernel_impair: bool = True,
        client_default_route: bool = False,
    ) -> None:
        self.up = as_spec(up)
        self.down = as_spec(down)
        # "<pid hex>-<n>": unique per process, and lets remove_stale() find orphans.
        self.lab_id = lab_id or f"{os.getpid():x}-{next(_counter)}"
        self.kernel_impair = kernel_impair
        self.client_default_route = client_default_route
        """Give the client namespace a default route via the middle.  Chromium gathers
        WebRTC host candidates only on an interface that carries a default route; the
        middle still does not forward, so the relay stays the only path (a packet sent
        straight to the server is dropped in the middle instead of failing with
        ``ENETUNREACH``)."""
        self.cli_ns = f"hs-cli-{self.lab_id}"
        self.mid_ns = f"hs-mid-{self.lab_id}"
        self.srv_ns = f"hs-srv-{self.lab_id}"
        self.client_socket = socket_in_netns(self.cli_ns)
        self.relay_socket = socket_in_netns(self.mid_ns)
        self.server_socket = socket_in_netns(self.srv_ns)

    @property
    def namespaces(self) -> tuple[str, str, str]:
        return self.cli_ns, self.mid_ns, self.srv_ns

    # -- setup / teardown ------------------------------------------------------------------

    def __enter__(self) -> NamespaceLab:
        try:
            self._create()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def _create(self) -> None:
        for ns in self.namespaces:
            _run("ip", "netns", "add", ns)
        # veths are born inside their namespaces: no names ever appear on the host.
        _run(
            "ip",
            "link",
            "add",
            "c0",
            "netns",
            self.cli_ns,
            "type",
            "veth",
            "peer",
            "name",
            "m-cli",
            "netns",
            self.mid_ns,
        )
        _run(
            "ip",
            "link",
            "add",
            "s0",
            "netns",
            self.srv_ns,
            "type",
            "veth",
            "peer",
            "name",
            "m-srv",
            "netns",
            self.mid_ns,
        )
        for ns, dev, addr in (
            (self.cli_ns, "c0", CLI_ADDR),
            (self.mid_ns, "m-cli", MID_CLI_ADDR),
            (self.mid_ns, "m-srv", MID_SRV_ADDR),
            (self.srv_ns, "s0", SRV_ADDR),
        ):
            _run("ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
        for ns in self.namespaces:
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        if self.client_default_route:
            _run("ip", "-n", self.cli_ns, "route", "add", "default", "via", MID_CLI_ADDR)
        # The relay must be the only path: no kernel forwarding in the middle.
        _run("ip", "netns", "exec", self.mid_ns, "sysctl", "-qw", "net.ipv4.ip_forward=0")
        if self.kernel_impair:
            self._kernel_impairments()

    def _kernel_impairments(self) -> None:
        # Up traffic enters the middle on m-cli, down on m-srv: drop there, before the relay.
        rules = []
        for dev, spec in (("m-cli", self.up), ("m-srv", self.down)):
            per10k = round(spec.loss * 10000)
            if per10k > 0:
                rules.append(f'iifname "{dev}" numgen random mod 10000 < {per10k} counter drop')
        if rules:
            body = "\n".join(f"    {r}" for r in rules)
            ruleset = (
                "table inet halfsec_netem {\n"
                "  chain input {\n"
                "    type filter hook input priority 0; policy accept;\n"
                f"{body}\n"
                "  }\n"
                "}\n"
            )
            _run("ip", "netns", "exec", self.mid_ns, "nft", "-f", "-", input_text=ruleset)

    def cleanup(self) -> None:
        """Delete the namespaces (their veths, qdiscs and nft tables go with them).

        Idempotent and best effort per namespace, so one failure cannot leave the
        others behind."""
        for ns in self.namespaces:
            if os.path.exists(f"/run/netns/{ns}"):
                subprocess.run(
                    ["ip", "netns", "del", ns], capture_output=True, timeout=_CMD_TIMEOUT_S
                )

    def exists(self) -> bool:
        return any(os.path.exists(f"/run/netns/{ns}") for ns in self.namespaces)

    # -- relays ----------------------------------------------------------------------------

    def relay_specs(self) -> tuple[NetSpec, NetSpec]:
        """What the userspace relay still has to apply once the kernel took its share
        (the random loss; everything else, the rate cap included, is the relay's)."""
        if not self.kernel_impair:
            return self.up, self.down
        return replace(self.up, loss=0.0), replace(self.down, loss=0.0)

    def udp_relay(self, port: int) -> UdpRelay:
        """A UDP relay in the middle namespace: relay_host:port -> server_host:port."""
        up, down = self.relay_specs()
        return UdpRelay(
            listen=(MID_CLI_ADDR, port),
            target=(SRV_ADDR, port),
            up=up,
            down=down,
            socket_factory=self.relay_socket,
        )

    def tcp_relay(self, port: int, listen_port: int | None = None) -> TcpRelay:
        """A TCP relay in the middle namespace: relay_host:listen_port (default ``port``;
        0 = any free port) -> server_host:port.  TCP retransmits kernel drops itself, so
        with ``kernel_impair`` the nft loss shows up as real retransmission delay."""
        up, down = self.relay_specs()
        return TcpRelay(
            listen=(MID_CLI_ADDR, port if listen_port is None else listen_port),
            target=(SRV_ADDR, port),
            up=up,
            down=down,
            socket_factory=self.relay_socket,
        )

    def nft_counters(self) -> str:
        """The nft ruleset with packet counters (what the kernel actually dropped)."""
        proc = subprocess.run(
            ["ip", "netns", "exec", self.mid_ns, "nft", "list", "ruleset"],
            capture_output=True,
            text=True,
            timeout=_CMD_TIMEOUT_S,
            check=False,
        )
        return proc.stdout


def remove_stale() -> list[str]:
    """Delete ``hs-{cli,mid,srv}-<pid>-<n>`` namespaces whose creating process is gone.

    ``with NamespaceLab`` cleans up on every exit Python sees; a SIGKILL'd test run is
    the one case it cannot, so CI may call this first.  Returns the names removed."""
    removed: list[str] = []
    try:
        names = os.listdir("/run/netns")
    except OSError:
        return removed
    for name in names:
        parts = name.split("-")
        if len(parts) != 4 or parts[0] != "hs" or parts[1] not in ("cli", "mid", "srv"):
            continue
        try:
            pid = int(parts[2], 16)
        except ValueError:
            continue
        if pid == os.getpid() or os.path.exists(f"/proc/{pid}"):
            continue
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=_CMD_TIMEOUT_S)
        removed.append(name)
    return removed

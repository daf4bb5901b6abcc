"""Two regions and a client on one machine: namespaces, veths and the lab's delay.

::

    hs-rc-<id> (client)        hs-rw-<id> (the WAN)             hs-rn-<id> / hs-rf-<id>
    c0 10.77.0.1/24 <-veth-> w-c 10.77.0.2                      (near / far region)
                             w-n 10.77.1.2 <-veth-> n0 10.77.1.1   server(s) :8765, gateway :8780
                             w-f 10.77.2.2 <-veth-> f0 10.77.2.1   server(s) :8765, gateway :8780

The WAN namespace does not forward (``ip_forward=0``): the only paths are the lab's TCP
relays bound in it (this kernel has no ``netem``; the relays apply delay and jitter per
direction, ``lab.netem.tcp_relay``).  Relays, each a direction pair:

* client -> near gateway: ``near`` spec (a few ms);
* client -> far gateway: ``far`` spec (the near delay + 40 ms each way: +80 ms RTT);
* near gateway -> far servers and far gateway -> near servers: ``inter`` (80 ms RTT),
  the path a gateway's next-priority zone takes.

Each region runs ``halfsec serve`` (``--resume-key``: one deployment, one key) and
``halfsec gateway --zone REGION`` with its own servers at priority 0 and the other
region's (through the inter-region relay) next.  Everything runs as a subprocess inside
its namespace (``ip netns exec``); the lab never imports the product.  A region is
killed with SIGKILL to every process in it: servers and gateway die at once, like a
region losing power, and their sockets answer with resets.

Addresses are 10.77.0.0/16 inside these namespaces only; nothing touches the host's
namespace.  Needs root, ``ip`` and the ``envoy`` binary (``halfsec gateway``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from halfsec.clock import now_ns
from halfsec.lab.netem.namespaces import socket_in_netns
from halfsec.lab.netem.profile import NetSpec, parse_net
from halfsec.lab.netem.tcp_relay import TcpRelay

__all__ = ["REGIONS", "Region", "RegionsLab", "RegionsSpec", "remove_stale_regions"]

SERVER_PORT = 8765
GATEWAY_PORT = 8780
REGIONS = ("near", "far")
_CMD_TIMEOUT_S = 10.0
_counter = itertools.count()


def _run(*args: str) -> None:
    proc = subprocess.run(
        list(args), capture_output=True, text=True, timeout=_CMD_TIMEOUT_S, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")


@dataclass(frozen=True)
class RegionsSpec:
    """The delays: client to near, client to far, and between the regions."""

    near: str = "delay=2ms,jitter=0.5ms"
    far: str = "delay=42ms,jitter=1ms"
    """Near + 40 ms each way: the far region is 80 ms RTT further."""
    inter: str = "delay=40ms,jitter=1ms"
    servers_per_region: int = 1
    """Servers per region (ports 8765, 8766, ...).  A gateway reaches the other region
    through one inter-region relay, to that region's first server."""


@dataclass
class Region:
    """One region's namespace, addresses and processes."""

    name: str
    ns: str
    addr: str
    wan_addr: str
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)
    servers: list[asyncio.subprocess.Process] = field(default_factory=list)
    gateway_url: str = ""
    """The client-side URL of this region's gateway (through its relay)."""
    killed_at_ns: int | None = None


class RegionsLab:
    """``with RegionsLab() as lab:`` builds the namespaces; ``async with lab.running():``
    starts relays, servers and gateways; every exit removes all of it."""

    def __init__(
        self, spec: RegionsSpec | None = None, token: str = "", resume_key: str = ""
    ) -> None:
        self.spec = spec or RegionsSpec()
        self.lab_id = f"{os.getpid():x}-{next(_counter)}"
        self.token = token
        self.resume_key = resume_key
        self.client_ns = f"hs-rc-{self.lab_id}"
        self.wan_ns = f"hs-rw-{self.lab_id}"
        self.regions = {
            "near": Region("near", f"hs-rn-{self.lab_id}", "10.77.1.1", "10.77.1.2"),
            "far": Region("far", f"hs-rf-{self.lab_id}", "10.77.2.1", "10.77.2.2"),
        }
        self.client_addr, self.wan_client_addr = "10.77.0.1", "10.77.0.2"
        self.relays: list[TcpRelay] = []
        self.logs = Path(tempfile.mkdtemp(prefix="halfsec-regions-"))
        self.keep_logs = False
        """Keep the processes' logs (``self.logs``) after cleanup, for a post-mortem."""

    @property
    def namespaces(self) -> list[str]:
        return [self.client_ns, self.wan_ns, *(r.ns for r in self.regions.values())]

    # -- namespaces ---------------------------------------------------------------------
    def __enter__(self) -> RegionsLab:
        try:
            self._create()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    def _create(self) -> None:
        for ns in self.namespaces:
            _run("ip", "netns", "add", ns)
        links = [(self.client_ns, "c0", self.client_addr, "w-c", self.wan_client_addr)]
        links += [
            (r.ns, f"{r.name[0]}0", r.addr, f"w-{r.name[0]}", r.wan_addr)
            for r in self.regions.values()
        ]
        for ns, dev, addr, wdev, waddr in links:
            _run(
                "ip",
                "link",
                "add",
                dev,
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                wdev,
                "netns",
                self.wan_ns,
            )
            for n, d, a in ((ns, dev, addr), (self.wan_ns, wdev, waddr)):
                _run("ip", "-n", n, "addr", "add", f"{a}/24", "dev", d)
                _run("ip", "-n", n, "link", "set", d, "up")
        for ns in self.namespaces:
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "netns", "exec", self.wan_ns, "sysctl", "-qw", "net.ipv4.ip_forward=0")

    def cleanup(self) -> None:
        """Kill every process the lab started, then delete its namespaces (best effort
        per item, so one failure cannot leave the rest behind)."""
        for r in self.regions.values():
            for p in r.procs:
                if p.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGKILL)
        for ns in self.namespaces:
            if os.path.exists(f"/run/netns/{ns}"):
                subprocess.run(
                    ["ip", "netns", "del", ns], capture_output=True, timeout=_CMD_TIMEOUT_S
                )
        if not self.keep_logs:
            shutil.rmtree(self.logs, ignore_errors=True)

    def exists(self) -> bool:
        return any(os.path.exists(f"/run/netns/{ns}") for ns in self.namespaces)

    # -- relays -------------------------------------------------------------------------
    async def _relay(self, listen_host: str, target: tuple[str, int], spec: str) -> TcpRelay:
        net: NetSpec = parse_net(spec)
        relay = TcpRelay(
            listen=(listen_host, 0), target=target, up=net, down=net,
            socket_factory=socket_in_netns(self.wan_ns),
        )  # fmt: skip
        await relay.start()
        self.relays.append(relay)
        return relay

    # -- processes ----------------------------------------------------------------------
    async def _spawn(
        self, region: Region, name: str, args: list[str]
    ) -> asyncio.subprocess.Process:
        log = (self.logs / f"{name}.log").open("wb")  # noqa: ASYNC230 - a local temp file
        cmd = ["ip", "netns", "exec", region.ns, sys.executable, "-m", "halfsec.cli.main", *args]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL, start_new_session=True
        )
        log.close()
        region.procs.append(proc)
        return proc

    async def start(self, start_timeout_s: float = 120.0) -> None:
        """Relays, then every region's servers, then its gateway; returns once every
        gateway is live and every server ready."""
        near, far = self.regions["near"], self.regions["far"]
        spec = self.spec
        cross = {
            "near": await self._relay(near.wan_addr, (far.addr, SERVER_PORT), spec.inter),
            "far": await self._relay(far.wan_addr, (near.addr, SERVER_PORT), spec.inter),
        }
        for r in (near, far):
            extra = ["--token", self.token] if self.token else []
            extra += ["--resume-key", self.resume_key] if self.resume_key else []
            for i in range(self.spec.servers_per_region):
                port = SERVER_PORT + i
                args = ["serve", "--host", r.addr, "--port", str(port), "--no-trace", *extra]
                r.servers.append(await self._spawn(r, f"{r.name}{i + 1}", args))
        for r in (near, far):
            other = far if r is near else near
            ups = []
            for i in range(self.spec.servers_per_region):
                ups += ["--upstream", f"{r.name}{i + 1}=http://{r.addr}:{SERVER_PORT + i}@{r.name}"]
            relay = cross[r.name]
            ups += [
                "--upstream",
                f"{other.name}1=http://{relay.address[0]}:{relay.port}@{other.name}",
            ]
            info = self.logs / f"gateway-{r.name}.json"
            info.unlink(missing_ok=True)  # a restart must wait for the new gateway
            args = ["gateway", "--zone", r.name, "--host", r.addr, "--port", str(GATEWAY_PORT)]
            await self._spawn(r, f"gateway-{r.name}", [*args, *ups, "--info-file", str(info)])
        client = {
            "near": await self._relay(self.wan_client_addr, (near.addr, GATEWAY_PORT), spec.near),
            "far": await self._relay(self.wan_client_addr, (far.addr, GATEWAY_PORT), spec.far),
        }
        for name, relay in client.items():
            self.regions[name].gateway_url = f"ws://{relay.address[0]}:{relay.port}/ws"
        await self._wait_ready(start_timeout_s)

    async def _wait_ready(self, timeout_s: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        infos = [self.logs / f"gateway-{r}.json" for r in self.regions]
        while asyncio.get_running_loop().time() < deadline:
            for r in self.regions.values():
                for p in r.procs:
                    if p.returncode is not None:
                        raise RuntimeError(
                            f"a {r.name} process exited ({p.returncode}); logs in {self.logs}: {self._tails()}"
                        )
            if all(i.exists() for i in infos) and await self._servers_ready():
                return
            await asyncio.sleep(0.25)
        raise TimeoutError(
            f"regions not ready within {timeout_s:g} s; logs in {self.logs}: {self._tails()}"
        )

    async def _servers_ready(self) -> bool:
        for r in self.regions.values():
            for i in range(self.spec.servers_per_region):
                if await _http_status(self.wan_ns, r.addr, SERVER_PORT + i, "/ready") != 200:
                    return False
        return True

    def _tails(self) -> str:
        out = []
        for f in sorted(self.logs.glob("*.log")):
            with contextlib.suppress(OSError):
                out.append(f"--- {f.name}\n{f.read_text(errors='replace')[-800:]}")
        return "\n".join(out)

    def gateway_info(self, region: str) -> dict[str, object]:
        return dict(json.loads((self.logs / f"gateway-{region}.json").read_text()))

    async def kill(self, region: str, servers_only: bool = False) -> int:
        """SIGKILL every process of ``region`` (servers and gateway, at once), or with
        ``servers_only`` its servers (its gateway then fails over to the other region's
        servers by itself); returns the moment (monotonic ns) the signals were sent."""
        r = self.regions[region]
        t = now_ns()
        r.killed_at_ns = t
        for p in r.servers if servers_only else r.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        return t

    async def stop(self) -> None:
        """Close the relays and kill every process (the lab is thrown away: no draining)."""
        for relay in self.relays:
            await relay.close()
        self.relays.clear()
        for r in self.regions.values():
            for p in r.procs:
                if p.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGKILL)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(p.wait(), 5)
            r.procs.clear()
            r.servers.clear()
            r.killed_at_ns = None


async def _http_status(ns: str, host: str, port: int, path: str) -> int | None:
    """``GET path`` from inside ``ns``: the status, or None if nothing answered."""
    sock = socket_in_netns(ns)(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), 1.0)
        reader, writer = await asyncio.open_connection(sock=sock)
    except (OSError, TimeoutError):
        sock.close()
        return None
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), 1.0)
        parts = line.split()
        return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        writer.close()


def remove_stale_regions() -> list[str]:
    """Delete ``hs-r?-<pid>-<n>`` namespaces whose creating process is gone."""
    removed = []
    with contextlib.suppress(OSError):
        for name in os.listdir("/run/netns"):
            parts = name.split("-")
            if len(parts) != 4 or parts[0] != "hs" or parts[1] not in ("rc", "rw", "rn", "rf"):
                continue
            with contextlib.suppress(ValueError):
                if os.path.exists(f"/proc/{int(parts[2], 16)}"):
                    continue
                subprocess.run(
                    ["ip", "netns", "del", name], capture_output=True, timeout=_CMD_TIMEOUT_S
                )
                removed.append(name)
    return removed

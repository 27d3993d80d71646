"""Network namespaces for partition tests: a "host" of its own for one process, joined
to this machine by veth pairs that the test can cut and heal.

The cut is a blackhole at layer 2: each end's neighbour (ARP) entry for the other end
is pinned to a MAC address nobody has, so every frame in both directions is dropped
while the links stay up and no route changes. To the processes on either side that is
exactly a silent network partition (what `tc netem loss 100%` does; this kernel has no
netem): nothing is refused, packets vanish, TCP retransmits until the cut heals, and
established connections resume afterwards. Nothing leaves this machine: the addresses
are the test's own, on veths that only the test creates, and a cut drops frames on the
veth instead of re-routing them.

Everything is removed on exit, on failure too: the namespace (which takes its end of
each veth, and so the pair, with it) and any host end left behind.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import subprocess
import time
from dataclasses import dataclass

# A locally administered unicast MAC that no interface here has: frames sent to it are
# dropped by the receiving veth (not addressed to it).
NOWHERE_MAC = "02:00:5e:10:de:ad"


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=15)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here (None when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    probe = f"tsprobe{os.getpid()}"
    try:
        result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=15)
        if result.returncode != 0:
            return f"`ip netns add` does not work here: {result.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=15)
    return None


def _mac(interface: str, netns: str | None = None) -> str:
    out = ip("-o", "link", "show", "dev", interface, netns=netns).stdout
    return out.split("link/ether", 1)[1].split()[0]


@dataclass
class Link:
    """One veth pair: `host_if`/`host_addr` on this machine, `ns_if`/`ns_addr` inside."""

    netns: str
    host_if: str
    ns_if: str
    host_addr: str
    ns_addr: str
    prefix: int

    def cut(self) -> None:
        """Drop every frame both ways (see the module docstring); links stay up."""
        ip("neigh", "replace", self.ns_addr, "lladdr", NOWHERE_MAC, "dev", self.host_if, "nud", "permanent")
        ip("neigh", "replace", self.host_addr, "lladdr", NOWHERE_MAC, "dev", self.ns_if, "nud", "permanent",
           netns=self.netns)

    def heal(self) -> None:
        """Point each end at the other's real MAC again: frames flow at once (no ARP wait)."""
        ip("neigh", "replace", self.ns_addr, "lladdr", _mac(self.ns_if, self.netns), "dev", self.host_if,
           "nud", "reachable")
        ip("neigh", "replace", self.host_addr, "lladdr", _mac(self.host_if), "dev", self.ns_if, "nud", "reachable",
           netns=self.netns)


@dataclass
class Namespace:
    name: str
    links: dict[str, Link]

    def argv(self, argv: list[str]) -> list[str]:
        """Run a command inside: `ip netns exec` execs it, so its pid is the command's."""
        return ["ip", "netns", "exec", self.name, *argv]


@contextlib.contextmanager
def namespace(name: str, links: dict[str, str]):
    """A namespace `name` with loopback up and one veth pair per entry of `links`,
    {label: "10.231.N.0/24"}: the host end takes the subnet's .1, the namespace end .2.
    Interface names are `<name>-<label initial>0` (host) and `...1` (namespace)."""
    for subnet in links.values():
        net = ipaddress.ip_network(subnet)
        if not net.subnet_of(ipaddress.ip_network("10.231.0.0/16")):
            raise ValueError(f"{subnet} is outside 10.231.0.0/16, the partition tests' range")
    ip("netns", "add", name)  # fails if it exists: never adopt (and later delete) someone else's
    made: list[str] = []
    try:
        ip("link", "set", "lo", "up", netns=name)
        out: dict[str, Link] = {}
        for label, subnet in links.items():
            net = ipaddress.ip_network(subnet)
            host_addr, ns_addr = str(net.network_address + 1), str(net.network_address + 2)
            host_if, ns_if = f"{name}-{label[0]}0"[:15], f"{name}-{label[0]}1"[:15]
            ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", name)
            made.append(host_if)
            ip("addr", "add", f"{host_addr}/{net.prefixlen}", "dev", host_if)
            ip("link", "set", host_if, "up")
            ip("addr", "add", f"{ns_addr}/{net.prefixlen}", "dev", ns_if, netns=name)
            ip("link", "set", ns_if, "up", netns=name)
            out[label] = Link(name, host_if, ns_if, host_addr, ns_addr, net.prefixlen)
        yield Namespace(name, out)
    finally:
        # Deleting the namespace destroys its veth ends, and each pair with its end.
        ip("netns", "del", name, check=False)
        for host_if in made:
            deadline = time.monotonic() + 5
            while ip("link", "show", "dev", host_if, check=False).returncode == 0 and time.monotonic() < deadline:
                ip("link", "del", host_if, check=False)
                time.sleep(0.1)

"""The Linux adapters against a real kernel: namespaces, veths, wireguard-go, nftables.

The adapters act on the namespace they run in, so each scenario runs them where the agent does:
in a subprocess that entered the host's network namespace (``nsenter --net``). This module is
also that subprocess's driver (``python -m tests.netns.test_linux_adapters`` reads pickled
calls on stdin and writes pickled results). Packets are real; this process sends and receives
them with sockets made inside the machine namespaces, and isolation is observed where packets
would arrive (listeners recording source addresses), not inferred from a missing reply
(NOTES.md).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import pickle
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from sixpn.agent.linux import _sys, hostnet, links, nft, wg
from sixpn.agent.linux.host import LinuxHost
from sixpn.core import addressing
from sixpn.core.hoststate import (
    SIXPN_ROUTE,
    HostState,
    MachineLink,
    Route,
    Source,
    WgPeer,
    machine_ifname,
    machine_netns,
    source_of,
    wg_ifname,
)
from sixpn.core.plan import (
    AddRoute,
    AddSources,
    Op,
    RemovePeers,
    RemoveSources,
    ReplaceNftTable,
    SetPeers,
    UnwireMachine,
    WireMachine,
    plan,
)
from sixpn.lab import netns

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
NET_A, NET_B = 0x18, 0x2A
DNS = addressing.DNS_ADDRESS
PORT = 51820


# -- the driver: runs inside a host namespace ------------------------------------------------


def _driver() -> None:
    calls = pickle.loads(base64.b64decode(sys.stdin.buffer.read()))
    results: list[tuple[str, Any]] = []
    for fn, args, kwargs in calls:
        try:
            results.append(("ok", fn(*args, **kwargs)))
        except Exception as exc:
            results.append(("error", f"{type(exc).__name__}: {exc}"))
            break
    sys.stdout.write(base64.b64encode(pickle.dumps(results)).decode())


def converge(host: LinuxHost, desired: HostState) -> tuple[list[Op], HostState, list[Op]]:
    """One reconcile as the agent does it: (the plan applied, the state after, the next plan)."""
    ops = plan(host.read(), desired)
    for op in ops:
        host.apply(op)
    after = host.read()
    return ops, after, plan(after, desired)


def links_via_ipr_in(path: str) -> tuple[list[str], bool]:
    """The link names ``_sys.ipr_in`` shows for the namespace at ``path`` ("OSError" if it
    cannot open it), and whether the calling thread is back in its own namespace after."""
    own = os.stat("/proc/thread-self/ns/net").st_ino
    try:
        with _sys.ipr_in(Path(path)) as ipr:
            names = sorted(str(m.get_attr("IFLA_IFNAME")) for m in ipr.get_links())
    except OSError:
        names = ["OSError"]
    return names, os.stat("/proc/thread-self/ns/net").st_ino == own


def read_and_plan(host: LinuxHost, desired: HostState) -> tuple[HostState, list[Op]]:
    state = host.read()
    return state, plan(state, desired)


Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Call:
    return (fn, args, kwargs)


def enter(ns: str) -> list[str]:
    """How the agent enters its host namespace: the network only (``ip netns exec``'s private
    mount namespace would hide the machine namespaces made in it; links.py refuses that)."""
    return netns.enter_argv(ns, [])


def outcomes(ns: str, *calls: Call, via: list[str] | None = None) -> list[tuple[str, Any]]:
    """Run ``calls`` in one process inside namespace ``ns``: ("ok", result) or ("error", text),
    stopping at the first error."""
    done = subprocess.run(
        [*(via or enter(ns)), sys.executable, "-m", "tests.netns.test_linux_adapters"],
        input=base64.b64encode(pickle.dumps(list(calls))),
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    results: list[tuple[str, Any]] = pickle.loads(base64.b64decode(done.stdout))
    return results


def inside(ns: str, *calls: Call) -> list[Any]:
    """Run ``calls`` in one process inside namespace ``ns``; their results, or fail."""
    results = outcomes(ns, *calls)
    for status, value in results:
        assert status == "ok", f"inside {ns}: {value}"
    return [value for _, value in results]


# -- the lab: namespaces and processes, all removed in finally --------------------------------


@dataclass
class Lab:
    tmp: Path
    hosts: dict[str, LinuxHost | None] = field(default_factory=dict)
    machine_ns: list[str] = field(default_factory=list)
    daemons: list[tuple[int, str]] = field(default_factory=list)  # (wireguard-go PID, ifname)
    sockets: list[socket.socket] = field(default_factory=list)

    def host_ns(self) -> str:
        name = netns.unique_name("h")
        self.hosts[name] = None
        netns.create(name)
        return name

    def machine(self, net_id: int, host_id: int, field_: int) -> MachineLink:
        machine_id = secrets.token_hex(7)
        self.machine_ns.append(machine_netns(machine_id))
        return MachineLink(
            machine_id=machine_id,
            netns=machine_netns(machine_id),
            host_ifname=machine_ifname(machine_id),
            address=addressing.machine_address(net_id, host_id, field_),
            prefix=addressing.machine_prefix(net_id, host_id, field_),
        )

    def key(self, name: str) -> tuple[Path, str]:
        path = self.tmp / f"{name}.key"
        path.write_text(sh("wg", "genkey"))
        path.chmod(0o600)
        public = subprocess.run(["wg", "pubkey"], input=path.read_bytes(), capture_output=True)
        return path, public.stdout.decode().strip()

    def sock(
        self, ns: str, kind: int, proto: int = 0, family: int = socket.AF_INET6
    ) -> socket.socket:
        s = pr_netns.create_socket(ns, family, kind, proto, flags=0)
        self.sockets.append(s)
        return s

    def teardown(self, ns: str) -> None:
        host = self.hosts[ns]
        if host is not None:
            inside(ns, call(host.teardown))
            self.hosts[ns] = None

    def cleanup(self) -> None:
        """Remove everything, each step on its own, so that one failure skips nothing."""
        for s in self.sockets:
            s.close()
        for ns, host in self.hosts.items():
            if host is None:
                continue
            with contextlib.suppress(Exception):  # note its daemon first, in case teardown fails
                results = outcomes(ns, call(wg.daemon_pid, host.wg_ifname), call(host.teardown))
                if results and results[0][1] is not None:
                    self.daemons.append((results[0][1], host.wg_ifname))
        for pid, ifname in self.daemons:  # by the PID recorded, if it is still that daemon
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if argv[1:2] == [ifname.encode()] and argv[0].endswith(b"wireguard-go"):
                    os.kill(pid, signal.SIGTERM)
        for ns in self.machine_ns + list(self.hosts):
            with contextlib.suppress(Exception):
                netns.remove(ns)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    state = Lab(tmp_path)
    try:
        yield state
    finally:
        state.cleanup()


def desired_for(
    ifname: str | None, machines: list[MachineLink], pairs: set[IPv6Network], **kw: Any
) -> HostState:
    routes = {Route(m.prefix, m.host_ifname) for m in machines}
    if ifname is not None:
        routes.add(Route(SIXPN_ROUTE, ifname))
    return HostState(
        wg_ifname=ifname,
        service_addresses=frozenset({DNS}),
        machines=frozenset(machines),
        routes=frozenset(routes),
        pairs=frozenset(pairs),
        sources=frozenset(source_of(m) for m in machines),
        **kw,
    )


# -- packets ---------------------------------------------------------------------------------


def mac_of(ns: str, ifname: str) -> str:
    """An interface's link-layer address, as ``ip link`` shows it."""
    shown = json.loads(sh("ip", "-j", "-n", ns, "link", "show", "dev", ifname))
    return str(shown[0]["address"])


def ping(lab: Lab, ns: str, dst: IPv6Address, timeout: float = 1.0) -> bool:
    """One ICMPv6 echo from ``ns``; True if the reply came back within ``timeout``."""
    s = lab.sock(ns, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    ident = secrets.randbits(16)
    s.sendto(struct.pack("!BBHHH", 128, 0, 0, ident, 1) + b"sixpn", (str(dst), 0))
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            data = s.recv(2048)
        except TimeoutError:
            break
        if data[0] == 129 and struct.unpack("!H", data[4:6])[0] == ident:
            return True
    return False


def ping_eventually(lab: Lab, ns: str, dst: IPv6Address, timeout: float = 8.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping(lab, ns, dst, 0.5):
            return True
    return False


def udp_listener(lab: Lab, ns: str, address: IPv6Address | str, port: int) -> socket.socket:
    s = lab.sock(ns, socket.SOCK_DGRAM)
    s.bind((str(address), port))
    return s


def udp_send(
    lab: Lab, ns: str, dst: IPv6Address, port: int, src: IPv6Address | None = None
) -> None:
    s = lab.sock(ns, socket.SOCK_DGRAM)
    if src is not None:
        s.bind((str(src), 0))
    s.sendto(b"hello", (str(dst), port))


def sources(s: socket.socket, wait: float) -> set[IPv4Address | IPv6Address]:
    """Source addresses of the datagrams that arrive within ``wait`` seconds."""
    seen = set()
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            _, addr = s.recvfrom(2048)
        except TimeoutError:
            break
        seen.add(ip_address(addr[0].split("%")[0]))
    return seen


def tcp_listener(lab: Lab, ns: str, address: str, port: int) -> None:
    s = lab.sock(ns, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, port))
    s.listen(8)


def tcp_connects(lab: Lab, ns: str, dst: tuple[Any, ...], timeout: float = 0.5) -> bool:
    s = lab.sock(ns, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(dst)
    except OSError:
        return False
    return True


def index_in(ns: str, ifname: str) -> int:
    with IPRoute(netns=ns, flags=0) as ipr:
        return int(ipr.link_lookup(ifname=ifname)[0])


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def links_in(ns: str) -> list[str]:
    out = sh("ip", "-n", ns, "-o", "link", "show")
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def has_table(ns: str) -> bool:
    return "table inet sixpn" in nft_cmd(ns, "list", "tables")


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has exited; its reaper may not have collected it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def nft_cmd(ns: str, *argv: str) -> str:
    return sh("ip", "netns", "exec", ns, "nft", *argv)


def rule_handles(ns: str, chain: str, text: str) -> list[int]:
    out = nft_cmd(ns, "-a", "list", "chain", "inet", "sixpn", chain)
    return [int(line.rsplit("# handle ", 1)[1]) for line in out.splitlines() if text in line]


# -- scenarios -------------------------------------------------------------------------------


def test_one_host_isolation_services_and_repair(lab: Lab) -> None:
    h = lab.host_ns()
    host_id = 0x100 + secrets.randbits(20)
    host = lab.hosts[h] = LinuxHost(wg_ifname(host_id), lab.tmp / "unused.key", "wireguard-go")
    m1 = lab.machine(NET_A, host_id, 0x10001)
    m2 = lab.machine(NET_A, host_id, 0x10002)
    m3 = lab.machine(NET_B, host_id, 0x10003)
    nets = {addressing.network_prefix(NET_A), addressing.network_prefix(NET_B)}
    desired = desired_for(None, [m1, m2, m3], nets)

    ((ops, after, again),) = inside(h, call(converge, host, desired))
    assert ops
    assert after == desired
    assert again == []
    # Seen from outside, with the tools an operator would use.
    assert {m.host_ifname for m in (m1, m2, m3)} <= set(links_in(h))
    pairs = nft_cmd(h, "list", "set", "inet", "sixpn", "pairs")
    assert "fdaa:0:18:: . fdaa:0:18::" in pairs
    assert "fdaa:0:2a:: . fdaa:0:2a::" in pairs
    machine_sources = nft_cmd(h, "list", "set", "inet", "sixpn", "sources")
    assert f'"{m1.host_ifname}" . {m1.prefix.network_address} . fdaa:0:18::' in machine_sources
    assert f"{m1.address} sixpn-local-6pn" in Path(f"/etc/netns/{m1.netns}/hosts").read_text()
    assert f"{m1.address}/112" in sh("ip", "-n", m1.netns, "addr", "show", "dev", "eth0")
    # Each end of a veth knows the other's link-layer address before any packet: the first
    # one needs no neighbour solicitation (one lost costs a 1 s retransmit).
    for m in (m1, m2, m3):
        eth0_mac = mac_of(m.netns, "eth0")
        host_mac = mac_of(h, m.host_ifname)
        host_side = sh("ip", "-n", h, "-6", "neigh", "show", "dev", m.host_ifname)
        assert f"{m.address} lladdr {eth0_mac}" in host_side
        machine_side = sh("ip", "-n", m.netns, "-6", "neigh", "show", "dev", "eth0")
        assert f"fe80::1 lladdr {host_mac}" in machine_side

    # Same network: ICMPv6, UDP and TCP pass; another network: none of them.
    udp1 = udp_listener(lab, m1.netns, m1.address, 7000)
    tcp_listener(lab, m1.netns, str(m1.address), 7001)
    assert ping(lab, m2.netns, m1.address)
    assert not ping(lab, m3.netns, m1.address, 0.5)
    udp_send(lab, m2.netns, m1.address, 7000)
    udp_send(lab, m3.netns, m1.address, 7000)
    assert sources(udp1, 0.5) == {m2.address}
    assert tcp_connects(lab, m2.netns, (str(m1.address), 7001))
    assert not tcp_connects(lab, m3.netns, (str(m1.address), 7001))

    # A machine reaches its host's DNS (UDP and TCP 53) and nothing else of it.
    dns_udp = udp_listener(lab, h, DNS, 53)
    tcp_listener(lab, h, str(DNS), 53)
    tcp_listener(lab, h, str(DNS), 22)
    tcp_listener(lab, h, "::", 2222)
    udp_send(lab, m3.netns, DNS, 53)  # also resolves fe80::1 for the spoofing below
    assert sources(dns_udp, 0.5) == {m3.address}
    assert tcp_connects(lab, m1.netns, (str(DNS), 53))
    assert not tcp_connects(lab, m1.netns, (str(DNS), 22))
    assert not tcp_connects(lab, m1.netns, ("fe80::1", 2222, 0, index_in(m1.netns, "eth0")))
    assert not ping(lab, m1.netns, DNS, 0.5)
    assert tcp_connects(lab, h, (str(DNS), 22))  # the listener is there: the rules refused

    # IPv4 from a machine reaches nothing of its host, even with a route the machine made itself
    # (the host answers ARP for its own addresses on any link). 192.0.2.0/24 (TEST-NET-1) exists
    # only inside this test's namespaces.
    sh("ip", "-n", h, "addr", "add", "192.0.2.1/32", "dev", "lo")
    sh("ip", "-n", m1.netns, "addr", "add", "192.0.2.201/32", "dev", "eth0")
    sh("ip", "-n", m1.netns, "route", "add", "192.0.2.1/32", "dev", "eth0")
    udp4 = lab.sock(h, socket.SOCK_DGRAM, family=socket.AF_INET)
    udp4.bind(("192.0.2.1", 7100))
    for _ in range(3):
        lab.sock(m1.netns, socket.SOCK_DGRAM, family=socket.AF_INET).sendto(
            b"v4", ("192.0.2.1", 7100)
        )
    assert sources(udp4, 0.5) == set()

    # Anti-spoofing: m3 (network B) forges m2's address (network A, so the pair would pass),
    # toward m1 and toward the host's DNS (which tells networks apart by source).
    netns.add_address(m3.netns, f"{m2.address}/128", ifname="eth0")
    udp_send(lab, m3.netns, m1.address, 7000, src=m2.address)
    udp_send(lab, m3.netns, DNS, 53, src=m2.address)
    assert sources(udp1, 0.5) == set()
    assert sources(dns_udp, 0.1) == set()
    # Control: an element that lets m3's veth send from m2's /112 lets the forged packets
    # through; read() sees the stray element and the plan removes it.
    stray = Source(m3.host_ifname, m2.prefix)
    element = f'{{ "{m3.host_ifname}" . {m2.prefix.network_address} . fdaa:0:18:: }}'
    nft_cmd(h, "add", "element", "inet", "sixpn", "sources", element)
    udp_send(lab, m3.netns, m1.address, 7000, src=m2.address)
    udp_send(lab, m3.netns, DNS, 53, src=m2.address)
    assert sources(udp1, 0.5) == {m2.address}
    assert sources(dns_udp, 0.1) == {m2.address}
    ((ops, after, again),) = inside(h, call(converge, host, desired))
    assert ops == [RemoveSources(frozenset({stray}))]
    assert after == desired
    assert again == []
    udp_send(lab, m3.netns, m1.address, 7000, src=m2.address)
    assert sources(udp1, 0.5) == set()
    # A fixed rule deleted by hand is drift too: the whole table is rewritten, elements included.
    for handle in rule_handles(h, "from_machine", "@sources"):
        nft_cmd(h, "delete", "rule", "inet", "sixpn", "from_machine", "handle", str(handle))
    udp_send(lab, m3.netns, DNS, 53, src=m2.address)
    assert sources(dns_udp, 0.5) == {m2.address}
    ((ops, after, again),) = inside(h, call(converge, host, desired))
    assert ops == [ReplaceNftTable(desired.pairs, desired.sources)]
    assert after == desired
    assert again == []
    udp_send(lab, m3.netns, DNS, 53, src=m2.address)
    assert sources(dns_udp, 0.5) == set()
    assert ping(lab, m2.netns, m1.address)

    # A partial wiring is not reported, and wiring again completes it.
    Path(f"/etc/netns/{m2.netns}/resolv.conf").unlink()
    sh("ip", "-n", m2.netns, "-6", "route", "del", "default")
    ((ops, after, again),) = inside(h, call(converge, host, desired))
    assert ops == [WireMachine(m2), AddRoute(Route(m2.prefix, m2.host_ifname))]  # (replace)
    assert after == desired
    assert again == []
    assert ping(lab, m2.netns, m1.address)

    # A partial wiring of a machine no longer wanted is unwired, not left behind.
    sh("ip", "-n", m2.netns, "-6", "route", "del", "default")
    without_m2 = desired_for(None, [m1, m3], nets)
    ((ops, after, again),) = inside(h, call(converge, host, without_m2))
    assert UnwireMachine(m2) in ops
    assert after == without_m2
    assert again == []
    assert m2.host_ifname not in links_in(h)
    ((ops, after, again),) = inside(h, call(converge, host, desired))  # and back
    assert ops == [
        AddSources(frozenset({source_of(m2)})),
        WireMachine(m2),
        AddRoute(Route(m2.prefix, m2.host_ifname)),
    ]
    assert after == desired

    # Teardown leaves nothing the agent owns.
    for s in lab.sockets:
        s.close()
    lab.sockets.clear()
    lab.teardown(h)
    assert not [n for n in links_in(h) if n.startswith("sx")]
    assert not has_table(h)
    assert not any(netns.exists(m.netns) for m in (m1, m2, m3))
    assert not any(Path(f"/etc/netns/{m.netns}").exists() for m in (m1, m2, m3))
    assert "fdaa" not in sh("ip", "-n", h, "-6", "addr", "show", "dev", "lo")


def rps_mask(ns: str, ifname: str) -> int:
    """The receive-steering CPU mask of ``ifname``, from the namespace's own sysfs."""
    rps = sh("ip", "netns", "exec", ns, "cat", f"/sys/class/net/{ifname}/queues/rx-0/rps_cpus")
    return int(rps.strip().replace(",", ""), 16)


def test_two_hosts_over_wireguard(lab: Lab) -> None:
    ha, hb = lab.host_ns(), lab.host_ns()
    with IPRoute(netns=ha, flags=0) as ipr:  # the underlay: one veth, TEST-NET-1
        ipr.link("add", ifname="ul0", kind="veth", peer={"ifname": "ul0", "net_ns_fd": hb})
    for ns, ip in ((ha, "192.0.2.1"), (hb, "192.0.2.2")):
        netns.add_address(ns, f"{ip}/24", ifname="ul0")
        sh("ip", "-n", ns, "link", "set", "ul0", "up")
    (backend,) = inside(ha, call(wg.detect_backend))
    id_a, id_b = (0x100 + secrets.randbits(20) for _ in range(2))
    (key_a, pub_a), (key_b, pub_b) = lab.key("a"), lab.key("b")
    wg_a, wg_b = wg_ifname(id_a), wg_ifname(id_b)
    host_a = lab.hosts[ha] = LinuxHost(wg_a, key_a, backend)
    host_b = lab.hosts[hb] = LinuxHost(wg_b, key_b, backend)
    ma = lab.machine(NET_A, id_a, 0x10001)
    mb = lab.machine(NET_A, id_b, 0x10001)
    mc = lab.machine(NET_B, id_b, 0x10002)  # another network on host B
    b_nets = frozenset({addressing.host_prefix(NET_A, id_b), addressing.host_prefix(NET_B, id_b)})
    peer_b = WgPeer(pub_b, b_nets, endpoint=f"192.0.2.2:{PORT}", keepalive=25)
    peer_a = WgPeer(
        pub_a, frozenset({addressing.host_prefix(NET_A, id_a)}), f"192.0.2.1:{PORT}", 25
    )
    net_a, net_b = addressing.network_prefix(NET_A), addressing.network_prefix(NET_B)
    want_a = desired_for(wg_a, [ma], {net_a}, listen_port=PORT, wg_peers=frozenset({peer_b}))
    want_b = desired_for(
        wg_b, [mb, mc], {net_a, net_b}, listen_port=PORT, wg_peers=frozenset({peer_a})
    )

    for ns, host, want, ifname in ((ha, host_a, want_a, wg_a), (hb, host_b, want_b, wg_b)):
        (_, after, again), pid = inside(ns, call(converge, host, want), call(wg.daemon_pid, ifname))
        assert after == want
        assert again == []
        if backend == wg.WIREGUARD_GO:
            assert pid is not None
            lab.daemons.append((pid, ifname))
            assert running(pid)  # it outlived the process that started it

    # Receive steering over every CPU on both tunnels, as the namespace's own sysfs shows it.
    cpus = os.cpu_count() or 1
    every_cpu = (1 << cpus) - 1 if cpus > 1 else 0
    for ns, ifname in ((ha, wg_a), (hb, wg_b)):
        assert rps_mask(ns, ifname) == every_cpu

    assert ping_eventually(lab, ma.netns, mb.address)
    assert not ping(lab, ma.netns, mc.address, 0.5)
    udp_c = udp_listener(lab, mc.netns, mc.address, 7000)
    udp_send(lab, ma.netns, mc.address, 7000)
    assert sources(udp_c, 0.5) == set()
    assert f"peer: {pub_b}" in sh("ip", "netns", "exec", ha, "wg", "show", wg_a)
    (stats,) = inside(ha, call(wg.peer_stats, wg_a))
    assert stats[0]["public_key"] == pub_b
    assert stats[0]["latest_handshake"] > 0
    assert stats[0]["rx_bytes"] > 0
    # A restarted agent reads the same state from the kernel: nothing to do.
    ((state, ops),) = inside(ha, call(read_and_plan, LinuxHost(wg_a, key_a, backend), want_a))
    assert state == want_a
    assert ops == []
    # An interface that lost its steering (made by an older agent) gets it at the next start.
    rps_file = f"/sys/class/net/{wg_a}/queues/rx-0/rps_cpus"
    sh("ip", "netns", "exec", ha, "sh", "-c", f"echo 0 > {rps_file}")
    assert rps_mask(ha, wg_a) == 0
    inside(ha, call(LinuxHost(wg_a, key_a, backend).start))
    assert rps_mask(ha, wg_a) == every_cpu

    for ns in (ha, hb):
        lab.teardown(ns)
        assert not [n for n in links_in(ns) if n.startswith("sx")]
        assert not has_table(ns)
        assert "proto 110" not in sh("ip", "-n", ns, "-6", "route", "show")
    assert not any(netns.exists(m.netns) for m in (ma, mb, mc))
    for pid, _ in lab.daemons:
        assert not running(pid)
    assert not Path(f"/var/run/wireguard/{wg_a}.sock").exists()


def client_peer(slot: int, host_id: int) -> WgPeer:
    public = base64.b64encode(secrets.token_bytes(32)).decode()
    return WgPeer(public, frozenset({addressing.peer_prefix(NET_A, host_id, slot)}))


def allowed_ips(ns: str, ifname: str) -> dict[str, str]:
    """Public key -> allowed IPs, as ``wg show`` prints them to an operator."""
    out = sh("ip", "netns", "exec", ns, "wg", "show", ifname, "allowed-ips")
    return dict(line.split("\t", 1) for line in out.splitlines())


def test_a_gateways_peers_go_in_batches_and_one_change_touches_one_peer(lab: Lab) -> None:
    """More peers than one ``wg set`` takes (3 batches), then one added and one removed: each
    plan is one operation on that peer, and every other peer is as it was."""
    h = lab.host_ns()
    host_id = 0x100 + secrets.randbits(20)
    ifname = wg_ifname(host_id)
    key, _ = lab.key("gw")
    host = lab.hosts[h] = LinuxHost(ifname, key, "wireguard-go")
    count = 2 * wg.BATCH_PEERS + 100
    peers = [client_peer(slot, host_id) for slot in range(count)]
    want = desired_for(ifname, [], set(), listen_port=PORT, wg_peers=frozenset(peers))
    ((ops, after, again),) = inside(h, call(converge, host, want))
    assert SetPeers(frozenset(peers)) in ops
    assert after == want
    assert again == []
    before = allowed_ips(h, ifname)
    assert len(before) == count

    extra = client_peer(count, host_id)
    more = dataclasses.replace(want, wg_peers=want.wg_peers | {extra})
    ((ops, after, again),) = inside(h, call(converge, host, more))
    assert ops == [SetPeers(frozenset({extra}))]
    assert (after, again) == (more, [])
    assert allowed_ips(h, ifname) == before | {extra.public_key: str(*extra.allowed_ips)}

    gone = peers[count // 2]
    fewer = dataclasses.replace(more, wg_peers=more.wg_peers - {gone})
    ((ops, after, again),) = inside(h, call(converge, host, fewer))
    assert ops == [RemovePeers(frozenset({gone.public_key}))]
    assert (after, again) == (fewer, [])
    expected = before | {extra.public_key: str(*extra.allowed_ips)}
    del expected[gone.public_key]
    assert allowed_ips(h, ifname) == expected

    # Everything removed in batches too.
    empty = dataclasses.replace(fewer, wg_peers=frozenset())
    ((ops, after, again),) = inside(h, call(converge, host, empty))
    assert ops == [RemovePeers(frozenset(p.public_key for p in fewer.wg_peers))]
    assert (after, again) == (empty, [])
    lab.teardown(h)


def test_peer_batches_stay_within_their_limits() -> None:
    clauses = [["peer", f"{i:043d}=", "allowed-ips", "fdaa::/120"] for i in range(1201)]
    batches = list(wg._batches(clauses))
    assert [len(b) for b, _, _ in batches] == [500, 500, 201]
    assert batches[0][1:] == (f"{0:043d}=", f"{499:043d}=")
    # a peer with many routes: the byte budget cuts first
    big = [["peer", f"{i:043d}=", "allowed-ips", "x" * 100_000] for i in range(5)]
    assert [len(b) for b, _, _ in wg._batches(big)] == [2, 2, 1]


def test_adapters_are_idempotent_and_translate_errors(lab: Lab) -> None:
    h = lab.host_ns()
    m = lab.machine(NET_A, 1, 0x10001)
    route = Route(m.prefix, m.host_ifname)
    net = addressing.network_prefix(NET_A)
    wg_name = wg_ifname(0x100 + secrets.randbits(20))
    lab.hosts[h] = LinuxHost(wg_name, lab.tmp / "unused.key", "wireguard-go")
    results = inside(
        h,
        call(nft.replace_table, wg_name, (), ()),
        call(nft.add_pairs, {net}),
        call(nft.add_pairs, {net}),
        call(nft.add_sources, {source_of(m)}),
        call(nft.read, wg_name),
        call(nft.remove_pairs, {net}),
        call(nft.remove_pairs, {net}),
        call(nft.remove_sources, {source_of(m)}),
        call(nft.remove_sources, {source_of(m)}),
        call(nft.read, wg_name),
        call(links.wire_machine, m, create_netns=True),
        call(links.wire_machine, m, create_netns=True),
        call(hostnet.add_route, route),
        call(hostnet.add_route, route),
        call(links.read_machines),
        call(hostnet.read_routes),
        call(hostnet.add_address, DNS),
        call(hostnet.add_address, DNS),
        call(hostnet.read_service_addresses),
        call(hostnet.remove_route, route),
        call(hostnet.remove_route, route),
        call(links.unwire_machine, m, delete_netns=True),
        call(links.unwire_machine, m, delete_netns=True),
        call(links.read_machines),
        call(wg.read, wg_name),
        call(nft.delete_table),
        call(nft.delete_table),
        call(nft.read, wg_name),
    )
    assert results[4] == nft.Contents(frozenset({net}), frozenset({source_of(m)}), True)
    assert results[9] == nft.Contents(frozenset(), frozenset(), True)
    assert results[14] == frozenset({m})
    assert results[15] == frozenset({route})
    assert results[18] == frozenset({DNS})
    assert results[23] == frozenset()
    assert results[24] is None
    assert results[27] == nft.Contents(frozenset(), frozenset(), False)
    assert not netns.exists(m.netns)
    # Failures arrive as SixpnError subclasses naming what was being done.
    ((status, message),) = outcomes(h, call(wg.set_peers, "sxwnone", [WgPeer("x", frozenset())]))
    assert status == "error"
    assert message.startswith("SixpnError: setting peer x on sxwnone")
    ((status, message),) = outcomes(h, call(links.wire_machine, m, create_netns=False))
    assert status == "error"
    assert message.startswith("NotFound: wiring machine")
    # Under `ip netns exec` (a private mount namespace) a machine namespace is refused.
    via = ["ip", "netns", "exec", h]
    ((status, message),) = outcomes(h, call(links.wire_machine, m, create_netns=True), via=via)
    assert status == "error"
    assert message.startswith("Unavailable: wiring machine")
    assert not netns.exists(m.netns)
    # A machine namespace is read over a socket opened from inside it, and the thread that
    # opened it is back in the host's namespace afterwards, also when the namespace is gone.
    with netns.temporary("ipr") as other:
        sh("ip", "-n", other, "link", "add", "sxprobe0", "type", "veth", "peer", "sxprobe1")
        there, gone = inside(
            h,
            call(links_via_ipr_in, f"/var/run/netns/{other}"),
            call(links_via_ipr_in, f"/var/run/netns/{other}-absent"),
        )
    assert there == (["lo", "sxprobe0", "sxprobe1"], True)
    assert gone == (["OSError"], True)


if __name__ == "__main__":
    _driver()

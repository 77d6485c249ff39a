"""The state of one host's data path, as values: what should be, and what the kernel has.

The agent computes the *desired* :class:`HostState` from its view of the fleet
(``core.desired``), reads the *actual* one from the kernel (``agent.linux``), and applies the
difference (``core.plan``). Both sides are the same type, so "apply the plan to the actual
state" can be checked in pure tests, and a second plan from the result is empty.

Names the agent owns (ARCHITECTURE habit 3): interfaces ``sx*`` (``sxw<host id>`` for
WireGuard, unique on a machine that runs several hosts, as wireguard-go's control sockets share
one directory; ``sxm<machine id[:12]>`` for a machine's host-side veth), namespaces
``sixpn-m-<machine id>`` when the agent makes them, routes with protocol :data:`ROUTE_PROTO`
(in the main table and in :data:`PEERING_TABLE`), the rule that sends 6PN's packets to
:data:`PEERING_TABLE`, the nftables table ``inet sixpn``.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from sixpn.core import addressing

IF_PREFIX = "sx"
MACHINE_IF_PREFIX = "sxm"
WG_IF_PREFIX = "sxw"
MACHINE_NETNS_PREFIX = "sixpn-m-"
ROUTE_PROTO = 0x6E  # 110: "sixpn" in /etc/iproute2/rt_protos terms; routes we own carry it
MAIN_TABLE = 254
# Routed peering's prefixes live in a table of their own, looked up only for packets from 6PN
# (rule ``from fdaa::/16 lookup 110``, just before the main table): whatever prefix a peer
# routes, the host's own traffic (its WireGuard endpoints, the control plane) never follows it.
PEERING_TABLE = 110
PEERING_RULE_PRIORITY = 32000
NFT_TABLE = "sixpn"  # family inet
HOST_SIDE_ADDRESS = IPv6Address("fe80::1")  # every machine's default gateway
SIXPN_ROUTE = addressing.SIXPN_PREFIX  # fdaa::/16 -> the WireGuard interface


def wg_ifname(host_id: int) -> str:
    return f"{WG_IF_PREFIX}{host_id:x}"


def machine_ifname(machine_id: str) -> str:
    return f"{MACHINE_IF_PREFIX}{machine_id[:12]}"


def machine_netns(machine_id: str) -> str:
    return f"{MACHINE_NETNS_PREFIX}{machine_id}"


@dataclass(frozen=True, slots=True)
class WgPeer:
    """A WireGuard peer of the host's interface: another host of the mesh, or a client peer."""

    public_key: str
    allowed_ips: frozenset[IPv6Network]
    endpoint: str | None = None  # None for client peers: they dial in
    keepalive: int = 0


@dataclass(frozen=True, slots=True)
class MachineLink:
    """One machine wired to the host: its namespace, the veth pair, its address."""

    machine_id: str
    netns: str
    host_ifname: str
    address: IPv6Address  # inside the namespace, on eth0, /112
    prefix: IPv6Network  # the machine's /112, routed to host_ifname

    @property
    def inner_ifname(self) -> str:
        return "eth0"


@dataclass(frozen=True, slots=True)
class Route:
    prefix: IPv6Network
    ifname: str
    table: int = MAIN_TABLE


@dataclass(frozen=True, slots=True)
class Source:
    """A machine's host-side veth and the /112 it may send from (SPEC 3, anti-spoofing): an
    element of the nftables set that also lets it reach its own network's /48."""

    ifname: str
    prefix: IPv6Network  # the machine's /112


def source_of(link: MachineLink) -> Source:
    return Source(link.host_ifname, link.prefix)


@dataclass(frozen=True, slots=True)
class Peering:
    """A network's /48 and a prefix routed to one of its peers (SPEC 6, routed peering): the
    two may exchange packets in both directions, and nothing else may reach the prefix (an
    element of the nftables set ``peered``: the only asymmetric pairs of the data path)."""

    network: IPv6Network  # a network's /48
    prefix: IPv6Network  # the external network's prefix, outside fdaa::/16


@dataclass(frozen=True, slots=True)
class HostState:
    wg_ifname: str | None  # None: no interface
    listen_port: int = 0
    wg_peers: frozenset[WgPeer] = frozenset()
    service_addresses: frozenset[IPv6Address] = frozenset()  # on lo
    machines: frozenset[MachineLink] = frozenset()
    routes: frozenset[Route] = frozenset()
    pairs: frozenset[IPv6Network] = frozenset()  # network /48s forwarded within themselves
    sources: frozenset[Source] = frozenset()  # one per wired machine (nftables set elements)
    peered: frozenset[Peering] = frozenset()  # routed peering (nftables set elements)
    nft_rules_ok: bool = True  # the table's fixed rules are as rendered (actual side)
    # machines wired in part (an interrupted wiring, a deleted piece): actual side only, never
    # desired; the plan completes the ones still desired as they are and unwires the others
    partial_machines: frozenset[MachineLink] = frozenset()
    # host-side machine links (``sxm*``) that record no machine: what a wiring into an
    # existing namespace cut short between making the veth pair and recording the machine
    # leaves, or a link whose record was cleared by hand. Actual side only; the plan removes
    # them whole (a machine still desired is then wired afresh, in the namespace it has).
    stray_links: frozenset[str] = frozenset()


# The sets a desired state is made of (the others are the interface, and the actual side's
# findings): what core/incremental.py keeps and journals, and core/plan.Moves carries.
DESIRED_SETS = ("wg_peers", "service_addresses", "machines", "routes", "pairs", "sources", "peered")

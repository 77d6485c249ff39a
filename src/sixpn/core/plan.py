"""The plan: the operations that take a host from its actual state to the desired one.

``plan(actual, desired)`` is a pure diff; every operation is idempotent on its own (applying it
to a state that already has it changes nothing) and ``apply(state, ops)`` is its model, so that
``apply(actual, plan(actual, desired)) == desired`` and ``plan(desired, desired) == []`` can be
tested for any pair of states (hypothesis, in tests/unit/test_plan.py).

WireGuard peers go in batches: one ``SetPeers`` holding every peer to add or update and one
``RemovePeers`` holding every key to remove, as the adapter pays one ``wg`` process per batch
(not per peer: 5,000 peers cost seconds otherwise). A batch holds only the peers that differ,
so a change of one peer on a gateway holding thousands is an operation on that peer alone
(SPEC 9: adding or removing one touches no other).

Order: what new traffic needs comes first (the interface, the forwarding pairs and sources,
machines, routes, addresses, peers), what goes away comes last in reverse, so that no packet
of a network that stays is ever dropped during an apply. A machine whose wiring changed is
unwired then wired.

Machines wired in part (``partial_machines``: the host side records the machine, something
else is missing) are completed if still desired, and unwired at once otherwise, not left for
teardown (issue 17). Host-side machine links that record nothing (``stray_links``) carry no
machine's traffic: they are removed first, so that a machine still desired is wired afresh.
A machine wired again may get a new veth pair (the old one's peer was elsewhere), which has
none of the old routes: its routes are added again (a replace where they were kept), so that
one apply reaches the desired state whatever the adapter had to remake.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from typing import Any, TypeVar

from sixpn.core.hoststate import (
    DESIRED_SETS,
    HostState,
    MachineLink,
    Peering,
    Route,
    Source,
    WgPeer,
)


@dataclass(frozen=True, slots=True)
class EnsureWg:
    ifname: str
    listen_port: int


@dataclass(frozen=True, slots=True)
class RemoveWg:
    ifname: str


@dataclass(frozen=True, slots=True)
class SetPeers:
    """Add or update these peers (each gets exactly its allowed IPs), one batch: a gateway's
    5,000 peers cost ~0.7 s in batches of ``wg set`` against ~8.4 s one process per peer
    (docs/benchmarks.md). Only the peers that differ are in it: a change of one peer is a
    batch of one, and the interface's other peers are not touched."""

    peers: frozenset[WgPeer]

    def __str__(self) -> str:
        peers = sorted(self.peers, key=_peer_key)
        return f"SetPeers({_summary(peers, _peer_key, _describe_peer)})"


@dataclass(frozen=True, slots=True)
class RemovePeers:
    """Remove the peers with these public keys, one batch."""

    public_keys: frozenset[str]

    def __str__(self) -> str:
        return f"RemovePeers({_summary(sorted(self.public_keys), str, str)})"


@dataclass(frozen=True, slots=True)
class AddAddress:
    address: IPv6Address


@dataclass(frozen=True, slots=True)
class RemoveAddress:
    address: IPv6Address


@dataclass(frozen=True, slots=True)
class WireMachine:
    link: MachineLink


@dataclass(frozen=True, slots=True)
class UnwireMachine:
    link: MachineLink


@dataclass(frozen=True, slots=True)
class RemoveStrayLink:
    """Delete a host-side machine link that records no machine (its veth peer goes with it)."""

    ifname: str


@dataclass(frozen=True, slots=True)
class AddRoute:
    route: Route


@dataclass(frozen=True, slots=True)
class RemoveRoute:
    route: Route


@dataclass(frozen=True, slots=True)
class ReplaceNftTable:
    """The fixed rules (re)written with the sets' elements, in one atomic batch."""

    pairs: frozenset[IPv6Network]
    sources: frozenset[Source]
    peered: frozenset[Peering] = frozenset()


@dataclass(frozen=True, slots=True)
class AddPairs:
    networks: frozenset[IPv6Network]


@dataclass(frozen=True, slots=True)
class RemovePairs:
    networks: frozenset[IPv6Network]


@dataclass(frozen=True, slots=True)
class AddSources:
    sources: frozenset[Source]


@dataclass(frozen=True, slots=True)
class RemoveSources:
    sources: frozenset[Source]


@dataclass(frozen=True, slots=True)
class AddPeered:
    peerings: frozenset[Peering]


@dataclass(frozen=True, slots=True)
class RemovePeered:
    peerings: frozenset[Peering]


Op = (
    EnsureWg
    | RemoveWg
    | SetPeers
    | RemovePeers
    | AddAddress
    | RemoveAddress
    | WireMachine
    | UnwireMachine
    | RemoveStrayLink
    | AddRoute
    | RemoveRoute
    | ReplaceNftTable
    | AddPairs
    | RemovePairs
    | AddSources
    | RemoveSources
    | AddPeered
    | RemovePeered
)


_E = TypeVar("_E")
_Pair = tuple[frozenset[_E], frozenset[_E]]


def _minus(a: frozenset[_E], b: frozenset[_E]) -> frozenset[_E]:
    """``a - b``, at no cost when they are one set: unchanged parts of two states are often
    the same set object."""
    return frozenset() if a is b else a - b


def _by_key(peers: Iterable[WgPeer]) -> dict[str, WgPeer]:
    return {p.public_key: p for p in peers}


@dataclass(frozen=True, slots=True)
class Moves:
    """What moved from one desired state to the next, set by set: ``(gone, come)`` of each.

    The desired state kept change by change (core/incremental.py) journals its moves, so
    that a change is planned from what it moved (:func:`plan_moves`), never from a diff of two
    whole states: a host holding a thousand machines and a thousand mesh peers plans one
    machine's change in time that does not depend on those thousands.
    """

    wg_peers: _Pair[WgPeer] = (frozenset(), frozenset())
    service_addresses: _Pair[IPv6Address] = (frozenset(), frozenset())
    machines: _Pair[MachineLink] = (frozenset(), frozenset())
    routes: _Pair[Route] = (frozenset(), frozenset())
    pairs: _Pair[IPv6Network] = (frozenset(), frozenset())
    sources: _Pair[Source] = (frozenset(), frozenset())
    peered: _Pair[Peering] = (frozenset(), frozenset())

    def __bool__(self) -> bool:
        return any(gone or come for gone, come in (getattr(self, f) for f in DESIRED_SETS))

    @classmethod
    def between(cls, old: HostState, new: HostState) -> Moves:
        """The moves from ``old`` to ``new`` (of their sets; the interface is not compared)."""
        return cls(**{f: _moved(getattr(old, f), getattr(new, f)) for f in DESIRED_SETS})


def _moved(old: frozenset[_E], new: frozenset[_E]) -> _Pair[_E]:
    """``(gone, come)`` from ``old`` to ``new``."""
    return (_minus(old, new), _minus(new, old))


_NOTHING: _Pair[Any] = (frozenset(), frozenset())


@dataclass(slots=True)
class _Diff:
    """What the plan's operations are made from (whichever way it was found)."""

    pairs: _Pair[IPv6Network]
    sources: _Pair[Source]
    peered: _Pair[Peering]
    stray_links: list[str]  # host-side machine links recording nothing, removed first
    stale_machines: frozenset[MachineLink]  # machines wired now that are not as desired
    rewired: frozenset[str]  # of those, the IDs that are desired (wired again, new shape)
    wired: list[MachineLink]  # machines to wire, by ID
    routes: _Pair[Route]
    service_addresses: _Pair[IPv6Address]
    have: dict[str, WgPeer]  # peers there that are not as desired, by key
    want: dict[str, WgPeer]  # peers desired that are not there as they are, by key


def plan(actual: HostState, desired: HostState) -> list[Op]:
    ops: list[Op] = []
    # -- what traffic needs first ------------------------------------------------------------
    wg_changed = (actual.wg_ifname, actual.listen_port) != (desired.wg_ifname, desired.listen_port)
    if desired.wg_ifname is not None and wg_changed:
        if actual.wg_ifname is not None and actual.wg_ifname != desired.wg_ifname:
            ops.append(RemoveWg(actual.wg_ifname))
        ops.append(EnsureWg(desired.wg_ifname, desired.listen_port))
    nft_ok = actual.nft_rules_ok  # else the table is written whole, its sets with it
    if not nft_ok:
        ops.append(ReplaceNftTable(desired.pairs, desired.sources, desired.peered))
    # Interfaces replaced or rewired below lose their routes (and a new interface its peers).
    gone_ifs: set[str | None] = set()
    if wg_changed and actual.wg_ifname != desired.wg_ifname:
        gone_ifs.add(actual.wg_ifname)
    gone_ifs.update(actual.stray_links)
    stale_machines = _minus(actual.machines, desired.machines) | (
        actual.partial_machines - desired.machines
    )
    # (a change of one machine of a host holding a thousand costs that machine, not the host)
    desired_ids = {m.machine_id for m in desired.machines} if stale_machines else set()
    rewired = frozenset(m.machine_id for m in stale_machines if m.machine_id in desired_ids)
    gone_ifs.update(m.host_ifname for m in stale_machines if m.machine_id in rewired)
    wired = sorted(_minus(desired.machines, actual.machines), key=lambda m: m.machine_id)
    routes = actual.routes
    if gone_ifs:
        routes = frozenset(r for r in actual.routes if r.ifname not in gone_ifs)
    # A machine wired again (in part before) may get a new veth pair, which has none of the
    # old one's routes: its routes are added again (a replace, if they were kept). A machine's
    # only route is its /112 on its veth (core.desired): looked up, not searched for, so that
    # wiring one machine of a host with a thousand costs that machine.
    again = {Route(link.prefix, link.host_ifname) for link in wired} & desired.routes
    kept_peers = frozenset() if actual.wg_ifname in gone_ifs else actual.wg_peers
    # only the peers that differ are looked at: a thousand that did not change cost nothing
    diff = _Diff(
        pairs=_moved(actual.pairs, desired.pairs) if nft_ok else _NOTHING,
        sources=_moved(actual.sources, desired.sources) if nft_ok else _NOTHING,
        peered=_moved(actual.peered, desired.peered) if nft_ok else _NOTHING,
        stray_links=sorted(actual.stray_links),
        stale_machines=stale_machines,
        rewired=rewired,
        wired=wired,
        routes=(_minus(routes, desired.routes), _minus(desired.routes, routes) | again),
        service_addresses=_moved(actual.service_addresses, desired.service_addresses),
        have=_by_key(_minus(kept_peers, desired.wg_peers)),
        want=_by_key(_minus(desired.wg_peers, kept_peers)),
    )
    _operations(ops, diff)
    if desired.wg_ifname is None and actual.wg_ifname is not None:
        ops.append(RemoveWg(actual.wg_ifname))
    return ops


def plan_moves(moves: Moves) -> list[Op]:
    """``plan(before, after)`` of two desired states (as core.desired builds them: a machine's
    only route is its /112 on its veth) from what moved between them: the plan of a change
    applied on top of the state before it, which the kernel holds (agent/reconciler.py).
    Checked against :func:`plan` after every change of random fleets
    (tests/unit/test_incremental.py)."""
    stale = moves.machines[0]
    wired = sorted(moves.machines[1], key=lambda m: m.machine_id)
    rewired = frozenset(m.machine_id for m in wired) & {m.machine_id for m in stale}
    # a machine wired again: the routes of its old veth go with it, its new one gets its route
    gone_ifs = {m.host_ifname for m in stale if m.machine_id in rewired}
    gone_routes, come_routes = moves.routes
    diff = _Diff(
        pairs=moves.pairs,
        sources=moves.sources,
        peered=moves.peered,
        stray_links=[],
        stale_machines=stale,
        rewired=rewired,
        wired=wired,
        routes=(
            frozenset(r for r in gone_routes if r.ifname not in gone_ifs),
            come_routes | {Route(link.prefix, link.host_ifname) for link in wired},
        ),
        service_addresses=moves.service_addresses,
        have=_by_key(moves.wg_peers[0]),
        want=_by_key(moves.wg_peers[1]),
    )
    return _operations([], diff)


def _operations(ops: list[Op], d: _Diff) -> list[Op]:
    """The operations of a diff, after ``ops``: what new traffic needs first, what goes away
    last, in reverse."""
    if d.pairs[1]:
        ops.append(AddPairs(d.pairs[1]))
    if d.sources[1]:
        ops.append(AddSources(d.sources[1]))
    if d.peered[1]:
        ops.append(AddPeered(d.peered[1]))
    ops.extend(RemoveStrayLink(ifname) for ifname in d.stray_links)
    stale = sorted(d.stale_machines, key=_link_key)
    ops.extend(UnwireMachine(link) for link in stale if link.machine_id in d.rewired)
    ops.extend(WireMachine(link) for link in d.wired)
    ops.extend(AddRoute(route) for route in sorted(d.routes[1], key=_route_key))
    ops.extend(AddAddress(address) for address in sorted(d.service_addresses[1]))
    changed = frozenset(p for key, p in d.want.items() if not _same_peer(d.have.get(key), p))
    if changed:
        ops.append(SetPeers(changed))

    # -- what goes away, last ------------------------------------------------------------------
    if d.have.keys() - d.want.keys():
        ops.append(RemovePeers(frozenset(d.have.keys() - d.want.keys())))
    ops.extend(RemoveAddress(address) for address in sorted(d.service_addresses[0]))
    ops.extend(RemoveRoute(route) for route in sorted(d.routes[0], key=_route_key))
    ops.extend(UnwireMachine(link) for link in stale if link.machine_id not in d.rewired)
    if d.peered[0]:
        ops.append(RemovePeered(d.peered[0]))
    if d.sources[0]:
        ops.append(RemoveSources(d.sources[0]))
    if d.pairs[0]:
        ops.append(RemovePairs(d.pairs[0]))
    return ops


def _link_key(link: MachineLink) -> tuple[str, str, str]:
    return (link.machine_id, str(link.address), link.netns)


def _same_peer(have: WgPeer | None, want: WgPeer) -> bool:
    """A client peer's endpoint is whatever WireGuard learned when it last dialled in: only an
    endpoint the desired state names (another host's) is compared."""
    if have is None:
        return False
    if want.endpoint is None:
        return (have.allowed_ips, have.keepalive) == (want.allowed_ips, want.keepalive)
    return have == want


_T = TypeVar("_T")
SHOWN = 3  # peers named in an operation's text; the rest are counted (logs stay one line)


def _summary(items: list[_T], key: Callable[[_T], str], one: Callable[[_T], str]) -> str:
    """``1 peer: K (a, b)`` or ``5000 peers: K1, K2, K3 and 4997 more``."""
    if len(items) == 1:
        return f"1 peer: {one(items[0])}"
    head = ", ".join(key(item) for item in items[:SHOWN])
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return f"{len(items)} peers: {head}{more}"


def _describe_peer(peer: WgPeer) -> str:
    allowed = ", ".join(str(n) for n in sorted(peer.allowed_ips, key=_net_key))
    return f"{peer.public_key} ({allowed or 'no allowed IPs'})"


def _peer_key(peer: WgPeer) -> str:
    return peer.public_key


def _net_key(net: IPv6Network) -> tuple[int, int]:
    return (int(net.network_address), net.prefixlen)


def _route_key(route: Route) -> tuple[int, int, str, int]:
    return (int(route.prefix.network_address), route.prefix.prefixlen, route.ifname, route.table)


def apply(state: HostState, ops: Iterable[Op]) -> HostState:
    """The model of applying ``ops``: what the kernel holds afterwards."""
    s = state
    for op in ops:
        match op:
            case EnsureWg(ifname=ifname, listen_port=port):
                keep = s.wg_peers if s.wg_ifname == ifname else frozenset()
                s = dataclasses.replace(s, wg_ifname=ifname, listen_port=port, wg_peers=keep)
            case RemoveWg(ifname=ifname):
                if s.wg_ifname == ifname:
                    routes = frozenset(r for r in s.routes if r.ifname != ifname)
                    s = dataclasses.replace(
                        s, wg_ifname=None, listen_port=0, wg_peers=frozenset(), routes=routes
                    )
            case SetPeers(peers=peers):
                keys = {p.public_key for p in peers}
                others = frozenset(p for p in s.wg_peers if p.public_key not in keys)
                s = dataclasses.replace(s, wg_peers=others | peers)
            case RemovePeers(public_keys=keys):
                s = dataclasses.replace(
                    s, wg_peers=frozenset(p for p in s.wg_peers if p.public_key not in keys)
                )
            case AddAddress(address=a):
                s = dataclasses.replace(s, service_addresses=s.service_addresses | {a})
            case RemoveAddress(address=a):
                s = dataclasses.replace(s, service_addresses=s.service_addresses - {a})
            case WireMachine(link=link):
                same_id = frozenset(m for m in s.machines if m.machine_id == link.machine_id)
                s = dataclasses.replace(
                    s,
                    machines=(s.machines - same_id) | {link},
                    partial_machines=s.partial_machines - {link},  # completed
                    stray_links=s.stray_links - {link.host_ifname},  # its link now records it
                    # a pair made again has no routes (the plan adds them after)
                    routes=frozenset(r for r in s.routes if r.ifname != link.host_ifname),
                )
            case UnwireMachine(link=link):
                routes = frozenset(r for r in s.routes if r.ifname != link.host_ifname)
                s = dataclasses.replace(
                    s,
                    machines=s.machines - {link},
                    partial_machines=s.partial_machines - {link},
                    stray_links=s.stray_links - {link.host_ifname},  # deleted by name
                    routes=routes,
                )
            case RemoveStrayLink(ifname=ifname):
                s = dataclasses.replace(
                    s,
                    stray_links=s.stray_links - {ifname},
                    routes=frozenset(r for r in s.routes if r.ifname != ifname),
                )
            case AddRoute(route=r):
                s = dataclasses.replace(s, routes=s.routes | {r})
            case RemoveRoute(route=r):
                s = dataclasses.replace(s, routes=s.routes - {r})
            case ReplaceNftTable(pairs=pairs, sources=sources, peered=peered):
                s = dataclasses.replace(
                    s, pairs=pairs, sources=sources, peered=peered, nft_rules_ok=True
                )
            case AddPairs(networks=n):
                s = dataclasses.replace(s, pairs=s.pairs | n)
            case RemovePairs(networks=n):
                s = dataclasses.replace(s, pairs=s.pairs - n)
            case AddSources(sources=src):
                s = dataclasses.replace(s, sources=s.sources | src)
            case RemoveSources(sources=src):
                s = dataclasses.replace(s, sources=s.sources - src)
            case AddPeered(peerings=p):
                s = dataclasses.replace(s, peered=s.peered | p)
            case RemovePeered(peerings=p):
                s = dataclasses.replace(s, peered=s.peered - p)
    return s

"""One host's desired state kept up to date change by change, in time the change sets.

``core.desired.desired_state`` reads the whole fleet: 125 ms at 100k machines for a host with
~92 of them, and 0.4-0.6 s with the equality check and the plan (docs/benchmarks.md, issue 16).
An agent that called it for every change of its own network did work that grows with the
fleet, on the event loop its DNS server shares. What the desired state reads of the fleet is
small once indexed:

- of every other host, only *which networks it carries* (a live machine or a client peer
  there), kept as counts per host, and its mesh peer built from them; a change rebuilds the
  mesh peer of the one host whose set it moved, over that host's networks only;
- this host's own machines (links, routes, sources), its served peers, and the routed peers
  (few, fleet-wide);
- the sets of :class:`HostState` are updated by set operations on the previous ones, so that
  an unchanged part is the same object (equality and the plan then cost almost nothing).

The rule, checked on random fleets and changes (tests/unit/test_incremental.py): after every
change, :attr:`IncrementalDesired.state` equals ``desired_state`` built from scratch, and
:meth:`IncrementalDesired.apply` says "changed" exactly when it differs from the one before.

A change of this host's own record (its ID, keys, gateway flag) rebuilds everything: it is rare.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from typing import Any

from sixpn.core import addressing
from sixpn.core.desired import carried, machine_link, mesh_peer, served_peer
from sixpn.core.hoststate import (
    PEERING_TABLE,
    SIXPN_ROUTE,
    HostState,
    MachineLink,
    Peering,
    Route,
    Source,
    WgPeer,
    source_of,
)
from sixpn.model.entities import Host, Machine, MachineState, Peer
from sixpn.view import Delta, View, identity


@dataclass
class IncrementalDesired:
    """The desired state of host ``me`` on interface ``wg``, following the fleet's changes.

    ``netns_of(machine_id)``: the orchestrator's namespace for a machine, if it made one (else
    the agent makes ``sixpn-m-<id>``); asked when a machine of this host changes, and for every
    machine of it at :meth:`recheck_netns`.
    """

    me: str
    listen_port: int
    wg: str
    netns_of: Callable[[str], str | None] | None = None
    state: HostState = field(init=False)
    # the index
    _view: View = field(init=False, default_factory=View)
    _counts: dict[str, Counter[int]] = field(init=False, default_factory=dict)
    _links: dict[str, MachineLink] = field(init=False, default_factory=dict)
    _served: dict[Any, Peer] = field(init=False, default_factory=dict)
    _routed: dict[Any, Peer] = field(init=False, default_factory=dict)
    _mesh: dict[str, WgPeer] = field(init=False, default_factory=dict)
    # the parts of the state, each kept as the set it is in ``state``
    _mesh_set: frozenset[WgPeer] = field(init=False, default=frozenset())
    _served_set: frozenset[WgPeer] = field(init=False, default=frozenset())
    _link_set: frozenset[MachineLink] = field(init=False, default=frozenset())
    _link_routes: frozenset[Route] = field(init=False, default=frozenset())
    _sources: frozenset[Source] = field(init=False, default=frozenset())
    _active: list[Peer] = field(init=False, default_factory=list)  # routed, in my networks
    _routed_table: frozenset[Route] = field(init=False, default=frozenset())
    _peered: frozenset[Peering] = field(init=False, default=frozenset())
    _pairs: frozenset[IPv6Network] = field(init=False, default=frozenset())
    _service: frozenset[IPv6Address] = field(init=False, default=frozenset())
    _routes: frozenset[Route] = field(init=False, default=frozenset())
    _parts: tuple[object, ...] = field(init=False, default=(None,) * 4)  # of the last unions
    # what a change moved, settled by _settle
    _dirty_hosts: set[str] = field(init=False, default_factory=set)
    _mine_flipped: set[int] = field(init=False, default_factory=set)  # networks that came or went
    _flips: dict[str, set[int]] = field(init=False, default_factory=dict)  # likewise, elsewhere
    _routed_moved: bool = field(init=False, default=False)
    _served_moved: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.state = HostState(wg_ifname=self.wg, listen_port=self.listen_port)
        self._routes = frozenset({Route(SIXPN_ROUTE, self.wg)})

    # -- whole fleet ------------------------------------------------------------------------------

    def load(self, view: View) -> HostState:
        """Index ``view`` from scratch (at start, at a new snapshot); ``view`` is then followed:
        pass every change applied to it to :meth:`apply`."""
        self._view = view
        self._counts = {}
        for machine in view.machines.values():
            self._count(carried(machine), 1)
        for peer in view.peers.values():
            self._count(carried(peer), 1)
        self._links = {
            m.id: self._link(m)
            for m in view.machines.values()
            if m.host == self.me and m.state != MachineState.DESTROYED
        }
        self._served = {identity(p): p for p in view.peers.values() if p.gateway == self.me}
        self._routed = {identity(p): p for p in view.peers.values() if p.routes}
        self._mesh = {}
        self._mesh_set = frozenset()
        self._link_set = frozenset(self._links.values())
        self._link_routes = frozenset(Route(k.prefix, k.host_ifname) for k in self._link_set)
        self._sources = frozenset(source_of(k) for k in self._link_set)
        self._served_set = frozenset(served_peer(p) for p in self._served.values())
        self._pairs = frozenset(addressing.network_prefix(n) for n in self._counts.get(self.me, ()))
        self._mine_flipped.clear()
        self._dirty_hosts = set(view.hosts)
        self._flips.clear()
        self._routed_moved = self._served_moved = True
        self._parts = (None,) * 4
        # made from the new parts, not kept equal to the state before: a state whose sets hold
        # other (equal) objects than the parts would make the next change compare them deeply,
        # element by element (0.13 s at 100k for the first change after a load)
        self.state = HostState(wg_ifname=self.wg, listen_port=self.listen_port)
        self._settle()
        return self.state

    def recheck_netns(self) -> bool:
        """Ask ``netns_of`` again for every machine of this host (an orchestrator may have made
        a namespace since); whether the state changed."""
        if self.netns_of is None:
            return False
        old = self.state
        for machine_id, link in list(self._links.items()):
            machine = self._view.machines.get(machine_id)
            if machine is not None:
                self._relink(link, self._link(machine))
        self._settle()
        return self.state != old

    # -- one change at a time ------------------------------------------------------------------

    def apply(self, deltas: Iterable[Delta]) -> bool:
        """Take changes in (already applied to the view); whether the state changed."""
        old = self.state
        for delta in deltas:
            if delta.kind == "host":
                self._host(delta)
            elif delta.kind == "machine":
                self._machine(delta)
            elif delta.kind == "peer":
                self._peer(delta)
            # organizations, networks, apps, statuses: not read by the data path
        if self.me in self._dirty_hosts:
            self.load(self._view)  # this host's own record: rare, everything is rebuilt
        else:
            self._settle()
        return self.state != old

    def _host(self, delta: Delta) -> None:
        for h in (delta.old, delta.new):
            if isinstance(h, Host):
                self._dirty_hosts.add(h.name)

    def _machine(self, delta: Delta) -> None:
        self._move(carried(delta.old), carried(delta.new))
        old, new = delta.old, delta.new
        assert old is None or isinstance(old, Machine)
        assert new is None or isinstance(new, Machine)
        was = self._links.get(old.id) if old is not None else None
        live = new is not None and new.host == self.me and new.state != MachineState.DESTROYED
        self._relink(was, self._link(new) if live and new is not None else None)

    def _peer(self, delta: Delta) -> None:
        self._move(carried(delta.old), carried(delta.new))
        for p, added in ((delta.old, False), (delta.new, True)):
            assert p is None or isinstance(p, Peer)
            if p is None:
                continue
            key = identity(p)
            if p.routes:  # routed peers reach every host of their network
                self._routed_moved = True
                self._dirty_hosts.add(p.gateway)
                if added:
                    self._routed[key] = p
                else:
                    del self._routed[key]
            if p.gateway == self.me:
                self._served_moved = True
                if added:
                    self._served[key] = p
                    self._served_set = self._served_set | {served_peer(p)}
                else:
                    del self._served[key]
                    self._served_set = self._served_set - {served_peer(p)}

    # -- the index ------------------------------------------------------------------------------

    def _link(self, machine: Machine) -> MachineLink:
        return machine_link(machine, self.netns_of(machine.id) if self.netns_of else None)

    def _relink(self, old: MachineLink | None, new: MachineLink | None) -> None:
        if old == new:
            return
        if old is not None:
            del self._links[old.machine_id]
            self._link_set = self._link_set - {old}
            self._link_routes = self._link_routes - {Route(old.prefix, old.host_ifname)}
            self._sources = self._sources - {source_of(old)}
        if new is not None:
            self._links[new.machine_id] = new
            self._link_set = self._link_set | {new}
            self._link_routes = self._link_routes | {Route(new.prefix, new.host_ifname)}
            self._sources = self._sources | {source_of(new)}

    def _move(self, before: tuple[str, int] | None, after: tuple[str, int] | None) -> None:
        if before != after:
            self._count(before, -1)
            self._count(after, 1)

    def _count(self, where: tuple[str, int] | None, step: int) -> None:
        """One more (or less) of a host's network; a host whose set of networks moved is
        marked."""
        if where is None:
            return
        host, net_id = where
        counts = self._counts.setdefault(host, Counter())
        counts[net_id] += step
        if counts[net_id] <= 0:
            del counts[net_id]
        elif not (counts[net_id] == 1 and step > 0):
            return
        # the network appeared on the host or went: its prefix joins or leaves a set (``pairs``
        # here, the host's mesh peer elsewhere); twice in one batch is no change
        flipped = self._mine_flipped if host == self.me else self._flips.setdefault(host, set())
        flipped.symmetric_difference_update({net_id})

    def _settle(self) -> None:
        """Rebuild the parts the changes moved, then the state from its parts."""
        me = self._view.hosts.get(self.me)
        mine = self._counts.get(self.me, Counter())
        if self._mine_flipped or self._routed_moved:
            # a routed peer's routes reach this host (its mesh, its table 110, ``peered``)
            # only in the networks it carries
            active = [p for p in self._routed.values() if p.net_id in mine]
            self._active = active
            self._dirty_hosts.update(
                p.gateway
                for p in self._routed.values()
                if self._routed_moved or p.net_id in self._mine_flipped
            )
            self._routed_table = frozenset(
                Route(r, self.wg, PEERING_TABLE) for p in active for r in p.routes
            )
            self._peered = frozenset(
                Peering(addressing.network_prefix(p.net_id), r) for p in active for r in p.routes
            )
        if self._mine_flipped:
            flipped = {addressing.network_prefix(n) for n in self._mine_flipped}
            went = {p for p in flipped if p in self._pairs}
            self._pairs = (self._pairs - went) | (flipped - went)
            self._mine_flipped.clear()
        if self._dirty_hosts or self._flips:
            self._remesh(self._dirty_hosts - {self.me})
            self._dirty_hosts.clear()
            self._flips.clear()
        if self._served_moved:
            service = {addressing.DNS_ADDRESS}
            if me is not None and me.gateway:
                # one address per network, not per peer: a gateway serves thousands of peers
                nets = {p.net_id for p in self._served.values()}
                service |= {addressing.network_service_address(n) for n in nets}
            self._service = frozenset(service)
        self._routed_moved = self._served_moved = False
        s = self.state
        # the unions are made again only when a part moved (a new set object): a copy of a
        # thousand mesh peers is cheap, but not free
        parts = (self._mesh_set, self._served_set, self._link_routes, self._routed_table)
        wg_peers, routes = s.wg_peers, s.routes
        if any(a is not b for a, b in zip(parts, self._parts, strict=True)):
            wg_peers = self._mesh_set | self._served_set
            routes = self._routes | self._link_routes | self._routed_table
            self._parts = parts
        # (``is`` first: a frozenset's ``==`` walks every element even against itself)
        self.state = HostState(
            wg_ifname=self.wg,
            listen_port=self.listen_port,
            wg_peers=s.wg_peers if _same(wg_peers, s.wg_peers) else wg_peers,
            service_addresses=self._service,
            machines=self._link_set,
            routes=s.routes if _same(routes, s.routes) else routes,
            pairs=self._pairs,
            sources=self._sources,
            peered=self._peered,
        )

    def _remesh(self, names: set[str]) -> None:
        """Build again the mesh peers of hosts ``names`` (or drop them: hosts gone), and turn
        over the prefixes of the networks that came or went on the others."""
        routed_via: dict[str, list[IPv6Network]] = {}
        for p in self._active:
            routed_via.setdefault(p.gateway, []).extend(p.routes)
        hosts = self._view.hosts
        gone: set[WgPeer] = set()
        made: set[WgPeer] = set()
        for name in names:
            old = self._mesh.pop(name, None)
            other = hosts.get(name)
            new = None
            if other is not None:
                new = mesh_peer(other, self._counts.get(name, ()), routed_via.get(name, ()))
                self._mesh[name] = new
            if old != new:
                gone.update([old] if old is not None else [])
                made.update([new] if new is not None else [])
        for name, nets in self._flips.items():
            old = self._mesh.get(name)
            if name in names or old is None or not nets:
                continue  # built whole above, or nothing to turn over
            other = hosts[name]  # a host with a mesh peer is in the view
            turned = frozenset(addressing.host_prefix(n, other.host_id) for n in nets)
            new = dataclasses.replace(old, allowed_ips=old.allowed_ips ^ turned)
            self._mesh[name] = new
            gone.add(old)
            made.add(new)
        if gone or made:
            self._mesh_set = (self._mesh_set - gone) | made


def _same(a: frozenset[Any], b: frozenset[Any]) -> bool:
    return a is b or a == b

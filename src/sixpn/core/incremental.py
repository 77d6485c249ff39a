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
- the sets of :class:`HostState` are kept in place (:class:`_Kept`), each with a journal of
  what came and went since the reconciler last took it: the reconciler plans a change from
  its journal (:func:`~sixpn.core.plan.plan_moves`), never from a diff of two whole states, and
  a whole :class:`HostState` is made only when asked (:attr:`IncrementalDesired.state`: a full
  resync, a status report), each set copied only if it moved since the last time.

So a change costs what it touches, whatever the size of the host: a machine created elsewhere
on a host whose mesh has 999 peers turns one prefix over in one peer (the journal holds the old
peer and the new), not a copy of 999 (0.14 ms at 100k machines before, x7 the cost at 1k).

The rule, checked on random fleets and changes (tests/unit/test_incremental.py): after every
change, :attr:`IncrementalDesired.state` equals ``desired_state`` built from scratch,
:meth:`IncrementalDesired.apply` says "changed" exactly when it differs from the one before,
and the plan of the journal taken is the plan between the two states.

A change of this host's own record (its ID, keys, gateway flag) rebuilds everything: it is rare.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from typing import Any, Generic, TypeVar

from sixpn.core import addressing
from sixpn.core.desired import carried, machine_link, mesh_peer, served_peer
from sixpn.core.hoststate import (
    DESIRED_SETS,
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
from sixpn.core.plan import Moves
from sixpn.model.entities import Host, Machine, MachineState, Peer
from sixpn.view import Delta, View, identity

_E = TypeVar("_E", bound=Hashable)


class _Kept(Generic[_E]):
    """One set of the desired state, kept in place, with two journals of what came and went:
    since the reconciler last took it (:meth:`take`), and since the last change
    (:meth:`moved`). An element added by two parts of the state (counted) goes when both
    have dropped it."""

    __slots__ = ("_count", "_frozen", "_journals")

    def __init__(self) -> None:
        self._count: dict[_E, int] = {}
        self._frozen: frozenset[_E] | None = frozenset()
        self._journals: tuple[tuple[set[_E], set[_E]], ...] = ((set(), set()), (set(), set()))

    def add(self, item: _E) -> None:
        n = self._count.get(item, 0)
        self._count[item] = n + 1
        if n == 0:
            self._note(item, came=True)

    def discard(self, item: _E) -> None:
        n = self._count.get(item, 0)
        if n > 1:
            self._count[item] = n - 1
        elif n == 1:
            del self._count[item]
            self._note(item, came=False)

    def _note(self, item: _E, *, came: bool) -> None:
        """``item`` came or went: in each journal, it cancels its opposite or is written."""
        self._frozen = None
        for gone, come in self._journals:
            into, opposite = (come, gone) if came else (gone, come)
            if item in opposite:
                opposite.remove(item)
            else:
                into.add(item)

    def swap(self, old: Iterable[_E], new: Iterable[_E]) -> None:
        """One part's elements replaced: ``new`` added, then ``old`` dropped."""
        for item in new:
            self.add(item)
        for item in old:
            self.discard(item)

    def become(self, other: _Kept[_E]) -> None:
        """Hold what ``other`` holds, journaling the difference (a load: the state rebuilt)."""
        mine, theirs = self._count.keys(), other._count.keys()
        for item in theirs - mine:
            self._note(item, came=True)
        for item in mine - theirs:
            self._note(item, came=False)
        self._count = dict(other._count)

    def __contains__(self, item: _E) -> bool:
        return item in self._count

    def frozen(self) -> frozenset[_E]:
        """The set, copied once after each move (then shared by every state made)."""
        if self._frozen is None:
            self._frozen = frozenset(self._count)
        return self._frozen

    def take(self) -> tuple[frozenset[_E], frozenset[_E]]:
        """``(gone, come)`` since the last take; the journal starts again."""
        gone, come = self._journals[0]
        if not (gone or come):
            return _NOTHING
        out = (frozenset(gone), frozenset(come))
        gone.clear()
        come.clear()
        return out

    def moved(self) -> bool:
        """Whether anything moved since the last call (for :meth:`IncrementalDesired.apply`)."""
        gone, come = self._journals[1]
        if not (gone or come):
            return False
        gone.clear()
        come.clear()
        return True


_NOTHING: tuple[frozenset[Any], frozenset[Any]] = (frozenset(), frozenset())


class _Parts:
    """The sets of a :class:`HostState`, kept."""

    __slots__ = (
        "every",
        "machines",
        "pairs",
        "peered",
        "routes",
        "service_addresses",
        "sources",
        "wg_peers",
    )

    def __init__(self) -> None:
        self.wg_peers: _Kept[WgPeer] = _Kept()
        self.service_addresses: _Kept[IPv6Address] = _Kept()
        self.machines: _Kept[MachineLink] = _Kept()
        self.routes: _Kept[Route] = _Kept()
        self.pairs: _Kept[IPv6Network] = _Kept()
        self.sources: _Kept[Source] = _Kept()
        self.peered: _Kept[Peering] = _Kept()
        self.every: tuple[_Kept[Any], ...] = tuple(getattr(self, f) for f in DESIRED_SETS)


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
    # the index
    _view: View = field(init=False, default_factory=View)
    _counts: dict[str, Counter[int]] = field(init=False, default_factory=dict)
    _links: dict[str, MachineLink] = field(init=False, default_factory=dict)
    _served: dict[Any, Peer] = field(init=False, default_factory=dict)
    _routed: dict[Any, Peer] = field(init=False, default_factory=dict)
    _mesh: dict[str, WgPeer] = field(init=False, default_factory=dict)
    _active: list[Peer] = field(init=False, default_factory=list)  # routed, in my networks
    # the small parts made whole again when they move (their elements are in ``_parts``)
    _routed_table: frozenset[Route] = field(init=False, default=frozenset())
    _peered: frozenset[Peering] = field(init=False, default=frozenset())
    _service: frozenset[IPv6Address] = field(init=False, default=frozenset())
    # the state's sets
    _parts: _Parts = field(init=False, default_factory=_Parts)
    # what a change moved, settled by _settle
    _dirty_hosts: set[str] = field(init=False, default_factory=set)
    _mine_flipped: set[int] = field(init=False, default_factory=set)  # networks that came or went
    _flips: dict[str, set[int]] = field(init=False, default_factory=dict)  # likewise, elsewhere
    _routed_moved: bool = field(init=False, default=False)
    _served_moved: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self._parts.routes.add(Route(SIXPN_ROUTE, self.wg))

    @property
    def state(self) -> HostState:
        """The desired state now, made whole (each set copied only if it moved since the last
        time it was asked for)."""
        sets: dict[str, Any] = {
            f: kept.frozen() for f, kept in zip(DESIRED_SETS, self._parts.every, strict=True)
        }
        return HostState(wg_ifname=self.wg, listen_port=self.listen_port, **sets)

    def take(self) -> Moves:
        """What moved since the last take (or since this object was made): the reconciler's
        journal, planned by :func:`~sixpn.core.plan.plan_moves`."""
        return Moves(
            **{f: kept.take() for f, kept in zip(DESIRED_SETS, self._parts.every, strict=True)}
        )

    # -- whole fleet ------------------------------------------------------------------------------

    def load(self, view: View) -> HostState:
        """Index ``view`` from scratch (at start, at a new snapshot); ``view`` is then followed:
        pass every change applied to it to :meth:`apply`. The journals take in the difference
        from the state before."""
        kept = self._parts
        self._parts = _Parts()
        self._parts.routes.add(Route(SIXPN_ROUTE, self.wg))
        self._view = view
        self._counts = {}
        for machine in view.machines.values():
            self._count(carried(machine), 1)
        for peer in view.peers.values():
            self._count(carried(peer), 1)
        self._links = {}
        for m in view.machines.values():
            if m.host == self.me and m.state != MachineState.DESTROYED:
                self._relink(None, self._link(m))
        self._served = {}
        self._routed = {identity(p): p for p in view.peers.values() if p.routes}
        for p in view.peers.values():
            if p.gateway == self.me:
                self._served[identity(p)] = p
                self._parts.wg_peers.add(served_peer(p))
        self._mesh = {}
        self._routed_table, self._peered, self._service = frozenset(), frozenset(), frozenset()
        self._mine_flipped = set(self._counts.get(self.me, ()))
        self._dirty_hosts = set(view.hosts)
        self._flips.clear()
        self._routed_moved = self._served_moved = True
        self._settle()
        fresh, self._parts = self._parts, kept
        for mine, theirs in zip(kept.every, fresh.every, strict=True):
            mine.become(theirs)
        return self.state

    def recheck_netns(self) -> bool:
        """Ask ``netns_of`` again for every machine of this host (an orchestrator may have made
        a namespace since); whether the state changed."""
        if self.netns_of is None:
            return False
        self._moved()
        for machine_id, link in list(self._links.items()):
            machine = self._view.machines.get(machine_id)
            if machine is not None:
                self._relink(link, self._link(machine))
        return self._moved()

    # -- one change at a time ------------------------------------------------------------------

    def apply(self, deltas: Iterable[Delta]) -> bool:
        """Take changes in (already applied to the view); whether the state changed."""
        self._moved()
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
        return self._moved()

    def _moved(self) -> bool:
        return any([kept.moved() for kept in self._parts.every])  # every journal cleared

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
                    self._parts.wg_peers.add(served_peer(p))
                else:
                    del self._served[key]
                    self._parts.wg_peers.discard(served_peer(p))

    # -- the index ------------------------------------------------------------------------------

    def _link(self, machine: Machine) -> MachineLink:
        return machine_link(machine, self.netns_of(machine.id) if self.netns_of else None)

    def _relink(self, old: MachineLink | None, new: MachineLink | None) -> None:
        if old == new:
            return
        p = self._parts
        if new is not None:
            self._links[new.machine_id] = new
            p.machines.add(new)
            p.routes.add(Route(new.prefix, new.host_ifname))
            p.sources.add(source_of(new))
        if old is not None:
            if new is None:
                del self._links[old.machine_id]
            p.machines.discard(old)
            p.routes.discard(Route(old.prefix, old.host_ifname))
            p.sources.discard(source_of(old))

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
        """Make again the parts the changes moved."""
        p = self._parts
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
            table = frozenset(Route(r, self.wg, PEERING_TABLE) for p in active for r in p.routes)
            peered = frozenset(
                Peering(addressing.network_prefix(p.net_id), r) for p in active for r in p.routes
            )
            p.routes.swap(self._routed_table, table)
            p.peered.swap(self._peered, peered)
            self._routed_table, self._peered = table, peered
        for net_id in self._mine_flipped:
            prefix = addressing.network_prefix(net_id)
            if (net_id in mine) != (prefix in p.pairs):
                (p.pairs.add if net_id in mine else p.pairs.discard)(prefix)
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
            p.service_addresses.swap(self._service, service)
            self._service = frozenset(service)
        self._routed_moved = self._served_moved = False

    def _remesh(self, names: set[str]) -> None:
        """Build again the mesh peers of hosts ``names`` (or drop them: hosts gone), and turn
        over the prefixes of the networks that came or went on the others."""
        routed_via: dict[str, list[IPv6Network]] = {}
        for p in self._active:
            routed_via.setdefault(p.gateway, []).extend(p.routes)
        hosts = self._view.hosts
        peers = self._parts.wg_peers
        for name in names:
            old = self._mesh.pop(name, None)
            other = hosts.get(name)
            new = None
            if other is not None:
                new = mesh_peer(other, self._counts.get(name, ()), routed_via.get(name, ()))
                self._mesh[name] = new
            if old != new:
                peers.swap([old] if old is not None else [], [new] if new is not None else [])
        for name, nets in self._flips.items():
            old = self._mesh.get(name)
            if name in names or old is None or not nets:
                continue  # built whole above, or nothing to turn over
            other = hosts[name]  # a host with a mesh peer is in the view
            turned = frozenset(addressing.host_prefix(n, other.host_id) for n in nets)
            new = WgPeer(old.public_key, old.allowed_ips ^ turned, old.endpoint, old.keepalive)
            self._mesh[name] = new
            peers.swap([old], [new])

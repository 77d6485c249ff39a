"""Which changes of the fleet can change one host's desired state, decided per change in O(1).

``core.desired.desired_state`` reads the whole fleet, and an agent used to call it for every
change anywhere: 2.3 ms at 1k machines, 125 ms at 100k, on the event loop its DNS server shares
(issue 16's probe). Most changes cannot change it: a machine created or destroyed on another
host, in a network that host keeps carrying, moves nothing this host holds. What the desired
state reads of other hosts is only *which networks each carries* (a live machine or a client
peer there), plus the hosts themselves and routed peers; :class:`Presence` keeps that as counts,
updated per change, and says whether a change touched it.

The rule, checked against ``desired_state`` itself on random fleets and changes
(tests/unit/test_presence.py): if :meth:`Presence.apply` returns False for a change, the
host's desired state after it equals the one before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from sixpn.model.entities import Entity, Machine, MachineState, Peer
from sixpn.view import Delta, View


def _carries(entity: Entity | None) -> tuple[str, int] | None:
    """(host, network) an entity makes a host carry: a live machine, a client peer."""
    if isinstance(entity, Machine) and entity.state != MachineState.DESTROYED:
        return entity.host, entity.net_id
    if isinstance(entity, Peer):
        return entity.gateway, entity.net_id
    return None


@dataclass
class Presence:
    """The networks every host carries, as counts; ``me`` is the host whose state is kept."""

    me: str
    counts: dict[str, Counter[int]] = field(default_factory=dict)

    def load(self, view: View) -> None:
        self.counts = {}
        for machine in view.machines.values():
            self._add(_carries(machine), 1)
        for peer in view.peers.values():
            self._add(_carries(peer), 1)

    def apply(self, deltas: Iterable[Delta]) -> bool:
        """Take the changes in; whether any of them may change ``me``'s desired state."""
        touched = False
        for delta in deltas:
            touched |= self._apply_one(delta)
        return touched

    def _apply_one(self, delta: Delta) -> bool:
        if delta.kind == "host":
            return True  # a host added, removed or changed: the mesh changes
        if delta.kind not in ("machine", "peer"):
            return False  # organizations, networks, apps: not read by the data path
        mine = False
        for entity in (delta.old, delta.new):
            if isinstance(entity, Machine) and entity.host == self.me:
                mine = True  # this host's own machines: links, routes, sources
            if isinstance(entity, Peer) and (entity.gateway == self.me or entity.routes):
                mine = True  # peers it serves; routed peers reach every host of their network
        before, after = _carries(delta.old), _carries(delta.new)
        moved = False
        if before != after:
            moved |= self._add(before, -1)
            moved |= self._add(after, 1)
        return mine or moved

    def _add(self, carried: tuple[str, int] | None, step: int) -> bool:
        """Count one more (or less) of a host's network; whether it started or stopped being
        carried there."""
        if carried is None:
            return False
        host, net_id = carried
        counts = self.counts.setdefault(host, Counter())
        counts[net_id] += step
        if counts[net_id] <= 0:
            del counts[net_id]
            return True
        return counts[net_id] == 1 and step > 0

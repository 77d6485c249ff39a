"""The fleet as a follower sees it: every entity in memory, fed by a snapshot and the stream.

Agents and DNS servers hold one :class:`View`. ``apply`` turns a change batch into
:class:`Delta` values (what an entity was and what it is now), so each consumer updates only the
indexes and answers the change touches; nobody rescans the fleet for "what changed".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sixpn.client.feed import ChangeBatch, Snapshot
from sixpn.model.entities import App, Entity, Host, HostStatus, Machine, Network, Org, Peer


@dataclass(frozen=True, slots=True)
class Delta:
    """One entity's change: ``old`` None for a creation, ``new`` None for a deletion."""

    kind: str
    old: Entity | None
    new: Entity | None


def identity(entity: Entity) -> Any:
    """The key an entity is known by inside its kind."""
    match entity:
        case Org(name=name) | Host(name=name):
            return name
        case HostStatus(host=host):
            return host
        case Machine(id=machine_id):
            return machine_id
        case Network(org=org, name=name) | App(org=org, name=name) | Peer(org=org, name=name):
            return (org, name)
    raise TypeError(f"not an entity: {entity!r}")


@dataclass
class View:
    revision: int = 0
    orgs: dict[str, Org] = field(default_factory=dict)
    networks: dict[tuple[str, str], Network] = field(default_factory=dict)
    apps: dict[tuple[str, str], App] = field(default_factory=dict)
    hosts: dict[str, Host] = field(default_factory=dict)
    host_statuses: dict[str, HostStatus] = field(default_factory=dict)
    machines: dict[str, Machine] = field(default_factory=dict)
    peers: dict[tuple[str, str], Peer] = field(default_factory=dict)

    def _table(self, kind: str) -> dict[Any, Any]:
        tables: dict[str, dict[Any, Any]] = {
            "org": self.orgs,
            "network": self.networks,
            "app": self.apps,
            "host": self.hosts,
            "hoststatus": self.host_statuses,
            "machine": self.machines,
            "peer": self.peers,
        }
        return tables[kind]

    @classmethod
    def from_snapshot(cls, snap: Snapshot) -> View:
        view = cls(revision=snap.revision)
        view.orgs = {identity(e): e for e in snap.orgs}
        view.networks = {identity(e): e for e in snap.networks}
        view.apps = {identity(e): e for e in snap.apps}
        view.hosts = {identity(e): e for e in snap.hosts}
        view.host_statuses = {identity(e): e for e in snap.host_statuses}
        view.machines = {identity(e): e for e in snap.machines}
        view.peers = {identity(e): e for e in snap.peers}
        return view

    def apply(self, batch: ChangeBatch) -> list[Delta]:
        """Apply one revision's events; return what changed. Old revisions change nothing."""
        if batch.revision <= self.revision:
            return []
        self.revision = batch.revision
        deltas = []
        for event in batch.events:
            table = self._table(event.kind)
            key = identity(event.entity)
            old = table.get(key)
            if event.type == "put":
                table[key] = event.entity
                deltas.append(Delta(event.kind, old, event.entity))
            elif old is not None:
                del table[key]
                deltas.append(Delta(event.kind, old, None))
        return deltas

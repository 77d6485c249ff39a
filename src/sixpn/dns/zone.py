"""The DNS server's state: one index per network, and answers encoded once, on first use.

``lookup(net_id, qname, qtype)`` is the hot path: one dict lookup of a pre-encoded
:class:`~sixpn.core.dnswire.Entry`. On a miss the answer is computed from the network's index
(``core.dnszone``), encoded with dnspython (``core.dnswire``) and kept, tagged with the
(network, app) it was computed from. A change touches only its tags: a machine's change drops
the cached answers of its app and its network's network-wide names, nothing else, so applying
it costs the same whatever the fleet's size. Answers for names that do not exist are shared by
every name of the same length and never cached per name (random names cannot fill memory).

The DNS server's UDP threads read the zone while the event loop applies changes to it: both
hold ``lock`` (reentrant) for every call that reads or changes it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from sixpn.core import dnsnames, dnswire
from sixpn.core.dnszone import NetworkIndex, Records, ZoneSettings, answer
from sixpn.model.entities import App, Machine, MachineState, Network, Peer
from sixpn.view import Delta, View

log = logging.getLogger("sixpn.dns.zone")

CacheKey = tuple[int, bytes, int]
Tag = tuple[int, str | None]  # (network ID, app name or None for network-wide names)

MAX_CACHED = 500_000  # entries; past it the cache starts again empty (bounded memory)


@dataclass(frozen=True)
class ZoneCounters:
    networks: int
    machines: int
    cached: int


class Zone:
    def __init__(self, settings: ZoneSettings, *, ttl: int = 5, neg_ttl: int = 5) -> None:
        self.settings = settings
        self.ttl = ttl
        self.neg_ttl = neg_ttl
        self.networks: dict[int, NetworkIndex] = {}
        self._cache: dict[CacheKey, dnswire.Entry] = {}
        self._tags: dict[Tag, list[CacheKey]] = {}
        self._nx: dict[int, dnswire.Entry] = {}  # by question-name length
        # Bumped by every change; whoever keeps whole responses (the UDP path) drops those of
        # the networks changed since it last looked (``take_changed``; None: every network).
        self.version = 0
        self._changed: set[int] | None = None
        self.lock = threading.RLock()

    # -- the hot path ---------------------------------------------------------------------------

    def lookup(self, net_id: int, qname: bytes, qtype: int) -> dnswire.Entry:
        """The answer to a `.internal` question (``qname`` lowercased wire form) from ``net_id``."""
        with self.lock:
            entry = self._cache.get((net_id, qname, qtype))
            if entry is not None:
                return entry
            return self._compute(net_id, qname, qtype)

    # -- misses ---------------------------------------------------------------------------------

    def _compute(self, net_id: int, qname: bytes, qtype: int) -> dnswire.Entry:
        index = self.networks.get(net_id)
        labels = _labels(qname)
        question = dnsnames.parse(labels[:-1]) if index is not None and labels else None
        records = answer(index, question, self.settings) if index and question else None
        if records is None:
            return self._nxdomain(qname)
        assert question is not None
        entry = self._encode(qname, qtype, question, records)
        if len(self._cache) >= MAX_CACHED:
            log.info("answer cache reached %d entries: starting it again", MAX_CACHED)
            self._cache.clear()
            self._tags.clear()
        key = (net_id, qname, qtype)
        self._cache[key] = entry
        self._tags.setdefault((net_id, getattr(question, "app", None)), []).append(key)
        return entry

    def _encode(
        self, qname: bytes, qtype: int, question: dnsnames.Question, records: Records
    ) -> dnswire.Entry:
        is_txt = isinstance(question, dnsnames.TXT_QUESTIONS)
        own_type = dnswire.QTYPE_TXT if is_txt else dnswire.QTYPE_AAAA
        wants = qtype in (own_type, dnswire.QTYPE_ANY)
        # A name asked for a type it does not have (A for an app name, ...) answers NODATA.
        return dnswire.build_entry(
            qname,
            qtype,
            rcode=dnswire.NOERROR,
            aaaa=records.aaaa if wants and not is_txt else (),
            txt=records.txt if wants and is_txt and records.txt else None,
            txt_sep=records.sep,
            ttl=self.ttl,
            neg_ttl=self.neg_ttl,
        )

    def _nxdomain(self, qname: bytes) -> dnswire.Entry:
        entry = self._nx.get(len(qname))
        if entry is None:
            # The tail depends only on the name's length (the SOA owner points into it).
            entry = dnswire.build_entry(
                qname, dnswire.QTYPE_AAAA, rcode=dnswire.NXDOMAIN, neg_ttl=self.neg_ttl
            )
            self._nx[len(qname)] = entry
        return entry

    # -- following the fleet --------------------------------------------------------------------

    def load(self, view: View) -> None:
        """Start again from a whole view (a snapshot)."""
        with self.lock:
            self.networks = {n.net_id: NetworkIndex(n.net_id) for n in view.networks.values()}
            for app in view.apps.values():
                self._app_machines(app.net_id, app.name)
            for machine in view.machines.values():
                if machine.state != MachineState.DESTROYED:
                    self._app_machines(machine.net_id, machine.app)[machine.id] = machine
            for peer in view.peers.values():
                self._index(peer.net_id).peers[peer.name] = peer
            self._cache.clear()
            self._tags.clear()
            self.version += 1
            self._changed = None

    def take_changed(self) -> set[int] | None:
        """The networks whose answers changed since the last call (None: all of them)."""
        with self.lock:
            changed, self._changed = self._changed, set()
            return changed

    def apply(self, deltas: Iterable[Delta]) -> None:
        with self.lock:
            self.version += 1
            for delta in deltas:
                for entity, added in ((delta.old, False), (delta.new, True)):
                    if entity is not None:
                        self._apply_one(entity, added)

    def _apply_one(self, entity: object, added: bool) -> None:
        match entity:
            case Machine():
                apps = self._app_machines(entity.net_id, entity.app)
                if added and entity.state != MachineState.DESTROYED:
                    apps[entity.id] = entity
                else:
                    apps.pop(entity.id, None)
                self._invalidate(entity.net_id, entity.app)
            case App():
                index = self._index(entity.net_id)
                if added:
                    index.apps.setdefault(entity.name, {})
                else:
                    index.apps.pop(entity.name, None)
                self._invalidate(entity.net_id, entity.name)
            case Peer():
                peers = self._index(entity.net_id).peers
                if added:
                    peers[entity.name] = entity
                else:
                    peers.pop(entity.name, None)
                self._invalidate(entity.net_id, None)
            case Network():
                if added:
                    self._index(entity.net_id)
                else:
                    self.networks.pop(entity.net_id, None)
                    self._invalidate_network(entity.net_id)

    def _index(self, net_id: int) -> NetworkIndex:
        index = self.networks.get(net_id)
        if index is None:
            index = self.networks[net_id] = NetworkIndex(net_id)
        return index

    def _app_machines(self, net_id: int, app: str) -> dict[str, Machine]:
        return self._index(net_id).apps.setdefault(app, {})

    def _invalidate(self, net_id: int, app: str | None) -> None:
        if self._changed is not None:
            self._changed.add(net_id)
        for tag in ((net_id, app), (net_id, None)):
            for key in self._tags.pop(tag, ()):
                self._cache.pop(key, None)

    def _invalidate_network(self, net_id: int) -> None:
        if self._changed is not None:
            self._changed.add(net_id)
        for tag in [t for t in self._tags if t[0] == net_id]:
            for key in self._tags.pop(tag):
                self._cache.pop(key, None)

    def counters(self) -> ZoneCounters:
        machines = sum(len(m) for n in self.networks.values() for m in n.apps.values())
        return ZoneCounters(len(self.networks), machines, len(self._cache))


def _labels(qname: bytes) -> tuple[str, ...]:
    """The labels of a lowercased wire name ending in ``internal``; () if it is not one."""
    labels = []
    i = 0
    while qname[i]:
        length = qname[i]
        try:
            labels.append(qname[i + 1 : i + 1 + length].decode("ascii"))
        except UnicodeDecodeError:
            return ()
        i += length + 1
    return tuple(labels) if labels and labels[-1] == "internal" else ()

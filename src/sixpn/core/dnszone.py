"""What a `.internal` question answers, from one network's machines, apps and peers.

Pure: :class:`NetworkIndex` holds one network's data (kept up to date by the DNS server from the
change stream); :func:`answer` maps a parsed question to records, or None for "no such name".
Only the asking network's index is ever consulted, so another network's names cannot be told
apart from names that exist nowhere.

Existence (NXDOMAIN versus NODATA): an app name exists while the app does; ``<region>.<app>``
while the region is in the catalogue; ``<id>.vm.<app>`` while that machine exists (started or
stopped); ``<group>.process.<app>`` and ``<value>.<key>.kv._metadata.<app>`` while some machine
of the app, started or not, has that group or metadata; ``top<N>.nearest.of.<app>`` while the
app exists. An existing name with nothing to list answers NODATA.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv6Address

from sixpn.core import addressing, dnsnames
from sixpn.model.entities import Machine, MachineState, Peer

STARTED = MachineState.STARTED


@dataclass(frozen=True, slots=True)
class Records:
    """An existing name's answer: AAAA addresses or one TXT value (empty: NODATA)."""

    aaaa: tuple[IPv6Address, ...] = ()
    txt: str | None = None
    sep: str = ","  # between the TXT value's items: a value too long for DNS is cut at one


@dataclass
class NetworkIndex:
    net_id: int
    apps: dict[str, dict[str, Machine]] = field(default_factory=dict)  # app -> id -> machine
    peers: dict[str, Peer] = field(default_factory=dict)


@dataclass(frozen=True)
class ZoneSettings:
    """What a DNS server knows besides the fleet: the regions and where it stands."""

    region_codes: frozenset[str]
    # distance (km) from this server's region to a region code; nearest-first ordering
    distance_from_here: Callable[[str], float]
    api_in_network: bool = False


def _started(machines: Iterable[Machine]) -> list[Machine]:
    return sorted((m for m in machines if m.state == STARTED), key=lambda m: m.id)


def _addresses(machines: Iterable[Machine]) -> Records:
    return Records(aaaa=tuple(m.address for m in machines))


def _txt(values: Iterable[str], sep: str = ",") -> Records:
    return Records(txt=sep.join(values), sep=sep)


def answer(index: NetworkIndex, q: dnsnames.Question, zs: ZoneSettings) -> Records | None:
    """The records for question ``q`` in ``index``'s network, or None if the name does not exist."""
    match q:
        case dnsnames.AppList():
            return _txt(sorted(index.apps))
        case dnsnames.PeerList():
            return _txt(sorted(p.name for p in index.peers.values() if not p.ephemeral))
        case dnsnames.PeerAddress(peer=name):
            found = index.peers.get(name)
            return Records(aaaa=(found.address,)) if found else None
        case dnsnames.Instances(include_stopped=everything):
            rows = []
            for app in sorted(index.apps):
                machines = index.apps[app].values()
                chosen = sorted(machines, key=lambda m: m.id) if everything else _started(machines)
                rows += [
                    f"instance={m.id},app={app},ip={m.address},region={m.region}" for m in chosen
                ]
            return _txt(rows, ";")
        case dnsnames.Api():
            return (
                Records(aaaa=(addressing.network_service_address(index.net_id),))
                if zs.api_in_network
                else None
            )
    machines_by_id = index.apps.get(q.app)
    if machines_by_id is None:
        return None
    machines = machines_by_id.values()
    match q:
        case dnsnames.AppMachines(region=None):
            return _addresses(_started(machines))
        case dnsnames.AppMachines(region=region):
            if region not in zs.region_codes and all(m.region != region for m in machines):
                return None
            return _addresses(m for m in _started(machines) if m.region == region)
        case dnsnames.Nearest(count=count):
            ranked = sorted(
                _started(machines), key=lambda m: (zs.distance_from_here(m.region), m.id)
            )
            return _addresses(ranked[:count])
        case dnsnames.Vm(machine_id=machine_id):
            machine = machines_by_id.get(machine_id)
            return Records(aaaa=(machine.address,)) if machine else None
        case dnsnames.ProcessGroup(group=group):
            if all(m.process_group != group for m in machines):
                return None
            return _addresses(m for m in _started(machines) if m.process_group == group)
        case dnsnames.Metadata(key=key, value=value):

            def matches(m: Machine) -> bool:
                return m.metadata.get(key, "").lower() == value and key in m.metadata

            if not any(matches(m) for m in machines):
                return None
            return _addresses(m for m in _started(machines) if matches(m))
        case dnsnames.RegionList(include_stopped=everything):
            in_regions = machines if everything else _started(machines)
            return _txt(sorted({m.region for m in in_regions}))
        case dnsnames.VmList(include_stopped=everything):
            chosen = sorted(machines, key=lambda m: m.id) if everything else _started(machines)
            return _txt(f"{m.id} {m.region}" for m in chosen)
    return None

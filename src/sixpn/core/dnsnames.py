"""The `.internal` name grammar (SPEC 4.2): a lowercased name to the question it asks.

Read right to left, without the final ``internal`` label::

    _apps | _peer | _instances | all._instances | _api       network-wide names
    <peer>._peer                                             one WireGuard peer
    <app> | global.<app>                                     every started machine of the app
    regions.<app> | all.regions.<app>                        TXT: regions with machines
    vms.<app> | all.vms.<app>                                TXT: "<id> <region>" list
    <region>.<app>                                           started machines in the region
    top<N>.nearest.of.<app>                                  the N nearest started machines
    <machine id>.vm.<app>                                    one machine, started or not
    <group>.process.<app>                                    started machines of a process group
    <value>.<key>.kv._metadata.<app>                         started machines with key = value

Anything else does not exist. The words in second position (``global``, ``regions``, ``vms``,
``all``) cannot be region codes (``core.names`` refuses them), so the grammar is unambiguous.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AppMachines:
    """``<app>``, ``global.<app>``; with ``region``: ``<region>.<app>``."""

    app: str
    region: str | None = None


@dataclass(frozen=True, slots=True)
class Nearest:
    app: str
    count: int


@dataclass(frozen=True, slots=True)
class Vm:
    app: str
    machine_id: str


@dataclass(frozen=True, slots=True)
class ProcessGroup:
    app: str
    group: str


@dataclass(frozen=True, slots=True)
class Metadata:
    app: str
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class RegionList:
    app: str
    include_stopped: bool


@dataclass(frozen=True, slots=True)
class VmList:
    app: str
    include_stopped: bool


@dataclass(frozen=True, slots=True)
class AppList:
    pass


@dataclass(frozen=True, slots=True)
class PeerList:
    pass


@dataclass(frozen=True, slots=True)
class PeerAddress:
    peer: str


@dataclass(frozen=True, slots=True)
class Instances:
    include_stopped: bool


@dataclass(frozen=True, slots=True)
class Api:
    pass


Question = (
    AppMachines
    | Nearest
    | Vm
    | ProcessGroup
    | Metadata
    | RegionList
    | VmList
    | AppList
    | PeerList
    | PeerAddress
    | Instances
    | Api
)

# Questions answered with TXT records; all others with AAAA.
TXT_QUESTIONS = (RegionList, VmList, AppList, PeerList, Instances)

_TOP = re.compile(r"top([1-9][0-9]{0,3})")
_NETWORK_WIDE: dict[tuple[str, ...], Question] = {
    ("_apps",): AppList(),
    ("_peer",): PeerList(),
    ("_instances",): Instances(include_stopped=False),
    ("all", "_instances"): Instances(include_stopped=True),
    ("_api",): Api(),
}


def parse(labels: tuple[str, ...]) -> Question | None:
    """The question asked by ``labels`` (lowercase, without ``internal``), or None."""
    fixed = _NETWORK_WIDE.get(labels)
    if fixed is not None:
        return fixed
    n = len(labels)
    if n == 0:
        return None
    app = labels[-1]
    if app.startswith("_"):
        return PeerAddress(labels[0]) if labels[1:] == ("_peer",) else None
    if n == 1:
        return AppMachines(app)
    first = labels[0]
    if n == 2:
        if first == "global":
            return AppMachines(app)
        if first == "regions":
            return RegionList(app, include_stopped=False)
        if first == "vms":
            return VmList(app, include_stopped=False)
        return AppMachines(app, region=first)
    middle = labels[1:-1]
    if n == 3:
        if first == "all" and middle == ("regions",):
            return RegionList(app, include_stopped=True)
        if first == "all" and middle == ("vms",):
            return VmList(app, include_stopped=True)
        if middle == ("vm",):
            return Vm(app, first)
        if middle == ("process",):
            return ProcessGroup(app, first)
        return None
    if n == 4 and middle == ("nearest", "of"):
        top = _TOP.fullmatch(first)
        return Nearest(app, int(top.group(1))) if top else None
    if n == 5 and labels[2:4] == ("kv", "_metadata"):
        return Metadata(app, key=labels[1], value=first)
    return None

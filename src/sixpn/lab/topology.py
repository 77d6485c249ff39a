"""The lab's topology file (SPEC 8): what hosts, orgs, networks, apps and machines a lab holds.

A topology is TOML (docs/lab.md describes every key). :func:`parse` turns the text into frozen
values and checks all of it before anything is built, so a mistake costs nothing: every error
is an :class:`~sixpn.model.errors.InvalidInput` whose message starts with the file's name and
then names either the line (TOML syntax: tomllib's own message) or the field path
(``orgs[0].machines[2].host``, indices counted from 0 in the order of the file).
:func:`sixpn.lab.populate.populate` creates the orgs, networks, apps and machines through the
control plane's API; :mod:`sixpn.lab.tomltable` reads the tables with their field paths.

Rules that hold here: names follow :mod:`sixpn.core.names` and regions the built-in catalogue,
as the API would check them, but here with the file's paths in the message; a host name has at
most :data:`HOST_NAME_MAX` characters; a lab has 1 to :data:`MAX_HOSTS` hosts and at most
:data:`MAX_MACHINES` machines. The default topology is TOML text read by the same parser, so
the documented example (docs/lab.md, checked by a test) is the one that runs.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sixpn.core.names import validate_metadata
from sixpn.core.regions import RegionCatalogue
from sixpn.lab.fabric import HostSpec
from sixpn.lab.tomltable import Table, is_int, kind, suggest, unique
from sixpn.model.entities import MachineState
from sixpn.model.errors import InvalidInput

DEFAULT_NETWORK = "default"
# A host name is part of the host's namespace name (sixpn-h<lab>-<host>) and a column of
# `lab status`; 20 characters keep both readable (Linux itself would take 255).
HOST_NAME_MAX = 20
# The underlay gives host i the address 192.0.2.(10+i), room for 244 hosts; but every host runs
# its own agent process and WireGuard daemon on this one machine, which runs short of memory
# and CPU long before that. 32 hosts is plenty for a demo or a test.
MAX_HOSTS = 32
# Each machine is a network namespace with a veth pair, routes and nftables set elements.
MAX_MACHINES = 64

HOST_KEYS = ("name", "region", "gateway")
ORG_KEYS = ("name", "networks", "apps", "machines", "peers")
APP_KEYS = ("name", "network")
MACHINE_KEYS = ("app", "host", "region", "count", "process_group", "metadata", "state")
PEER_KEYS = ("name", "network", "region")
NEW_STATES = (MachineState.STARTED.value, MachineState.STOPPED.value)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class AppSpec:
    name: str
    network: str = DEFAULT_NETWORK


@dataclass(frozen=True)
class MachineSpec:
    """``count`` machines of one app, on ``host`` or placed by the server in ``region``."""

    app: str
    host: str | None = None
    region: str | None = None
    count: int = 1
    process_group: str | None = None  # None: the server's default ("app")
    metadata: Mapping[str, str] = field(default_factory=dict)
    state: MachineState = MachineState.STARTED


@dataclass(frozen=True)
class PeerSpec:
    """A WireGuard peer: checked here, brought up by the lab as `sixpn lab peer` does."""

    name: str
    network: str = DEFAULT_NETWORK
    region: str | None = None  # None: the server picks the gateway region


@dataclass(frozen=True)
class OrgSpec:
    name: str
    networks: tuple[str, ...] = ()  # besides "default", which every org has
    apps: tuple[AppSpec, ...] = ()
    machines: tuple[MachineSpec, ...] = ()
    peers: tuple[PeerSpec, ...] = ()


@dataclass(frozen=True)
class Topology:
    hosts: tuple[HostSpec, ...]
    orgs: tuple[OrgSpec, ...] = ()
    source: str = "<topology>"

    def regions(self) -> tuple[str, ...]:
        """The regions that have hosts, in the order of their first host."""
        return tuple(dict.fromkeys(h.region for h in self.hosts))

    def machine_count(self) -> int:
        return sum(m.count for o in self.orgs for m in o.machines)


# -- reading ---------------------------------------------------------------------------------


def load(path: Path, regions: RegionCatalogue | None = None) -> Topology:
    """Read and check a topology file; InvalidInput names the file and what is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(
            f"{path}: cannot read the topology file: {exc.strerror or exc}", field="topology"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{path}: not UTF-8 text (TOML is UTF-8): bad byte at offset {exc.start}",
            field="topology",
        ) from None
    return parse(text, str(path), regions)


def parse(text: str, source: str, regions: RegionCatalogue | None = None) -> Topology:
    """Check a topology's TOML text; ``source`` names it in messages (a file name)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message carries the line and the column
        raise InvalidInput(f"{source}: not valid TOML: {exc}", field="topology") from None
    for key in ("networks", "apps", "machines", "peers"):
        if key in data:  # the easiest slip in TOML: [[apps]] where [[orgs.apps]] was meant
            how = "networks = [...] inside" if key == "networks" else f"[[orgs.{key}]] after"
            raise InvalidInput(
                f"{source}: {key}: belongs to an org: write {how} that org's [[orgs]] table",
                field=key,
            )
    catalogue = regions or RegionCatalogue.default()
    top = Table(source, "", data, ("hosts", "orgs"))
    hosts = _hosts(top, catalogue)
    return Topology(hosts, _orgs(top, hosts, catalogue), source)


def default() -> Topology:
    """The topology of `sixpn lab up` without a file (SPEC 8)."""
    return parse(DEFAULT_TOML, "<default topology>")


def describe(topology: Topology) -> str:
    """One line for the CLI: "3 hosts (2 regions), 2 orgs, 3 networks, 4 apps, 9 machines"."""
    orgs = topology.orgs
    parts = [
        f"{_n(len(topology.hosts), 'host')} ({_n(len(topology.regions()), 'region')})",
        _n(len(orgs), "org"),
        _n(sum(1 + len(o.networks) for o in orgs), "network"),
        _n(sum(len(o.apps) for o in orgs), "app"),
        _n(topology.machine_count(), "machine"),
    ]
    peers = sum(len(o.peers) for o in orgs)
    if peers:
        parts.append(_n(peers, "peer"))
    return ", ".join(parts)


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _region(table: Table, code: str, key: str, catalogue: RegionCatalogue) -> str:
    if code not in catalogue:
        raise table.fail(
            key,
            f"unknown region {code!r} ({suggest(code, catalogue.codes())}"
            f"the catalogue: {', '.join(catalogue.codes())})",
        )
    return code


def _hosts(top: Table, catalogue: RegionCatalogue) -> tuple[HostSpec, ...]:
    tables = top.tables("hosts", HOST_KEYS)
    if not tables:
        raise top.fail("hosts", "a lab needs at least one host ([[hosts]] with name and region)")
    if len(tables) > MAX_HOSTS:
        raise top.fail(
            "hosts",
            f"at most {MAX_HOSTS} hosts (this file has {len(tables)}): every host runs its own "
            "agent and WireGuard daemon on this one machine",
        )
    seen: dict[str, str] = {}
    hosts: list[HostSpec] = []
    for t in tables:
        name = t.name("name", "host name")
        if len(name) > HOST_NAME_MAX:
            raise t.fail(
                "name",
                f"host name {name!r}: at most {HOST_NAME_MAX} characters in the lab (it has "
                f"{len(name)}): it becomes part of the host's namespace name",
            )
        unique(t, "name", name, seen, "host")
        region = _region(t, t.required("region"), "region", catalogue)
        gateway = t.get("gateway", lambda v: isinstance(v, bool), "true or false")
        hosts.append(HostSpec(name, region, bool(gateway)))
    return tuple(hosts)


def _orgs(
    top: Table, hosts: tuple[HostSpec, ...], catalogue: RegionCatalogue
) -> tuple[OrgSpec, ...]:
    seen: dict[str, str] = {}
    orgs: list[OrgSpec] = []
    total = 0
    for t in top.tables("orgs", ORG_KEYS):
        name = t.name("name", "org name")
        unique(t, "name", name, seen, "org")
        networks = _networks(t)
        apps = _apps(t, name, networks)
        machines = tuple(
            _machine(m, name, apps, hosts, catalogue) for m in t.tables("machines", MACHINE_KEYS)
        )
        total += sum(m.count for m in machines)
        if total > MAX_MACHINES:
            raise t.fail(
                "machines",
                f"at most {MAX_MACHINES} machines in a lab (this one would have {total}): "
                "each machine is a network namespace",
            )
        peers = _peers(t, name, networks, hosts, catalogue)
        orgs.append(OrgSpec(name, networks, tuple(apps.values()), machines, peers))
    return tuple(orgs)


def _networks(org: Table) -> tuple[str, ...]:
    names = org.get("networks", lambda v: isinstance(v, list), "an array of network names")
    seen: dict[str, str] = {}
    for i, name in enumerate(names or []):
        key = f"networks[{i}]"
        if not isinstance(name, str):
            raise org.fail(key, f"must be a string, got {kind(name)}")
        org.check_name(key, name, "network name")
        if name == DEFAULT_NETWORK:
            raise org.fail(key, "every org has the 'default' network: list only the others")
        unique(org, key, name, seen, "network")
    return tuple(names or [])


def _network(t: Table, org_name: str, known: tuple[str, ...]) -> str:
    """The network an app or a peer is in: ``default`` or one its org declares."""
    network = t.name("network", "network name", DEFAULT_NETWORK)
    if network not in known:
        raise t.fail(
            "network",
            f"network {network!r} is not declared in org {org_name!r} "
            f"({suggest(network, known)}networks: {', '.join(known)})",
        )
    return network


def _apps(org: Table, org_name: str, networks: tuple[str, ...]) -> dict[str, AppSpec]:
    known = (DEFAULT_NETWORK, *networks)
    seen: dict[str, str] = {}
    apps: dict[str, AppSpec] = {}
    for t in org.tables("apps", APP_KEYS):
        name = t.name("name", "app name")
        unique(t, "name", name, seen, "app", f" in org {org_name!r}")
        apps[name] = AppSpec(name, _network(t, org_name, known))
    return apps


def _machine(
    t: Table,
    org: str,
    apps: Mapping[str, AppSpec],
    hosts: tuple[HostSpec, ...],
    catalogue: RegionCatalogue,
) -> MachineSpec:
    app = t.name("app", "app name")
    if app not in apps:
        known = f"apps: {', '.join(apps)}" if apps else "it has none: declare it in [[orgs.apps]]"
        raise t.fail("app", f"no app {app!r} in org {org!r} ({suggest(app, apps)}{known})")
    host, region = _placement(t, hosts, catalogue)
    count = t.get("count", is_int, "an integer")
    if count is not None and not 1 <= count <= MAX_MACHINES:
        raise t.fail("count", f"must be between 1 and {MAX_MACHINES}, got {count}")
    group = t.text("process_group")
    if group is not None:
        t.check_name("process_group", group, "process group")
    metadata = t.get("metadata", lambda v: isinstance(v, dict), "a table of strings")
    try:
        metadata = validate_metadata(metadata or {}, field="metadata")
    except InvalidInput as exc:
        raise t.fail(exc.field or "metadata", exc.message) from None
    state = t.text("state")
    state = MachineState.STARTED.value if state is None else state
    if state not in NEW_STATES:
        raise t.fail("state", f"must be {' or '.join(map(repr, NEW_STATES))}, got {state!r}")
    return MachineSpec(
        app=app,
        host=host,
        region=region,
        count=count or 1,
        process_group=group,
        metadata=metadata,
        state=MachineState(state),
    )


def _placement(
    t: Table, hosts: tuple[HostSpec, ...], catalogue: RegionCatalogue
) -> tuple[str | None, str | None]:
    """``(host, None)`` or ``(None, region)``: exactly one of the two is given."""
    host, region = t.text("host"), t.text("region")
    if host is not None and region is not None:
        raise t.fail(
            "", "give host or region, not both (region places it on a host of that region)"
        )
    if host is not None:
        names = [h.name for h in hosts]
        if host not in names:
            raise t.fail(
                "host", f"unknown host {host!r} ({suggest(host, names)}hosts: {', '.join(names)})"
            )
        return host, None
    if region is None:
        raise t.fail("", 'needs a host (host = "NAME") or a region to be placed in (region = ...)')
    _region(t, region, "region", catalogue)
    with_hosts = tuple(dict.fromkeys(h.region for h in hosts))
    if region not in with_hosts:
        raise t.fail(
            "region",
            f"no host of the topology is in region {region!r} "
            f"(regions with hosts: {', '.join(with_hosts)})",
        )
    return None, region


def _peers(
    org: Table,
    org_name: str,
    networks: tuple[str, ...],
    hosts: tuple[HostSpec, ...],
    catalogue: RegionCatalogue,
) -> tuple[PeerSpec, ...]:
    known = (DEFAULT_NETWORK, *networks)
    seen: dict[str, str] = {}
    peers: list[PeerSpec] = []
    for t in org.tables("peers", PEER_KEYS):
        name = t.name("name", "peer name")
        unique(t, "name", name, seen, "peer", f" in org {org_name!r}")
        network = _network(t, org_name, known)
        region = t.text("region")
        if region is not None:
            _region(t, region, "region", catalogue)
        if not any(h.gateway for h in hosts):
            raise t.fail("", "a peer needs a gateway host: give some host gateway = true")
        peers.append(PeerSpec(name, network, region))
    return tuple(peers)


# The default topology: SPEC 8's "3 hosts in 2 regions, 2 organizations, a few apps and
# machines", arranged so that every kind of .internal name has something to show.
DEFAULT_TOML = """\
# The lab's default topology: 3 hosts in 2 regions, 2 orgs, 9 machines.

[[hosts]]
name = "fra-1"
region = "fra"
gateway = true          # WireGuard peers of the fra region connect here

[[hosts]]
name = "fra-2"
region = "fra"

[[hosts]]
name = "ams-1"
region = "ams"
gateway = true

[[orgs]]
name = "acme"
networks = ["staging"]  # besides "default", which every org has

[[orgs.apps]]
name = "web"            # network = "default"

[[orgs.apps]]
name = "api"

[[orgs.apps]]
name = "preview"
network = "staging"     # another network: web and api cannot reach it

# web runs in both regions: fra.web.internal, ams.web.internal, top1.nearest.of.web.internal
[[orgs.machines]]
app = "web"
host = "fra-1"
metadata = { role = "primary" }

[[orgs.machines]]
app = "web"
host = "ams-1"
metadata = { role = "replica" }

[[orgs.machines]]
app = "api"
host = "fra-2"

[[orgs.machines]]
app = "api"
host = "ams-1"
process_group = "worker"
metadata = { queue = "mail" }

[[orgs.machines]]
app = "api"
host = "fra-1"
process_group = "worker"
state = "stopped"       # DNS shows it only in <id>.vm.api.internal and the all.* lists

[[orgs.machines]]
app = "preview"
host = "fra-2"

[[orgs]]
name = "globex"

[[orgs.apps]]
name = "shop"

[[orgs.machines]]
app = "shop"
region = "fra"          # the control plane picks a host of the region for each
count = 2

[[orgs.machines]]
app = "shop"
host = "ams-1"
"""

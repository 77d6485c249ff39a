"""DNS benchmark data: the fleet plan, the records it implies, the query mix, Unbound's config.

Pure functions (no clock, no I/O except :func:`write_dataset`). The data set is no longer made
up here: :func:`fleet_plan` says what to create (a seeded shape), the control plane creates it
and allocates every ID and address (``dnsbench_control``), and :func:`dataset_from_api` reads
the real machines back. The records every server is checked against, Unbound's ``local-data``
and Knot's zone file (``dnsbench_knot``) are derived from those machines only, so sixpn and the
two anchors serve exactly the same truth.

- Fleet (seed :data:`DEFAULT_SEED`, size :data:`FLEETS`): one organization :data:`ORG` (its
  default network holds everything; the benchmark client's source is ``<net48>::100`` in it),
  ``hosts_per_region`` hosts in each of fra/iad/syd, ``apps`` apps of ``machines_per_app``
  started machines each on seeded hosts. ``10k`` (the default): 1,000 apps x 10 machines on 102
  hosts (~100 machines per host); ``500``: 100 apps x 5 machines on 6 hosts (the first shape).
- Records (SPEC 4.2, ``core.dnszone``, TTL 5): ``<app>``, ``global.<app>`` (started machines),
  ``<region>.<app>`` (started machines there, for the regions that have some) and
  ``<id>.vm.<app>`` AAAA; ``regions.<app>`` (sorted regions), ``vms.<app>`` (``<id> <region>``
  sorted by ID) and ``_apps`` (sorted app names) TXT, comma-joined; a TXT value longer than 255
  bytes cut into 255-byte character-strings of one record.
- Queries: every line names an existing record, so every correct answer is NOERROR with data
  (over UDP, an answer larger than 1,232 bytes is NOERROR with TC and no records, from all three
  servers: the ``_apps`` listing of the 10k fleet, ~8.4 KB).
"""

from __future__ import annotations

import base64
import json
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any, NamedTuple

from sixpn.core import addressing

DEFAULT_SEED = 6
ORG = "bench"
SERVER_ADDRESS = "fdaa::3"  # the DNS address every machine sees on its host (SPEC 2)
CLIENT_HOST_FIELD_LOW = 0x100  # the client is <net48>::100: host 0, field 0 (no machine there)
REGIONS = ("fra", "iad", "syd")
APP_KINDS = ("web", "api", "worker", "db", "cache")
TTL = 5
QUERY_LINES = 10_000

# Query mix: (kind, weight). All names exist; see query_lines().
QUERY_MIX = (("app", 85), ("region", 10), ("vm", 3), ("apps_txt", 2))


@dataclass(frozen=True)
class FleetSize:
    """How big the fleet in the store is: every machine is started, in the client's network."""

    name: str
    apps: int
    machines_per_app: int
    hosts_per_region: int

    @property
    def machines(self) -> int:
        return self.apps * self.machines_per_app

    @property
    def hosts(self) -> int:
        return self.hosts_per_region * len(REGIONS)

    def describe(self) -> str:
        return (
            f"{self.apps:,} apps x {self.machines_per_app} machines = {self.machines:,} machines "
            f"on {self.hosts} hosts"
        )


FLEETS = {
    "500": FleetSize("500", apps=100, machines_per_app=5, hosts_per_region=2),
    "10k": FleetSize("10k", apps=1_000, machines_per_app=10, hosts_per_region=34),
}
DEFAULT_FLEET = "10k"


class Machine(NamedTuple):
    """One started machine as the control plane allocated it (sorts by machine ID)."""

    id: str
    region: str
    address: str
    host_id: int
    field: int


class HostPlan(NamedTuple):
    name: str
    region: str
    endpoint: str
    public_key: str


@dataclass(frozen=True)
class FleetPlan:
    """What to create through the API: hosts, apps, and each machine's (app, host name)."""

    seed: int
    org: str
    hosts: tuple[HostPlan, ...]
    apps: tuple[str, ...]
    machines: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Dataset:
    """The fleet of one network as the control plane holds it: host ID -> region, app -> its
    machines (sorted by ID)."""

    seed: int
    org: str
    net_id: int
    hosts: dict[int, str]
    apps: dict[str, tuple[Machine, ...]]

    @property
    def client_address(self) -> str:
        """A 6PN source inside this network (``fdaa:<net32>::100``): sixpn answers it."""
        return client_address(self.net_id)


RecordKey = tuple[str, str]  # (lowercased name without the final dot, "AAAA" | "TXT")


def client_address(net_id: int) -> str:
    return str(addressing.encode(net_id, 0, 0, CLIENT_HOST_FIELD_LOW))


def app_names(count: int) -> list[str]:
    """``web-1, api-1, worker-1, db-1, cache-1, web-2, ...``: ``web-1`` always exists."""
    return [f"{APP_KINDS[i % len(APP_KINDS)]}-{i // len(APP_KINDS) + 1}" for i in range(count)]


def _endpoint(n: int) -> str:
    """Host ``n``'s (never used) WireGuard endpoint: TEST-NET-1 as before for the first 254,
    then the benchmarking range 198.18.0.0/15."""
    if n < 255:
        return f"192.0.2.{n}:51820"
    return f"198.18.{n >> 8}.{n & 255}:51820"


def fleet_plan(seed: int, fleet: FleetSize = FLEETS[DEFAULT_FLEET]) -> FleetPlan:
    """The deterministic shape for ``seed``: which hosts, apps, and on which host each machine
    goes. IDs and addresses are the control plane's to allocate."""
    rng = random.Random(seed)
    per = fleet.hosts_per_region
    hosts = tuple(
        HostPlan(
            name=f"bench-{region}-{i + 1}",
            region=region,
            endpoint=_endpoint(r * per + i + 1),
            public_key=base64.b64encode(rng.randbytes(32)).decode(),
        )
        for r, region in enumerate(REGIONS)
        for i in range(per)
    )
    apps = tuple(app_names(fleet.apps))
    machines = tuple(
        (app, rng.choice(hosts).name) for app in apps for _ in range(fleet.machines_per_app)
    )
    return FleetPlan(seed=seed, org=ORG, hosts=hosts, apps=apps, machines=machines)


def dataset_from_api(
    plan: FleetPlan,
    net_id: int,
    hosts: Sequence[Mapping[str, Any]],
    machines: Sequence[Mapping[str, Any]],
) -> Dataset:
    """The data set from the API's host and machine lists (``GET /v1/hosts``,
    ``GET /v1/orgs/{org}/machines``); raises ValueError when they do not match the plan."""
    planned = {h.name for h in plan.hosts}
    host_regions = {int(h["host_id"]): str(h["region"]) for h in hosts if h["name"] in planned}
    apps: dict[str, list[Machine]] = {app: [] for app in plan.apps}
    for m in machines:
        if m["net_id"] != net_id or m["app"] not in apps:
            raise ValueError(f"machine {m['id']}: app {m['app']!r} in network {m['net_id']}")
        if m["state"] != "started":
            raise ValueError(f"machine {m['id']}: state {m['state']!r}, every one should run")
        address = str(IPv6Address(m["address"]))  # canonical text form, as dig prints it
        host_id, field = int(m["host_id"]), int(m["field"])
        if address != str(addressing.machine_address(net_id, host_id, field)):
            raise ValueError(f"machine {m['id']}: address {address} does not follow SPEC 2")
        machine = Machine(str(m["id"]), str(m["region"]), address, host_id, field)
        apps[str(m["app"])].append(machine)
    planned_per_app = Counter(app for app, _ in plan.machines)
    want = {app: planned_per_app[app] for app in plan.apps}
    got = {app: len(ms) for app, ms in apps.items()}
    if got != want:
        raise ValueError(f"machines per app {got} instead of {want}")
    return Dataset(
        seed=plan.seed,
        org=plan.org,
        net_id=net_id,
        hosts=host_regions,
        apps={app: tuple(sorted(ms)) for app, ms in apps.items()},
    )


def txt_strings(value: str) -> list[str]:
    """One TXT value as character-strings of at most 255 bytes (SPEC 4.2)."""
    raw = value.encode()
    return [raw[i : i + 255].decode() for i in range(0, len(raw), 255)] or [""]


def build_records(data: Dataset) -> dict[RecordKey, list[str]]:
    """Every answer the benchmark may ask for: AAAA -> addresses, TXT -> character-strings."""
    records: dict[RecordKey, list[str]] = {}
    for app, machines in data.apps.items():
        addresses = [m.address for m in machines]
        records[(f"{app}.internal", "AAAA")] = addresses
        records[(f"global.{app}.internal", "AAAA")] = addresses
        for region in sorted({m.region for m in machines}):
            in_region = [m.address for m in machines if m.region == region]
            records[(f"{region}.{app}.internal", "AAAA")] = in_region
        for m in machines:
            records[(f"{m.id}.vm.{app}.internal", "AAAA")] = [m.address]
        regions = ",".join(sorted({m.region for m in machines}))
        records[(f"regions.{app}.internal", "TXT")] = txt_strings(regions)
        vms = ",".join(f"{m.id} {m.region}" for m in machines)
        records[(f"vms.{app}.internal", "TXT")] = txt_strings(vms)
    records[("_apps.internal", "TXT")] = txt_strings(",".join(sorted(data.apps)))
    return records


def query_lines(data: Dataset, seed: int, count: int = QUERY_LINES) -> list[str]:
    """dnsperf input lines (``name type``) drawn from :data:`QUERY_MIX`, deterministic."""
    rng = random.Random(seed ^ 0x5EED)
    kinds = [kind for kind, _ in QUERY_MIX]
    weights = [weight for _, weight in QUERY_MIX]
    apps = sorted(data.apps)
    lines: list[str] = []
    for kind in rng.choices(kinds, weights=weights, k=count):
        app = rng.choice(apps)
        machines = data.apps[app]
        if kind == "app":
            lines.append(f"{app}.internal AAAA")
        elif kind == "region":
            region = rng.choice(sorted({m.region for m in machines}))
            lines.append(f"{region}.{app}.internal AAAA")
        elif kind == "vm":
            lines.append(f"{rng.choice(machines).id}.vm.{app}.internal AAAA")
        else:
            lines.append("_apps.internal TXT")
    return lines


def dataset_json(data: Dataset, records: dict[RecordKey, list[str]]) -> dict[str, object]:
    """The JSON form of the data set (as read back from the control plane) and of the answers it
    implies (``bench/out/dataset.json``): for reference and A/A runs; no server reads it."""
    return {
        "seed": data.seed,
        "org": data.org,
        "network": {"id": data.net_id, "prefix": str(addressing.network_prefix(data.net_id))},
        "client_address": data.client_address,
        "server_address": SERVER_ADDRESS,
        "ttl": TTL,
        "hosts": [{"id": h, "region": r} for h, r in sorted(data.hosts.items())],
        "apps": {
            app: [
                {
                    "id": m.id,
                    "region": m.region,
                    "address": m.address,
                    "host_id": m.host_id,
                    "field": m.field,
                    "state": "started",
                }
                for m in machines
            ]
            for app, machines in sorted(data.apps.items())
        },
        "records": [
            {"name": name, "type": rtype, "values": values}
            for (name, rtype), values in sorted(records.items())
        ],
    }


def write_dataset(path: Path, data: Dataset, records: dict[RecordKey, list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataset_json(data, records), indent=1) + "\n")
    return path


def _local_data(name: str, rtype: str, value: str) -> str:
    return f"  local-data: '{name}. {TTL} IN {rtype} {value}'"


def unbound_config(records: dict[RecordKey, list[str]], workdir: Path, port: int = 53) -> str:
    """Unbound serving ``records`` from local-data only: one thread, foreground, no chroot."""
    lines = [
        "server:",
        f"  interface: {SERVER_ADDRESS}@{port}",
        "  interface-automatic: no",
        "  access-control: fdaa::/16 allow",
        "  num-threads: 1",
        "  do-daemonize: no",
        '  chroot: ""',
        '  username: ""',
        f'  directory: "{workdir}"',
        "  so-reuseport: no",
        '  logfile: ""',
        "  use-syslog: no",
        "  verbosity: 0",
        '  pidfile: ""',
        # No validator: .internal is a static local zone, nothing is ever recursed for.
        '  module-config: "iterator"',
        '  local-zone: "internal." static',
        _local_data("internal", "SOA", f"ns.internal. hostmaster.internal. 1 3600 600 86400 {TTL}"),
    ]
    for (name, rtype), values in sorted(records.items()):
        if rtype == "AAAA":
            lines.extend(_local_data(name, rtype, value) for value in values)
        else:
            lines.append(_local_data(name, rtype, " ".join(f'"{s}"' for s in values)))
    lines += ["remote-control:", "  control-enable: no", ""]
    return "\n".join(lines)

"""DNS benchmark data: a seeded fleet, the records it implies, the query mix, Unbound's config.

Everything here is a pure function of the seed (no clock, no I/O except the ``write_*`` helpers),
so the server under test and the Unbound anchor are fed exactly the same truth in every run.

- Fleet: network :data:`NET_ID` (the benchmark client's source ``fdaa:0:1::100`` is in it), a few
  hosts in regions fra/iad/syd, :data:`APP_COUNT` apps of :data:`MACHINES_PER_APP` started
  machines each. Addresses follow SPEC 2: ``fdaa:<net32>:<host32>:<field32>::2``, the machine
  field unique per (network, host) and inside the machine range (``>= 0x10000``).
- Records (SPEC 4.2, TTL 5): ``<app>``, ``global.<app>``, ``<region>.<app>`` and
  ``<id>.vm.<app>`` AAAA; ``regions.<app>``, ``vms.<app>`` and ``_apps`` TXT, a TXT value longer
  than 255 bytes cut into 255-byte character-strings of one record.
- Queries: every line names an existing record, so every correct answer is NOERROR with data.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from ipaddress import IPv6Address
from pathlib import Path
from typing import NamedTuple

NET_ID = 1
CLIENT_ADDRESS = "fdaa:0:1::100"  # network 1, host 0: a 6PN source the server must answer
SERVER_ADDRESS = "fdaa::3"  # the DNS address every machine sees on its host (SPEC 2)
REGIONS = ("fra", "iad", "syd")
APP_KINDS = ("web", "api", "worker", "db", "cache")
APP_COUNT = 100
MACHINES_PER_APP = 5
HOSTS_PER_REGION = 2
TTL = 5
QUERY_LINES = 10_000
MACHINE_FIELD_MIN = 0x0001_0000  # SPEC 2 / sixpn.core.addressing: fields below are peers'

# Query mix: (kind, weight). All names exist; see query_lines().
QUERY_MIX = (("app", 85), ("region", 10), ("vm", 3), ("apps_txt", 2))


class Machine(NamedTuple):
    """One started machine: (machine id, region, address), plus where it lives."""

    id: str
    region: str
    address: str
    host_id: int
    field: int


@dataclass(frozen=True)
class Dataset:
    """The fleet of network :data:`NET_ID`: host ID -> region, app -> its machines."""

    seed: int
    net_id: int
    hosts: dict[int, str]
    apps: dict[str, tuple[Machine, ...]]


RecordKey = tuple[str, str]  # (lowercased name without the final dot, "AAAA" | "TXT")


def machine_address(net_id: int, host_id: int, field: int) -> str:
    """``fdaa:<net32>:<host32>:<field32>::2`` (SPEC 2), in canonical text form."""
    value = (0xFDAA << 112) | (net_id << 80) | (host_id << 48) | (field << 16) | 0x2
    return str(IPv6Address(value))


def app_names(count: int = APP_COUNT) -> list[str]:
    """``web-1, api-1, worker-1, db-1, cache-1, web-2, ...``: ``web-1`` always exists."""
    return [f"{APP_KINDS[i % len(APP_KINDS)]}-{i // len(APP_KINDS) + 1}" for i in range(count)]


def build_dataset(seed: int) -> Dataset:
    """The deterministic fleet for ``seed``."""
    rng = random.Random(seed)
    hosts: dict[int, str] = {}
    for region in REGIONS:
        for _ in range(HOSTS_PER_REGION):
            host_id = rng.randrange(1, 2**32)  # never 0: host 0 holds service addresses
            while host_id in hosts:
                host_id = rng.randrange(1, 2**32)
            hosts[host_id] = region
    host_ids = sorted(hosts)
    used_fields: set[tuple[int, int]] = set()
    used_ids: set[str] = set()
    apps: dict[str, tuple[Machine, ...]] = {}
    for app in app_names():
        machines: list[Machine] = []
        for _ in range(MACHINES_PER_APP):
            host_id = rng.choice(host_ids)
            field = rng.randrange(MACHINE_FIELD_MIN, 2**32)
            while (host_id, field) in used_fields:
                field = rng.randrange(MACHINE_FIELD_MIN, 2**32)
            used_fields.add((host_id, field))
            machine_id = f"{rng.getrandbits(56):014x}"
            while machine_id in used_ids:
                machine_id = f"{rng.getrandbits(56):014x}"
            used_ids.add(machine_id)
            address = machine_address(NET_ID, host_id, field)
            machines.append(Machine(machine_id, hosts[host_id], address, host_id, field))
        apps[app] = tuple(sorted(machines))
    return Dataset(seed=seed, net_id=NET_ID, hosts=hosts, apps=apps)


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
    """The JSON form of the data set and of the answers it implies (``bench/out/dataset.json``)."""
    return {
        "seed": data.seed,
        "network": {"id": data.net_id, "prefix": f"fdaa:0:{data.net_id:x}::/48"},
        "client_address": CLIENT_ADDRESS,
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

"""A generated fleet written straight into a store: what SPEC 9's scale targets are measured on.

``make_plan(shape, seed)`` draws a fleet (organizations with 1-4 networks, hosts in the
built-in regions, some of them gateways, apps, machines spread over hosts and apps, some
stopped or destroyed, a few WireGuard peers); :func:`fleet_kvs` turns the plan into every key
and value the control plane itself would have written for it, and :func:`write` puts them
into any :class:`~sixpn.store.Store` (memory, SQLite, etcd) in transactions of at most 128
operations and 512 KiB (etcd's default limits), many in flight (SQLite commits them in groups).

The rule that holds: the store holds exactly what the API would have made of the same plan,
byte for byte. :func:`replay` builds the same plan through ``control.service.Service`` with a
:class:`Draws` random source and a clock set per step from the plan, and the generator draws
from the same source in the same order as the use cases do (per host joined: 32 bytes of
secret, 5 of token ID; per machine: 7 bytes of ID and a field, each drawn again on a
collision), so both give the same IDs, fields, tokens and timestamps
(tests/component/test_fleetgen.py compares every key). Hence a server started on a generated
store serves it and goes on creating things: the ID counters, ``netid/``, ``mid/``,
``mfield/``, ``hostkey/``, ``token/``, ``pslot/``, ``gwkey/``, ``peerroutes`` and ``gwindex``
are all there, as the use cases leave them (``control/keys.py`` lists them).

Reproducible: the same seed and shape give the same keys and values (timestamps come from the
seed too: step ``i`` of the plan happens at ``T0(seed) + i`` ms). Run:
``.venv/bin/python bench/fleetgen.py --db PATH [--seed N] [--machines N ...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import hashlib
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sixpn.control import codec, gwindex, ids, keys
from sixpn.control.context import Context
from sixpn.control.peers import parse_routes
from sixpn.control.service import Service
from sixpn.control.tokens import SECRET_PREFIX
from sixpn.core import addressing
from sixpn.core.alloc import new_machine_id, pick_machine_field
from sixpn.core.regions import RegionCatalogue, nearest_order
from sixpn.model.entities import (
    App,
    Host,
    Machine,
    MachineState,
    Network,
    Org,
    Peer,
    Token,
    TokenKind,
)
from sixpn.store import Put, Store

TXN_OPS = 128  # etcd's default --max-txn-ops
TXN_BYTES = 512 * 1024  # well under etcd's default --max-request-bytes (1.5 MiB)
STEP_SECONDS = 0.001
BIG_REGIONS = {"fra": 4, "iad": 4, "ams": 3, "ord": 3, "sjc": 3, "lhr": 3, "nrt": 2, "sin": 2}
EXTRA_NETWORKS = ("staging", "prod", "data", "edge", "ml", "ci", "batch")
APP_KINDS = ("web", "api", "worker", "db", "cache", "queue", "cron", "auth", "search", "ml")


@dataclass(frozen=True)
class Shape:
    machines: int = 100_000
    apps: int = 10_000
    hosts: int = 1_000
    orgs: int = 1_000
    networks_max: int = 4  # each org has 1 to this many networks (the default one included)
    gateway_every: int = 20  # hosts 1, 21, 41, ... are gateways
    peers: int = 200
    stopped: float = 0.10
    destroyed: float = 0.01
    dense: int = 1_000  # machines on the first host (at most half the fleet)

    @classmethod
    def scaled(cls, machines: int, **given: Any) -> Shape:
        """The default proportions for ``machines`` (10 per app, 100 per host and per org, one
        peer per 500), each overridable."""
        base = {
            "machines": machines,
            "apps": max(1, machines // 10),
            "hosts": max(2, machines // 100),
            "orgs": max(1, machines // 100),
            "peers": max(2, machines // 500),
            "dense": min(1_000, machines // 2),
        }
        base.update({k: v for k, v in given.items() if v is not None})
        return cls(**base)


@dataclass(frozen=True, slots=True)
class PlanOrg:
    name: str
    networks: tuple[str, ...]  # "default" first


@dataclass(frozen=True, slots=True)
class PlanHost:
    name: str
    region: str
    endpoint: str
    public_key: str
    gateway: bool


@dataclass(frozen=True, slots=True)
class PlanApp:
    org: str
    name: str
    network: str


@dataclass(frozen=True, slots=True)
class PlanMachine:
    app: int  # index into Plan.apps
    host: int  # index into Plan.hosts
    state: MachineState  # final state: destroyed ones are created started, destroyed last
    process_group: str
    metadata: dict[str, str]


@dataclass(frozen=True, slots=True)
class PlanPeer:
    org: str
    name: str
    network: str
    region: str | None
    public_key: str
    routes: tuple[str, ...]
    ephemeral: bool


@dataclass
class Plan:
    seed: int
    shape: Shape
    t0: float
    orgs: list[PlanOrg] = field(default_factory=list)
    hosts: list[PlanHost] = field(default_factory=list)
    apps: list[PlanApp] = field(default_factory=list)
    machines: list[PlanMachine] = field(default_factory=list)
    peers: list[PlanPeer] = field(default_factory=list)

    def steps(self) -> Iterator[tuple[float, str, Any]]:
        """(time, kind, item) in the order both writers follow: orgs (then their other
        networks), hosts, apps, machines (by index), peers, then the destroys."""
        step = 0

        def at() -> float:
            nonlocal step
            step += 1
            return self.t0 + step * STEP_SECONDS

        for org in self.orgs:
            yield at(), "org", org
            for net in org.networks[1:]:
                yield at(), "network", (org.name, net)
        for host in self.hosts:
            yield at(), "host", host
        for app in self.apps:
            yield at(), "app", app
        for i in range(len(self.machines)):
            yield at(), "machine", i
        for peer in self.peers:
            yield at(), "peer", peer
        for i, m in enumerate(self.machines):
            if m.state == MachineState.DESTROYED:
                yield at(), "destroy", i


class Draws:
    """The random source of IDs, fields and secrets: seeded, consumed in the use cases' order."""

    def __init__(self, seed: int) -> None:
        self._rnd = random.Random(f"sixpn-fleetgen-draws-{seed}")

    def rand_bytes(self, n: int) -> bytes:
        return self._rnd.randbytes(n)

    def rand_below(self, n: int) -> int:
        return self._rnd.randrange(n)


def _weights(rnd: random.Random, n: int, alpha: float, cap: float) -> list[float]:
    """Heavy-tailed weights (Pareto), capped: a few big organizations and apps, many small."""
    return [min(rnd.paretovariate(alpha), cap) for _ in range(n)]


def _spread(rnd: random.Random, total: int, bins: int, weights: list[float]) -> list[int]:
    """``total`` items over ``bins``: one each first (when there are enough), the rest weighted."""
    counts = [1 if total >= bins else 0] * bins
    rest = total - sum(counts)
    for b in rnd.choices(range(bins), weights, k=rest):
        counts[b] += 1
    return counts


def make_plan(shape: Shape, seed: int = 1) -> Plan:
    """The fleet of ``shape``, drawn from ``seed``."""
    if shape.orgs < 1 or shape.hosts < 1 or (shape.machines > 0 and shape.apps < 1):
        raise ValueError("a fleet needs an organization, a host, and an app for its machines")
    rnd = random.Random(f"sixpn-fleetgen-{seed}")
    plan = Plan(seed, shape, t0=1_767_225_600.0 + (seed % 1_000) * 86_400.0)

    codes = RegionCatalogue.default().codes()
    per_region: Counter[str] = Counter()
    regions = rnd.choices(codes, [BIG_REGIONS.get(c, 1) for c in codes], k=shape.hosts)
    keys_seen: set[str] = set()
    for i, region in enumerate(regions):
        per_region[region] += 1
        key = base64.b64encode(rnd.randbytes(32)).decode()
        assert key not in keys_seen, "two hosts drew one key"
        keys_seen.add(key)
        n = i + 1  # 198.18.0.0/15: the benchmarking range (RFC 2544)
        plan.hosts.append(
            PlanHost(
                name=f"{region}-{per_region[region]}",
                region=region,
                endpoint=f"198.{18 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}:51820",
                public_key=key,
                gateway=i % shape.gateway_every == 1 or shape.hosts == 1,
            )
        )

    for i in range(shape.orgs):
        extra = rnd.randint(0, max(0, min(shape.networks_max - 1, len(EXTRA_NETWORKS))))
        plan.orgs.append(PlanOrg(f"org-{i + 1}", ("default", *EXTRA_NETWORKS[:extra])))

    for o, count in enumerate(
        _spread(rnd, shape.apps, shape.orgs, _weights(rnd, shape.orgs, 1.2, 60))
    ):
        org = plan.orgs[o]
        for j in range(count):
            name = f"{APP_KINDS[j % len(APP_KINDS)]}-{j // len(APP_KINDS) + 1}"
            network = "default" if rnd.random() < 0.5 else rnd.choice(org.networks)
            plan.apps.append(PlanApp(org.name, name, network))

    by_region: dict[str, list[int]] = {}
    for h, host in enumerate(plan.hosts):
        by_region.setdefault(host.region, []).append(h)
    host_regions = sorted(by_region)
    region_weights = [len(by_region[r]) for r in host_regions]
    app_regions = []
    for _ in plan.apps:
        k = 1 + (rnd.random() < 0.4) + (rnd.random() < 0.15)
        app_regions.append(sorted(set(rnd.choices(host_regions, region_weights, k=k))))
    per_app = _spread(rnd, shape.machines, len(plan.apps), _weights(rnd, len(plan.apps), 1.3, 40))
    app_of = [a for a, count in enumerate(per_app) for _ in range(count)]
    rnd.shuffle(app_of)  # created interleaved, as over time
    dense = set(rnd.sample(range(shape.machines), min(shape.dense, shape.machines // 2)))
    for i, a in enumerate(app_of):
        on = 0 if i in dense else rnd.choice(by_region[rnd.choice(app_regions[a])])
        r = rnd.random()
        state = (
            MachineState.DESTROYED
            if r < shape.destroyed
            else MachineState.STOPPED
            if r < shape.destroyed + shape.stopped
            else MachineState.STARTED
        )
        group = "worker" if rnd.random() < 0.2 else "app"
        metadata = {"role": "primary"} if rnd.random() < 0.05 else {}
        plan.machines.append(PlanMachine(a, on, state, group, metadata))

    for i in range(shape.peers):
        org = plan.orgs[rnd.randrange(shape.orgs)]
        near = rnd.choice(host_regions) if rnd.random() < 0.9 else None
        key = base64.b64encode(rnd.randbytes(32)).decode()
        routes = (f"2001:db8:{i + 1:x}::/48",) if i < 3 else ()
        plan.peers.append(
            PlanPeer(
                org.name,
                f"peer-{i + 1}",
                rnd.choice(org.networks),
                near,
                key,
                routes,
                ephemeral=i % 10 == 9,
            )
        )
    return plan


@dataclass
class Fleet:
    """Every key and value of a generated fleet, in write order, and the IDs it was given."""

    kvs: dict[str, bytes]
    machine_ids: list[str]  # by plan machine index
    net_ids: dict[tuple[str, str], int]  # (org, network) -> network ID
    host_ids: list[int]  # by plan host index
    credentials: dict[str, str]  # host name -> its credential's secret (from the seed, too)


def _block_end(n: int) -> int:
    """``counter/...`` after ``n`` IDs taken by one replica: the end of its last block."""
    return min(ids.BLOCK * math.ceil(n / ids.BLOCK), addressing.MAX_ID)


def _gateway(gateways: list[Host], region: str | None, catalogue: RegionCatalogue) -> Host:
    """The gateway ``Peers._gateway`` picks: in the region, or the nearest region with one."""
    if region is None:
        return min(gateways, key=lambda h: h.host_id)
    by_region: dict[str, list[Host]] = {}
    for h in gateways:
        by_region.setdefault(h.region, []).append(h)
    ordered = nearest_order(catalogue.get(region), [catalogue.get(r) for r in by_region])
    return min(by_region[ordered[0].code], key=lambda h: h.host_id)


def fleet_kvs(plan: Plan) -> Fleet:
    """Every key the use cases would write for ``plan``, with the values they would write."""
    kv: dict[str, bytes] = {}
    enc = codec.encode
    draws = Draws(plan.seed)
    catalogue = RegionCatalogue.default()
    net_ids: dict[tuple[str, str], int] = {}
    hosts: list[Host] = []
    gateways: list[Host] = []
    apps: list[App] = []
    machines: list[Machine] = []
    mids: set[str] = set()
    fields: dict[tuple[int, int], set[int]] = {}
    slots: dict[str, int] = {}
    routes: list[list[str]] = []
    credentials: dict[str, str] = {}

    def network(org: str, name: str, now: float) -> None:
        net_id = net_ids[(org, name)] = len(net_ids) + 1
        kv[keys.network(org, name)] = enc(Network(org, name, net_id, now))
        kv[keys.netid(net_id)] = f"{org}/{name}".encode()

    for now, kind, item in plan.steps():
        if kind == "org":
            kv[keys.org(item.name)] = enc(Org(item.name, now))
            network(item.name, "default", now)
        elif kind == "network":
            network(item[0], item[1], now)
        elif kind == "host":
            host = Host(
                item.name,
                len(hosts) + 1,
                item.region,
                item.endpoint,
                item.public_key,
                item.gateway,
                now,
            )
            hosts.append(host)
            if host.gateway:
                gateways.append(host)
            kv[keys.host_key(host.public_key)] = host.name.encode()
            kv[keys.host(host.name)] = enc(host)
            # Tokens.issue: the secret first, then the token's public ID
            raw = base64.urlsafe_b64encode(draws.rand_bytes(32)).decode().rstrip("=")
            credentials[host.name] = SECRET_PREFIX + raw
            digest = hashlib.sha256(credentials[host.name].encode()).hexdigest()
            token = Token(
                id=draws.rand_bytes(5).hex(),
                kind=TokenKind.HOST,
                created_at=now,
                host=host.name,
                description="host credential",
            )
            kv[keys.token(digest)] = enc(token)
            kv[keys.token_id(token.id)] = digest.encode()
        elif kind == "app":
            app = App(item.org, item.name, item.network, net_ids[(item.org, item.network)], now)
            apps.append(app)
            kv[keys.app(app.org, app.name)] = enc(app)
        elif kind == "machine":
            pm = plan.machines[item]
            app, host = apps[pm.app], hosts[pm.host]
            # Machines.create: an ID not reserved yet, then a field free on the (network, host)
            machine_id = new_machine_id(draws.rand_bytes)
            while machine_id in mids:
                machine_id = new_machine_id(draws.rand_bytes)
            mids.add(machine_id)
            used = fields.setdefault((app.net_id, host.host_id), set())
            taken: set[int] = set()
            while True:
                f = pick_machine_field(taken, draws.rand_below)
                if f not in used:
                    break
                taken.add(f)
            used.add(f)
            m = Machine(
                id=machine_id,
                org=app.org,
                app=app.name,
                network=app.network,
                net_id=app.net_id,
                host=host.name,
                host_id=host.host_id,
                region=host.region,
                field=f,
                address=addressing.machine_address(app.net_id, host.host_id, f),
                state=MachineState.STOPPED
                if pm.state == MachineState.STOPPED
                else MachineState.STARTED,
                process_group=pm.process_group,
                metadata=dict(pm.metadata),
                created_at=now,
                updated_at=now,
            )
            machines.append(m)
            entity_key = keys.machine(m.org, m.app, m.id)
            kv[entity_key] = enc(m)
            kv[keys.machine_field(m.net_id, m.host_id, f)] = machine_id.encode()
            kv[keys.machine_id(machine_id)] = entity_key.encode()
        elif kind == "peer":
            gw = _gateway(gateways, item.region, catalogue)
            net_id = net_ids[(item.org, item.network)]
            slot_key = keys.peer_slot(net_id, gw.host_id)
            slot = slots[slot_key] = slots.get(slot_key, -1) + 1
            peer = Peer(
                org=item.org,
                name=item.name,
                network=item.network,
                net_id=net_id,
                gateway=gw.name,
                host_id=gw.host_id,
                slot=slot,
                address=addressing.peer_address(net_id, gw.host_id, slot),
                public_key=item.public_key,
                ephemeral=item.ephemeral,
                created_at=now,
                routes=parse_routes(item.routes),
            )
            owner = f"{peer.org}/{peer.name}"
            kv[slot_key] = str(slot).encode()
            kv[keys.gateway_key(gw.name, peer.public_key)] = owner.encode()
            routes.extend([str(r), owner] for r in peer.routes)
            kv[keys.peer(peer.org, peer.name)] = enc(peer)
        elif kind == "destroy":
            m = machines[item]
            gone = dataclasses.replace(m, state=MachineState.DESTROYED, updated_at=now)
            kv[keys.machine(m.org, m.app, m.id)] = enc(gone)
            del kv[keys.machine_field(m.net_id, m.host_id, m.field)]
    kv[keys.COUNTER_NETWORK] = str(_block_end(len(net_ids))).encode()
    kv[keys.COUNTER_HOST] = str(_block_end(len(hosts))).encode()
    if routes:
        kv[keys.PEER_ROUTES] = json.dumps(routes).encode()
    kv[keys.GATEWAY_INDEX] = keys.GATEWAY_INDEX_VERSION.encode()
    return Fleet(kv, [m.id for m in machines], net_ids, [h.host_id for h in hosts], credentials)


def batches(kvs: dict[str, bytes]) -> Iterator[list[Put]]:
    """The writes in transactions etcd accepts: at most TXN_OPS keys and TXN_BYTES bytes."""
    batch: list[Put] = []
    size = 0
    for key, value in kvs.items():
        weight = len(key) + len(value)
        if batch and (len(batch) >= TXN_OPS or size + weight > TXN_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(Put(key, value))
        size += weight
    if batch:
        yield batch


async def write(store: Store, kvs: dict[str, bytes], *, inflight: int = 256) -> int:
    """Put ``kvs`` into the empty ``store``; returns the number of transactions. Many are in
    flight at once: SQLite commits what is queued in one transaction (one fsync), etcd
    pipelines them."""
    present, _ = await store.range("")
    if present:
        raise ValueError(f"the store is not empty ({len(present)} keys): generate into a new one")
    gate = asyncio.Semaphore(inflight)

    async def one(ops: list[Put]) -> None:
        async with gate:
            done = await store.txn((), ops)
        if not done.succeeded:
            raise RuntimeError("a transaction without comparisons failed")

    todo = list(batches(kvs))
    await asyncio.gather(*(one(ops) for ops in todo))
    return len(todo)


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def replay(plan: Plan, store: Store) -> list[str]:
    """Build ``plan`` through the use cases (``control.service``) into the empty ``store``, as a
    `sixpn server` started on it would; returns the machine IDs by plan index."""
    clock = _Clock(plan.t0)
    draws = Draws(plan.seed)
    ctx = Context(store, clock=clock, rand_bytes=draws.rand_bytes, rand_below=draws.rand_below)
    svc = Service(ctx)
    await gwindex.build(store, clock())  # what `sixpn server` does first on an empty store
    machine_ids: list[str] = []
    for now, kind, item in plan.steps():
        clock.now = now
        if kind == "org":
            await svc.orgs.create(item.name)
        elif kind == "network":
            await svc.orgs.create_network(*item)
        elif kind == "host":
            await svc.hosts.join(
                item.name, item.region, item.endpoint, item.public_key, gateway=item.gateway
            )
        elif kind == "app":
            await svc.orgs.create_app(item.org, item.name, item.network)
        elif kind == "machine":
            pm = plan.machines[item]
            app = plan.apps[pm.app]
            stopped = pm.state == MachineState.STOPPED
            created = await svc.machines.create(
                app.org,
                app.name,
                host=plan.hosts[pm.host].name,
                state=MachineState.STOPPED if stopped else MachineState.STARTED,
                process_group=pm.process_group,
                metadata=pm.metadata,
            )
            machine_ids.append(created.id)
        elif kind == "peer":
            await svc.peers.create(
                item.org,
                item.name,
                item.public_key,
                network=item.network,
                region=item.region,
                ephemeral=item.ephemeral,
                routes=item.routes,
            )
        elif kind == "destroy":
            org = plan.apps[plan.machines[item].app].org
            await svc.machines.set_state(org, machine_ids[item], MachineState.DESTROYED)
    return machine_ids


def counts(kvs: dict[str, bytes]) -> dict[str, int]:
    """Keys by kind (entities by kind, internal keys by their first segment)."""
    return dict(sorted(Counter(k.split("/", 1)[0] for k in kvs).items()))


# --- the command line ------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", type=Path, help="SQLite file to create")
    where.add_argument("--etcd", help="etcd endpoints URL[,URL...] (an empty prefix)")
    p.add_argument("--etcd-prefix", default="/sixpn/", help="key prefix in etcd (/sixpn/)")
    p.add_argument("--replace", action="store_true", help="delete an existing --db file first")
    p.add_argument("--seed", type=int, default=1, help="the fleet's seed (1)")
    p.add_argument("--machines", type=int, default=100_000, help="machines (100,000)")
    for name, what in (
        ("apps", "apps (machines/10)"),
        ("hosts", "hosts (machines/100)"),
        ("orgs", "organizations (machines/100)"),
        ("peers", "WireGuard peers (machines/500)"),
        ("dense", "machines on the first host (min(1,000, machines/2))"),
        ("networks-max", "networks per organization, at most (4)"),
        ("gateway-every", "one host in this many is a gateway (20)"),
    ):
        p.add_argument(f"--{name}", type=int, help=what)
    p.add_argument("--stopped", type=float, help="share of machines stopped (0.10)")
    p.add_argument("--destroyed", type=float, help="share of machines destroyed (0.01)")
    p.add_argument(
        "--via-service",
        action="store_true",
        help="build through the use cases instead (slow: ~1 ms per object; the check)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p.parse_args(argv)


def shape_of(args: argparse.Namespace) -> Shape:
    return Shape.scaled(
        args.machines,
        apps=args.apps,
        hosts=args.hosts,
        orgs=args.orgs,
        peers=args.peers,
        dense=args.dense,
        networks_max=args.networks_max,
        gateway_every=args.gateway_every,
        stopped=args.stopped,
        destroyed=args.destroyed,
    )


async def generate(args: argparse.Namespace) -> dict[str, Any]:
    from sixpn.runtime.stores import EtcdOptions, StoreSpec, endpoints, open_store

    shape = shape_of(args)
    if args.db is not None:
        spec = StoreSpec(db=args.db)
    else:
        spec = StoreSpec(etcd=EtcdOptions(endpoints(args.etcd), prefix=args.etcd_prefix))
    started = time.perf_counter()
    plan = make_plan(shape, args.seed)
    planned = time.perf_counter()
    store = await open_store(spec)
    try:
        if args.via_service:
            await replay(plan, store)
            encoded = time.perf_counter()
            kvs = {kv.key: kv.value for kv in (await store.range(""))[0]}
            txns = None
        else:
            kvs = fleet_kvs(plan).kvs
            encoded = time.perf_counter()
            txns = await write(store, kvs)
    finally:
        await store.close()
    done = time.perf_counter()
    return {
        "store": spec.describe(),
        "seed": args.seed,
        "shape": shape.__dict__,
        "keys": len(kvs),
        "by_kind": counts(kvs),
        "bytes": sum(len(k) + len(v) for k, v in kvs.items()),
        "transactions": txns,
        "seconds": {
            "plan": round(planned - started, 3),
            "encode" if not args.via_service else "service": round(encoded - planned, 3),
            "write" if not args.via_service else "read back": round(done - encoded, 3),
            "total": round(done - started, 3),
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.db is not None:
        if args.replace:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{args.db}{suffix}").unlink(missing_ok=True)
        elif args.db.exists():
            print(f"fleetgen: {args.db} exists (--replace to overwrite it)", file=sys.stderr)
            return 2
    summary = asyncio.run(generate(args))
    if args.json:
        print(json.dumps(summary))
        return 0
    s = summary["shape"]
    print(
        f"fleetgen: {summary['store']}, seed {summary['seed']}: {s['machines']:,} machines, "
        f"{s['apps']:,} apps, {s['hosts']:,} hosts, {s['orgs']:,} orgs, {s['peers']:,} peers"
    )
    print("  keys: " + ", ".join(f"{k} {n:,}" for k, n in summary["by_kind"].items()))
    print(
        f"  {summary['keys']:,} keys, {summary['bytes'] / 2**20:.1f} MiB"
        + (f", {summary['transactions']:,} transactions" if summary["transactions"] else "")
    )
    print("  seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["seconds"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

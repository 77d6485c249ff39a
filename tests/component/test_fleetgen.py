"""The generated fleet (bench/fleetgen.py) is the fleet the API builds from the same plan: the
same keys and values, the service's invariants, the same DNS answers and agent desired states,
and a real `sixpn server` started on it serves it and goes on creating things. Not timed."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import dns.message
import pytest

from sixpn.client import Client, generate_keypair
from sixpn.client.feed import parse_snapshot
from sixpn.control import codec, feed, keys
from sixpn.core import addressing, dnswire
from sixpn.core.desired import desired_state
from sixpn.core.hoststate import wg_ifname
from sixpn.core.incremental import IncrementalDesired
from sixpn.core.regions import RegionCatalogue
from sixpn.dns.zone import Zone
from sixpn.model.entities import Host, Machine, MachineState, Network, Peer, Token, TokenKind
from sixpn.runtime.dns import zone_settings
from sixpn.store import Store
from sixpn.store.etcd import EtcdStore
from sixpn.store.memory import MemoryStore
from sixpn.view import View
from tests.etcdcluster import EtcdCluster, require_etcd
from tests.harness import ServerProcess
from tests.unit.test_service import assert_consistent

pytestmark = pytest.mark.component

BENCH = Path(__file__).resolve().parents[2] / "bench"
SEED = 7
SIZE = {"machines": 300, "apps": 30, "hosts": 10, "orgs": 8, "peers": 10}


def load_fleetgen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fleetgen", BENCH / "fleetgen.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fleetgen"] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


fleetgen = load_fleetgen()
SHAPE = fleetgen.Shape.scaled(**SIZE)


async def dump(store: Store) -> dict[str, bytes]:
    kvs, _ = await store.range("")
    return {kv.key: kv.value for kv in kvs}


@dataclass
class Built:
    plan: Any
    fleet: Any
    generated: dict[str, bytes]  # the generator, written through Store.txn
    api: dict[str, bytes]  # the same plan through control.service
    api_ids: list[str]
    generated_view: View
    api_view: View


async def view_of(store: Store) -> View:
    """What a DNS server or an agent loads: the snapshot bytes, parsed, as a View."""
    return View.from_snapshot(parse_snapshot("test", await feed.snapshot(store)))


@pytest.fixture(scope="module")
def built() -> Built:
    async def build() -> Built:
        plan = fleetgen.make_plan(SHAPE, SEED)
        fleet = fleetgen.fleet_kvs(plan)
        generated, api = MemoryStore(), MemoryStore()
        assert await fleetgen.write(generated, fleet.kvs) >= len(fleet.kvs) / fleetgen.TXN_OPS
        api_ids = await fleetgen.replay(plan, api)
        return Built(
            plan,
            fleet,
            await dump(generated),
            await dump(api),
            api_ids,
            await view_of(generated),
            await view_of(api),
        )

    return asyncio.run(build())


def decoded(kvs: dict[str, bytes], kind: str) -> list[Any]:
    cls = codec.KINDS[kind]
    return [codec.decode(cls, v) for k, v in kvs.items() if k.split("/", 1)[0] == kind]


# --- the store --------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_store_and_another_seed_another(built: Built) -> None:
    again = fleetgen.fleet_kvs(fleetgen.make_plan(SHAPE, SEED))
    assert again.kvs == built.generated == built.fleet.kvs
    assert list(again.kvs) == list(built.fleet.kvs)  # the same write order, too
    other = fleetgen.fleet_kvs(fleetgen.make_plan(SHAPE, SEED + 1))
    assert not set(other.machine_ids) & set(built.fleet.machine_ids)


def test_every_key_and_value_is_what_the_api_writes_for_the_plan(built: Built) -> None:
    differ = sorted(
        k
        for k in built.generated.keys() | built.api.keys()
        if built.generated.get(k) != built.api.get(k)
    )
    shown = [(k, built.generated.get(k), built.api.get(k)) for k in differ[:5]]
    assert not differ, f"{len(differ)} keys differ, e.g. (key, generated, api): {shown}"
    assert built.api_ids == built.fleet.machine_ids


def test_the_fleet_has_the_shape_asked_for(built: Built) -> None:
    by_kind = fleetgen.counts(built.generated)
    assert by_kind["org"] == SIZE["orgs"]
    assert by_kind["host"] == SIZE["hosts"]
    assert by_kind["app"] == SIZE["apps"]
    assert by_kind["machine"] == SIZE["machines"]
    assert by_kind["peer"] == SIZE["peers"]
    assert SIZE["orgs"] <= by_kind["network"] <= 4 * SIZE["orgs"]
    machines = decoded(built.generated, "machine")
    states = Counter(m.state for m in machines)
    assert states[MachineState.STOPPED] > 0
    assert states[MachineState.DESTROYED] > 0
    assert {m.app for m in machines} == {a.name for a in decoded(built.generated, "app")}
    per_host = Counter(m.host for m in machines)
    assert per_host[built.plan.hosts[0].name] >= SHAPE.dense  # the dense host
    assert len(per_host) == SIZE["hosts"]
    assert any(h.gateway for h in decoded(built.generated, "host"))
    peers = decoded(built.generated, "peer")
    assert any(p.routes for p in peers)
    assert any(p.ephemeral for p in peers)


def test_the_generated_store_keeps_the_services_invariants(built: Built) -> None:
    async def consistent() -> None:
        store = MemoryStore()
        await fleetgen.write(store, built.fleet.kvs)
        await assert_consistent(store)  # the state machine's own check (tests/unit)

    asyncio.run(consistent())
    kv = built.generated
    machines: list[Machine] = decoded(kv, "machine")
    live = [m for m in machines if m.state != MachineState.DESTROYED]
    assert len({m.id for m in machines}) == len(machines)
    assert len({m.address for m in live}) == len(live)
    assert len({(m.net_id, m.host_id, m.field) for m in live}) == len(live)
    nets = {(n.org, n.name): n.net_id for n in decoded(kv, "network")}
    hosts: dict[str, Host] = {h.name: h for h in decoded(kv, "host")}
    for m in machines:
        d = addressing.decode(m.address)
        assert (d.net_id, d.host_id, d.field, d.low) == (m.net_id, m.host_id, m.field, 2)
        assert nets[m.org, m.network] == m.net_id
        assert hosts[m.host].host_id == m.host_id
        assert hosts[m.host].region == m.region
    # network and host IDs: unique, held by netid/, below the counters a new replica starts at
    assert len(set(nets.values())) == len(nets)
    for (org, name), net_id in nets.items():
        assert kv[keys.netid(net_id)] == f"{org}/{name}".encode()
    assert len([k for k in kv if k.startswith("netid/")]) == len(nets)
    assert int(kv[keys.COUNTER_NETWORK]) >= max(nets.values())
    host_ids = [h.host_id for h in hosts.values()]
    assert len(set(host_ids)) == len(host_ids)
    assert 0 not in host_ids
    assert int(kv[keys.COUNTER_HOST]) >= max(host_ids)
    # a host: its key reserved, one host credential
    tokens: list[Token] = decoded(kv, "token")
    for h in hosts.values():
        assert kv[keys.host_key(h.public_key)] == h.name.encode()
        (mine,) = [t for t in tokens if t.host == h.name]
        assert mine.kind == TokenKind.HOST
        assert kv[keys.token(kv[keys.token_id(mine.id)].decode())] == codec.encode(mine)
    # peers: on a gateway, slots per (network, gateway) from 0, keys and routes indexed
    peers: list[Peer] = decoded(kv, "peer")
    slots: dict[str, list[int]] = {}
    for p in peers:
        assert hosts[p.gateway].gateway
        assert hosts[p.gateway].host_id == p.host_id
        assert p.address == addressing.peer_address(p.net_id, p.host_id, p.slot)
        assert kv[keys.gateway_key(p.gateway, p.public_key)] == f"{p.org}/{p.name}".encode()
        slots.setdefault(keys.peer_slot(p.net_id, p.host_id), []).append(p.slot)
    for key, taken in slots.items():
        assert sorted(taken) == list(range(len(taken)))
        assert int(kv[key]) == len(taken) - 1
    routes = [[str(r), f"{p.org}/{p.name}"] for p in peers for r in p.routes]
    assert sorted(json.loads(kv[keys.PEER_ROUTES])) == sorted(routes)
    assert kv[keys.GATEWAY_INDEX] == keys.GATEWAY_INDEX_VERSION.encode()


def test_etcd_takes_the_generated_store_in_its_transaction_limits(built: Built) -> None:
    require_etcd()

    async def into_etcd(cluster: EtcdCluster) -> dict[str, bytes]:
        store = await EtcdStore.open(cluster.endpoints, prefix="/fleetgen/")
        try:
            await fleetgen.write(store, built.fleet.kvs)
            return await dump(store)
        finally:
            await store.close()

    with EtcdCluster(1) as cluster:
        assert asyncio.run(into_etcd(cluster)) == built.generated


# --- what followers make of it ------------------------------------------------------------------


def zone_of(view: View) -> Zone:
    zone = Zone(zone_settings(list(RegionCatalogue.default()), "fra", api_in_network=False))
    zone.load(view)
    return zone


def ask(zone: Zone, net_id: int, name: str, qtype: str) -> dns.message.Message:
    """The server's response to ``name`` from a machine of ``net_id`` (as test_dnszone asks)."""
    query = dns.message.make_query(name, qtype, use_edns=0)
    data = query.to_wire()
    parsed = dnswire.parse_query(data)
    assert isinstance(parsed, tuple)
    qend, qname, qt, edns_size = parsed
    entry = zone.lookup(net_id, qname, qt)
    return dns.message.from_wire(dnswire.respond(data, qend, edns_size, entry, 65535))


def answer(zone: Zone, net_id: int, name: str, qtype: str) -> tuple[Any, ...]:
    """Rcode, flags and every record of each section, in no order: dnspython shuffles the
    records of an RRset when it encodes one (each answer is encoded once, on first use)."""
    reply = ask(zone, net_id, name, qtype)
    sections = (
        sorted(
            (str(rrset.name), rrset.ttl, rrset.rdtype, rr.to_text()) for rrset in s for rr in rrset
        )
        for s in (reply.answer, reply.authority)
    )
    return (reply.rcode(), reply.flags, *sections)


def questions(view: View) -> Iterator[tuple[int, str, str]]:
    """Every name the issue names, for every network: app names, listings, regions, nearest."""
    for net in view.networks.values():
        for name in ("_apps", "_instances", "all._instances", "_peer"):
            yield net.net_id, f"{name}.internal", "TXT"
    for app in view.apps.values():
        n = app.net_id
        yield n, f"{app.name}.internal", "AAAA"
        yield n, f"global.{app.name}.internal", "AAAA"
        yield n, f"top2.nearest.of.{app.name}.internal", "AAAA"
        for listing in ("vms", "all.vms", "regions", "all.regions"):
            yield n, f"{listing}.{app.name}.internal", "TXT"
        for region in ("fra", "iad", "syd"):
            yield n, f"{region}.{app.name}.internal", "AAAA"
    for m in view.machines.values():
        yield m.net_id, f"{m.id}.vm.{m.app}.internal", "AAAA"
    for p in view.peers.values():
        yield p.net_id, f"{p.name}._peer.internal", "AAAA"


def test_dns_answers_the_same_from_the_generated_store_as_from_the_api(built: Built) -> None:
    mine, theirs = zone_of(built.generated_view), zone_of(built.api_view)
    asked = list(questions(built.api_view))
    assert list(questions(built.generated_view)) == asked
    differ = [q for q in asked if answer(mine, *q) != answer(theirs, *q)]
    assert not differ, f"{len(differ)} of {len(asked)} answers differ, e.g. {differ[:5]}"
    with_records = [q for q in asked if answer(mine, *q)[2]]
    assert len(with_records) > len(asked) / 2  # not a comparison of empty answers
    # and the answers are the fleet's: an app's name lists its started machines, no other
    machines = list(built.generated_view.machines.values())
    for app in list(built.generated_view.apps.values())[:10]:
        reply = ask(mine, app.net_id, f"{app.name}.internal", "AAAA")
        got = {rr.address for rrset in reply.answer for rr in rrset}
        want = {
            str(m.address)
            for m in machines
            if (m.org, m.app) == (app.org, app.name) and m.state == MachineState.STARTED
        }
        assert got == want


def test_agents_want_the_same_from_the_generated_store_as_from_the_api(built: Built) -> None:
    gen, api = built.generated_view, built.api_view
    dense = built.plan.hosts[0].name
    gateway = next(p.gateway for p in gen.peers.values())
    for name in {dense, gateway, built.plan.hosts[-1].name}:
        want = [
            desired_state(
                v.hosts[name], v.hosts, v.machines.values(), v.peers.values(), listen_port=51820
            )
            for v in (gen, api)
        ]
        assert want[0] == want[1], name
        # and what an agent keeps change by change, loaded from either, is the same state
        for v in (gen, api):
            kept = IncrementalDesired(name, 51820, wg_ifname(v.hosts[name].host_id))
            assert kept.load(v) == want[0], name
    dense_state = desired_state(
        gen.hosts[dense], gen.hosts, gen.machines.values(), gen.peers.values(), listen_port=51820
    )
    live = [
        m for m in gen.machines.values() if m.host == dense and m.state != MachineState.DESTROYED
    ]
    assert len(dense_state.machines) == len(live) >= SHAPE.dense * 0.9
    assert len(dense_state.wg_peers) >= SIZE["hosts"] - 1


# --- a real server on a generated SQLite file ---------------------------------------------------


@pytest.fixture
def generated_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    db = tmp_path / "fleet.db"
    argv = [sys.executable, str(BENCH / "fleetgen.py"), "--db", str(db), "--seed", str(SEED)]
    argv += [f"--{k}={v}" for k, v in SIZE.items()]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert f"{SIZE['machines']:,} machines" in done.stdout
    server = ServerProcess(db=db).start()
    try:
        yield server, db
    finally:
        server.kill()


async def test_a_server_on_a_generated_store_serves_it_and_creates_more(
    built: Built, generated_server: tuple[ServerProcess, Path]
) -> None:
    server, _ = generated_server
    generated = decoded(built.generated, "machine")
    async with Client(server.url, server.admin_token) as c:
        listed = {
            m.id: m
            for org in built.plan.orgs
            for m in await c.list_machines(org.name, include_destroyed=True)
        }
        assert listed == {m.id: m for m in generated}
        assert len(await c.list_hosts()) == SIZE["hosts"]

        # a new machine where its network already has machines: a fresh ID and field
        busy = Counter((m.org, m.app, m.host) for m in generated).most_common(1)[0][0]
        new = await c.create_machine(busy[0], busy[1], host=busy[2])
        assert new.id not in listed
        taken = {(m.net_id, m.host_id, m.field) for m in generated}
        assert (new.net_id, new.host_id, new.field) not in taken
        # a new org, network and host: IDs past every generated one
        await c.create_org("newcomer")
        (net,) = await c.list_networks("newcomer")
        assert net.net_id > max(n.net_id for n in decoded(built.generated, "network"))
        # a new peer on a gateway already serving its network: the next slot
        old = next(p for p in decoded(built.generated, "peer") if not p.routes)
        peer = await c.create_peer(
            old.org,
            "newpeer",
            generate_keypair().public_key,
            network=old.network,
            region=built.api_view.hosts[old.gateway].region,
        )
        if peer.peer.gateway == old.gateway:
            assert peer.peer.slot > old.slot
    async with Client(server.url, server.join_token) as joiner:
        joined = await joiner.join_host(
            "newhost", "fra", "198.51.100.9:51820", generate_keypair().public_key
        )
        assert joined.host.host_id > max(built.fleet.host_ids)
    # a host's generated credential reads the snapshot, as its agent would
    name = built.plan.hosts[1].name
    async with Client(server.url, built.fleet.credentials[name]) as agent:
        snap = await agent.snapshot()
    assert len(snap.machines) == SIZE["machines"] + 1
    assert isinstance(snap.networks[0], Network)

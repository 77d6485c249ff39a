"""The control plane's use cases over the in-memory store (a verified fake of the real stores).

What is proven here: the allocation rules of SPEC 2 (default network, never-reused network and
host IDs, machine fields unique per (network, host) and freed on destroy, peer slots that only go
up inside the gateway's /80), the machine life cycle, placement, gateway choice, the peer checks
of SPEC 5/6, and that deleting a parent never leaves an orphan even against concurrent creates.

``MemoryStore`` never suspends, so a use case would run from start to commit in one go and no
race could ever happen; :class:`YieldingStore` adds the scheduling points that a real store's
I/O has (seeded, so every interleaving is reproducible).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import math
import os
import random
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from ipaddress import IPv6Address, IPv6Network
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sixpn.control import codec, gwindex, keys
from sixpn.control.context import Context
from sixpn.control.service import Service
from sixpn.core import addressing
from sixpn.model.entities import Host, Machine, MachineState, Network, TokenKind
from sixpn.model.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from sixpn.store.base import Compare, Delete, Op, Put, TxnResult
from sixpn.store.memory import MemoryStore

pytestmark = pytest.mark.unit

T = TypeVar("T")


def wg_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


class YieldingStore(MemoryStore):
    """The in-memory store with 0-3 scheduling points before every call."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self._rnd = random.Random(seed)

    async def _pause(self) -> None:
        for _ in range(self._rnd.randint(0, 3)):
            await asyncio.sleep(0)

    async def get(self, key: str) -> Any:
        await self._pause()
        return await super().get(key)

    async def range(self, prefix: str) -> Any:
        await self._pause()
        return await super().range(prefix)

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        await self._pause()
        return await super().txn(compares, ops)


def service(
    store: MemoryStore | None = None,
    *,
    rand_below: Callable[[int], int] | None = None,
) -> Service:
    store = store or MemoryStore()
    if rand_below is None:
        return Service(Context(store=store))
    return Service(Context(store=store, rand_below=rand_below))


async def join(
    svc: Service, name: str, region: str = "fra", *, gateway: bool = False, key: str | None = None
) -> Host:
    host, _ = await svc.hosts.join(
        name, region, "192.0.2.1:51820", key or wg_key(), gateway=gateway
    )
    return host


def net48(net_id: int) -> IPv6Network:
    return IPv6Network(((0xFDAA << 112) | (net_id << 80), 48))


def host80(net_id: int, host_id: int) -> IPv6Network:
    return IPv6Network(((0xFDAA << 112) | (net_id << 80) | (host_id << 48), 80))


# --- organizations and networks -------------------------------------------------------------------


async def test_org_creation_makes_a_default_network() -> None:
    svc = service()
    org = await svc.orgs.create("acme")
    assert org.name == "acme"
    nets = await svc.orgs.list_networks("acme")
    assert [(n.org, n.name) for n in nets] == [("acme", "default")]
    assert nets[0].net_id > 0
    other = await svc.orgs.create("globex")
    assert other.name == "globex"
    assert (await svc.orgs.get_network("globex", "default")).net_id != nets[0].net_id
    # An app created without a network lands in the default one.
    app = await svc.orgs.create_app("acme", "web")
    assert (app.network, app.net_id) == ("default", nets[0].net_id)


async def test_the_default_network_goes_only_with_its_org() -> None:
    svc = service()
    await svc.orgs.create("acme")
    with pytest.raises(Conflict) as info:
        await svc.orgs.delete_network("acme", "default")
    assert info.value.field == "name"
    await svc.orgs.delete("acme")
    with pytest.raises(NotFound):
        await svc.orgs.list_networks("acme")


async def test_network_ids_are_never_reused_after_deletion() -> None:
    svc = service()
    await svc.orgs.create("acme")
    seen = {(await svc.orgs.get_network("acme", "default")).net_id}
    for round_ in range(3):
        net = await svc.orgs.create_network("acme", "blue")
        assert net.net_id not in seen
        assert net.net_id > max(seen)
        seen.add(net.net_id)
        await svc.orgs.delete_network("acme", "blue")
        with pytest.raises(NotFound):
            await svc.orgs.get_network("acme", "blue")
        # A whole org deleted and made again: its new default network gets a new ID too.
        await svc.orgs.delete("acme")
        await svc.orgs.create("acme")
        net_id = (await svc.orgs.get_network("acme", "default")).net_id
        assert net_id not in seen, round_
        seen.add(net_id)


async def test_host_ids_are_never_zero_and_never_reused() -> None:
    svc = service()
    await svc.orgs.create("acme")
    await svc.orgs.create_app("acme", "web")
    seen: set[int] = set()
    for _ in range(3):
        host = await join(svc, "h1")
        assert host.host_id > 0
        assert host.host_id not in seen
        seen.add(host.host_id)
        # A host with only destroyed machines may leave; the destroyed records stay.
        m = await svc.machines.create("acme", "web", host="h1")
        await svc.machines.set_state("acme", m.id, MachineState.DESTROYED)
        await svc.hosts.delete("h1")
        with pytest.raises(NotFound):
            await svc.hosts.get("h1")
    other = await join(svc, "h2")
    assert other.host_id not in seen


async def test_a_host_with_a_live_machine_or_a_peer_cannot_leave() -> None:
    svc = service()
    await svc.orgs.create("acme")
    await svc.orgs.create_app("acme", "web")
    await join(svc, "gw", gateway=True)
    m = await svc.machines.create("acme", "web", host="gw")
    await svc.peers.create("acme", "laptop", wg_key())
    with pytest.raises(Conflict) as info:
        await svc.hosts.delete("gw")
    assert m.id in info.value.message
    assert "laptop" in info.value.message
    assert (await svc.hosts.get("gw")).name == "gw"


# --- machines -------------------------------------------------------------------------------------


async def test_machine_destroy_frees_the_field_and_keeps_the_record() -> None:
    # A random source stuck at 0: the first free field is always the lowest one.
    svc = service(rand_below=lambda n: 0)
    await svc.orgs.create("acme")
    await svc.orgs.create_app("acme", "web")
    await join(svc, "h1")
    first = await svc.machines.create("acme", "web", host="h1")
    second = await svc.machines.create("acme", "web", host="h1")
    assert first.field == addressing.MACHINE_FIELD_MIN
    assert second.field != first.field
    assert second.address != first.address

    gone = await svc.machines.set_state("acme", first.id, MachineState.DESTROYED)
    assert gone.state == MachineState.DESTROYED
    assert (await svc.machines.get("acme", first.id)).state == MachineState.DESTROYED
    assert [m.id for m in await svc.machines.list("acme")] == [second.id]
    listed = await svc.machines.list("acme", include_destroyed=True)
    assert {m.id for m in listed} == {first.id, second.id}

    # The field is free again: the next machine on that (network, host) may take it.
    third = await svc.machines.create("acme", "web", host="h1")
    assert third.field == first.field
    assert third.id not in (first.id, second.id)
    live = await svc.machines.list("acme")
    assert len({m.address for m in live}) == len(live) == 2


async def test_machine_fields_stay_unique_with_a_colliding_random_source() -> None:
    svc = service(rand_below=lambda n: 0)
    await svc.orgs.create("acme")
    await svc.orgs.create_app("acme", "web")
    await svc.orgs.create_network("acme", "blue")
    await svc.orgs.create_app("acme", "api", network="blue")
    await join(svc, "h1")
    await join(svc, "h2")
    made = [
        await svc.machines.create("acme", app, host=host)
        for _ in range(5)
        for app in ("web", "api")
        for host in ("h1", "h2")
    ]
    assert len({m.address for m in made}) == len(made)
    per_slot = {(m.net_id, m.host_id) for m in made}
    assert len(per_slot) == 4
    for net_id, host_id in per_slot:
        fields = [m.field for m in made if (m.net_id, m.host_id) == (net_id, host_id)]
        assert sorted(fields) == [addressing.MACHINE_FIELD_MIN + i for i in range(5)]


async def test_machine_addresses_follow_the_layout() -> None:
    svc = service()
    await svc.orgs.create("acme")
    await svc.orgs.create_app("acme", "web")
    host = await join(svc, "h1")
    m = await svc.machines.create("acme", "web", host="h1", metadata={"role": "db"})
    assert len(m.id) == 14
    assert m.id == f"{int(m.id, 16):014x}"  # 14 lowercase hex characters
    assert m.address in net48(m.net_id)
    assert m.address in host80(m.net_id, host.host_id)
    assert (int(m.address) >> 16) & 0xFFFF_FFFF == m.field
    assert int(m.address) & 0xFFFF == 2
    assert m.field >= 0x1_0000
    assert (m.region, m.process_group, dict(m.metadata)) == ("fra", "app", {"role": "db"})


async def test_start_stop_transitions_and_destroyed_is_final() -> None:
    svc = service()
    store = svc.ctx.store
    await svc.orgs.create("acme")
    await svc.orgs.create_app("acme", "web")
    await join(svc, "h1")
    m = await svc.machines.create("acme", "web", host="h1")
    assert m.state == MachineState.STARTED

    stopped = await svc.machines.set_state("acme", m.id, MachineState.STOPPED)
    assert stopped.state == MachineState.STOPPED
    assert stopped.updated_at >= m.updated_at
    # Asking for the state it is already in changes nothing, not even the revision.
    revision = await store.revision()
    again = await svc.machines.set_state("acme", m.id, MachineState.STOPPED)
    assert again == stopped
    assert await store.revision() == revision
    assert (await svc.machines.get("acme", m.id)).state == MachineState.STOPPED
    # A stopped machine keeps its address and is still listed.
    assert [x.id for x in await svc.machines.list("acme")] == [m.id]

    started = await svc.machines.set_state("acme", m.id, MachineState.STARTED)
    assert started.state == MachineState.STARTED
    assert started.address == m.address

    destroyed = await svc.machines.set_state("acme", m.id, MachineState.DESTROYED)
    assert destroyed.state == MachineState.DESTROYED
    for state in (MachineState.STARTED, MachineState.STOPPED):
        with pytest.raises(Conflict) as info:
            await svc.machines.set_state("acme", m.id, state)
        assert info.value.field == "state"
        assert m.id in info.value.message
    assert (await svc.machines.set_state("acme", m.id, MachineState.DESTROYED)) == destroyed
    assert (await svc.machines.get("acme", m.id)).state == MachineState.DESTROYED

    created_stopped = await svc.machines.create(
        "acme", "web", host="h1", state=MachineState.STOPPED
    )
    assert created_stopped.state == MachineState.STOPPED
    with pytest.raises(InvalidInput) as refused:
        await svc.machines.create("acme", "web", host="h1", state=MachineState.DESTROYED)
    assert refused.value.field == "state"


async def test_machines_of_another_org_are_not_found() -> None:
    svc = service()
    for org in ("acme", "globex"):
        await svc.orgs.create(org)
        await svc.orgs.create_app(org, "web")
    await join(svc, "h1")
    m = await svc.machines.create("globex", "web", host="h1")
    with pytest.raises(NotFound):
        await svc.machines.get("acme", m.id)
    with pytest.raises(NotFound):
        await svc.machines.set_state("acme", m.id, MachineState.DESTROYED)
    assert (await svc.machines.get("globex", m.id)).state == MachineState.STARTED


async def test_placement_by_region_picks_a_host_of_that_region() -> None:
    rnd = random.Random(7)
    svc = service(rand_below=rnd.randrange)
    await svc.orgs.create("acme")
    await svc.orgs.create_app("acme", "web")
    await join(svc, "f1", "fra")
    await join(svc, "f2", "fra")
    await join(svc, "i1", "iad")
    await join(svc, "gw", "iad", gateway=True)
    in_fra = [await svc.machines.create("acme", "web", region="fra") for _ in range(30)]
    assert {m.host for m in in_fra} == {"f1", "f2"}  # both used, nothing outside fra
    assert {m.region for m in in_fra} == {"fra"}
    in_iad = [await svc.machines.create("acme", "web", region="iad") for _ in range(10)]
    assert {m.host for m in in_iad} <= {"i1", "gw"}
    # host and region together must agree
    both = await svc.machines.create("acme", "web", host="f2", region="fra")
    assert both.host == "f2"
    with pytest.raises(InvalidInput) as wrong:
        await svc.machines.create("acme", "web", host="f2", region="iad")
    assert wrong.value.field == "region"
    with pytest.raises(InvalidInput) as empty:
        await svc.machines.create("acme", "web", region="syd")
    assert empty.value.field == "region"
    assert "syd" in empty.value.message
    with pytest.raises(InvalidInput) as neither:
        await svc.machines.create("acme", "web")
    assert neither.value.field == "host"


# --- peers ----------------------------------------------------------------------------------------


async def test_peer_slots_increase_inside_the_gateways_80_and_are_never_reused() -> None:
    svc = service()
    await svc.orgs.create("acme")
    await svc.orgs.create_network("acme", "blue")
    gw = await join(svc, "gw", gateway=True)
    net_id = (await svc.orgs.get_network("acme", "default")).net_id
    blue_id = (await svc.orgs.get_network("acme", "blue")).net_id

    peers = [(await svc.peers.create("acme", f"p{i}", wg_key()))[0] for i in range(3)]
    assert [p.slot for p in peers] == [0, 1, 2]
    for p in peers:
        assert p.gateway == "gw"
        assert p.address in host80(net_id, gw.host_id)
        assert 0xA <= (int(p.address) >> 16) & 0xFFFF_FFFF <= 0xFFFF  # never a machine field
        assert int(p.address) & 0xFF == 0x02
    # Fly's observed pattern for the first slots: <net48>:<gateway host32>:0:a:<nn>02
    base = int(net48(net_id).network_address) | (gw.host_id << 48) | (0xA << 16)
    assert peers[0].address == IPv6Address(base | 0x0002)
    assert peers[1].address == IPv6Address(base | 0x0102)

    await svc.peers.delete("acme", "p1")
    with pytest.raises(NotFound):
        await svc.peers.get("acme", "p1")
    later, _ = await svc.peers.create("acme", "p1", wg_key())
    assert later.slot == 3
    assert later.address not in {p.address for p in peers}

    # Another network on the same gateway counts on its own, inside its own /80.
    blue, _ = await svc.peers.create("acme", "b0", wg_key(), network="blue")
    assert blue.slot == 0
    assert blue.address in host80(blue_id, gw.host_id)


def km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0 * math.asin(math.sqrt(h))


async def test_peer_gateway_is_in_the_region_or_the_nearest_region_with_one() -> None:
    svc = service()
    await svc.orgs.create("acme")
    with pytest.raises(Conflict, match="gateway"):
        await svc.peers.create("acme", "early", wg_key())
    await join(svc, "ams-plain", "ams")  # not a gateway: never chosen
    await join(svc, "fra-gw", "fra", gateway=True)
    await join(svc, "iad-gw", "iad", gateway=True)
    await join(svc, "iad-gw2", "iad", gateway=True)

    counter = itertools.count()

    async def gateway_for(region: str | None) -> str:
        name = f"p{next(counter)}"
        _, gw = await svc.peers.create("acme", name, wg_key(), region=region)
        assert (await svc.peers.get("acme", name)).gateway == gw.name
        return gw.name

    assert await gateway_for("fra") == "fra-gw"
    assert await gateway_for("iad") == "iad-gw"  # of two in the region: the lowest host ID
    assert await gateway_for("ams") == "fra-gw"  # ams has a host, but no gateway
    assert await gateway_for("ewr") == "iad-gw"
    assert await gateway_for(None) == "fra-gw"  # no region: the first gateway that joined
    # A far region goes to whichever gateway region is nearer, by great-circle distance.
    coords = {r.code: (r.latitude, r.longitude) for r in svc.ctx.regions}
    for far in ("syd", "nrt", "gru", "jnb"):
        nearer = min(("fra", "iad"), key=lambda r: km(coords[far], coords[r]))
        assert await gateway_for(far) == f"{nearer}-gw", far


async def test_a_public_key_is_one_peer_on_a_gateway() -> None:
    svc = service()
    for org in ("acme", "globex"):
        await svc.orgs.create(org)
    gw = await join(svc, "gw", gateway=True)
    key = wg_key()
    await svc.peers.create("acme", "laptop", key)
    for org, name in (("acme", "again"), ("globex", "laptop")):
        with pytest.raises(AlreadyExists) as info:
            await svc.peers.create(org, name, key)
        assert info.value.field == "public_key"
        assert "acme/laptop" in info.value.message
    with pytest.raises(AlreadyExists) as own:
        await svc.peers.create("acme", "mirror", gw.public_key)
    assert own.value.field == "public_key"
    # another host's key neither: that host is the gateway's mesh peer, one peer per key
    other = await join(svc, "fra-2")
    with pytest.raises(AlreadyExists) as host_key:
        await svc.peers.create("acme", "twin", other.public_key)
    assert (host_key.value.field, "host 'fra-2'" in host_key.value.message) == ("public_key", True)
    # nor is a host's a peer's key: the gateway would hold the two under one key
    with pytest.raises(AlreadyExists) as peer_key:
        await svc.hosts.join("ams-1", "ams", "198.51.100.9:51820", key)
    assert (peer_key.value.field, "gateway 'gw'" in peer_key.value.message) == ("public_key", True)
    assert "ams-1" not in [h.name for h in await svc.hosts.list()]
    assert [p.name for p in await svc.peers.list("acme")] == ["laptop"]
    assert await svc.peers.list("globex") == []
    # Peer names are unique in the org.
    with pytest.raises(AlreadyExists) as dup:
        await svc.peers.create("acme", "laptop", wg_key())
    assert dup.value.field == "name"


async def test_routed_peering_refuses_overlaps_anywhere_in_the_fleet() -> None:
    """Routes are unique across the fleet (every host's mesh carries its networks' routes): an
    overlap in the organization names the peer; another organization's is not named."""
    svc = service()
    for org in ("acme", "globex"):
        await svc.orgs.create(org)
    await join(svc, "gw", gateway=True)
    await join(svc, "gw2", region="ams", gateway=True)
    vpc, _ = await svc.peers.create("acme", "vpc", wg_key(), routes=["2001:db8::/48"])
    assert vpc.routes == (IPv6Network("2001:db8::/48"),)
    for region in ("fra", "ams"):  # on its gateway and on another one
        with pytest.raises(Conflict) as mine:
            await svc.peers.create(
                "acme", "other", wg_key(), region=region, routes=["2001:db8::/32"]
            )
        assert mine.value.field == "routes"
        assert "2001:db8::/32" in mine.value.message
        assert "acme/vpc" in mine.value.message
        with pytest.raises(Conflict) as theirs:
            await svc.peers.create(
                "globex", "other", wg_key(), region=region, routes=["2001:db8:0:1::/64"]
            )
        assert theirs.value.field == "routes"
        assert "2001:db8:0:1::/64" in theirs.value.message
        assert "another organization" in theirs.value.message
        assert "vpc" not in theirs.value.message
        assert "acme" not in theirs.value.message
    with pytest.raises(Conflict) as sixpn:
        await svc.peers.create("acme", "inside", wg_key(), routes=["fdaa:0:1::/48"])
    assert sixpn.value.field == "routes"
    for route, why in (
        ("::/0", "shorter than /16"),
        ("2000::/3", "shorter than /16"),
        ("fe80::/64", "link-local"),
        ("ff02::/16", "multicast"),
        ("::ffff:0:0/96", "IPv4-mapped"),
    ):
        with pytest.raises(InvalidInput) as bad:
            await svc.peers.create("acme", "bad", wg_key(), routes=[route])
        assert bad.value.field == "routes"
        assert route in bad.value.message
        assert why in bad.value.message
    ok, _ = await svc.peers.create("globex", "other", wg_key(), routes=["2001:db9::/48"])
    assert ok.routes == (IPv6Network("2001:db9::/48"),)
    assert {p.name for p in await svc.peers.list("globex")} == {"other"}


# --- races ----------------------------------------------------------------------------------------


async def gather(*coros: Coroutine[Any, Any, Any]) -> list[Any]:
    return list(await asyncio.gather(*coros, return_exceptions=True))


async def after(passes: int, coro: Coroutine[Any, Any, T]) -> T:
    """``coro``, started after ``passes`` turns of the loop: a head start for the others."""
    for _ in range(passes):
        await asyncio.sleep(0)
    return await coro


async def entities(store: MemoryStore) -> dict[str, list[Any]]:
    kvs, _ = await store.range("")
    out: dict[str, list[Any]] = {kind: [] for kind in codec.KINDS}
    for kv in kvs:
        kind = keys.kind_of(kv.key) or kv.key.split("/", 1)[0]
        if kind in codec.KINDS:
            out[kind].append(codec.decode(codec.KINDS[kind], kv.value))
    return out


async def assert_consistent(store: MemoryStore) -> None:
    """No orphan, no leftover guard, reservations match the live machines."""
    e = await entities(store)
    orgs = {o.name for o in e["org"]}
    nets = {(n.org, n.name) for n in e["network"]}
    apps = {(a.org, a.name) for a in e["app"]}
    hosts = {h.name for h in e["host"]}
    assert all(o in orgs for o, _ in nets)
    assert all((o, "default") in nets for o in orgs)
    for a in e["app"]:
        assert (a.org, a.network) in nets, f"app {a.org}/{a.name} outlived its network"
    for m in e["machine"]:
        assert (m.org, m.app) in apps, f"machine {m.id} outlived its app {m.org}/{m.app}"
        if m.state != MachineState.DESTROYED:
            assert m.host in hosts, f"live machine {m.id} outlived its host {m.host}"
    for p in e["peer"]:
        assert (p.org, p.network) in nets, f"peer {p.org}/{p.name} outlived its network"
        assert p.gateway in hosts, f"peer {p.org}/{p.name} outlived its gateway"
    for t in e["token"]:
        assert t.org is None or t.org in orgs, f"token {t.id} outlived its org {t.org}"
        assert t.host is None or t.host in hosts, f"token {t.id} outlived its host {t.host}"

    guards, _ = await store.range("guard/")
    assert guards == [], [g.key for g in guards]
    live = [m for m in e["machine"] if m.state != MachineState.DESTROYED]
    fields, _ = await store.range("mfield/")
    reserved = {kv.key: kv.value.decode() for kv in fields}
    assert reserved == {keys.machine_field(m.net_id, m.host_id, m.field): m.id for m in live}
    # Every machine's ID is reserved; reservations outlive their machines (IDs are never reused).
    mids, _ = await store.range("mid/")
    reserved_ids = {kv.key: kv.value.decode() for kv in mids}
    for m in e["machine"]:
        assert reserved_ids[keys.machine_id(m.id)] == keys.machine(m.org, m.app, m.id)


def outcome(results: Sequence[Any], allowed: tuple[type[BaseException], ...]) -> list[bool]:
    """Which calls succeeded; any failure must be one of ``allowed``."""
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, allowed):
            raise r
    return [not isinstance(r, BaseException) for r in results]


ROUNDS = 25


async def test_deleting_an_app_against_concurrent_machine_creates_leaves_no_orphan() -> None:
    store = YieldingStore(seed=1)
    svc = service(store)
    await svc.orgs.create("acme")
    await join(svc, "h1")
    await join(svc, "h2")
    deleted = kept = 0
    for i in range(ROUNDS):
        app = f"app{i}"
        await svc.orgs.create_app("acme", app)
        if i % 3 == 0:  # an app with a destroyed machine: that one goes with the app
            m = await svc.machines.create("acme", app, host="h1")
            await svc.machines.set_state("acme", m.id, MachineState.DESTROYED)
        results = await gather(
            after(i % 12, svc.orgs.delete_app("acme", app)),
            *(svc.machines.create("acme", app, host=h) for h in ("h1", "h2", "h1")),
        )
        ok = outcome(results, (Conflict, NotFound))
        made = [r for r in results[1:] if isinstance(r, Machine)]
        if ok[0]:
            deleted += 1
            assert made == [], "the app was deleted although machines were created in it"
            with pytest.raises(NotFound):
                await svc.orgs.get_app("acme", app)
            left, _ = await store.range(keys.machines_of("acme", app))
            assert left == []
        else:
            kept += 1
            listed = {m.id for m in await svc.machines.list("acme", app=app)}
            assert {m.id for m in made} == listed
        await assert_consistent(store)
    assert deleted, "no round exercised a successful deletion"
    assert kept, "no round exercised a refused deletion"


async def test_deleting_an_org_against_concurrent_creates_in_it_leaves_no_orphan() -> None:
    store = YieldingStore(seed=2)
    svc = service(store)
    await join(svc, "gw", gateway=True)
    deleted = 0
    for i in range(ROUNDS):
        org = f"org{i}"
        await svc.orgs.create(org)
        results = await gather(
            after(i % 12, svc.orgs.delete(org)),
            svc.orgs.create_app(org, "web"),
            svc.orgs.create_network(org, "blue"),
            svc.peers.create(org, "laptop", wg_key()),
            svc.tokens.create(TokenKind.ORG, org=org),
        )
        ok = outcome(results, (Conflict, NotFound))
        if ok[0]:
            deleted += 1
            assert not any(ok[1:4]), "the org was deleted although something was created in it"
            with pytest.raises(NotFound):
                await svc.orgs.get(org)
        await assert_consistent(store)
    assert 0 < deleted < ROUNDS


async def test_deleting_a_network_against_concurrent_creates_on_it_leaves_no_orphan() -> None:
    store = YieldingStore(seed=3)
    svc = service(store)
    await svc.orgs.create("acme")
    await join(svc, "gw", gateway=True)
    deleted = 0
    for i in range(ROUNDS):
        net = f"net{i}"
        await svc.orgs.create_network("acme", net)
        results = await gather(
            after(i % 12, svc.orgs.delete_network("acme", net)),
            svc.orgs.create_app("acme", f"app{i}", network=net),
            svc.peers.create("acme", f"peer{i}", wg_key(), network=net),
        )
        ok = outcome(results, (Conflict, NotFound))
        if ok[0]:
            deleted += 1
            assert not any(ok[1:])
        await assert_consistent(store)
    assert 0 < deleted < ROUNDS


async def test_deleting_a_host_against_concurrent_machine_and_peer_creates() -> None:
    store = YieldingStore(seed=4)
    svc = service(store)
    await svc.orgs.create("acme")
    await svc.orgs.create_app("acme", "web")
    deleted = 0
    for i in range(ROUNDS):
        host = f"h{i}"
        await join(svc, host, "syd", gateway=True)
        results = await gather(
            after(i % 12, svc.hosts.delete(host)),
            svc.machines.create("acme", "web", host=host),
            svc.machines.create("acme", "web", region="syd"),
            svc.peers.create("acme", f"peer{i}", wg_key(), region="syd"),
        )
        ok = outcome(results, (Conflict, NotFound, InvalidInput))
        if ok[0]:
            deleted += 1
            assert not any(ok[1:])
        else:
            # Clean up so that the next round's host is the only one in syd.
            for r in results[1:3]:
                if isinstance(r, Machine):
                    await svc.machines.set_state("acme", r.id, MachineState.DESTROYED)
            if ok[3]:
                await svc.peers.delete("acme", f"peer{i}")
            await svc.hosts.delete(host)
        await assert_consistent(store)
    assert 0 < deleted < ROUNDS


async def test_concurrent_peers_cannot_share_a_public_key_on_one_gateway() -> None:
    store = YieldingStore(seed=5)
    svc = service(store)
    for org in ("acme", "globex"):
        await svc.orgs.create(org)
    await join(svc, "gw", gateway=True)
    doubled = 0
    for i in range(ROUNDS):
        key = wg_key()
        results = await gather(
            svc.peers.create("acme", f"p{i}", key), svc.peers.create("globex", f"p{i}", key)
        )
        doubled += all(outcome(results, (AlreadyExists,)))
    assert doubled == 0, f"{doubled} of {ROUNDS} keys were given to two peers on one gateway"


async def test_concurrent_peers_cannot_get_overlapping_routes_on_two_gateways() -> None:
    store = YieldingStore(seed=6)
    svc = service(store)
    for org in ("acme", "globex"):
        await svc.orgs.create(org)
    await join(svc, "gw", gateway=True)
    await join(svc, "gw2", region="ams", gateway=True)
    overlapping = 0
    for i in range(ROUNDS):
        results = await gather(
            svc.peers.create("acme", f"r{i}", wg_key(), routes=[f"2001:db8:{i:x}::/48"]),
            svc.peers.create(
                "globex", f"r{i}", wg_key(), region="ams", routes=[f"2001:db8:{i:x}::/56"]
            ),
        )
        overlapping += all(outcome(results, (Conflict,)))
    assert overlapping == 0, f"{overlapping} of {ROUNDS} route pairs overlap in the fleet"


# --- random sequences of calls --------------------------------------------------------------------

ORG_NAMES = st.sampled_from(["o1", "o2"])
NET_NAMES = st.sampled_from(["default", "n1", "n2"])
APP_NAMES = st.sampled_from(["a1", "a2", "a3"])
HOST_NAMES = st.sampled_from(["h1", "h2", "h3"])
REGIONS = st.sampled_from(["fra", "iad"])


class ServiceCalls(RuleBasedStateMachine):
    """Random sequences of use cases; after each, the whole store is checked."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        rnd = random.Random(0)
        # Fields drawn from 3 values only: collisions are the rule, not the exception.
        self.svc = service(rand_below=lambda n: rnd.randrange(min(n, 3)))
        self.store = self.svc.ctx.store
        assert isinstance(self.store, MemoryStore)
        self.net_ids: set[int] = set()
        self.host_ids: set[int] = set()
        self.live: dict[str, str] = {}  # machine id -> org

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)

    def attempt(self, coro: Awaitable[T], *allowed: type[BaseException]) -> T | None:
        try:
            return self.run(coro)
        except allowed:
            return None

    def new_net_id(self, net: Network) -> None:
        assert net.net_id > 0
        assert net.net_id not in self.net_ids, f"network ID {net.net_id} reused"
        self.net_ids.add(net.net_id)

    @rule(org=ORG_NAMES)
    def create_org(self, org: str) -> None:
        if self.attempt(self.svc.orgs.create(org), AlreadyExists) is not None:
            self.new_net_id(self.run(self.svc.orgs.get_network(org, "default")))

    @rule(org=ORG_NAMES)
    def delete_org(self, org: str) -> None:
        self.attempt(self.svc.orgs.delete(org), NotFound, Conflict)

    @rule(org=ORG_NAMES, name=NET_NAMES)
    def create_network(self, org: str, name: str) -> None:
        net = self.attempt(self.svc.orgs.create_network(org, name), NotFound, AlreadyExists)
        if net is not None:
            self.new_net_id(net)

    @rule(org=ORG_NAMES, name=NET_NAMES)
    def delete_network(self, org: str, name: str) -> None:
        self.attempt(self.svc.orgs.delete_network(org, name), NotFound, Conflict)

    @rule(org=ORG_NAMES, name=APP_NAMES, net=NET_NAMES)
    def create_app(self, org: str, name: str, net: str) -> None:
        self.attempt(self.svc.orgs.create_app(org, name, net), NotFound, AlreadyExists)

    @rule(org=ORG_NAMES, name=APP_NAMES)
    def delete_app(self, org: str, name: str) -> None:
        self.attempt(self.svc.orgs.delete_app(org, name), NotFound, Conflict)

    @rule(name=HOST_NAMES, region=REGIONS)
    def join_host(self, name: str, region: str) -> None:
        joined = self.attempt(join(self.svc, name, region), AlreadyExists)
        if joined is not None:
            assert joined.host_id > 0
            assert joined.host_id not in self.host_ids, f"host ID {joined.host_id} reused"
            self.host_ids.add(joined.host_id)

    @rule(name=HOST_NAMES)
    def delete_host(self, name: str) -> None:
        self.attempt(self.svc.hosts.delete(name), NotFound, Conflict)

    @rule(org=ORG_NAMES, app=APP_NAMES, host=HOST_NAMES)
    def create_machine(self, org: str, app: str, host: str) -> None:
        m = self.attempt(self.svc.machines.create(org, app, host=host), NotFound)
        if m is not None:
            self.live[m.id] = org

    @rule(org=ORG_NAMES, app=APP_NAMES, region=REGIONS)
    def place_machine(self, org: str, app: str, region: str) -> None:
        m = self.attempt(self.svc.machines.create(org, app, region=region), NotFound, InvalidInput)
        if m is not None:
            assert m.region == region
            self.live[m.id] = org

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data(), state=st.sampled_from(list(MachineState)))
    def set_state(self, data: st.DataObject, state: MachineState) -> None:
        machine_id = data.draw(st.sampled_from(sorted(self.live)))
        m = self.run(self.svc.machines.set_state(self.live[machine_id], machine_id, state))
        assert m.state == state
        if state == MachineState.DESTROYED:
            del self.live[machine_id]

    @invariant()
    def store_is_consistent(self) -> None:
        self.run(assert_consistent(self.store))

    @invariant()
    def live_machines_have_distinct_well_formed_addresses(self) -> None:
        e = self.run(entities(self.store))
        machines: list[Machine] = e["machine"]
        live = [m for m in machines if m.state != MachineState.DESTROYED]
        assert {m.id for m in live} == set(self.live)
        assert len({m.address for m in live}) == len(live)
        assert len({(m.net_id, m.host_id, m.field) for m in live}) == len(live)
        nets = {(n.org, n.name): n.net_id for n in e["network"]}
        hosts = {h.name: h.host_id for h in e["host"]}
        for m in live:
            d = addressing.decode(m.address)
            assert (d.net_id, d.host_id, d.field, d.low) == (m.net_id, m.host_id, m.field, 2)
            assert nets[m.org, m.network] == m.net_id
            assert hosts[m.host] == m.host_id
        assert len(set(nets.values())) == len(nets)
        assert set(nets.values()) <= self.net_ids
        assert len(set(hosts.values())) == len(hosts)
        assert set(hosts.values()) <= self.host_ids

    def teardown(self) -> None:
        self.loop.close()


ServiceCalls.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestServiceCalls = ServiceCalls.TestCase


async def test_a_store_from_before_the_gateway_index_is_indexed_once() -> None:
    """A store written before ``gwkey``/``peerroutes`` existed, or with routes indexed per
    gateway: the server indexes it at start, and the uniqueness rules then hold against the
    peers it already had."""
    store = MemoryStore()
    svc = service(store)
    await svc.orgs.create("acme")
    await join(svc, "gw", gateway=True)
    key = wg_key()
    await svc.peers.create("acme", "vpc", key, routes=["2001:db8:1::/48"])
    await svc.peers.create("acme", "laptop", wg_key())
    index_kvs, _ = await store.range("gw")  # gwkey/..., gwindex
    routes_kv, _ = await store.range("peerroutes")
    await store.txn([], [Delete(kv.key) for kv in [*index_kvs, *routes_kv]])  # before the index
    assert await gwindex.build(store, 0.0) == 2
    # an index of version 1 kept routes per gateway: rebuilt once, the old keys gone
    await store.txn([], [Put("gwindex", b"1"), Put("gwroutes/gw", b"[]"), Delete("peerroutes")])
    assert await gwindex.build(store, 0.0) == 2
    assert await store.get("gwroutes/gw") is None
    assert await gwindex.build(store, 0.0) == 0  # once
    with pytest.raises(AlreadyExists) as same_key:
        await svc.peers.create("acme", "again", key)
    assert "acme/vpc" in same_key.value.message
    with pytest.raises(Conflict) as overlap:
        await svc.peers.create("acme", "vpc2", wg_key(), routes=["2001:db8:1:2::/64"])
    assert "acme/vpc" in overlap.value.message
    # removing the peer frees its key and its routes
    await svc.peers.delete("acme", "vpc")
    await svc.peers.create("acme", "again", key, routes=["2001:db8:1::/48"])


class CountingStore(YieldingStore):
    """Counts the commits that lost their compare."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.lost = 0

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        result = await super().txn(compares, ops)
        self.lost += not result.succeeded
        return result


async def test_two_replicas_creating_at_once_share_no_id_and_never_reuse_one() -> None:
    """Network and host IDs come from per-replica blocks (control/ids.py): 200 organizations
    created at once through two replicas of one store get distinct IDs without the creates
    losing compares to each other; IDs deleted, or claimed by a replica that then restarted,
    are never handed out again."""
    store = CountingStore(seed=11)
    one, two = service(store), service(store)
    orgs = await gather(
        *(
            replica.orgs.create(f"o{i}-{n}")
            for i in range(100)
            for n, replica in enumerate((one, two))
        )
    )
    assert not [r for r in orgs if isinstance(r, BaseException)]
    hosts = await gather(*(join(replica, f"h{i}") for i, replica in enumerate((one, two) * 5)))
    nets = {(await one.orgs.get_network(o.name, "default")).net_id for o in orgs}
    assert len(nets) == 200
    assert len({h.host_id for h in hosts}) == 10
    assert store.lost <= 4, f"{store.lost} commits lost their compare"  # block claims at most
    # deleted, and a replica restarted (its unused block skipped): nothing comes back
    for org in orgs[:50]:
        await one.orgs.delete(org.name)
    restarted = service(store)
    again = [await restarted.orgs.create(f"again{i}") for i in range(100)]
    renewed = {(await restarted.orgs.get_network(o.name, "default")).net_id for o in again}
    assert not renewed & nets
    assert len(renewed) == 100

"""Concurrent API calls against a real `sixpn server` never produce duplicate IDs or addresses.

SPEC 2 (machine fields unique per (network, host) under concurrent calls; network and host IDs
never reused) and SPEC 10 ("concurrent creates never produce duplicate addresses or IDs"). Every
request here goes over real HTTP to a real server process on a real SQLite file; the oracle for
addresses is computed here from the integers, not with the product's addressing helpers.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
from collections import Counter
from collections.abc import Iterator
from ipaddress import IPv6Address, IPv6Network
from typing import Any

import httpx
import pytest

from sixpn.core import addressing
from tests.harness import ServerProcess

pytestmark = pytest.mark.component

ORGS = ("conc-a", "conc-b")
NETWORKS = ("default", "blue")
APP_OF_NETWORK = {"default": "web", "blue": "api"}
HOSTS = {"ch1": "fra", "ch2": "fra", "ch3": "iad"}  # name -> region
MACHINES = 200


def wg_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def net48(net_id: int) -> IPv6Network:
    return IPv6Network(((0xFDAA << 112) | (net_id << 80), 48))


def host80(net_id: int, host_id: int) -> IPv6Network:
    return IPv6Network(((0xFDAA << 112) | (net_id << 80) | (host_id << 48), 80))


def async_client(server: ServerProcess, token: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.url,
        headers={"Authorization": f"Bearer {token or server.admin_token}"},
        timeout=60,
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One server for the module: 2 orgs x 2 networks (one app each), 3 hosts in 2 regions."""
    server = ServerProcess(db=tmp_path_factory.mktemp("concurrency") / "server.db").start()
    try:
        net_ids: dict[tuple[str, str], int] = {}
        host_ids: dict[str, int] = {}
        with server.client() as admin:
            for org in ORGS:
                assert admin.post("/v1/orgs", json={"name": org}).status_code == 201
                assert (
                    admin.post(f"/v1/orgs/{org}/networks", json={"name": "blue"}).status_code == 201
                )
                for net in NETWORKS:
                    r = admin.get(f"/v1/orgs/{org}/networks/{net}")
                    assert r.status_code == 200, r.text
                    net_ids[org, net] = r.json()["net_id"]
                    r = admin.post(
                        f"/v1/orgs/{org}/apps", json={"name": APP_OF_NETWORK[net], "network": net}
                    )
                    assert r.status_code == 201, r.text
        with server.client(server.join_token) as joiner:
            for name, region in HOSTS.items():
                body = {
                    "name": name,
                    "region": region,
                    "endpoint": "192.0.2.1:51820",
                    "public_key": wg_key(),
                    "gateway": name == "ch1",
                }
                r = joiner.post("/v1/hosts", json=body)
                assert r.status_code == 201, r.text
                host_ids[name] = r.json()["host"]["host_id"]
        yield {"server": server, "net_ids": net_ids, "host_ids": host_ids}
    finally:
        server.kill()


async def test_200_concurrent_machine_creates_get_distinct_well_formed_addresses(
    fleet: dict[str, Any],
) -> None:
    server: ServerProcess = fleet["server"]
    net_ids: dict[tuple[str, str], int] = fleet["net_ids"]
    host_ids: dict[str, int] = fleet["host_ids"]

    # 2 orgs x 2 networks x 3 hosts, round robin; every 4th create is placed by region instead.
    combos = list(itertools.product(ORGS, NETWORKS, HOSTS))
    plan = []
    for i in range(MACHINES):
        org, net, host = combos[i % len(combos)]
        body: dict[str, Any] = {"app": APP_OF_NETWORK[net], "metadata": {"n": str(i)}}
        if i % 4 == 3:
            body["region"] = HOSTS[host]
        else:
            body["host"] = host
        plan.append((org, net, body))

    async with async_client(server) as client:
        responses = await asyncio.gather(
            *(client.post(f"/v1/orgs/{org}/machines", json=body) for org, _, body in plan)
        )

    assert [r.status_code for r in responses] == [201] * MACHINES, {
        r.status_code: r.text for r in responses if r.status_code != 201
    }
    machines = [r.json() for r in responses]
    ids = [m["id"] for m in machines]
    addresses = [IPv6Address(m["address"]) for m in machines]
    assert len(set(ids)) == MACHINES, Counter(ids).most_common(3)
    assert len(set(addresses)) == MACHINES, Counter(addresses).most_common(3)

    fields_seen: set[tuple[int, int, int]] = set()
    for (org, net, body), m, address in zip(plan, machines, addresses, strict=True):
        assert m["org"] == org
        assert m["app"] == body["app"]
        assert m["metadata"] == body["metadata"]
        assert m["network"] == net
        assert m["state"] == "started"
        if "host" in body:
            assert m["host"] == body["host"]
        assert HOSTS[m["host"]] == m["region"]
        net_id, host_id = net_ids[org, net], host_ids[m["host"]]
        assert m["net_id"] == net_id
        assert m["host_id"] == host_id

        decoded = addressing.decode(address)
        assert (decoded.net_id, decoded.host_id, decoded.field) == (net_id, host_id, m["field"])
        assert decoded.low == 2
        assert int(address) & 0xFFFF == 2
        assert address in net48(net_id)
        assert address in host80(net_id, host_id)
        # A machine field is never in the peer range (< 0x10000) and is unique per (net, host).
        assert m["field"] >= 0x1_0000
        assert (net_id, host_id, m["field"]) not in fields_seen
        fields_seen.add((net_id, host_id, m["field"]))

    # Placement by region used only hosts of that region, and both hosts of fra (~33 draws).
    placed = [m for (_, _, b), m in zip(plan, machines, strict=True) if "region" in b]
    assert {m["host"] for m in placed if m["region"] == "fra"} == {"ch1", "ch2"}
    assert {m["host"] for m in placed if m["region"] == "iad"} == {"ch3"}

    with server.client() as admin:
        listed: dict[str, dict[str, Any]] = {}
        for org in ORGS:
            r = admin.get(f"/v1/orgs/{org}/machines")
            assert r.status_code == 200, r.text
            for m in r.json():
                assert m["id"] not in listed
                listed[m["id"]] = m
    assert set(listed) == set(ids)
    for m in machines:
        assert listed[m["id"]]["address"] == m["address"]


async def test_50_concurrent_org_creates_get_50_distinct_network_ids(
    fleet: dict[str, Any],
) -> None:
    server: ServerProcess = fleet["server"]
    names = [f"many-{i}" for i in range(50)]
    async with async_client(server) as client:
        created = await asyncio.gather(*(client.post("/v1/orgs", json={"name": n}) for n in names))
        assert [r.status_code for r in created] == [201] * 50, {
            r.status_code: r.text for r in created if r.status_code != 201
        }
        nets = await asyncio.gather(*(client.get(f"/v1/orgs/{n}/networks/default") for n in names))
    assert [r.status_code for r in nets] == [200] * 50
    net_ids = [r.json()["net_id"] for r in nets]
    assert len(set(net_ids)) == 50
    assert 0 not in net_ids
    # None of them took an ID that an older network already had.
    assert not set(net_ids) & set(fleet["net_ids"].values())


async def test_concurrent_creates_of_one_app_name_give_one_201_and_409s(
    fleet: dict[str, Any],
) -> None:
    server: ServerProcess = fleet["server"]
    org = ORGS[0]
    async with async_client(server) as client:
        responses = await asyncio.gather(
            *(
                client.post(f"/v1/orgs/{org}/apps", json={"name": "racer", "network": net})
                for net in NETWORKS * 10
            )
        )
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 409: 19}, [r.text for r in responses if r.status_code != 409]
    for r in responses:
        if r.status_code == 409:
            assert r.json()["error"]["field"] == "name"
            assert "racer" in r.json()["error"]["message"]
    winner = next(r.json() for r in responses if r.status_code == 201)
    with server.client() as admin:
        apps = admin.get(f"/v1/orgs/{org}/apps").json()
    assert [a for a in apps if a["name"] == "racer"] == [winner]


async def test_concurrent_host_joins_get_distinct_nonzero_host_ids(
    fleet: dict[str, Any],
) -> None:
    server: ServerProcess = fleet["server"]
    body = {"region": "ams", "endpoint": "192.0.2.9:51820"}
    async with async_client(server, server.join_token) as client:
        responses = await asyncio.gather(
            *(
                client.post("/v1/hosts", json={**body, "name": f"join-{i}", "public_key": wg_key()})
                for i in range(20)
            )
        )
    assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses]
    host_ids = [r.json()["host"]["host_id"] for r in responses]
    assert len(set(host_ids)) == 20
    assert 0 not in host_ids
    assert not set(host_ids) & set(fleet["host_ids"].values())
    credentials = [r.json()["credential"] for r in responses]
    assert len(set(credentials)) == 20


async def test_concurrent_peer_creates_on_one_gateway_get_distinct_slots(
    fleet: dict[str, Any],
) -> None:
    server: ServerProcess = fleet["server"]
    org = ORGS[1]
    net_id, gw_id = fleet["net_ids"][org, "default"], fleet["host_ids"]["ch1"]
    async with async_client(server) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    f"/v1/orgs/{org}/peers",
                    json={"name": f"laptop-{i}", "public_key": wg_key(), "region": "fra"},
                )
                for i in range(30)
            )
        )
    assert [r.status_code for r in responses] == [201] * 30, [r.text for r in responses]
    peers = [r.json()["peer"] for r in responses]
    assert sorted(p["slot"] for p in peers) == list(range(30))
    addresses = {IPv6Address(p["address"]) for p in peers}
    assert len(addresses) == 30
    for p in peers:
        assert p["gateway"] == "ch1"
        assert IPv6Address(p["address"]) in host80(net_id, gw_id)


async def test_concurrent_peers_with_one_public_key_on_one_gateway_are_not_both_accepted(
    fleet: dict[str, Any],
) -> None:
    server: ServerProcess = fleet["server"]
    rounds = 30
    keys = [wg_key() for _ in range(rounds)]
    # Each key is sent at once from the 4 networks (2 orgs x 2 networks): the same network
    # serialises on its peer-slot counter, different networks do not.
    async with async_client(server) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    f"/v1/orgs/{org}/peers",
                    json={
                        "name": f"dupkey-{net}-{i}",
                        "public_key": keys[i],
                        "region": "fra",
                        "network": net,
                    },
                )
                for i in range(rounds)
                for org in ORGS
                for net in NETWORKS
            )
        )
    by_key = Counter(r.json()["peer"]["public_key"] for r in responses if r.status_code == 201)
    assert all(r.status_code in (201, 409) for r in responses), [r.text for r in responses]
    doubled = [k for k, n in by_key.items() if n > 1]
    assert doubled == [], f"{len(doubled)} of {rounds} keys were given to two peers on gateway ch1"

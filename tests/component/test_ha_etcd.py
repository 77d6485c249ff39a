"""High availability with real parts: `sixpn server` replicas (child processes) over one real
3-member etcd cluster, with members and replicas SIGKILLed by PID while clients keep working.

What an operator checks after such a day: every acknowledged create is in the store and nothing
else is; no network ID, host ID or machine address was handed out twice; writes carried on
through the failover; a change-stream follower saw every organization exactly once, in order;
and with the cluster's majority gone, the API says so (HTTP 503 naming the store) within a
bound instead of hanging, then recovers by itself once the members return.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from sixpn.client import ChangeBatch, Client, generate_keypair
from sixpn.client.feed import Snapshot
from sixpn.core.addressing import machine_address
from sixpn.model.entities import Org
from sixpn.model.errors import Gone, Unavailable
from sixpn.store.etcd_rpc import Connection
from tests.component.test_follow import Recorder, changes
from tests.etcdcluster import EtcdCluster, require_etcd
from tests.harness import ServerProcess

pytestmark = pytest.mark.component

BOUND = 12.0  # seconds: a request with no etcd majority is refused within this
RECOVERY = 20.0  # seconds: after the members return, writes succeed again within this
MAX_WRITE_GAP = 15.0  # seconds without any acknowledged write, at worst, during the failover


@pytest.fixture
def cluster() -> Iterator[EtcdCluster]:
    require_etcd()
    with EtcdCluster(3) as c:
        yield c


@pytest.fixture
def replicas(cluster: EtcdCluster, tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two replicas of one control plane (same etcd prefix and tokens), killed after the test."""
    prefix = f"/sixpn-ha-{uuid.uuid4().hex[:8]}/"
    a = ServerProcess(db=tmp_path / "replica-a.db", etcd=cluster.endpoints, etcd_prefix=prefix)
    b = ServerProcess(
        db=tmp_path / "replica-b.db",
        etcd=cluster.endpoints,
        etcd_prefix=prefix,
        admin_token=a.admin_token,
        join_token=a.join_token,
    )
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.kill()
        b.kill()


def org_events(batches: list[ChangeBatch]) -> list[tuple[int, str]]:
    """(revision, name) of every organization written, in the order the follower saw them."""
    return [
        (b.revision, e.entity.name)
        for b in changes(batches)
        for e in b.events
        if isinstance(e.entity, Org) and e.type == "put"
    ]


def distinct(values: list[object]) -> bool:
    return len(values) == len(set(values))


async def stop_recording(recorder: Recorder) -> None:
    if recorder.task.done():  # it ended by itself (Gone, or a failure the test has reported)
        recorder.task.exception()
    else:
        await recorder.stop()


async def test_concurrent_creates_on_two_replicas_never_collide(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = replicas
    token = a.admin_token
    workers, orgs_each = 6, 20
    # Each worker talks to one replica only: the two replicas allocate concurrently.
    clients = [Client((a, b)[w % 2].url, token) for w in range(workers)]
    joiners = [Client((a, b)[w % 2].url, a.join_token) for w in range(workers)]
    acked_hosts: dict[str, int] = {}
    acked_orgs: set[str] = {"shared"}
    acked_networks: set[tuple[str, str]] = {("shared", "default")}
    acked_apps: set[tuple[str, str]] = {("shared", "web")}
    acked_machines: dict[str, str] = {}  # id -> address, as acknowledged
    try:

        async def join(w: int) -> None:
            for i in range(2):
                name, key = f"h{w}-{i}", generate_keypair().public_key
                joined = await joiners[w].join_host(name, "fra", f"192.0.2.{10 * w + i}:51820", key)
                acked_hosts[name] = joined.host.host_id

        await asyncio.gather(*(join(w) for w in range(workers)))
        await clients[0].create_org("shared")
        await clients[1].create_app("shared", "web")
        shared_hosts = sorted(acked_hosts)[:3]  # every worker puts machines on these three

        async def work(w: int) -> None:
            c = clients[w]
            for i in range(orgs_each):
                org = f"o{w}-{i}"
                await c.create_org(org)
                acked_orgs.add(org)
                acked_networks.add((org, "default"))
                await c.create_network(org, "extra")
                acked_networks.add((org, "extra"))
                await c.create_app(org, "api", network="extra")
                acked_apps.add((org, "api"))
                for m in (
                    await c.create_machine(org, "api", host=f"h{w}-{i % 2}"),
                    await c.create_machine("shared", "web", host=shared_hosts[i % 3]),
                ):
                    acked_machines[m.id] = str(m.address)

        started = time.monotonic()
        await asyncio.gather(*(work(w) for w in range(workers)))
        took = time.monotonic() - started
        creates = workers * orgs_each * 5
        print(f"\n{creates} concurrent creates on 2 replicas: {took:.1f} s")
        seen_by_a, seen_by_b = await clients[0].snapshot(), await clients[1].snapshot()
    finally:
        for c in clients + joiners:
            await c.aclose()

    for snap in (seen_by_a, seen_by_b):  # both replicas see one and the same fabric
        assert {o.name for o in snap.orgs} == acked_orgs
        assert {(n.org, n.name) for n in snap.networks} == acked_networks
        assert {(p.org, p.name) for p in snap.apps} == acked_apps
        assert {h.name: h.host_id for h in snap.hosts} == acked_hosts
        assert {m.id: str(m.address) for m in snap.machines} == acked_machines
    snap = seen_by_b
    assert distinct([n.net_id for n in snap.networks])
    assert all(h.host_id != 0 for h in snap.hosts)
    assert distinct([h.host_id for h in snap.hosts])
    assert distinct([m.address for m in snap.machines])
    for m in snap.machines:  # the address is the machine's own fields, in its (network, host) /80
        assert m.address == machine_address(m.net_id, m.host_id, m.field)
    net_ids = {(n.org, n.name): n.net_id for n in snap.networks}
    hosts = {h.name: h.host_id for h in snap.hosts}
    assert all(m.net_id == net_ids[m.org, m.network] for m in snap.machines)
    assert all(m.host_id == hosts[m.host] for m in snap.machines)


async def test_writes_and_a_follower_carry_on_when_the_leader_and_a_replica_die(
    cluster: EtcdCluster, replicas: tuple[ServerProcess, ServerProcess]
) -> None:
    a, b = replicas
    both = f"{a.url},{b.url}"
    acked: dict[str, float] = {}  # name -> when it was acknowledged
    maybe: dict[str, str] = {}  # Unavailable (applied or not, nobody can say): its message
    stop = asyncio.Event()

    async def writer(w: int) -> None:
        async with Client(both, a.admin_token) as c:
            i = 0
            while not stop.is_set():
                name, i = f"w{w}-{i}", i + 1
                try:
                    await c.create_org(name)
                except Unavailable as exc:
                    maybe[name] = exc.message
                    await asyncio.sleep(0.05)  # the store is electing: don't spin
                    continue
                acked[name] = time.monotonic()

    follower = Client(both, a.admin_token)
    start = (await follower.snapshot()).revision
    recorder = Recorder(follower.follow(start, min_backoff=0.05, max_backoff=0.5))
    began = time.monotonic()
    writers = [asyncio.create_task(writer(w)) for w in range(4)]
    try:
        await asyncio.sleep(2.0)  # a steady stream of creates, then the faults in the middle of it
        leader = await cluster.leader()
        cluster.kill(leader)
        a.kill()
        killed = time.monotonic()
        await asyncio.sleep(5.0)
        cluster.restart(leader, wait=False)
        await cluster.wait_healthy_async(leader)
        restarted = time.monotonic()
        while not any(t > restarted for t in acked.values()):
            assert time.monotonic() - restarted < RECOVERY, "no write after the member returned"
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*writers), RECOVERY)
        ended = time.monotonic()

        async with Client(b.url, b.admin_token) as admin:
            listed = {o.name for o in await admin.list_orgs()}
            final: Snapshot = await admin.snapshot()
        await recorder.until(
            lambda batches: {n for _, n in org_events(batches)} >= listed,
            "every organization in the follower's stream",
        )
    finally:
        stop.set()
        for task in writers:
            task.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
        await stop_recording(recorder)
        await follower.aclose()

    times = sorted([began, *acked.values(), ended])
    gap = max(later - earlier for earlier, later in itertools.pairwise(times))
    after_kill = sum(t > killed for t in acked.values())
    print(
        f"\nfailover: {len(acked)} creates acknowledged ({after_kill} after the kills), "
        f"{len(maybe)} unknown ({len(maybe.keys() & listed)} of them applied); "
        f"longest time without an acknowledged write: {gap:.2f} s"
    )
    for message in sorted(set(maybe.values())):
        print(f"  unknown outcome: {message}")
    assert set(acked) <= listed, f"acknowledged but lost: {sorted(set(acked) - listed)}"
    unexpected = listed - set(acked) - set(maybe)
    assert not unexpected, f"in the store, never attempted: {sorted(unexpected)}"
    for message in maybe.values():  # the client, or the replica, says what could not be reached
        assert "control plane" in message or "etcd store" in message, message
    assert {o.name for o in final.orgs} == listed
    assert distinct([n.net_id for n in final.networks])
    assert after_kill > 0, "no create was acknowledged after the leader and replica A died"
    assert gap < MAX_WRITE_GAP
    seen = org_events(recorder.batches)
    names = [n for _, n in seen]
    assert distinct(names), "the follower saw an organization twice"
    assert set(names) == listed, "the follower's organizations differ from the store's"
    revisions = [b.revision for b in changes(recorder.batches)]
    assert revisions == sorted(set(revisions)), "the follower's changes are out of order"
    assert follower.url == b.url, "the follower should have moved to replica B"


async def test_without_a_majority_the_api_answers_503_then_recovers_by_itself(
    cluster: EtcdCluster, replicas: tuple[ServerProcess, ServerProcess]
) -> None:
    a, b = replicas
    headers = {"Authorization": f"Bearer {a.admin_token}"}
    follower = Client(f"{a.url},{b.url}", a.admin_token)
    async with Client(a.url, a.admin_token) as admin:
        await admin.create_org("before")
        start = (await follower.snapshot()).revision
    recorder = Recorder(follower.follow(start, min_backoff=0.05, max_backoff=0.5))
    try:
        cluster.kill(0)
        cluster.kill(1)
        async with httpx.AsyncClient(headers=headers, timeout=BOUND + 10) as http:

            async def timed(method: str, url: str) -> tuple[float, httpx.Response]:
                began = time.monotonic()
                body = {"name": "refused"} if method == "POST" else None
                answer = await http.request(method, url, json=body)
                return time.monotonic() - began, answer

            answers = await asyncio.gather(
                timed("POST", f"{a.url}/v1/orgs"),
                timed("GET", f"{b.url}/v1/orgs"),
                timed("GET", f"{b.url}/v1/orgs/before"),
            )
        for took, answer in answers:
            print(
                f"\nno majority: {answer.request.method} {answer.request.url.path}: "
                f"HTTP {answer.status_code} after {took:.2f} s: {answer.text}"
            )
            assert took < BOUND
            assert answer.status_code == 503
            error = answer.json()["error"]
            assert error["code"] == "unavailable"
            assert "etcd" in error["message"]
            assert a.etcd_prefix in error["message"]
            assert f"127.0.0.1:{cluster.members[2].client_port}" in error["message"]
        for replica in (a, b):
            assert replica.proc is not None
            assert replica.proc.poll() is None, f"replica {replica.url} exited"

        cluster.restart(0, wait=False)
        cluster.restart(1, wait=False)
        await cluster.wait_healthy_async(0, 1)
        returned = time.monotonic()
        async with httpx.AsyncClient(headers=headers, timeout=BOUND + 10) as http:
            while True:  # the same replica, never restarted
                answer = await http.post(f"{a.url}/v1/orgs", json={"name": "after"})
                if answer.status_code in (201, 409):  # 409: an earlier try's 503 was applied
                    break
                assert answer.status_code == 503, answer.text
                assert time.monotonic() - returned < RECOVERY, f"still refused: {answer.text}"
            recovered = time.monotonic() - returned
            listed = (await http.get(f"{b.url}/v1/orgs")).json()
        print(f"\nwrites accepted again {recovered:.2f} s after the members returned")
        assert {o["name"] for o in listed} == {"before", "after"}
        try:
            await recorder.until(
                lambda batches: "after" in {n for _, n in org_events(batches)},
                "the organization created after the recovery",
            )
            assert [n for _, n in org_events(recorder.batches)] == ["after"]
        except Gone:  # allowed: a follower told to start again does so from a snapshot
            async with Client(b.url, b.admin_token) as again:
                assert "after" in {o.name for o in (await again.snapshot()).orgs}
    finally:
        await stop_recording(recorder)
        await follower.aclose()


async def test_a_read_that_etcd_timed_out_moves_to_the_next_member() -> None:
    """etcd may answer a read whose attempt deadline passed itself (a member whose leader just
    died) with "context deadline exceeded" and a status other than DEADLINE_EXCEEDED, before the
    client's own timer fires: seen with no majority above. The read tries the next member, as
    after its own timeout; a write in that state may have been applied and is not sent again."""
    conn = Connection(
        ["127.0.0.1:1", "127.0.0.1:2"],
        name="etcd store '/t/'",
        timeout=5.0,
        ca_file=None,
        cert_file=None,
        key_file=None,
        user=None,
        password=None,
    )
    tried: list[str] = []

    def method(endpoint: Any) -> Any:
        async def call(request: object, *, timeout: float, metadata: object) -> object:
            tried.append(endpoint.target)
            if len(tried) % 2:
                meta = grpc.aio.Metadata()
                code, details = grpc.StatusCode.UNKNOWN, "context deadline exceeded"
                raise grpc.aio.AioRpcError(code, meta, meta, details=details)
            return "answered"

        return call

    try:
        assert await conn.call("reading", method, object(), retry_any=True) == "answered"
        assert tried == ["127.0.0.1:1", "127.0.0.1:2"]
        with pytest.raises(Unavailable, match="may or may not have been applied"):
            await conn.call("writing", method, object(), retry_any=False)
        assert len(tried) == 3
    finally:
        await conn.close()

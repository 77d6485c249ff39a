"""The etcd store beyond the contract: its layout in a shared cluster, compaction, big revisions,
and real faults in a real 3-member cluster (members killed by PID and restarted), TLS and users.

The contract itself (test_store_contract.py) runs against etcd too.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Awaitable, Iterator

import aetcd
import pytest

from sixpn.model.errors import Gone, InvalidInput, Unavailable
from sixpn.store.base import Compare, Delete, Event, EventType, Put
from sixpn.store.etcd import EtcdStore
from tests.etcdcluster import EtcdCluster

pytestmark = pytest.mark.component

DEADLINE = 20.0  # seconds for a cluster to recover; every wait ends as soon as its condition holds
BOUND = 10.0  # seconds: a store that cannot reach a majority says so within this


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster(1) as cluster:
        yield cluster


@pytest.fixture
def cluster3() -> Iterator[EtcdCluster]:
    """A fresh 3-member cluster (a test may kill and restart its members)."""
    with EtcdCluster(3) as cluster:
        yield cluster


@pytest.fixture
def fresh() -> Iterator[EtcdCluster]:
    """A fresh single member, for what depends on the cluster's revisions from the start."""
    with EtcdCluster(1) as cluster:
        yield cluster


def raw(cluster: EtcdCluster, i: int = 0) -> aetcd.Client:
    """A plain etcd client on member ``i``: another user of the cluster."""
    return aetcd.Client("127.0.0.1", cluster.members[i].client_port, timeout=5)


async def collect(store: EtcdStore, since: int, into: list[list[Event]]) -> None:
    async for batch in store.watch(since):
        into.append(batch)


async def test_layout_and_revisions_in_a_shared_cluster(fresh: EtcdCluster) -> None:
    store = await EtcdStore.open(fresh.endpoints)  # the default prefix, /sixpn/
    try:
        assert await store.revision() == 1  # an empty etcd is at revision 1, not 0
        assert await store.compacted_revision() == 0
        r2 = (await store.txn([], [Put("a/b", b"1")])).revision
        assert r2 == 2
        async with raw(fresh) as other:
            got = await other.get(b"/sixpn/a/b")  # <prefix><sixpn key>
            assert got is not None
            assert got.value == b"1"
            await other.put(b"/other/x", b"")  # someone else's write takes revision 3
            await other.put(b"/sixpn0", b"")  # a neighbour of the prefix, not in it
        r5 = (await store.txn([], [Delete("a/b")])).revision
        assert r5 == 5  # revisions jump over the others' writes
        assert await store.range("") == ([], 5)
        async with asyncio.timeout(5):
            batches = store.watch(0)
            events = await anext(batches)  # one batch may hold several (whole) revisions
            while len(events) < 2:
                events += await anext(batches)
            await batches.aclose()
        assert events == [
            Event(2, EventType.PUT, "a/b", b"1"),
            Event(5, EventType.DELETE, "a/b", b"1"),
        ]
    finally:
        await store.close()


async def test_watch_from_a_compacted_revision_is_gone(etcd: EtcdCluster) -> None:
    store = await EtcdStore.open(etcd.endpoints, prefix="/gone/")
    other = await EtcdStore.open(etcd.endpoints, prefix="/gone/")
    try:
        revs = [(await store.txn([], [Put(f"k{i}", b"")])).revision for i in range(4)]
        await store.compact(revs[2])
        # A second handle has seen no compaction: it finds the revision in etcd.
        assert await other.compacted_revision() == revs[2]
        for since in (0, revs[0], revs[2] - 1):  # revs[2] - 1: etcd would still start there
            with pytest.raises(Gone, match=f"revision {since} is compacted"):
                await anext(other.watch(since))
        batches = other.watch(revs[2])
        assert [e.revision for e in await anext(batches)] == [revs[3]]
        await batches.aclose()
    finally:
        await store.close()
        await other.close()


async def test_a_big_revision_arrives_in_one_batch(etcd: EtcdCluster) -> None:
    store = await EtcdStore.open(etcd.endpoints, prefix="/big/")
    try:
        base = await store.revision()
        live: list[list[Event]] = []
        follower = asyncio.create_task(collect(store, base, live))
        # 128 ops (etcd's default --max-txn-ops) of 8 KiB: 1 MiB in one revision.
        ops = [Put(f"k{i:03d}", bytes(8192)) for i in range(128)]
        big = (await store.txn([], ops)).revision
        small = (await store.txn([], [Put("after", b"")])).revision
        replayed: list[list[Event]] = []
        async with asyncio.timeout(5):
            batches = store.watch(base)
            while sum(map(len, replayed)) < 129:
                replayed.append(await anext(batches))
            await batches.aclose()
            while sum(map(len, live)) < 129:
                await asyncio.sleep(0.01)
        follower.cancel()
        for seen in (live, replayed):
            # Whole revisions in every batch, whether replayed from history or followed live.
            by_batch = [{e.revision for e in batch} for batch in seen]
            assert all(big not in revs or len(seen[i]) >= 128 for i, revs in enumerate(by_batch))
            assert [e.revision for batch in seen for e in batch] == [big] * 128 + [small]
        with pytest.raises(InvalidInput, match="too many operations"):
            await store.txn([], [*ops, Put("one-more", b"")])
    finally:
        await store.close()


async def test_one_member_killed_loses_no_acknowledged_write(
    cluster3: EtcdCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL the leader while the store writes to it and a watcher follows it: writes go on
    through the others, no acknowledged write is lost, and the watcher sees each one once."""
    leader = await cluster3.leader()
    order = [leader] + [i for i in range(3) if i != leader]  # the store talks to the leader
    store = await EtcdStore.open([cluster3.endpoints[i] for i in order], prefix="/ha/")
    acked: list[str] = []
    seen: list[list[Event]] = []
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="sixpn.store.etcd")

    async def writer() -> None:
        i = 0
        while not stop.is_set():
            key = f"k/{i:06d}"
            try:
                result = await store.txn([Compare.absent(key)], [Put(key, key.encode())])
            except Unavailable:
                continue  # unknown fate: the same CAS again tells
            if result.succeeded or await store.get(key) is not None:
                acked.append(key)
                i += 1

    async def until(n: int) -> None:
        async with asyncio.timeout(DEADLINE):
            while len(acked) < n:
                await asyncio.sleep(0.01)

    try:
        base = await store.revision()
        follower = asyncio.create_task(collect(store, base, seen))
        writing = asyncio.create_task(writer())
        await until(50)
        cluster3.kill(leader)
        killed_at, before = time.monotonic(), len(acked)
        await until(before + 1)
        resumed_after = time.monotonic() - killed_at
        await until(before + 100)
        stop.set()
        await writing
        found, at = await store.range("k/")
        assert [kv.key for kv in found] == acked  # every acknowledged write is there, in order
        async with asyncio.timeout(DEADLINE):
            while not seen or seen[-1][-1].revision < at:
                await asyncio.sleep(0.01)
        follower.cancel()
        events = [e for batch in seen for e in batch]
        assert [(e.key, e.revision) for e in events] == [(kv.key, kv.mod_revision) for kv in found]
        assert resumed_after < BOUND
        # The watcher was on the killed member: it went on from another one.
        killed_url = cluster3.endpoints[leader].removeprefix("http://")
        assert f"watch on {killed_url} broke" in caplog.text
        # The killed member comes back with its data and catches up.
        cluster3.restart(leader, wait=False)  # from this thread: it dies with the test process
        await cluster3.wait_healthy_async(leader)
        alone = await EtcdStore.open([cluster3.endpoints[leader]], prefix="/ha/")
        try:
            async with asyncio.timeout(DEADLINE):
                while (await alone.range("k/"))[0] != found:
                    await asyncio.sleep(0.05)
        finally:
            await alone.close()
    finally:
        stop.set()
        await store.close()


async def test_majority_lost_fails_within_a_bound_then_recovers(cluster3: EtcdCluster) -> None:
    store = await EtcdStore.open(cluster3.endpoints, prefix="/quorum/")
    try:
        base = (await store.txn([], [Put("before", b"")])).revision
        batches = store.watch(base)
        pending = asyncio.ensure_future(anext(batches))
        cluster3.kill(1)
        cluster3.kill(2)
        started = time.monotonic()

        async def timed(step: Awaitable[object]) -> tuple[BaseException | None, float]:
            try:
                await step
            except Exception as e:
                return e, time.monotonic() - started
            return None, time.monotonic() - started

        # A write, a read and the watcher cut off with them, all at once.
        write, read, watch = await asyncio.gather(
            timed(store.txn([Compare.absent("during")], [Put("during", b"")])),
            timed(store.range("")),
            timed(pending),
        )
        for error, took in (write, read):
            assert isinstance(error, Unavailable)
            assert took < BOUND
        # etcd cancels the watch after 3 election timeouts without a leader; then no member
        # takes it up again within the store's timeout.
        assert isinstance(watch[0], Unavailable)
        assert watch[1] < BOUND + 2
        message = str(write[0])
        for endpoint in cluster3.endpoints:  # the message names the store and its endpoints
            assert endpoint.removeprefix("http://") in message
        assert "'/quorum/'" in message
        await batches.aclose()

        cluster3.restart(1, wait=False)
        cluster3.restart(2, wait=False)
        await cluster3.wait_healthy_async()
        async with asyncio.timeout(DEADLINE):
            while True:
                try:
                    await store.txn([], [Put("after", b"")])
                    break
                except Unavailable:
                    await asyncio.sleep(0.1)
        batches = store.watch(base)
        async with asyncio.timeout(5):
            keys = [e.key for e in await anext(batches)]
            while keys[-1] != "after":
                keys += [e.key for e in await anext(batches)]
        await batches.aclose()
        assert keys in (["after"], ["during", "after"])  # "during" may have been applied
    finally:
        await store.close()


async def test_unreachable_endpoints_fail_within_the_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(Unavailable, match=r"127\.0\.0\.1:1,127\.0\.0\.1:2"):
        await EtcdStore.open(["127.0.0.1:1", "http://127.0.0.1:2"], request_timeout=1)
    assert time.monotonic() - started < 3


async def test_tls_with_client_certificates() -> None:
    with EtcdCluster(1, tls=True) as cluster:
        files = {"ca_file": cluster.ca_file}
        store = await EtcdStore.open(
            cluster.endpoints, cert_file=cluster.cert_file, key_file=cluster.key_file, **files
        )
        try:
            await store.txn([], [Put("a", b"1")])
            assert [kv.key for kv in (await store.range(""))[0]] == ["a"]
        finally:
            await store.close()
        # Without a client certificate the server refuses the TLS handshake.
        with pytest.raises(Unavailable):
            await EtcdStore.open(cluster.endpoints, request_timeout=1, **files)


async def test_user_and_password(fresh: EtcdCluster) -> None:
    if shutil.which("etcdctl") is None:
        pytest.skip("etcdctl is not installed (scripts/sysdeps.sh installs etcd-client)")
    url = fresh.endpoints[0]
    for args in (
        ["user", "add", "root", "--new-user-password=s3cret"],
        ["user", "grant-role", "root", "root"],
        ["auth", "enable"],
    ):
        ctl = await asyncio.create_subprocess_exec(
            "etcdctl", f"--endpoints={url}", *args, stdout=asyncio.subprocess.DEVNULL
        )
        assert await ctl.wait() == 0
    store = await EtcdStore.open([url], user="root", password="s3cret")
    try:
        await store.txn([], [Put("a", b"1")])
        assert (await store.get("a")) is not None
    finally:
        await store.close()
    with pytest.raises(Unavailable, match="check user, password"):
        await EtcdStore.open([url], user="root", password="wrong")
    with pytest.raises(Unavailable, match="check user, password"):
        await EtcdStore.open([url])

"""The Store contract, run against every backend: the in-memory fake, SQLite on a real file and
etcd (a real server, started once for the module; each test gets a fresh key prefix in it).

A backend is correct when it passes this suite unchanged; the fake is trusted by the service tests
because it passes it too. What every backend must do is asserted for all; where the backends may
differ (base.py says how: etcd's revisions start where the cluster is and may jump), a test checks
the exact numbers of memory and SQLite through :class:`Revs`. SQLite-only tests at the end prove
durability (reopen, SIGKILL); etcd-only ones are in test_store_etcd.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

import sixpn
from sixpn.model.errors import Gone, InvalidInput, Unavailable
from sixpn.store.base import KV, Compare, Delete, Event, EventType, Op, Put, Store, TxnResult
from sixpn.store.etcd import EtcdStore
from sixpn.store.memory import MemoryStore
from sixpn.store.sqlite import SqliteStore, prefix_end
from tests.etcdcluster import EtcdCluster

pytestmark = pytest.mark.component

DEADLINE = 5.0  # seconds; generous, since every wait here ends as soon as its condition holds

AnyStore = MemoryStore | SqliteStore | EtcdStore
OpenStore = Callable[..., Awaitable[AnyStore]]


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    """One etcd member for the module's etcd tests (skipped, with the reason, without etcd)."""
    with EtcdCluster(1) as cluster:
        yield cluster


@pytest.fixture(params=["memory", "sqlite", "etcd"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def open_store(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[OpenStore]:
    """A factory opening stores of the parametrised backend; each is closed after the test.
    Stores opened in one test share their data (one file, one etcd key prefix)."""
    opened: list[AnyStore] = []
    etcd = request.getfixturevalue("etcd") if backend == "etcd" else None
    prefix = f"/sixpn-test/{uuid.uuid4().hex}/"

    async def open_(**kwargs: int) -> AnyStore:
        store: AnyStore
        if backend == "memory":
            store = await MemoryStore.open(**kwargs)
        elif backend == "sqlite":
            store = await SqliteStore.open(tmp_path / "store.db", **kwargs)
        else:
            assert etcd is not None
            store = await EtcdStore.open(etcd.endpoints, prefix=prefix, **kwargs)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: OpenStore) -> AnyStore:
    return await open_store()


@dataclass(frozen=True)
class Revs:
    """What a test may assume of revision numbers on its backend.

    ``base``: the store's revision when the test began (0 for memory and SQLite, asserted; etcd's
    is the cluster's). ``dense``: every applied txn takes the next number (memory, SQLite); on
    etcd revisions only strictly increase, since other writers of the cluster take numbers too.
    """

    base: int
    dense: bool

    def check(self, revisions: Sequence[int]) -> None:
        """``revisions`` of successive applied txns: strictly increasing after ``base``, and
        exactly base+1, base+2, ... on dense backends."""
        assert all(a < b for a, b in zip([self.base, *revisions], revisions, strict=False))
        if self.dense:
            assert list(revisions) == list(range(self.base + 1, self.base + 1 + len(revisions)))


async def revs_of(backend: str, store: Store) -> Revs:
    if backend == "etcd":
        return Revs(await store.revision(), dense=False)
    return Revs(0, dense=True)


@pytest.fixture
async def revs(backend: str, store: AnyStore) -> Revs:
    return await revs_of(backend, store)


async def put(store: Store, key: str, value: bytes) -> TxnResult:
    return await store.txn([], [Put(key, value)])


async def rev(result: Awaitable[TxnResult]) -> int:
    """The revision of a txn that must succeed."""
    done = await result
    assert done.succeeded
    return done.revision


async def take(events: AsyncIterator[Event], n: int) -> list[Event]:
    async with asyncio.timeout(DEADLINE):
        return [await anext(events) for _ in range(n)]


@asynccontextmanager
async def watching(store: Store, since: int) -> AsyncIterator[AsyncIterator[Event]]:
    """``store.watch`` flattened to events, closed on exit so its pending read ends."""
    batches = store.watch(since)

    async def flat() -> AsyncGenerator[Event, None]:
        async for batch in batches:
            assert batch, "a watch batch is never empty"
            for event in batch:
                yield event

    events = flat()
    try:
        yield events
    finally:
        await events.aclose()
        await batches.aclose()


def ev(rev: int, key: str, value: bytes, type_: EventType = EventType.PUT) -> Event:
    return Event(rev, type_, key, value)


async def test_empty_store(store: Store, revs: Revs) -> None:
    assert isinstance(store, Store)
    assert await store.revision() == revs.base  # 0 for memory and SQLite
    assert 0 <= await store.compacted_revision() <= revs.base
    if revs.dense:
        assert await store.compacted_revision() == 0
    assert await store.get("a") is None
    assert await store.range("") == ([], revs.base)


async def test_put_then_get_tracks_revisions_and_version(store: Store, revs: Revs) -> None:
    r1 = await rev(put(store, "a", b"1"))
    assert await store.get("a") == KV("a", b"1", r1, r1, 1)
    r2 = await rev(put(store, "b", b"x"))
    r3 = await rev(put(store, "a", b"2"))
    assert await store.get("a") == KV("a", b"2", r1, r3, 2)
    r4 = await rev(store.txn([], [Delete("a")]))
    assert await store.get("a") is None
    r5 = await rev(put(store, "a", b"3"))  # recreated: a new life, as in etcd
    assert await store.get("a") == KV("a", b"3", r5, r5, 1)
    assert await store.revision() == r5
    revs.check([r1, r2, r3, r4, r5])


async def test_failing_compare_applies_nothing(store: Store, revs: Revs) -> None:
    r1 = await rev(put(store, "a", b"1"))
    result = await store.txn([Compare("a", r1), Compare("b", 7)], [Put("a", b"2"), Put("c", b"")])
    assert result == TxnResult(False, r1)
    assert await store.get("a") == KV("a", b"1", r1, r1, 1)
    assert await store.get("c") is None
    assert await store.revision() == r1
    # Holding comparisons and no op: success, but nothing to record under a new revision.
    assert await store.txn([Compare("a", r1)], []) == TxnResult(True, r1)
    revs.check([r1])


async def test_compare_absent_and_mod_revision(store: Store, revs: Revs) -> None:
    r1 = await rev(store.txn([Compare.absent("k")], [Put("k", b"1")]))
    assert not (await store.txn([Compare.absent("k")], [Put("k", b"2")])).succeeded
    assert not (await store.txn([Compare("k", r1 + 1)], [Put("k", b"2")])).succeeded
    r2 = await rev(store.txn([Compare("k", r1)], [Put("k", b"2")]))
    assert not (await store.txn([Compare("k", r1)], [Delete("k")])).succeeded  # stale
    r3 = await rev(store.txn([Compare("k", r2)], [Delete("k")]))
    r4 = await rev(store.txn([Compare.absent("k")], [Put("k", b"3")]))
    revs.check([r1, r2, r3, r4])


async def test_malformed_op_is_rejected_and_applies_nothing(store: Store, revs: Revs) -> None:
    bad: Op = Put("b", "not bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        await store.txn([], [Put("a", b"1"), bad])
    assert await store.range("") == ([], revs.base)


async def test_ops_in_one_txn_share_a_revision_in_op_order(store: Store, revs: Revs) -> None:
    r1 = await rev(put(store, "z", b"old"))
    ops: list[Op] = [Put("b", b"1"), Put("a", b"2"), Delete("z"), Delete("missing"), Put("c", b"3")]
    r2 = await rev(store.txn([], ops))
    revs.check([r1, r2])
    assert await store.get("b") == KV("b", b"1", r2, r2, 1)
    async with watching(store, r1) as events:
        assert await take(events, 4) == [
            ev(r2, "b", b"1"),
            ev(r2, "a", b"2"),
            ev(r2, "z", b"old", EventType.DELETE),  # a delete carries the previous value
            ev(r2, "c", b"3"),
        ]


async def test_a_key_twice_in_one_txn(store: Store, revs: Revs, backend: str) -> None:
    """Not portable (base.py): etcd refuses it; the embedded backends apply the ops in order."""
    await put(store, "z", b"old")
    ops: list[Op] = [Put("b", b"1"), Put("a", b"2"), Delete("z"), Delete("missing")]
    ops += [Put("z", b"new"), Put("b", b"3")]
    if backend == "etcd":
        with pytest.raises(InvalidInput, match="'z' appears twice"):
            await store.txn([], ops)
        assert [kv.key for kv in (await store.range(""))[0]] == ["z"]
        return
    assert await store.txn([], ops) == TxnResult(True, 2)
    assert await store.get("b") == KV("b", b"3", 2, 2, 2)
    assert await store.get("z") == KV("z", b"new", 2, 2, 1)
    async with watching(store, 1) as events:
        assert await take(events, 5) == [
            ev(2, "b", b"1"),
            ev(2, "a", b"2"),
            ev(2, "z", b"old", EventType.DELETE),
            ev(2, "z", b"new"),
            ev(2, "b", b"3"),
        ]


async def test_delete_of_absent_key_is_no_event(store: Store, revs: Revs) -> None:
    assert await store.txn([], [Delete("nothing")]) == TxnResult(True, revs.base)
    r1 = await rev(put(store, "a", b"1"))
    r2 = await rev(store.txn([], [Delete("a"), Delete("nothing")]))
    revs.check([r1, r2])
    async with watching(store, revs.base) as events:
        assert await take(events, 2) == [
            ev(r1, "a", b"1"),
            ev(r2, "a", b"1", EventType.DELETE),
        ]


async def test_range_by_prefix_is_sorted_and_excludes_neighbours(store: Store, revs: Revs) -> None:
    keys = ["a/2", "a", "a0", "a/", "a/1", "b", "a/10", "a/\U0010ffff", "a_x", "ab", "a%"]
    done = [await rev(put(store, k, k.encode())) for k in keys]
    revs.check(done)
    found, at = await store.range("a/")
    assert [kv.key for kv in found] == ["a/", "a/1", "a/10", "a/2", "a/\U0010ffff"]
    assert at == done[-1]
    assert found[1] == KV("a/1", b"a/1", done[4], done[4], 1)
    # Wildcards of LIKE are plain characters here.
    assert [kv.key for kv in (await store.range("a_"))[0]] == ["a_x"]
    assert [kv.key for kv in (await store.range("a%"))[0]] == ["a%"]
    assert [kv.key for kv in (await store.range(""))[0]] == sorted(keys)
    assert (await store.range("c"))[0] == []


async def test_ranges_read_several_prefixes_at_one_revision(store: Store, revs: Revs) -> None:
    keys = ["host/a", "hoststatus/a", "machine/o/x/1", "mid/1", "host/b", "machine/o/x/0"]
    done = [await rev(put(store, k, k.encode())) for k in keys]
    revs.check(done)
    found, at = await store.ranges(["machine/", "host/", "none/"])
    assert [[kv.key for kv in kvs] for kvs in found] == [
        ["machine/o/x/0", "machine/o/x/1"],
        ["host/a", "host/b"],
        [],
    ]
    assert at == done[-1]
    assert found[1][0] == KV("host/a", b"host/a", done[0], done[0], 1)
    # A write after the read is in the next read, at its revision.
    later = await rev(store.txn([], [Delete("host/a"), Put("machine/o/y/2", b"2")]))
    found, at = await store.ranges(["host/", "machine/"])
    assert ([kv.key for kv in found[0]], len(found[1]), at) == (["host/b"], 3, later)


def test_prefix_end() -> None:
    assert prefix_end("a/") == "a0"
    assert prefix_end("") is None
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\ud7ff") == "\ue000"


async def test_watch_from_the_start_replays_then_follows(store: Store, revs: Revs) -> None:
    r1 = await rev(put(store, "a", b"1"))
    r2 = await rev(store.txn([], [Put("b", b"2"), Put("c", b"3")]))
    async with watching(store, revs.base) as events:
        assert await take(events, 3) == [ev(r1, "a", b"1"), ev(r2, "b", b"2"), ev(r2, "c", b"3")]
        pending = asyncio.ensure_future(take(events, 2))
        r3 = await rev(put(store, "d", b"4"))
        r4 = await rev(store.txn([], [Delete("a")]))
        assert await pending == [ev(r3, "d", b"4"), ev(r4, "a", b"1", EventType.DELETE)]
    revs.check([r1, r2, r3, r4])


async def test_watch_from_a_revision_starts_after_it(store: Store, revs: Revs) -> None:
    done = [await rev(put(store, f"k{i}", b"")) for i in range(5)]
    async with watching(store, done[2]) as events:
        assert [e.revision for e in await take(events, 2)] == done[3:]
    async with watching(store, done[4]) as events:
        pending = asyncio.ensure_future(take(events, 1))
        r6 = await rev(put(store, "next", b""))
        assert await pending == [ev(r6, "next", b"")]
    revs.check([*done, r6])


async def test_two_concurrent_watchers_see_everything(store: Store, revs: Revs) -> None:
    async with watching(store, revs.base) as w1, watching(store, revs.base) as w2:
        both = asyncio.gather(take(w1, 50), take(w2, 50))
        done = [await rev(put(store, f"k{i}", str(i).encode())) for i in range(50)]
        seen1, seen2 = await both
    assert seen1 == seen2 == [ev(done[i], f"k{i}", str(i).encode()) for i in range(50)]
    revs.check(done)


async def test_concurrent_cas_creates_are_serialised(store: Store, revs: Revs) -> None:
    distinct = [store.txn([Compare.absent(f"d/{i}")], [Put(f"d/{i}", b"")]) for i in range(200)]
    racers = [
        store.txn([Compare.absent("race")], [Put("race", str(i).encode())]) for i in range(200)
    ]
    async with watching(store, revs.base) as events:
        results = await asyncio.gather(*distinct, *racers)
        assert all(r.succeeded for r in results[:200])
        winners = [i for i, r in enumerate(results[200:]) if r.succeeded]
        assert len(winners) == 1
        race = await store.get("race")
        assert race is not None
        assert race.value == str(winners[0]).encode()
        applied = sorted(r.revision for r in results if r.succeeded)
        assert len(applied) == 201
        revs.check(applied)  # one revision each, all distinct
        assert await store.revision() == applied[-1]
        seen = await take(events, 201)
        assert [e.revision for e in seen] == applied
        # Nothing more is pending: the next event is the next write.
        await put(store, "sentinel", b"")
        assert (await take(events, 1))[0].key == "sentinel"


async def test_compaction_and_gone(store: Store, revs: Revs) -> None:
    done = [await rev(put(store, f"k{i % 2}", str(i).encode())) for i in range(6)]
    revs.check(done)
    await store.compact(done[3])
    await store.compact(done[1])  # older than what is already compacted: nothing to do
    assert await store.compacted_revision() == done[3]
    assert await store.get("k0") == KV("k0", b"4", done[0], done[4], 3)  # current values are kept
    gone = rf"revision {done[2]} is compacted \(oldest kept: {done[3]}\)"
    with pytest.raises(Gone, match=gone):
        async with watching(store, done[2]) as events:
            await take(events, 1)
    async with watching(store, done[3]) as events:
        assert await take(events, 2) == [ev(done[4], "k0", b"4"), ev(done[5], "k1", b"5")]
    async with watching(store, done[4]) as events:
        assert await take(events, 1) == [ev(done[5], "k1", b"5")]
    with pytest.raises(InvalidInput):
        await store.compact(await store.revision() + 1)


async def test_automatic_compaction_keeps_the_last_revisions(
    open_store: OpenStore, backend: str
) -> None:
    store = await open_store(keep_revisions=10)
    base = (await revs_of(backend, store)).base
    # Concurrent so that SQLite commits them in groups and the test stays fast.
    await asyncio.gather(*(put(store, f"k{i}", b"") for i in range(1005)))
    # SQLite trims after acknowledging the group that crossed the mark; its writer runs one
    # thing at a time, so the trim is done once a later write is acknowledged.
    await put(store, "after", b"")
    assert await store.compacted_revision() >= base + 1000 - 10
    async with watching(store, await store.compacted_revision()) as events:
        assert (await take(events, 1))[0].revision > base + 990


async def test_close_ends_watchers_and_rejects_calls(store: Store, revs: Revs) -> None:
    async with watching(store, revs.base) as events:
        pending = asyncio.ensure_future(take(events, 1))
        await asyncio.sleep(0)  # let the watcher reach its wait; correctness does not depend on it
        await store.close()
        with pytest.raises(Unavailable):
            await pending
    with pytest.raises(Unavailable):
        await put(store, "a", b"")


# --- SQLite only -------------------------------------------------------------------------------


async def test_sqlite_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = await SqliteStore.open(path)
    await store.txn([], [Put("a", b"1"), Put("b", b"\x00\xff")])
    await store.txn([], [Delete("a")])
    await store.close()
    store = await SqliteStore.open(path)
    try:
        assert await store.revision() == 2
        assert await store.range("") == ([KV("b", b"\x00\xff", 1, 1, 1)], 2)
        async with watching(store, 0) as events:
            assert await take(events, 3) == [
                ev(1, "a", b"1"),
                ev(1, "b", b"\x00\xff"),
                ev(2, "a", b"1", EventType.DELETE),
            ]
    finally:
        await store.close()


async def test_sqlite_two_handles_on_one_file_share_revisions(tmp_path: Path) -> None:
    one = await SqliteStore.open(tmp_path / "store.db")
    two = await SqliteStore.open(tmp_path / "store.db")
    try:
        await asyncio.gather(*(put(s, f"{i}", b"") for i in range(20) for s in (one, two)))
        assert await one.revision() == await two.revision() == 40
        assert len((await two.range(""))[0]) == 20
    finally:
        await one.close()
        await two.close()


# Where sixpn is imported from, so the child finds it whether or not it is installed.
_SRC = str(Path(sixpn.__file__).resolve().parents[1])
_CHILD = """
import asyncio, sys
from sixpn.store.base import Compare, Put
from sixpn.store.sqlite import SqliteStore

async def main() -> None:
    store = await SqliteStore.open(sys.argv[1])
    for i in range(1_000_000):
        key = f"k/{i:07d}"
        result = await store.txn([Compare.absent(key)], [Put(key, key.encode())])
        assert result.succeeded
        print(key, flush=True)

asyncio.run(main())
"""


async def test_sqlite_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([_SRC, os.environ.get("PYTHONPATH", "")])}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, str(path), stdout=asyncio.subprocess.PIPE, env=env
    )
    assert child.stdout is not None
    acknowledged: list[str] = []
    try:
        async with asyncio.timeout(DEADLINE * 2):
            while len(acknowledged) < 50:
                line = await child.stdout.readline()
                assert line, f"child exited early with {await child.wait()}"
                acknowledged.append(line.decode().strip())
        os.kill(child.pid, signal.SIGKILL)  # mid-stream: it is writing continuously
        # Everything it printed before dying was acknowledged too.
        acknowledged += (await child.stdout.read()).decode().split()
        assert await child.wait() == -signal.SIGKILL
    finally:
        if child.returncode is None:
            os.kill(child.pid, signal.SIGKILL)
            await child.wait()
    store = await SqliteStore.open(path)
    try:
        found, rev = await store.range("k/")
        have = {kv.key for kv in found}
        assert [k for k in acknowledged if k not in have] == []
        assert rev >= len(acknowledged)
    finally:
        await store.close()

"""The Store contract, run against every backend: the in-memory fake and SQLite on a real file.

A backend is correct when it passes this suite unchanged; the fake is trusted by the service tests
because it passes it too. SQLite-only tests at the end prove durability (reopen, SIGKILL).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

import sixpn
from sixpn.model.errors import Gone, InvalidInput, Unavailable
from sixpn.store.base import KV, Compare, Delete, Event, EventType, Op, Put, Store, TxnResult
from sixpn.store.memory import MemoryStore
from sixpn.store.sqlite import SqliteStore, prefix_end

pytestmark = pytest.mark.component

DEADLINE = 5.0  # seconds; generous, since every wait here ends as soon as its condition holds

OpenStore = Callable[..., Awaitable[MemoryStore | SqliteStore]]


@pytest.fixture(params=["memory", "sqlite"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """A factory opening stores of the parametrised backend; each is closed after the test."""
    opened: list[MemoryStore | SqliteStore] = []

    async def open_(**kwargs: int) -> MemoryStore | SqliteStore:
        store: MemoryStore | SqliteStore
        if request.param == "memory":
            store = await MemoryStore.open(**kwargs)
        else:
            store = await SqliteStore.open(tmp_path / "store.db", **kwargs)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: OpenStore) -> MemoryStore | SqliteStore:
    return await open_store()


async def put(store: Store, key: str, value: bytes) -> TxnResult:
    return await store.txn([], [Put(key, value)])


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


async def test_empty_store_is_at_revision_zero(store: Store) -> None:
    assert isinstance(store, Store)
    assert await store.revision() == 0
    assert await store.compacted_revision() == 0
    assert await store.get("a") is None
    assert await store.range("") == ([], 0)


async def test_put_then_get_tracks_revisions_and_version(store: Store) -> None:
    assert await put(store, "a", b"1") == TxnResult(True, 1)
    assert await store.get("a") == KV("a", b"1", 1, 1, 1)
    assert await put(store, "b", b"x") == TxnResult(True, 2)
    assert await put(store, "a", b"2") == TxnResult(True, 3)
    assert await store.get("a") == KV("a", b"2", 1, 3, 2)
    await store.txn([], [Delete("a")])
    assert await store.get("a") is None
    await put(store, "a", b"3")  # recreated: a new life, as in etcd
    assert await store.get("a") == KV("a", b"3", 5, 5, 1)
    assert await store.revision() == 5


async def test_failing_compare_applies_nothing(store: Store) -> None:
    await put(store, "a", b"1")
    result = await store.txn([Compare("a", 1), Compare("b", 7)], [Put("a", b"2"), Put("c", b"")])
    assert result == TxnResult(False, 1)
    assert await store.get("a") == KV("a", b"1", 1, 1, 1)
    assert await store.get("c") is None
    assert await store.revision() == 1
    # Holding comparisons and no op: success, but nothing to record under a new revision.
    assert await store.txn([Compare("a", 1)], []) == TxnResult(True, 1)


async def test_compare_absent_and_mod_revision(store: Store) -> None:
    assert (await store.txn([Compare.absent("k")], [Put("k", b"1")])).succeeded
    assert not (await store.txn([Compare.absent("k")], [Put("k", b"2")])).succeeded
    assert not (await store.txn([Compare("k", 2)], [Put("k", b"2")])).succeeded
    assert await store.txn([Compare("k", 1)], [Put("k", b"2")]) == TxnResult(True, 2)
    assert not (await store.txn([Compare("k", 1)], [Delete("k")])).succeeded  # stale
    assert (await store.txn([Compare("k", 2)], [Delete("k")])).succeeded
    assert (await store.txn([Compare.absent("k")], [Put("k", b"3")])).succeeded


async def test_malformed_op_is_rejected_and_applies_nothing(store: Store) -> None:
    bad: Op = Put("b", "not bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        await store.txn([], [Put("a", b"1"), bad])
    assert await store.range("") == ([], 0)


async def test_ops_in_one_txn_share_a_revision_in_op_order(store: Store) -> None:
    await put(store, "z", b"old")
    ops: list[Op] = [Put("b", b"1"), Put("a", b"2"), Delete("z"), Delete("missing"), Put("b", b"3")]
    assert await store.txn([], ops) == TxnResult(True, 2)
    assert await store.get("b") == KV("b", b"3", 2, 2, 2)
    async with watching(store, 1) as events:
        assert await take(events, 4) == [
            ev(2, "b", b"1"),
            ev(2, "a", b"2"),
            ev(2, "z", b"old", EventType.DELETE),  # a delete carries the previous value
            ev(2, "b", b"3"),
        ]


async def test_delete_of_absent_key_is_no_event(store: Store) -> None:
    assert await store.txn([], [Delete("nothing")]) == TxnResult(True, 0)
    await put(store, "a", b"1")
    assert await store.txn([], [Delete("a")]) == TxnResult(True, 2)
    async with watching(store, 0) as events:
        assert await take(events, 2) == [
            ev(1, "a", b"1"),
            ev(2, "a", b"1", EventType.DELETE),
        ]


async def test_range_by_prefix_is_sorted_and_excludes_neighbours(store: Store) -> None:
    keys = ["a/2", "a", "a0", "a/", "a/1", "b", "a/10", "a/\U0010ffff", "a_x", "ab", "a%"]
    for k in keys:
        await put(store, k, k.encode())
    found, rev = await store.range("a/")
    assert [kv.key for kv in found] == ["a/", "a/1", "a/10", "a/2", "a/\U0010ffff"]
    assert rev == len(keys)
    assert found[1] == KV("a/1", b"a/1", 5, 5, 1)
    # Wildcards of LIKE are plain characters here.
    assert [kv.key for kv in (await store.range("a_"))[0]] == ["a_x"]
    assert [kv.key for kv in (await store.range("a%"))[0]] == ["a%"]
    assert [kv.key for kv in (await store.range(""))[0]] == sorted(keys)
    assert (await store.range("c"))[0] == []


def test_prefix_end() -> None:
    assert prefix_end("a/") == "a0"
    assert prefix_end("") is None
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\ud7ff") == "\ue000"


async def test_watch_from_zero_replays_then_follows(store: Store) -> None:
    await put(store, "a", b"1")
    await store.txn([], [Put("b", b"2"), Put("c", b"3")])
    async with watching(store, 0) as events:
        assert await take(events, 3) == [ev(1, "a", b"1"), ev(2, "b", b"2"), ev(2, "c", b"3")]
        pending = asyncio.ensure_future(take(events, 2))
        await put(store, "d", b"4")
        await store.txn([], [Delete("a")])
        assert await pending == [ev(3, "d", b"4"), ev(4, "a", b"1", EventType.DELETE)]


async def test_watch_from_a_revision_starts_after_it(store: Store) -> None:
    for i in range(5):
        await put(store, f"k{i}", b"")
    async with watching(store, 3) as events:
        assert [e.revision for e in await take(events, 2)] == [4, 5]
    async with watching(store, 5) as events:
        pending = asyncio.ensure_future(take(events, 1))
        await put(store, "next", b"")
        assert await pending == [ev(6, "next", b"")]


async def test_two_concurrent_watchers_see_everything(store: Store) -> None:
    async with watching(store, 0) as w1, watching(store, 0) as w2:
        both = asyncio.gather(take(w1, 50), take(w2, 50))
        for i in range(50):
            await put(store, f"k{i}", str(i).encode())
        seen1, seen2 = await both
    assert seen1 == seen2 == [ev(i + 1, f"k{i}", str(i).encode()) for i in range(50)]


async def test_concurrent_cas_creates_are_serialised(store: Store) -> None:
    distinct = [store.txn([Compare.absent(f"d/{i}")], [Put(f"d/{i}", b"")]) for i in range(200)]
    racers = [
        store.txn([Compare.absent("race")], [Put("race", str(i).encode())]) for i in range(200)
    ]
    async with watching(store, 0) as events:
        results = await asyncio.gather(*distinct, *racers)
        assert all(r.succeeded for r in results[:200])
        winners = [i for i, r in enumerate(results[200:]) if r.succeeded]
        assert len(winners) == 1
        race = await store.get("race")
        assert race is not None
        assert race.value == str(winners[0]).encode()
        n = await store.revision()
        assert n == 201
        assert sorted(r.revision for r in results if r.succeeded) == list(range(1, n + 1))
        seen = await take(events, n)
        assert [e.revision for e in seen] == list(range(1, n + 1))
        # Nothing more is pending: the next event is the next write.
        await put(store, "sentinel", b"")
        assert (await take(events, 1))[0].key == "sentinel"


async def test_compaction_and_gone(store: Store) -> None:
    for i in range(6):
        await put(store, f"k{i % 2}", str(i).encode())
    await store.compact(4)
    await store.compact(2)  # older than what is already compacted: nothing to do
    assert await store.compacted_revision() == 4
    assert await store.get("k0") == KV("k0", b"4", 1, 5, 3)  # current values are kept
    with pytest.raises(Gone, match=r"revision 3 is compacted \(oldest kept: 4\)"):
        async with watching(store, 3) as events:
            await take(events, 1)
    async with watching(store, 4) as events:
        assert await take(events, 2) == [ev(5, "k0", b"4"), ev(6, "k1", b"5")]
    async with watching(store, 5) as events:
        assert await take(events, 1) == [ev(6, "k1", b"5")]
    with pytest.raises(InvalidInput):
        await store.compact(7)


async def test_automatic_compaction_keeps_the_last_revisions(open_store: OpenStore) -> None:
    store = await open_store(keep_revisions=10)
    # Concurrent so that SQLite commits them in groups and the test stays fast.
    await asyncio.gather(*(put(store, f"k{i}", b"") for i in range(1005)))
    # SQLite trims after acknowledging the group that crossed the mark; its writer runs one
    # thing at a time, so the trim is done once a later write is acknowledged.
    await put(store, "after", b"")
    assert await store.compacted_revision() >= 1000 - 10
    async with watching(store, await store.compacted_revision()) as events:
        assert (await take(events, 1))[0].revision > 990


async def test_close_ends_watchers_and_rejects_calls(store: Store) -> None:
    async with watching(store, 0) as events:
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

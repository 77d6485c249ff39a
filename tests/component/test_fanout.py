"""The change stream shared by every follower (control/fanout.py), on the real stores: each
follower gets every revision after its own, exactly once, in order, the same bytes a direct
follow of the store gives; the store is read once per change whatever the number of
followers; a follower's credential deleted ends its stream; one too far behind is told so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sixpn.control import feed
from sixpn.control.fanout import Fanout
from sixpn.model.errors import Unavailable
from sixpn.store import Delete, Put, Store

pytestmark = pytest.mark.component

FOLLOWERS = 40


class CountingStore:
    """The real store, its watches counted (each is one store read per change)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.watches = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def watch(self, since: int):  # type: ignore[no-untyped-def]
        self.watches += 1
        return self.store.watch(since)


async def write(store: Store, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await store.txn([], [Put(f"machine/{i:04d}", b'{"id":"%d"}' % i)])
        if i % 7 == 3:
            await store.txn([], [Put(f"mid/{i}", b"x")])  # internal: a revision with no line


async def collect(stream: AsyncIterator[feed.FeedChange], until: int) -> list[feed.FeedChange]:
    got = []
    async with asyncio.timeout(20):
        async for change in stream:
            got.append(change)
            if change.revision >= until:
                break
    return got


async def drain(stream: AsyncIterator[feed.FeedChange]) -> None:
    async for _ in stream:
        pass


async def test_every_follower_gets_what_a_direct_follow_gets_from_one_read(store: Store) -> None:
    await write(store, 5)
    counted = CountingStore(store)
    fanout = Fanout(counted)  # type: ignore[arg-type]
    await fanout.start()
    head = await store.revision()
    behind = [0, 2] * (FOLLOWERS // 4)  # start before the shared tail: they catch up first
    starts = behind + [head] * (FOLLOWERS // 2)  # live: they wait for the writes
    try:
        tasks = [asyncio.create_task(collect(fanout.follow(s), head + 57)) for s in starts]
        await asyncio.sleep(0)  # every stream is started: the live ones wait for the writes
        await write(store, 50, start=5)  # 57 revisions: 50 machines, 7 internal keys
        assert await store.revision() == head + 57
        results = await asyncio.gather(*tasks)
        want = {s: await collect(feed.follow(store, s), head + 57) for s in set(starts)}
        for s, got in zip(starts, results, strict=True):
            assert [c.revision for c in got] == [c.revision for c in want[s]]
            assert got == want[s]  # the same lines, internal revisions included (line None)
        # one shared watch, plus one catch-up watch per follower that started behind it
        assert counted.watches <= 1 + len(behind)
    finally:
        await fanout.close()


async def test_streams_starting_together_share_one_watch(store: Store) -> None:
    counted = CountingStore(store)
    fanout = Fanout(counted)  # type: ignore[arg-type]  # not started: the streams start it
    head = await store.revision()
    try:
        tasks = [asyncio.create_task(collect(fanout.follow(head), head + 11)) for _ in range(10)]
        await asyncio.sleep(0)  # all ten are in start() at once
        await fanout.start()  # returns once the shared watch is there, before any write
        await write(store, 10)  # 11 revisions: 10 machines, 1 internal key
        want = await collect(feed.follow(store, head), head + 11)
        for got in await asyncio.gather(*tasks):
            assert got == want
        assert counted.watches == 1
    finally:
        await fanout.close()


async def test_a_deleted_credential_ends_the_stream(store: Store) -> None:
    await store.txn([], [Put("token/abc", b"{}")])
    fanout = Fanout(store)
    try:
        await fanout.start()
        since = await store.revision()
        stream = fanout.follow(since, end_when_deleted="token/abc")
        task = asyncio.create_task(collect(stream, 10**9))
        await asyncio.sleep(0)  # the stream is started (it reads the shared tail)
        await write(store, 3)
        await store.txn([], [Delete("token/abc")])
        await write(store, 3, start=3)
        got = await asyncio.wait_for(task, 10)
        assert len(got) == 3  # the three writes before the deletion, nothing after
    finally:
        await fanout.close()


async def test_a_follower_too_far_behind_is_told_to_reconnect(store: Store) -> None:
    fanout = Fanout(store, keep=8)
    try:
        stream = fanout.follow(await store.revision())
        await fanout.start()
        await write(store, 1)
        first = await anext(stream)  # it follows the tail ...
        await write(store, 30, start=1)  # ... then reads nothing while 30 revisions go by
        head = await store.revision()
        async with asyncio.timeout(5):  # until the shared watch has kept them all
            while fanout.newest() < head:
                await asyncio.sleep(0.01)
        with pytest.raises(Unavailable, match="fell behind"):
            await asyncio.wait_for(drain(stream), 5)
        assert first.line is not None
    finally:
        await fanout.close()


async def test_a_stream_takes_what_is_there_at_once_and_hears_when_nothing_comes(
    store: Store,
) -> None:
    """What the change stream writes (``batches``): every revision kept after the follower's
    own in one batch, the same bytes as a direct follow; an empty batch (the stream's
    heartbeat) after ``idle`` seconds without a change, and the stream goes on after it."""
    fanout = Fanout(store)
    try:
        await fanout.start()
        since = await store.revision()
        await write(store, 6)  # 7 revisions: 6 machines, 1 internal key
        head = await store.revision()
        async with asyncio.timeout(5):  # until the shared watch has kept them all
            while fanout.newest() < head:
                await asyncio.sleep(0.01)
        want = await collect(feed.follow(store, since), head)
        batches = fanout.batches(since, idle=0.05)
        async with asyncio.timeout(5):
            assert await anext(batches) == want
            assert await anext(batches) == []  # nothing new for 50 ms
            await write(store, 1, start=6)
            got: list[feed.FeedChange] = []
            while not got:  # (heartbeats until the shared watch has it, on a slow machine)
                got = await anext(batches)
            assert [c.revision for c in got] == [head + 1]
        await batches.aclose()
    finally:
        await fanout.close()

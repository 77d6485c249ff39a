"""`sixpn store copy`'s core on in-memory stores: a whole, verified copy into an empty store, and
nothing merged or mixed. Against SQLite and real etcd through the CLI: tests/component."""

from __future__ import annotations

import pytest

from sixpn.model.errors import Conflict, Gone
from sixpn.runtime.storecopy import BATCH_OPS, batches, checksum, copy_store
from sixpn.store.base import KV, Put
from sixpn.store.memory import MemoryStore

pytestmark = pytest.mark.unit


async def filled(n: int) -> MemoryStore:
    store = await MemoryStore.open()
    for i in range(0, n, 50):
        await store.txn(
            [], [Put(f"org/o{j:04d}", b"x" * (j % 7)) for j in range(i, min(n, i + 50))]
        )
    await store.txn([], [Put("counter/network", b"64")])
    return store


async def test_a_copy_holds_every_key_and_value_and_starts_a_new_history() -> None:
    source, target = await filled(250), await MemoryStore.open()
    report = await copy_store(source, target)
    kvs, _ = await source.range("")
    copied, _ = await target.range("")
    assert [(kv.key, kv.value) for kv in copied] == [(kv.key, kv.value) for kv in kvs]
    assert report.keys == 251
    assert report.by_kind == {"counter": 1, "org": 250}
    assert report.checksum == checksum(copied)
    assert report.source_revision == await source.revision()
    with pytest.raises(Gone):  # a follower positioned in the source's history starts anew
        await anext(target.watch(1))


async def test_only_into_an_empty_store() -> None:
    source, target = await filled(3), await MemoryStore.open()
    await target.txn([], [Put("org/someone", b"{}")])
    with pytest.raises(Conflict) as info:
        await copy_store(source, target)
    assert "not empty (1 keys" in info.value.message
    assert [kv.key for kv in (await target.range(""))[0]] == ["org/someone"]


async def test_a_source_written_during_the_copy_fails_it() -> None:
    class Moving(MemoryStore):
        async def range(self, prefix: str) -> tuple[list[KV], int]:
            found = await super().range(prefix)
            await self.txn([], [Put("org/late", b"{}")])  # a server still running
            return found

    source, target = await Moving.open(), await MemoryStore.open()
    await source.txn([], [Put("org/a", b"{}")])
    with pytest.raises(Conflict) as info:
        await copy_store(source, target)
    assert "changed during the copy" in info.value.message


def test_batches_respect_etcds_limits() -> None:
    kvs = [KV(f"k{i:05d}", b"v" * 10_000, 1, 1, 1) for i in range(300)]
    sizes = [len(b) for b in batches(kvs)]
    assert sum(sizes) == 300
    assert max(sizes) <= BATCH_OPS
    assert all(sum(len(kv.value) for kv in b) <= 512 * 1024 for b in batches(kvs))
    assert checksum(kvs) != checksum(kvs[:-1])

"""``sixpn store copy``: move an installation from one store to another (SQLite to etcd when one
server is no longer enough), and prove the copy whole.

Rules that hold:

- the target must be empty (nothing under its prefix): a copy never merges into, or overwrites,
  another installation;
- the source is read in one consistent read (``range``), and written into the target in
  transactions of at most :data:`BATCH_OPS` keys and :data:`BATCH_BYTES` bytes (etcd refuses
  larger ones by default), each compared "absent" on its keys, so a concurrent writer of the
  target makes the copy fail rather than mix;
- verified afterwards: the same keys on both sides and a SHA-256 over every key and value (the
  "checksum of every object"), with counts by kind; the source still at the revision it was read
  at (else a server wrote to it during the copy: stop them all and copy again);
- the target's history is then compacted at its current revision: revisions differ between the
  two stores, so a follower (agent, DNS server) positioned in the source's history gets Gone
  (410) and takes a fresh snapshot instead of resuming at a revision that means something else.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sixpn.control import keys
from sixpn.model.errors import Conflict, SixpnError
from sixpn.store import Store
from sixpn.store.base import KV, Compare, Put

BATCH_OPS = 100
BATCH_BYTES = 512 * 1024


@dataclass(frozen=True)
class CopyReport:
    keys: int
    source_revision: int
    target_revision: int
    checksum: str
    by_kind: dict[str, int] = field(default_factory=dict)


def checksum(kvs: Iterable[KV]) -> str:
    """SHA-256 over every (key, value) in key order, each length-prefixed (no two different
    stores give the same stream)."""
    digest = hashlib.sha256()
    for kv in sorted(kvs, key=lambda kv: kv.key):
        key = kv.key.encode()
        digest.update(len(key).to_bytes(4, "big") + key)
        digest.update(len(kv.value).to_bytes(8, "big") + kv.value)
    return digest.hexdigest()


def by_kind(kvs: Iterable[KV]) -> dict[str, int]:
    """How many keys of each kind (entities by kind, internal keys by their first segment)."""
    return dict(
        sorted(Counter(keys.kind_of(kv.key) or kv.key.split("/", 1)[0] for kv in kvs).items())
    )


def batches(kvs: list[KV]) -> Iterator[list[KV]]:
    batch: list[KV] = []
    size = 0
    for kv in kvs:
        weight = len(kv.key) + len(kv.value)
        if batch and (len(batch) >= BATCH_OPS or size + weight > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(kv)
        size += weight
    if batch:
        yield batch


async def copy_store(source: Store, target: Store) -> CopyReport:
    """Copy every key of ``source`` into the empty ``target``, verify, compact the target."""
    present, _ = await target.range("")
    if present:
        raise Conflict(
            f"the target store is not empty ({len(present)} keys under its prefix): "
            "copy only into an empty store (another prefix, or a new cluster)"
        )
    kvs, revision = await source.range("")
    for batch in batches(kvs):
        done = await target.txn(
            [Compare.absent(kv.key) for kv in batch], [Put(kv.key, kv.value) for kv in batch]
        )
        if not done.succeeded:
            raise Conflict(
                "another writer put keys into the target store during the copy: "
                "stop every server on it and copy into an empty store again"
            )
    copied, target_revision = await target.range("")
    want, got = checksum(kvs), checksum(copied)
    if want != got or len(copied) != len(kvs):
        missing = {kv.key for kv in kvs} - {kv.key for kv in copied}
        raise SixpnError(
            f"the copy does not match its source: {len(copied)} of {len(kvs)} keys, "
            f"checksum {got[:16]} against {want[:16]}"
            + (f"; missing e.g. {sorted(missing)[:3]}" if missing else "")
        )
    now = await source.revision()
    if now != revision:
        raise Conflict(
            f"the source store changed during the copy (revision {revision} -> {now}): "
            "stop every server on it, empty the target and copy again"
        )
    await target.compact(target_revision)
    return CopyReport(len(kvs), revision, target_revision, want, by_kind(kvs))

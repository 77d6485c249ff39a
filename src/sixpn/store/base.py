"""The Store protocol: etcd's data model, which SQLite can also give.

Theory of operation:

- The store is a map from string keys to byte values. Every key carries ``create_revision``,
  ``mod_revision`` and ``version`` as in etcd.
- A write is a transaction: a list of comparisons and a list of operations. If every comparison
  holds, every operation is applied atomically under one new revision, greater than every
  revision before it, and ``TxnResult.succeeded`` is true; otherwise nothing is applied and the
  revision is unchanged. A transaction whose comparisons hold but which changes nothing (no
  operation, or only deletes of absent keys) does not create a revision.
- Each applied operation becomes one :class:`Event` of that revision, in operation order. Deletes
  of absent keys produce no event. A delete event carries the previous value.
- ``watch(since)`` yields every event with revision > ``since`` exactly once, in (revision,
  operation) order, then follows new ones as they commit, forever. Events come in batches
  (lists) that always hold whole revisions, never part of one, so a consumer that has handled
  a batch may resume after its last revision. If ``since`` is older than
  the oldest revision the store still keeps, it raises :class:`~sixpn.model.errors.Gone`.
- ``range`` and ``ranges`` read a consistent view and say at which revision they read it;
  ``ranges`` reads several prefixes at one revision (the change feed's snapshot reads only the
  entity kinds, not the internal keys beside them).
- A failure to reach the store is :class:`~sixpn.model.errors.Unavailable`, raised within a
  bounded time, never a hang.

Revision numbers: what every backend guarantees is the above, revisions that strictly increase.
The embedded backends (memory, SQLite) say more: an empty store is at revision 0 and each applied
transaction takes the next number (1, 2, 3, ...). etcd's revisions are the cluster's own
(:mod:`sixpn.store.etcd`): an empty etcd is at revision 1, and writes by other users of the
cluster (other key prefixes) take numbers too, so sixpn's revisions may jump, and a watch
from a revision at which nothing happened under sixpn's prefix is still exact. So callers
compare revisions and resume from them, and never compute one (no ``revision + 1``). Compaction
is cluster-wide in etcd: on a compacted cluster, ``watch(0)`` is Gone even for a new prefix (start
from a snapshot's revision).

Portable callers also keep to what etcd allows: a transaction touches each key at most once
(etcd refuses a second operation on a key with InvalidInput; memory and SQLite apply both in
order), and a write that fails with Unavailable may have been applied (the connection to etcd
broke after sending it): the caller's compare-and-swap finds out on its next attempt. etcd also
bounds the size of a transaction (``--max-txn-ops``, 128 by default, and
``--max-request-bytes``): beyond, InvalidInput.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class KV:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int


@dataclass(frozen=True, slots=True)
class Compare:
    """Holds when ``key``'s mod_revision equals ``mod_revision``; 0 means "the key is absent"."""

    key: str
    mod_revision: int

    @classmethod
    def absent(cls, key: str) -> Compare:
        return cls(key, 0)


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


Op = Put | Delete


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int  # the new revision if applied, else the store's current revision


class EventType(enum.StrEnum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Event:
    revision: int
    type: EventType
    key: str
    value: bytes  # the new value for PUT, the previous value for DELETE


@runtime_checkable
class Store(Protocol):
    async def get(self, key: str) -> KV | None:
        """The key's current value, or None."""
        ...

    async def range(self, prefix: str) -> tuple[list[KV], int]:
        """Every key starting with ``prefix``, sorted by key, and the revision read at."""
        ...

    async def ranges(self, prefixes: Sequence[str]) -> tuple[list[list[KV]], int]:
        """``range`` of each prefix, all read at one revision, and that revision."""
        ...

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        """Apply ``ops`` atomically if every comparison holds (see the module docstring)."""
        ...

    async def revision(self) -> int:
        """The store's current revision."""
        ...

    async def compacted_revision(self) -> int:
        """Events with revision <= this are no longer kept; watching from below it is Gone."""
        ...

    def watch(self, since: int) -> AsyncGenerator[list[Event], None]:
        """Every event after ``since``, in order, in batches of whole revisions. Never ends."""
        ...

    async def compact(self, revision: int) -> None:
        """Forget events with revision <= ``revision`` (never the keys' current values)."""
        ...

    async def close(self) -> None: ...

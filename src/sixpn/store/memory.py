"""An in-memory Store: the verified fake that fast service tests run against.

It passes the same contract tests as the SQLite backend
(``tests/component/test_store_contract.py``), so a service test that passes here behaves the same
over a real store. The rule that holds: every mutation happens synchronously between two awaits,
so a transaction is atomic with respect to every other coroutine on the loop without any lock;
watchers are woken by one shared ``asyncio.Event`` that is replaced on each commit.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncGenerator, Sequence

from sixpn.model.errors import Gone, InvalidInput, Unavailable
from sixpn.store.base import KV, Compare, Delete, Event, EventType, Op, Put, TxnResult

# How many events a watcher takes per pass; it always completes the last revision it touches
# so that its cursor is a plain revision number.
_WATCH_BATCH = 1000
# Automatic compaction is checked every this many revisions, not on every commit.
_AUTO_COMPACT_EVERY = 1000


def gone_message(since: int, compacted: int) -> str:
    """The one wording of a compacted-watch error, shared by the backends."""
    return f"revision {since} is compacted (oldest kept: {compacted}); start again from a snapshot"


def check_ops(ops: Sequence[Op]) -> None:
    """Reject malformed ops before anything is applied (shared by the backends), so that a bad
    op never leaves a txn half-applied nor fails the txns committed in the same group."""
    for op in ops:
        if not isinstance(op, Put | Delete) or not isinstance(op.key, str):
            raise InvalidInput(f"store transaction: malformed operation {op!r}", field="ops")
        if isinstance(op, Put) and not isinstance(op.value, bytes):
            raise InvalidInput(f"store transaction: value of {op.key!r} is not bytes", field="ops")


class MemoryStore:
    """A :class:`~sixpn.store.base.Store` held in a dict and a list of events."""

    def __init__(self, *, keep_revisions: int = 1_000_000) -> None:
        self._kv: dict[str, KV] = {}
        self._events: list[Event] = []  # sorted by (revision, op order); oldest may be compacted
        self._revision = 0
        self._compacted = 0
        self._keep_revisions = keep_revisions
        self._next_auto_check = _AUTO_COMPACT_EVERY
        self._committed = asyncio.Event()
        self._closed = False

    @classmethod
    async def open(cls, *, keep_revisions: int = 1_000_000) -> MemoryStore:
        """Symmetric with :meth:`SqliteStore.open <sixpn.store.sqlite.SqliteStore.open>`."""
        return cls(keep_revisions=keep_revisions)

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("memory store: the store is closed")

    async def get(self, key: str) -> KV | None:
        self._check_open()
        return self._kv.get(key)

    async def range(self, prefix: str) -> tuple[list[KV], int]:
        self._check_open()
        found = sorted((kv for k, kv in self._kv.items() if k.startswith(prefix)), key=_by_key)
        return found, self._revision

    async def ranges(self, prefixes: Sequence[str]) -> tuple[list[list[KV]], int]:
        self._check_open()
        found: list[list[KV]] = [[] for _ in prefixes]
        for key, kv in self._kv.items():
            for i, prefix in enumerate(prefixes):
                if key.startswith(prefix):
                    found[i].append(kv)
        return [sorted(kvs, key=_by_key) for kvs in found], self._revision

    async def revision(self) -> int:
        self._check_open()
        return self._revision

    async def compacted_revision(self) -> int:
        self._check_open()
        return self._compacted

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        self._check_open()
        check_ops(ops)  # before touching anything, so that a bad op leaves nothing half-applied
        for c in compares:
            current = self._kv.get(c.key)
            if (current.mod_revision if current else 0) != c.mod_revision:
                return TxnResult(False, self._revision)
        rev = self._revision + 1
        events: list[Event] = []
        for op in ops:
            key, prev = op.key, self._kv.get(op.key)
            if isinstance(op, Put):
                value = op.value
                self._kv[key] = KV(
                    key,
                    value,
                    prev.create_revision if prev else rev,
                    rev,
                    prev.version + 1 if prev else 1,
                )
                events.append(Event(rev, EventType.PUT, key, value))
            elif prev is not None:
                del self._kv[key]
                events.append(Event(rev, EventType.DELETE, key, prev.value))
        if not events:
            # Only deletes of absent keys (or no op at all): nothing changed, so no revision.
            return TxnResult(True, self._revision)
        self._events.extend(events)
        self._revision = rev
        self._notify()
        if rev >= self._next_auto_check:
            self._next_auto_check = rev + _AUTO_COMPACT_EVERY
            if rev - self._compacted > self._keep_revisions:
                self._compact(rev - self._keep_revisions)
        return TxnResult(True, rev)

    async def compact(self, revision: int) -> None:
        self._check_open()
        if revision > self._revision:
            raise InvalidInput(
                f"compacting the store: revision {revision} is in the future "
                f"(current: {self._revision})",
                field="revision",
            )
        self._compact(revision)

    def _compact(self, revision: int) -> None:
        if revision <= self._compacted:
            return  # already forgotten; compacting is idempotent
        cut = bisect.bisect_right(self._events, revision, key=_by_revision)
        del self._events[:cut]
        self._compacted = revision

    async def watch(self, since: int) -> AsyncGenerator[list[Event], None]:
        cursor = max(since, 0)  # always a revision boundary: every event <= cursor was yielded
        while True:
            self._check_open()
            # Take the wake-up event before reading: a commit after this point sets it, and
            # every commit before it is already in self._events, so nothing is missed.
            woken = self._committed
            if cursor < self._compacted:
                raise Gone(gone_message(cursor, self._compacted))
            start = bisect.bisect_right(self._events, cursor, key=_by_revision)
            batch = self._events[start : start + _WATCH_BATCH]
            if len(batch) == _WATCH_BATCH:
                # Finish the last revision so the cursor stays on a revision boundary.
                end = bisect.bisect_right(self._events, batch[-1].revision, key=_by_revision)
                batch = self._events[start:end]
            if not batch:
                await woken.wait()
                continue
            yield batch
            cursor = batch[-1].revision

    async def close(self) -> None:
        self._closed = True
        self._notify()  # wake watchers so they see the store is closed

    def _notify(self) -> None:
        woken, self._committed = self._committed, asyncio.Event()
        woken.set()


def _by_key(kv: KV) -> str:
    return kv.key


def _by_revision(event: Event) -> int:
    return event.revision

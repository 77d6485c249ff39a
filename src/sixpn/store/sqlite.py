"""The SQLite Store: the default, embedded backend of the control plane.

Layout: ``kv`` holds the current value of every key, ``changes`` one row per event (the watch
history, trimmed by compaction), ``meta`` the current and the compacted revision; ``PRAGMA
user_version`` is the schema version, so later versions can migrate.

The rules that hold:

- An acknowledged write is durable: WAL mode with ``synchronous=FULL`` fsyncs the WAL before
  ``COMMIT`` returns, and a txn's future is resolved only after that.
- The event loop never waits on the disk. All writes run on one writer thread with its own
  connection; reads run on one reader thread with another (WAL lets them proceed during a write).
- Group commit: txns queued while the writer is busy are committed together in one SQLite
  transaction (one fsync); each is checked against the state left by the ones before it and gets
  its own revision and its own result.
- Watchers read ``changes`` from the database and sleep on one shared ``asyncio.Event`` that is
  replaced after every commit; they never miss or repeat an event because they take the event
  before reading. Only commits made through this process wake them.
- ``sqlite3`` errors become :class:`~sixpn.model.errors.Unavailable` in exactly one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import sys
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sixpn.model.errors import Gone, InvalidInput, Unavailable
from sixpn.store.base import KV, Compare, Event, EventType, Op, Put, TxnResult
from sixpn.store.memory import check_ops, gone_message

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE kv (
    key TEXT PRIMARY KEY, value BLOB NOT NULL,
    create_rev INT NOT NULL, mod_rev INT NOT NULL, version INT NOT NULL
) WITHOUT ROWID;
CREATE TABLE changes (
    rev INT NOT NULL, seq INT NOT NULL, type INT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (rev, seq)
);
CREATE TABLE meta (name TEXT PRIMARY KEY, value INT NOT NULL) WITHOUT ROWID;
INSERT INTO meta VALUES ('revision', 0), ('compacted', 0);
"""
_TYPE_CODE = {EventType.PUT: 0, EventType.DELETE: 1}
_CODE_TYPE = {code: t for t, code in _TYPE_CODE.items()}

_BUSY_TIMEOUT_S = 10.0  # another process holding the write lock: wait, then Unavailable
_MAX_GROUP = 512  # txns per group commit; bounds the latency of the first one in the group
_WATCH_BATCH = 1000  # events per watcher read
_AUTO_COMPACT_EVERY = 1000  # revisions between two automatic-compaction checks


@dataclass(slots=True)
class _Queued:
    compares: tuple[Compare, ...]
    ops: tuple[Op, ...]
    future: asyncio.Future[TxnResult]


class SqliteStore:
    """A :class:`~sixpn.store.base.Store` in one SQLite file. Create it with :meth:`open`."""

    def __init__(self, path: Path, keep_revisions: int) -> None:
        self._path = path
        self._keep_revisions = keep_revisions
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sixpn-sqlite-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="sixpn-sqlite-reader")
        self._wcon: sqlite3.Connection | None = None  # used only on the writer thread
        self._rcon: sqlite3.Connection | None = None  # used only on the reader thread
        self._queue: list[_Queued] = []
        self._flusher: asyncio.Task[None] | None = None
        self._committed = asyncio.Event()
        self._next_auto_check = _AUTO_COMPACT_EVERY
        self._closed = False

    @classmethod
    async def open(cls, path: str | Path, *, keep_revisions: int = 1_000_000) -> SqliteStore:
        """Open (creating if needed) the store in ``path``."""
        self = cls(Path(path), keep_revisions)
        try:
            await self._on(self._writer, "opening", self._open_writer)
            await self._on(self._reader, "opening", self._open_reader)
            rev = await self.revision()
        except BaseException:
            await self.close()
            raise
        self._next_auto_check = rev + _AUTO_COMPACT_EVERY
        return self

    async def _on(self, executor: ThreadPoolExecutor, doing: str, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn)
        except sqlite3.Error as e:
            raise Unavailable(f"sqlite store {self._path}: {doing}: {e}") from e

    def _check_open(self, doing: str) -> None:
        if self._closed:
            raise Unavailable(f"sqlite store {self._path}: {doing}: the store is closed")

    # --- connections (each function runs on its connection's thread) ---------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, the module must not.
        # timeout= is SQLite's busy_timeout: wait for another process's lock, then fail.
        return sqlite3.connect(self._path, isolation_level=None, timeout=_BUSY_TIMEOUT_S)

    def _open_writer(self) -> None:
        con = self._wcon = self._connect()
        mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise Unavailable(f"sqlite store {self._path}: cannot use WAL mode (got {mode!r})")
        # FULL: the WAL is fsynced at every commit, so an acknowledged write survives power loss.
        con.execute("PRAGMA synchronous = FULL")
        # Inside a write transaction: of two processes creating the file, one creates the schema.
        self._write(self._migrate)()

    def _migrate(self, con: sqlite3.Connection) -> None:
        version = int(con.execute("PRAGMA user_version").fetchone()[0])
        if version == 0:
            # Statement by statement: executescript() would COMMIT our transaction first.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version > SCHEMA_VERSION:
            raise Unavailable(
                f"sqlite store {self._path}: schema version {version} is newer than this "
                f"sixpn understands ({SCHEMA_VERSION}); upgrade sixpn"
            )

    def _open_reader(self) -> None:
        self._rcon = self._connect()
        self._rcon.execute("PRAGMA query_only = ON")

    def _close_writer(self) -> None:
        if self._wcon is not None:
            self._wcon.close()
            self._wcon = None

    def _close_reader(self) -> None:
        if self._rcon is not None:
            self._rcon.close()
            self._rcon = None

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> Callable[[], T]:
        """Wrap ``fn`` to run in one read transaction, so that all its SELECTs see one state."""

        def run() -> T:
            con = self._rcon
            assert con is not None, "reader used before open"
            con.execute("BEGIN")
            try:
                return fn(con)
            finally:
                _rollback(con)  # a read transaction has nothing to commit

        return run

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> Callable[[], T]:
        """Wrap ``fn`` to run in one write transaction on the writer connection."""

        def run() -> T:
            con = self._wcon
            assert con is not None, "writer used before open"
            # IMMEDIATE takes the write lock now, so what fn reads cannot change before it writes.
            con.execute("BEGIN IMMEDIATE")
            try:
                result = fn(con)
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise
            return result

        return run

    async def get(self, key: str) -> KV | None:
        def get(con: sqlite3.Connection) -> KV | None:
            row = con.execute(
                "SELECT key, value, create_rev, mod_rev, version FROM kv WHERE key = ?", (key,)
            ).fetchone()
            return _kv(row) if row else None

        self._check_open("reading")
        return await self._on(self._reader, f"reading key {key!r}", self._read(get))

    async def range(self, prefix: str) -> tuple[list[KV], int]:
        found, revision = await self.ranges([prefix])
        return found[0], revision

    async def ranges(self, prefixes: Sequence[str]) -> tuple[list[list[KV]], int]:
        def ranges_(con: sqlite3.Connection) -> tuple[list[list[KV]], int]:
            return [_range(con, p) for p in prefixes], _meta(con, "revision")

        self._check_open("reading")
        doing = f"reading prefix {prefixes[0]!r}" if len(prefixes) == 1 else "reading prefixes"
        return await self._on(self._reader, doing, self._read(ranges_))

    async def revision(self) -> int:
        self._check_open("reading")
        read = self._read(partial(_meta, name="revision"))
        return await self._on(self._reader, "reading the revision", read)

    async def compacted_revision(self) -> int:
        self._check_open("reading")
        read = self._read(partial(_meta, name="compacted"))
        return await self._on(self._reader, "reading the compacted revision", read)

    # --- writes: queued on the loop, committed in groups on the writer thread -------------------

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        self._check_open("writing")
        check_ops(ops)  # here, not in the writer thread where it would fail the whole group
        future: asyncio.Future[TxnResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(tuple(compares), tuple(ops), future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        """Commit queued txns in groups until the queue is empty; resolve each one's future."""
        try:
            while self._queue:
                group, self._queue = self._queue[:_MAX_GROUP], self._queue[_MAX_GROUP:]
                try:
                    commit = self._write(partial(_commit, group=group))
                    results = await self._on(self._writer, "committing a transaction", commit)
                except Exception as e:
                    for q in group:
                        if not q.future.done():
                            q.future.set_exception(e)
                    continue
                for q, result in zip(group, results, strict=True):
                    if not q.future.done():  # the caller may have been cancelled meanwhile
                        q.future.set_result(result)
                self._notify()
                await self._maybe_auto_compact(results[-1].revision)
        finally:
            self._flusher = None

    async def compact(self, revision: int) -> None:
        self._check_open("compacting")
        compact = self._write(partial(_compact, revision=revision, keep=None))
        await self._on(self._writer, f"compacting to revision {revision}", compact)

    async def _maybe_auto_compact(self, rev: int) -> None:
        if rev < self._next_auto_check:
            return
        self._next_auto_check = rev + _AUTO_COMPACT_EVERY
        keep = self._keep_revisions
        try:
            compact = self._write(partial(_compact, revision=0, keep=keep))
            await self._on(self._writer, "compacting", compact)
        except Unavailable as e:
            # The txns are committed and acknowledged; a failed trim is retried next time.
            log.warning("automatic compaction failed: %s", e)

    async def watch(self, since: int) -> AsyncGenerator[list[Event], None]:
        cursor = max(since, 0)  # always a revision boundary: every event <= cursor was yielded

        def changes_after(con: sqlite3.Connection) -> tuple[int, list[Any]]:
            compacted = _meta(con, "compacted")
            if cursor < compacted:
                return compacted, []
            rows = con.execute(
                "SELECT rev, seq, type, key, value FROM changes WHERE rev > ? "
                "ORDER BY rev, seq LIMIT ?",
                (cursor, _WATCH_BATCH),
            ).fetchall()
            if len(rows) == _WATCH_BATCH:  # finish the last revision to stay on a boundary
                rows += con.execute(
                    "SELECT rev, seq, type, key, value FROM changes WHERE rev = ? AND seq > ? "
                    "ORDER BY seq",
                    (rows[-1][0], rows[-1][1]),
                ).fetchall()
            return compacted, rows

        while True:
            # Take the wake-up event before reading: commits after this set it, and commits
            # before it are already visible to the read.
            woken = self._committed
            self._check_open("watching")
            compacted, rows = await self._on(
                self._reader, f"watching after revision {cursor}", self._read(changes_after)
            )
            if cursor < compacted:
                raise Gone(gone_message(cursor, compacted))
            if not rows:
                await woken.wait()
                continue
            yield [
                Event(rev, _CODE_TYPE[code], key, bytes(value))
                for rev, _s, code, key, value in rows
            ]
            cursor = rows[-1][0]

    def _notify(self) -> None:
        woken, self._committed = self._committed, asyncio.Event()
        woken.set()

    async def close(self) -> None:
        """Finish queued txns, close both connections and threads; watchers get Unavailable."""
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._flusher)
        self._notify()
        try:
            await self._on(self._writer, "closing", self._close_writer)
            await self._on(self._reader, "closing", self._close_reader)
        finally:
            self._writer.shutdown(wait=False)
            self._reader.shutdown(wait=False)


# --- helpers run on the connection threads -------------------------------------------------------


def _commit(con: sqlite3.Connection, group: list[_Queued]) -> list[TxnResult]:
    """Apply ``group`` in the current transaction, one revision per txn that changes something."""
    # Read the revision under the write lock: another process may share the file.
    start = rev = _meta(con, "revision")
    results: list[TxnResult] = []
    for q in group:
        if not all(_mod_rev(con, c.key) == c.mod_revision for c in q.compares):
            results.append(TxnResult(False, rev))
            continue
        rev += _apply(con, rev + 1, q.ops)  # a txn that changed nothing creates no revision
        results.append(TxnResult(True, rev))
    if rev != start:
        con.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (rev,))
    return results


def _compact(con: sqlite3.Connection, revision: int, keep: int | None) -> None:
    """Drop changes <= ``revision``, or all but the last ``keep`` revisions if it is given."""
    current, compacted = _meta(con, "revision"), _meta(con, "compacted")
    if keep is not None:
        revision = current - keep
    elif revision > current:
        raise InvalidInput(
            f"compacting the store: revision {revision} is in the future (current: {current})",
            field="revision",
        )
    if revision > compacted:  # compacting again below the mark is a no-op, as in the fake
        con.execute("DELETE FROM changes WHERE rev <= ?", (revision,))
        con.execute("UPDATE meta SET value = ? WHERE name = 'compacted'", (revision,))


def _apply(con: sqlite3.Connection, rev: int, ops: Sequence[Op]) -> int:
    """Apply ``ops`` as revision ``rev``; return 1 if anything changed, else 0."""
    seq = 0
    for op in ops:
        if isinstance(op, Put):
            value = op.value
            con.execute(
                "INSERT INTO kv VALUES (?, ?, ?, ?, 1) ON CONFLICT (key) DO UPDATE SET "
                "value = excluded.value, mod_rev = excluded.mod_rev, version = kv.version + 1",
                (op.key, value, rev, rev),
            )
            code = _TYPE_CODE[EventType.PUT]
        else:
            # fetchall, not fetchone: a half-stepped statement would keep the transaction busy.
            gone = con.execute("DELETE FROM kv WHERE key = ? RETURNING value", (op.key,)).fetchall()
            if not gone:
                continue  # deleting an absent key is not an event
            value, code = gone[0][0], _TYPE_CODE[EventType.DELETE]
        con.execute("INSERT INTO changes VALUES (?, ?, ?, ?, ?)", (rev, seq, code, op.key, value))
        seq += 1
    return 1 if seq else 0


def _mod_rev(con: sqlite3.Connection, key: str) -> int:
    row = con.execute("SELECT mod_rev FROM kv WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row else 0


def _meta(con: sqlite3.Connection, name: str) -> int:
    return int(con.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0])


def _range(con: sqlite3.Connection, prefix: str) -> list[KV]:
    # A range on the primary key, not LIKE: LIKE would scan and treat _ and % as wildcards.
    sql = "SELECT key, value, create_rev, mod_rev, version FROM kv WHERE key >= ?"
    end = prefix_end(prefix)
    args: tuple[str, ...] = (prefix,) if end is None else (prefix, end)
    if end is not None:
        sql += " AND key < ?"
    return [_kv(r) for r in con.execute(sql + " ORDER BY key", args)]


def _kv(row: Any) -> KV:
    key, value, create_rev, mod_rev, version = row
    return KV(key, bytes(value), create_rev, mod_rev, version)


def _rollback(con: sqlite3.Connection) -> None:
    if con.in_transaction:
        # The original error matters more than a failed rollback (which SQLite also does itself
        # when the connection closes).
        with contextlib.suppress(sqlite3.Error):
            con.execute("ROLLBACK")


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``; None if none.

    SQLite compares TEXT as UTF-8 bytes, whose order is code-point order, the same as Python's.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < sys.maxunicode:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:  # surrogates cannot be encoded; skip them
                nxt = 0xE000
            return "".join(chars) + chr(nxt)
    return None

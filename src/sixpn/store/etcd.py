"""The etcd Store: the high-availability backend, over an etcd v3 cluster.

Layout: the sixpn key ``k`` is the etcd key ``<prefix>k`` (UTF-8; ``/sixpn/`` by default), so
one cluster can hold other things too. Revisions are the cluster's own (base.py says what that
changes for callers). Calls, failover, deadlines and error translation live in
:mod:`sixpn.store.etcd_rpc`; this module maps the Store's semantics onto etcd's.

The rules that hold:

- A txn is one etcd Txn: its comparisons are on mod_revision (0 holds for an absent key, as in
  sixpn), its ops the success branch. etcd gives the new revision only when something changed,
  so a txn that changes nothing (no op, deletes of absent keys) creates no revision, as the
  contract says. etcd refuses a txn that touches a key twice: InvalidInput here, before sending.
- A watch asks etcd for the events from ``since`` itself and drops those of revision ``since``:
  etcd refuses a start below its compaction revision, which is then exactly sixpn's rule (Gone
  when ``since`` < compacted). etcd never splits a revision between watch responses (without
  ``fragment``: mvcc hands a watcher each revision's events in one batch), so each response is
  one batch. A broken stream is opened again on the next endpoint from the last revision
  yielded, within the store's deadline: nothing is skipped or repeated. (Not from etcd's
  progress notifications: etcd 3.4 has had bugs ordering them against events, etcd#15220.)
- etcd has no query for its compaction revision, but a read at revision ``r`` fails exactly when
  ``r`` < it: :meth:`EtcdStore.compacted_revision` searches for the smallest readable revision,
  from the last one found (it only moves up). Compaction is cluster-wide in etcd: on a shared
  cluster it trims every prefix's history.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sixpn.model.errors import Gone, InvalidInput, Unavailable
from sixpn.store.base import KV, Compare, Event, EventType, Op, Put, TxnResult
from sixpn.store.etcd_rpc import (
    EOF,
    Connection,
    KeyValue,
    RpcError,
    WatchEvent,
    WatchResponse,
    details,
    prefix_end,
    rpc,
)
from sixpn.store.memory import check_ops, gone_message

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 5.0
_AUTO_COMPACT_EVERY = 1000  # revisions between two automatic-compaction checks
_RETRY_PAUSE_S = 0.1  # between two attempts at opening a watch on every endpoint


class EtcdStore:
    """A :class:`~sixpn.store.base.Store` in an etcd v3 cluster. Create it with :meth:`open`."""

    def __init__(self, conn: Connection, prefix: str, keep_revisions: int | None) -> None:
        self._conn = conn
        self._root = prefix.encode()
        self._keep_revisions = keep_revisions
        self._compacted = 0  # the highest compaction revision seen; etcd's only moves up
        self._next_auto_check = _AUTO_COMPACT_EVERY
        self._closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(
        cls,
        endpoints: Sequence[str],
        *,
        prefix: str = "/sixpn/",
        request_timeout: float = DEFAULT_TIMEOUT_S,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        user: str | None = None,
        password: str | None = None,
        keep_revisions: int | None = 1_000_000,
    ) -> EtcdStore:
        """Connect to the cluster through ``endpoints`` (``host:port``, ``http://host:port`` or
        ``https://host:port``; TLS when the scheme is https or a CA or client certificate is
        given) and check that it answers. Every call fails with Unavailable after
        ``request_timeout`` seconds without an answer from a member with a leader.
        ``keep_revisions=None`` leaves compaction to etcd's ``--auto-compaction-*`` settings."""
        if not prefix:
            raise InvalidInput("etcd store: the key prefix is empty", field="prefix")
        conn = Connection(
            endpoints,
            name=f"etcd store {prefix!r}",
            timeout=request_timeout,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            user=user,
            password=password,
        )
        self = cls(conn, prefix, keep_revisions)
        try:
            await conn.authenticate()
            rev = await self.revision()
        except BaseException:
            await self.close()
            raise
        self._next_auto_check = rev + _AUTO_COMPACT_EVERY
        return self

    # --- reads -----------------------------------------------------------------------------------

    async def get(self, key: str) -> KV | None:
        request = rpc.RangeRequest(key=self._root + key.encode())
        # the kind of key, not the key: a token's key is its secret's hash, and this message
        # reaches HTTP answers and logs
        found = await self._conn.range(f"reading a {key.split('/', 1)[0]!r} key", request)
        return self._kv(found.kvs[0]) if found.kvs else None

    async def range(self, prefix: str) -> tuple[list[KV], int]:
        return await self._range(prefix, 0)

    async def ranges(self, prefixes: Sequence[str]) -> tuple[list[list[KV]], int]:
        # The first read says the revision, the others read at it (etcd's MVCC keeps it, unless
        # compacted meanwhile: then etcd says so, InvalidInput, and the read starts over).
        for _ in range(3):
            first, revision = await self._range(prefixes[0], 0)
            try:
                rest = [(await self._range(p, revision))[0] for p in prefixes[1:]]
            except InvalidInput:
                continue
            return [first, *rest], revision
        raise Unavailable(f"etcd store: reading {len(prefixes)} prefixes: compacted under the read")

    async def _range(self, prefix: str, revision: int) -> tuple[list[KV], int]:
        start = self._root + prefix.encode()
        request = rpc.RangeRequest(key=start, range_end=prefix_end(start), revision=revision)
        found = await self._conn.range(f"reading prefix {prefix!r}", request)
        # etcd sorts a range by key bytes; UTF-8 byte order is code-point order, as in Python.
        return [self._kv(kv) for kv in found.kvs], found.header.revision

    async def revision(self) -> int:
        request = rpc.RangeRequest(key=self._root, count_only=True)
        return (await self._conn.range("reading the revision", request)).header.revision

    async def compacted_revision(self) -> int:
        async def readable(rev: int) -> bool:
            request = rpc.RangeRequest(key=self._root, count_only=True, revision=rev)
            try:
                await self._conn.range("reading the compacted revision", request)
            except InvalidInput:  # "required revision has been compacted"
                return False
            return True

        bad, good = max(self._compacted, 1), await self.revision()
        if not await readable(bad):  # else nothing was compacted since the last time
            while good - bad > 1:  # invariant: bad is compacted away, good is readable
                mid = (bad + good) // 2
                bad, good = (bad, mid) if await readable(mid) else (mid, good)
            bad = good
        # Revision 1 of an etcd holds no event: compacting it forgets nothing.
        self._compacted = max(self._compacted, bad if bad > 1 else 0)
        return self._compacted

    # --- writes ----------------------------------------------------------------------------------

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        self._conn.check_open("writing")
        check_ops(ops)
        seen: set[str] = set()
        for op in ops:
            if op.key in seen:  # etcd rejects it ("duplicate key given in txn request")
                raise InvalidInput(
                    f"store transaction: key {op.key!r} appears twice (etcd allows one "
                    "operation per key in a transaction)",
                    field="ops",
                )
            seen.add(op.key)
        request = rpc.TxnRequest(
            compare=[
                rpc.Compare(
                    key=self._root + c.key.encode(),
                    target=rpc.Compare.MOD,
                    result=rpc.Compare.EQUAL,
                    mod_revision=c.mod_revision,  # 0 holds for an absent key, as in sixpn
                )
                for c in compares
            ],
            success=[self._request_op(op) for op in ops],
        )
        answer = await self._conn.txn("committing a transaction", request)
        # header.revision: the new revision if anything changed, else the current one (etcd
        # creates no revision for a txn that changes nothing, such as deleting an absent key).
        result = TxnResult(bool(answer.succeeded), answer.header.revision)
        if result.succeeded:
            await self._maybe_auto_compact(result.revision)
        return result

    def _request_op(self, op: Op) -> Any:
        key = self._root + op.key.encode()
        if isinstance(op, Put):
            return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=op.value))
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))

    async def compact(self, revision: int) -> None:
        if revision <= max(self._compacted, 1):
            self._conn.check_open("compacting")
            return  # already forgotten (revision 1 of an etcd holds no event)
        doing = f"compacting to revision {revision}"
        try:
            request = rpc.CompactionRequest(revision=revision)
            await self._conn.compact(doing, request)
        except InvalidInput as e:
            if "future revision" in e.message:
                current = await self.revision()
                raise InvalidInput(
                    f"compacting the store: revision {revision} is in the future "
                    f"(current: {current})",
                    field="revision",
                ) from e
            if "compacted" not in e.message:
                raise
            # Already compacted at or past it (by another replica, or an earlier try).
        self._compacted = max(self._compacted, revision)

    async def _maybe_auto_compact(self, rev: int) -> None:
        if self._keep_revisions is None or rev < self._next_auto_check:
            return
        self._next_auto_check = rev + _AUTO_COMPACT_EVERY
        try:
            await self.compact(rev - self._keep_revisions)
        except (Unavailable, InvalidInput) as e:
            # The txn is committed and acknowledged; a failed trim is retried next time.
            log.warning("automatic compaction failed: %s", e)

    # --- watch -----------------------------------------------------------------------------------

    async def watch(self, since: int) -> AsyncGenerator[list[Event], None]:
        conn = self._conn
        cursor = max(since, 0)  # every event <= cursor was yielded
        failures, broken_at = 0, time.monotonic()
        while True:
            conn.check_open("watching")
            index, target, call = conn.open_watch()
            create = rpc.WatchCreateRequest(
                key=self._root,
                range_end=prefix_end(self._root),
                start_revision=max(cursor, 1),  # 0 would mean "from now on"
                prev_kv=True,  # a delete carries the previous value
            )
            try:
                async with asyncio.timeout(max(broken_at + conn.timeout - time.monotonic(), 0)):
                    await self._io(call.write(rpc.WatchRequest(create_request=create)))
                    answer: Any = await self._io(call.read())
                started = False  # the first events of a stream may repeat revision ``cursor``
                while answer is not EOF:
                    response: WatchResponse = answer
                    if response.compact_revision:
                        self._compacted = max(self._compacted, response.compact_revision)
                        raise Gone(gone_message(cursor, response.compact_revision))
                    if response.canceled:
                        reason = response.cancel_reason or "the watch was cancelled"
                        break
                    failures, broken_at = 0, float("inf")  # a live stream: no deadline
                    batch = [self._event(e) for e in response.events if e.kv.mod_revision > cursor]
                    if started and len(batch) < len(response.events):
                        # A revision split between two responses: exactly once is lost.
                        raise Gone(f"{conn.name}: watch: etcd split revision {cursor}; resync")
                    started = started or bool(response.events)
                    if batch:
                        yield batch
                        cursor = batch[-1].revision
                    answer = await self._io(call.read())
                else:
                    reason = "the stream ended"
            except TimeoutError:
                reason = "no answer"
            except RpcError as e:
                reason = details(e)
            finally:
                call.cancel()
            conn.check_open("watching")
            broken_at = min(broken_at, time.monotonic())
            if time.monotonic() - broken_at >= conn.timeout:
                raise Unavailable(
                    f"{conn.name}: watching after revision {cursor}: no member with a leader "
                    f"answered within {conn.timeout:g} s (last: {reason})"
                )
            log.info("%s: watch on %s broke (%s); resuming", conn.name, target, reason)
            conn.failed(index)
            if conn.authenticated and ("auth" in reason or "permission" in reason):
                await conn.authenticate()  # the token expired (etcd's --auth-token-ttl)
            failures += 1
            if failures % conn.size == 0:
                await asyncio.sleep(_RETRY_PAUSE_S)

    async def _io(self, step: Awaitable[T]) -> T:
        """``step``, or Unavailable as soon as the store is closed (cancelling a gRPC stream does
        not end a read or write that waits for the stream to start)."""
        task = asyncio.ensure_future(step)
        await asyncio.wait((task, self._closing), return_when=asyncio.FIRST_COMPLETED)
        if self._closing.done():
            task.cancel()
            raise Unavailable(f"{self._conn.name}: watching: the store is closed")
        return task.result()

    async def close(self) -> None:
        """Close the connections; calls and watchers in flight get Unavailable."""
        if self._closing.done():
            return
        self._closing.set_result(None)
        await self._conn.close()

    # --- conversions -----------------------------------------------------------------------------

    def _key(self, raw: bytes) -> str:
        return raw[len(self._root) :].decode()

    def _kv(self, kv: KeyValue) -> KV:
        return KV(self._key(kv.key), kv.value, kv.create_revision, kv.mod_revision, kv.version)

    def _event(self, e: WatchEvent) -> Event:
        if e.type == rpc.Event.DELETE:
            return Event(e.kv.mod_revision, EventType.DELETE, self._key(e.kv.key), e.prev_kv.value)
        return Event(e.kv.mod_revision, EventType.PUT, self._key(e.kv.key), e.kv.value)

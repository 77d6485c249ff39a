"""One read of the store per change, whatever the number of followers.

Every agent and DNS server follows the change stream (``GET /v1/watch``). Following the store
once per stream made each change cost one store read (a SQLite query through a worker thread,
or an etcd watch) and one encoding *per follower*: with 1,000 hosts, a thousand reads for one
machine created. :class:`Fanout` follows the store once, encodes each revision once, keeps the
last :data:`KEEP` revisions in memory and wakes every stream on each new one.

A stream that starts further back than what is kept catches up from the store on its own
(``feed.follow``, exactly as before), then joins the shared tail. If the shared watch fails
(the store unreachable), it starts again from the last revision it kept, so what is kept stays
gapless, and the streams wait meanwhile (their heartbeats go on). Compacted past (it cannot
keep up: it never should), it starts afresh at the store's revision, and the streams it left
behind end: their clients reconnect and, told their revision is compacted, load a snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from sixpn.control import feed
from sixpn.model.errors import Gone, SixpnError, Unavailable
from sixpn.store import EventType, Store

log = logging.getLogger("sixpn.control.fanout")

KEEP = 4096  # revisions kept in memory; a follower further behind reads the store itself
RETRY_S = 0.5


@dataclass(frozen=True, slots=True)
class Entry:
    change: feed.FeedChange
    deleted: frozenset[str]  # keys deleted at this revision (a follower's credential ends it)


class Fanout:
    def __init__(self, store: Store, keep: int = KEEP) -> None:
        self.store = store
        self._kept: deque[Entry] = deque(maxlen=keep)
        self._floor = -1  # every revision after it is kept (or not yet made); -1: not started
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()

    async def start(self) -> None:
        """Start following the store (once, however many streams ask at the same time)."""
        if self._task is None:
            self._task = asyncio.create_task(self._follow(), name="fanout")
        await self._started.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
            self._started = asyncio.Event()

    async def follow(
        self, since: int, *, end_when_deleted: str | None = None
    ) -> AsyncGenerator[feed.FeedChange, None]:
        """Every revision after ``since``, in order, each exactly once (``feed.follow``'s
        contract), from memory once ``since`` is within what is kept."""
        batches = self.batches(since, end_when_deleted=end_when_deleted)
        try:
            async for batch in batches:
                for change in batch:
                    yield change
        finally:
            await batches.aclose()

    async def batches(
        self, since: int, *, end_when_deleted: str | None = None, idle: float | None = None
    ) -> AsyncGenerator[list[feed.FeedChange], None]:
        """:meth:`follow`'s revisions, as many at a time as are there when the stream asks
        (the change stream writes each batch to its follower at once: one write per follower
        per wake-up, not per revision); with ``idle``, an empty batch after that many seconds
        with nothing new (the stream's heartbeat). The wait for a change is timed here, by the
        waiting generator itself, so a stream needs no task of its own per change."""
        await self.start()
        cursor = since
        if cursor < self._floor:
            direct = feed.follow(self.store, cursor, end_when_deleted=end_when_deleted)
            try:
                async for change in direct:
                    yield [change]
                    cursor = change.revision
                    if cursor >= self._floor:
                        break
                else:
                    return  # the credential was revoked
            finally:
                await direct.aclose()
        while True:
            woken = self._woken
            if cursor < self._floor:
                raise Unavailable(
                    f"change stream: the follower at revision {cursor} fell behind the "
                    f"{len(self._kept)} revisions kept in memory; reconnect"
                )
            batch: list[feed.FeedChange] = []
            revoked = False
            for entry in self._after(cursor):
                if end_when_deleted is not None and end_when_deleted in entry.deleted:
                    revoked = True
                    break
                batch.append(entry.change)
            if batch:
                yield batch
                cursor = batch[-1].revision
            if revoked:
                return
            if cursor >= self.newest():
                if idle is None:
                    await woken.wait()
                    continue
                try:
                    async with asyncio.timeout(idle):
                        await woken.wait()
                except TimeoutError:
                    yield []

    def newest(self) -> int:
        """The last revision kept (what every stream reading the shared tail can have)."""
        return self._kept[-1].change.revision if self._kept else self._floor

    def _after(self, cursor: int) -> list[Entry]:
        """The kept entries after ``cursor`` (a copy: the deque moves while they are sent)."""
        kept = self._kept
        if not kept or kept[-1].change.revision <= cursor:
            return []
        # entries are in revision order: count back from the newest
        i = len(kept)
        while i > 0 and kept[i - 1].change.revision > cursor:
            i -= 1
        return [kept[j] for j in range(i, len(kept))]

    async def _follow(self) -> None:
        self._floor = await self._revision()
        self._started.set()
        while True:
            batches = self.store.watch(self.newest())
            try:
                async for batch in batches:
                    for revision, events in feed.by_revision(batch):
                        deleted = frozenset(e.key for e in events if e.type == EventType.DELETE)
                        change = feed.FeedChange(revision, feed.encode_change(revision, events))
                        if len(self._kept) == self._kept.maxlen:
                            self._floor = self._kept[0].change.revision
                        self._kept.append(Entry(change, deleted))
                    self._wake()
            except Gone as exc:
                log.warning("change stream: the shared watch fell behind (%s)", exc.message)
                self._kept.clear()
                self._floor = await self._revision()
                self._wake()
            except SixpnError as exc:  # the store unreachable: the streams wait
                log.warning("change stream: the shared watch failed (%s); retrying", exc.message)
                await asyncio.sleep(RETRY_S)
            finally:
                await batches.aclose()

    async def _revision(self) -> int:
        while True:
            try:
                return await self.store.revision()
            except SixpnError:
                await asyncio.sleep(RETRY_S)

    def _wake(self) -> None:
        woken, self._woken = self._woken, asyncio.Event()
        woken.set()

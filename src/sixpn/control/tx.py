"""Optimistic transactions over the store: read, decide, commit with compare-and-swap, retry.

Every key a use case reads through :class:`Tx` becomes a comparison of the commit (its
mod_revision, or "absent"), so a commit succeeds only if nothing it looked at changed meanwhile;
otherwise the use case runs again on fresh data. This is what keeps allocation unique across
concurrent API calls and across control-plane replicas over one etcd.

Range reads cannot be compared (etcd has no such comparison). Deleting a parent whose children
live under a range (an app's machines, a network's apps) therefore goes in two steps: a *guard*
key is written first, which every child creation compares as absent, so no child can appear
after the range was read (see :func:`delete_guarded`).

Keys that are almost always absent (deletion guards, a freshly drawn machine ID or address
field) are not read on a use case's first attempt: :meth:`Tx.is_absent` assumes them absent and
the commit compares them as absent, which the store checks anyway. A wrong guess costs only a
failed commit, after which every attempt reads them; and an attempt that assumed something
but ends without a commit (an error, or nothing to write) is run again reading them, so what a
use case decides and says (the "is being deleted" conflict before any other, another ID drawn)
is what it would have been with every key read. A machine create reads 3 keys instead of 8
(docs/benchmarks.md, "Propagation at rate", 2026-12-06).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sixpn.control import codec, keys
from sixpn.model.errors import Conflict, NotFound, SixpnError, StoreContention, Unavailable
from sixpn.store import KV, Compare, Delete, Put, Store

T = TypeVar("T")
E = TypeVar("E")

MAX_ATTEMPTS = 64
GUARD_STALE_SECONDS = 30.0  # a guard left by a crashed server stops blocking after this


class Tx:
    """One attempt of a use case: the reads it made and the writes it wants."""

    def __init__(self, store: Store, now: float, *, assume_absent: bool = False) -> None:
        self.store = store
        self.now = now
        self.assume_absent = assume_absent  # the first attempt: see the module docstring
        self.assumed = False  # whether this attempt assumed a key absent without reading it
        self.compares: dict[str, int] = {}
        self.ops: list[Put | Delete] = []

    async def get(self, key: str) -> KV | None:
        kv = await self.store.get(key)
        self.compares.setdefault(key, kv.mod_revision if kv else 0)
        return kv

    async def is_absent(self, key: str) -> bool:
        """Whether ``key`` is absent, compared at the commit; assumed, unread, on a first
        attempt (for keys that are almost always absent only: see the module docstring)."""
        if key in self.compares:  # read (or assumed) already in this attempt
            return self.compares[key] == 0
        if self.assume_absent:
            self.compares[key] = 0
            self.assumed = True
            return True
        return await self.get(key) is None

    async def entity(self, cls: type[E], key: str, missing: str, *, field: str | None = None) -> E:
        """The entity at ``key``; NotFound with message ``missing`` (naming ``field``) if absent."""
        kv = await self.get(key)
        if kv is None:
            raise NotFound(missing, field=field)
        return codec.decode(cls, kv.value)

    async def check_guard(self, entity_key: str, what: str) -> None:
        """Refuse to add a child under a parent that is being deleted."""
        if await self.is_absent(keys.guard(entity_key)):
            return
        kv = await self.get(keys.guard(entity_key))
        if kv is not None and self.now - json.loads(kv.value)["at"] < GUARD_STALE_SECONDS:
            raise Conflict(f"{what} is being deleted")

    def put(self, key: str, value: object) -> None:
        raw = value if isinstance(value, bytes) else codec.encode(value)
        self.ops.append(Put(key, raw))

    def put_text(self, key: str, value: str) -> None:
        self.ops.append(Put(key, value.encode()))

    def delete(self, key: str) -> None:
        self.ops.append(Delete(key))


async def run(
    store: Store, clock: Callable[[], float], fn: Callable[[Tx], Awaitable[T]], *, what: str
) -> T:
    """Run ``fn`` and commit its writes; run it again while a concurrent write interferes."""
    for attempt in range(MAX_ATTEMPTS):
        tx = Tx(store, clock(), assume_absent=attempt == 0)
        try:
            result = await fn(tx)
        except SixpnError as exc:
            if tx.assumed and not isinstance(exc, Unavailable):
                continue  # decided on a guess that no commit checked: decide again on reads
            raise
        if not tx.ops:
            if tx.assumed:
                continue  # the same
            return result
        compares = [Compare(k, rev) for k, rev in tx.compares.items()]
        if (await store.txn(compares, tx.ops)).succeeded:
            return result
        # Lost a race: back off a little (jittered, growing) so that the herd spreads out.
        await asyncio.sleep(random.uniform(0, min(0.05, 0.0005 * 2**attempt)))
    raise StoreContention(f"{what}: too many concurrent changes, try again")


async def delete_guarded(
    store: Store,
    clock: Callable[[], float],
    entity_key: str,
    *,
    what: str,
    children: Callable[[], Awaitable[list[str]]],
    finish: Callable[[Tx], Awaitable[None]],
) -> None:
    """Delete a parent only if it has no children, even against concurrent child creation.

    1. write the guard (children created from now on fail, those in flight fail their compare);
    2. list the children: if any, remove the guard and refuse, naming them;
    3. ``finish`` deletes the parent (and whatever goes with it) together with the guard.
    """
    guard_key = keys.guard(entity_key)

    async def place(tx: Tx) -> None:
        if await tx.get(entity_key) is None:
            raise NotFound(f"{what} not found")
        await tx.check_guard(entity_key, what)
        tx.put(guard_key, json.dumps({"at": tx.now}).encode())

    async def finish_and_release(tx: Tx) -> None:
        await tx.get(guard_key)
        await finish(tx)
        tx.delete(guard_key)

    async def release(tx: Tx) -> None:
        if await tx.get(guard_key) is not None:
            tx.delete(guard_key)

    await run(store, clock, place, what=f"deleting {what}")
    try:
        found = await children()
        if found:
            shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
            raise Conflict(f"cannot delete {what}: it still has {shown}")
        await run(store, clock, finish_and_release, what=f"deleting {what}")
    except BaseException:
        await run(store, clock, release, what=f"releasing the deletion guard of {what}")
        raise

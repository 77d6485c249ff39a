"""The change feed that agents and DNS servers follow: a snapshot, then every change after it.

Wire format (NDJSON, one object a line):
- a change: ``{"revision": R, "events": [{"type": "put"|"delete", "kind": K, "object": {...}}]}``,
  one line per store revision that touched an entity; a delete carries the object as it was;
- a heartbeat: ``{"heartbeat": true, "revision": R}`` when nothing happened for a while, and once
  right after connecting. R is the revision the stream has passed (including revisions that
  touched only internal keys, such as tokens), so a client may resume from it safely.

Internal keys (counters, reservations, tokens) never appear. Values go out as the store holds
them (already JSON), without decoding, so following the feed costs the server almost nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from sixpn.control import keys
from sixpn.store import Event, EventType, Store

SNAPSHOT_KINDS = ("org", "network", "app", "host", "hoststatus", "machine", "peer")


@dataclass(frozen=True, slots=True)
class FeedChange:
    revision: int
    line: bytes | None  # None: the revision touched no entity


async def snapshot(store: Store) -> bytes:
    """``{"revision": R, "org": [...], "network": [...], ...}`` read consistently at R.

    One range per kind, all at one revision: the internal keys between them (two thirds of a
    large fleet's keys: machine IDs, fields, tokens) are never read.
    """
    groups, revision = await store.ranges([f"{kind}/" for kind in SNAPSHOT_KINDS])
    parts = [b'{"revision":%d' % revision]
    for kind, kvs in zip(SNAPSHOT_KINDS, groups, strict=True):
        parts.append(b',"%s":[' % kind.encode() + b",".join(kv.value for kv in kvs) + b"]")
    parts.append(b"}")
    return b"".join(parts)


def encode_change(revision: int, events: Sequence[Event]) -> bytes | None:
    body = []
    for event in events:
        kind = keys.kind_of(event.key)
        if kind is not None:
            head = b'{"type":"%s","kind":"%s","object":' % (event.type.encode(), kind.encode())
            body.append(head + event.value + b"}")
    if not body:
        return None
    return b'{"revision":%d,"events":[' % revision + b",".join(body) + b"]}\n"


def heartbeat(revision: int) -> bytes:
    return json.dumps({"heartbeat": True, "revision": revision}).encode() + b"\n"


async def follow(
    store: Store, since: int, *, end_when_deleted: str | None = None
) -> AsyncGenerator[FeedChange, None]:
    """Every revision after ``since``, in order, each exactly once.

    Never ends by itself, except when a revision deletes the key ``end_when_deleted`` (the
    follower's own credential: a revoked token stops receiving changes at once, at no cost per
    change, since the deletion arrives through the very stream being followed).
    """
    batches = store.watch(since)
    try:
        async for batch in batches:
            if end_when_deleted is not None and any(
                e.type == EventType.DELETE and e.key == end_when_deleted for e in batch
            ):
                return
            for revision, events in by_revision(batch):
                yield FeedChange(revision, encode_change(revision, events))
    finally:
        await batches.aclose()


def by_revision(batch: Sequence[Event]) -> list[tuple[int, Sequence[Event]]]:
    out = []
    start = 0
    for i in range(1, len(batch) + 1):
        if i == len(batch) or batch[i].revision != batch[start].revision:
            out.append((batch[start].revision, batch[start:i]))
            start = i
    return out

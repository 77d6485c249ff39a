"""The follower's side of the change feed: a snapshot, then every change after it, resumably.

Wire format: ``control/feed.py``. Here the lines become values (:class:`Snapshot`,
:class:`ChangeBatch`), and :func:`resume` keeps a follower's position across dropped connections.

Rules that hold for :func:`resume` (what agents and DNS servers rely on):

- changes come in revision order, each exactly once, also across reconnects: after a drop it asks
  the server for the changes after the last revision it yielded, and skips anything at or before
  that revision should a server ever repeat one;
- heartbeats are yielded too (a :class:`ChangeBatch` without events), so the caller can persist
  the position the stream has passed; a heartbeat may repeat the current position;
- a dropped connection, a restarted server, a 5xx answer or a line it cannot read means "try
  again" (logged as a warning each time): it waits with a bounded exponential backoff
  (``min_backoff`` doubling up to ``max_backoff``, with jitter so that a fleet does not reconnect
  in lockstep), reset once a line arrives; the control plane being down is normal, and the
  follower keeps what it has until it returns (SPEC section 10);
- a 410 (:class:`~sixpn.model.errors.Gone`: the position is compacted or ahead of the store) and
  any other 4xx are raised to the caller, who must start again from a snapshot (or a new
  credential).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

from pydantic import BaseModel

from sixpn.client.wire import decode, decode_python
from sixpn.model.entities import App, Entity, Host, HostStatus, Machine, Network, Org, Peer
from sixpn.model.errors import SixpnError

log = logging.getLogger("sixpn.client.feed")

KINDS: dict[str, type[Any]] = {
    "org": Org,
    "network": Network,
    "app": App,
    "host": Host,
    "hoststatus": HostStatus,
    "machine": Machine,
    "peer": Peer,
}

EventType = Literal["put", "delete"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every entity of the fabric, read consistently at ``revision``: where a follower starts."""

    revision: int
    orgs: tuple[Org, ...] = ()
    networks: tuple[Network, ...] = ()
    apps: tuple[App, ...] = ()
    hosts: tuple[Host, ...] = ()
    host_statuses: tuple[HostStatus, ...] = ()
    machines: tuple[Machine, ...] = ()
    peers: tuple[Peer, ...] = ()


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One entity written (``put``) or deleted (``delete``, carrying the entity as it was)."""

    type: EventType
    kind: str  # a key of KINDS
    entity: Entity


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """Everything one store revision changed; no events: a heartbeat at that revision."""

    revision: int
    events: tuple[ChangeEvent, ...] = ()

    @property
    def is_heartbeat(self) -> bool:
        return not self.events


class _SnapshotWire(BaseModel):
    revision: int
    org: list[Org] = []
    network: list[Network] = []
    app: list[App] = []
    host: list[Host] = []
    hoststatus: list[HostStatus] = []
    machine: list[Machine] = []
    peer: list[Peer] = []


def parse_snapshot(url: str, raw: bytes) -> Snapshot:
    wire = decode(url, _SnapshotWire, raw)
    return Snapshot(
        revision=wire.revision,
        orgs=tuple(wire.org),
        networks=tuple(wire.network),
        apps=tuple(wire.app),
        hosts=tuple(wire.host),
        host_statuses=tuple(wire.hoststatus),
        machines=tuple(wire.machine),
        peers=tuple(wire.peer),
    )


def parse_line(url: str, line: str | bytes) -> ChangeBatch:
    """One NDJSON line of ``GET /v1/watch``: a change or a heartbeat."""
    try:
        obj = json.loads(line)
        revision = obj["revision"]
        if not isinstance(revision, int) or isinstance(revision, bool):
            raise TypeError(f"revision {revision!r} is not an integer")
        if obj.get("heartbeat"):
            return ChangeBatch(revision)
        events: list[ChangeEvent] = []
        for event in obj["events"]:
            kind, type_ = event["kind"], event["type"]
            if type_ not in ("put", "delete"):
                raise ValueError(f"event type {type_!r}")
            cls = KINDS.get(kind)
            if cls is None:
                # A newer server's kind: nothing here knows what to do with it.
                log.debug("change stream: skipping an event of unknown kind %r", kind)
                continue
            entity = cast(Entity, decode_python(url, cls, event["object"]))
            events.append(ChangeEvent(type=type_, kind=kind, entity=entity))
    except (ValueError, KeyError, TypeError) as exc:
        raise SixpnError(
            f"unexpected line in the change stream of {url}: {exc} ({bytes_or_str(line)[:120]!r})"
        ) from exc
    return ChangeBatch(revision, tuple(events))


def bytes_or_str(line: str | bytes) -> str:
    return line.decode("utf-8", "replace") if isinstance(line, bytes) else line


async def resume(
    open_stream: Callable[[int], AsyncGenerator[ChangeBatch, None]],
    since: int,
    *,
    source: str | Callable[[], str],
    min_backoff: float = 0.1,
    max_backoff: float = 5.0,
) -> AsyncGenerator[ChangeBatch, None]:
    """Follow ``open_stream(position)`` forever, reconnecting after drops (rules: module doc).
    ``source`` names where the next connection goes (a callable: a client that fails over)."""
    position = since
    delay = min_backoff
    while True:
        try:
            async with contextlib.aclosing(open_stream(position)) as batches:
                async for batch in batches:
                    delay = min_backoff
                    if batch.revision < position or (batch.events and batch.revision == position):
                        continue
                    position = batch.revision
                    yield batch
            reason = "the server ended the stream"
        except SixpnError as exc:
            if exc.status < 500:
                raise
            reason = exc.message
        pause = delay * (0.5 + random.random() / 2)  # jitter, not a secret
        log.warning(
            "change stream interrupted (%s); resuming from revision %d at %s in %.2f s",
            reason,
            position,
            source() if callable(source) else source,
            pause,
        )
        await asyncio.sleep(pause)
        delay = min(delay * 2, max_backoff)

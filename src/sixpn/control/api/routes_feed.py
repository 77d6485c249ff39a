"""The snapshot and the change stream (``control/feed.py`` has the wire format)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from sixpn.control import feed, keys
from sixpn.control.api.auth import Reader, Svc
from sixpn.control.fanout import Fanout
from sixpn.control.tokens import digest
from sixpn.model.errors import Gone

router = APIRouter(tags=["feed"])


@router.get("/v1/snapshot")
async def get_snapshot(svc: Svc, _: Reader) -> Response:
    """Every entity and the revision it was read at: where a new follower starts."""
    return Response(await feed.snapshot(svc.ctx.store), media_type="application/json")


async def _stream(
    fanout: Fanout, since: int, heartbeat_s: float, credential_key: str
) -> AsyncIterator[bytes]:
    """The stream's body: a heartbeat, then the lines of each batch of revisions in one write
    (several lines in one chunk when several revisions came together), a heartbeat after each
    ``heartbeat_s`` without any; it ends when the follower's credential is deleted (the client
    reconnects and hears 401)."""
    passed = since
    yield feed.heartbeat(passed)
    batches = fanout.batches(since, end_when_deleted=credential_key, idle=heartbeat_s)
    try:
        async for batch in batches:
            if not batch:
                yield feed.heartbeat(passed)
                continue
            passed = batch[-1].revision
            lines = [change.line for change in batch if change.line is not None]
            if lines:
                yield lines[0] if len(lines) == 1 else b"".join(lines)
    finally:
        await batches.aclose()


@router.get("/v1/watch")
async def watch(
    request: Request, svc: Svc, _: Reader, since: int = Query(0, ge=0)
) -> StreamingResponse:
    """Every change after revision ``since``, exactly once, in order, then live, forever."""
    store = svc.ctx.store
    current = await store.revision()
    if since > current:
        raise Gone(
            f"revision {since} is ahead of the store (at {current}): the store was replaced; "
            "start again from a snapshot"
        )
    compacted = await store.compacted_revision()
    if since < compacted:
        raise Gone(
            f"revision {since} is compacted (oldest kept: {compacted}); start again from a snapshot"
        )
    heartbeat_s: float = request.app.state.heartbeat_seconds
    secret = request.headers["authorization"].partition(" ")[2].strip()
    credential_key = keys.token(digest(secret))
    return StreamingResponse(
        _stream(request.app.state.fanout, since, heartbeat_s, credential_key),
        media_type="application/x-ndjson",
    )

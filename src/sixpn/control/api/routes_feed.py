"""The snapshot and the change stream (``control/feed.py`` has the wire format)."""

from __future__ import annotations

import asyncio
import contextlib
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
    passed = since
    yield feed.heartbeat(passed)
    changes = fanout.follow(since, end_when_deleted=credential_key)
    pending: asyncio.Future[feed.FeedChange] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(changes))
            done, _ = await asyncio.wait({pending}, timeout=heartbeat_s)
            if not done:
                yield feed.heartbeat(passed)
                continue
            try:
                change = pending.result()
            except StopAsyncIteration:
                return  # the credential was revoked: the client reconnects and hears 401
            finally:
                pending = None
            passed = change.revision
            if change.line is not None:
                yield change.line
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        await changes.aclose()


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

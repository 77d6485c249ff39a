"""Bounds on what one request may cost the server (SPEC 10: "the API answers oversized or
malformed requests with 4xx and bounded memory").

- A request body is at most :data:`MAX_BODY_BYTES` (1 MiB). The largest legitimate body, a
  gateway's report of 1,000 peers' counters, is ~250 KiB. A ``Content-Length`` over the cap is
  answered 413 before a byte of the body is read; a chunked body (no length) is counted as it
  arrives and answered 413 as soon as it passes the cap. Either way at most the cap (plus the
  server's 64 KiB read buffer) is ever held, and the 413 carries ``Connection: close`` so that
  the rest of the body is never read either.
- JSON nested deeper than Python's parser allows (``[[[[...``) is a ``RecursionError`` inside
  FastAPI's body parsing; ``errors.py`` answers it 400 naming the nesting, cheaply, since the
  parser gives up at the recursion limit whatever the body's size.

This is a pure ASGI middleware, not Starlette's ``BaseHTTPMiddleware``: it must not buffer or
wrap responses (``/v1/watch`` is an endless stream).
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1 << 20


class BodyTooLarge(HTTPException):
    """A body over the cap. An ``HTTPException`` so that FastAPI's body parsing, which turns
    any other exception into a 400, passes it on to the error map (``errors.py``) as it is."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            status_code=413,
            detail=f"request body larger than {limit} bytes",
            headers={"Connection": "close"},
        )


def too_large_body(limit: int) -> bytes:
    message = f"request body larger than {limit} bytes"
    return json.dumps({"error": {"code": "too_large", "message": message}}).encode()


class BodyLimit:
    """Answer 413 to a request body over ``limit`` bytes, reading no more than ``limit``."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            # Raised where no exception handler sits (outside the router): answer it here.
            if started:
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = too_large_body(self.limit)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # h11 refuses a malformed length before the app sees it
    return None

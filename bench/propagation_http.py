"""A lean HTTP/1.1 client over the control plane's Unix socket, for the propagation benchmark.

Why not httpx: the benchmark times changes from the moment the request leaves (the clock starts
right before ``sendall``), and its background load issues ~200 requests a second from one
process on a 2-core machine that also runs the system under test. httpx costs ~1.5 ms of CPU
per request (docs/benchmarks.md, control plane section); this costs a fraction of that, and the
send time is exact. One keep-alive connection per :class:`Conn` (or :class:`AsyncConn`); JSON
bodies; ``Content-Length`` or chunked answers (uvicorn sends the former for JSON).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any


class HttpError(Exception):
    """The answer was not 2xx (status, body), or the connection broke."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body


def _request(method: str, path: str, token: str, body: Any | None) -> bytes:
    payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: sixpn\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


def _head(raw: bytes) -> tuple[int, dict[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


class Conn:
    """A blocking keep-alive connection; ``call`` returns (status, JSON, t_sent, t_answered)
    with both times ``time.monotonic()``."""

    def __init__(self, path: str, token: str, timeout: float = 30) -> None:
        self.path = path
        self.token = token
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buf = b""

    def _connect(self) -> socket.socket:
        if self.sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            s.connect(self.path)
            self.sock, self.buf = s, b""
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _fill(self, s: socket.socket) -> None:
        data = s.recv(65536)
        if not data:
            raise ConnectionError("the control plane closed the connection")
        self.buf += data

    def _read_until(self, s: socket.socket, marker: bytes) -> bytes:
        while (i := self.buf.find(marker)) < 0:
            self._fill(s)
        out, self.buf = self.buf[:i], self.buf[i + len(marker) :]
        return out

    def _read_n(self, s: socket.socket, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill(s)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def call(
        self, method: str, path: str, body: Any | None = None
    ) -> tuple[int, Any, float, float]:
        wire = _request(method, path, self.token, body)
        for attempt in (1, 2):  # a keep-alive connection the server closed meanwhile: once more
            s = self._connect()
            sent = time.monotonic()
            try:
                s.sendall(wire)
                status, headers = _head(self._read_until(s, b"\r\n\r\n"))
            except (ConnectionError, BrokenPipeError) as exc:
                self.close()
                if attempt == 2:
                    raise HttpError(0, str(exc)) from exc
                continue
            break
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while (size := int(self._read_until(s, b"\r\n").split(b";")[0], 16)) > 0:
                parts.append(self._read_n(s, size))
                self._read_n(s, 2)
            self._read_until(s, b"\r\n")
            raw = b"".join(parts)
        else:
            raw = self._read_n(s, int(headers.get("content-length", "0")))
        answered = time.monotonic()
        if headers.get("connection", "").lower() == "close":
            self.close()
        value = json.loads(raw) if raw else None
        return status, value, sent, answered

    def ok(self, method: str, path: str, body: Any | None = None) -> tuple[Any, float, float]:
        """Like :meth:`call`, raising :class:`HttpError` for anything but 2xx."""
        status, value, sent, answered = self.call(method, path, body)
        if not 200 <= status < 300:
            raise HttpError(status, json.dumps(value))
        return value, sent, answered


class AsyncConn:
    """The asyncio twin of :class:`Conn` (the load generator's connections)."""

    def __init__(self, path: str, token: str) -> None:
        self.path = path
        self.token = token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None

    async def call(self, method: str, path: str, body: Any | None = None) -> tuple[int, Any]:
        wire = _request(method, path, self.token, body)
        for attempt in (1, 2):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_unix_connection(self.path)
            assert self.reader is not None
            try:
                self.writer.write(wire)
                await self.writer.drain()
                status, headers = _head((await self.reader.readuntil(b"\r\n\r\n"))[:-4])
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                await self.close()
                if attempt == 2:
                    raise HttpError(0, str(exc)) from exc
                continue
            break
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while (size := int((await self.reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)) > 0:
                parts.append(await self.reader.readexactly(size + 2))
            await self.reader.readuntil(b"\r\n")
            raw = b"".join(p[:-2] for p in parts)
        else:
            raw = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, (json.loads(raw) if raw else None)

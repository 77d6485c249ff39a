"""The `sixpn forward` relay: a TCP forwarder for the peer inside an external network (SPEC 6).

It runs on the WireGuard peer in, say, an AWS VPC, listens on the peer's 6PN address (or
``[::]``) and forwards each connection to an IPv4 or IPv6 target, typically an RDS endpoint that
IPv6-only 6PN machines cannot reach themselves.

Rules that hold here:

- The target is resolved per connection (``getaddrinfo`` every time, each address tried in
  order), so a moved DNS name (RDS fail-over) is followed without a restart.
- Nothing a client or the target does is fatal: connect failures, resets and timeouts close
  that one connection and are logged at WARNING with the client's address and the target.
- Half-close is passed through: EOF from one side becomes ``shutdown(SHUT_WR)`` on the other and
  the other direction keeps flowing; a connection ends when both directions are done.
- The copy loop is ``loop.sock_recv_into``/``sock_sendall`` on one 256 KiB buffer per direction:
  no stream layer, no per-chunk allocation (the event loop tries the syscall first and only
  waits when it would block).
- Shutdown (``close`` then ``drain``) stops accepting at once and lets open connections finish
  within a grace period; what is still open then is cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time

from sixpn.forward.address import Endpoint, check_limits
from sixpn.model.errors import Unavailable

log = logging.getLogger("sixpn.forward")

BUFFER_SIZE = 256 * 1024
CONNECT_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_GRACE = 30.0
# One "over the limit" warning per this many seconds, with the count refused meanwhile: a
# client hammering a full forwarder must not flood the journal.
REFUSAL_LOG_INTERVAL = 1.0


def _peer(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return str(Endpoint(str(addr[0]), int(addr[1])))
    return str(addr)


def _reason(exc: BaseException) -> str:
    """A short cause for the log: asyncio's connect errors hide the strerror in a long text."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return str(exc.strerror or exc)  # "Name or service not known", not "[Errno -2] ..."
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or exc.__class__.__name__


class _Conn:
    """Bookkeeping for one forwarded connection: byte counts and the last time bytes moved."""

    def __init__(self, client: str) -> None:
        self.client = client
        self.upstream = "-"
        self.sent = 0  # client -> target
        self.received = 0  # target -> client
        self.started = time.monotonic()
        self.last = self.started


class Forwarder:
    """Accepts on ``listen`` and copies each connection to ``target`` in both directions."""

    def __init__(
        self,
        listen: Endpoint,
        target: Endpoint,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float = 0.0,
        connect_timeout: float = CONNECT_TIMEOUT,
        buffer_size: int = BUFFER_SIZE,
    ) -> None:
        check_limits(max_connections, idle_timeout, 0.0)
        self.listen = listen
        self.target = target
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.buffer_size = buffer_size
        self._sock: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._refused = 0
        self._refusal_logged = 0.0

    @property
    def active(self) -> int:
        return len(self._tasks)

    @property
    def sockname(self) -> tuple[str, int]:
        assert self._sock is not None, "start() first"
        name = self._sock.getsockname()
        return str(name[0]), int(name[1])

    async def start(self) -> None:
        """Bind and listen (an error here is fatal: exit 1), then accept in the background."""
        family = socket.AF_INET6 if ":" in self.listen.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.listen.host == "::":
                # [::] also takes IPv4 clients (mapped addresses): what "every address" means.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((self.listen.host, self.listen.port))
            sock.listen(min(self.max_connections, socket.SOMAXCONN))
        except OSError as exc:
            sock.close()
            raise Unavailable(f"listening on {self.listen}: {exc.strerror or exc}") from exc
        sock.setblocking(False)
        self._sock = sock
        self._accept_task = asyncio.create_task(self._accept_loop())

    def close(self) -> None:
        """Stop accepting; new connections are refused by the kernel from now on."""
        if self._accept_task is not None:
            self._accept_task.cancel()
        if self._sock is not None:
            self._sock.close()

    async def drain(self, grace: float) -> int:
        """Wait up to ``grace`` s for open connections to end, then cut the rest; their count."""
        if self._accept_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept_task
        pending = set(self._tasks)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        return len(pending)

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None
        while True:
            try:
                client, addr = await loop.sock_accept(self._sock)
            except OSError as exc:
                # EMFILE and friends: keep serving; the open connections will free descriptors.
                log.warning("accepting on %s: %s", self.listen, exc)
                await asyncio.sleep(0.1)
                continue
            if len(self._tasks) >= self.max_connections:
                self._refuse(client, addr)
                continue
            task = asyncio.create_task(self._handle(client, _peer(addr)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _refuse(self, client: socket.socket, addr: object) -> None:
        # SO_LINGER 0: a reset, so the client fails at once instead of waiting on a half-open
        # connection that will never be served.
        with contextlib.suppress(OSError):
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
        client.close()
        self._refused += 1
        now = time.monotonic()
        if now - self._refusal_logged >= REFUSAL_LOG_INTERVAL:
            log.warning(
                "refused %s: %d connections open, the maximum (%d refused since the last warning)",
                _peer(addr),
                self.max_connections,
                self._refused,
            )
            self._refused = 0
            self._refusal_logged = now

    async def _connect(self, conn: _Conn) -> socket.socket | None:
        """Resolve the target now and try each address in order; None (logged) if none works."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                infos = await loop.getaddrinfo(
                    self.target.host, self.target.port, type=socket.SOCK_STREAM
                )
        except (OSError, TimeoutError) as exc:
            log.warning(
                "%s -> %s: resolving the target failed: %s", conn.client, self.target, _reason(exc)
            )
            return None
        errors = []
        for family, type_, proto, _, sockaddr in infos:
            upstream = socket.socket(family, type_, proto)
            upstream.setblocking(False)
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await loop.sock_connect(upstream, sockaddr)
            except (OSError, TimeoutError) as exc:
                upstream.close()
                errors.append(f"{_peer(sockaddr)}: {_reason(exc)}")
                continue
            except BaseException:
                upstream.close()
                raise
            conn.upstream = _peer(sockaddr)
            return upstream
        log.warning(
            "%s -> %s: connecting to the target failed: %s",
            conn.client,
            self.target,
            "; ".join(errors) or "no address",
        )
        return None

    async def _handle(self, client: socket.socket, client_name: str) -> None:
        conn = _Conn(client_name)
        client.setblocking(False)
        upstream: socket.socket | None = None
        outcome = "closed"
        try:
            upstream = await self._connect(conn)
            if upstream is None:
                return
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            outcome = await self._pump(conn, client, upstream)
        except asyncio.CancelledError:
            outcome = "cut at shutdown"
            raise
        finally:
            client.close()
            if upstream is not None:
                upstream.close()
                log.info(
                    "%s -> %s: %s, %d bytes sent, %d received, %.1f s",
                    conn.client,
                    conn.upstream,
                    outcome,
                    conn.sent,
                    conn.received,
                    time.monotonic() - conn.started,
                )

    async def _pump(self, conn: _Conn, client: socket.socket, upstream: socket.socket) -> str:
        """Copy both ways until both are done; how it ended, for the log line."""
        up = asyncio.create_task(self._copy(conn, client, upstream, upstream=True))
        down = asyncio.create_task(self._copy(conn, upstream, client, upstream=False))
        pending: set[asyncio.Task[None]] = {up, down}
        try:
            while pending:
                timeout = None
                if self.idle_timeout:
                    timeout = max(0.0, conn.last + self.idle_timeout - time.monotonic())
                done, pending = await asyncio.wait(
                    pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    exc = task.exception()
                    if exc is not None:
                        # A reset on one side ends both: there is nobody left to answer.
                        log.warning("%s -> %s: %s", conn.client, conn.upstream, _reason(exc))
                        return f"error ({exc.__class__.__name__})"
                if pending and not done and time.monotonic() - conn.last >= self.idle_timeout:
                    log.info(
                        "%s -> %s: idle for %g s, closing",
                        conn.client,
                        conn.upstream,
                        self.idle_timeout,
                    )
                    return "idle timeout"
            return "closed"
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _copy(
        self, conn: _Conn, src: socket.socket, dst: socket.socket, *, upstream: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        buf = bytearray(self.buffer_size)
        view = memoryview(buf)
        while True:
            n = await loop.sock_recv_into(src, buf)
            if n == 0:
                # Half-close passed through: the other side sees EOF and may still answer.
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            conn.last = time.monotonic()
            await loop.sock_sendall(dst, view[:n])
            conn.last = time.monotonic()
            if upstream:
                conn.sent += n
            else:
                conn.received += n


async def serve(forwarder: Forwarder, grace: float = DEFAULT_GRACE) -> int:
    """Run until SIGTERM or SIGINT, then stop accepting and drain; the count of cut connections."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await forwarder.start()
        await stop.wait()
        forwarder.close()
        log.info("stopping: %d connections open, waiting up to %g s", forwarder.active, grace)
        cut = await forwarder.drain(grace)
        if cut:
            log.warning("grace period over: cut %d connections", cut)
        return cut
    finally:
        forwarder.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

"""`sixpn forward` (SPEC 6, ``sixpn/forward.py``) with real sockets on loopback.

The forwarder runs in-process (or as a ``python -m sixpn forward`` child for SIGTERM) in front of
small threaded targets from ``socketserver``: an echo server that copies while it reads, and an
"upper" server that answers only after its client's EOF (so half-close must pass through). The
targets run in threads so that a 100 MB transfer uses the second core. Waits are events and
deadlines, never sleeps.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from sixpn.forward import Endpoint, Forwarder
from tests.harness import free_port, wait_until

pytestmark = pytest.mark.component

CHUNK = 1024 * 1024 + 7  # a prime-ish size, so chunks never line up with the forwarder's buffer


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        while data := sock.recv(256 * 1024):
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)


class _Upper(socketserver.BaseRequestHandler):
    """Answers only once the client has shut its write side: the half-close test."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        received = bytearray()
        while data := sock.recv(65536):
            received += data
        sock.sendall(bytes(received).upper() + b"|EOF SEEN")
        sock.shutdown(socket.SHUT_WR)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


@contextmanager
def target(
    handler: type[socketserver.BaseRequestHandler], host: str = "127.0.0.1", port: int = 0
) -> Iterator[int]:
    """A threaded TCP server on ``host``; yields its port and shuts it down afterwards."""
    cls = _Server6 if ":" in host else _Server
    server = cls((host, port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@asynccontextmanager
async def forwarder(listen: str, to: Endpoint, **kwargs: Any) -> AsyncIterator[Forwarder]:
    fwd = Forwarder(Endpoint(listen, 0), to, **kwargs)
    await fwd.start()
    try:
        yield fwd
    finally:
        fwd.close()
        await fwd.drain(0.0)


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything until EOF; a reset counts as EOF (a refused connection may be reset)."""
    try:
        return await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:
        return b""


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_half_close_passes_through(host: str) -> None:
    with target(_Upper, host) as port:
        async with forwarder(host, Endpoint(host, port)) as fwd:
            reader, writer = await asyncio.open_connection(*fwd.sockname)
            writer.write(b"select 1;" * 10_000)
            await writer.drain()
            writer.write_eof()  # the client is done talking; it still wants the answer
            reply = await read_all(reader)
            writer.close()
    assert reply == b"SELECT 1;" * 10_000 + b"|EOF SEEN"


async def test_every_address_takes_ipv4_clients_too() -> None:
    # ":PORT" and "[::]:PORT" listen dual-stack: 6PN clients arrive over IPv6, a local check over
    # IPv4 must work as well.
    with target(_Upper) as port:
        async with forwarder("::", Endpoint("127.0.0.1", port)) as fwd:
            for host in ("127.0.0.1", "::1"):
                reader, writer = await asyncio.open_connection(host, fwd.sockname[1])
                writer.write(host.encode())
                writer.write_eof()
                assert await read_all(reader) == host.upper().encode() + b"|EOF SEEN"
                writer.close()


async def test_grace_over_cuts_what_is_left(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sixpn.forward")
    with target(_Echo) as port:
        fwd = Forwarder(Endpoint("127.0.0.1", 0), Endpoint("127.0.0.1", port))
        await fwd.start()
        reader, writer = await asyncio.open_connection(*fwd.sockname)
        writer.write(b"x")
        assert await reader.readexactly(1) == b"x"
        fwd.close()
        assert await fwd.drain(0.2) == 1
        assert await read_all(reader) == b""
        writer.close()
    assert "cut at shutdown, 1 bytes sent, 1 received" in caplog.text


def _pump_100mb(addr: tuple[str, int], total: int) -> tuple[str, str, int]:
    """Send ``total`` bytes and read the echo concurrently; (sent hash, received hash, count)."""
    block = os.urandom(CHUNK)
    sent = hashlib.sha256()
    received = hashlib.sha256()
    count = 0
    with socket.create_connection(addr) as sock:

        def send() -> None:
            left = total
            while left:
                piece = block[: min(left, CHUNK)]
                sock.sendall(piece)
                sent.update(piece)
                left -= len(piece)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        while data := sock.recv(256 * 1024):
            received.update(data)
            count += len(data)
        sender.join()
    return sent.hexdigest(), received.hexdigest(), count


async def test_100_mb_each_way_byte_exact(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sixpn.forward")
    total = 100 * 1000 * 1000
    with target(_Echo) as port:
        async with forwarder("127.0.0.1", Endpoint("127.0.0.1", port)) as fwd:
            started = time.monotonic()
            sent, received, count = await asyncio.to_thread(_pump_100mb, fwd.sockname, total)
            elapsed = time.monotonic() - started
            await wait_for(lambda: fwd.active == 0, "the connection to end")
    assert count == total
    assert received == sent
    print(f"100 MB each way in {elapsed:.2f} s")
    assert f"{total} bytes sent, {total} received" in caplog.text


async def test_target_name_is_resolved_per_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that moves (RDS fail-over) is followed by the next connection, no restart."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    answer = {"db.test": "127.0.0.1"}
    asked: list[str] = []

    async def resolver(host: str, port: int, **kw: Any) -> Any:
        asked.append(host)
        return await real(answer.get(host, host), port, **kw)

    monkeypatch.setattr(loop, "getaddrinfo", resolver)
    with target(_Upper, "127.0.0.1") as port, target(_Echo, "127.0.0.2", port):
        async with forwarder("127.0.0.1", Endpoint("db.test", port)) as fwd:
            replies = []
            for moved_to in ("127.0.0.1", "127.0.0.2"):
                answer["db.test"] = moved_to
                reader, writer = await asyncio.open_connection(*fwd.sockname)
                writer.write(b"ping")
                writer.write_eof()
                replies.append(await read_all(reader))
                writer.close()
    assert replies == [b"PING|EOF SEEN", b"ping"]
    assert asked == ["db.test", "db.test"]


async def test_localhost_by_name_tries_each_address() -> None:
    # The target listens on 127.0.0.1 only; "localhost" may resolve to ::1 first, which refuses.
    with target(_Upper, "127.0.0.1") as port:
        async with forwarder("::1", Endpoint("localhost", port)) as fwd:
            reader, writer = await asyncio.open_connection(*fwd.sockname)
            writer.write(b"by name")
            writer.write_eof()
            assert await read_all(reader) == b"BY NAME|EOF SEEN"
            writer.close()


async def test_unreachable_target_closes_client_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sixpn.forward")
    closed_port = free_port()  # nothing listens there: connection refused
    async with forwarder("127.0.0.1", Endpoint("127.0.0.1", closed_port)) as fwd:
        for _ in range(2):  # and the forwarder keeps serving after the failure
            reader, writer = await asyncio.open_connection(*fwd.sockname)
            client = "{}:{}".format(*writer.get_extra_info("sockname")[:2])
            assert await read_all(reader) == b""
            writer.close()
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert any(client in m and f"127.0.0.1:{closed_port}" in m for m in warnings), warnings
    assert any("refused" in m.lower() for m in warnings)


async def test_dns_failure_closes_client_and_logs(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The resolver answers NXDOMAIN (without waiting on whatever DNS this machine has).
    async def nxdomain(host: str, port: int, **kw: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", nxdomain)
    caplog.set_level(logging.INFO, logger="sixpn.forward")
    async with forwarder("127.0.0.1", Endpoint("db.gone.test", 5432)) as fwd:
        reader, writer = await asyncio.open_connection(*fwd.sockname)
        client = "{}:{}".format(*writer.get_extra_info("sockname")[:2])
        assert await read_all(reader) == b""
        writer.close()
    assert (
        f"{client} -> db.gone.test:5432: resolving the target failed: Name or service not known"
        in caplog.text
    )


async def test_connection_limit(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sixpn.forward")
    with target(_Echo) as port:
        async with forwarder("127.0.0.1", Endpoint("127.0.0.1", port), max_connections=2) as fwd:
            held = []
            for i in range(2):
                reader, writer = await asyncio.open_connection(*fwd.sockname)
                writer.write(b"held %d" % i)
                assert await asyncio.wait_for(reader.readexactly(6), 5) == b"held %d" % i
                held.append((reader, writer))
            assert fwd.active == 2
            reader, writer = await asyncio.open_connection(*fwd.sockname)
            assert await read_all(reader) == b""  # closed at once, not queued
            writer.close()
            assert "refused" in caplog.text
            assert "maximum" in caplog.text
            # The two held connections still work; freeing one admits a new one.
            held[0][1].close()
            await wait_for(lambda: fwd.active == 1, "the first connection to end")
            reader, writer = await asyncio.open_connection(*fwd.sockname)
            writer.write(b"again!")
            assert await asyncio.wait_for(reader.readexactly(6), 5) == b"again!"
            writer.close()
            held[1][1].close()


async def test_idle_timeout_closes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sixpn.forward")
    with target(_Echo) as port:
        to = Endpoint("127.0.0.1", port)
        async with forwarder("127.0.0.1", to, idle_timeout=0.3) as fwd:
            reader, writer = await asyncio.open_connection(*fwd.sockname)
            writer.write(b"hi")
            assert await reader.readexactly(2) == b"hi"
            started = time.monotonic()
            assert await read_all(reader) == b""
            assert 0.25 <= time.monotonic() - started < 3
            writer.close()
    assert "idle timeout" in caplog.text


def test_sigterm_drains_then_exits_0(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "forward.log"
    with target(_Echo) as echo_port, log.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sixpn",
                "forward",
                f"127.0.0.1:{port}",
                f"127.0.0.1:{echo_port}",
                "--grace",
                "20",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            sock = None

            def connected() -> bool:
                nonlocal sock
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                return True

            wait_until(connected, 15, "the forwarder to listen")
            assert sock is not None
            first = os.urandom(1 << 20)
            sock.sendall(first)
            got = bytearray()
            while len(got) < len(first):
                got += sock.recv(1 << 20)
            assert got == first  # mid-transfer when SIGTERM arrives

            proc.send_signal(signal.SIGTERM)

            def refused() -> bool:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=2).close()
                except ConnectionRefusedError:
                    return True
                return False

            wait_until(refused, 10, "the forwarder to stop listening")
            assert proc.poll() is None  # still draining the open connection

            rest = os.urandom(4 << 20)
            sock.sendall(rest)
            sock.shutdown(socket.SHUT_WR)
            while data := sock.recv(1 << 20):
                got += data
            sock.close()
            assert got == first + rest
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
    text = log.read_text()
    assert f"sixpn forward: 127.0.0.1:{port} -> 127.0.0.1:{echo_port} (max 1024" in text
    assert f"{len(first) + len(rest)} bytes sent" in text

"""The C loop of the DNS UDP path (``sixpn.dns._fastpath``), over real UDP sockets on ``::1``.

``::1`` is not a 6PN source, so hits are tested with the extension's test-only argument
``any_source_net`` (every source counts as that network); without it every datagram from
``::1`` must come back as a miss, exactly as ``recvfrom`` would have given it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import dns.message
import dns.rcode
import pytest

from sixpn.core import dnswire
from sixpn.core.dnszone import ZoneSettings
from sixpn.dns import fastpath
from sixpn.dns.server import Counters, DnsServer
from sixpn.dns.zone import Zone

pytestmark = pytest.mark.unit

NET = 7
BUDGET = 256
_drain = fastpath.extension()


def drain(
    sock: socket.socket,
    responses: dict[tuple[int, bytes], bytes],
    rcodes: list[int],
    any_source_net: int | None = NET,
    budget: int = BUDGET,
) -> tuple[int, int, list[tuple[bytes, object]]]:
    assert _drain is not None, "sixpn.dns._fastpath is not built (pip install -e . with gcc)"
    return _drain(sock.fileno(), responses, rcodes, budget, any_source_net)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(server, client): non-blocking UDP sockets on ::1, the client connected to the server."""
    server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with server, client:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # room for 200 queued
        server.bind(("::1", 0))
        server.setblocking(False)
        client.bind(("::1", 0))
        client.connect(server.getsockname())
        client.settimeout(2)
        yield server, client


def query(qid: int, name: str = "web.internal") -> bytes:
    q = dns.message.make_query(name, "AAAA", use_edns=0)
    q.id = qid
    return q.to_wire()


def answer_tail(name: str = "web.internal", rcode: int = dnswire.NOERROR) -> bytes:
    """A cached value as the Python path stores it: a response without its 2-byte ID."""
    r = dns.message.make_response(dns.message.make_query(name, "AAAA", use_edns=0))
    r.set_rcode(rcode)
    return r.to_wire()[2:]


def test_hits_are_answered_with_the_clients_id(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    tail = answer_tail()
    responses = {(NET, query(0)[2:]): tail}
    rcodes = [0] * 24
    for qid in (1, 0xABCD):
        client.send(query(qid))
    received, dropped, misses = drain(server, responses, rcodes)
    assert (received, dropped, misses) == (2, 0, [])
    assert client.recv(4096) == b"\x00\x01" + tail
    assert client.recv(4096) == b"\xab\xcd" + tail
    assert rcodes[dnswire.NOERROR] == 2


def test_rcode_of_a_hit_is_counted(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    responses = {(NET, query(0)[2:]): answer_tail(rcode=dnswire.NXDOMAIN)}
    rcodes = [0] * 24
    client.send(query(9))
    assert drain(server, responses, rcodes)[:2] == (1, 0)
    assert dns.message.from_wire(client.recv(4096)).rcode() == dns.rcode.NXDOMAIN
    assert rcodes[dnswire.NXDOMAIN] == 1
    assert sum(rcodes) == 1


def test_misses_come_back_as_recvfrom_gives_them(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    responses = {(NET, query(0, "other.internal")[2:]): answer_tail("other.internal")}
    data = query(5)
    client.send(data)
    received, dropped, misses = drain(server, responses, [0] * 24)
    client.send(data)
    expected = server.recvfrom(4096)  # the same datagram from the same client
    assert (received, dropped) == (1, 0)
    assert misses == [expected]
    assert type(misses[0][1]) is type(expected[1])


def test_sources_outside_6pn_are_misses_without_the_test_argument(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    net_of_loopback = int.from_bytes(socket.inet_pton(socket.AF_INET6, "::1")[2:6], "big")
    responses = {(net_of_loopback, query(0)[2:]): answer_tail()}
    client.send(query(3))
    received, _, misses = drain(server, responses, [0] * 24, any_source_net=None)
    assert received == 1
    assert [m[0] for m in misses] == [query(3)]


def test_short_and_oversized_datagrams(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    client.send(b"\x00\x01\x02")  # under a header: Python's to drop (and count)
    client.send(b"\x00" * 5000)  # over 4096 bytes: dropped here
    received, dropped, misses = drain(server, {(NET, b"\x02"): b"\x00\x00"}, [0] * 24)
    assert (received, dropped) == (2, 1)
    assert [m[0] for m in misses] == [b"\x00\x01\x02"]


def test_a_batch_of_200(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    tail = answer_tail()
    responses = {(NET, query(0)[2:]): tail}
    for qid in range(200):
        client.send(query(qid, "web.internal" if qid % 4 else "miss.internal"))
    rcodes = [0] * 24
    received, dropped, misses = drain(server, responses, rcodes)  # batches of 64 until empty
    assert (received, dropped) == (200, 0)
    assert [int.from_bytes(d[:2], "big") for d, _ in misses] == list(range(0, 200, 4))
    answers = [client.recv(4096) for _ in range(150)]
    assert [int.from_bytes(a[:2], "big") for a in answers] == [i for i in range(200) if i % 4]
    assert all(a[2:] == tail for a in answers)
    assert rcodes[dnswire.NOERROR] == 150


def test_the_budget_bounds_one_call(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    responses = {(NET, query(0)[2:]): answer_tail()}
    for qid in range(100):
        client.send(query(qid))
    assert drain(server, responses, [0] * 24, budget=70)[:2] == (70, 0)  # 64 + 6
    assert drain(server, responses, [0] * 24, budget=70)[:2] == (30, 0)
    assert len([client.recv(4096) for _ in range(100)]) == 100


def test_a_change_of_the_dict_takes_effect(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    key = (NET, query(0)[2:])
    responses = {key: answer_tail()}
    client.send(query(1))
    drain(server, responses, [0] * 24)
    assert client.recv(4096)[2:] == answer_tail()
    responses[key] = answer_tail(rcode=dnswire.SERVFAIL)
    client.send(query(2))
    drain(server, responses, [0] * 24)
    assert client.recv(4096) == b"\x00\x02" + answer_tail(rcode=dnswire.SERVFAIL)
    responses.clear()
    client.send(query(3))
    assert len(drain(server, responses, [0] * 24)[2]) == 1
    assert len(drain(server, responses, [0] * 24, any_source_net=8)[2]) == 0  # socket empty
    client.send(query(4))
    responses[(8, key[1])] = answer_tail()
    assert drain(server, responses, [0] * 24)[2] != []  # network 7 has no answer; 8 has
    client.send(query(5))
    assert drain(server, responses, [0] * 24, any_source_net=8)[:3] == (1, 0, [])


def test_an_empty_socket(pair: tuple[socket.socket, socket.socket]) -> None:
    server, _ = pair
    assert drain(server, {}, [0] * 24) == (0, 0, [])


def test_bad_arguments_raise_instead_of_crashing(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, _ = pair
    assert _drain is not None
    with pytest.raises(TypeError):
        _drain(server.fileno(), [], [0] * 24, BUDGET)
    with pytest.raises(TypeError):
        _drain(server.fileno(), {}, [0] * 3, BUDGET)
    with pytest.raises(TypeError):
        _drain(server.fileno(), {}, [0] * 24)
    with pytest.raises(ValueError, match="out of range"):
        _drain(-1, {}, [0] * 24, BUDGET)
    assert _drain(99_999, {}, [0] * 24, BUDGET) == (0, 0, [])  # EBADF: nothing received


def test_pure_python_can_be_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fastpath.ENV_PURE_PYTHON, "1")
    assert fastpath.udp_drain() is None
    monkeypatch.setenv(fastpath.ENV_PURE_PYTHON, "0")
    assert fastpath.udp_drain() is _drain


async def test_the_server_uses_it_for_ipv6_and_refuses_non_6pn_sources() -> None:
    assert _drain is not None
    calls: list[int] = []

    def counting(*args: object) -> tuple[int, int, list[tuple[bytes, object]]]:
        calls.append(1)
        return _drain(*args)

    server = DnsServer(Zone(ZoneSettings(frozenset(), lambda _: 0.0)))
    server.ready = True
    server._fast = counting
    await server.start([("::1", 0)])
    try:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as client:
            client.setblocking(False)
            client.connect(server.bound()[0])
            client.send(query(77))
            reply = await asyncio.wait_for(loop.sock_recv(client, 4096), 2)
        response = dns.message.from_wire(reply)
        assert response.id == 77
        assert response.rcode() == dns.rcode.REFUSED
        assert calls
        assert server.counters.queries == 1
        assert server.counters.rcodes[dnswire.REFUSED] == 1
    finally:
        await server.close()


class _Zone:
    version = 3


def serve(
    sock: socket.socket, stop: int, lock: object, version: int = 3, counters: object = None
) -> object:
    module = __import__("sixpn.dns._fastpath", fromlist=["serve"])
    counters = counters or Counters()
    return module.serve(sock.fileno(), stop, {}, counters, BUDGET, lock, _Zone(), version)


def test_serve_waits_then_drains_under_the_lock(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    lock = threading.RLock()
    stop_r, stop_w = os.pipe()
    try:
        result: list[object] = []
        waiting = threading.Thread(target=lambda: result.append(serve(server, stop_r, lock)))
        waiting.start()
        waiting.join(0.2)
        assert waiting.is_alive()  # nothing to read: it waits (the GIL released: we run)
        client.send(query(5))
        waiting.join(5)
        ((misses),) = result
        assert misses[0][0] == query(5)  # type: ignore[index]  # ::1 is no 6PN source: a miss
        assert lock.acquire(blocking=False)  # released after the drain
        lock.release()

        counters = Counters()
        client.send(query(7))
        client.send(query(8))  # loopback: queued at the server's socket when send returns
        assert len(serve(server, stop_r, lock, counters=counters)) == 2  # type: ignore[arg-type]
        assert (counters.queries, counters.dropped) == (2, 0)  # counted as the server counts

        client.send(query(6))
        assert serve(server, stop_r, lock, version=2) is False  # the zone moved: nothing drained
        assert drain(server, {}, [0] * 16, any_source_net=None)[0] == 1  # still queued
        os.write(stop_w, b"x")
        assert serve(server, stop_r, lock) is None  # told to stop
    finally:
        os.close(stop_r)
        os.close(stop_w)


async def test_a_udp_thread_logs_a_failure_and_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unexpected exception, while answering one datagram or in the thread's own loop, is
    logged and costs that datagram at most: the next query on the socket is answered."""
    assert _drain is not None
    server = DnsServer(Zone(ZoneSettings(frozenset(), lambda _: 0.0)))
    server.ready = True
    faults: list[str] = []
    answer, serve_ = server._answer, server._serve
    assert serve_ is not None

    def answer_failing(*args: Any) -> Any:
        if faults and faults[0] == "answer":
            faults.pop()
            raise RuntimeError("injected: answering")
        return answer(*args)

    def serve_failing(*args: Any) -> Any:
        if faults and faults[0] == "serve":
            faults.pop()
            raise RuntimeError("injected: the thread's loop")
        return serve_(*args)

    server._answer = answer_failing  # type: ignore[method-assign]
    server._serve = serve_failing  # the faults are injected; the thread and socket are real
    await server.start([("::1", 0)])
    try:
        assert server._threads  # the IPv6 socket is served by a thread of its own
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as client:
            client.setblocking(False)
            client.connect(server.bound()[0])
            for fault in ("answer", "serve"):
                faults.append(fault)
                client.send(query(1))  # lost to the fault (or answered: serve failed first)
                await asyncio.wait_for(_until(lambda: not faults), 5)
                client.send(query(2))
                while True:
                    reply = dns.message.from_wire(
                        await asyncio.wait_for(loop.sock_recv(client, 4096), 5)
                    )
                    if reply.id == 2:
                        break
                assert reply.rcode() == dns.rcode.REFUSED  # ::1 is no 6PN source
        assert server.counters.failures == 2
        logged = [r for r in caplog.records if r.name == "sixpn.dns.server" and r.exc_info]
        assert "injected: answering" in str(logged[0].exc_info)  # the first, with its traceback
    finally:
        await server.close()


async def _until(done: Any) -> None:
    while not done():
        await asyncio.sleep(0.01)

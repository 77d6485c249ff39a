"""The upstream forwarder (SPEC 4.3, ``dns/forward.py``) against real DNS servers on loopback.

Each test starts its own tiny upstream (dnspython messages over asyncio UDP and TCP on one
random 127.0.0.1 port): ``example.test. A`` is 192.0.2.1, ``big.test. TXT`` does not fit in 512
bytes (TC over UDP without EDNS, the full answer over TCP), anything else is NXDOMAIN. It can be
told to stay silent, to send forged answers before the real one, or to echo the question in
another letter case. Waits are events and deadlines, never sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sixpn.dns.forward import Forwarder, servfail, upstreams_from_resolv_conf

pytestmark = pytest.mark.component

MARGIN = 0.25  # seconds of scheduling slack allowed on top of a deadline (xdist, 2 cores)
BIG_TXT = [c * 200 for c in "wxyz"]  # ~800 bytes of answer, four distinct rdatas


class FakeUpstream:
    """A DNS server on ``host``: the same port number over UDP and TCP."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 0
        self.silent = False
        self.spoof = False
        self.shout = False  # echo the question name in upper case (a 0x20-style upstream)
        self.udp: list[dns.message.Message] = []
        self.tcp: list[dns.message.Message] = []
        self._seen = asyncio.Event()  # set on every query received
        self._udp_transport: asyncio.DatagramTransport | None = None
        self._spoof_transport: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tcp_tasks: set[asyncio.Task[None]] = set()

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)

    async def start(self) -> FakeUpstream:
        loop = asyncio.get_running_loop()
        for _ in range(20):  # a free UDP port whose TCP twin is free too
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, 0)
            )
            port = transport.get_extra_info("sockname")[1]
            try:
                self._tcp_server = await asyncio.start_server(self._on_tcp, self.host, port)
            except OSError:
                transport.close()
                continue
            self._udp_transport, self.port = transport, port
            break
        else:
            raise RuntimeError("no free UDP+TCP port pair on loopback")
        self._spoof_transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=(self.host, 0)
        )
        return self

    async def close(self) -> None:
        for transport in (self._udp_transport, self._spoof_transport):
            if transport is not None:
                transport.close()
        if self._tcp_server is not None:
            self._tcp_server.close()
            for task in self._tcp_tasks:
                task.cancel()
            await asyncio.gather(*self._tcp_tasks, return_exceptions=True)
            await self._tcp_server.wait_closed()

    async def wait_queries(self, n: int, within: float = 2.0) -> None:
        async with asyncio.timeout(within):
            while len(self.udp) + len(self.tcp) < n:
                self._seen.clear()
                await self._seen.wait()

    def _note(self, log: list[dns.message.Message], query: dns.message.Message) -> None:
        log.append(query)
        self._seen.set()

    def answer(self, query: dns.message.Message, *, over_tcp: bool) -> bytes:
        r = dns.message.make_response(query)
        q = query.question[0]
        if q.name.to_text() == "example.test." and q.rdtype == dns.rdatatype.A:
            r.answer.append(dns.rrset.from_text(q.name, 60, "IN", "A", "192.0.2.1"))
        elif q.name.to_text() == "big.test." and q.rdtype == dns.rdatatype.TXT:
            r.answer.append(dns.rrset.from_text_list(q.name, 60, "IN", "TXT", BIG_TXT))
        else:
            r.set_rcode(dns.rcode.NXDOMAIN)
        wire = r.to_wire()
        limit = query.payload if query.edns >= 0 else 512
        if not over_tcp and len(wire) > limit:  # RFC 1035 4.2.1: truncate, set TC
            r = dns.message.make_response(query)
            r.flags |= dns.flags.TC
            wire = r.to_wire()
        if self.shout:
            wire = wire.replace(b"example", b"EXAMPLE")
        return wire

    def on_udp(self, data: bytes, addr: Any) -> None:
        query = dns.message.from_wire(data)
        self._note(self.udp, query)
        if self.silent:
            return
        assert self._udp_transport is not None
        assert self._spoof_transport is not None
        if self.spoof:
            for transport, forged in self._forgeries(query):
                transport.sendto(forged, addr)
        self._udp_transport.sendto(self.answer(query, over_tcp=False), addr)

    def _forgeries(
        self, query: dns.message.Message
    ) -> list[tuple[asyncio.DatagramTransport, bytes]]:
        """Answers with 198.51.100.66, each wrong in one way: source, ID, question."""
        assert self._udp_transport is not None
        assert self._spoof_transport is not None

        def forged(name: str, qid: int) -> bytes:
            r = dns.message.make_response(dns.message.make_query(name, "A", use_edns=False))
            r.id = qid
            r.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "198.51.100.66"))
            return r.to_wire()

        name = query.question[0].name.to_text()
        return [
            (self._spoof_transport, forged(name, query.id)),  # from another port
            (self._udp_transport, forged(name, query.id ^ 0x5555)),  # wrong ID
            (self._udp_transport, forged("evil.test.", query.id)),  # wrong question
        ]

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tcp_tasks.add(task)
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                query = dns.message.from_wire(await reader.readexactly(size))
                self._note(self.tcp, query)
                if self.silent:
                    continue
                wire = self.answer(query, over_tcp=True)
                writer.write(len(wire).to_bytes(2, "big") + wire)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._tcp_tasks.discard(task)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, upstream: FakeUpstream) -> None:
        self.upstream = upstream

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.upstream.on_udp(data, addr)


@pytest.fixture
async def make_upstream() -> AsyncIterator[Callable[..., Awaitable[FakeUpstream]]]:
    started: list[FakeUpstream] = []

    async def make(host: str = "127.0.0.1", **behaviour: bool) -> FakeUpstream:
        up = FakeUpstream(host)
        for key, value in behaviour.items():
            setattr(up, key, value)
        started.append(await up.start())
        return up

    yield make
    for up in started:
        await up.close()


@pytest.fixture
async def make_forwarder() -> AsyncIterator[Callable[..., Forwarder]]:
    made: list[Forwarder] = []

    def make(upstreams: list[tuple[str, int]], **kwargs: Any) -> Forwarder:
        made.append(Forwarder(upstreams, **kwargs))
        return made[-1]

    yield make
    for fwd in made:
        await fwd.close()
        assert fwd.counters.inflight == 0


def query(name: str, rdtype: str = "A", qid: int = 0x1234) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, use_edns=False)
    q.id = qid
    return q


async def ask(
    fwd: Forwarder, q: dns.message.Message, *, over_tcp: bool = False
) -> tuple[dns.message.Message, float]:
    """The parsed answer (checked to answer ``q``: ID, QR, question) and the seconds it took."""
    t0 = time.monotonic()
    wire = await fwd.resolve(q.to_wire(), over_tcp=over_tcp)
    elapsed = time.monotonic() - t0
    r = dns.message.from_wire(wire)
    assert q.is_response(r), r
    return r, elapsed


def addresses(r: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in r.answer for rd in rrset]


def assert_servfail(r: dns.message.Message) -> None:
    assert r.rcode() == dns.rcode.SERVFAIL
    assert r.flags & dns.flags.QR
    assert r.flags & dns.flags.RA
    assert r.flags & dns.flags.RD


async def test_answer_comes_back_under_the_clients_id_and_question(
    make_upstream: Any, make_forwarder: Any
) -> None:
    up = await make_upstream()
    fwd = make_forwarder([up.addr])
    r, _ = await ask(fwd, query("example.test."))
    assert addresses(r) == ["192.0.2.1"]
    assert up.udp[0].question == query("example.test.").question
    # Many at once over the one shared socket: each gets its own answer under its own ID.
    qs = [query("example.test." if i % 2 else "nope.test.", qid=i) for i in range(50)]
    answers = await asyncio.gather(*(ask(fwd, q) for q in qs))
    for i, (r, _) in enumerate(answers):
        assert r.rcode() == (dns.rcode.NOERROR if i % 2 else dns.rcode.NXDOMAIN)
    assert fwd.counters.forwarded == 51
    assert fwd.counters.servfail == 0
    assert fwd.counters.inflight == 0


async def test_truncated_udp_answer_is_asked_again_over_tcp(
    make_upstream: Any, make_forwarder: Any
) -> None:
    up = await make_upstream()
    fwd = make_forwarder([up.addr])
    r, _ = await ask(fwd, query("big.test.", "TXT"))
    assert not r.flags & dns.flags.TC
    assert len(r.to_wire()) > 512
    assert len(r.answer[0]) == len(BIG_TXT)
    assert (len(up.udp), len(up.tcp)) == (1, 1)
    assert fwd.counters.tcp_fallbacks == 1
    assert fwd.counters.forwarded == 1


async def test_client_over_tcp_is_forwarded_over_tcp(
    make_upstream: Any, make_forwarder: Any
) -> None:
    up = await make_upstream()
    fwd = make_forwarder([up.addr])
    r, _ = await ask(fwd, query("big.test.", "TXT", qid=7), over_tcp=True)
    assert len(r.answer[0]) == len(BIG_TXT)
    assert (len(up.udp), len(up.tcp)) == (0, 1)
    assert fwd.counters.tcp_fallbacks == 0


async def test_silent_upstream_gives_servfail_by_the_deadline(
    make_upstream: Any, make_forwarder: Any, caplog: pytest.LogCaptureFixture
) -> None:
    up = await make_upstream(silent=True)
    fwd = make_forwarder([up.addr], timeout=5.0, deadline=0.4)
    caplog.set_level(logging.WARNING, logger="sixpn.dns.forward")
    for _ in range(2):
        r, elapsed = await ask(fwd, query("example.test."))
        assert_servfail(r)
        assert 0.35 <= elapsed <= 0.4 + MARGIN
    assert fwd.counters.servfail == 2
    assert fwd.counters.timeouts == 2
    assert len(caplog.records) == 1  # one warning per upstream per minute, not per query


async def test_all_upstreams_silent_deadline_caps_the_attempts(
    make_upstream: Any, make_forwarder: Any
) -> None:
    a, b, c = [await make_upstream(silent=True) for _ in range(3)]
    fwd = make_forwarder([a.addr, b.addr, c.addr], timeout=0.3, deadline=0.5)
    r, elapsed = await ask(fwd, query("example.test."))
    assert_servfail(r)
    assert 0.45 <= elapsed <= 0.5 + MARGIN
    assert (len(a.udp), len(b.udp), len(c.udp)) == (1, 1, 0)


async def test_silent_first_upstream_then_working_second(
    make_upstream: Any, make_forwarder: Any
) -> None:
    dead, live = await make_upstream(silent=True), await make_upstream()
    fwd = make_forwarder([dead.addr, live.addr], timeout=0.2, deadline=1.0)
    r, elapsed = await ask(fwd, query("example.test."))
    assert addresses(r) == ["192.0.2.1"]
    assert 0.15 <= elapsed <= 0.2 + MARGIN
    assert fwd.counters.timeouts == 1
    # The upstream that just failed is now tried last: the next query is answered at once.
    r, _ = await ask(fwd, query("example.test.", qid=2))
    assert addresses(r) == ["192.0.2.1"]
    assert (len(dead.udp), len(live.udp)) == (1, 2)


async def test_forged_answers_are_ignored(make_upstream: Any, make_forwarder: Any) -> None:
    up = await make_upstream(spoof=True)
    fwd = make_forwarder([up.addr], timeout=1.0)
    for qid in (1, 2, 3):
        r, _ = await ask(fwd, query("example.test.", qid=qid))
        assert addresses(r) == ["192.0.2.1"]
    assert fwd.counters.forwarded == 3


async def test_question_case_from_upstream_does_not_matter(
    make_upstream: Any, make_forwarder: Any
) -> None:
    up = await make_upstream(shout=True)
    fwd = make_forwarder([up.addr], timeout=1.0)
    r = dns.message.from_wire(await fwd.resolve(query("example.test.").to_wire()))
    assert r.id == 0x1234
    assert r.question[0].name.to_text() == "EXAMPLE.test."
    assert addresses(r) == ["192.0.2.1"]


async def test_beyond_max_inflight_servfail_at_once(
    make_upstream: Any, make_forwarder: Any
) -> None:
    up = await make_upstream(silent=True)
    fwd = make_forwarder([up.addr], timeout=0.5, deadline=0.5, max_inflight=2)
    waiting = [asyncio.create_task(ask(fwd, query("example.test.", qid=i))) for i in (1, 2)]
    try:
        await up.wait_queries(2)
        assert fwd.counters.inflight == 2
        r, elapsed = await ask(fwd, query("example.test.", qid=3))
        assert_servfail(r)
        assert elapsed < 0.05
        assert fwd.counters.rejected_busy == 1
        assert len(up.udp) == 2
    finally:
        done = await asyncio.gather(*waiting)
    for r, _ in done:
        assert_servfail(r)
    assert fwd.counters.inflight == 0
    assert fwd.counters.servfail == 3


async def test_no_upstreams_servfail_at_once(make_forwarder: Any) -> None:
    fwd = make_forwarder([])
    r, elapsed = await ask(fwd, query("example.test.", qid=0xBEEF))
    assert_servfail(r)
    assert elapsed < 0.05
    assert fwd.counters.servfail == 1


async def test_close_fails_waiting_queries_at_once(make_upstream: Any, make_forwarder: Any) -> None:
    up = await make_upstream(silent=True)
    fwd = make_forwarder([up.addr], timeout=5.0, deadline=5.0)
    waiting = asyncio.create_task(ask(fwd, query("example.test.")))
    await up.wait_queries(1)
    await fwd.close()
    async with asyncio.timeout(1.0):
        r, _ = await waiting
    assert_servfail(r)
    r, _ = await ask(fwd, query("example.test.", qid=9))
    assert_servfail(r)


async def test_ipv6_loopback_upstream(make_upstream: Any, make_forwarder: Any) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        up = await make_upstream("::1")
    except OSError as e:
        pytest.skip(f"no ::1 on this host: {e}")
    fwd = make_forwarder([up.addr])
    r, _ = await ask(fwd, query("example.test."))
    assert addresses(r) == ["192.0.2.1"]
    r, _ = await ask(fwd, query("big.test.", "TXT"))
    assert len(r.answer[0]) == len(BIG_TXT)
    assert fwd.counters.tcp_fallbacks == 1


def test_servfail_of_an_unreadable_query_is_a_bare_header() -> None:
    r = dns.message.from_wire(servfail(b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05ab"))
    assert r.id == 0xABCD
    assert r.question == []
    assert r.rcode() == dns.rcode.SERVFAIL
    assert len(servfail(b"\x01")) == 12


@given(st.binary(max_size=80))
def test_servfail_never_raises(junk: bytes) -> None:
    assert len(servfail(junk)) >= 12


_LABEL = st.from_regex(r"[A-Za-z0-9-]{1,20}", fullmatch=True)


@given(st.lists(_LABEL, min_size=1, max_size=5), st.sampled_from(["A", "AAAA", "TXT", "MX"]))
def test_servfail_answers_any_query(labels: list[str], rdtype: str) -> None:
    q = dns.message.make_query(".".join(labels) + ".", rdtype)
    r = dns.message.from_wire(servfail(q.to_wire()))
    assert q.is_response(r)
    assert_servfail(r)


def test_upstreams_from_resolv_conf(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "# Generated by the host\n"
        "; another comment\n"
        "search example.com corp.example\n"
        "options ndots:5 timeout:1\n"
        "nameserver 192.0.2.53\n"
        "  nameserver\t2001:db8::53   # trailing comment\n"
        "nameserver fdaa:0:1:a7b::3\n"
        "nameserver fe80::1%eth0\n"
        "nameserver not-an-address\n"
        "nameserver 300.1.2.3\n"
        "nameserver\n"
        "nameserver 192.0.2.53\n"
        "garbage line here\n"
        "nameserver192.0.2.99\n"
    )
    assert upstreams_from_resolv_conf(str(conf)) == [
        ("192.0.2.53", 53),
        ("2001:db8::53", 53),
        ("fe80::1%eth0", 53),
    ]
    assert upstreams_from_resolv_conf(str(conf), exclude=lambda a: ":" in a) == [("192.0.2.53", 53)]
    assert upstreams_from_resolv_conf(str(tmp_path / "missing")) == []

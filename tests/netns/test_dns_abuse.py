"""DNS under abuse (issue 17, SPEC 10): a running `sixpn dns` keeps answering legitimate queries
while it is flooded with TCP connections that send nothing, slowloris connections, a client
that never reads its answers, and 100k malformed UDP datagrams; its memory stays bounded.

The server runs in a namespace and follows a control plane on a Unix socket, as in
``test_dns.py``. The UDP flood comes from a separate process in the namespace (from a 6PN address
of the network, and from ``::1``, which is refused); the idle and slowloris connections from this
process; the legitimate client (dnspython over UDP and TCP, and the real `dig` once) asks real
`.internal` names meanwhile. A UDP query is retried as a stub resolver does, every second,
five times at most (a datagram the kernel drops when the flood fills the socket is not the
server's refusal); a TCP query is asked once, on a new connection, and must be answered within
10 s. Both must be the right answer.

The server's resident memory (VmRSS of its process) after the flood, and its peak (VmHWM),
must stay within ``MEMORY_BOUND`` of what it was before it.

Below, the rule at the connection cap (``dns.tcp``) on a cap of 2 or 3 over ``::1``: who is
closed to make room, and that a newcomer is closed when every connection is being answered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import re
import select
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from sixpn.core import addressing
from sixpn.dns import tcp
from sixpn.lab import netns
from tests.harness import ServerProcess, wait_until
from tests.netns.dnsutil import DNS, DnsProcess, dig, query

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
IDLE = 2 * tcp.MAX_CONNECTIONS  # connections that send nothing: twice the cap
STALLED = 8  # of each slowloris kind
DATAGRAMS = 100_000
MEMORY_BOUND = 32 << 20  # bytes of VmRSS (and of its peak) above the level before the abuse


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@dataclass
class Target:
    ns: str
    source: str  # a client address of the network
    dns: DnsProcess
    expected: dict[tuple[str, str], set[str]]  # (name, type) -> the answer's rdata
    log: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("dns-abuse")
    control = ServerProcess(db=tmp / "server.db", uds=tmp / "api.sock")
    with netns.temporary("dnsabuse") as ns:
        control.start()
        proc: DnsProcess | None = None
        try:
            api = control.client()
            assert api.post("/v1/orgs", json={"name": "alpha"}).status_code == 201
            net_id = api.get("/v1/orgs/alpha/networks/default").json()["net_id"]
            body = {"name": "h-fra", "region": "fra", "endpoint": "192.0.2.7:51820"}
            assert api.post("/v1/hosts", json=body | {"public_key": key()}).status_code == 201
            addresses: dict[str, set[str]] = {"web": set(), "db": set()}
            for app, count in (("web", 3), ("db", 1)):
                assert api.post("/v1/orgs/alpha/apps", json={"name": app}).status_code == 201
                for _ in range(count):
                    r = api.post("/v1/orgs/alpha/machines", json={"app": app, "host": "h-fra"})
                    assert r.status_code == 201, r.text
                    addresses[app].add(r.json()["address"])
            source = str(addressing.encode(net_id, 0, 0, 0x100))
            netns.add_address(ns, f"{source}/128")
            netns.add_address(ns, "fdaa::3/128")
            # Names outside .internal go to an upstream that does not exist (nothing leaves).
            proc = DnsProcess(ns, control, tmp / "dns.log", upstreams=("127.0.0.1:9",))
            proc.start(source)
            expected = {
                ("web.internal", "AAAA"): addresses["web"],
                ("db.internal", "AAAA"): addresses["db"],
                ("_apps.internal", "TXT"): {'"db,web"'},
            }
            yield Target(ns, source, proc, expected)
        finally:
            if proc is not None:
                proc.kill()
            control.kill()


# -- the malformed datagrams --------------------------------------------------------------------

QNAME = b"\x03web\x08internal\x00"
AAAA_IN = b"\x00\x1c\x00\x01"
OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"  # EDNS(0), 1232 bytes, no options


def header(rng: random.Random, flags: int = 0x0100, qd: int = 1, an: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!6H", rng.getrandbits(16), flags, qd, an, 0, ar)


def malformed(rng: random.Random) -> bytes:
    """One datagram a server must survive: every way a query can be wrong, at random."""
    kind = rng.randrange(18)
    h = header(rng)
    match kind:
        case 0:  # shorter than a header
            return rng.randbytes(rng.randrange(12))
        case 1:  # garbage
            return rng.randbytes(rng.randrange(12, 512))
        case 2:  # QDCOUNT 0, with and without a question after it
            return header(rng, qd=0) + (QNAME + AAAA_IN if rng.random() < 0.5 else b"")
        case 3:  # QDCOUNT 2
            return header(rng, qd=2) + (QNAME + AAAA_IN) * 2
        case 4:  # compression loops: a pointer to itself, a loop through a label
            return h + rng.choice([b"\xc0\x0c", b"\x03web\xc0\x0c", b"\xc0\x10\xc0\x0c"]) + AAAA_IN
        case 5:  # huge label counts: 200 labels (over 255 bytes), 2,000 labels
            return h + b"\x01a" * rng.choice([200, 2000]) + b"\x08internal\x00" + AAAA_IN
        case 6:  # a label running past the end, a reserved label type (0x40)
            return h + rng.choice([b"\x3fabc", b"\x41" + b"x" * 65 + b"\x00" + AAAA_IN])
        case 7:  # a response (QR set), with an answer
            rr = b"\xc0\x0c" + AAAA_IN + b"\x00\x00\x00\x05\x00\x10" + rng.randbytes(16)
            return header(rng, flags=0x8180, an=1) + QNAME + AAAA_IN + rr
        case 8:  # EDNS: an OPT record cut short
            return header(rng, ar=1) + QNAME + AAAA_IN + OPT[: rng.randrange(1, 11)]
        case 9:  # EDNS: RDLENGTH past the end
            return header(rng, ar=1) + QNAME + AAAA_IN + OPT[:9] + b"\xff\xff" + b"\x00\x0a"
        case 10:  # EDNS: version 7 (BADVERS), or options that do not add up
            opt = OPT[:6] + b"\x07" + OPT[7:] if rng.random() < 0.5 else OPT[:9] + b"\x00\x06"
            return header(rng, ar=1) + QNAME + AAAA_IN + opt + b"\x00\x0a\x00\x40ab"
        case 11:  # more additional records than there are
            return header(rng, ar=5) + QNAME + AAAA_IN + OPT + rng.randbytes(7)
        case 12:  # opcodes other than QUERY (IQUERY, STATUS, NOTIFY, UPDATE, unassigned)
            op = rng.choice([1, 2, 4, 5, 9, 15])
            return header(rng, flags=op << 11) + QNAME + AAAA_IN
        case 13:  # classes other than IN: CH, HS, NONE, ANY
            return h + QNAME + b"\x00\x1c" + struct.pack("!H", rng.choice([3, 4, 254, 255]))
        case 14:  # odd types: 0, OPT as a question, ANY, AXFR, 65535
            return h + QNAME + struct.pack("!H", rng.choice([0, 41, 255, 252, 65535])) + b"\0\1"
        case 15:  # over 4096 bytes
            return h + rng.randbytes(rng.randrange(4097, 9000))
        case 16:  # a name of random bytes, case and all
            labels = b"".join(bytes([n]) + rng.randbytes(n) for n in (rng.randrange(1, 20),) * 2)
            return h + labels + b"\x08internal\x00" + AAAA_IN
        case _:  # a real query with bytes changed or cut
            packet = bytearray(h + QNAME + AAAA_IN + (OPT if rng.random() < 0.5 else b""))
            for _ in range(rng.randrange(1, 5)):
                packet[rng.randrange(12, len(packet))] = rng.getrandbits(8)
            return bytes(packet[: rng.randrange(12, len(packet) + 1)])


def flood(source: str, count: int, seed: int) -> None:
    """Send ``count`` malformed datagrams to fdaa::3:53, one in ten from ::1 (a source outside
    6PN), as fast as the sockets take them. Run in the namespace, in a process of its own."""
    rng = random.Random(seed)
    socks = []
    for address in (source, "::1"):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # answers: dropped here
        sock.bind((address, 0))
        socks.append(sock)
    for i in range(count):
        packet, sock = malformed(rng), socks[i % 10 == 0]
        while True:
            try:
                sock.sendto(packet, (DNS, 53))
                break
            except BlockingIOError:
                select.select([], [sock], [], 0.1)
    print(count, "sent")


# -- what the test observes ----------------------------------------------------------------------


def vm(pid: int, field_: str) -> int:
    """A /proc/<pid>/status memory field (VmRSS, VmHWM) in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(rf"^{field_}:\s+(\d+) kB$", status, re.MULTILINE)
    assert found, status
    return int(found.group(1)) * 1024


def metric(page: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", page, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def ask_udp(t: Target, name: str, qtype: str) -> tuple[set[str], int]:
    """The answer's rdata over UDP, asked as a stub resolver does: the same query again after a
    second without an answer, five times at most. Also how many times it was sent."""
    q = dns.message.make_query(name, qtype, use_edns=0)
    sock = netns.socket_in(t.ns, socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.bind((t.source, 0))
        sock.setblocking(False)
        for attempt in range(1, 6):
            try:
                reply = dns.query.udp(q, DNS, timeout=1.0, sock=sock, ignore_unexpected=True)
            except dns.exception.Timeout:
                continue
            assert reply.rcode() == dns.rcode.NOERROR, reply
            return {rr.to_text() for rrset in reply.answer for rr in rrset}, attempt
    finally:
        sock.close()
    raise AssertionError(f"{name} {qtype}: no answer over UDP in 5 tries")


def ask_tcp(t: Target, name: str, qtype: str) -> set[str]:
    reply = query(t.ns, t.source, name, qtype, tcp=True, timeout=10.0)
    assert reply.rcode() == dns.rcode.NOERROR, reply
    return {rr.to_text() for rrset in reply.answer for rr in rrset}


def connect(t: Target, rcvbuf: int = 0) -> socket.socket:
    sock = netns.socket_in(t.ns, socket.AF_INET6, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((t.source, 0))
    sock.settimeout(5)
    sock.connect((DNS, 53))
    return sock


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """The server closed or reset ``sock`` within ``timeout`` s (whatever it left unread)."""
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(timeout * 1000))


class Trickle:
    """Slowloris on the body: a 300-byte query announced, then one byte every half second."""

    def __init__(self, socks: list[socket.socket]) -> None:
        self.socks = socks
        self.sent = [0] * len(socks)  # bytes of the body after the header, until it failed
        self.failed = [False] * len(socks)  # a send failed: the server had closed it
        self.stop = threading.Event()
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.sendall(b"\x01\x2c" + header(random.Random(1)))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            for i, sock in enumerate(self.socks):
                if not self.failed[i]:
                    try:
                        sock.send(b"a")
                        self.sent[i] += 1
                    except OSError:
                        self.failed[i] = True

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def test_legitimate_queries_are_answered_under_abuse(target: Target) -> None:
    t = target
    assert t.dns.proc is not None
    pid = t.dns.proc.pid
    assert "sixpn" in Path(f"/proc/{pid}/cmdline").read_text()  # ip netns exec execs in place
    for (name, qtype), rdata in t.expected.items():  # warm: what every later query reuses
        assert ask_udp(t, name, qtype)[0] == rdata
        assert ask_tcp(t, name, qtype) == rdata
    rss_before = vm(pid, "VmRSS")

    socks: list[socket.socket] = []
    trickle: Trickle | None = None
    flooder: subprocess.Popen[str] | None = None
    try:
        idle = [connect(t) for _ in range(IDLE)]  # twice the cap, sending nothing
        socks += idle
        one_byte = [connect(t) for _ in range(STALLED)]  # one byte of the length, then nothing
        socks += one_byte
        for sock in one_byte:
            with contextlib.suppress(OSError):  # (already closed by the server: as good)
                sock.sendall(b"\x00")
        body = [connect(t) for _ in range(STALLED)]
        socks += body
        trickle = Trickle(body)
        deaf = connect(t, rcvbuf=4096)  # asks and asks, and never reads an answer
        socks.append(deaf)
        deaf.setblocking(False)
        asked = dns.message.make_query("_apps.internal", "TXT").to_wire()
        with_length = len(asked).to_bytes(2, "big") + asked
        for _ in range(20_000):
            try:
                deaf.send(with_length)
            except OSError:  # its buffers are full (or the server closed it)
                break

        code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
        code += (
            f"from tests.netns.test_dns_abuse import flood; flood({t.source!r}, {DATAGRAMS}, 17)"
        )
        flooder = subprocess.Popen(
            netns.exec_argv(t.ns, [sys.executable, "-c", code]),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        answered = {"udp": 0, "tcp": 0, "dig": 0}
        retried = 0
        keys = list(t.expected)
        while flooder.poll() is None or answered["tcp"] < 20:
            name, qtype = keys[sum(answered.values()) % len(keys)]
            got, sent = ask_udp(t, name, qtype)
            assert got == t.expected[(name, qtype)], (name, qtype)
            answered["udp"] += 1
            retried += sent > 1
            assert ask_tcp(t, name, qtype) == t.expected[(name, qtype)], (name, qtype)
            answered["tcp"] += 1
            if not answered["dig"]:
                d = dig(t.ns, t.source, "web.internal", "AAAA", "+tries=5", "+time=1")
                assert d.status == "NOERROR", d
                assert set(d.answers) == t.expected[("web.internal", "AAAA")]
                answered["dig"] += 1
        out, _ = flooder.communicate(timeout=60)
        assert flooder.returncode == 0, out
        assert f"{DATAGRAMS} sent" in out
        t.log.append(f"answered during the flood: {answered}, UDP queries retried: {retried}")

        page = t.dns.metrics()
        counted = ["queries_total", "dropped_total"]
        counted += [f'answers_total{{rcode="{r}"}}' for r in ("NOERROR", "FORMERR", "REFUSED")]
        t.log.append(", ".join(f"{c} {metric(page, 'sixpn_dns_' + c):.0f}" for c in counted))
        assert metric(page, "sixpn_dns_tcp_connections") <= tcp.MAX_CONNECTIONS
        assert metric(page, 'sixpn_dns_tcp_closed_at_cap_total{which="oldest"}') >= IDLE // 2
        assert metric(page, "sixpn_dns_failures_total") == 0
        # The slowloris connections and the deaf one are closed by the idle deadline (10 s),
        # however much they trickle: the tricklers were sending a byte every half second all
        # along (and would need 2 more minutes to complete their query).
        for what, group in (("one byte", one_byte), ("trickled", body), ("deaf", [deaf])):
            for i, sock in enumerate(group):
                assert closed_by_server(sock, 3 * tcp.IDLE_SECONDS), (what, i, t.dns.metrics())
        assert min(trickle.sent) >= 5, trickle.sent
        # The oldest idle connections made room for the newer ones and the client's.
        assert sum(closed_by_server(s, 0) for s in idle) >= IDLE - tcp.MAX_CONNECTIONS
        peak = vm(pid, "VmHWM")
    finally:
        if trickle is not None:
            trickle.close()
        for sock in socks:
            sock.close()
        if flooder is not None and flooder.poll() is None:
            flooder.kill()
            flooder.wait(timeout=10)

    wait_until(
        lambda: metric(t.dns.metrics(), "sixpn_dns_tcp_connections") == 0,
        15,
        "the server to see every flood connection closed",
    )
    rss_after = vm(pid, "VmRSS")
    t.log.append(
        f"VmRSS before {rss_before >> 20} MiB, after {rss_after >> 20} MiB, peak {peak >> 20} MiB"
    )
    print("\n".join(t.log))
    assert rss_after - rss_before < MEMORY_BOUND, t.log
    assert peak - rss_before < MEMORY_BOUND, t.log
    # And it answers as before, over both transports.
    for (name, qtype), rdata in t.expected.items():
        assert ask_udp(t, name, qtype)[0] == rdata
        assert ask_tcp(t, name, qtype) == rdata
    assert t.dns.alive()
    assert "Traceback" not in t.dns.log.read_text()


# -- the rule at the cap, on a small cap (dns.tcp.Connections on ::1, any answer) ----------------

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _serving(conns: tcp.Connections, answer: tcp.Answer) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(lambda r, w: conns.serve(r, w, answer), "::1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _ask(conn: Conn, body: bytes = b"abc") -> bytes:
    reader, writer = conn
    writer.write(len(body).to_bytes(2, "big") + body)
    await writer.drain()
    size = int.from_bytes(await reader.readexactly(2), "big")
    return await reader.readexactly(size)


async def _closed(conn: Conn) -> bool:
    try:
        return await asyncio.wait_for(conn[0].read(), 5) == b""
    except ConnectionResetError:
        return True


async def _until(done: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not done():
            await asyncio.sleep(0.01)


async def _echo(data: bytes, source: str) -> bytes | None:
    return data


async def test_at_the_cap_the_least_recently_active_connection_makes_room() -> None:
    conns = tcp.Connections(cap=3)
    server, port = await _serving(conns, _echo)
    try:
        a, b, c = [await asyncio.open_connection("::1", port) for _ in range(3)]
        await _until(lambda: len(conns) == 3)
        assert await _ask(a) == b"abc"  # a is now the most recently active: b, c, a
        d = await asyncio.open_connection("::1", port)
        assert await _closed(b)
        e = await asyncio.open_connection("::1", port)
        assert await _closed(c)
        for conn in (a, d, e):
            assert await _ask(conn) == b"abc"
        assert (len(conns), conns.evicted, conns.refused) == (3, 2, 0)
    finally:
        server.close()


async def test_at_the_cap_with_every_connection_answering_a_new_one_is_closed() -> None:
    gate = asyncio.Event()

    async def slow(data: bytes, source: str) -> bytes | None:
        await gate.wait()  # an answer being forwarded upstream, say
        return data

    conns = tcp.Connections(cap=2)
    server, port = await _serving(conns, slow)
    try:
        a, b = [await asyncio.open_connection("::1", port) for _ in range(2)]
        asked = [asyncio.ensure_future(_ask(conn)) for conn in (a, b)]
        await _until(lambda: sum(c.busy for c in conns._open) == 2)
        assert await _closed(await asyncio.open_connection("::1", port))
        assert conns.refused == 1
        gate.set()
        assert [await q for q in asked] == [b"abc", b"abc"]
        c = await asyncio.open_connection("::1", port)  # now a makes room
        assert await _closed(a)
        assert await _ask(c) == b"abc"
    finally:
        server.close()

"""The DNS server: `.internal` answers from the zone, everything else forwarded, UDP and TCP.

The UDP path is the hot path (ARCHITECTURE habit 10): one ``loop.add_reader`` per socket whose
callback drains the socket with non-blocking ``recvfrom`` until EAGAIN (bounded per wake-up so
that other work still runs), checks the source on its text form and 4 packed bytes, looks the
pre-encoded answer up by (network, lowercased name, type) and patches the client's ID and
question in. No task, future or DNS object is made for a `.internal` query.

With the C loop (``dns.fastpath``), each IPv6 UDP socket is served by a thread of its own that
waits in ``poll`` and drains the socket itself: a query arriving alone (a host's DNS at its
usual rate, one wake-up per query) then costs a wake-up of that thread, not a turn of the event
loop (its selector, its handles, the callback), which was most of the CPU a paced query cost
over Unbound's and Knot's (docs/benchmarks.md). The zone and the server's kept state are shared
with the event loop (changes, TCP, forwarding) under the zone's lock; forwarded queries are
handed to the event loop.

Who may ask (SPEC 4.1): the network of a query is the network field of its source address; a
source outside ``fdaa::/16`` gets REFUSED for every name, `.internal` or not.

One answer path (``_answer``) for UDP and TCP: parse, refuse a non-6PN source, the error rcodes,
hand a name outside `.internal` back to be forwarded, SERVFAIL until the zone is loaded, look
up, respond within the size limit. Around it, UDP adds what only UDP has: the whole responses
kept by their query bytes (``_keep``, which the C loop answers from) and forwarding from a UDP
thread through the event loop; TCP (``dns.tcp``: framing, idle deadline, the bound on
connections and who is closed at it) awaits the forwarder itself.

Under abuse (SPEC 10): whatever a datagram holds, it is answered, refused or dropped and
counted, never raised out of the loop; an unexpected exception while answering one datagram is
logged (at most once a minute, with how many since) and costs that datagram only, and one in a
UDP thread's own loop is logged the same way and the thread goes on serving its socket. What
the server keeps per query (sources, whole responses, the zone's answers) is bounded by count.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sixpn.core import dnswire
from sixpn.dns import fastpath, tcp
from sixpn.dns.forward import Forwarder
from sixpn.dns.zone import Zone

log = logging.getLogger("sixpn.dns.server")

_BUDGET = 256  # datagrams per wake-up before yielding to the loop
_MAX_DATAGRAM = 4096
_RCVBUF = 4 << 20
_IPV6_FREEBIND = 78  # linux/in6.h; bind fdaa::3 before the address is on an interface
MAX_FORWARDS_PENDING = 4096
_MAX_SOURCES = 65536  # remembered source addresses; past it the map starts again
_MAX_RESPONSES = 200_000  # remembered whole responses; likewise (~65 MiB when all are full)
_LOG_EVERY = 60.0  # seconds between two logged failures of the UDP path
_PAUSE_AFTER_FAILURE = 0.05  # seconds a UDP thread waits after its own loop failed (no spin)


@dataclass
class Counters:
    """Plain integers bumped on the hot path (no allocation); read by the metrics collector."""

    queries: int = 0
    dropped: int = 0
    forwarded: int = 0
    failures: int = 0  # unexpected exceptions on the UDP path (logged; the thread goes on)
    rcodes: list[int] = field(default_factory=lambda: [0] * 24)


def network_of(host: str) -> int | None:
    """The network ID of a 6PN source address in text form, else None (not 6PN)."""
    if not host.startswith("fdaa:"):
        return None
    try:
        packed = socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        return None
    return int.from_bytes(packed[2:6], "big")


def _bound_socket(host: str, port: int, kind: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_FREEBIND, 1)
        if kind == socket.SOCK_DGRAM:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class DnsServer:
    def __init__(self, zone: Zone, forwarder: Forwarder | None = None) -> None:
        self.zone = zone
        self.forwarder = forwarder
        self.counters = Counters()
        self.ready = False  # until the zone has loaded a first snapshot: SERVFAIL for .internal
        self._udp: list[socket.socket] = []
        self._tcp: list[asyncio.Server] = []
        self.tcp = tcp.Connections()
        self._tasks: set[asyncio.Task[None]] = set()
        self._nets: dict[str, int | None] = {}  # source address text -> network ID
        self._responses: dict[tuple[int, bytes], bytes] = {}  # (network, query[2:]) -> answer[2:]
        self._response_keys: dict[int, list[tuple[int, bytes]]] = {}  # by network, to forget
        self._responses_version = -1
        self._fast = fastpath.udp_drain()  # the C loop for IPv6 sockets, None if not available
        self._serve = fastpath.udp_serve()  # its UDP threads' wait and drain
        self._threads: dict[int, tuple[threading.Thread, int]] = {}  # fd -> (thread, stop pipe)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._lock = zone.lock  # the zone, the kept responses and the counters
        self._failed_at = -_LOG_EVERY  # when a UDP path failure was last logged
        self._failed_since = 0  # failures not logged since
        self._not_ready = dnswire.Entry(
            dnswire.SERVFAIL,
            b"\x00\x01\x00\x00\x00\x00\x00\x00",
            b"\x00\x01" + b"\x00" * 5 + b"\x01",
            b"",
        )

    async def start(self, addresses: list[tuple[str, int]]) -> None:
        """Serve UDP and TCP on every (address, port). Port 0 picks one (see ``bound``)."""
        try:
            for host, port in addresses:
                await self.listen(host, port)
        except BaseException:
            await self.close()
            raise
        log.info("serving DNS on %s", ", ".join(f"[{h}]:{p}" for h, p, *_ in self.bound()))

    async def listen(self, host: str, port: int) -> None:
        """Serve one more address (a gateway adds ``<net48>::3`` when a network gets peers)."""
        udp = _bound_socket(host, port, socket.SOCK_DGRAM)
        try:
            stream = _bound_socket(host, udp.getsockname()[1], socket.SOCK_STREAM)
            self._tcp.append(await asyncio.start_server(self._serve_tcp, sock=stream))
        except BaseException:
            udp.close()
            raise
        self._udp.append(udp)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        if self._serve and udp.family == socket.AF_INET6:
            self._start_thread(udp)
        else:
            self._loop.add_reader(udp.fileno(), self._drain, udp)

    async def unlisten(self, host: str) -> None:
        """Stop serving ``host`` (a gateway's ``<net48>::3`` whose network lost its last peer)."""
        address = ipaddress.ip_address(host)

        def on(sock: socket.socket) -> bool:
            return ipaddress.ip_address(sock.getsockname()[0]) == address

        for sock in [s for s in self._udp if on(s)]:
            self._stop_udp(sock)
            self._udp.remove(sock)
        for server in [s for s in self._tcp if any(on(x) for x in s.sockets)]:
            server.close()
            self._tcp.remove(server)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await server.wait_closed()

    def bound(self) -> list[tuple[str, int]]:
        return [s.getsockname()[:2] for s in self._udp]

    async def close(self) -> None:
        for sock in self._udp:
            self._stop_udp(sock)
        self._udp.clear()
        for server in self._tcp:
            server.close()
        for server in self._tcp:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await server.wait_closed()
        self._tcp.clear()
        for task in list(self._tasks):
            task.cancel()

    # -- UDP: the hot path ----------------------------------------------------------------------

    def _start_thread(self, sock: socket.socket) -> None:
        stop_r, stop_w = os.pipe()
        thread = threading.Thread(
            target=self._serve_udp, args=(sock, stop_r), name="dns-udp", daemon=True
        )
        self._threads[sock.fileno()] = (thread, stop_w)
        thread.start()

    def _serve_udp(self, sock: socket.socket, stop: int) -> None:
        """A UDP socket's thread: wait without the GIL, answer the kept responses in C, the rest
        here, until ``stop`` is readable (``fastpath.Serve``)."""
        serve = self._serve
        assert serve is not None
        fd, counters, lock, zone = sock.fileno(), self.counters, self._lock, self.zone
        where = sock.getsockname()[0]
        try:
            while True:
                try:
                    misses = serve(
                        fd,
                        stop,
                        self._responses,
                        counters,
                        _BUDGET,
                        lock,
                        zone,
                        self._responses_version,
                    )
                    if misses is None:
                        return
                    if misses is False:  # the zone changed: drop what it changed, then drain
                        with lock:
                            self._drain_c(sock)
                    elif isinstance(misses, list) and misses:
                        with lock:
                            self._answer_misses(sock, misses)
                except Exception:  # a bug: say so, and keep the socket answered
                    self._failed(f"DNS UDP thread for {where}")
                    if select.select([stop], [], [], _PAUSE_AFTER_FAILURE)[0]:
                        return
        finally:
            os.close(stop)

    def _failed(self, what: str) -> None:
        """Log the exception being handled, at most once per ``_LOG_EVERY`` seconds (a bug a
        flood can trigger must not flood the log), with how many were not logged since."""
        with self._lock:
            self.counters.failures += 1
            now = time.monotonic()
            if now - self._failed_at < _LOG_EVERY:
                self._failed_since += 1
                return
            since, self._failed_at, self._failed_since = self._failed_since, now, 0
        log.exception("%s failed (going on; %d more failures since the last logged)", what, since)

    def _stop_udp(self, sock: socket.socket) -> None:
        found = self._threads.pop(sock.fileno(), None)
        if found is None:
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
        else:
            thread, stop_w = found
            os.write(stop_w, b"x")
            thread.join(timeout=5)
            os.close(stop_w)
        sock.close()

    def _drain(self, sock: socket.socket) -> None:
        if self.zone.version != self._responses_version:
            self._forget_changed()
        responses = self._responses
        rcodes = self.counters.rcodes
        nets = self._nets
        recvfrom = sock.recvfrom
        sendto = sock.sendto
        received = 0
        try:
            for _ in range(_BUDGET):
                try:
                    data, addr = recvfrom(_MAX_DATAGRAM)
                except BlockingIOError:
                    return
                except OSError:
                    continue
                received += 1
                host = addr[0]
                net_id = nets.get(host, -1)
                if net_id == -1:
                    net_id = self._learn_source(host)
                if net_id is not None:
                    # The fast path: this very query (flags, question, EDNS) was answered
                    # before for this network, and nothing changed since.
                    hit = responses.get((net_id, data[2:]))
                    if hit is not None:
                        rcodes[hit[1] & 0x0F] += 1
                        try:
                            sendto(data[:2] + hit, addr)
                        except OSError:
                            self.counters.dropped += 1
                        continue
                try:
                    out = self._answer(data, net_id, 0)
                except Exception:
                    self._failed("answering a DNS query over UDP")
                    continue
                if isinstance(out, bytes):
                    try:
                        sendto(out, addr)
                    except OSError:
                        self.counters.dropped += 1  # socket buffer full or the client is gone
                elif out is not None:
                    self._forward_soon(sock, data, addr, out)
        finally:
            self.counters.queries += received

    def _drain_c(self, sock: socket.socket) -> None:
        """``_drain`` with the C loop: cache hits never reach Python, misses go on as there."""
        if self.zone.version != self._responses_version:
            self._forget_changed()
        assert self._fast is not None
        counters = self.counters
        received, dropped, misses = self._fast(
            sock.fileno(), self._responses, counters.rcodes, _BUDGET
        )
        counters.queries += received
        counters.dropped += dropped
        self._answer_misses(sock, misses)

    def _answer_misses(self, sock: socket.socket, misses: list[tuple[bytes, Any]]) -> None:
        """What the C loop did not answer: ``_answer_udp`` for each, inlined (still hot)."""
        nets = self._nets
        answer = self._answer
        for data, addr in misses:
            host = addr[0]
            net_id = nets.get(host, -1)
            if net_id == -1:
                net_id = self._learn_source(host)
            try:
                out = answer(data, net_id, 0)
            except Exception:  # one datagram lost, not the rest of the batch nor the thread
                self._failed("answering a DNS query over UDP")
                continue
            if isinstance(out, bytes):
                self._send(sock, out, addr)
            elif out is not None:
                self._forward_soon(sock, data, addr, out)

    def _forget_changed(self) -> None:
        """Drop the kept responses of the networks that changed (all after a reload): a change
        in one network costs what that network had kept, not the whole cache."""
        changed = self.zone.take_changed()
        self._responses_version = self.zone.version
        if changed is None:
            self._responses.clear()
            self._response_keys.clear()
            return
        for net_id in changed:
            for key in self._response_keys.pop(net_id, ()):
                self._responses.pop(key, None)

    def _learn_source(self, host: str) -> int | None:
        nets = self._nets
        if len(nets) >= _MAX_SOURCES:
            nets.clear()
        net_id = nets[host] = network_of(host)
        return net_id

    def _answer_udp(
        self, sock: socket.socket, data: bytes, addr: tuple[str, int], net_id: int | None
    ) -> bytes | None:
        """``_answer`` for a datagram: the response to send, or None (dropped, or forwarded:
        the event loop sends the upstreams' answer; a UDP thread hands it over)."""
        out = self._answer(data, net_id, 0)
        if not isinstance(out, tuple):
            return out
        self._forward_soon(sock, data, addr, out)
        return None

    def _forward_soon(
        self, sock: socket.socket, data: bytes, addr: tuple[str, int], q: dnswire.Query
    ) -> None:
        qend, _, _, edns_size = q
        if self._loop is None or threading.get_ident() == self._loop_thread:
            self._forward_udp(sock, data, addr, qend, edns_size)
        else:  # a UDP thread: forwarding is the event loop's
            self._loop.call_soon_threadsafe(self._forward_udp, sock, data, addr, qend, edns_size)

    def _keep(self, net_id: int, data: bytes, out: bytes) -> None:
        """Keep the whole response to the query bytes ``data`` from ``net_id``, so that a repeat
        costs one dict lookup (in C, ``fastpath``): only for a query that holds nothing that
        changes per query beyond its ID (no EDNS option such as a cookie)."""
        if len(self._responses) >= _MAX_RESPONSES:
            self._responses.clear()
            self._response_keys.clear()
        key = (net_id, data[2:])
        self._responses[key] = out[2:]
        self._response_keys.setdefault(net_id, []).append(key)

    def _forward_udp(
        self, sock: socket.socket, data: bytes, addr: tuple[str, int], qend: int, edns_size: int
    ) -> None:
        if len(self._tasks) >= MAX_FORWARDS_PENDING:
            self._send(sock, dnswire.error_response(data, dnswire.SERVFAIL), addr)
            return
        task = asyncio.ensure_future(self._forward_and_send(sock, data, addr, qend, edns_size))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward_and_send(
        self, sock: socket.socket, data: bytes, addr: tuple[str, int], qend: int, edns_size: int
    ) -> None:
        out = await self._forward(data, over_tcp=False)
        if len(out) > dnswire.udp_limit(edns_size):
            # The forwarder fell back to TCP for a large answer: this client asked over UDP.
            out = dnswire.truncated(data, qend, out[3] & 0x0F, edns=edns_size > 0)
        self._send(sock, out, addr)

    def _send(self, sock: socket.socket, out: bytes, addr: tuple[str, int]) -> None:
        try:
            sock.sendto(out, addr)
        except OSError:
            self.counters.dropped += 1

    # -- the answer path, UDP and TCP ----------------------------------------------------------

    def _answer(self, data: bytes, net_id: int | None, limit: int) -> bytes | dnswire.Query | None:
        """The answer to one query from network ``net_id`` (None: not a 6PN source), counted by
        its rcode: the response, at most ``limit`` bytes (0: the client's UDP limit, and the
        response is kept for a repeat of these bytes when it may be, ``_keep``); None to drop
        the query (no readable header, or itself a response); the parsed query when its name
        is not `.internal`, for the caller to forward. Called with the zone's lock held."""
        q = dnswire.parse_query(data)
        if q is None:
            self.counters.dropped += 1
            return None
        if net_id is None:
            rcode = dnswire.REFUSED
        elif isinstance(q, int):
            rcode = q
        elif not q[1].endswith(dnswire.SUFFIX):
            if self.forwarder is not None:
                return q
            rcode = dnswire.SERVFAIL
        else:
            qend, qname, qtype, edns_size = q
            entry = self.zone.lookup(net_id, qname, qtype) if self.ready else self._not_ready
            self.counters.rcodes[entry.rcode] += 1
            out = dnswire.respond(
                data, qend, edns_size, entry, limit or dnswire.udp_limit(edns_size)
            )
            if not limit and self.ready and len(data) == qend + (11 if edns_size else 0):
                self._keep(net_id, data, out)
            return out
        self.counters.rcodes[rcode & 0x0F] += 1
        return dnswire.error_response(data, rcode)

    async def answer(self, data: bytes, source: str, *, over_tcp: bool) -> bytes | None:
        """One query's answer (TCP, and tests), forwarded if need be; None to drop it."""
        with self._lock:  # shared with the UDP threads
            self.counters.queries += 1
            out = self._answer(data, network_of(source), dnswire.MAX_MESSAGE if over_tcp else 0)
        if isinstance(out, tuple):
            return await self._forward(data, over_tcp=over_tcp)
        return out

    async def _forward(self, data: bytes, *, over_tcp: bool) -> bytes:
        """The upstreams' answer (never raises: SERVFAIL when they fail), counted."""
        assert self.forwarder is not None
        with self._lock:
            self.counters.forwarded += 1
        out = await self.forwarder.resolve(data, over_tcp=over_tcp)
        with self._lock:
            self.counters.rcodes[out[3] & 0x0F] += 1
        return out

    # -- TCP ------------------------------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.tcp.serve(reader, writer, self._answer_tcp)

    async def _answer_tcp(self, data: bytes, source: str) -> bytes | None:
        return await self.answer(data, source, over_tcp=True)

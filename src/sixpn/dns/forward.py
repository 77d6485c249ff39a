"""Forwarding names outside ``.internal`` to the host's upstream resolvers (SPEC 4.3).

Rules:

- Upstreams come from the configuration, by default the host's ``/etc/resolv.conf``; addresses
  in fdaa::/16 are dropped (forwarding to ourselves would loop).
- UDP first, over one shared non-blocking socket per address family, drained in a loop per
  wake-up. Each query goes out under a fresh random 16-bit ID not in flight to that upstream; a
  reply is accepted only if it comes from the upstream asked, carries that ID and the same
  question (names compared case-insensitively), so blind spoofing has to guess all three
  (RFC 5452). The client's ID is put back before the answer is returned.
- A truncated UDP answer (TC) is asked again of the same upstream over TCP (RFC 7766, 2-byte
  length prefix); a client that came over TCP is forwarded over TCP directly. If that TCP
  fallback fails, the truncated answer is returned (the client may retry over TCP itself).
- Each attempt has ``timeout`` seconds; on a timeout or error the next upstream is tried (an
  upstream that failed recently is tried after the healthy ones). ``resolve`` never raises for
  network trouble and never takes longer than ``deadline``: it answers SERVFAIL instead.
- An upstream's answer is passed on whatever its RCODE (its own SERVFAIL included).
- At most ``max_inflight`` queries are in flight; beyond that SERVFAIL at once (no queue).
- An upstream's failure is logged at most once a minute per upstream, never per query.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger("sixpn.dns.forward")

_SELF_PREFIX = ipaddress.IPv6Network("fdaa::/16")
_WARN_EVERY = 60.0  # seconds between two warnings about the same upstream
_DEMOTE_FOR = 30.0  # seconds a failed upstream is tried after the healthy ones
_DRAIN_MAX = 512  # datagrams read per wake-up; the reader is level-triggered, the rest waits
_QR, _TC, _RD_OPCODE, _CD, _RA = 0x80, 0x02, 0x79, 0x10, 0x80
_SERVFAIL = 2

Addr = tuple[str, int]


def _strip_scope(address: str) -> str:
    return address.partition("%")[0]


def _is_self(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(_strip_scope(address))
    except ValueError:
        return False
    return ip.version == 6 and ip in _SELF_PREFIX


def upstreams_from_resolv_conf(
    path: str = "/etc/resolv.conf", *, exclude: Callable[[str], bool] = _is_self
) -> list[Addr]:
    """The ``nameserver`` lines of a resolv.conf as (address, 53), in order, without duplicates.

    Comments, other options and lines whose address does not parse are skipped; IPv6 scoped
    addresses ("fe80::1%eth0") are kept as given. A missing file gives an empty list.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        log.warning("reading upstream resolvers from %s: %s", path, e)
        return []
    found: list[Addr] = []
    for line in lines:
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) < 2 or fields[0] != "nameserver":
            continue
        address = fields[1]
        try:
            ipaddress.ip_address(_strip_scope(address))
        except ValueError:
            continue
        if "%" in address and (address.endswith("%") or ":" not in address):
            continue  # a scope needs an IPv6 address and a zone name
        if not exclude(address) and (address, 53) not in found:
            found.append((address, 53))
    return found


def _question(msg: bytes) -> tuple[int, bytes] | None:
    """(end offset, case-folded QDCOUNT + question section), or None if unreadable."""
    if len(msg) < 12:
        return None
    out, pos = bytearray(msg[4:6]), 12
    for _ in range(int.from_bytes(msg[4:6], "big")):
        while True:
            # Past the end, a compression pointer (none in a question we accept) or a bad label.
            if pos >= len(msg) or (n := msg[pos]) > 63 or pos + 1 + n > len(msg):
                return None
            out += msg[pos : pos + 1 + n].lower()  # length bytes are < 64: lower() skips them
            pos += n + 1
            if n == 0:
                break
        if pos + 4 > len(msg):
            return None
        out += msg[pos : pos + 4]
        pos += 4
    return pos, bytes(out)


def servfail(query: bytes) -> bytes:
    """A SERVFAIL response to ``query``: its ID, opcode, RD, CD and question if readable."""
    head = query[:4].ljust(4, b"\0")
    flags = bytes([_QR | (head[2] & _RD_OPCODE), _RA | (head[3] & _CD) | _SERVFAIL])
    q = _question(query)
    if q is None:
        return head[:2] + flags + bytes(8)
    return head[:2] + flags + query[4:6] + bytes(6) + query[12 : q[0]]


@dataclass(slots=True)
class ForwarderCounters:
    forwarded: int = 0  # answers from an upstream returned to the client
    servfail: int = 0  # SERVFAILs we made (all upstreams failed, deadline, busy, none)
    timeouts: int = 0  # attempts that timed out
    tcp_fallbacks: int = 0  # truncated UDP answers asked again over TCP
    inflight: int = 0  # queries being forwarded now
    rejected_busy: int = 0  # queries refused because max_inflight were in flight


@dataclass(frozen=True, slots=True)
class _Upstream:
    host: str
    port: int
    family: int
    sockaddr: tuple[object, ...]  # for sendto (carries the IPv6 scope ID)
    key: Addr  # as recvfrom reports the source address


class _Rejected(Exception):
    """A TCP reply that does not answer our query."""


# What an attempt may fail with; TimeoutError and ConnectionError are OSErrors,
# IncompleteReadError (the peer closed mid-answer) an EOFError.
_FAILURES = (OSError, EOFError, _Rejected)


class Forwarder:
    def __init__(
        self,
        upstreams: Sequence[Addr],
        *,
        timeout: float = 1.0,
        deadline: float = 2.5,
        max_inflight: int = 1024,
    ) -> None:
        self._upstreams: list[_Upstream] = []
        for host, port in upstreams:
            try:  # numeric only: no lookup, but a scoped address needs its interface to exist
                info = socket.getaddrinfo(
                    host, port, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST
                )[0]
            except (OSError, UnicodeError) as e:
                log.warning("ignoring upstream resolver %r port %d: %s", host, port, e)
                continue
            sockaddr = info[4]
            key = (str(sockaddr[0]), int(sockaddr[1]))
            self._upstreams.append(_Upstream(host, port, info[0], tuple(sockaddr), key))
        self._timeout, self._deadline = timeout, deadline
        # Below 2**16 so that a fresh ID not in flight to an upstream always exists.
        self._max_inflight = min(max_inflight, 0xFFFF)
        self.counters = ForwarderCounters()
        self._socks: dict[int, socket.socket] = {}
        self._pending: dict[tuple[Addr, int], tuple[asyncio.Future[bytes], bytes]] = {}
        self._demoted_until: dict[Addr, float] = {}
        self._warned_at: dict[Addr, float] = {}
        self._closed = False

    async def resolve(self, query: bytes, *, over_tcp: bool = False) -> bytes:
        """The upstream's answer to ``query`` under the client's ID, or SERVFAIL; never raises."""
        c = self.counters
        if not self._upstreams or self._closed:
            c.servfail += 1
            return servfail(query)
        if c.inflight >= self._max_inflight:
            c.rejected_busy += 1
            c.servfail += 1
            return servfail(query)
        c.inflight += 1
        try:
            answer = await self._forward(query, over_tcp)
        finally:
            c.inflight -= 1
        if answer is None:
            c.servfail += 1
            return servfail(query)
        c.forwarded += 1
        return query[:2] + answer[2:]

    async def close(self) -> None:
        """Close the sockets; queries still waiting on UDP answer SERVFAIL."""
        self._closed = True
        for sock in self._socks.values():
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        self._socks.clear()
        for fut, _ in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionAbortedError("forwarder closed"))

    async def _forward(self, query: bytes, over_tcp: bool) -> bytes | None:
        q = _question(query)
        if q is None:
            return None
        qkey = q[1]
        loop = asyncio.get_running_loop()
        end = loop.time() + self._deadline
        now, ordered = time.monotonic(), self._upstreams
        if self._demoted_until:  # stable sort: healthy ones first, each group in config order
            ordered = sorted(ordered, key=lambda u: self._demoted_until.get(u.key, 0) > now)
        for up in ordered:
            if loop.time() >= end:
                break
            try:
                if over_tcp:
                    answer = await self._tcp(up, query, qkey, end)
                else:
                    answer = await self._udp(up, query, qkey, end)
                    if answer[2] & _TC:
                        self.counters.tcp_fallbacks += 1
                        try:
                            answer = await self._tcp(up, query, qkey, end)
                        except _FAILURES as e:  # keep the truncated answer
                            self._failed(up, e, "TCP fallback")
            except _FAILURES as e:
                self._failed(up, e, "UDP" if not over_tcp else "TCP")
                continue
            self._demoted_until.pop(up.key, None)
            return answer
        return None

    def _attempt_timeout(self, end: float) -> float:
        remaining = end - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise TimeoutError
        return min(self._timeout, remaining)

    async def _udp(self, up: _Upstream, query: bytes, qkey: bytes, end: float) -> bytes:
        limit = self._attempt_timeout(end)
        sock = self._socket(up.family)
        qid = secrets.randbits(16)
        while (up.key, qid) in self._pending:
            qid = secrets.randbits(16)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[(up.key, qid)] = (fut, qkey)
        try:
            sock.sendto(qid.to_bytes(2, "big") + query[2:], up.sockaddr)
            async with asyncio.timeout(limit):
                return await fut
        finally:
            del self._pending[(up.key, qid)]

    async def _tcp(self, up: _Upstream, query: bytes, qkey: bytes, end: float) -> bytes:
        qid = secrets.randbits(16)
        async with asyncio.timeout(self._attempt_timeout(end)):
            reader, writer = await asyncio.open_connection(up.host, up.port)
            try:
                msg = qid.to_bytes(2, "big") + query[2:]
                writer.write(len(msg).to_bytes(2, "big") + msg)
                size = int.from_bytes(await reader.readexactly(2), "big")
                answer = await reader.readexactly(size)
            finally:
                writer.close()  # FIN after our few bytes; no need to wait for the peer's
        got = _question(answer)
        if answer[:2] != msg[:2] or not answer[2] & _QR or got is None or got[1] != qkey:
            raise _Rejected("TCP answer does not match the query")
        return answer

    def _socket(self, family: int) -> socket.socket:
        if self._closed:
            raise ConnectionAbortedError("forwarder closed")
        sock = self._socks.get(family)
        if sock is None:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
                asyncio.get_running_loop().add_reader(sock.fileno(), self._drain, sock)
            except BaseException:
                sock.close()
                raise
            self._socks[family] = sock
        return sock

    def _drain(self, sock: socket.socket) -> None:
        for _ in range(_DRAIN_MAX):
            try:
                data, src = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # an ICMP error surfaced; the attempt it concerns will time out
            if len(data) < 12 or not data[2] & _QR:
                continue
            entry = self._pending.get(((src[0], src[1]), int.from_bytes(data[:2], "big")))
            if entry is None or entry[0].done():
                continue
            got = _question(data)
            if got is not None and got[1] == entry[1]:
                entry[0].set_result(data)

    def _failed(self, up: _Upstream, e: Exception, what: str) -> None:
        if isinstance(e, TimeoutError):
            self.counters.timeouts += 1
        now = time.monotonic()
        self._demoted_until[up.key] = now + _DEMOTE_FOR
        last = self._warned_at.get(up.key)
        if last is None or now - last >= _WARN_EVERY:
            self._warned_at[up.key] = now
            why = "timed out" if isinstance(e, TimeoutError) else repr(e)
            log.warning("%s query to upstream %s port %d: %s", what, up.host, up.port, why)

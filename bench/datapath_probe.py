"""The propagation probes, in a process of their own: ``python datapath_probe.py`` serves them.

Why a process: the probes are the observer, and must see a change the moment it happens. The
system under test (control plane, agents) runs at the benchmark's priority in autogroups of its
own; probes in the benchmark's own process, at the default priority in the caller's session,
were starved by the agents' reconciles for tens of milliseconds right when it mattered (measured:
the first query of a probe went out 35-75 ms late). The helper gets a session of its own and a
higher priority (:class:`Prober`); it uses next to no CPU.

Protocol, one JSON object per line. In (stdin): ``{"id": N, "probe": "tcp", "ns": NS,
"address": A, "deadline": T}`` or ``{"id": N, "probe": "dns", "ns": NS, "name": Q, "address":
A, "want": "has" | "lacks", "deadline": T}``. Out (stdout): ``{"id": N, "t": T or null}``. T is
``time.monotonic()``, which is the same clock in every process of the machine. Each probe runs
in a thread that entered namespace NS (``setns`` is per thread); several threads per namespace,
so probes of one namespace run side by side. EOF on stdin ends the helper.

- tcp: non-blocking TCP connects to ``[A]:9``, a fresh one every 2 ms (several in flight); the
  first refused (RST) or accepted proves packets crossed both ways. Attempts that fail
  (ICMPv6 unreachable) or hang are dropped and replaced.
- dns: an AAAA query for Q to ``fdaa::3`` every 2 ms at most until the answer is NOERROR and
  lists A (``has``) or lists addresses but not A (``lacks``). The query is encoded once (only
  its ID changes) and answers are read as bytes: the probe costs the DNS server next to nothing.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import json
import os
import random
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rdatatype
from datapath_measure import BenchError, prioritize

NETNS_DIR = Path("/var/run/netns")
DNS_SERVER = "fdaa::3"
PROBE_PORT = 9  # nothing listens: a refused connect proves the round trip
_CLONE_NEWNET = 0x40000000


def first_contact(address: str, deadline: float, every: float = 0.002) -> float | None:
    """Monotonic time of the first TCP connect to ``[address]:9`` refused or accepted."""
    sel = selectors.DefaultSelector()
    started: dict[socket.socket, float] = {}
    next_at = time.monotonic()
    try:
        while (now := time.monotonic()) < deadline:
            if now >= next_at:
                next_at = now + every
                s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                s.setblocking(False)
                err = s.connect_ex((address, PROBE_PORT, 0, 0))
                if err in (0, errno.ECONNREFUSED):
                    s.close()
                    return time.monotonic()
                if err == errno.EINPROGRESS:
                    sel.register(s, selectors.EVENT_WRITE)
                    started[s] = now
                else:  # no route yet, or unreachable at once
                    s.close()
            for key, _ in sel.select(timeout=max(0.0, next_at - time.monotonic())):
                done = key.fileobj
                assert isinstance(done, socket.socket)
                err = done.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err in (0, errno.ECONNREFUSED):
                    return time.monotonic()
                sel.unregister(done)
                started.pop(done, None)
                done.close()
            for s, t in list(started.items()):
                if time.monotonic() - t > 0.5:  # lost; later attempts cover the same instant
                    sel.unregister(s)
                    del started[s]
                    s.close()
        return None
    finally:
        for s in started:
            s.close()
        sel.close()


Answer = Callable[[bytes], bool]  # on a response of the right ID: is it the awaited one?


def dns_until(name: str, done: Answer, deadline: float, every: float = 0.002) -> float | None:
    """Monotonic time of the first answer from ``fdaa::3`` to ``name AAAA`` for which ``done``.

    One query per ``every`` at most (the query is encoded once; only its ID changes), answers
    read as bytes: the probe must cost the DNS server and the agents next to nothing.
    """
    q = dns.message.make_query(name, dns.rdatatype.AAAA)
    q.flags &= ~dns.flags.RD
    wire = q.to_wire()
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ)
    qid = random.randrange(0x10000)
    try:
        while time.monotonic() < deadline:
            qid = (qid + 1) & 0xFFFF
            s.sendto(struct.pack("!H", qid) + wire[2:], (DNS_SERVER, 53))
            sent = time.monotonic()
            while (left := sent + 0.02 - time.monotonic()) > 0:
                if not sel.select(timeout=left):
                    break  # lost or late: ask again
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                got = time.monotonic()
                if len(data) < 12 or struct.unpack("!H", data[:2])[0] != qid:
                    continue  # a late answer to an earlier query
                if done(data):
                    return got
                break  # an answer, not yet the one: ask again
            if (rest := sent + every - time.monotonic()) > 0:
                time.sleep(rest)
        return None
    finally:
        sel.close()
        s.close()


def _noerror(data: bytes) -> bool:
    """NOERROR, not truncated, at least one answer record."""
    return data[3] & 0x0F == 0 and not data[2] & 0x02 and struct.unpack("!H", data[6:8])[0] > 0


def has_address(address: str) -> Answer:
    """The answer lists ``address`` (its 16 bytes are an AAAA record's data: the question holds
    a name, and no other machine has the same address)."""
    packed = ipaddress.IPv6Address(address).packed
    return lambda data: _noerror(data) and packed in data[12:]


def lacks_address(address: str) -> Answer:
    """The answer lists addresses (the probe machines), none of them ``address``."""
    packed = ipaddress.IPv6Address(address).packed
    return lambda data: _noerror(data) and packed not in data[12:]


def _enter(ns: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / ns, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


def _probe(cmd: dict[str, Any]) -> float | None:
    deadline = float(cmd["deadline"])
    if cmd["probe"] == "tcp":
        return first_contact(cmd["address"], deadline)
    want = has_address if cmd["want"] == "has" else lacks_address
    return dns_until(cmd["name"], want(cmd["address"]), deadline)


def serve() -> None:
    """Read probes from stdin, answer on stdout, until EOF."""
    pools: dict[str, ThreadPoolExecutor] = {}
    lock = threading.Lock()

    def report(n: int, t: float | None) -> None:
        with lock:
            sys.stdout.write(json.dumps({"id": n, "t": t}) + "\n")
            sys.stdout.flush()

    def one(cmd: dict[str, Any]) -> None:
        try:
            t = _probe(cmd)
        except OSError as exc:
            print(f"probe {cmd}: {exc}", file=sys.stderr, flush=True)
            t = None
        report(int(cmd["id"]), t)

    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            ns = str(cmd["ns"])
            if ns not in pools:
                pools[ns] = ThreadPoolExecutor(
                    4, thread_name_prefix=f"in-{ns}", initializer=_enter, initargs=(ns,)
                )
            pools[ns].submit(one, cmd)
    finally:
        for pool in pools.values():
            pool.shutdown(wait=True, cancel_futures=True)


class Prober:
    """The client side: starts the helper (own session, ``nice``), sends probes, waits for them."""

    def __init__(self, nice: int, log: Path) -> None:
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                start_new_session=True,
            )
        prioritize(self.proc.pid, nice)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise BenchError(f"the probe helper did not start (see {log})")
        self._next = 0
        self._done: dict[int, float | None] = {}

    def submit(self, **cmd: Any) -> int:
        assert self.proc.stdin is not None
        self._next += 1
        self.proc.stdin.write(json.dumps({"id": self._next, **cmd}) + "\n")
        self.proc.stdin.flush()
        return self._next

    def result(self, n: int) -> float | None:
        assert self.proc.stdout is not None
        while n not in self._done:
            line = self.proc.stdout.readline()
            if not line:
                raise BenchError(f"the probe helper exited ({self.proc.poll()})")
            got = json.loads(line)
            self._done[int(got["id"])] = got["t"]
        return self._done.pop(n)

    def close(self) -> None:
        """EOF to the helper, then stop it by its PID if it lingers."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


if __name__ == "__main__":
    serve()

"""Helpers for DNS tests in a namespace: a `sixpn dns` process, dig, dnspython queries."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

from sixpn.lab import netns
from tests.harness import ServerProcess, wait_until

DNS = "fdaa::3"


@dataclass
class DnsProcess:
    """`sixpn dns` inside a namespace, following a control plane on a Unix socket."""

    ns: str
    control: ServerProcess
    log: Path
    region: str = "fra"
    upstreams: tuple[str, ...] = ()
    metrics_port: int = 9153
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, probe_source: str) -> DnsProcess:
        argv = [sys.executable, "-m", "sixpn", "dns", "--control", self.control.url]
        argv += ["--token", self.control.admin_token, "--listen", f"[{DNS}]:53"]
        argv += ["--region", self.region, "--metrics", f"127.0.0.1:{self.metrics_port}"]
        for upstream in self.upstreams:
            argv += ["--upstream", upstream]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                netns.exec_argv(self.ns, argv), stdout=out, stderr=subprocess.STDOUT
            )
        try:
            wait_until(lambda: self._ready(probe_source), 20, "sixpn dns to load its zone")
        except BaseException:
            self.kill()
            raise
        return self

    def _ready(self, source: str) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"sixpn dns exited {self.proc.returncode}: {self.log.read_text()}")
        try:
            reply = query(self.ns, source, "_apps.internal", "TXT", timeout=0.5)
        except dns.exception.Timeout:
            return False
        return reply.rcode() != dns.rcode.SERVFAIL

    def metrics(self) -> str:
        """The Prometheus page, fetched from inside the namespace."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        code = f"import urllib.request; print(urllib.request.urlopen({url!r}).read().decode())"
        return netns.run(self.ns, [sys.executable, "-c", code]).stdout

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


def query(
    ns: str,
    source: str,
    name: str,
    qtype: str = "AAAA",
    *,
    tcp: bool = False,
    edns: bool = True,
    timeout: float = 2.0,
) -> dns.message.Message:
    """Ask fdaa::3 from ``source`` inside ``ns`` with dnspython (UDP or TCP)."""
    q = dns.message.make_query(name, qtype, use_edns=0 if edns else False)
    sock = netns.socket_in(ns, socket.AF_INET6, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    try:
        sock.bind((source, 0))
        sock.setblocking(False)  # dnspython waits with select and wants non-blocking sockets
        if tcp:
            sock.settimeout(timeout)
            sock.connect((DNS, 53))
            sock.setblocking(False)
            return dns.query.tcp(q, DNS, timeout=timeout, sock=sock)
        return dns.query.udp(q, DNS, timeout=timeout, sock=sock, ignore_trailing=True)
    finally:
        sock.close()


@dataclass(frozen=True)
class Dig:
    status: str
    flags: frozenset[str]
    answers: list[str]  # rdata of the answer section, in order


def dig(ns: str, source: str, name: str, qtype: str = "AAAA", *opts: str) -> Dig:
    """The real `dig` inside ``ns``, from ``source``, against fdaa::3."""
    argv = ["dig", f"@{DNS}", "-b", source, name, qtype, "+noall", "+comments", "+answer"]
    argv += ["+tries=1", "+time=3", *opts]
    out = netns.run(ns, argv).stdout
    status = re.search(r"status: (\w+)", out)
    flags = re.search(r";; flags: ([a-z ]+);", out)
    answers = [
        line.split(None, 4)[4]
        for line in out.splitlines()
        if line and not line.startswith(";") and len(line.split(None, 4)) == 5
    ]
    return Dig(
        status.group(1) if status else "NONE",
        frozenset(flags.group(1).split()) if flags else frozenset(),
        answers,
    )


def txt_value(d: Dig) -> str:
    """The TXT record's strings joined (dig shows them quoted, space separated)."""
    (record,) = d.answers
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', record))


def eventually(check: object, what: str, timeout: float = 5.0) -> None:
    wait_until(check, timeout, what, interval=0.01)


__all__ = ["Dig", "DnsProcess", "dig", "eventually", "query", "time", "txt_value"]

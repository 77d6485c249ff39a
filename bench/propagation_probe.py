"""The propagation benchmark's observer on one host: a resident prober in a machine's namespace.

Started as ``nsenter --net=/var/run/netns/<probe machine's namespace> python
propagation_probe.py`` (the whole process in that namespace: its DNS queries leave from the
machine's 6PN address, so the host's DNS server at ``fdaa::3`` answers with that network's data,
as it would a real machine). One per host, in a session of its own at a higher priority than
the lab (the observer must not queue behind the observed: ``datapath_probe``'s lesson).

Protocol, one JSON object a line. In (stdin):

- ``{"op": "dns", "id": N, "name": Q, "type": "AAAA", "want": "has" | "lacks" | "nx",
  "token": HEX or null, "deadline": T}``: a watch. From now on ``Q`` is asked every
  ``--every`` seconds (one query in flight per name; every watch on the same name shares
  it) until an answer satisfies the watch: ``has``: NOERROR, not truncated, and the bytes
  ``token`` (a packed IPv6 address) in it; ``lacks``: NOERROR, not truncated, without them;
  ``nx``: NXDOMAIN. A watch armed before its token is known (a create: the address comes with
  the API's answer) keeps every distinct answer with its arrival time until ``{"op":
  "token", "id": N, "token": HEX}`` comes, then takes the first of them that satisfies it; so a
  watch armed before the API call was sent times the change from the first answer that shows
  it, even if that answer came before the API's own.
- ``{"op": "tcp", "id": N, "address": A, "deadline": T}``: the first packet through: a
  non-blocking TCP connect to ``[A]:9`` every 2 ms until one is refused or accepted
  (``datapath_probe.first_contact``, in a thread of this process, so in its namespace too).
- ``{"op": "ask", "id": N, "questions": [[Q, TYPE], ...]}``: plain questions for the final
  check (dnspython, UDP with EDNS and TCP on truncation); the answers come back parsed.

Out (stdout): ``{"id": N, "t": T or null, "polls": P, "first_sent": T0, "from_history":
bool}`` for a watch or a tcp probe (``t`` null: the deadline passed), ``{"id": N, "answers":
[[RCODE, [RDATA, ...]], ...]}`` for an ask. Every T is ``time.monotonic()``, which is the same
clock in every process of the machine. EOF on stdin ends the prober.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import selectors
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
from datapath_probe import first_contact

DNS_SERVER = "fdaa::3"
LOST_AFTER = 0.02  # s: an unanswered query is given up and asked again


def _noerror(data: bytes) -> bool:
    return len(data) >= 12 and data[3] & 0x0F == 0 and not data[2] & 0x02


def satisfied(want: str, token: bytes | None, data: bytes) -> bool:
    if want == "nx":
        return len(data) >= 12 and data[3] & 0x0F == 3
    assert token is not None
    if want == "has":
        return _noerror(data) and token in data[12:]
    return _noerror(data) and token not in data[12:]  # lacks (NODATA counts)


@dataclass
class Watch:
    id: int
    want: str
    token: bytes | None
    deadline: float
    polls: int = 0
    first_sent: float | None = None
    history: list[tuple[float, bytes]] = field(default_factory=list)


@dataclass
class Poller:
    wire: bytes  # the query, ID bytes left to be set per send
    watches: list[Watch] = field(default_factory=list)
    inflight: int | None = None
    sent_at: float = 0.0
    next_at: float = 0.0


class Prober:
    def __init__(self, every: float) -> None:
        self.every = every
        self.out_lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ, "dns")
        self.pollers: dict[tuple[str, str], Poller] = {}
        self.by_qid: dict[int, Poller] = {}
        self.watches: dict[int, tuple[Watch, Poller]] = {}
        self.qid = random.randrange(0x10000)
        self.inbuf = b""

    def say(self, obj: dict[str, Any]) -> None:
        with self.out_lock:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

    def _finish(self, w: Watch, t: float | None, from_history: bool = False) -> None:
        poller = self.watches.pop(w.id)[1]
        poller.watches.remove(w)
        self.say(
            {
                "id": w.id,
                "t": t,
                "polls": w.polls,
                "first_sent": w.first_sent,
                "from_history": from_history,
            }
        )

    # -- commands ----------------------------------------------------------------------------

    def command(self, cmd: dict[str, Any]) -> None:
        op = cmd["op"]
        if op == "dns":
            key = (str(cmd["name"]), str(cmd.get("type", "AAAA")))
            poller = self.pollers.get(key)
            if poller is None:
                q = dns.message.make_query(key[0], dns.rdatatype.from_text(key[1]))
                q.flags &= ~dns.flags.RD
                poller = self.pollers[key] = Poller(q.to_wire())
            want = str(cmd["want"])
            # nx needs no token: it is judged at once; has/lacks without one wait for it
            token = bytes.fromhex(cmd["token"]) if cmd.get("token") else None
            if want == "nx":
                token = b""
            w = Watch(int(cmd["id"]), want, token, float(cmd["deadline"]))
            poller.watches.append(w)
            self.watches[w.id] = (w, poller)
        elif op == "token":
            got = self.watches.get(int(cmd["id"]))
            if got is None:
                return  # already over (deadline)
            w = got[0]
            w.token = bytes.fromhex(cmd["token"])
            for t, data in w.history:
                if satisfied(w.want, w.token, data):
                    self._finish(w, t, from_history=True)
                    return
            w.history.clear()
        elif op == "tcp":
            threading.Thread(target=self._tcp, args=(cmd,), daemon=True).start()
        elif op == "ask":
            threading.Thread(target=self._ask, args=(cmd,), daemon=True).start()
        else:
            raise ValueError(f"unknown op {op!r}")

    def _tcp(self, cmd: dict[str, Any]) -> None:
        t = first_contact(str(cmd["address"]), float(cmd["deadline"]))
        self.say({"id": cmd["id"], "t": t, "polls": 0, "first_sent": None, "from_history": False})

    def _ask(self, cmd: dict[str, Any]) -> None:
        answers = []
        for name, kind in cmd["questions"]:
            q = dns.message.make_query(name, dns.rdatatype.from_text(kind), use_edns=0)
            q.use_edns(0, payload=4096)
            q.flags &= ~dns.flags.RD
            r = None
            for _ in range(3):
                try:
                    r, _tcp = dns.query.udp_with_fallback(q, DNS_SERVER, timeout=2)
                    break
                except dns.exception.Timeout:
                    continue
            if r is None:
                answers.append(["TIMEOUT", []])
                continue
            rdata = sorted(
                b"".join(rd.strings).decode() if rrset.rdtype == dns.rdatatype.TXT else rd.to_text()
                for rrset in r.answer
                for rd in rrset
            )
            answers.append([dns.rcode.to_text(r.rcode()), rdata])
        self.say({"id": cmd["id"], "answers": answers})

    # -- the loop ----------------------------------------------------------------------------

    def _send(self, poller: Poller, now: float) -> None:
        self.qid = (self.qid + 1) & 0xFFFF
        if poller.inflight is not None:
            self.by_qid.pop(poller.inflight, None)
        try:
            self.sock.sendto(struct.pack("!H", self.qid) + poller.wire[2:], (DNS_SERVER, 53))
        except OSError:  # no route yet, or a full buffer: the next tick asks again
            poller.next_at = now + self.every
            return
        poller.inflight, poller.sent_at, poller.next_at = self.qid, now, now + self.every
        self.by_qid[self.qid] = poller
        for w in poller.watches:
            w.polls += 1
            if w.first_sent is None:
                w.first_sent = now

    def _answer(self, data: bytes, t: float) -> None:
        if len(data) < 12:
            return
        poller = self.by_qid.pop(struct.unpack("!H", data[:2])[0], None)
        if poller is None:
            return  # late: given up already
        poller.inflight = None
        for w in list(poller.watches):
            if w.token is None:
                if not w.history or w.history[-1][1][2:] != data[2:]:
                    w.history.append((t, data))
            elif satisfied(w.want, w.token, data):
                self._finish(w, t)
        if poller.watches and t >= poller.next_at:
            self._send(poller, time.monotonic())

    def _stdin(self) -> bool:
        chunk = os.read(sys.stdin.fileno(), 65536)
        if not chunk:
            return False
        self.inbuf += chunk
        *lines, self.inbuf = self.inbuf.split(b"\n")
        for line in lines:
            if line.strip():
                self.command(json.loads(line))
        return True

    def serve(self) -> None:
        self.sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
        self.say({"ready": True})
        while True:
            now = time.monotonic()
            wake = now + 0.05
            for poller in self.pollers.values():
                if poller.inflight is not None and now - poller.sent_at > LOST_AFTER:
                    self.by_qid.pop(poller.inflight, None)
                    poller.inflight = None
                if not poller.watches:
                    continue
                if poller.inflight is None:
                    if now >= poller.next_at:
                        self._send(poller, now)
                    wake = min(wake, poller.next_at)
                else:
                    wake = min(wake, poller.sent_at + LOST_AFTER)
            for w, _ in list(self.watches.values()):
                if now >= w.deadline:
                    self._finish(w, None)
                else:
                    wake = min(wake, w.deadline)
            for key, _ in self.sel.select(timeout=max(0.0, wake - time.monotonic())):
                if key.data == "stdin":
                    if not self._stdin():
                        return
                    continue
                while True:
                    try:
                        data = self.sock.recv(4096)
                    except BlockingIOError:
                        break
                    self._answer(data, time.monotonic())
            # pollers with no watch left are dropped (names come and go: one per destroy)
            for k in [k for k, p in self.pollers.items() if not p.watches and p.inflight is None]:
                del self.pollers[k]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--every", type=float, default=0.002, help="s between queries of one name")
    args = p.parse_args()
    Prober(args.every).serve()


if __name__ == "__main__":
    main()

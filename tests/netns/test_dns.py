"""The `.internal` DNS server as a process, asked from real 6PN source addresses.

A namespace holds ``fdaa::3`` and client addresses of three networks on its loopback; the
control plane runs on a Unix socket (so it is reachable from inside and outside the namespace);
`sixpn dns` runs inside the namespace and follows it. Queries come from the real `dig` and from
dnspython over real UDP and TCP sockets.
"""

from __future__ import annotations

import base64
import os
import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import httpx
import pytest

from sixpn.core import addressing
from sixpn.lab import netns
from tests.harness import ServerProcess
from tests.netns.dnsutil import DnsProcess, dig, eventually, query, txt_value

pytestmark = pytest.mark.netns

UPSTREAM = ("127.0.0.1", 5353)


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@dataclass
class Fabric:
    ns: str
    control: ServerProcess
    api: httpx.Client
    dns: DnsProcess
    nets: dict[str, int]  # "alpha", "alpha-staging", "beta" -> network ID
    machines: dict[str, dict[str, object]]  # label -> machine JSON

    def source(self, net: str) -> str:
        """A client address of network ``net`` (as a machine there would have)."""
        return str(addressing.encode(self.nets[net], 0, 0, 0x100))

    def create_machine(self, org: str, app: str, host: str, **extra: object) -> dict[str, object]:
        r = self.api.post(f"/v1/orgs/{org}/machines", json={"app": app, "host": host, **extra})
        assert r.status_code == 201, r.text
        return dict(r.json())


class Upstream:
    """A tiny upstream resolver inside the namespace: example.test A 192.0.2.1; silent.test
    never answers."""

    def __init__(self, ns: str) -> None:
        self.sock = netns.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(UPSTREAM)
        self.sock.settimeout(0.2)
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop:
            try:
                data, addr = self.sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            try:
                q = dns.message.from_wire(data)
            except dns.exception.DNSException:
                continue  # the fuzz test's mutated queries reach us through the forwarder
            if not q.question or q.question[0].name.to_text().lower().startswith("silent."):
                continue
            r = dns.message.make_response(q)
            r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "192.0.2.1"))
            self.sock.sendto(r.to_wire(), addr)

    def close(self) -> None:
        self.stop = True
        self.thread.join(timeout=2)
        self.sock.close()


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fabric]:
    tmp = tmp_path_factory.mktemp("dns")
    control = ServerProcess(db=tmp / "server.db", uds=tmp / "api.sock")
    with netns.temporary("dns") as ns:
        upstream = Upstream(ns)
        control.start()
        dns_proc: DnsProcess | None = None
        try:
            api = control.client()
            nets: dict[str, int] = {}
            for org in ("alpha", "beta"):
                assert api.post("/v1/orgs", json={"name": org}).status_code == 201
                nets[org] = api.get(f"/v1/orgs/{org}/networks/default").json()["net_id"]
            staging = api.post("/v1/orgs/alpha/networks", json={"name": "staging"}).json()
            nets["alpha-staging"] = staging["net_id"]
            for name, region in (("h-fra", "fra"), ("h-ams", "ams"), ("h-syd", "syd")):
                body = {"name": name, "region": region, "endpoint": f"192.0.2.{len(name)}:51820"}
                body |= {"public_key": key(), "gateway": region == "fra"}
                assert api.post("/v1/hosts", json=body).status_code == 201
            for org, app, net in (
                ("alpha", "web", "default"),
                ("alpha", "db", "default"),
                ("alpha", "stg", "staging"),
                ("beta", "web", "default"),
                ("beta", "hidden", "default"),
            ):
                r = api.post(f"/v1/orgs/{org}/apps", json={"name": app, "network": net})
                assert r.status_code == 201, r.text
            for net in nets.values():
                netns.add_address(ns, f"{addressing.encode(net, 0, 0, 0x100)}/128")
            netns.add_address(ns, "fdaa::3/128")
            fab = Fabric(ns, control, api, None, nets, {})  # type: ignore[arg-type]
            m = fab.machines
            m["web-fra"] = fab.create_machine("alpha", "web", "h-fra", metadata={"role": "primary"})
            m["web-ams"] = fab.create_machine("alpha", "web", "h-ams", process_group="worker")
            m["web-syd"] = fab.create_machine("alpha", "web", "h-syd")
            m["web-stopped"] = fab.create_machine("alpha", "web", "h-fra", state="stopped")
            m["db"] = fab.create_machine("alpha", "db", "h-ams")
            m["stg"] = fab.create_machine("alpha", "stg", "h-fra")
            m["beta-web"] = fab.create_machine("beta", "web", "h-syd")
            m["hidden"] = fab.create_machine("beta", "hidden", "h-syd")
            peer = {"name": "laptop", "public_key": key()}
            assert api.post("/v1/orgs/alpha/peers", json=peer).status_code == 201
            peer = {"name": "ci", "public_key": key(), "ephemeral": True}
            assert api.post("/v1/orgs/alpha/peers", json=peer).status_code == 201
            dns_proc = DnsProcess(
                ns,
                control,
                tmp / "dns.log",
                region="fra",
                upstreams=(f"{UPSTREAM[0]}:{UPSTREAM[1]}",),
            ).start(fab.source("alpha"))
            fab.dns = dns_proc
            yield fab
        finally:
            if dns_proc is not None:
                dns_proc.kill()
            control.kill()
            upstream.close()


def addr(fab: Fabric, label: str) -> str:
    return str(fab.machines[label]["address"])


def aaaa(fab: Fabric, name: str, net: str = "alpha", *opts: str) -> list[str]:
    d = dig(fab.ns, fab.source(net), name, "AAAA", *opts)
    assert d.status in ("NOERROR", "NXDOMAIN"), d
    assert "aa" in d.flags
    return sorted(d.answers)


def test_aaaa_names(fabric: Fabric) -> None:
    web = sorted(addr(fabric, k) for k in ("web-fra", "web-ams", "web-syd"))
    assert aaaa(fabric, "web.internal") == web
    assert aaaa(fabric, "global.web.internal") == web
    assert aaaa(fabric, "ams.web.internal") == [addr(fabric, "web-ams")]
    assert aaaa(fabric, "top1.nearest.of.web.internal") == [addr(fabric, "web-fra")]
    assert aaaa(fabric, "top2.nearest.of.web.internal") == sorted(
        [addr(fabric, "web-fra"), addr(fabric, "web-ams")]
    )
    stopped = fabric.machines["web-stopped"]
    assert aaaa(fabric, f"{stopped['id']}.vm.web.internal") == [stopped["address"]]
    assert aaaa(fabric, "worker.process.web.internal") == [addr(fabric, "web-ams")]
    assert aaaa(fabric, "primary.role.kv._metadata.web.internal") == [addr(fabric, "web-fra")]
    laptop = fabric.api.get("/v1/orgs/alpha/peers/laptop").json()
    assert aaaa(fabric, "laptop._peer.internal") == [laptop["address"]]


def test_txt_names(fabric: Fabric) -> None:
    src = fabric.source("alpha")

    def txt(name: str) -> str:
        d = dig(fabric.ns, src, name, "TXT")
        assert d.status == "NOERROR", d
        return txt_value(d)

    assert txt("regions.web.internal") == "ams,fra,syd"
    assert txt("all.regions.web.internal") == "ams,fra,syd"
    started = [fabric.machines[k] for k in ("web-fra", "web-ams", "web-syd")]
    assert sorted(txt("vms.web.internal").split(",")) == sorted(
        f"{m['id']} {m['region']}" for m in started
    )
    assert len(txt("all.vms.web.internal").split(",")) == 4
    assert txt("_apps.internal") == "db,web"
    assert txt("_peer.internal") == "laptop"
    instances = txt("_instances.internal").split(";")
    db = fabric.machines["db"]
    assert f"instance={db['id']},app=db,ip={db['address']},region=ams" in instances
    assert len(instances) == 4
    assert len(txt("all._instances.internal").split(";")) == 5


def test_each_network_sees_only_its_own_names(fabric: Fabric) -> None:
    assert aaaa(fabric, "web.internal", "beta") == [addr(fabric, "beta-web")]
    assert aaaa(fabric, "stg.internal", "alpha-staging") == [addr(fabric, "stg")]
    # another network's app, and a network of the same org: as if it did not exist
    assert dig(fabric.ns, fabric.source("alpha"), "hidden.internal").status == "NXDOMAIN"
    assert dig(fabric.ns, fabric.source("alpha"), "stg.internal").status == "NXDOMAIN"
    assert dig(fabric.ns, fabric.source("alpha-staging"), "web.internal").status == "NXDOMAIN"
    # the same size as a name that exists nowhere
    hidden = query(fabric.ns, fabric.source("alpha"), "hidden.internal")
    nowhere = query(fabric.ns, fabric.source("alpha"), "hidxen.internal")
    assert len(hidden.to_wire()) == len(nowhere.to_wire())


def test_non_6pn_sources_are_refused(fabric: Fabric) -> None:
    assert dig(fabric.ns, "::1", "web.internal").status == "REFUSED"
    assert dig(fabric.ns, "::1", "example.test", "A").status == "REFUSED"


def test_negative_answers_and_case(fabric: Fabric) -> None:
    src = fabric.source("alpha")
    nx = query(fabric.ns, src, "nothing.internal")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    assert nx.authority[0].name.to_text() == "internal."
    nodata = query(fabric.ns, src, "web.internal", "A")
    assert nodata.rcode() == dns.rcode.NOERROR
    assert nodata.answer == []
    upper = query(fabric.ns, src, "WEB.Internal")
    assert upper.answer[0].name.to_text() == "WEB.Internal."
    assert len(upper.answer[0]) == 3


def test_changes_through_the_api_show_up(fabric: Fabric) -> None:
    new = fabric.create_machine("alpha", "db", "h-syd")
    eventually(lambda: new["address"] in aaaa(fabric, "db.internal"), "new machine in DNS")
    mid = new["id"]
    assert fabric.api.post(f"/v1/orgs/alpha/machines/{mid}/stop").status_code == 200
    eventually(lambda: new["address"] not in aaaa(fabric, "db.internal"), "stopped machine gone")
    assert aaaa(fabric, f"{mid}.vm.db.internal") == [new["address"]]
    assert fabric.api.post(f"/v1/orgs/alpha/machines/{mid}/start").status_code == 200
    eventually(lambda: new["address"] in aaaa(fabric, "db.internal"), "started machine back")
    assert fabric.api.delete(f"/v1/orgs/alpha/machines/{mid}").status_code == 200
    eventually(
        lambda: (
            dig(fabric.ns, fabric.source("alpha"), f"{mid}.vm.db.internal").status == "NXDOMAIN"
        ),
        "destroyed machine's name gone",
    )
    assert new["address"] not in aaaa(fabric, "db.internal")


def test_large_answers_truncate_over_udp_and_come_whole_over_tcp(fabric: Fabric) -> None:
    r = fabric.api.post("/v1/orgs/alpha/apps", json={"name": "big"})
    assert r.status_code == 201
    addresses = {
        str(fabric.create_machine("alpha", "big", ("h-fra", "h-ams", "h-syd")[i % 3])["address"])
        for i in range(100)
    }
    src = fabric.source("alpha")
    eventually(
        lambda: len(query(fabric.ns, src, "big.internal", tcp=True).answer[0]) == 100,
        "100 machines in DNS",
    )
    udp = dig(fabric.ns, src, "big.internal", "AAAA", "+noedns", "+notcp", "+ignore")
    assert "tc" in udp.flags
    assert udp.answers == []
    full = dig(fabric.ns, src, "big.internal", "AAAA", "+tcp")
    assert set(full.answers) == addresses
    plain = query(fabric.ns, src, "big.internal", edns=False)
    assert plain.flags & dns.flags.TC
    assert len(plain.to_wire()) <= 512


def test_forwarding(fabric: Fabric) -> None:
    src = fabric.source("alpha")
    d = dig(fabric.ns, src, "example.test", "A")
    assert d.status == "NOERROR"
    assert d.answers == ["192.0.2.1"]
    started = time.monotonic()
    d = dig(fabric.ns, src, "silent.test", "A")
    assert d.status == "SERVFAIL"
    assert time.monotonic() - started < 3.5  # the forwarder's 2.5 s deadline, and dig's start


def test_fuzzing_leaves_the_server_answering(fabric: Fabric) -> None:
    rng = random.Random(6)
    valid = [
        dns.message.make_query(n, t, use_edns=e).to_wire()
        for n, t, e in (("web.internal", "AAAA", 0), ("_apps.internal", "TXT", False))
    ]
    sock = netns.socket_in(fabric.ns, socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind((fabric.source("alpha"), 0))
    sock.setblocking(False)
    try:
        for i in range(30_000):
            if i % 2:
                packet = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
            else:
                packet = bytearray(rng.choice(valid))
                for _ in range(rng.randrange(1, 6)):
                    packet[rng.randrange(len(packet))] = rng.getrandbits(8)
                if rng.random() < 0.2:
                    packet = packet[: rng.randrange(len(packet) + 1)]
            try:
                sock.sendto(bytes(packet), ("fdaa::3", 53))
            except BlockingIOError:
                time.sleep(0.001)
            if i % 200 == 0:  # drain answers so that our own buffer does not fill
                while True:
                    try:
                        sock.recv(65535)
                    except BlockingIOError:
                        break
    finally:
        sock.close()
    assert fabric.dns.alive()
    # the server may still be working through the flood's backlog on a loaded machine: a
    # client's retries, as any resolver makes them, then get the right answer
    assert aaaa(fabric, "ams.web.internal", "alpha", "+tries=3") == [addr(fabric, "web-ams")]


def test_keeps_answering_without_the_control_plane_and_catches_up(fabric: Fabric) -> None:
    web = aaaa(fabric, "web.internal")
    fabric.control.kill()
    try:
        assert aaaa(fabric, "web.internal") == web
    finally:
        fabric.control.start()
    new = fabric.create_machine("alpha", "web", "h-ams")
    eventually(
        lambda: new["address"] in aaaa(fabric, "web.internal"),
        "a change made after the control plane came back",
        timeout=15,
    )


def test_tcp_carries_several_queries_per_connection(fabric: Fabric) -> None:
    sock = netns.socket_in(fabric.ns, socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.bind((fabric.source("alpha"), 0))
        sock.settimeout(3)
        sock.connect(("fdaa::3", 53))
        for name in ("web.internal", "db.internal", "nothing.internal"):
            q = dns.message.make_query(name, "AAAA")
            wire = q.to_wire()
            sock.sendall(len(wire).to_bytes(2, "big") + wire)
            size = int.from_bytes(_recv_exactly(sock, 2), "big")
            reply = dns.message.from_wire(_recv_exactly(sock, size))
            assert reply.id == q.id
    finally:
        sock.close()


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, "connection closed early"
        buf += chunk
    return buf


def test_metrics_count_queries_and_answers(fabric: Fabric) -> None:
    def value(page: str, name: str) -> float:
        found = re.search(rf"^{re.escape(name)} (\S+)$", page, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    before = fabric.dns.metrics()
    for _ in range(5):
        assert dig(fabric.ns, fabric.source("alpha"), "nothing.internal").status == "NXDOMAIN"
    after = fabric.dns.metrics()
    assert value(after, "sixpn_dns_queries_total") >= value(before, "sixpn_dns_queries_total") + 5
    nx = 'sixpn_dns_answers_total{rcode="NXDOMAIN"}'
    assert value(after, nx) >= value(before, nx) + 5
    assert value(after, "sixpn_dns_machines") >= 8


def test_log_has_no_tracebacks(fabric: Fabric) -> None:
    log = Path(fabric.dns.log).read_text()
    assert "Traceback" not in log, log[-3000:]


def test_repeated_queries_get_their_own_id_and_fresh_answers(fabric: Fabric) -> None:
    """The UDP path keeps whole responses of option-less queries: a repeat must still carry
    its own ID, and a change must show at once."""
    src = fabric.source("alpha")
    first = query(fabric.ns, src, "db.internal", edns=False)
    second = query(fabric.ns, src, "db.internal", edns=False)
    assert sorted(rr.address for rr in second.answer[0]) == sorted(
        rr.address for rr in first.answer[0]
    )
    new = fabric.create_machine("alpha", "db", "h-fra")
    eventually(
        lambda: (
            new["address"]
            in {rr.address for rr in query(fabric.ns, src, "db.internal", edns=False).answer[0]}
        ),
        "a cached answer replaced after a change",
    )
    q = dns.message.make_query("db.internal", "AAAA", use_edns=False)
    for wanted_id in (1, 2, 65535):
        q.id = wanted_id
        sock = netns.socket_in(fabric.ns, socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock.bind((src, 0))
            sock.settimeout(2)
            sock.sendto(q.to_wire(), ("fdaa::3", 53))
            reply = dns.message.from_wire(sock.recv(4096))
        finally:
            sock.close()
        assert reply.id == wanted_id
        assert new["address"] in {rr.address for rr in reply.answer[0]}

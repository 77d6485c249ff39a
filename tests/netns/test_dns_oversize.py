"""Answers too large for one DNS message, from a running `sixpn dns` (issue 16).

A store generated with 6,000 machines in one app of one network (bench/fleetgen.py: creating
them through the API would take minutes) is served by a real `sixpn server`; `sixpn dns` follows
it inside a namespace and is asked with the real `dig` and dnspython from a 6PN address of that
network. The app's AAAA set (6,000 x 28 bytes) and the listings (`_instances`, `all._instances`)
do not fit in 65,535 bytes: UDP says TC, TCP gives the largest answer that fits (a prefix of
whole records, a listing cut at its separator), and the server keeps answering everything else.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.rcode
import pytest

from sixpn.core import addressing
from sixpn.lab import netns
from tests.harness import ServerProcess
from tests.netns.dnsutil import DnsProcess, dig, query

pytestmark = pytest.mark.netns

BENCH = Path(__file__).resolve().parents[2] / "bench"
MACHINES = 6_000
APP = "web-1"  # fleetgen's first app of its first organization


@dataclass
class Big:
    ns: str
    source: str
    machines: list[dict[str, object]]
    dns: DnsProcess


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Big]:
    tmp = tmp_path_factory.mktemp("dns-oversize")
    db = tmp / "fleet.db"
    argv = [sys.executable, str(BENCH / "fleetgen.py"), "--db", str(db), "--seed", "3"]
    argv += [f"--machines={MACHINES}", "--apps=1", "--orgs=1", "--hosts=3", "--peers=0"]
    argv += ["--networks-max=1", "--stopped=0", "--destroyed=0", "--dense=0"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    control = ServerProcess(db=db, uds=tmp / "api.sock")
    with netns.temporary("dnsbig") as ns:
        control.start()
        proc: DnsProcess | None = None
        try:
            api = control.client()
            net_id = api.get("/v1/orgs/org-1/networks/default").json()["net_id"]
            r = api.get("/v1/orgs/org-1/machines", params={"app": APP})
            assert r.status_code == 200, r.text
            machines = [m for m in r.json() if m["app"] == APP]
            assert len(machines) == MACHINES
            source = str(addressing.encode(net_id, 0, 0, 0x100))
            netns.add_address(ns, f"{source}/128")
            netns.add_address(ns, "fdaa::3/128")
            proc = DnsProcess(ns, control, tmp / "dns.log").start(source)
            yield Big(ns, source, machines, proc)
        finally:
            if proc is not None:
                proc.kill()
            control.kill()


def test_an_app_too_large_for_one_message(big: Big) -> None:
    every = {str(m["address"]) for m in big.machines}
    # (the first answer is built then kept; a loaded machine may take seconds: TCP waits)
    over_tcp = query(big.ns, big.source, f"{APP}.internal", "AAAA", tcp=True, timeout=20)
    assert over_tcp.rcode() == dns.rcode.NOERROR
    assert not over_tcp.flags & dns.flags.TC
    got = {str(rr.address) for rr in over_tcp.answer[0]}
    assert 2_000 < len(got) < MACHINES  # as many as fit, and only the app's own
    assert got <= every
    assert len(over_tcp.to_wire()) <= 65_535
    udp = dig(big.ns, big.source, f"{APP}.internal", "AAAA", "+notcp", "+ignore", "+tries=3")
    assert udp.status == "NOERROR"
    assert "tc" in udp.flags
    full = dig(big.ns, big.source, f"{APP}.internal", "AAAA", "+tcp")
    assert full.status == "NOERROR"
    assert set(full.answers) == got


@pytest.mark.parametrize("name", ["_instances.internal", "all._instances.internal"])
def test_a_listing_too_large_for_one_message(big: Big, name: str) -> None:
    reply = query(big.ns, big.source, name, "TXT", tcp=True, timeout=20)
    assert reply.rcode() == dns.rcode.NOERROR
    (rrset,) = reply.answer
    (txt,) = list(rrset)
    listing = b"".join(txt.strings).decode()
    items = listing.split(";")
    assert 100 < len(items) < MACHINES
    ids = {str(m["id"]) for m in big.machines}
    for item in items:  # whole items only (SPEC 5): cut at a separator, never inside one
        fields = dict(part.split("=", 1) for part in item.split(","))
        assert set(fields) == {"instance", "app", "ip", "region"}
        assert fields["instance"] in ids
        assert fields["app"] == APP
        ipaddress.IPv6Address(fields["ip"])
    assert len(reply.to_wire()) <= 65_535
    udp = query(big.ns, big.source, name, "TXT")
    assert udp.flags & dns.flags.TC


def test_the_server_keeps_answering_after_oversize_answers(big: Big) -> None:
    for _ in range(3):
        query(big.ns, big.source, f"{APP}.internal", "AAAA", tcp=True, timeout=5)
        query(big.ns, big.source, "_instances.internal", "TXT", tcp=True, timeout=5)
    one = big.machines[0]
    d = dig(big.ns, big.source, f"{one['id']}.vm.{APP}.internal", "AAAA")
    assert d.status == "NOERROR"
    assert d.answers == [str(one["address"])]
    assert big.dns.proc is not None
    assert big.dns.proc.poll() is None
    assert "Traceback" not in big.dns.log.read_text()

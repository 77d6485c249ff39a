"""An external network end to end (SPEC 6, SPEC 8): `sixpn lab vpc`, the AWS VPC / RDS pattern.

Hosts a (fra, gateway) and b (ams); acme has app web with a started machine on b, globex app
shop with one machine on b. The VPC ``db`` of acme is made by the real CLI (`sixpn lab vpc db
--org acme`): a NAT on the underlay, an "EC2" peer running stock wg-quick and `sixpn forward`,
and a real PostgreSQL listening on the VPC's IPv4 address only. What is checked is what a user
would check: psql from a machine by the peer's name, many at once, another org refused, the
underlay kept out, the database restarted under a forwarder that stays, routed peering to the
VPC's IPv6 subnet (the org's machines only, both ways; overlaps refused; gone from every host
with the peer), and `down` leaving nothing. Delivery is observed at the receiver (listeners
recording sources). The last two tests remove the peer and take the lab down: keep them last.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sixpn.lab import netns, vpc
from sixpn.lab.fabric import HostSpec, Lab
from tests.e2e.test_lab_cli import leftovers
from tests.netns.listener import listening

pytestmark = pytest.mark.e2e

ROWS = ["1|hello from the VPC", "2|bonjour", "3|hallo"]

# Connect to each (host, port) of argv at once, 1 s each; print which ones connected.
PROBE = """
import json, socket, sys, threading
targets = [(h, int(p)) for h, p in (t.rsplit(":", 1) for t in sys.argv[1:])]
done = {}
def probe(t):
    try:
        socket.create_connection(t, timeout=1).close()
        done[f"{t[0]}:{t[1]}"] = "connected"
    except OSError as exc:
        done[f"{t[0]}:{t[1]}"] = type(exc).__name__
threads = [threading.Thread(target=probe, args=(t,)) for t in targets]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(done))
"""

# 50 psql clients at once, each with a query of its own that holds its connection for 1 s.
MANY = """
import json, subprocess, sys
url, n = sys.argv[1], int(sys.argv[2])
env = {"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "10"}
procs = [
    subprocess.Popen(["psql", "-w", url, "-Atc", f"select {i}*7 from pg_sleep(1)"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for i in range(n)
]
print(json.dumps([[p.wait(60), *(s.strip() for s in p.communicate())] for p in procs]))
"""


@dataclass
class World:
    lab: Lab
    web: dict[str, Any]  # acme's machine
    shop: dict[str, Any]  # globex's machine
    made: str  # what `sixpn lab vpc` printed

    @property
    def vpc(self) -> dict[str, Any]:
        assert self.lab.state is not None
        return self.lab.state.vpcs["db"]

    def psql(
        self, machine: dict[str, Any], query: str, target: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = ["env", "PGCONNECT_TIMEOUT=5", "psql", "-w", target or self.vpc["url"]]
        return self.lab.exec(machine, [*argv, "-Atc", query], timeout=30)

    def probe(self, ns: str, *targets: str) -> dict[str, str]:
        done = netns.run(ns, [sys.executable, "-c", PROBE, *targets], timeout=20)
        assert done.returncode == 0, done.stderr
        found: dict[str, str] = json.loads(done.stdout)
        return found


def until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def running(pid: int | None, marker: str) -> bool:
    """``pid`` runs and is the lab's (its command line names ``marker``), zombies excluded."""
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X") and marker.encode() in cmdline


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("vpc") / "lab"
    try:
        lab = Lab(root)
        lab.up([HostSpec("a", "fra", gateway=True), HostSpec("b", "ams")], resync=2.0)
        with lab.api() as api:
            m: dict[str, dict[str, Any]] = {}
            for org, app in (("acme", "web"), ("globex", "shop")):
                assert api.post("/v1/orgs", json={"name": org}).status_code == 201
                body = {"name": app, "network": "default"}
                assert api.post(f"/v1/orgs/{org}/apps", json=body).status_code == 201
                r = api.post(f"/v1/orgs/{org}/machines", json={"app": app, "host": "b"})
                assert r.status_code == 201, r.text
                m[org] = r.json()
        for machine in m.values():
            lab.wait_wired(machine, timeout=30)
        lab.wait_settled(timeout=30)
        # The real command, in a child process: what it starts outlives it, as for a user.
        made = subprocess.run(
            [
                sys.executable,
                "-m",
                "sixpn",
                "lab",
                "--dir",
                str(root),
                "vpc",
                "db",
                "--org",
                "acme",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert made.returncode == 0, made.stdout + made.stderr
        yield World(Lab(root), m["acme"], m["globex"], made.stdout)  # the state it wrote
    finally:
        Lab(root).down()  # whatever lab.json holds now


def test_lab_vpc_prints_its_steps_and_a_url_for_the_peers_name(world: World) -> None:
    url = world.vpc["url"]
    assert url.startswith("postgres://app:")
    assert url.endswith("@db._peer.internal:5432/app")
    for shown in ("NAT", "EC2", "PostgreSQL", "created peer db", "wg-quick", "sixpn forward"):
        assert shown in world.made, shown
    assert f"database URL: {url}" in world.made
    assert f'psql "{url}"' in world.made


def test_a_machine_queries_postgresql_by_the_peers_name(world: World) -> None:
    done = world.psql(world.web, "select id, text from greetings order by id")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ROWS
    # through the forwarder, which saw the machine's own 6PN address (it logs at the close)
    log = world.lab.root / "vpc-db-forward.log"
    until(lambda: f"[{world.web['address']}]:" in log.read_text(), "the forwarder's log line")


def test_postgresql_serves_the_vpcs_ipv4_address_only(world: World) -> None:
    listening = netns.run(world.vpc["db_ns"], ["ss", "-Hltn"]).stdout.split("\n")
    ports = [line.split()[3] for line in listening if line.strip()]
    assert ports == [f"{world.vpc['db_address']}:5432"]
    probe = world.probe(world.vpc["ec2_ns"], f"{world.vpc['db_address']}:5432")
    assert set(probe.values()) == {"connected"}  # the instance reaches it over IPv4


def test_fifty_clients_at_once_each_get_their_own_answer(world: World) -> None:
    n = 50
    done = world.lab.exec(world.web, [sys.executable, "-c", MANY, world.vpc["url"], str(n)], 120)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    failed = [(i, r) for i, r in enumerate(results) if r[0] != 0]
    assert not failed, failed[:3]
    assert [r[1] for r in results] == [str(i * 7) for i in range(n)]


def test_another_org_cannot_resolve_or_reach_the_peer(world: World) -> None:
    done = world.psql(world.shop, "select 1")
    assert done.returncode != 0
    assert 'could not translate host name "db._peer.internal"' in done.stderr, done.stderr
    dig = world.lab.exec(world.shop, ["dig", "+short", "AAAA", "db._peer.internal"])
    assert dig.returncode == 0
    assert dig.stdout.strip() == ""
    address = world.vpc["peer_address"]
    password = world.vpc["password"]
    direct = f"host={address} port=5432 dbname=app user=app password={password}"
    refused = world.psql(world.shop, "select 1", target=f"{direct} connect_timeout=3")
    assert refused.returncode != 0
    assert "connection to server" in refused.stderr, refused.stderr
    target = f"{address}:5432"
    shop_ns = world.lab.machine_ns(world.shop["id"])
    assert world.probe(shop_ns, target)[target] != "connected"
    # the positive control: the same probe from acme's machine connects
    web_ns = world.lab.machine_ns(world.web["id"])
    assert world.probe(web_ns, target)[target] == "connected"


def test_nothing_on_the_underlay_opens_a_connection_into_the_vpc(world: World) -> None:
    v = world.vpc
    nat, k = v["nat_underlay"], v["k"]
    under = world.lab.underlay_ns
    targets = [f"{nat}:5432", f"{nat}:22", f"{nat}:51820"]
    inside = [f"100.64.{k}.2:5432", f"{v['db_address']}:5432"]  # the EC2's forwarder, the DB
    # A hostile neighbour on the underlay's switch, with routes into the VPC via the NAT.
    neighbour = ["addr", "add", "192.0.2.250/24", "dev", "br0"]
    routes = [f"100.64.{k}.0/30", v["subnet"]]
    assert netns.run(under, ["ip", *neighbour]).returncode == 0
    try:
        probe = world.probe(under, *targets)
        assert "connected" not in probe.values(), probe
        for prefix in routes:
            added = netns.run(under, ["ip", "route", "add", prefix, "via", nat])
            assert added.returncode == 0, added.stderr
        probe = world.probe(under, *targets, *inside)
        assert "connected" not in probe.values(), probe
    finally:
        for prefix in routes:
            netns.run(under, ["ip", "route", "del", prefix])
        netns.run(under, ["ip", "addr", "del", "192.0.2.250/24", "dev", "br0"])
    # The positive control: the EC2's forwarder does take IPv4 connections, from the NAT's
    # side; it is the NAT that keeps the underlay out.
    assert world.probe(v["nat_ns"], f"100.64.{k}.2:5432") == {f"100.64.{k}.2:5432": "connected"}


def test_a_stopped_database_fails_clients_cleanly_and_comes_back_under_the_same_forwarder(
    world: World,
) -> None:
    forward_pid = world.vpc["forward_pid"]
    assert running(forward_pid, "forward")
    vpc.stop_postgres(world.lab, "db")
    try:
        done = world.psql(world.web, "select count(*) from greetings")
        assert done.returncode != 0
        assert "connection to server" in done.stderr, done.stderr
        assert running(forward_pid, "forward")
        log = world.lab.root / "vpc-db-forward.log"
        until(lambda: "connecting to the target failed" in log.read_text(), "the target error")
    finally:
        vpc.start_postgres(world.lab, "db")
    done = world.psql(world.web, "select id, text from greetings order by id")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ROWS
    assert world.vpc["forward_pid"] == forward_pid
    assert running(forward_pid, "forward")


def sources(log: Path) -> set[str]:
    return set(log.read_text().split())


def test_routed_peering_joins_the_orgs_machines_and_the_vpcs_ipv6_subnet_both_ways(
    world: World, tmp_path: Path
) -> None:
    v = world.vpc
    web_ns, shop_ns = (world.lab.machine_ns(m["id"]) for m in (world.web, world.shop))
    web, shop, db = world.web["address"], world.shop["address"], v["db_ipv6"]
    with listening(v["db_ns"], "tcp", 7000, tmp_path / "db.log") as at_db:
        target = f"{db}:7000"
        assert world.probe(web_ns, target) == {target: "connected"}
        assert world.probe(shop_ns, target)[target] != "connected"
        until(lambda: web in sources(at_db), "acme's connection at the VPC host")
        assert shop not in sources(at_db)
    # the VPC opens connections to the org's machines too (its own route to the network)
    with (
        listening(web_ns, "tcp", 7001, tmp_path / "web.log") as at_web,
        listening(shop_ns, "tcp", 7001, tmp_path / "shop.log") as at_shop,
    ):
        probe = world.probe(v["db_ns"], f"{web}:7001", f"{shop}:7001")
        assert probe[f"{web}:7001"] == "connected", probe
        assert probe[f"{shop}:7001"] != "connected", probe
        until(lambda: db in sources(at_web), "the VPC's connection at acme's machine")
        assert sources(at_shop) == set()


@contextlib.contextmanager
def claiming_all_of_6pn(world: World) -> Iterator[None]:
    """The EC2's tunnel edited to take and send anything of fdaa::/16, as a compromised or
    careless external network might: then only the fabric stands between it and other orgs."""
    ns, ifname = world.vpc["ec2_ns"], world.vpc["ec2_ifname"]
    (gateway_key, own) = netns.run(ns, ["wg", "show", ifname, "allowed-ips"]).stdout.split()
    edits = [
        ["wg", "set", ifname, "peer", gateway_key, "allowed-ips", "fdaa::/16"],
        ["ip", "-6", "route", "replace", "fdaa::/16", "dev", ifname],
    ]
    try:
        for argv in edits:
            done = netns.run(ns, argv)
            assert done.returncode == 0, done.stderr
        yield
    finally:
        netns.run(ns, ["ip", "-6", "route", "del", "fdaa::/16", "dev", ifname])
        netns.run(ns, ["wg", "set", ifname, "peer", gateway_key, "allowed-ips", own])


def test_an_external_network_claiming_all_of_6pn_still_reaches_its_org_only(
    world: World, tmp_path: Path
) -> None:
    v = world.vpc
    web_ns, shop_ns = (world.lab.machine_ns(m["id"]) for m in (world.web, world.shop))
    web, shop, db = world.web["address"], world.shop["address"], v["db_ipv6"]
    with (
        claiming_all_of_6pn(world),
        listening(v["db_ns"], "tcp", 7002, tmp_path / "db.log") as at_db,
        listening(web_ns, "tcp", 7002, tmp_path / "web.log") as at_web,
        listening(shop_ns, "tcp", 7002, tmp_path / "shop.log") as at_shop,
    ):
        to_db = f"{db}:7002"
        assert world.probe(shop_ns, to_db)[to_db] != "connected"
        probe = world.probe(v["db_ns"], f"{web}:7002", f"{shop}:7002")
        assert probe[f"{web}:7002"] == "connected", probe  # the positive control
        assert probe[f"{shop}:7002"] != "connected", probe
        assert world.probe(web_ns, to_db) == {to_db: "connected"}
        until(lambda: web in sources(at_db), "acme's connection at the VPC host")
        assert shop not in sources(at_db)
        assert sources(at_shop) == set()
        assert db in sources(at_web)


def test_an_overlapping_route_is_refused_naming_the_peer_in_the_org_only(world: World) -> None:
    inside = world.vpc["ipv6_cidr"].replace("::/56", ":1::/64")  # a subnet of the VPC's /56
    cli = [sys.executable, "-m", "sixpn", "wireguard", "create"]
    answers = {
        org: subprocess.run(
            [*cli, org, "fra", "again", "-", "--route", inside, "--wait", "0"],
            env=world.lab.cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        for org in ("acme", "globex")
    }
    for done in answers.values():
        assert done.returncode == 1, done.stderr
        assert inside in done.stderr
    assert f"overlaps {world.vpc['ipv6_cidr']} of peer 'acme/db'" in answers["acme"].stderr
    assert "another organization's peer" in answers["globex"].stderr
    assert "acme" not in answers["globex"].stderr
    with world.lab.api() as api:
        for org in ("acme", "globex"):
            names = {p["name"] for p in api.get(f"/v1/orgs/{org}/peers").json()}
            assert "again" not in names


def test_a_vpc_that_fails_half_way_removes_what_it_made(world: World) -> None:
    """Built as far as the peer (namespaces, PostgreSQL), refused there: an unknown region."""
    root = world.lab.root
    argv = [sys.executable, "-m", "sixpn", "lab", "--dir", str(root), "vpc", "half"]
    done = subprocess.run(
        [*argv, "--org", "acme", "--region", "xyz"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "PostgreSQL" in done.stdout  # it got that far
    assert "sixpn wireguard create" in done.stderr
    assert "removing what it made" in done.stdout
    world.lab = Lab(root)  # what the command left in lab.json: down works from that
    state = world.lab.state
    assert state is not None
    assert list(state.vpcs) == ["db"]
    assert not [ns for ns in state.namespaces if "-half-" in ns]
    assert not [n for n in os.listdir("/var/run/netns") if "-half-" in n]
    assert not Path(vpc.PG_ROOT, f"{state.lab_id}-half").exists()
    assert not [p for p in Path("/proc").glob("[0-9]*") if running(int(p.name), "-half/data")]
    with world.lab.api() as api:
        assert api.get("/v1/orgs/acme/peers/half").status_code == 404
    # the VPC that was there still serves
    assert world.psql(world.web, "select count(*) from greetings").stdout.strip() == "3"


def routed_on(world: World, host: str) -> dict[str, bool]:
    """Where host ``host`` holds the VPC's prefix: table 110, the mesh, nftables."""
    assert world.lab.state is not None
    cidr = world.vpc["ipv6_cidr"]
    wg = world.lab.state.hosts[host]["wg_ifname"]
    table = world.lab.host_run(host, ["ip", "-6", "route", "show", "table", "110"]).stdout
    allowed = world.lab.host_run(host, ["wg", "show", wg, "allowed-ips"]).stdout
    peered = world.lab.host_run(host, ["nft", "list", "set", "inet", "sixpn", "peered"]).stdout
    return {"route": cidr in table, "wireguard": cidr in allowed, "nftables": cidr in peered}


def test_removing_the_peer_removes_its_route_from_every_host(world: World) -> None:
    """Next to last: removes the VPC's peer."""
    everywhere = {"route": True, "wireguard": True, "nftables": True}
    assert routed_on(world, "a") == everywhere  # the gateway
    assert routed_on(world, "b") == everywhere  # the machines' host
    removed = subprocess.run(
        [sys.executable, "-m", "sixpn", "wireguard", "remove", "acme", "db"],
        env=world.lab.cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert removed.returncode == 0, removed.stderr
    world.lab.wait_settled(timeout=30)
    nowhere = {"route": False, "wireguard": False, "nftables": False}
    assert routed_on(world, "a") == nowhere
    assert routed_on(world, "b") == nowhere
    web_ns = world.lab.machine_ns(world.web["id"])
    target = f"{world.vpc['db_ipv6']}:5432"
    assert world.probe(web_ns, target)[target] != "connected"


def test_lab_down_leaves_nothing_of_the_vpc(world: World) -> None:
    """Last: takes the module's lab down."""
    v = dict(world.vpc)
    assert world.lab.state is not None
    lab_id = world.lab.state.lab_id
    postmaster = v["postgres_pid"]
    children = [
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit() and _ppid(int(p)) == postmaster  # checkpointer, walwriter, ...
    ]
    assert children
    world.lab.down()
    assert not running(postmaster, v["pg_dir"])
    assert not [pid for pid in children if running(pid, "postgres")]
    assert not running(v["forward_pid"], "forward")
    assert not Path(v["pg_dir"]).exists()
    assert leftovers(lab_id) == []
    assert not world.lab.root.exists()


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[2])
    except (OSError, ValueError, IndexError):
        return None

"""An external network beside the lab's fabric: the AWS VPC / RDS pattern (SPEC 6, SPEC 8).

``sixpn lab vpc NAME --org ORG`` builds VPC number k (1, 2, ... in a lab) out of three
namespaces, and joins it to the org's network as WireGuard peer NAME::

      lab underlay bridge br0 (192.0.2.0/24)
            | n<id><k>
    +-------+----------------------------------------------------------------------+
    | NAT   eth0 192.0.2.<200+k>      masquerades the EC2's traffic out of eth0;      |
    |       ec2  100.64.<k>.1/30      opens nothing from the underlay (nftables)      |
    +-------+----------------------------------------------------------------------+
            | eth0 100.64.<k>.2/30, default route via 100.64.<k>.1
    +-------+----------------------------------------------------------------------+
    | EC2   sxe<id><k>  peer NAME: `sixpn wireguard create`, stock `wg-quick up`      |
    |       vpc0 172.31.<k>.10/24, 2001:db8:<k>::10/64   (IPv6 forwarding on)          |
    |       sixpn forward '[::]:5432' 172.31.<k>.20:5432                               |
    +-------+----------------------------------------------------------------------+
            | eth0 172.31.<k>.20/24, 2001:db8:<k>::20/64, ::/0 via 2001:db8:<k>::10
    +-------+----------------------------------------------------------------------+
    | DB    PostgreSQL ("RDS"): listens on 172.31.<k>.20:5432 only (IPv4-only),       |
    |       password logins (scram-sha-256) from 172.31.<k>.0/24 only                 |
    +------------------------------------------------------------------------------+

The peer dials out to its gateway through the NAT and keeps the tunnel up with keepalives;
nothing on the underlay can open a connection to the NAT, the EC2 or the DB. Machines reach
the database as ``postgres://app:<password>@NAME._peer.internal:5432/app``: over the mesh to
the gateway, through the tunnel to the EC2's forwarder, and over IPv4 to PostgreSQL. The VPC's
IPv6 CIDR, ``2001:db8:<k>::/56`` (documentation range), is the peer's ``--route``: routed
peering, the DB's IPv6 default route pointing at the instance.

Rules that hold here, as in ``fabric``: every namespace, directory and process is written into
lab.json before it is made, so ``Lab.down`` (``teardown``) removes a half-built VPC too, and a
failed ``create`` removes what it made before raising. Processes are stopped by PID: the
forwarder with SIGTERM, PostgreSQL with SIGINT (its "fast" shutdown). The database server
itself (its cluster, the user it runs as, where its data lives, how it starts and stops) is
``postgres``'s; ``start_postgres``, ``stop_postgres``, ``PG_PORT`` and ``PG_ROOT`` stay here
for callers.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from sixpn.lab import laptop, netns, postgres
from sixpn.lab.fabric import UNDERLAY_NET, Lab, LabError, ip_in, run_checked, sysctl_in
from sixpn.lab.postgres import PG_PORT as PG_PORT
from sixpn.lab.postgres import PG_ROOT as PG_ROOT
from sixpn.lab.process import kill_namespace_processes, log_tail, pid_runs, spawn_logged, stop_pid

MAX_VPCS = 50  # the NAT's underlay address is 192.0.2.<200+k>
# A VPC name is a peer name (the API's grammar), short enough that PostgreSQL's socket path,
# PG_ROOT/<lab id>-<name>/run/.s.PGSQL.5432, fits in a Unix socket's 107 bytes.
NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?")
NFT_TABLE = "sixpn_lab_vpc"

Record = dict[str, Any]


def create(
    lab: Lab,
    name: str,
    org: str,
    network: str = "default",
    region: str | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> Record:
    """Build VPC ``name`` and join it to ``org``'s ``network`` as peer ``name`` (its gateway in
    ``region``, default: the lab's first gateway's); its record, also kept in lab.json. On any
    failure or interruption, what it made is removed (the peer too) before the error goes on."""
    say = progress or (lambda _: None)
    state = lab.state
    assert state is not None
    if not NAME.fullmatch(name):
        raise LabError(
            f"vpc name {name!r}: 1 to 40 lowercase letters, digits and dashes, starting with a "
            "letter, not ending with a dash (it is the peer's name and part of paths)"
        )
    if name in state.vpcs:
        raise LabError(f"the lab already has a vpc {name!r}")
    laptop.check_resolvconf("the vpc's EC2 instance")
    bindir = postgres.bindir()
    postgres.os_user()
    region = region or next((h["region"] for h in state.hosts.values() if h["gateway"]), None)
    if region is None:
        raise LabError("the lab has no gateway host: a vpc's peer needs one (gateway = true)")
    _check_control_plane(lab, org, network, name)
    k = 1 + max((int(v["k"]) for v in state.vpcs.values()), default=0)
    if k > MAX_VPCS:
        raise LabError(f"a lab holds at most {MAX_VPCS} vpcs")
    lab_id = state.lab_id
    ifname = f"sxe{lab_id}{k}"
    folder = lab.root / "vpcs"
    record: Record = {
        "name": name,
        "k": k,
        "org": org,
        "network": network,
        "region": region,
        "nat_ns": f"{netns.PREFIX}v{lab_id}-{name}-nat",
        "ec2_ns": f"{netns.PREFIX}v{lab_id}-{name}-ec2",
        "db_ns": f"{netns.PREFIX}v{lab_id}-{name}-db",
        "nat_ifname": f"n{lab_id}{k}",
        "nat_underlay": f"{UNDERLAY_NET}.{200 + k}",
        "ec2_ifname": ifname,
        "conf": str(folder / f"{ifname}.conf"),
        "resolvconf_state": str(folder / f"{ifname}.resolvconf"),
        "subnet": f"172.31.{k}.0/24",
        "ec2_address": f"172.31.{k}.10",
        "db_address": f"172.31.{k}.20",
        "ipv6_cidr": f"2001:db8:{k}::/56",
        "ec2_ipv6": f"2001:db8:{k}::10",
        "db_ipv6": f"2001:db8:{k}::20",
        "pg_bindir": str(bindir),
        "pg_dir": str(PG_ROOT / f"{lab_id}-{name}"),
        "postgres_pid": None,
        "forward_pid": None,
        "peer_requested": False,
        "peer_address": None,
        "url": None,
        "password": secrets.token_hex(12),
    }
    state.vpcs[name] = record
    lab.save()
    try:
        folder.mkdir(exist_ok=True)
        _nat(lab, record, say)
        _ec2_and_db(lab, record, say)
        postgres.init_cluster(record)
        start_postgres(lab, name)
        postgres.create_database(record)
        say(
            f"vpc {name}: PostgreSQL ({bindir}) in {record['db_ns']}, PID "
            f"{record['postgres_pid']}, on {record['db_address']}:{PG_PORT} only, data "
            f"{record['pg_dir']}, log {_log(lab, name, 'postgres')}"
        )
        _peer(lab, record, say)
        _forward(lab, record, say)
        with lab.api() as api:
            answer = api.get(f"/v1/orgs/{org}/peers/{name}", timeout=10)
        if answer.status_code != 200:
            raise LabError(f"reading peer {org}/{name}: HTTP {answer.status_code}")
        record["peer_address"] = answer.json()["address"]
        record["url"] = f"postgres://app:{record['password']}@{name}._peer.internal:{PG_PORT}/app"
        lab.save()
        say(f"vpc {name}: waiting for every host to know the peer")
        lab.wait_settled(timeout=30)
    except BaseException as exc:
        why = str(exc) if isinstance(exc, Exception) else "interrupted"
        say(f"vpc {name}: failed ({why}): removing what it made")
        _remove(lab, name, delete_peer=True)
        if isinstance(exc, LabError) or not isinstance(exc, Exception):
            raise
        raise LabError(f"lab vpc {name}: {exc}") from exc
    return record


def _check_control_plane(lab: Lab, org: str, network: str, name: str) -> None:
    """Refuse before building anything what ``sixpn wireguard create`` would refuse after:
    an unknown org or network, a peer name taken (``create`` removes its peer on failure:
    it must be one it made)."""
    try:
        with lab.api() as api:
            nets = api.get(f"/v1/orgs/{org}/networks", timeout=10)
            peer = api.get(f"/v1/orgs/{org}/peers/{name}", timeout=10)
    except httpx.HTTPError as exc:
        raise LabError(f"the lab's control plane does not answer ({exc}); see server.log") from exc
    if nets.status_code != 200:
        try:
            why = str(nets.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            why = f"the control plane answered {nets.status_code}: {nets.text[:300]}"
        raise LabError(f"lab vpc {name}: {why}")
    names = sorted(n["name"] for n in nets.json())
    if network not in names:
        raise LabError(f"org {org!r} has no network {network!r} (networks: {', '.join(names)})")
    if peer.status_code == 200:
        raise LabError(f"org {org!r} already has a peer {name!r}: choose another vpc name")


# -- the network ---------------------------------------------------------------------------------


def _nat(lab: Lab, r: Record, say: Callable[[str], None]) -> None:
    nat, k = r["nat_ns"], r["k"]
    lab.add_namespace(nat)
    lab.plug_into_underlay(nat, r["nat_ifname"], r["nat_underlay"])
    sysctl_in(nat, "net.ipv4.ip_forward=1")
    # Outbound only: the EC2's connections leave masqueraded as the NAT's underlay address;
    # only their replies come back (conntrack); nothing from the underlay opens a connection
    # to the NAT itself or through it.
    ruleset = f"""
table inet {NFT_TABLE} {{
    chain input {{
        type filter hook input priority filter; policy drop;
        ct state established,related accept
        iifname "lo" accept
        meta l4proto {{ icmp, ipv6-icmp }} accept
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        ct state new iifname "ec2" oifname "eth0" ip saddr 100.64.{k}.0/30 accept
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "eth0" ip saddr 100.64.{k}.0/30 masquerade
    }}
}}
"""
    run_checked(netns.exec_argv(nat, ["nft", "-f", "-"]), f"nft in {nat}", input=ruleset)
    say(
        f"vpc {r['name']} ({k}): NAT {nat}, underlay {r['nat_underlay']} (outbound only: "
        f"masquerade, nothing in), 100.64.{k}.1/30 to the EC2"
    )


def _ec2_and_db(lab: Lab, r: Record, say: Callable[[str], None]) -> None:
    nat, ec2, db, k = r["nat_ns"], r["ec2_ns"], r["db_ns"], r["k"]
    lab.add_namespace(ec2)
    ip_in(nat, "link", "add", "ec2", "type", "veth", "peer", "name", "eth0", "netns", ec2)
    ip_in(nat, "addr", "add", f"100.64.{k}.1/30", "dev", "ec2")
    ip_in(nat, "link", "set", "ec2", "up")
    ip_in(ec2, "addr", "add", f"100.64.{k}.2/30", "dev", "eth0")
    ip_in(ec2, "link", "set", "eth0", "up")
    ip_in(ec2, "route", "add", "default", "via", f"100.64.{k}.1")
    sysctl_in(ec2, "net.ipv6.conf.all.forwarding=1")  # routed peering: wg <-> the VPC
    lab.add_namespace(db)
    ip_in(ec2, "link", "add", "vpc0", "type", "veth", "peer", "name", "eth0", "netns", db)
    for ns, dev, v4, v6 in (
        (ec2, "vpc0", r["ec2_address"], r["ec2_ipv6"]),
        (db, "eth0", r["db_address"], r["db_ipv6"]),
    ):
        ip_in(ns, "addr", "add", f"{v4}/24", "dev", dev)
        ip_in(ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")  # usable at once
        ip_in(ns, "link", "set", dev, "up")
    # The VPC's route table: everything else over IPv6 (6PN, fdaa::/16) to the instance.
    ip_in(db, "-6", "route", "add", "default", "via", r["ec2_ipv6"], "dev", "eth0")
    say(
        f"vpc {r['name']}: EC2 {ec2}, eth0 100.64.{k}.2/30 (default via the NAT), vpc0 "
        f"{r['ec2_address']}/24 and {r['ec2_ipv6']}/64 (IPv6 forwarding on)"
    )
    say(
        f"vpc {r['name']}: DB {db}, eth0 {r['db_address']}/24 and {r['db_ipv6']}/64 "
        f"(IPv6 default via {r['ec2_ipv6']}; VPC CIDRs {r['subnet']}, {r['ipv6_cidr']})"
    )


# -- PostgreSQL (postgres.py) ----------------------------------------------------------------------


def start_postgres(lab: Lab, name: str, timeout: float = 30) -> int:
    """Start VPC ``name``'s PostgreSQL in its DB namespace (as the postgres user) and wait until
    it accepts connections; its PID, kept in lab.json."""
    return postgres.start(lab, _record(lab, name), _log(lab, name, "postgres"), timeout)


def stop_postgres(lab: Lab, name: str) -> None:
    """Stop VPC ``name``'s PostgreSQL by PID with SIGINT (fast shutdown: clients are
    disconnected, the data stays) and wait until it is gone."""
    postgres.stop(lab, _record(lab, name))


# -- the peer and the forwarder --------------------------------------------------------------------


def _peer(lab: Lab, r: Record, say: Callable[[str], None]) -> None:
    """The real `sixpn wireguard create` with the VPC's IPv6 CIDR as a route, then stock
    `wg-quick up` in the EC2, its DNS= line through an openresolv of its own (as laptops)."""
    ec2, conf = r["ec2_ns"], r["conf"]
    create = [sys.executable, "-m", "sixpn", "wireguard", "create", r["org"], r["region"]]
    create += [r["name"], conf, "--network", r["network"], "--route", r["ipv6_cidr"]]
    r["peer_requested"] = True  # it did not exist (checked): removed again if this fails
    lab.save()
    created = subprocess.run(
        create, env=lab.cli_env(), capture_output=True, text=True, timeout=60, check=False
    )
    if created.returncode != 0:
        raise LabError(f"sixpn wireguard create: {created.stderr.strip()}")
    say(created.stdout.strip())
    laptop.prepare_resolvconf(ec2, Path(r["resolvconf_state"]))
    env = os.environ | {"WG_QUICK_USERSPACE_IMPLEMENTATION": "wireguard-go"}
    say(f"vpc {r['name']}: wg-quick up {conf} in the EC2 ({ec2})")
    up = run_checked(netns.exec_argv(ec2, ["wg-quick", "up", conf]), f"wg-quick up {conf}", env=env)
    say(up.stderr.strip())  # wg-quick prints every command it runs


def _forward(lab: Lab, r: Record, say: Callable[[str], None], timeout: float = 15) -> None:
    ec2, target = r["ec2_ns"], f"{r['db_address']}:{PG_PORT}"
    forward = [sys.executable, "-m", "sixpn", "forward", f"[::]:{PG_PORT}", target]
    log = _log(lab, r["name"], "forward")
    proc = spawn_logged(netns.exec_argv(ec2, [*forward, "--grace", "2"]), log, cwd=lab.root)
    r["forward_pid"] = proc.pid
    lab.save()
    listening = netns.exec_argv(ec2, ["ss", "-Hltn", f"sport = :{PG_PORT}"])
    deadline = time.monotonic() + timeout
    while not subprocess.run(listening, capture_output=True, text=True, check=False).stdout:
        if proc.poll() is not None:
            raise LabError(f"sixpn forward exited ({proc.returncode}): {log_tail(log)}")
        if time.monotonic() > deadline:
            raise LabError(f"sixpn forward not listening after {timeout:g} s: {log_tail(log)}")
        time.sleep(0.05)
    where = f"in the EC2, PID {proc.pid}, log {log}"
    say(f"vpc {r['name']}: sixpn forward '[::]:{PG_PORT}' {target} {where}")


# -- down ------------------------------------------------------------------------------------------


def teardown(lab: Lab) -> None:
    """Remove every VPC of the lab (``Lab.down``): its processes by PID, its namespaces, its
    PostgreSQL data directory and /etc/netns folders; the control plane's peers go with it."""
    assert lab.state is not None
    for name in list(lab.state.vpcs):
        _remove(lab, name, delete_peer=False)


def _remove(lab: Lab, name: str, *, delete_peer: bool) -> None:
    """Remove what VPC ``name`` made, as far as it got; fine to run again."""
    state = lab.state
    assert state is not None
    r = state.vpcs.get(name)
    if r is None:
        return
    pid = r.get("forward_pid")
    if pid is not None and pid_runs(int(pid), "forward"):
        stop_pid(int(pid), signal.SIGTERM, grace=5.0)
    r["forward_pid"] = None
    lab.save()
    postgres.stop(lab, r)
    for ns in (r["db_ns"], r["ec2_ns"], r["nat_ns"]):  # wireguard-go in the EC2 among them
        if netns.exists(ns):
            kill_namespace_processes(ns)
        netns.remove(ns)  # also /etc/netns/<ns>
        if ns in state.namespaces:
            state.namespaces.remove(ns)
            lab.save()
    Path("/var/run/wireguard", f"{r['ec2_ifname']}.sock").unlink(missing_ok=True)
    if delete_peer and r.get("peer_requested"):
        try:
            with lab.api() as api:
                api.delete(f"/v1/orgs/{r['org']}/peers/{name}", timeout=10)
        except httpx.HTTPError:
            pass  # the control plane is gone: so is the peer, with the lab
    Path(r["conf"]).unlink(missing_ok=True)
    shutil.rmtree(r["resolvconf_state"], ignore_errors=True)
    postgres.remove_cluster(r)
    del state.vpcs[name]
    lab.save()


# -- helpers -------------------------------------------------------------------------------------


def _record(lab: Lab, name: str) -> Record:
    assert lab.state is not None
    if name not in lab.state.vpcs:
        known = ", ".join(sorted(lab.state.vpcs)) or "none"
        raise LabError(f"no vpc {name!r} in the lab (vpcs: {known})")
    return lab.state.vpcs[name]


def _log(lab: Lab, name: str, role: str) -> Path:
    return lab.root / f"vpc-{name}-{role}.log"

"""The real `sixpn` CLI (subprocesses) against a real `sixpn server`.

CLI processes that do not depend on each other run concurrently, to keep the file fast.
"""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import stat
import sys
from dataclasses import dataclass
from ipaddress import IPv6Address
from pathlib import Path

import pytest

from sixpn.client import Client, generate_keypair
from sixpn.control import codec
from sixpn.core import addressing
from sixpn.model.entities import App, Host, Machine, MachineState, Network, Peer
from tests.harness import ServerProcess, free_port

pytestmark = pytest.mark.component

DEADLINE = 60.0


@dataclass
class Result:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def json(self) -> object:
        assert self.code == 0, self
        return json.loads(self.out)

    def failed(self, code: int, *fragments: str) -> None:
        """Exited with ``code`` and said each of ``fragments`` on standard error."""
        assert self.code == code, self
        for fragment in fragments:
            assert fragment in self.err, self


async def sixpn(env: dict[str, str], *args: str) -> Result:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sixpn",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Result(args, proc.returncode, out.decode(), err.decode())


async def ok(env: dict[str, str], *args: str) -> Result:
    result = await sixpn(env, *args)
    assert result.code == 0, result
    return result


async def join(server: ServerProcess, name: str, region: str, *, gateway: bool = False) -> Host:
    async with Client(server.url, server.join_token) as c:
        joined = await c.join_host(
            name, region, "192.0.2.1:51820", generate_keypair().public_key, gateway=gateway
        )
    return joined.host


async def test_orgs_networks_apps_machines(server: ServerProcess) -> None:
    env = server.env()
    await ok(env, "orgs", "create", "acme")
    blue_r, h1, h2 = await asyncio.gather(
        ok(env, "networks", "create", "blue", "--org", "acme", "--json"),
        join(server, "h1", "fra"),
        join(server, "h2", "ams"),
    )
    blue = codec.decode(Network, blue_r.out.encode())
    assert blue.name == "blue"

    env["SIXPN_ORG"] = "acme"  # --org from the environment from here on
    web_r, api_r = await asyncio.gather(
        ok(env, "apps", "create", "web", "--json"),
        ok(env, "apps", "create", "api", "--network", "blue", "--json"),
    )
    web = codec.decode(App, web_r.out.encode())
    api = codec.decode(App, api_r.out.encode())
    assert api.net_id == blue.net_id != web.net_id

    on_host, in_region = await asyncio.gather(
        ok(env, "machines", "create", "--app", "web", "--host", "h1", "--json"),
        ok(
            env,
            "machines",
            "create",
            "--app",
            "api",
            "--region",
            "ams",
            "--state",
            "stopped",
            "--process-group",
            "worker",
            "--metadata",
            "role=db",
            "--metadata",
            "tier=1",
        ),
    )
    m1 = codec.decode(Machine, on_host.out.encode())
    assert (m1.host, m1.region, m1.state) == ("h1", "fra", MachineState.STARTED)
    d1 = addressing.decode(m1.address)
    assert (d1.net_id, d1.host_id) == (web.net_id, h1.host_id)
    summary = in_region.out.strip()
    assert summary.startswith("created machine ")
    assert summary.endswith("(app api, host h2, region ams)")
    m2_id, m2_address = summary.split()[2:4]
    d2 = addressing.decode(m2_address)
    assert (d2.net_id, d2.host_id) == (blue.net_id, h2.host_id)

    (
        listed,
        table,
        shown,
        stopped,
        bad_name,
        bad_region,
        bad_metadata,
        unknown,
    ) = await asyncio.gather(
        ok(env, "machines", "list", "--json"),
        ok(env, "machines", "list", "--app", "api"),
        ok(env, "machines", "show", m2_id, "--json"),
        ok(env, "machines", "stop", m1.id),
        sixpn(env, "apps", "create", "Bad_Name"),
        sixpn(env, "machines", "create", "--app", "web", "--region", "atlantis"),
        sixpn(env, "machines", "create", "--app", "web", "--host", "h1", "--metadata", "x"),
        sixpn(env, "machines", "show", "00000000000000"),
    )
    machines = [codec.decode(Machine, json.dumps(m).encode()) for m in listed.json()]  # type: ignore[attr-defined]
    assert {m.id for m in machines} == {m1.id, m2_id}
    m2 = codec.decode(Machine, shown.out.encode())
    assert (m2.id, str(m2.address), m2.host, m2.region) == (m2_id, m2_address, "h2", "ams")
    assert (m2.state, m2.process_group) == (MachineState.STOPPED, "worker")
    assert dict(m2.metadata) == {"role": "db", "tier": "1"}
    lines = table.out.splitlines()
    assert lines[0].split() == ["ID", "APP", "REGION", "HOST", "STATE", "ADDRESS", "GROUP"]
    assert [line.split() for line in lines[1:]] == [
        [m2_id, "api", "ams", "h2", "stopped", m2_address, "worker"]
    ]
    assert stopped.out.strip() == (
        f"stopped machine {m1.id} {m1.address} (app web, host h1, region fra)"
    )
    bad_name.failed(2, "name")
    bad_region.failed(2, "region 'atlantis'")
    bad_metadata.failed(2, "--metadata")
    unknown.failed(1, "not found")

    started, destroyed = await asyncio.gather(
        ok(env, "machines", "start", m1.id),
        ok(env, "machines", "destroy", m2_id),
    )
    assert started.out.startswith(f"started machine {m1.id} ")
    assert destroyed.out.startswith(f"destroyed machine {m2_id} ")

    everything, again = await asyncio.gather(
        ok(env, "machines", "list", "--all", "--json"),
        sixpn(env, "machines", "start", m2_id),
    )
    states = {m["id"]: m["state"] for m in everything.json()}  # type: ignore[attr-defined]
    assert states == {m1.id: "started", m2_id: "destroyed"}
    again.failed(1, "destroyed")

    # An app with a live machine cannot go (exit 1); one with only destroyed machines can.
    refused, deleted = await asyncio.gather(
        sixpn(env, "apps", "delete", "web"),
        ok(env, "apps", "delete", "api"),
    )
    assert refused.code == 1, refused
    assert deleted.out.strip() == "deleted app acme/api"
    nets = await ok(env, "networks", "delete", "blue")
    assert nets.out.strip() == "deleted network acme/blue"


async def test_wireguard_peers(server: ServerProcess, tmp_path: Path) -> None:
    async with Client(server.url, server.admin_token) as c:
        await c.create_org("acme")
        net = await c.get_network("acme", "default")
    gateway = await join(server, "gw1", "fra", gateway=True)
    env = server.env()
    conf = tmp_path / "laptop.conf"

    # No agent runs for gw1: nothing will install the peer. The file is still handed out,
    # after the wait, with a warning.
    created = await ok(
        env, "wireguard", "create", "acme", "fra", "laptop", str(conf), "--wait", "0.3"
    )
    assert "has not installed the peer after 0.3 s" in created.err
    assert "wrote" in created.out
    assert "cannot recover" in created.err
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    parser = configparser.ConfigParser()
    parser.read_string(conf.read_text())
    address_text, prefix_len = parser["Interface"]["Address"].split("/")
    address = IPv6Address(address_text)
    assert prefix_len == "120"
    assert address in addressing.network_prefix(net.net_id)
    assert addressing.decode(address).host_id == gateway.host_id
    assert parser["Interface"]["DNS"] == str(addressing.network_service_address(net.net_id))
    assert parser["Peer"]["PublicKey"] == gateway.public_key
    assert parser["Peer"]["AllowedIPs"] == str(addressing.network_prefix(net.net_id))
    assert parser["Peer"]["Endpoint"] == gateway.endpoint
    assert parser["Peer"]["PersistentKeepalive"] == "15"
    private_key = parser["Interface"]["PrivateKey"]

    before = conf.read_bytes()
    byo_key = generate_keypair().public_key
    exists, byo = await asyncio.gather(
        sixpn(env, "wireguard", "create", "acme", "fra", "other", str(conf)),
        ok(
            env,
            *("wireguard", "create", "acme", "--public-key", byo_key, "--json", "--wait", "0"),
            *("--no-dns", "--mtu", "1420"),  # a server's file: its own resolver, a fixed MTU
        ),
    )
    exists.failed(1, "exists")
    assert conf.read_bytes() == before
    byo_answer = byo.json()
    assert isinstance(byo_answer, dict)
    assert byo_answer["peer"]["public_key"] == byo_key
    assert byo_answer["file"] is None
    assert private_key not in byo_answer["config"]
    assert "# PrivateKey = " in byo_answer["config"]
    byo_lines = byo_answer["config"].splitlines()
    assert "MTU = 1420" in byo_lines
    assert not [line for line in byo_lines if line.startswith("DNS")]

    listed = await ok(env, "wireguard", "list", "acme", "--json")
    peers = [codec.decode(Peer, json.dumps(p).encode()) for p in listed.json()]  # type: ignore[attr-defined]
    by_name = {p.name: p for p in peers}
    assert set(by_name) == {"laptop", byo_answer["peer"]["name"]}  # "other" was never created
    assert by_name["laptop"].address == address
    assert private_key not in listed.out

    env["SIXPN_ORG"] = "acme"
    removed, shown = await asyncio.gather(
        ok(env, "wireguard", "remove", "laptop"),
        ok(env, "wireguard", "show", "acme", byo_answer["peer"]["name"], "--json"),
    )
    assert removed.out.strip() == "removed peer laptop (org acme)"
    assert json.loads(shown.out)["public_key"] == byo_key
    async with Client(server.url, server.admin_token) as c:
        assert [p.name for p in await c.list_peers("acme")] == [byo_answer["peer"]["name"]]


async def test_wireguard_create_refuses_bad_input_and_creates_nothing(
    server: ServerProcess, tmp_path: Path
) -> None:
    async with Client(server.url, server.admin_token) as c:
        await c.create_org("acme")
    await join(server, "gw1", "fra", gateway=True)
    env = server.env()
    taken = await ok(
        env, "wireguard", "create", "acme", "fra", "taken", str(tmp_path / "t.conf"), "--wait", "0"
    )
    assert "wrote" in taken.out
    used_key = json.loads((await ok(env, "wireguard", "show", "acme", "taken", "--json")).out)[
        "public_key"
    ]
    existing = tmp_path / "exists.conf"
    existing.write_text("mine\n")
    fresh = str(tmp_path / "fresh.conf")

    cases = [
        (("ghost", "fra", "p1", fresh), 1, "organization 'ghost' not found"),
        (("acme", "atlantis", "p2", fresh), 2, "atlantis"),
        (
            ("acme", "fra", "p3", fresh, "--network", "nope"),
            1,
            "network 'nope' not found in organization 'acme'",
        ),
        (("acme", "fra", "taken", fresh), 1, "peer 'taken' already exists"),
        (("acme", "fra", "Bad_Name", fresh), 2, "Bad_Name"),
        (("acme", "fra", "p4", "--public-key", "not-a-key"), 2, "not a WireGuard key"),
        (("acme", "fra", "p5", "--public-key", used_key), 1, "already used by peer 'acme/taken'"),
        (("acme", "fra", "p6", str(existing)), 1, "already exists"),
        (("acme", "fra", "p7", fresh, "--route", "10.0.0.0/8"), 2, "not an IPv6 prefix"),
        (("acme", "fra", "p8", fresh, "--route", "fdaa:1::/32"), 1, "overlaps 6PN"),
        (("acme", "fra", "p9", fresh, "--mtu", "1000"), 2, "--mtu"),
    ]
    results = await asyncio.gather(*(sixpn(env, "wireguard", "create", *a) for a, _, _ in cases))
    for (args, code, fragment), result in zip(cases, results, strict=True):
        assert result.code == code, (args, result)
        assert fragment in result.err, (args, result)
        assert "Traceback" not in result.err
    assert existing.read_text() == "mine\n"  # never overwritten
    assert not await asyncio.to_thread(Path(fresh).exists)  # nothing written when refused
    listed = await ok(env, "wireguard", "list", "acme", "--json")
    assert [p["name"] for p in json.loads(listed.out)] == ["taken"]  # nothing created


async def test_failures_without_a_server() -> None:
    env = dict(os.environ, SIXPN_API=f"http://127.0.0.1:{free_port()}", SIXPN_TOKEN="t")
    no_token = dict(env)
    no_token.pop("SIXPN_TOKEN")
    unreachable, missing_token = await asyncio.gather(
        sixpn(env, "orgs", "list"),
        sixpn(no_token, "orgs", "list"),
    )
    unreachable.failed(1, "cannot reach the control plane at http://127.0.0.1:")
    missing_token.failed(2, "SIXPN_TOKEN")

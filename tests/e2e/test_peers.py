"""WireGuard peers end to end (SPEC 5): laptops in the lab with stock wg-quick and real openresolv.

Hosts a (fra, gateway), b (fra) and c (ams); acme has machines of app web in its default
network (started on b and c, stopped on a) and of app preview in network staging; globex has
app shop. Every laptop is a namespace on the underlay that runs ``wg-quick up`` with the file
``sixpn wireguard create`` wrote, unchanged. Delivery is observed at the receiver.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sixpn.core import addressing
from sixpn.lab import laptop, netns
from sixpn.lab.fabric import Lab
from tests.e2e.test_fabric import THREE_HOSTS
from tests.netns.listener import listening

pytestmark = pytest.mark.e2e

IDLE = 30.0  # the lab server's --ephemeral-idle: above wg-quick's 15 s keepalive


@dataclass
class World:
    lab: Lab
    api: Any
    m: dict[str, dict[str, Any]]
    tmp: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sixpn", *args],
            env=self.lab.cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def laptop(self, name: str, org: str = "acme", network: str = "default", **kw: Any) -> str:
        laptop.bring_up(self.lab, name, org, network, "fra", **kw)
        self.lab.wait_settled(timeout=30)  # the gateway has the peer (its DNS address too)
        return name

    def ns(self, name: str) -> str:
        assert self.lab.state is not None
        return str(self.lab.state.laptops[name]["ns"])

    def ifname(self, name: str) -> str:
        assert self.lab.state is not None
        return str(self.lab.state.laptops[name]["ifname"])

    def on(self, name: str, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return netns.run(self.ns(name), list(argv), timeout=timeout)

    def peer(self, org: str, name: str) -> dict[str, Any]:
        r = self.api.get(f"/v1/orgs/{org}/peers/{name}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def peer_names(self, org: str) -> set[str]:
        return {p["name"] for p in self.api.get(f"/v1/orgs/{org}/peers").json()}

    def gateway_keys(self) -> set[str]:
        assert self.lab.state is not None
        ifname = self.lab.state.hosts["a"]["wg_ifname"]
        return set(self.lab.host_run("a", ["wg", "show", ifname, "peers"]).stdout.split())

    def listening(self, ns: str, kind: str, port: int) -> contextlib.AbstractContextManager[Path]:
        return listening(ns, kind, port, self.tmp / f"{ns}-{kind}-{port}.log")


def ping(run: Callable[..., subprocess.CompletedProcess[str]], dst: str, count: int = 1) -> bool:
    return run("ping", "-6", "-c", str(count), "-W", "1", "-i", "0.2", dst).returncode == 0


def tcp_ok(run: Callable[..., subprocess.CompletedProcess[str]], dst: str, port: int) -> bool:
    code = (
        "import socket,sys\n"
        f"s=socket.create_connection(({dst!r},{port}),timeout=2)\n"
        "sys.exit(0 if s.recv(3)==b'ok\\n' else 1)"
    )
    return run(sys.executable, "-c", code).returncode == 0


def until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("peers")
    lab = Lab(tmp / "lab")
    try:
        lab.up(
            THREE_HOSTS,
            resync=2.0,
            ephemeral_idle=IDLE,
        )
        api = lab.api()
        for org in ("acme", "globex"):
            assert api.post("/v1/orgs", json={"name": org}).status_code == 201
        assert api.post("/v1/orgs/acme/networks", json={"name": "staging"}).status_code == 201
        for org, app, net in (
            ("acme", "web", "default"),
            ("acme", "preview", "staging"),
            ("globex", "shop", "default"),
        ):
            body = {"name": app, "network": net}
            assert api.post(f"/v1/orgs/{org}/apps", json=body).status_code == 201
        m: dict[str, dict[str, Any]] = {}
        for key, org, app, host, state in (
            ("web-b", "acme", "web", "b", "started"),
            ("web-c", "acme", "web", "c", "started"),
            ("web-a", "acme", "web", "a", "stopped"),
            ("preview-b", "acme", "preview", "b", "started"),
            ("shop-b", "globex", "shop", "b", "started"),
        ):
            body = {"app": app, "host": host, "state": state}
            r = api.post(f"/v1/orgs/{org}/machines", json=body)
            assert r.status_code == 201, r.text
            m[key] = r.json()
        for machine in m.values():
            lab.wait_wired(machine, timeout=30)
        lab.wait_settled(timeout=30)
        yield World(lab, api, m, tmp)
    finally:
        lab.down()


def test_a_laptop_joins_with_the_unchanged_file_and_wg_quick_down_leaves_nothing(
    world: World,
) -> None:
    name = world.laptop("alice")
    ns, ifname = world.ns(name), world.ifname(name)
    net_id = world.m["web-b"]["net_id"]
    resolv = world.on(name, "cat", "/etc/resolv.conf").stdout
    assert f"nameserver {addressing.network_service_address(net_id)}" in resolv
    # dig with no @server: the resolver wg-quick configured through resolvconf.
    answer = world.on(name, "dig", "+short", "AAAA", "web.internal").stdout.split()
    assert sorted(answer) == sorted([world.m["web-b"]["address"], world.m["web-c"]["address"]])
    run = lambda *argv: world.on(name, *argv)  # noqa: E731
    web_c = world.m["web-c"]  # on c: the packets cross the gateway a, then the mesh
    assert ping(run, web_c["address"])
    with world.listening(world.lab.machine_ns(web_c["id"]), "tcp", 8080):
        assert tcp_ok(run, web_c["address"], 8080)
    shop = world.m["shop-b"]
    with world.listening(world.lab.machine_ns(shop["id"]), "tcp", 8080) as seen:
        assert not ping(run, shop["address"])
        assert not tcp_ok(run, shop["address"], 8080)
        assert seen.read_text() == ""
    assert world.on(name, "dig", "+short", "AAAA", "shop.internal").stdout.strip() == ""

    down = laptop.wg_quick(world.lab, name, "down")
    assert down.returncode == 0, down.stderr
    assert world.on(name, "ip", "link", "show", ifname).returncode != 0
    assert not Path(f"/var/run/wireguard/{ifname}.sock").exists()
    assert world.on(name, "ip", "-6", "route", "show", "match", "fdaa::/16").stdout.strip() == ""
    assert "nameserver" not in world.on(name, "cat", "/etc/resolv.conf").stdout
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    assert pids.strip() == ""  # no wireguard-go left


def test_a_machine_resolves_a_laptop_by_name_and_connects_to_it(world: World) -> None:
    name = world.laptop("bob")
    peer = world.peer("acme", name)
    web_c = world.m["web-c"]
    dig = world.lab.exec(web_c, ["dig", "+short", "AAAA", f"{name}._peer.internal"])
    assert dig.stdout.split() == [peer["address"]]
    with world.listening(world.ns(name), "tcp", 7000) as seen:
        run = lambda *argv: world.lab.exec(web_c, list(argv))  # noqa: E731
        assert tcp_ok(run, f"{name}._peer.internal", 7000)
        assert seen.read_text().split() == [web_c["address"]]
    # globex's machine does not even learn the name
    shop = world.m["shop-b"]
    assert world.lab.exec(shop, ["dig", "+short", "AAAA", f"{name}._peer.internal"]).stdout == ""


def test_status_says_never_then_shows_a_handshake_and_growing_counters(world: World) -> None:
    name = world.laptop("carol", start=False)
    before = world.cli("wireguard", "status", "acme", name)
    assert before.returncode == 0, before.stderr
    assert "never" in before.stdout
    assert laptop.wg_quick(world.lab, name, "up").returncode == 0
    run = lambda *argv: world.on(name, *argv)  # noqa: E731
    assert ping(run, world.m["web-b"]["address"])

    def status() -> dict[str, Any]:
        out = world.cli("wireguard", "status", "acme", name, "--json")
        assert out.returncode == 0, out.stderr
        return dict(json.loads(out.stdout))

    until(lambda: (status()["latest_handshake"] or 0) > 0 and status()["rx_bytes"] > 0, "status")
    first = status()
    assert first["installed"] is True
    assert first["endpoint"].startswith(world.lab.state.laptops[name]["underlay"] + ":")  # type: ignore[union-attr]
    assert ping(run, world.m["web-b"]["address"], count=10)
    until(
        lambda: (
            status()["rx_bytes"] > first["rx_bytes"] and status()["tx_bytes"] > first["tx_bytes"]
        ),
        "counters that grow after traffic",
    )
    text = world.cli("wireguard", "status", "acme", name).stdout
    assert "ago)" in text
    assert "received" in text


def test_remove_cuts_the_laptop_off_and_its_name_leaves_dns(world: World) -> None:
    name = world.laptop("dave")
    key = world.peer("acme", name)["public_key"]
    web_b = world.m["web-b"]
    assert world.lab.exec(web_b, ["dig", "+short", "AAAA", f"{name}._peer.internal"]).stdout
    run = lambda *argv: world.on(name, *argv)  # noqa: E731
    assert ping(run, web_b["address"])
    removed = world.cli("wireguard", "remove", "acme", name)
    assert removed.returncode == 0, removed.stderr
    until(lambda: key not in world.gateway_keys(), "the gateway to drop the peer", timeout=5)
    assert not ping(run, web_b["address"], count=2)
    answer = world.lab.exec(web_b, ["dig", "AAAA", f"{name}._peer.internal"]).stdout
    assert "status: NXDOMAIN" in answer
    listing = world.lab.exec(web_b, ["dig", "+short", "TXT", "_peer.internal"]).stdout
    assert name not in listing
    assert name not in world.peer_names("acme")


def test_ephemeral_peers_are_unlisted_and_removed_when_their_laptop_goes(world: World) -> None:
    on, off = world.laptop("eph-on", ephemeral=True), world.laptop("eph-off", ephemeral=True)
    web_b = world.m["web-b"]
    listing = world.lab.exec(web_b, ["dig", "+short", "TXT", "_peer.internal"]).stdout
    assert on not in listing
    assert off not in listing
    for name in (on, off):  # both shake hands: both were active once
        assert ping(lambda *argv, n=name: world.on(n, *argv), web_b["address"])
    off_key = world.peer("acme", off)["public_key"]
    assert laptop.wg_quick(world.lab, off, "down").returncode == 0
    until(lambda: off not in world.peer_names("acme"), "the idle peer's removal", timeout=IDLE * 3)
    assert on in world.peer_names("acme")  # its keepalives keep it
    until(lambda: off_key not in world.gateway_keys(), "the gateway to drop it", timeout=5)
    log = (world.lab.root / "server.log").read_text()
    assert f"removed ephemeral peer 'acme/{off}'" in log
    assert ping(lambda *argv: world.on(on, *argv), web_b["address"])


def test_peers_of_two_orgs_and_two_networks_on_one_gateway_stay_apart(world: World) -> None:
    mine = world.laptop("x-acme")
    staging = world.laptop("x-staging", network="staging")
    other = world.laptop("x-globex", org="globex")
    own = {mine: world.m["web-b"], staging: world.m["preview-b"], other: world.m["shop-b"]}
    addr = {n: world.peer(o, n)["address"] for n, o in ((mine, "acme"), (staging, "acme"))}
    addr[other] = world.peer("globex", other)["address"]
    for name, machine in own.items():
        assert ping(lambda *argv, n=name: world.on(n, *argv), machine["address"]), name
    # The attacker widens its side: every 6PN prefix through its tunnel, as if it were free
    # to reach anything behind the gateway.
    ifname = world.ifname(mine)
    key = world.on(mine, "wg", "show", ifname, "peers").stdout.split()[0]
    assert (
        world.on(mine, "wg", "set", ifname, "peer", key, "allowed-ips", "fdaa::/16").returncode == 0
    )
    assert world.on(mine, "ip", "-6", "route", "add", "fdaa::/16", "dev", ifname).returncode == 0
    # and forges the other peers' source addresses on its interface
    for victim in (staging, other):
        world.on(mine, "ip", "-6", "addr", "add", f"{addr[victim]}/128", "dev", ifname, "nodad")
    for victim in (staging, other):
        target = own[victim]
        with world.listening(world.lab.machine_ns(target["id"]), "udp", 9000) as seen:
            for source in (addr[mine], addr[victim]):
                code = (
                    "import socket\ns=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n"
                    f"s.bind(({source!r},0))\n"
                    f"for _ in range(5): s.sendto(b'x',({target['address']!r},9000))"
                )
                assert world.on(mine, sys.executable, "-c", code).returncode == 0
            assert not ping(lambda *argv: world.on(mine, *argv), target["address"])
            time.sleep(0.5)  # delivery is what is checked: give stray packets time to land
            assert seen.read_text() == "", f"{victim}'s machine received packets from {mine}"
        # nor the other peer itself
        with world.listening(world.ns(victim), "udp", 9001) as seen:
            code = (
                "import socket\ns=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n"
                f"for _ in range(5): s.sendto(b'x',({addr[victim]!r},9001))"
            )
            world.on(mine, sys.executable, "-c", code)
            time.sleep(0.5)
            assert seen.read_text() == "", f"{victim} received packets from {mine}"
    # The positive control: the same listener shape does record the attacker's own network.
    with world.listening(world.lab.machine_ns(own[mine]["id"]), "udp", 9000) as seen:
        code = (
            "import socket\ns=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n"
            f"s.bind(({addr[mine]!r},0))\n"
            f"for _ in range(5): s.sendto(b'x',({own[mine]['address']!r},9000))"
        )
        assert world.on(mine, sys.executable, "-c", code).returncode == 0
        until(lambda: addr[mine] in seen.read_text().split(), "the positive control", timeout=5)


def test_a_gateway_drops_a_networks_service_address_with_its_last_peer(world: World) -> None:
    r = world.api.post("/v1/orgs/acme/networks", json={"name": "solo"})
    assert r.status_code == 201, r.text
    service = str(addressing.network_service_address(r.json()["net_id"]))

    def served() -> tuple[bool, bool]:
        lo = world.lab.host_run("a", ["ip", "-6", "addr", "show", "dev", "lo"]).stdout
        sockets = world.lab.host_run("a", ["ss", "-lnuH"]).stdout
        return f"{service}/" in lo, f"[{service}]:53" in sockets

    assert served() == (False, False)
    first = world.laptop("solo-1", network="solo")
    until(lambda: served() == (True, True), "the network's DNS address on the gateway")
    assert world.cli("wireguard", "remove", "acme", first).returncode == 0
    until(lambda: served() == (False, False), "the address and listener to go")
    second = world.laptop("solo-2", network="solo")
    until(lambda: served() == (True, True), "them back with the next peer")
    answer = world.on(second, "dig", "+short", "AAAA", f"{second}._peer.internal").stdout
    assert answer.split() == [world.peer("acme", second)["address"]]

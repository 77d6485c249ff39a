"""Faults injected for real in a 3-host lab (SPEC 10, issue 17): the control plane killed, an
agent killed mid-batch, a host's cable pulled and its address moved, a host "rebooted".

Each test checks what a user would: flows between machines that stayed up keep passing (a
steady ping counts every packet), names keep resolving, nothing is lost, and everything heals
with no process restarted by hand except the one the fault killed. Each test leaves the lab
healed for the next one.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sixpn.core.hoststate import MACHINE_IF_PREFIX, machine_ifname, machine_netns
from sixpn.lab import netns
from sixpn.lab.fabric import UNDERLAY_NET, WG_PORT, Lab
from sixpn.lab.process import alive
from tests.e2e.test_fabric import THREE_HOSTS, Fabric, Machine
from tests.e2e.test_lab_cli import sixpn_lab
from tests.harness import wait_until

pytestmark = pytest.mark.e2e

WEB = ("a1", "b1", "c1")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fabric]:
    tmp = tmp_path_factory.mktemp("faults")
    lab = Lab(tmp / "lab")
    try:
        lab.up(
            THREE_HOSTS,
            resync=2.0,
        )
        api = lab.api()
        assert api.post("/v1/orgs", json={"name": "alpha"}).status_code == 201
        assert api.post("/v1/orgs/alpha/apps", json={"name": "web"}).status_code == 201
        fab = Fabric(lab, api, {}, tmp)
        for label in WEB:
            fab.m[label] = fab.machine("alpha", "web", label[0])
        fab.wait_ready((("a1", "b1"), ("a1", "c1"), ("b1", "c1")))
        yield fab
    finally:
        if lab.root.exists():  # the logs outlive the lab: pytest keeps its last temp dirs
            for log in lab.root.glob("*.log"):
                shutil.copy(log, tmp / log.name)
        lab.down()


@dataclass
class Flow:
    """A steady ping between two machines (10 a second); its counts once stopped."""

    proc: subprocess.Popen[str]
    sent: int = 0
    received: int = 0

    @property
    def lost(self) -> int:
        return self.sent - self.received


@contextlib.contextmanager
def steady_ping(fab: Fabric, src: str, dst: str) -> Iterator[Flow]:
    """Ping from machine ``src`` to ``dst`` until the block ends (SIGINT: ping's summary)."""
    argv = ["ping", "-6", "-n", "-i", "0.1", "-W", "2", fab.m[dst]["address"]]
    proc = subprocess.Popen(
        netns.exec_argv(fab.lab.machine_ns(fab.m[src]["id"]), argv),
        stdout=subprocess.PIPE,
        text=True,
    )
    flow = Flow(proc)
    try:
        time.sleep(0.5)
        yield flow
    finally:
        time.sleep(2.5)  # the last probes' answers (-W 2) count too
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        counts = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert counts, out[-400:]
        flow.sent, flow.received = int(counts[1]), int(counts[2])


def names(fab: Fabric, src: Machine, name: str = "web.internal") -> set[str]:
    return set(fab.run(src, "dig", "+short", "+tries=1", "+time=2", "AAAA", name).stdout.split())


def web_addresses(fab: Fabric) -> set[str]:
    return {fab.m[label]["address"] for label in WEB}


def agent_pids(lab: Lab) -> dict[str, int]:
    assert lab.state is not None
    return {name: lab.state.pids[f"agent-{name}"] for name in lab.state.hosts}


def sixpn(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "sixpn", *args]
    return subprocess.run(
        argv, env=lab.cli_env(), capture_output=True, text=True, timeout=60, check=False
    )


def reaches_everywhere(fab: Fabric, new: Machine, timeout: float = 30) -> None:
    """``new`` is wired, reachable from a machine of every other host, and in web.internal as
    every host's DNS answers it."""
    fab.lab.wait_wired(new, timeout=timeout)
    for label in WEB:
        if label[0] == new["host"]:
            continue
        src = fab.m[label]
        wait_until(lambda s=src: fab.ping(s, new["address"]), timeout, f"{label} reaching new")
    for label in WEB:
        src = fab.m[label]
        wait_until(lambda s=src: new["address"] in names(fab, s), timeout, f"new in {label}'s DNS")


def test_the_control_plane_down_names_and_flows_go_on_and_changes_arrive_after(
    world: Fabric,
) -> None:
    lab, m = world.lab, world.m
    before = agent_pids(lab)
    with steady_ping(world, "a1", "c1") as flow:
        lab.stop_replica(0, signal.SIGKILL)
        down_at = time.monotonic()
        try:
            # every host's DNS answers from its last state
            for label in WEB:
                assert names(world, m[label]) == web_addresses(world), label
            # new flows between machines that were there
            assert world.ping(m["b1"], m["c1"]["address"])
            with world.listening(m["c1"], "tcp", 8085):
                assert world.tcp(m["b1"], m["c1"]["address"], 8085)
            # commands fail with an error that names the control plane
            listed = sixpn(lab, "machines", "list", "--org", "alpha")
            assert listed.returncode == 1, listed.stdout
            assert str(lab.socket) in listed.stderr, listed.stderr
            assert "Traceback" not in listed.stderr
            # the lab still knows its machines
            status = sixpn_lab(lab.root, "status")
            assert status.returncode == 0, status.stderr
            assert "control plane DOWN" in status.stdout
            assert all(m[label]["id"] in status.stdout for label in WEB), status.stdout
            shown = sixpn_lab(lab.root, "exec", "web@c", "--", "sh", "-c", "echo $SIXPN_PRIVATE_IP")
            assert shown.returncode == 0, shown.stderr
            assert shown.stdout.strip() == m["c1"]["address"]
            time.sleep(max(0.0, 12 - (time.monotonic() - down_at)))  # down for a while
            assert names(world, m["b1"]) == web_addresses(world)
        finally:
            lab.start_replica(0)
    assert flow.lost == 0, f"{flow.lost} of {flow.sent} pings lost"
    new = world.machine("alpha", "web", "c")
    try:
        reaches_everywhere(world, new)
    finally:
        world.api.delete(f"/v1/orgs/alpha/machines/{new['id']}")
    assert agent_pids(lab) == before
    assert all(alive(pid) for pid in before.values())


def wired_on(lab: Lab, host: str) -> set[str]:
    """The machine veths of ``host`` as its kernel has them."""
    shown = netns.run(lab.host_ns(host), ["ip", "-j", "link", "show", "type", "veth"])
    links = json.loads(shown.stdout or "[]")
    return {x["ifname"] for x in links if x["ifname"].startswith(MACHINE_IF_PREFIX)}


def test_an_agent_killed_mid_batch_converges_to_exactly_the_desired_state(world: Fabric) -> None:
    lab, api, m = world.lab, world.api, world.m
    made: list[Machine] = []
    destroyed: list[str] = []
    problems: list[str] = []

    def batch() -> None:
        for i in range(12):
            r = api.post("/v1/orgs/alpha/machines", json={"app": "web", "host": "b"})
            if r.status_code != 201:
                problems.append(r.text)
                return
            made.append(r.json())
            if i % 3 == 2:  # every third one goes again at once
                gone = made.pop(0)
                destroyed.append(gone["id"])
                if api.delete(f"/v1/orgs/alpha/machines/{gone['id']}").status_code != 200:
                    problems.append(f"delete {gone['id']}")
            time.sleep(0.05)

    with steady_ping(world, "a1", "b1") as flow:
        worker = threading.Thread(target=batch)
        worker.start()
        time.sleep(0.3)
        lab.stop_agent("b", signal.SIGKILL)
        worker.join(timeout=60)
        lab.start_agent("b", resync=2.0)
        lab.wait_settled(timeout=60)
    assert not problems, problems
    assert flow.lost == 0, f"{flow.lost} of {flow.sent} pings lost"
    try:
        listed = api.get("/v1/orgs/alpha/machines").json()
        wanted = {x["id"] for x in listed if x["host"] == "b" and x["state"] != "destroyed"}
        assert wanted == {m["b1"]["id"]} | {x["id"] for x in made}
        status = lab.status("b")
        assert status is not None
        assert set(status["machines"]) == wanted
        # nothing missing, nothing extra: veths and namespaces are exactly the wanted ones
        assert wired_on(lab, "b") == {machine_ifname(i) for i in wanted}
        namespaces = netns_names()
        assert {machine_netns(i) for i in wanted} <= namespaces
        assert not {machine_netns(i) for i in destroyed} & namespaces
        for x in made:
            reaches_everywhere(world, x)
    finally:
        for x in made:
            api.delete(f"/v1/orgs/alpha/machines/{x['id']}")
    b1 = {machine_ifname(m["b1"]["id"])}
    wait_until(lambda: wired_on(lab, "b") == b1, 30, "the batch's machines unwired on b")


def netns_names() -> set[str]:
    root = Path("/var/run/netns")
    return {p.name for p in root.iterdir()} if root.exists() else set()


def wg_show(lab: Lab, host: str, what: str) -> str:
    assert lab.state is not None
    ifname = lab.state.hosts[host]["wg_ifname"]
    return netns.run(lab.host_ns(host), ["wg", "show", ifname, what]).stdout


def test_a_rebooted_host_is_rebuilt_with_the_same_keys_and_addresses(world: Fabric) -> None:
    """What a reboot takes: the agent, the WireGuard interface, the nftables table, the
    machines' namespaces; what it keeps: the data directory."""
    lab, m = world.lab, world.m
    assert lab.state is not None
    key = wg_show(lab, "c", "public-key")
    c1 = m["c1"]
    lab.crash_host("c")
    assert not netns.exists(lab.machine_ns(c1["id"]))
    assert not world.ping(m["a1"], c1["address"])
    lab.start_agent("c", resync=2.0)
    lab.wait_wired(c1, timeout=30)
    world.wait_reachable("a1", "c1")
    world.wait_reachable("c1", "b1")
    assert wg_show(lab, "c", "public-key") == key
    assert c1["address"] in world.run(c1, "ip", "-6", "addr", "show", "dev", "eth0").stdout
    assert names(world, c1) == web_addresses(world)


def test_a_host_cut_off_the_underlay_for_30_s_comes_back_by_itself(world: Fabric) -> None:
    lab, m = world.lab, world.m
    with steady_ping(world, "a1", "c1") as others:
        lab.underlay_cable("b", plugged=False)
        try:
            time.sleep(2)
            assert not world.ping(m["a1"], m["b1"]["address"])
            time.sleep(28)
        finally:
            lab.underlay_cable("b", plugged=True)
        world.wait_reachable("a1", "b1", timeout=60)
        world.wait_reachable("b1", "c1", timeout=60)
    # The flow between the hosts that stayed plugged in goes on. Not a zero-loss check (SPEC 10
    # asks that of a killed agent, above): over ~35 s at 10 packets/s, a suite loading the 2
    # cores has made wireguard-go drop one (1 of 292, once).
    assert others.lost <= others.sent // 100, f"a1 to c1: {others.lost} of {others.sent} lost"


def test_a_hosts_new_address_reaches_the_other_hosts(world: Fabric) -> None:
    lab, m = world.lab, world.m
    assert lab.state is not None
    old = lab.state.hosts["b"]["address"]
    new = f"{UNDERLAY_NET}.62"
    lab.move_host("b", new)
    try:
        endpoint = f"{new}:{WG_PORT}"
        wait_until(
            lambda: world.api.get("/v1/hosts/b").json()["endpoint"] == endpoint,
            30,
            "host b's record to carry its new endpoint",
        )
        for other in ("a", "c"):
            wait_until(
                lambda o=other: endpoint in wg_show(lab, o, "endpoints"),
                30,
                f"host {other}'s WireGuard peer of b to carry {endpoint}",
            )
        world.wait_reachable("c1", "b1")
        world.wait_reachable("a1", "b1")
        time.sleep(3)  # a resync later (2 s), the endpoints still say the new address
        for other in ("a", "c"):
            assert endpoint in wg_show(lab, other, "endpoints")
        assert world.ping(m["c1"], m["b1"]["address"])
    finally:
        lab.move_host("b", old)
    world.wait_reachable("a1", "b1", timeout=60)

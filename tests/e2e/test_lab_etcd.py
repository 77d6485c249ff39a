"""The lab on etcd (SPEC 1, SPEC 8: `sixpn lab up --store etcd`): the same fabric as on SQLite,
its control plane 2 `sixpn server` replicas over a 3-member etcd cluster the lab runs itself.

One lab for the module, brought up and taken down by the real CLI: hosts a (fra, gateway) and
b (ams), org alpha's app web on both, org beta's web on b. The core checks of the SQLite lab
(reach across hosts, DNS from a machine, another org refused), then faults: one replica, then
the etcd leader, killed with SIGKILL; the agents carry on and a machine created meanwhile is
wired, reachable and named; both come back. The last test takes the lab down and looks for
what a lab on etcd could leave: processes, data directories, namespaces, files.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sixpn.lab import etcd
from sixpn.lab.fabric import Lab
from sixpn.lab.process import alive
from tests.e2e.test_fabric import Fabric, Machine, seen
from tests.e2e.test_lab_cli import down_safely, leftovers, sixpn_lab

pytestmark = pytest.mark.e2e

SIXPN_LAB = [sys.executable, "-m", "sixpn", "lab"]
TOPOLOGY = """
[[hosts]]
name = "a"
region = "fra"
gateway = true

[[hosts]]
name = "b"
region = "ams"

[[orgs]]
name = "alpha"

[[orgs.apps]]
name = "web"

[[orgs.machines]]
app = "web"
host = "a"

[[orgs.machines]]
app = "web"
host = "b"

[[orgs]]
name = "beta"

[[orgs.apps]]
name = "web"

[[orgs.machines]]
app = "web"
host = "b"
"""


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fabric]:
    if shutil.which("etcd") is None:
        pytest.skip("the etcd binary is not installed (scripts/sysdeps.sh installs etcd-server)")
    tmp = tmp_path_factory.mktemp("labetcd")
    (tmp / "lab.toml").write_text(TOPOLOGY)
    lab_dir = tmp / "lab"
    try:
        up = sixpn_lab(lab_dir, "up", "--store", "etcd", "--topology", str(tmp / "lab.toml"))
        assert up.returncode == 0, up.stdout + up.stderr
        assert "store: etcd, 3 members (3 healthy)" in up.stdout, up.stdout
        lab = Lab(lab_dir)
        inv = status(lab_dir)
        m = {f"{x['org']}-{x['host']}": x for x in inv["machines"]}
        with lab.api(0) as api:
            yield Fabric(lab, api, m, tmp)
    finally:
        down_safely(lab_dir)


def status(lab_dir: Path) -> dict[str, Any]:
    shown = sixpn_lab(lab_dir, "status", "--json", timeout=60)
    assert shown.returncode == 0, shown.stderr
    found: dict[str, Any] = json.loads(shown.stdout)
    return found


def addresses(fab: Fabric, src: Machine, name: str) -> set[str]:
    return set(fab.run(src, "dig", "+short", "AAAA", name).stdout.split())


def new_machine_works(fab: Fabric, api: httpx.Client, host: str, seen_from: str) -> Machine:
    """A machine of alpha/web created through ``api`` on ``host``: wired, reached from machine
    ``seen_from`` (another host's), and named in ``web.internal`` there."""
    r = api.post("/v1/orgs/alpha/machines", json={"app": "web", "host": host})
    assert r.status_code == 201, r.text
    new: Machine = r.json()
    fab.lab.wait_wired(new, timeout=30)
    src = fab.m[seen_from]
    deadline = time.monotonic() + 15
    while not fab.ping(src, new["address"]):
        assert time.monotonic() < deadline, "the new machine is not reachable"
    while new["address"] not in addresses(fab, src, "web.internal"):
        assert time.monotonic() < deadline, "the new machine is not in web.internal"
        time.sleep(0.1)
    return new


def test_status_shows_3_members_and_2_replicas(fabric: Fabric) -> None:
    store = status(fabric.lab.root)["store"]
    assert store["kind"] == "etcd"
    members, replicas = store["members"], store["replicas"]
    assert len(members) == 3
    assert all(m["alive"] and m["healthy"] and m["pid"] for m in members), members
    assert sum(m["leader"] for m in members) == 1
    assert all(m["client_url"].startswith("http://127.0.0.1:") for m in members)
    assert all(Path(m["data_dir"]).is_dir() for m in members)
    assert [r["name"] for r in replicas] == ["server", "server2"]
    assert all(r["alive"] and r["healthy"] and r["pid"] for r in replicas), replicas
    api = status(fabric.lab.root)["lab"]["api"]
    assert api == ",".join(r["url"] for r in replicas)
    text = sixpn_lab(fabric.lab.root, "status").stdout
    assert "store: etcd, 3 members (3 healthy)" in text
    assert "2 server replicas (2 healthy)" in text


def test_machines_reach_each_other_across_hosts(fabric: Fabric) -> None:
    a, b = fabric.m["alpha-a"], fabric.m["alpha-b"]
    assert fabric.ping(a, b["address"])
    with fabric.listening(a, "tcp", 8080):
        assert fabric.tcp(b, a["address"], 8080)


def test_dns_answers_from_a_machine(fabric: Fabric) -> None:
    m = fabric.m
    alpha = {m["alpha-a"]["address"], m["alpha-b"]["address"]}
    assert addresses(fabric, m["alpha-a"], "web.internal") == alpha
    assert addresses(fabric, m["beta-b"], "web.internal") == {m["beta-b"]["address"]}


def test_another_org_cannot_reach_them(fabric: Fabric) -> None:
    m = fabric.m
    assert not fabric.ping(m["beta-b"], m["alpha-b"]["address"])  # on its host
    target = m["alpha-a"]  # across hosts
    assert not fabric.ping(m["beta-b"], target["address"])
    with fabric.listening(target, "tcp", 8081) as log:
        assert not fabric.tcp(m["beta-b"], target["address"], 8081)
        assert seen(log) == set()


def test_a_replica_killed_the_agents_carry_on_through_the_other(fabric: Fabric) -> None:
    lab = fabric.lab
    lab.stop_replica(0, signal.SIGKILL)
    try:
        replicas = status(lab.root)["store"]["replicas"]  # served by the other replica
        assert [(r["alive"], r["healthy"]) for r in replicas] == [(False, False), (True, True)]
        with lab.api(1) as api:
            new = new_machine_works(fabric, api, "a", seen_from="alpha-b")
    finally:
        lab.start_replica(0)
    with lab.api(0) as api:  # back, on the shared store
        listed = api.get("/v1/orgs/alpha/machines").json()
    assert new["id"] in {x["id"] for x in listed}


def test_the_etcd_leader_killed_the_fabric_carries_on(fabric: Fabric) -> None:
    lab = fabric.lab
    leader = next(i for i, m in enumerate(etcd.status(lab)) if m["leader"])
    lab.stop_etcd_member(leader, signal.SIGKILL)
    try:
        with lab.api() as api:
            new_machine_works(fabric, api, "b", seen_from="alpha-a")
        members = status(lab.root)["store"]["members"]
        assert [m["alive"] for m in members].count(False) == 1
        assert sum(m["healthy"] for m in members) == 2
    finally:
        lab.start_etcd_member(leader)
    members = etcd.status(lab)
    assert all(m["healthy"] for m in members), members
    # the restarted member caught up on the writes it missed: its own copy (a serializable
    # read) reaches the revision another member answers
    revision = _revision(members[(leader + 1) % 3]["client_url"], serializable=False)
    deadline = time.monotonic() + 10
    while _revision(members[leader]["client_url"], serializable=True) < revision:
        assert time.monotonic() < deadline, "the restarted member did not catch up"
        time.sleep(0.1)


def test_a_majority_of_etcd_lost_the_fabric_keeps_its_last_state_then_recovers(
    fabric: Fabric,
) -> None:
    """SPEC 10: with 2 of 3 members gone, a write fails with 503 naming the store, while the
    agents keep forwarding and answering DNS from their last state; with the members back,
    writes work again and reach the agents, with nothing restarted."""
    lab, m = fabric.lab, fabric.m
    a, b = m["alpha-a"], m["alpha-b"]
    lost = [i for i, member in enumerate(etcd.status(lab)) if not member["leader"]][:1]
    lost.append(next(i for i, member in enumerate(etcd.status(lab)) if member["leader"]))
    for i in lost:
        lab.stop_etcd_member(i, signal.SIGKILL)
    try:
        with lab.api() as api:
            started = time.monotonic()
            r = api.post("/v1/orgs/alpha/machines", json={"app": "web", "host": "b"}, timeout=30)
            took = time.monotonic() - started
        assert r.status_code == 503, r.text
        assert "etcd" in r.json()["error"]["message"]
        assert took < 12
        # the data path and DNS run on: reach across hosts, names from the last state
        assert fabric.ping(a, b["address"])
        assert {a["address"], b["address"]} <= addresses(fabric, a, "web.internal")
    finally:
        for i in lost:
            lab.start_etcd_member(i)
    deadline = time.monotonic() + 30
    while True:  # the replicas were never restarted: the first writes after the return work
        try:
            with lab.api() as api:
                new_machine_works(fabric, api, "b", seen_from="alpha-a")
            break
        except AssertionError:
            assert time.monotonic() < deadline, "writes did not come back"
            time.sleep(0.5)


def _revision(client_url: str, *, serializable: bool) -> int:
    key = base64.b64encode(b"/sixpn/").decode()
    ask = {"key": key, "count_only": True, "serializable": serializable}
    answer = httpx.post(f"{client_url}/v3/kv/range", json=ask, timeout=5).json()
    return int(answer["header"]["revision"])


def test_lab_down_after_a_crashed_lab_up_removes_its_store(tmp_path: Path) -> None:
    """`lab up` SIGKILLed once its control plane runs: everything was in lab.json first."""
    (tmp_path / "lab.toml").write_text(TOPOLOGY)
    lab_dir = tmp_path / "lab"
    argv = [*SIXPN_LAB, "--dir", str(lab_dir), "up", "--store", "etcd"]
    argv += ["--topology", str(tmp_path / "lab.toml")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("control plane:"):
                proc.kill()
                break
        proc.wait(timeout=60)
        state = Lab(lab_dir).state
        assert state is not None
        assert {f"etcd-{n}" for n in (1, 2, 3)} | {"server", "server2"} <= set(state.pids)
        assert all(alive(pid) for pid in state.pids.values())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        down = sixpn_lab(lab_dir, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert [role for role, pid in state.pids.items() if alive(pid)] == []
    assert not Path(state.etcd["dir"]).exists()
    assert leftovers(state.lab_id) == []
    assert not lab_dir.exists()


def test_lab_down_leaves_no_process_data_or_namespace(fabric: Fabric) -> None:
    lab = fabric.lab
    assert lab.state is not None
    lab_id, pids = lab.state.lab_id, dict(lab.state.pids)
    data = Path(lab.state.etcd["dir"])
    assert {f"etcd-{n}" for n in (1, 2, 3)} | {"server", "server2"} <= set(pids)
    down = sixpn_lab(lab.root, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert [role for role, pid in pids.items() if alive(pid)] == []
    assert not data.exists()
    assert leftovers(lab_id) == []
    assert not lab.root.exists()
    again = sixpn_lab(lab.root, "down")
    assert again.returncode == 0
    assert "nothing to take down" in again.stdout

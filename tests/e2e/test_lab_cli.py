"""`sixpn lab` as a user runs it (SPEC 8): the real CLI in child processes, a real lab.

One lab of a custom topology (4 hosts, 3 orgs, custom networks) serves the module; the demo,
a refused topology and an interrupted `lab up` each use a directory of their own. Every lab
is taken down at the end, also when a test fails, and the checks after `down` look for what a
lab leaves when it leaks: namespaces, /etc/netns folders, wireguard-go sockets and processes,
files.
"""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sixpn.core.addressing import decode
from sixpn.lab.fabric import Lab

pytestmark = pytest.mark.e2e

TOPOLOGY = """
[[hosts]]
name = "par-1"
region = "cdg"
gateway = true

[[hosts]]
name = "par-2"
region = "cdg"

[[hosts]]
name = "sin-1"
region = "sin"
gateway = true

[[hosts]]
name = "iad-1"
region = "iad"

[[orgs]]
name = "north"
networks = ["blue", "green"]

[[orgs.apps]]
name = "db"
network = "blue"

[[orgs.apps]]
name = "www"

[[orgs.machines]]
app = "db"
host = "par-1"
process_group = "primary"
metadata = { tier = "gold" }

[[orgs.machines]]
app = "www"
region = "cdg"
count = 2

[[orgs]]
name = "south"

[[orgs.apps]]
name = "www"

[[orgs.machines]]
app = "www"
host = "sin-1"

[[orgs.machines]]
app = "www"
host = "iad-1"
state = "stopped"

[[orgs]]
name = "east"
networks = ["red"]

[[orgs.apps]]
name = "cache"
network = "red"

[[orgs.machines]]
app = "cache"
host = "iad-1"
"""


def sixpn_lab(lab_dir: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "sixpn", "lab", "--dir", str(lab_dir), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def leftovers(lab_id: str) -> list[str]:
    """What of lab ``lab_id`` is still on the machine: the names the lab makes carry its ID
    right after a role's letters (``sixpn-h<id>-a``, ``sixpn-u<id>``, ``sxw<id>0``,
    ``n<id>1``), so an agent's machine namespace or veth (``sixpn-m-<machine id>``,
    ``sxm<machine id>``) of another lab, whose random ID may hold these four hex digits, is not
    taken for one."""
    netns_name = re.compile(rf"sixpn-[a-z]+{lab_id}(-.*)?")
    link_name = re.compile(rf"(?!sxm)[a-z]+{lab_id}\w*")
    found = (
        [n for n in os.listdir("/var/run/netns") if netns_name.fullmatch(n)]
        if Path("/var/run/netns").exists()
        else []
    )
    if Path("/etc/netns").exists():
        found += [f"/etc/netns/{n}" for n in os.listdir("/etc/netns") if netns_name.fullmatch(n)]
    sockets = Path("/var/run/wireguard")
    if sockets.exists():
        found += [f"socket {s.name}" for s in sockets.iterdir() if link_name.fullmatch(s.stem)]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    names = [line.split(":")[1].strip().split("@")[0] for line in links.stdout.splitlines()]
    found += [f"link {n}" for n in names if link_name.fullmatch(n)]
    return found


def down_safely(lab_dir: Path) -> None:
    with_state = Lab(lab_dir)
    if with_state.state is not None:
        with_state.down()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("labcli")
    topo = tmp / "four.toml"
    topo.write_text(TOPOLOGY)
    lab_dir = tmp / "lab"
    try:
        up = sixpn_lab(lab_dir, "up", "--topology", str(topo))
        assert up.returncode == 0, up.stdout + up.stderr
        assert "lab is up: 4 hosts" in up.stdout
        status = sixpn_lab(lab_dir, "status", "--json")
        assert status.returncode == 0, status.stderr
        yield lab_dir, json.loads(status.stdout)
    finally:
        down_safely(lab_dir)


def test_a_custom_topology_comes_up_with_addresses_that_decode(
    lab: tuple[Path, dict[str, Any]],
) -> None:
    lab_dir, inv = lab
    assert [h["name"] for h in inv["hosts"]] == ["par-1", "par-2", "sin-1", "iad-1"]
    assert all(h["agent_running"] for h in inv["hosts"])
    assert len(inv["machines"]) == 6
    assert {(m["org"], m["app"]) for m in inv["machines"]} == {
        ("north", "db"),
        ("north", "www"),
        ("south", "www"),
        ("east", "cache"),
    }
    with Lab(lab_dir).api() as api:
        hosts = {h["name"]: h["host_id"] for h in api.get("/v1/hosts").json()}
        nets = {
            (org, n["name"]): n["net_id"]
            for org in ("north", "south", "east")
            for n in api.get(f"/v1/orgs/{org}/networks").json()
        }
    for m in inv["machines"]:
        fields = decode(m["address"])
        assert fields.net_id == nets[(m["org"], m["network"])], m
        assert fields.host_id == hosts[m["host"]], m
    db = next(m for m in inv["machines"] if m["app"] == "db")
    assert (db["network"], db["process_group"], db["metadata"]) == (
        "blue",
        "primary",
        {"tier": "gold"},
    )
    assert {m["host"] for m in inv["machines"] if m["org"] == "north" and m["app"] == "www"} <= {
        "par-1",
        "par-2",
    }
    stopped = [m for m in inv["machines"] if m["state"] == "stopped"]
    assert [(m["org"], m["host"]) for m in stopped] == [("south", "iad-1")]


def test_lab_up_twice_says_it_is_up(lab: tuple[Path, dict[str, Any]]) -> None:
    lab_dir, _ = lab
    again = sixpn_lab(lab_dir, "up")
    assert again.returncode == 1
    assert "already up" in again.stderr


def test_exec_runs_in_the_machine_with_its_address_and_resolver(
    lab: tuple[Path, dict[str, Any]],
) -> None:
    lab_dir, inv = lab
    db = next(m for m in inv["machines"] if m["app"] == "db")
    shown = sixpn_lab(lab_dir, "exec", "db", "--", "sh", "-c", "echo $SIXPN_PRIVATE_IP")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == db["address"]
    # its resolv.conf is in effect: its host's DNS answers about its own network only
    same_net = sixpn_lab(lab_dir, "exec", db["id"], "--", "dig", "+short", "AAAA", "db.internal")
    assert same_net.returncode == 0, same_net.stderr
    assert same_net.stdout.split() == [db["address"]]
    www = sixpn_lab(lab_dir, "exec", "north/www", "--", "dig", "+short", "AAAA", "db.internal")
    assert www.returncode == 0, www.stderr
    assert www.stdout.strip() == ""  # db is in network blue, www in default
    # the exit code is the command's
    assert sixpn_lab(lab_dir, "exec", "cache", "--", "sh", "-c", "exit 7").returncode == 7


def test_exec_of_an_unknown_machine_fails_clearly(lab: tuple[Path, dict[str, Any]]) -> None:
    lab_dir, _ = lab
    for ref in ("nope", "db@sin-1", "0123456789abcd"):
        r = sixpn_lab(lab_dir, "exec", ref, "--", "true")
        assert r.returncode == 1, (ref, r.stdout, r.stderr)
        assert f"no machine {ref!r}" in r.stderr, r.stderr
    ambiguous = sixpn_lab(lab_dir, "exec", "www", "--", "true")
    assert ambiguous.returncode == 1
    assert "north/www" in ambiguous.stderr
    assert "south/www" in ambiguous.stderr


def test_a_bad_topology_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    lab_dir = tmp_path / "lab"
    cases = {
        "syntax.toml": ("[[hosts]\nname = 'a'\n", "line 1"),
        "unknown-host.toml": (
            TOPOLOGY.replace('host = "par-1"', 'host = "par-9"'),
            "orgs[0].machines[0].host",
        ),
        "duplicate.toml": (
            TOPOLOGY.replace('name = "par-2"', 'name = "par-1"'),
            "hosts[1].name",
        ),
        "region.toml": (TOPOLOGY.replace('region = "sin"', 'region = "xyz"'), "xyz"),
    }
    for name, (text, named) in cases.items():
        f = tmp_path / name
        f.write_text(text)
        r = sixpn_lab(lab_dir, "up", "--topology", str(f))
        assert r.returncode == 2, (name, r.stderr)
        assert named in r.stderr, (name, r.stderr)
        assert not lab_dir.exists(), name


def test_an_interrupted_lab_up_leaves_nothing(tmp_path: Path) -> None:
    lab_dir = tmp_path / "lab"
    argv = [sys.executable, "-m", "sixpn", "lab", "--dir", str(lab_dir), "up"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lab_id = None
    out: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # interrupt once the first agent runs: half-way
            out.append(line)
            if "agent PID" in line:
                lab_id = Lab(lab_dir).state.lab_id  # type: ignore[union-attr]
                proc.send_signal(signal.SIGINT)
                break
        out.append(proc.communicate(timeout=120)[0])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        down_safely(lab_dir)
    assert lab_id is not None
    assert proc.returncode != 0, "".join(out)
    assert leftovers(lab_id) == []
    assert not lab_dir.exists()


def test_the_demo_shows_every_step_and_leaves_nothing(tmp_path: Path) -> None:
    lab_dir = tmp_path / "lab"
    lab_id = None
    argv = [sys.executable, "-m", "sixpn", "lab", "--dir", str(lab_dir), "demo"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            if lab_id is None and (lab_dir / "lab.json").exists():
                state = Lab(lab_dir).state
                lab_id = state.lab_id if state else None
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        down_safely(lab_dir)
    text = "".join(out)
    assert proc.returncode == 0, text
    assert "every step showed what it should" in text
    assert "not as expected" not in text
    for shown in (
        "dig +short AAAA web.internal",
        "dig +short AAAA top1.nearest.of.web.internal",
        "dig +short TXT _apps.internal",
        "curl -sS -m 5 http://web.internal:8080/",
        "hello from web@",
        "peer laptop --org acme",
        "wg-quick",
    ):
        assert shown in text, shown
    assert lab_id is not None
    assert leftovers(lab_id) == []
    assert not lab_dir.exists()


def test_the_labs_api_is_https_with_the_labs_own_ca(lab: tuple[Path, dict[str, Any]]) -> None:
    """Issue 17: the lab's control plane speaks HTTPS on its Unix socket, with a CA the lab
    made (ca.pem), which its agents and `sixpn` commands are given; nothing else is trusted."""
    lab_dir, inv = lab
    sock = str(lab_dir / "api.sock")
    assert inv["lab"]["api"] == f"https+unix:{sock}"
    ca = lab_dir / "ca.pem"
    trusting = ssl.create_default_context(cafile=str(ca))
    transport = httpx.HTTPTransport(uds=sock, verify=trusting)
    with httpx.Client(base_url="https://sixpn", transport=transport) as client:
        assert client.get("/healthz").status_code == 200
    with (
        httpx.Client(base_url="http://sixpn", transport=httpx.HTTPTransport(uds=sock)) as plain,
        pytest.raises(httpx.HTTPError),
    ):
        plain.get("/healthz", timeout=5)
    system = httpx.HTTPTransport(uds=sock, verify=ssl.create_default_context())
    with (
        httpx.Client(base_url="https://sixpn", transport=system) as untrusting,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        untrusting.get("/healthz")
    # a `sixpn` command as `lab status` says to run it: the lab's CA in SIXPN_CA
    state = json.loads((lab_dir / "lab.json").read_text())
    env = os.environ | {"SIXPN_API": inv["lab"]["api"], "SIXPN_TOKEN": state["admin_token"]}
    cmd = [sys.executable, "-m", "sixpn", "orgs", "list"]
    ok = subprocess.run(cmd, env=env | {"SIXPN_CA": str(ca)}, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert refused.returncode == 1
    assert "did not verify" in refused.stderr, refused.stderr

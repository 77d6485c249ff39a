"""`sixpn wireguard doctor --interfaces` on a real running interface (wireguard-go) in a
throwaway namespace: nested AllowedIPs between two peers, and a file claiming what it holds."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sixpn.client import generate_keypair
from sixpn.core.wgquick import render_wg_quick
from sixpn.lab import netns

pytestmark = pytest.mark.netns


def _run(ns: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return netns.run(ns, argv, timeout=60)


@pytest.fixture
def running() -> Iterator[tuple[str, str]]:
    """(namespace, interface): a wireguard-go interface whose two peers' AllowedIPs nest."""
    for tool in ("wireguard-go", "wg"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    # Unique: wireguard-go's control sockets share /var/run/wireguard across namespaces.
    ifname = f"sxt{secrets.token_hex(4)}"
    with netns.temporary("t") as ns:
        # Foreground (-f), so that this PID is the daemon's (ip netns exec execs it).
        daemon = subprocess.Popen(
            netns.exec_argv(ns, ["wireguard-go", "-f", ifname]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while not Path(f"/var/run/wireguard/{ifname}.sock").exists():
                assert daemon.poll() is None, "wireguard-go exited"
                assert time.monotonic() < deadline, "wireguard-go did not start"
                time.sleep(0.02)
            peers = ["peer", generate_keypair().public_key, "allowed-ips", "fdaa:0:1::/48"]
            peers += ["peer", generate_keypair().public_key, "allowed-ips", "fdaa:0:1:2::/64"]
            done = _run(ns, ["wg", "set", ifname, *peers])
            assert done.returncode == 0, done.stderr
            yield ns, ifname
        finally:
            # Deleting the link stops wireguard-go; by its PID if it lingers, never by name.
            _run(ns, ["ip", "link", "delete", ifname])
            try:
                daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(timeout=10)
    # Nothing of ours is left: the namespace, the daemon and its control socket are gone.
    assert not netns.exists(ns)
    assert not Path(f"/var/run/wireguard/{ifname}.sock").exists()


def test_doctor_reads_the_running_interface(running: tuple[str, str], tmp_path: Path) -> None:
    ns, ifname = running
    doctor = [sys.executable, "-m", "sixpn", "wireguard", "doctor", "--interfaces"]
    done = _run(ns, doctor)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "nested: fdaa:0:1:2::/64" in done.stdout
    assert f"interface {ifname}, peer" in done.stdout
    assert f"inside interface {ifname} the longest prefix wins" in " ".join(done.stdout.split())

    # A file for the same network beside it: the running interface holds the route.
    laptop = tmp_path / "laptop.conf"
    laptop.write_text(
        render_wg_quick(
            generate_keypair().private_key,
            "fdaa:0:1:a7b:7d:0:a:102",
            "fdaa:0:1::3",
            generate_keypair().public_key,
            "fdaa:0:1::/48",
            "203.0.113.7:51820",
        )
    )
    done = _run(ns, [*doctor, "--json", str(laptop)])
    assert done.returncode == 1, done.stderr
    out = json.loads(done.stdout)
    # Interfaces of other namespaces (wireguard-go's shared socket directory) are left out.
    assert [s["name"] for s in out["sources"]] == [str(laptop), ifname]
    kinds = {(f["kind"], f["a"]["source"], f["b"]["source"]) for f in out["findings"]}
    assert ("identical", str(laptop), ifname) in kinds
    assert ("nested", ifname, ifname) in kinds
    assert out["ok"] is False

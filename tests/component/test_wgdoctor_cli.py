"""The real `sixpn wireguard doctor` (a subprocess) on wg-quick files as sixpn writes them:
exit 1 on each kind of overlap, 0 for a clean setup, 2 for unreadable input (SPEC section 5)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sixpn.client import generate_keypair
from sixpn.core.wgquick import render_wg_quick

pytestmark = pytest.mark.component


def doctor(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sixpn", "wireguard", "doctor", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def peer_file(path: Path, net48: str, allowed: str | None = None) -> str:
    """A peer file of network ``net48`` ("fdaa:0:1"), the way `sixpn wireguard create` writes it."""
    text = render_wg_quick(
        generate_keypair().private_key,
        f"{net48}:a7b:7d:0:a:102",
        f"{net48}::3",
        generate_keypair().public_key,
        allowed or f"{net48}::/48",
        "203.0.113.7:51820",
        header=f"sixpn WireGuard peer laptop of acme/{net48}",
    )
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def full_tunnel(path: Path) -> str:
    """A commercial VPN's file: everything, both families, through one peer."""
    path.write_text(
        "[Interface]\n"
        f"PrivateKey = {generate_keypair().private_key}\n"
        "Address = 10.64.0.2/32, fc00:bbbb:bbbb:bb01::2/128\n"
        "DNS = 10.64.0.1\n\n"
        "[Peer]\n"
        f"PublicKey = {generate_keypair().public_key}\n"
        "AllowedIPs = 0.0.0.0/0, ::/0\n"
        "Endpoint = 198.51.100.1:51820\n"
    )
    return str(path)


def test_two_files_for_the_same_network(tmp_path: Path) -> None:
    a = peer_file(tmp_path / "wg6pn.conf", "fdaa:0:1")
    b = peer_file(tmp_path / "laptop.conf", "fdaa:0:1")
    done = doctor("--no-interfaces", a, b)
    assert done.returncode == 1, done.stderr
    assert "identical: fdaa:0:1::/48" in done.stdout
    assert a in done.stdout
    assert b in done.stdout
    assert "File exists" in done.stdout  # what happens to the second `wg-quick up`
    assert done.stdout.rstrip().endswith("1 conflict(s) in 2 file(s)/interface(s)")


def test_a_nested_prefix(tmp_path: Path) -> None:
    a = peer_file(tmp_path / "wg6pn.conf", "fdaa:0:1")
    b = peer_file(tmp_path / "office.conf", "fdaa:0:1", allowed="fdaa:0:1:2::/64")
    done = doctor("--no-interfaces", a, b)
    assert done.returncode == 1, done.stderr
    assert "nested: fdaa:0:1:2::/64" in done.stdout
    assert "longest prefix" in done.stdout


def test_a_default_route_tunnel_beside_a_6pn_file(tmp_path: Path) -> None:
    a = peer_file(tmp_path / "wg6pn.conf", "fdaa:0:1")
    vpn = full_tunnel(tmp_path / "vpn.conf")
    done = doctor("--no-interfaces", vpn, a)
    assert done.returncode == 1, done.stderr
    assert "default-route: fdaa:0:1::/48" in done.stdout
    assert "suppress_prefixlength" in done.stdout
    assert "Table = off" in done.stdout


def test_a_clean_setup(tmp_path: Path) -> None:
    a = peer_file(tmp_path / "acme.conf", "fdaa:0:1")
    b = peer_file(tmp_path / "other.conf", "fdaa:0:2")
    done = doctor("--no-interfaces", a, b)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "no overlapping AllowedIPs in 2 file(s)/interface(s)"


def test_json(tmp_path: Path) -> None:
    a = peer_file(tmp_path / "a.conf", "fdaa:0:1")
    b = peer_file(tmp_path / "b.conf", "fdaa:0:1")
    done = doctor("--no-interfaces", "--json", a, b)
    assert done.returncode == 1
    out = json.loads(done.stdout)
    assert out["ok"] is False
    assert [s["name"] for s in out["sources"]] == [a, b]
    assert out["sources"][0]["interface"] == "a"
    assert out["sources"][0]["peers"][0]["allowed_ips"] == ["fdaa:0:1::/48"]
    (finding,) = out["findings"]
    assert finding["kind"] == "identical"
    assert finding["prefix"] == "fdaa:0:1::/48"
    assert (finding["a"]["source"], finding["b"]["source"]) == (a, b)
    assert finding["winner"] is None
    assert "PrivateKey" not in done.stdout
    clean = doctor("--no-interfaces", "--json", a)
    assert clean.returncode == 0
    assert json.loads(clean.stdout) == {"sources": out["sources"][:1], "findings": [], "ok": True}


def test_standard_input_and_a_file_given_twice(tmp_path: Path) -> None:
    a = peer_file(tmp_path / "a.conf", "fdaa:0:1")
    done = doctor("--no-interfaces", a, a, "-", stdin=Path(a).read_text())
    assert done.returncode == 1  # the file once, and the same network again on stdin
    assert "<stdin>" in done.stdout
    assert done.stdout.count("conflict(s)") == 1


def test_a_missing_file(tmp_path: Path) -> None:
    a = peer_file(tmp_path / "a.conf", "fdaa:0:1")
    missing = str(tmp_path / "gone.conf")
    done = doctor("--no-interfaces", a, missing)
    assert done.returncode == 2
    assert f"{missing}: cannot read: No such file or directory" in done.stderr


def test_a_garbage_file(tmp_path: Path) -> None:
    garbage = tmp_path / "notes.conf"
    garbage.write_text("[Interface]\nthis is not a wg-quick file\n")
    done = doctor("--no-interfaces", str(garbage))
    assert done.returncode == 2
    assert f"{garbage}, line 2:" in done.stderr
    binary = tmp_path / "binary.conf"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00\xff\xfe")
    done = doctor("--no-interfaces", str(binary))
    assert done.returncode == 2
    assert str(binary) in done.stderr


def test_a_bad_prefix_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    text = Path(peer_file(bad, "fdaa:0:1")).read_text().replace("::/48", "::/480")
    bad.write_text(text)
    done = doctor("--no-interfaces", str(bad))
    assert done.returncode == 2
    line = text.splitlines().index("AllowedIPs = fdaa:0:1::/480") + 1
    assert f"{bad}, line {line}: 'fdaa:0:1::/480' in AllowedIPs is not an IP prefix" in done.stderr


def test_nothing_to_check_is_a_usage_error() -> None:
    done = doctor("--no-interfaces")
    assert done.returncode == 2
    assert "nothing to check" in done.stderr

"""The anchor: plain wireguard-go between two namespaces, configured by hand.

SPEC 9 compares the fabric with "plain WireGuard between the same two namespaces with no fabric
around it". By default (``--anchor hosts``) the anchor's tunnel therefore runs between the
fabric's two host namespaces, over the lab's own underlay (each host's ``eth0`` and the
bridge), on port 51821 beside the agents' 51820: the same namespaces, the same wire, the same
wireguard-go, and none of the fabric (no machine namespace, no forwarding, no 6PN address, so
none of the ``inet sixpn`` rules match). ``--anchor bare`` builds two namespaces of its own
instead (the first version of this benchmark):

    sixpn-bench-<h>-a                                sixpn-bench-<h>-b
      sxbu<h>a 198.51.100.1/24  <-- veth pair -->      sxbu<h>b 198.51.100.2/24
      sxbw<h>a (wireguard-go)   <-- UDP 51820 -->      sxbw<h>b (wireguard-go)
        fd00:5b:<h4>::1/64, MTU 1420                     fd00:5b:<h4>::2/64, MTU 1420

Bare: no nftables, no forwarding, no bridge: the tunnel and nothing around it. The interface names
carry the run's hex (wireguard-go's control sockets, ``/var/run/wireguard/<ifname>.sock``, are
shared by every namespace). The daemons run in the foreground (``wireguard-go -f``) as this
process's children, so they are stopped by their PIDs; the namespaces, the key files and any
socket left behind are removed on the way out, also on failure or Ctrl-C.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from datapath_measure import BenchError, Setup, run, shielded, spawn, stop, wait_for

from sixpn.lab import netns

UNDERLAY = "198.51.100"  # TEST-NET-2, only ever inside the two namespaces
WG_PORT = 51820
HOSTS_PORT = 51821  # beside the agents' mesh on 51820, in the hosts' namespaces
WG_MTU = 1420  # as the fabric's tunnels (and wireguard-go's default)
SOCKET_DIR = Path("/var/run/wireguard")


def _link_exists(ns: str, ifname: str) -> bool:
    return bool(run(["ip", "-n", ns, "-o", "link", "show", "dev", ifname], check=False).strip())


@contextmanager
def anchor(workdir: Path, hosts: dict[str, tuple[str, str]] | None = None) -> Iterator[Setup]:
    """The tunnel between ``hosts`` (side "a"/"b" -> (namespace, its underlay IPv4 address)),
    or, without them, between two bare namespaces made here."""
    h = secrets.token_hex(3)
    wg = {side: f"sxbw{h}{side}" for side in "ab"}
    inner = {"a": f"fd00:5b:{h[:4]}::1", "b": f"fd00:5b:{h[:4]}::2"}
    procs: list[subprocess.Popen[bytes]] = []
    made: list[str] = []
    try:
        if hosts is None:
            ns = {side: f"{netns.PREFIX}bench-{h}-{side}" for side in "ab"}
            under = {"a": f"{UNDERLAY}.1", "b": f"{UNDERLAY}.2"}
            port = WG_PORT
            for side in "ab":
                netns.create(ns[side])
                made.append(ns[side])
            _veth_pair(ns, {side: f"sxbu{h}{side}" for side in "ab"}, under)
        else:
            ns = {side: hosts[side][0] for side in "ab"}
            under = {side: hosts[side][1] for side in "ab"}
            port = HOSTS_PORT
        env = {k: v for k, v in os.environ.items() if k != "LOG_LEVEL"} | {"LOG_LEVEL": "error"}
        keys: dict[str, tuple[Path, str]] = {}
        for side in "ab":
            key = workdir / f"anchor-{side}.key"
            key.touch(mode=0o600)
            key.write_text(run(["wg", "genkey"]))
            pub = subprocess.run(
                ["wg", "pubkey"], input=key.read_text(), capture_output=True, text=True, check=True
            ).stdout.strip()
            keys[side] = (key, pub)
            log = workdir / f"anchor-wireguard-go-{side}.log"
            procs.append(spawn(ns[side], ["wireguard-go", "-f", wg[side]], log, env=env))
        for side, proc in zip("ab", procs, strict=True):
            wait_for(
                lambda s=side, p=proc: (
                    p.poll() is None
                    and _link_exists(ns[s], wg[s])
                    and (SOCKET_DIR / f"{wg[s]}.sock").exists()
                ),
                10,
                f"wireguard-go {wg[side]}",
            )
        for side, other in (("a", "b"), ("b", "a")):
            x = ["ip", "netns", "exec", ns[side]]
            wg_set = [*x, "wg", "set", wg[side], "listen-port", str(port)]
            wg_set += ["private-key", str(keys[side][0]), "peer", keys[other][1]]
            wg_set += ["allowed-ips", f"{inner[other]}/128"]
            run([*wg_set, "endpoint", f"{under[other]}:{port}"])
            address = [f"{inner[side]}/64", "dev", wg[side], "nodad"]
            run(["ip", "-n", ns[side], "-6", "addr", "add", *address])
            run(["ip", "-n", ns[side], "link", "set", wg[side], "mtu", str(WG_MTU), "up"])
        for proc in procs:
            if proc.poll() is not None:
                raise BenchError(f"anchor: wireguard-go exited ({proc.returncode})")
        yield Setup(
            name="anchor",
            client_ns=ns["a"],
            server_ns=ns["b"],
            server_addr=inner["b"],
            wg_pids={"client": procs[0].pid, "server": procs[1].pid},
        )
    finally:
        with shielded():
            for proc in procs:
                stop(proc)
            if hosts is not None:  # the lab's namespaces stay; the tunnel goes with its daemon
                for side in "ab":
                    run(["ip", "-n", ns[side], "link", "del", wg[side]], check=False)
            for name in reversed(made):
                netns.remove(name)
            for side in "ab":
                with suppress(FileNotFoundError):
                    (SOCKET_DIR / f"{wg[side]}.sock").unlink()
                with suppress(FileNotFoundError):
                    (workdir / f"anchor-{side}.key").unlink()


def _veth_pair(ns: dict[str, str], veth: dict[str, str], under: dict[str, str]) -> None:
    pair = ["type", "veth", "peer", "name", veth["b"], "netns", ns["b"]]
    run(["ip", "-n", ns["a"], "link", "add", veth["a"], *pair])
    for side in "ab":
        run(["ip", "-n", ns[side], "addr", "add", f"{under[side]}/24", "dev", veth[side]])
        run(["ip", "-n", ns[side], "link", "set", veth[side], "up"])

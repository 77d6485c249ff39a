"""The anchor: plain wireguard-go between two namespaces, configured by hand.

SPEC 9 compares the fabric with "plain WireGuard between the same two namespaces with no fabric
around it". The anchor makes two namespaces of its own, ``sixpn-bench-<h>-a`` and ``-b``, one
``wireguard-go -f`` in each, configured with ``wg set``, and runs iperf3 in them directly. By
default (``--anchor underlay``) the two namespaces are plugged into the fabric's own underlay
bridge (``eth0`` with ``192.0.2.201`` and ``.202``, beside the lab's hosts): the same wire, the
same wireguard-go, and nothing of the fabric (no nftables table, no forwarding, no veth hop, no
6PN address). ``--anchor bare`` joins them by a veth pair of their own instead:

    sixpn-bench-<h>-a                                sixpn-bench-<h>-b
      eth0 (underlay .201, or 198.51.100.1) <-- the lab's bridge, or a veth pair --> .202 / .2
      sxbw<h>a (wireguard-go)   <-- UDP 51820 -->      sxbw<h>b (wireguard-go)
        fd00:5b:<h4>::1/64, MTU 1420                     fd00:5b:<h4>::2/64, MTU 1420

A first version ran the anchor's tunnel in the fabric's two host namespaces: there every packet
of the anchor also crossed the fabric's ``inet sixpn`` hooks, which made the anchor pay part of
the fabric's cost. The interface names carry the run's hex (wireguard-go's control sockets,
``/var/run/wireguard/<ifname>.sock``, are shared by every namespace). The daemons run in the
foreground (``wireguard-go -f``) as this process's children, so they are stopped by their PIDs;
the namespaces, the key files and any socket left behind are removed on the way out, also on
failure or Ctrl-C.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from datapath_measure import BenchError, Setup, run, shielded, spawn, wait_for
from dnsbench_measure import stop

from sixpn.lab import netns

UNDERLAY = "198.51.100"  # TEST-NET-2, only ever inside the two bare namespaces
LAB_UNDERLAY = "192.0.2"  # the lab's underlay (hosts .11 and up, laptops .101 and up)
WG_PORT = 51820
WG_MTU = 1420  # as the fabric's tunnels (and wireguard-go's default)
SOCKET_DIR = Path("/var/run/wireguard")


def _link_exists(ns: str, ifname: str) -> bool:
    return bool(run(["ip", "-n", ns, "-o", "link", "show", "dev", ifname], check=False).strip())


Plug = Callable[[str, str, str], None]  # (namespace, outer veth name, IPv4 address)


@contextmanager
def anchor(workdir: Path, plug: Plug | None = None) -> Iterator[Setup]:
    """The tunnel between two namespaces made here: plugged into an underlay with ``plug``
    (``Lab.plug_into_underlay``), or, without it, joined by a veth pair of their own."""
    h = secrets.token_hex(3)
    wg = {side: f"sxbw{h}{side}" for side in "ab"}
    inner = {"a": f"fd00:5b:{h[:4]}::1", "b": f"fd00:5b:{h[:4]}::2"}
    ns = {side: f"{netns.PREFIX}bench-{h}-{side}" for side in "ab"}
    procs: list[subprocess.Popen[bytes]] = []
    made: list[str] = []
    try:
        for side in "ab":
            netns.create(ns[side])
            made.append(ns[side])
        if plug is None:
            under = {"a": f"{UNDERLAY}.1", "b": f"{UNDERLAY}.2"}
            _veth_pair(ns, {side: f"sxbu{h}{side}" for side in "ab"}, under)
        else:
            under = {"a": f"{LAB_UNDERLAY}.201", "b": f"{LAB_UNDERLAY}.202"}
            for side in "ab":
                plug(ns[side], f"sxbu{h}{side}", under[side])
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
            wg_set = [*x, "wg", "set", wg[side], "listen-port", str(WG_PORT)]
            wg_set += ["private-key", str(keys[side][0]), "peer", keys[other][1]]
            wg_set += ["allowed-ips", f"{inner[other]}/128"]
            run([*wg_set, "endpoint", f"{under[other]}:{WG_PORT}"])
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

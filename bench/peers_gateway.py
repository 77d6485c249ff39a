"""Part A of the peers benchmark: one gateway's WireGuard interface driven by the agent's own
adapter (``LinuxHost``, through ``plan`` and ``apply``), against the ``wg`` tool on an anchor
interface in the same namespace, same run. Runs inside the benchmark's host namespace (the
parent starts it with ``nsenter --net``, as the lab runs agents); see ``peers_bench.py``.

Rule: every figure comes with its check. A converge must leave ``wg show`` holding exactly the
peers asked for; a change of one peer on the full gateway must be one operation holding that one
peer, and ``wg show IF allowed-ips`` must show every other peer as it was.
"""

from __future__ import annotations

import base64
import resource
import secrets
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sixpn.agent.linux import wg
from sixpn.agent.linux.host import LinuxHost
from sixpn.core import addressing
from sixpn.core.desired import desired_state
from sixpn.core.hoststate import SIXPN_ROUTE, HostState, Route, WgPeer, wg_ifname
from sixpn.core.plan import Op, RemovePeers, SetPeers, plan
from sixpn.model.entities import Host, Peer

NET_ID, HOST_ID, PORT, ANCHOR_PORT = 1, 7, 51898, 51897


def random_key() -> str:
    """A public key as the control plane stores it: 32 bytes, standard base64. Any 32 bytes
    are a valid key to ``wg``; X25519 key generation would only slow the setup."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def client_peer(slot: int) -> WgPeer:
    return WgPeer(random_key(), frozenset({addressing.peer_prefix(NET_ID, HOST_ID, slot)}))


def gateway_state(ifname: str, peers: list[WgPeer]) -> HostState:
    """A gateway as ``core.desired`` makes it with its client peers and no machine."""
    return HostState(
        wg_ifname=ifname,
        listen_port=PORT,
        wg_peers=frozenset(peers),
        service_addresses=frozenset(
            {addressing.DNS_ADDRESS, addressing.network_service_address(NET_ID)}
        ),
        routes=frozenset({Route(SIXPN_ROUTE, ifname)}),
        pairs=frozenset({addressing.network_prefix(NET_ID)}),
    )


def converge(host: LinuxHost, want: HostState) -> dict[str, Any]:
    """One reconcile as the agent runs it, timed by step: read, plan, apply."""
    t0 = time.perf_counter()
    actual = host.read()
    t1 = time.perf_counter()
    ops = plan(actual, want)
    t2 = time.perf_counter()
    children = _children_cpu()
    own = time.process_time()
    for op in ops:
        host.apply(op)
    t3 = time.perf_counter()
    return {
        "read_s": t1 - t0,
        "plan_s": t2 - t1,
        "apply_s": t3 - t2,
        "total_s": t3 - t0,
        "apply_cpu_s": (time.process_time() - own) + (_children_cpu() - children),
        "ops": [_op_shape(op) for op in ops],
    }


def _op_shape(op: Op) -> str:
    if isinstance(op, SetPeers):
        return f"SetPeers/{len(op.peers)}"
    if isinstance(op, RemovePeers):
        return f"RemovePeers/{len(op.public_keys)}"
    return type(op).__name__


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def allowed_ips(ifname: str) -> dict[str, str]:
    """Public key -> allowed IPs, as ``wg show IF allowed-ips`` prints them (not the adapter's
    own parse: the check must not depend on the code under test)."""
    out = subprocess.run(
        ["wg", "show", ifname, "allowed-ips"], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split("\t", 1) for line in out.splitlines())


def expect(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"peers bench: check failed: {what}")


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True)
    return time.perf_counter() - started


def vm_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise SystemExit(f"peers bench: no {field} for PID {pid}")


def setconf_file(path: Path, key_path: Path, port: int, peers: list[WgPeer]) -> None:
    lines = ["[Interface]", f"PrivateKey = {key_path.read_text().strip()}", f"ListenPort = {port}"]
    for p in peers:
        allowed = ",".join(str(n) for n in p.allowed_ips)
        lines += ["[Peer]", f"PublicKey = {p.public_key}", f"AllowedIPs = {allowed}"]
    path.write_text("\n".join(lines) + "\n")


def run(counts: list[int], rounds: int, tmp: Path) -> dict[str, Any]:
    """The whole of part A, its files (keys, configurations) in ``tmp``; every interface made
    is removed on the way out, also on failure. The parent owns ``tmp`` and the namespace: if
    this process is killed, it removes both and stops what still runs there, by PID."""
    tmp.mkdir()
    keys = {name: tmp / f"{name}.key" for name in ("gw", "anchor")}
    for path in keys.values():
        path.write_text(subprocess.run(["wg", "genkey"], capture_output=True, text=True).stdout)
        path.chmod(0o600)
    backend = wg.detect_backend()
    base = 0x100 + secrets.randbits(20)
    # the anchor is no sxw* link: the agent's read would take a stray sxw* for its own
    ifname, anchor = wg_ifname(base), f"sxa{base:x}"
    host = LinuxHost(ifname, keys["gw"], backend)
    try:
        return _measure(host, ifname, anchor, keys, tmp, backend, counts, rounds)
    finally:
        for step in (host.teardown, lambda: wg.remove_interface(anchor)):
            try:
                step()
            except Exception as exc:  # the parent's backstop stops the daemons by PID
                print(f"peers bench: cleanup: {exc}")
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()


def _measure(
    host: LinuxHost,
    ifname: str,
    anchor: str,
    keys: dict[str, Path],
    tmp: Path,
    backend: str,
    counts: list[int],
    rounds: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": backend, "counts": counts, "rounds": rounds}
    empty = gateway_state(ifname, [])
    converge(host, empty)
    wg.ensure_interface(anchor, ANCHOR_PORT, keys["anchor"], backend)
    pids = {"gw": wg.daemon_pid(ifname), "anchor": wg.daemon_pid(anchor)}
    out["pids"] = pids
    out["daemon_kib_empty"] = vm_kib(pids["gw"]) if pids["gw"] else None
    peers = [client_peer(slot) for slot in range(max(counts))]
    conf = tmp / "anchor.conf"
    empty_conf = tmp / "empty.conf"
    setconf_file(empty_conf, keys["anchor"], ANCHOR_PORT, [])

    # -- installing N peers on an empty interface, sixpn and the anchor alternated -----------
    installs: list[dict[str, Any]] = []
    for n in counts:
        want = gateway_state(ifname, peers[:n])
        setconf_file(conf, keys["anchor"], ANCHOR_PORT, peers[:n])
        row: dict[str, Any] = {"peers": n, "sixpn": [], "remove": [], "setconf": [], "clear": []}
        for _ in range(rounds):
            step = converge(host, want)
            expect(step["ops"] == [f"SetPeers/{n}"], f"install {n}: ops {step['ops']}")
            expect(len(allowed_ips(ifname)) == n, f"install {n}: wg show count")
            row["sixpn"].append(step)
            back = converge(host, empty)
            expect(back["ops"] == [f"RemovePeers/{n}"], f"remove {n}: ops {back['ops']}")
            expect(not allowed_ips(ifname), f"remove {n}: peers left")
            row["remove"].append(back)
            row["setconf"].append(timed(["wg", "setconf", anchor, str(conf)]))
            expect(len(allowed_ips(anchor)) == n, f"setconf {n}: wg show count")
            row["clear"].append(timed(["wg", "setconf", anchor, str(empty_conf)]))
        # how the agent did it before batching: one `wg set` per peer (one round: 7 s at 5,000)
        started = time.perf_counter()
        for p in peers[:n]:
            allowed = ",".join(str(a) for a in p.allowed_ips)
            argv = ["wg", "set", anchor, "peer", p.public_key, "allowed-ips", allowed]
            subprocess.run([*argv, "persistent-keepalive", "off"], capture_output=True, check=True)
        row["per_peer_s"] = time.perf_counter() - started
        expect(len(allowed_ips(anchor)) == n, f"per-peer {n}: wg show count")
        timed(["wg", "setconf", anchor, str(empty_conf)])
        installs.append(row)
        print(f"  install {n}: sixpn {_median(row['sixpn'], 'total_s') * 1000:.1f} ms")
    out["installs"] = installs

    # -- the full gateway: one peer added, one removed --------------------------------------
    # Fresh daemons for the memory figures: Go keeps for a while what the rounds above freed.
    n = max(counts)
    full = gateway_state(ifname, peers[:n])
    for name in (ifname, anchor):
        wg.remove_interface(name)
    converge(host, full)
    wg.ensure_interface(anchor, ANCHOR_PORT, keys["anchor"], backend)
    setconf_file(conf, keys["anchor"], ANCHOR_PORT, peers[:n])
    timed(["wg", "setconf", anchor, str(conf)])
    pids = {"gw": wg.daemon_pid(ifname), "anchor": wg.daemon_pid(anchor)}
    out["pids_full"] = pids
    out["daemon_kib_full"] = vm_kib(pids["gw"]) if pids["gw"] else None
    out["daemon_hwm_kib_full"] = vm_kib(pids["gw"], "VmHWM") if pids["gw"] else None
    out["anchor_kib_full"] = vm_kib(pids["anchor"]) if pids["anchor"] else None
    before = allowed_ips(ifname)
    expect(len(before) == n, "full gateway: wg show count")
    changes: dict[str, list[Any]] = {"add": [], "remove": [], "wg_add": [], "wg_remove": []}
    for i in range(rounds):
        extra = client_peer(n + i)
        plus = gateway_state(ifname, [*peers[:n], extra])
        step = converge(host, plus)
        expect(step["ops"] == ["SetPeers/1"], f"add one at {n}: ops {step['ops']}")
        after = allowed_ips(ifname)
        expect(after.pop(extra.public_key, None) is not None, "added peer missing")
        expect(after == before, f"add one at {n}: other peers changed")
        changes["add"].append(step)
        step = converge(host, full)
        expect(step["ops"] == ["RemovePeers/1"], f"remove one at {n}: ops {step['ops']}")
        expect(allowed_ips(ifname) == before, f"remove one at {n}: other peers changed")
        changes["remove"].append(step)
        allowed = str(*extra.allowed_ips)
        changes["wg_add"].append(
            timed(["wg", "set", anchor, "peer", extra.public_key, "allowed-ips", allowed])
        )
        changes["wg_remove"].append(
            timed(["wg", "set", anchor, "peer", extra.public_key, "remove"])
        )
    out["changes"] = changes

    # -- reading the full gateway ------------------------------------------------------------
    reads: dict[str, list[float]] = {"read": [], "read_cpu": [], "wg_read": [], "dump": []}
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        state = host.read()
        reads["read"].append(time.perf_counter() - wall)
        reads["read_cpu"].append(time.process_time() - cpu)
        expect(state == full, "LinuxHost.read() at the full gateway is not the converged state")
        reads["wg_read"].append(_time(lambda: wg.read(ifname)))
        reads["dump"].append(timed(["wg", "show", ifname, "dump"]))
    out["reads"] = reads
    return out


def _time(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _median(steps: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(s[key] for s in steps))


def pure_costs(n: int, rounds: int) -> dict[str, float]:
    """The agent's pure work for one change on a gateway of ``n`` peers, median seconds:
    ``desired_state`` (the reconciler computes it on the event loop, before the worker thread)
    and ``plan`` of one added peer."""
    gw = Host("gw", HOST_ID, "fra", "192.0.2.1:51820", random_key(), gateway=True, created_at=0)
    peers = [
        Peer(
            org="o",
            name=f"p{slot}",
            network="default",
            net_id=NET_ID,
            gateway="gw",
            host_id=HOST_ID,
            slot=slot,
            address=addressing.peer_address(NET_ID, HOST_ID, slot),
            public_key=random_key(),
            ephemeral=False,
            created_at=0.0,
        )
        for slot in range(n + 1)
    ]
    desired_s, plan_s = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        full = desired_state(gw, {"gw": gw}, [], peers[:n], listen_port=PORT)
        desired_s.append(time.perf_counter() - t0)
        plus = desired_state(gw, {"gw": gw}, [], peers, listen_port=PORT)
        t0 = time.perf_counter()
        ops = plan(full, plus)
        plan_s.append(time.perf_counter() - t0)
        expect(len(ops) == 1, f"pure plan of one change at {n}: {len(ops)} operations")
    return {"desired_s": statistics.median(desired_s), "plan_s": statistics.median(plan_s)}

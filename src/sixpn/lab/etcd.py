"""The lab's etcd cluster (``sixpn lab up --store etcd``): 3 members on this machine's loopback.

Only the control plane's replicas talk to etcd, and they run in the root namespace: members
listen on ``127.0.0.1``, a client and a peer port each, free when the lab starts and below the
kernel's ephemeral range (so that no outgoing connection takes one while its member is down),
chosen together so that all six differ. A port taken by someone else between the choice and
etcd binding it makes a member exit: the cluster is then started again on new ports. Names are
the lab's (``sixpn-lab-<id>-<n>``), the cluster token is the lab's with a random tail, so that
two labs never form one cluster. Data lives under ``/dev/shm/sixpn-lab-<id>-etcd/`` (tmpfs:
etcd fsyncs every commit; without ``/dev/shm``, under the lab's directory), one directory per
member.

The rule of the lab holds: each member's name, ports and data directory are written into
``lab.json`` before it starts, its PID as soon as it is spawned, so ``Lab.down`` (``down``)
finds all of it also after a crash. Members are stopped by PID, and only if that PID still runs
that member (``pid_runs``: its ``--name``). A member stopped and started again keeps its name,
ports and data, and rejoins the cluster (``--initial-cluster-state=new`` is ignored when the
data directory exists).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sixpn.lab.fabric import Lab, LabError, wait_until
from sixpn.lab.process import alive, log_tail, pid_runs, spawn_logged, stop_pid

SIZE = 3
START_TIMEOUT = 20.0  # seconds for the cluster (or a restarted member) to report healthy
SHM = Path("/dev/shm")
EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def binary() -> str:
    """The etcd server binary; a LabError saying how to get it if it is missing."""
    found = shutil.which("etcd")
    if found is None:
        raise LabError("the etcd binary is missing (scripts/sysdeps.sh installs etcd-server)")
    return found


def client_urls(lab: Lab) -> list[str]:
    """The members' client URLs, as ``sixpn server --etcd`` takes them (comma-joined)."""
    assert lab.state is not None
    return [m["client_url"] for m in lab.state.etcd.get("members", [])]


def up(lab: Lab, say: Callable[[str], None]) -> None:
    """Start the cluster and wait until every member is healthy. On any failure the caller's
    ``Lab.down`` removes what was started (it is all in lab.json)."""
    assert lab.state is not None
    lab_id = lab.state.lab_id
    base = SHM if SHM.is_dir() and os.access(SHM, os.W_OK) else lab.root
    where = base / f"sixpn-lab-{lab_id}-etcd"
    lab.state.etcd = {"dir": str(where), "token": f"sixpn-lab-{lab_id}-{secrets.token_hex(4)}"}
    lab.save()
    try:
        where.mkdir(mode=0o700)
    except FileExistsError:
        lab.state.etcd = {}  # not this lab's: down must not remove it
        lab.save()
        raise LabError(f"{where} exists: left by another lab of id {lab_id}? remove it") from None
    for attempt in range(3):
        ports = free_ports(2 * SIZE)
        lab.state.etcd["members"] = [
            {
                "name": f"sixpn-lab-{lab_id}-{n}",
                "role": f"etcd-{n}",
                "client_url": f"http://127.0.0.1:{ports[2 * n - 2]}",
                "peer_url": f"http://127.0.0.1:{ports[2 * n - 1]}",
                "data_dir": str(where / f"member-{n}"),
            }
            for n in range(1, SIZE + 1)
        ]
        lab.save()
        for i in range(SIZE):
            _spawn(lab, i)
        try:
            for i in range(SIZE):
                _wait_healthy(lab, i)
            break
        except LabError:
            if attempt == 2 or all(member_alive(lab, i) for i in range(SIZE)):
                raise
            _stop_all(lab)  # a port was taken meanwhile: again, on other ports
    urls = ", ".join(client_urls(lab))
    say(f"etcd: {SIZE} members sixpn-lab-{lab_id}-1..{SIZE} on {urls}, data in {where}")


def start_member(lab: Lab, i: int) -> None:
    """Start member ``i`` (from 0) again on its name, ports and data; wait until healthy."""
    assert lab.state is not None
    if member_alive(lab, i):
        raise LabError(f"etcd member {lab.state.etcd['members'][i]['name']} runs already")
    _spawn(lab, i)
    _wait_healthy(lab, i)


def stop_member(lab: Lab, i: int, sig: int = signal.SIGTERM) -> None:
    """Send member ``i`` ``sig`` by PID and wait until it is gone (SIGKILL: a crash)."""
    assert lab.state is not None
    m = lab.state.etcd["members"][i]
    pid = lab.state.pids.pop(m["role"], None)
    lab.save()
    if pid is not None and pid_runs(pid, f"--name={m['name']}"):
        stop_pid(pid, sig)


def member_alive(lab: Lab, i: int) -> bool:
    assert lab.state is not None
    pid = lab.state.pids.get(lab.state.etcd["members"][i]["role"])
    return pid is not None and alive(pid)


def status(lab: Lab) -> list[dict[str, Any]]:
    """Each member: name, client URL, PID, alive, healthy (``/health``: it has a leader and
    answers), leader (it leads the cluster now), data directory."""
    assert lab.state is not None
    out = []
    for i, m in enumerate(lab.state.etcd.get("members", [])):
        running = member_alive(lab, i)
        health = _get(m["client_url"] + "/health") if running else None
        state = _post(m["client_url"] + "/v3/maintenance/status") if running else None
        header = (state or {}).get("header", {})
        out.append(
            {
                "name": m["name"],
                "client_url": m["client_url"],
                "pid": lab.state.pids.get(m["role"]),
                "alive": running,
                "healthy": bool(health and health.get("health") == "true"),
                "leader": bool(state and state.get("leader") == header.get("member_id")),
                "data_dir": m["data_dir"],
            }
        )
    return out


def down(lab: Lab) -> None:
    """Stop every member by PID (SIGTERM to all at once, SIGKILL to what lingers after a
    second), then remove the data directories."""
    assert lab.state is not None
    if not lab.state.etcd:
        return
    _stop_all(lab)
    shutil.rmtree(lab.state.etcd["dir"], ignore_errors=True)
    lab.state.etcd = {}
    lab.save()


def _stop_all(lab: Lab) -> None:
    assert lab.state is not None
    members = lab.state.etcd.get("members", [])
    pids = [(lab.state.pids.pop(m["role"], None), m) for m in members]
    lab.save()
    running = [pid for pid, m in pids if pid is not None and pid_runs(pid, f"--name={m['name']}")]
    for pid in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in running:  # a leader with its peers gone tries for seconds to hand over: the
        stop_pid(pid, grace=1.0)  # data is thrown away, so SIGKILL it after a second
    for m in members:
        shutil.rmtree(m["data_dir"], ignore_errors=True)


def _spawn(lab: Lab, i: int) -> None:
    assert lab.state is not None
    m = lab.state.etcd["members"][i]
    cluster = ",".join(f"{o['name']}={o['peer_url']}" for o in lab.state.etcd["members"])
    argv = [
        binary(),
        f"--name={m['name']}",
        f"--data-dir={m['data_dir']}",
        f"--listen-client-urls={m['client_url']}",
        f"--advertise-client-urls={m['client_url']}",
        f"--listen-peer-urls={m['peer_url']}",
        f"--initial-advertise-peer-urls={m['peer_url']}",
        f"--initial-cluster={cluster}",
        f"--initial-cluster-token={lab.state.etcd['token']}",
        "--initial-cluster-state=new",  # ignored when the data directory exists (a restart)
        "--logger=zap",
        "--log-level=warn",
    ]
    proc = spawn_logged(argv, lab.root / f"{m['role']}.log", cwd=lab.root)
    lab.state.pids[m["role"]] = proc.pid
    lab.save()


def _wait_healthy(lab: Lab, i: int) -> None:
    assert lab.state is not None
    m = lab.state.etcd["members"][i]

    def healthy() -> bool:
        if not member_alive(lab, i):
            tail = log_tail(lab.root / f"{m['role']}.log")
            raise LabError(f"etcd member {m['name']} exited: {tail}")
        return (_get(m["client_url"] + "/health") or {}).get("health") == "true"

    wait_until(healthy, START_TIMEOUT, f"etcd member {m['name']} to be healthy")


def _get(url: str) -> dict[str, Any] | None:
    return _fetch(urllib.request.Request(url))


def _post(url: str) -> dict[str, Any] | None:
    return _fetch(urllib.request.Request(url, data=b"{}", method="POST"))


def _fetch(request: urllib.request.Request) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(request, timeout=1) as answer:
            found: dict[str, Any] = json.loads(answer.read())
            return found
    except (OSError, ValueError):
        return None


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free right now (held together while choosing, so all
    differ), below the kernel's ephemeral range where there is room."""
    try:
        low = int(EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    pool = list(range(10000, low))
    secrets.SystemRandom().shuffle(pool)
    socks: list[socket.socket] = []
    try:
        for port in [*pool, *[0] * n]:  # 0: any port, if the range below is all taken
            if len(socks) == n:
                break
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()

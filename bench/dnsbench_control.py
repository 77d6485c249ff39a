"""The control plane the benchmark's records come from: `sixpn server` on a Unix socket.

It runs outside the namespace, unpinned, at the default priority, for the whole run: the sixpn
DNS server under test (inside the namespace) loads its snapshot from it and then follows its
change stream, which is idle while measuring (a heartbeat line every ``--heartbeat`` seconds,
10 by default). Its CPU time is read around every phase and reported.

Every address and ID is the control plane's: :func:`populate` creates what the seeded
:class:`~dnsbench_dataset.FleetPlan` says through the HTTP API and reads the machines back
(``GET /v1/orgs/{org}/machines``), so the anchors' data (Unbound's ``local-data``, Knot's zone
file) is built from the same truth sixpn serves. Started and stopped by PID
(:func:`dnsbench_measure.stop`), never by name.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dnsbench_dataset as ds
import httpx
from dnsbench_measure import BenchError, stop

READY_TIMEOUT = 30.0
POPULATE_WORKERS = 8  # concurrent API clients creating apps and machines


@dataclass(frozen=True)
class ControlPlane:
    proc: subprocess.Popen[bytes]
    socket: Path
    token: str
    log: Path

    @property
    def url(self) -> str:
        """What ``sixpn dns --control`` takes."""
        return f"unix:{self.socket}"

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url="http://sixpn",
            transport=httpx.HTTPTransport(uds=str(self.socket)),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""


@contextmanager
def control_plane(sixpn: Path, workdir: Path) -> Iterator[ControlPlane]:
    """``sixpn server`` with a fresh SQLite store in ``workdir``, on ``workdir/api.sock``."""
    sock = workdir / "api.sock"
    log = workdir / "control.log"
    token = "sixpn_bench_" + secrets.token_hex(16)
    cmd = [str(sixpn), "server", "--db", str(workdir / "control.db")]
    cmd += ["--listen", f"unix:{sock}", "--admin-token", token]
    with log.open("wb") as out:
        # A session of its own: Ctrl-C reaches the benchmark only, which stops it in order.
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    cp = ControlPlane(proc, sock, token, log)
    try:
        _wait_healthy(cp)
        yield cp
    finally:
        stop(proc)


def _wait_healthy(cp: ControlPlane) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    with cp.client() as http:
        while time.monotonic() < deadline:
            if cp.proc.poll() is not None:
                raise BenchError(
                    f"sixpn server exited with code {cp.proc.returncode}:\n{cp.log_tail()}"
                )
            try:
                if http.get("/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    raise BenchError(f"sixpn server not healthy within {READY_TIMEOUT:.0f} s:\n{cp.log_tail()}")


def _call(http: httpx.Client, method: str, path: str, body: object = None) -> Any:
    try:
        r = http.request(method, path, json=body)
    except httpx.HTTPError as exc:
        raise BenchError(f"control plane: {method} {path}: {exc!r}") from exc
    if r.status_code >= 300:
        raise BenchError(f"control plane: {method} {path}: HTTP {r.status_code}: {r.text[:500]}")
    return r.json()


def populate(cp: ControlPlane, plan: ds.FleetPlan, workers: int = POPULATE_WORKERS) -> ds.Dataset:
    """Create ``plan`` through the API; the data set as the control plane allocated it.

    The org and the hosts one after the other, then the apps and then the machines from
    ``workers`` threads sharing one HTTP client (concurrent requests, as many API clients would
    send them; ~400 machines/s here against ~300/s one at a time). Each machine still goes to
    the host the plan says; the control plane allocates its ID, field and address."""
    with cp.client() as http:
        _call(http, "POST", "/v1/orgs", {"name": plan.org})
        net_id = int(_call(http, "GET", f"/v1/orgs/{plan.org}/networks/default")["net_id"])
        for h in plan.hosts:
            body = {"name": h.name, "region": h.region, "endpoint": h.endpoint}
            _call(http, "POST", "/v1/hosts", body | {"public_key": h.public_key})
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="populate") as pool:
            apps = f"/v1/orgs/{plan.org}/apps"
            list(pool.map(lambda app: _call(http, "POST", apps, {"name": app}), plan.apps))
            machines_url = f"/v1/orgs/{plan.org}/machines"
            list(
                pool.map(
                    lambda m: _call(http, "POST", machines_url, {"app": m[0], "host": m[1]}),
                    plan.machines,
                )
            )
        hosts = _call(http, "GET", "/v1/hosts")
        machines = _call(http, "GET", machines_url)
    try:
        return ds.dataset_from_api(plan, net_id, hosts, machines)
    except ValueError as exc:
        raise BenchError(f"control plane: unexpected fleet: {exc}") from exc

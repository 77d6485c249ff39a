"""Propagation at rate (SPEC 9): API call -> every host's DNS, and -> the first packet, under load.

SPEC 9: "from the API call that creates or stops a machine to every host's DNS answering the new
truth: p99 under 50 ms in a 5-host lab while changes arrive at 200 per second; to the data path
passing packets to a new machine: p99 under 250 ms". ``make bench-propagation`` (root).

The run, in one real lab (``sixpn.lab.fabric.Lab``: a control plane on SQLite, one agent and one
wireguard-go per host namespace, the production resync of 30 s):

1. **Lab.** 5 hosts in 3 regions (``a``, ``b``: fra; ``c``, ``d``: ams; ``e``: iad), org
   ``bench`` (one network). 20 more hosts joined through the API (``far-0``..., in fra, ams,
   iad, ord, sin) with no agent behind them: the rest of a fleet, where the background load
   puts its machines (wiring 70 machines a second into namespaces would take both cores by
   itself; the lab's agents still receive, parse and apply every one of those changes, and
   their DNS servers answer from them). Apps ``load-0`` .. ``load-9`` hold the baseline fleet
   (``--fleet`` started machines on those hosts, plus ``--lab-machines`` per lab host), app
   ``probe`` one machine per lab host (where each host's prober asks from), app ``timed`` the
   measured machines.
2. **Observers**, all at 5 nice steps above the lab (the observer must not queue behind the
   observed): one resident prober per host (``propagation_probe``, in that host's probe machine's
   namespace, so its queries come from a 6PN address as a machine's would), and one follower
   of the change stream (``propagation_stream``) that stamps each measured change as it leaves
   the server. Every time is ``time.monotonic()``: one clock for every process.
3. **Quiet phase**: ``--quiet`` measured machines (as in 4) before any load, same lab.
4. **Load.** ``propagation_load`` (its own process, the lab's priority, 8 connections) changes
   machines of the load apps at ``--rate`` per second, open loop: create, stop, destroy in turn.
   ``--warmup`` seconds of it before anything is measured (CPU figures of the load alone).
5. **Measured changes**, ``--lifecycles`` machines, one started every ``--interval`` s, at most
   ``--parallel`` at a time; one in ``--lab-every`` on a lab host (in turn), where it is wired
   and the first packet to it is timed, the others on far hosts: for each, a create, then a
   stop, then a destroy, each through the HTTP API, each
   timed from the moment its request is sent. Before sending, every prober is told to watch
   (so an answer that arrives before the API's own still counts, from the moment it arrives):
   create: ``timed.internal AAAA`` lists the new address; stop: it no longer does; destroy:
   ``<id>.vm.timed.internal`` is NXDOMAIN. A prober asks every ``--poll-ms`` while it waits
   (one query in flight per name). After a lab-host create's answer, the prober of the next host
   times the first TCP connect to ``[address]:9`` refused or accepted from its machine
   (packets crossed both ways). A watch unanswered in ``--timeout`` s counts as infinite.
6. **No change lost or out of order.** The load stops; one more machine is awaited in every
   host's DNS (the stream is applied in order: everything before it has been applied); then
   every host's DNS is asked, for every app, ``<app>.internal AAAA``,
   ``vms.<app>.internal TXT`` and ``all.vms.<app>.internal TXT``, and for every destroyed
   ``timed`` machine and a sample of destroyed load machines ``<id>.vm.<app>.internal``; each
   answer must equal what the store holds (``GET .../machines?all=true``). Thousands of creates,
   stops and destroys went through; a lost or reordered one leaves a wrong set.
7. **Report**: stdout, ``bench/out/propagation-<UTC>.md`` and ``.json`` (every sample), and a
   CDF plot (``--plot``; matplotlib).

Exit 0 when everything was measured (the verdicts are in the report), 1 on a failure (the lab,
a prober, a final check that disagrees with the store: the report is still written), 2 usage.
The lab (``Lab.down()``) and every process started are removed on the way out, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import propagation_report as report
from datapath_measure import (
    BenchError,
    CpuUsage,
    prioritize,
    shielded,
    snapshot,
    tun_owner,
    usage,
    wait_for,
)
from propagation_http import AsyncConn, Conn, HttpError

from sixpn.client import generate_keypair
from sixpn.lab import netns
from sixpn.lab.fabric import HostSpec, Lab
from sixpn.model.errors import SixpnError

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "out"
ORG = "bench"
TIMED = "timed"
PROBE_APP = "probe"
LAB_HOSTS = (("a", "fra"), ("b", "fra"), ("c", "ams"), ("d", "ams"), ("e", "iad"))
FAR_REGIONS = ("fra", "ams", "iad", "ord", "sin")
LOAD_APPS = 10
TOOLS = ("ip", "nsenter", "wireguard-go", "wg", "nft", "ping")
MAIN_PID = os.getpid()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="SPEC 9 propagation at rate: API call -> every host's DNS, and -> the "
        "first packet, in a 5-host lab under a background load of machine changes."
    )
    p.add_argument("--quick", action="store_true", help="smoke run: fewer samples, ~1.5 min")
    p.add_argument("--rate", type=float, default=200.0, help="background changes/s (200)")
    p.add_argument("--lifecycles", type=int, help="measured machines (x3 changes; 150, quick 15)")
    p.add_argument(
        "--interval", type=float, default=0.25, help="s between measured machines' starts (0.25)"
    )
    p.add_argument("--parallel", type=int, default=4, help="measured machines at once, max (4)")
    p.add_argument(
        "--lab-every",
        type=int,
        default=3,
        help="every Nth measured machine on a lab host, first packet timed (3); the others on "
        "far hosts",
    )
    p.add_argument(
        "--quiet",
        type=int,
        help="measured machines before the load starts, same lab (lifecycles/3; quick 6; 0: none)",
    )
    p.add_argument("--fleet", type=int, help="baseline machines on the far hosts (1000; 300)")
    p.add_argument("--far-hosts", type=int, default=20, help="hosts without agent (20)")
    p.add_argument("--lab-machines", type=int, default=2, help="load machines per lab host (2)")
    p.add_argument(
        "--lab-share",
        type=float,
        default=0.0,
        help="share of the load's creates put on lab hosts (wired for real; default 0)",
    )
    p.add_argument("--connections", type=int, default=8, help="load connections (8)")
    p.add_argument("--warmup", type=float, help="seconds of load before measuring (10; 3)")
    p.add_argument("--poll-ms", type=float, default=2.0, help="prober query interval (2 ms)")
    p.add_argument("--timeout", type=float, default=5.0, help="per watch, s (5)")
    p.add_argument("--nice", type=int, default=-10, help="nice of the lab and the load (-10)")
    p.add_argument("--resync", type=float, default=30.0, help="agents' resync period, s (30)")
    p.add_argument("--seed", type=int, default=9, help="random seed (hosts, apps, load)")
    p.add_argument("--plot", type=Path, help="also write the CDF plot here (PNG)")
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the server and agent a over the measured window (a diagnosis run: "
        "sampling costs CPU on a machine that has none to spare)",
    )
    p.add_argument("--keep-logs", action="store_true", help="copy the lab's logs to --out")
    p.add_argument("--out", type=Path, default=OUT_DIR, help="report folder (bench/out)")
    args = p.parse_args(argv)
    q = args.quick
    args.lifecycles = args.lifecycles if args.lifecycles is not None else (15 if q else 150)
    args.fleet = args.fleet if args.fleet is not None else (300 if q else 1000)
    if args.quiet is None:
        args.quiet = 6 if q else args.lifecycles // 3
    args.warmup = args.warmup if args.warmup is not None else (3.0 if q else 10.0)
    if min(args.lifecycles, args.parallel, args.far_hosts, args.lab_every) < 1 or args.rate < 0:
        p.error("lifecycles, parallel, far-hosts and lab-every at least 1, rate at least 0")
    return args


def preflight() -> None:
    if os.geteuid() != 0:
        raise BenchError("needs root (network namespaces, wireguard-go, nftables)")
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        raise BenchError(
            f"missing tools: {', '.join(missing)} (make bench-propagation installs them: "
            "scripts/sysdeps.sh wireguard-go wireguard-tools nftables iputils-ping util-linux)"
        )


def _terminate(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != MAIN_PID:  # a forked helper (pyroute2's): it must not unwind our stack
        os._exit(128 + signum)
    raise SystemExit(128 + signum)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != MAIN_PID:
        os._exit(128 + signum)
    raise KeyboardInterrupt


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _stop_proc(proc: subprocess.Popen[Any], grace: float = 10) -> None:
    """EOF on its stdin, then SIGTERM and SIGKILL by its PID if it lingers."""
    if proc.stdin is not None and not proc.stdin.closed:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the observers --------------------------------------------------------------------------


class ProberClient:
    """One host's prober (``propagation_probe``): watches sent, results as futures."""

    ids = itertools.count(1)

    def __init__(self, host: str, ns: str, every: float, nice: int, log: Path) -> None:
        self.host = host
        argv = [sys.executable, str(HERE / "propagation_probe.py"), "--every", str(every)]
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                netns.enter_argv(ns, argv),  # nsenter execs: the PID is the prober's
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        prioritize(self.proc.pid, nice)
        self.lock = threading.Lock()
        self.pending: dict[int, Future[dict[str, Any]]] = {}
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        if not first or not json.loads(first).get("ready"):
            raise BenchError(f"the prober of host {host} did not start (see {log})")
        self.reader = threading.Thread(target=self._read, daemon=True, name=f"prober-{host}")
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            got = json.loads(line)
            with self.lock:
                fut = self.pending.pop(int(got["id"]), None)
            if fut is not None:
                fut.set_result(got)
        with self.lock:  # the prober is gone: nobody waits forever
            for fut in self.pending.values():
                fut.set_exception(BenchError(f"the prober of host {self.host} exited"))
            self.pending.clear()

    def send(self, cmd: dict[str, Any], *, expect: bool = True) -> tuple[int, Future[Any]]:
        n = int(cmd.get("id") or next(self.ids))
        fut: Future[dict[str, Any]] = Future()
        with self.lock:
            if expect:
                self.pending[n] = fut
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps({**cmd, "id": n}) + "\n").encode())
            self.proc.stdin.flush()
        return n, fut

    def close(self) -> None:
        _stop_proc(self.proc)


class StreamWatch:
    """``propagation_stream``: when each measured change went out on the change stream."""

    def __init__(self, sock: Path, token: str, since: int, nice: int, log: Path) -> None:
        argv = [sys.executable, str(HERE / "propagation_stream.py"), str(sock), token]
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                [*argv, str(since), TIMED],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
                text=True,
            )
        prioritize(self.proc.pid, nice)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise BenchError(f"the change-stream follower did not start (see {log})")

    def finish(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.close()
        out = self.proc.stdout.read()
        self.proc.wait(timeout=10)
        return dict(json.loads(out)) if out.strip() else {}


class LoadProc:
    """``propagation_load``: the other clients."""

    def __init__(self, cfg: dict[str, Any], nice: int, log: Path) -> None:
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(HERE / "propagation_load.py")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
                text=True,
            )
        prioritize(self.proc.pid, nice)
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cfg) + "\n")
        self.proc.stdin.flush()
        if self.proc.stdout.readline().strip() != "ready":
            raise BenchError(f"the load generator did not start (see {log})")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write("stop\n")
        self.proc.stdin.close()
        out = self.proc.stdout.read()
        self.proc.wait(timeout=30)
        return dict(json.loads(out)) if out.strip() else {}


# -- the measured changes -------------------------------------------------------------------


@dataclass
class Change:
    """One measured API call and when each host's DNS showed it (monotonic seconds)."""

    kind: str  # create | stop | destroy
    machine: str
    host: str  # the machine's host
    sent: float  # the request left
    answered: float  # the answer was read
    seen: dict[str, float | None] = field(default_factory=dict)  # per host; None: timed out
    early: dict[str, bool] = field(default_factory=dict)  # shown before the API's answer came
    first_poll: dict[str, float | None] = field(default_factory=dict)
    polls: dict[str, int] = field(default_factory=dict)
    stream: float | None = None  # the change's line left the server (propagation_stream)
    data_path: float | None = None  # create: first TCP contact from data_path_from
    data_path_from: str = ""


class Measure:
    def __init__(
        self,
        lab: Lab,
        probers: dict[str, ProberClient],
        far: list[str],
        timeout: float,
        lab_every: int,
    ) -> None:
        self.lab = lab
        self.probers = probers
        self.hosts = list(probers)
        self.far = far
        self.timeout = timeout
        self.lab_every = lab_every
        assert lab.state is not None
        self.sock = str(lab.socket)
        self.token = lab.state.admin_token

    def _arm(self, name: str, want: str, token: str | None, kind: str = "AAAA") -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        cmd = {"op": "dns", "name": name, "type": kind, "want": want, "token": token}
        return {
            h: p.send({**cmd, "deadline": deadline, "id": next(ProberClient.ids)})
            for h, p in self.probers.items()
        }

    def _collect(self, c: Change, armed: dict[str, Any]) -> Change:
        for h, (_, fut) in armed.items():
            got = fut.result(timeout=self.timeout + 30)
            c.seen[h] = got["t"]
            c.early[h] = bool(got.get("from_history")) and got["t"] is not None
            c.first_poll[h] = got.get("first_sent")
            c.polls[h] = int(got.get("polls", 0))
        return c

    def lifecycle(self, conn: Conn, i: int) -> list[Change]:
        """Machine ``i``: on a lab host (in turn) every ``lab_every``-th time, where the first
        packet to it is timed too; else on a far host (DNS only: nothing to wire)."""
        n = len(self.hosts)
        on_lab = i % self.lab_every == 0
        k = i // self.lab_every if on_lab else i
        target = self.hosts[k % n] if on_lab else self.far[k % len(self.far)]
        src = self.hosts[(k + 1) % n]
        base = f"/v1/orgs/{ORG}/machines"
        # create: armed before the call, the address told once the API has answered
        armed = self._arm(f"{TIMED}.internal", "has", None)
        m, sent, answered = conn.ok("POST", base, {"app": TIMED, "host": target})
        token = ipaddress.IPv6Address(m["address"]).packed.hex()
        for h, (n_id, _) in armed.items():
            self.probers[h].send({"op": "token", "id": n_id, "token": token}, expect=False)
        dp = None
        if on_lab:
            _, dp = self.probers[src].send(
                {"op": "tcp", "address": m["address"], "deadline": answered + self.timeout}
            )
        create = self._collect(Change("create", m["id"], target, sent, answered), armed)
        if dp is not None:
            create.data_path = dp.result(timeout=self.timeout + 30)["t"]
            create.data_path_from = src
        # stop: <app>.internal no longer lists it
        armed = self._arm(f"{TIMED}.internal", "lacks", token)
        _, sent, answered = conn.ok("POST", f"{base}/{m['id']}/stop")
        stop = self._collect(Change("stop", m["id"], target, sent, answered), armed)
        # destroy: <id>.vm.<app>.internal no longer exists
        armed = self._arm(f"{m['id']}.vm.{TIMED}.internal", "nx", None)
        _, sent, answered = conn.ok("DELETE", f"{base}/{m['id']}")
        destroy = self._collect(Change("destroy", m["id"], target, sent, answered), armed)
        return [create, stop, destroy]

    def barrier(self, host: str, timeout: float = 120) -> None:
        """One more machine (on ``host``), awaited in every host's DNS: the stream is applied in
        order, so every change before it has been applied too."""
        conn = Conn(self.sock, self.token)
        try:
            deadline = time.monotonic() + timeout
            cmd = {"op": "dns", "type": "AAAA", "want": "has", "token": None}
            armed = {}
            m, _, _ = conn.ok("POST", f"/v1/orgs/{ORG}/machines", {"app": TIMED, "host": host})
            token = ipaddress.IPv6Address(m["address"]).packed.hex()
            name = f"{m['id']}.vm.{TIMED}.internal"
            for h, p in self.probers.items():
                armed[h] = p.send({**cmd, "name": name, "token": token, "deadline": deadline})
            for h, (_, fut) in armed.items():
                if fut.result(timeout=timeout + 30)["t"] is None:
                    raise BenchError(f"host {h}'s DNS did not show the barrier in {timeout:g} s")
        finally:
            conn.close()

    def run(self, count: int, parallel: int, interval: float, start: int = 0) -> list[Change]:
        """``count`` lifecycles, one started every ``interval`` s (open loop), at most
        ``parallel`` at once (a late one starts when a thread is free)."""
        changes: list[Change] = []
        lock = threading.Lock()
        local = threading.local()
        conns: list[Conn] = []

        def one(i: int) -> None:
            if not hasattr(local, "conn"):
                local.conn = Conn(self.sock, self.token)
                with lock:
                    conns.append(local.conn)
            got = self.lifecycle(local.conn, i)
            with lock:
                changes.extend(got)
                done = len(changes) // 3
            if done % 25 == 0 or done == count:
                every = [
                    "timeout"
                    if None in c.seen.values()
                    else f"{(max(t for t in c.seen.values() if t) - c.sent) * 1000:.0f}"
                    for c in got
                ]
                say(
                    f"  {done}/{count} measured machines (this one, every host: "
                    f"create / stop / destroy {' / '.join(every)} ms)"
                )

        t0 = time.monotonic()
        try:
            with ThreadPoolExecutor(parallel) as pool:
                futures = []
                for j in range(count):
                    time.sleep(max(0.0, t0 + j * interval - time.monotonic()))
                    futures.append(pool.submit(one, start + j))
                for fut in futures:
                    fut.result()
        finally:
            for conn in conns:
                conn.close()
        return sorted(changes, key=lambda c: c.sent)


# -- building the fleet ---------------------------------------------------------------------


async def _create_many(
    sock: str, token: str, bodies: list[dict[str, Any]], conns: int
) -> list[str]:
    ids: list[str] = [""] * len(bodies)
    todo = iter(range(len(bodies)))

    async def worker() -> None:
        conn = AsyncConn(sock, token)
        try:
            for i in todo:
                status, value = await conn.call("POST", f"/v1/orgs/{ORG}/machines", bodies[i])
                if status != 201:
                    raise BenchError(f"creating a machine: HTTP {status}: {value}")
                ids[i] = value["id"]
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(conns)))
    return ids


def build_fleet(lab: Lab, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    assert lab.state is not None
    conn = Conn(str(lab.socket), lab.state.admin_token)
    try:
        conn.ok("POST", "/v1/orgs", {"name": ORG})
        apps = [f"load-{i}" for i in range(LOAD_APPS)]
        for app in [PROBE_APP, TIMED, *apps]:
            conn.ok("POST", f"/v1/orgs/{ORG}/apps", {"name": app})
        far = []
        for i in range(args.far_hosts):
            name = f"far-{i}"
            body = {
                "name": name,
                "region": FAR_REGIONS[i % len(FAR_REGIONS)],
                "endpoint": f"198.51.100.{i + 1}:51820",  # TEST-NET-2: no route from the lab
                "public_key": generate_keypair().public_key,
            }
            conn.ok("POST", "/v1/hosts", body)
            far.append(name)
        lab_names = [h for h, _ in LAB_HOSTS]
        bodies = [{"app": rng.choice(apps), "host": rng.choice(far)} for _ in range(args.fleet)]
        bodies += [
            {"app": rng.choice(apps), "host": h}
            for h in lab_names
            for _ in range(args.lab_machines)
        ]
        t = time.monotonic()
        ids = asyncio.run(_create_many(str(lab.socket), lab.state.admin_token, bodies, 8))
        say(
            f"fleet: {len(ids)} started machines in {LOAD_APPS} apps on {len(far)} far hosts "
            f"and the lab's, in {time.monotonic() - t:.1f} s"
        )
        probes = {}
        for h in lab_names:
            probes[h], _, _ = conn.ok(
                "POST", f"/v1/orgs/{ORG}/machines", {"app": PROBE_APP, "host": h}
            )
        return {"apps": apps, "far": far, "started": ids, "probes": probes}
    finally:
        conn.close()


# -- the final check ------------------------------------------------------------------------


def _txt_items(rdata: list[str]) -> set[str]:
    joined = "".join(rdata)
    return {x for x in joined.split(",") if x}


def final_check(
    lab: Lab, probers: dict[str, ProberClient], apps: list[str], rng: random.Random
) -> dict[str, Any]:
    """Every host's DNS against the store, for every app; destroyed machines NXDOMAIN."""
    assert lab.state is not None
    conn = Conn(str(lab.socket), lab.state.admin_token)
    try:
        machines, _, _ = conn.ok("GET", f"/v1/orgs/{ORG}/machines?all=true")
    finally:
        conn.close()
    if isinstance(machines, dict):
        machines = machines.get("machines", [])
    expect: dict[tuple[str, str], tuple[str, set[str]]] = {}
    destroyed: list[dict[str, Any]] = []
    for app in [PROBE_APP, TIMED, *apps]:
        mine = [m for m in machines if m["app"] == app]
        started = [m for m in mine if m["state"] == "started"]
        alive = [m for m in mine if m["state"] != "destroyed"]
        expect[(f"{app}.internal", "AAAA")] = (
            "NOERROR",
            {str(ipaddress.IPv6Address(m["address"])) for m in started},
        )
        expect[(f"vms.{app}.internal", "TXT")] = (
            "NOERROR",
            {f"{m['id']} {m['region']}" for m in started},
        )
        expect[(f"all.vms.{app}.internal", "TXT")] = (
            "NOERROR",
            {f"{m['id']} {m['region']}" for m in alive},
        )
        gone = [m for m in mine if m["state"] == "destroyed"]
        destroyed += gone if app == TIMED else rng.sample(gone, min(len(gone), 20))
    for m in destroyed:
        expect[(f"{m['id']}.vm.{m['app']}.internal", "AAAA")] = ("NXDOMAIN", set())
    questions = [list(k) for k in expect]
    asked = {h: p.send({"op": "ask", "questions": questions})[1] for h, p in probers.items()}
    mismatches: list[str] = []
    for h, fut in asked.items():
        answers = fut.result(timeout=300)["answers"]
        for (name, kind), (rcode, rdata) in zip(expect, answers, strict=True):
            want_rcode, want = expect[(name, kind)]
            got = _txt_items(rdata) if kind == "TXT" else set(rdata)
            if rcode != want_rcode or got != want:
                extra, missing = sorted(got - want)[:3], sorted(want - got)[:3]
                mismatches.append(
                    f"host {h}: {name} {kind}: {rcode} (want {want_rcode}), "
                    f"{len(got)} items (want {len(want)}); extra {extra}, missing {missing}"
                )
    states: dict[str, int] = {}
    for m in machines:
        states[m["state"]] = states.get(m["state"], 0) + 1
    return {
        "questions_per_host": len(questions),
        "hosts": len(probers),
        "machines_in_store": states,
        "destroyed_checked": len(destroyed),
        "mismatches": mismatches,
    }


def _theirs(cpu: CpuUsage, roles: dict[str, list[int]]) -> CpuUsage:
    """The busiest processes that are none of ours (the lab's, the load's, the observers')."""
    ours = {p for pids in roles.values() for p in pids}
    cpu.top = [row for row in cpu.top if row[1] not in ours]
    return cpu


# -- CPU starvation ---------------------------------------------------------------------------


def sched_wait(roles: dict[str, list[int]]) -> dict[str, tuple[int, int]]:
    """Per role: (ns on a CPU, ns waiting on a run queue), every thread of every PID
    (``/proc/PID/task/TID/schedstat``): how long the role was runnable but not running."""
    out = {}
    for role, pids in roles.items():
        run_ns = wait_ns = 0
        for pid in pids:
            try:
                tasks = list(Path(f"/proc/{pid}/task").iterdir())
            except OSError:
                continue
            for task in tasks:
                try:
                    fields = (task / "schedstat").read_text().split()
                except OSError:
                    continue
                run_ns += int(fields[0])
                wait_ns += int(fields[1])
        out[role] = (run_ns, wait_ns)
    return out


def waits(a: dict[str, tuple[int, int]], b: dict[str, tuple[int, int]], wall: float) -> dict:
    """Per role: ms on a CPU and ms waiting for one, per second of the window."""
    return {
        role: {
            "run_ms_per_s": (b[role][0] - a[role][0]) / 1e6 / wall,
            "wait_ms_per_s": (b[role][1] - a[role][1]) / 1e6 / wall,
        }
        for role in b
        if role in a and wall > 0
    }


# -- profiling (diagnosis runs) -------------------------------------------------------------


def start_profiles(lab: Lab, out: Path, stamp: str) -> dict[str, subprocess.Popen[Any]]:
    """py-spy record (``--nonblocking``: the process is never paused) of the server and of agent
    a, collapsed stacks, until :func:`stop_profiles`."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        say("py-spy not found: no profile")
        return {}
    assert lab.state is not None
    procs = {}
    for role in ("server", "agent-a"):
        pid = lab.state.pids[role]
        dest = out / f"propagation-{stamp}-{role}.txt"
        argv = [spy, "record", "-p", str(pid), "-d", "3600", "-r", "200", "--nonblocking"]
        argv += ["--format", "raw", "-o", str(dest)]
        procs[str(dest)] = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        say(f"profiling {role} (PID {pid}) with py-spy -> {dest}")
    return procs


def stop_profiles(procs: dict[str, subprocess.Popen[Any]]) -> list[str]:
    """SIGINT (py-spy writes its file), then wait; the files written."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs.values():
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return [path for path in procs if Path(path).exists()]


# -- the run --------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path, stamp: str) -> dict[str, Any]:
    rng = random.Random(args.seed)
    lab = Lab(workdir / "lab")
    probers: dict[str, ProberClient] = {}
    stream: StreamWatch | None = None
    load: LoadProc | None = None
    profiles: dict[str, subprocess.Popen[Any]] = {}
    profiled: list[str] = []
    result: dict[str, Any] = {}
    try:
        t = time.monotonic()
        # plain HTTP on the lab's socket: the load and the probes speak raw HTTP/1.1 to it
        lab.up([HostSpec(n, r) for n, r in LAB_HOSTS], resync=args.resync, progress=say, tls=False)
        say(f"lab up in {time.monotonic() - t:.1f} s")
        assert lab.state is not None
        fleet = build_fleet(lab, args, rng)
        for m in fleet["probes"].values():
            lab.wait_wired(m, timeout=60)
        first = fleet["probes"]["a"]
        for h, m in fleet["probes"].items():
            if h != "a":
                cmd = ["ping", "-6", "-c", "1", "-W", "1", m["address"]]
                wait_for(
                    lambda m=m, c=cmd: lab.exec(first, c).returncode == 0,
                    30,
                    f"a's probe machine reaching {h}'s",
                    step=0.2,
                )
        # priorities: the system under test and its load at --nice, the observers above it
        for pid in lab.state.pids.values():
            prioritize(pid, args.nice)
        wg = {}
        for name, spec in lab.state.hosts.items():
            wg[name] = tun_owner(spec["ns"], spec["wg_ifname"])
            prioritize(wg[name], args.nice)
        observer_nice = max(-20, args.nice - 5) if args.nice else 0
        for h, m in fleet["probes"].items():
            probers[h] = ProberClient(
                h,
                lab.machine_ns(m["id"]),
                args.poll_ms / 1000,
                observer_nice,
                workdir / f"prober-{h}.log",
            )
        measure = Measure(lab, probers, fleet["far"], args.timeout, args.lab_every)
        quiet: list[Change] = []
        if args.quiet:
            # the same lab, observers and measured changes, with no background load: where the
            # figures start from before the load is added
            measure.run(2, 1, 0.0, start=0)  # warm-up: both kinds of host once, not recorded
            say(f"quiet: {args.quiet} machines created, stopped, destroyed, no load")
            quiet = measure.run(args.quiet, args.parallel, args.interval, start=args.lab_every)
        cfg = {
            "socket": str(lab.socket),
            "token": lab.state.admin_token,
            "org": ORG,
            "rate": args.rate,
            "connections": args.connections,
            "seed": args.seed,
            "apps": fleet["apps"],
            "hosts": fleet["far"],
            "lab_hosts": [h for h, _ in LAB_HOSTS],
            "lab_share": args.lab_share,
            "started": fleet["started"],
        }
        if args.rate > 0:
            load = LoadProc(cfg, args.nice, workdir / "load.log")
            load.go()
            say(
                f"load: {args.rate:g} changes/s ({args.connections} connections); "
                f"warm-up {args.warmup:g} s"
            )
        roles = {
            "control plane": [lab.state.pids["server"]],
            "agents": [p for r, p in lab.state.pids.items() if r.startswith("agent-")],
            "wireguard-go": list(wg.values()),
            "load": [load.proc.pid] if load else [],
            "probers + stream": [p.proc.pid for p in probers.values()],
            "benchmark": [os.getpid()],
        }
        # the load alone (probers idle): what the agents and the server spend on 200 changes/s
        time.sleep(min(1.0, args.warmup))
        idle0, wait0 = snapshot(), sched_wait(roles)
        time.sleep(max(0.0, args.warmup - 1.0))
        idle1, wait1 = snapshot(), sched_wait(roles)
        if not args.quiet:
            measure.run(2, 1, 0.0, start=0)  # warm-up: both kinds of host once, not recorded
        conn = Conn(str(lab.socket), lab.state.admin_token)
        rev0 = int(conn.ok("GET", "/healthz")[0]["revision"])
        stream = StreamWatch(
            lab.socket, lab.state.admin_token, rev0, observer_nice, workdir / "stream.log"
        )
        roles["probers + stream"].append(stream.proc.pid)
        if args.profile:
            profiles = start_profiles(lab, args.out, stamp)
        say(
            f"measuring: {args.lifecycles} machines created, stopped, destroyed "
            f"({args.parallel} at a time) while the load runs"
        )
        cpu0, t0, swait0 = snapshot(), time.monotonic(), sched_wait(roles)
        start = args.lab_every * (1 + (args.quiet + args.lab_every - 1) // args.lab_every)
        changes = measure.run(args.lifecycles, args.parallel, args.interval, start=start)
        t1, cpu1, swait1 = time.monotonic(), snapshot(), sched_wait(roles)
        profiled, profiles = stop_profiles(profiles), {}
        rev1 = int(conn.ok("GET", "/healthz")[0]["revision"])
        conn.close()
        streamed = stream.finish()
        stream = None
        by_key = {}
        for e in streamed.get("events", []):
            by_key.setdefault((e["id"], e["state"]), e["t"])
        for c in changes:
            state = {"create": "started", "stop": "stopped", "destroy": "destroyed"}[c.kind]
            c.stream = by_key.get((c.machine, state))
        load_summary = load.finish() if load else {}
        load = None
        say("load stopped; waiting until every host's DNS has followed the stream to its end")
        measure.barrier(fleet["far"][0])
        check = final_check(lab, probers, fleet["apps"], rng)
        say(
            f"final check: {check['questions_per_host']} questions per host, "
            f"{len(check['mismatches'])} mismatches"
        )
        result = {
            "changes": changes,
            "quiet": quiet,
            "window_s": t1 - t0,
            "revisions": rev1 - rev0,
            "cpu": _theirs(usage(cpu0, cpu1, roles), roles),
            "cpu_load_only": _theirs(usage(idle0, idle1, roles), roles),
            "runq_wait": {
                "measured": waits(swait0, swait1, t1 - t0),
                "load_only": waits(wait0, wait1, idle1.t - idle0.t),
            },
            "load": load_summary,
            "stream": {k: v for k, v in streamed.items() if k != "events"},
            "check": check,
            "fleet": {"started": len(fleet["started"]), "far_hosts": len(fleet["far"])},
            "profiles": profiled,
        }
        if args.keep_logs:
            dest = args.out / f"propagation-{stamp}-logs"
            dest.mkdir(parents=True, exist_ok=True)
            for f in (lab.root).glob("*.log"):
                shutil.copy(f, dest / f.name)
            for f in workdir.glob("*.log"):
                shutil.copy(f, dest / f.name)
        return result
    finally:
        with shielded():
            stop_profiles(profiles)
            if load is not None:
                _stop_proc(load.proc)
            if stream is not None:
                _stop_proc(stream.proc)
            for p in probers.values():
                p.close()
            lab.down()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _interrupt)
    settings = {
        k: getattr(args, k)
        for k in (
            "quick",
            "rate",
            "lifecycles",
            "quiet",
            "interval",
            "parallel",
            "lab_every",
            "fleet",
            "far_hosts",
            "lab_machines",
            "lab_share",
            "connections",
            "warmup",
            "poll_ms",
            "timeout",
            "nice",
            "resync",
            "seed",
        )
    }
    # wall clock - monotonic clock: to place a sample in the lab's logs (logging's asctime)
    settings["wall_minus_monotonic"] = time.time() - time.monotonic()
    settings["load_start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    started = time.monotonic()
    try:
        preflight()
        args.out.mkdir(parents=True, exist_ok=True)
        env = report.environment()
        workdir = Path(tempfile.mkdtemp(prefix="sixpn-propbench-"))
        try:
            result = run(args, workdir, stamp)
        finally:
            with shielded():
                shutil.rmtree(workdir, ignore_errors=True)
    except (BenchError, SixpnError, HttpError) as exc:
        print(f"propagation_bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("propagation_bench: interrupted; everything made was removed", file=sys.stderr)
        return 130
    settings["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    settings["run_s"] = round(time.monotonic() - started, 1)
    run_ = report.Run(
        settings=settings,
        env=env,
        hosts=[h for h, _ in LAB_HOSTS],
        regions=dict(LAB_HOSTS),
        **result,
    )
    text = report.markdown(run_, stamp)
    md = args.out / f"propagation-{stamp}.md"
    md.write_text(text)
    md.with_suffix(".json").write_text(json.dumps(report.to_json(run_), indent=1) + "\n")
    plots = [md.with_suffix(".png"), *([args.plot] if args.plot else [])]
    made = report.plot(run_, plots)
    print(
        f"\n{text}\nwritten: {md}, {md.with_suffix('.json').name}"
        + (f", {', '.join(str(p) for p in made)}" if made else " (no plot: matplotlib missing)")
    )
    return 1 if result["check"]["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())

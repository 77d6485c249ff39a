"""Control plane on SQLite and on etcd (one replica, two): creates, ID allocation under
concurrency, write-to-follower delay and failover gaps, all in one run.

Everything is real processes on loopback: ``sixpn server`` started through
``tests/harness.py`` (``ServerProcess``), etcd 3.4 from Debian through ``tests/etcdcluster.py``
(``EtcdCluster(3)``: heartbeat 50 ms, election timeout 500 ms), clients are
``sixpn.client.Client`` in this process (asyncio), timed with ``perf_counter`` (one clock).

Method
------
Set-up. A work directory on disk (``/var/tmp``). Two 3-member etcd clusters: **disk**, its data
directory moved into the work directory before it starts (``EtcdCluster`` has no option for
that; its ``dir`` is set before ``start()``), so every commit pays etcd's WAL fsync; and
**tmpfs**, where ``EtcdCluster`` puts it by default (``/dev/shm``: fsync is free). Servers, all
with one admin token and the production heartbeat (10 s): ``sqlite`` (``--db`` in the work
directory: WAL, ``synchronous=FULL``), ``etcd-1`` (one replica on the disk cluster),
``etcd-2`` (two replicas on the disk cluster, one prefix), ``etcd-tmpfs-1`` (one replica on the
tmpfs cluster). Each store gets org ``bench``, app ``web``, hosts ``h1`` and ``h2``.

1. **Machine creates** (``POST /v1/orgs/bench/machines``, alternately on h1 and h2) with 1, 8 and
   32 concurrent clients, each a closed loop; ``--creates`` per cell and round, ``--rounds``
   rounds; the order of the stores rotates every round and concurrencies are interleaved. With
   two replicas every client holds a client per replica and alternates (the calls split evenly).
   creates/s = acknowledged creates / wall time; p50/p99 nearest rank over every round's
   creates; CPU: this process (the clients), the server(s), the etcd members, as % of one core.
2. **Organizations at once**: ``--orgs`` org creates by 32 clients (``POST /v1/orgs``: each
   takes a network ID). *before*: the code of the commit before 5b78f81 (every create
   incremented ``counter/network`` under an in-process lock), checked out with
   ``git worktree add`` into the work directory and run with ``PYTHONPATH=<worktree>/src`` on a
   fresh SQLite file (removed with ``git worktree remove --force`` in a ``finally``; after a
   SIGKILL of the benchmark, ``git worktree prune`` forgets it). *after*: this tree on a fresh
   SQLite file, on ``etcd-1`` and on ``etcd-2`` (clients split over the replicas). Rounds
   interleave the four; afterwards a snapshot of each store must hold distinct network IDs and
   machine addresses.
3. **Write to follower**: one writer creates orgs one at a time; a follower (``Client.follow``
   from a fresh snapshot) stamps each org's put event on arrival. delay = follower's stamp - the
   moment the writer's create was acknowledged (negative: the event came first). Writer and
   follower on the one SQLite server; on the one ``etcd-1`` replica; writer on replica A of
   ``etcd-2``, follower on replica B.
4. **Failover** (``etcd-2``, disk cluster): 4 clients given ``URL_A,URL_B`` (so all on A) create
   machines in a closed loop; after a warm-up the etcd leader is killed (SIGKILL), or replica A
   is. The stream runs until creates have succeeded again for 2 s (4 s past the kill at
   least). Reported: the longest interval without an acknowledged create in the trial, before
   the kill (the noise floor) and after it (the longest ending after the kill and beginning
   within 1 s of it: the one the kill caused), the slowest single create, creates acknowledged
   and failed; then the killed process is restarted (same data, same port), every acknowledged
   machine must be in the store, and failed creates the store holds anyway are counted.
   ``--trials`` of each, interleaved.

Everything started is stopped by PID in a ``finally`` (servers, etcd members), the worktree
removed, the work directory deleted. ``--quick`` is a smoke run (~1 min).

    .venv/bin/python bench/ha_bench.py [--quick] [--rounds 5] [--creates 200] [--orgs 400]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

import ha_load as load  # noqa: E402
import ha_report  # noqa: E402
import sysinfo  # noqa: E402
from tests.etcdcluster import EtcdCluster  # noqa: E402
from tests.harness import ServerProcess  # noqa: E402

from sixpn.client import Client  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent / "out"
BLOCKS_COMMIT = "5b78f81"  # network and host IDs from per-replica blocks
CONCURRENCY = (1, 8, 32)
ORG_CLIENTS = 32
STORES = ("sqlite", "etcd-1", "etcd-2", "etcd-tmpfs-1")


def say(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smoke run, about a minute")
    p.add_argument("--rounds", type=int, help="rounds of machine creates (5; quick 1)")
    p.add_argument("--creates", type=int, help="creates per cell and round (200; quick 60)")
    p.add_argument("--orgs", type=int, help="orgs created at once (400; quick 100)")
    p.add_argument("--org-rounds", type=int, help="rounds of the org burst (2; quick 1)")
    p.add_argument("--samples", type=int, help="write-to-follower samples (200; quick 40)")
    p.add_argument("--trials", type=int, help="failover trials of each kind (3; quick 1)")
    p.add_argument("--out", type=Path, default=OUT_DIR, help="report folder (bench/out)")
    a = p.parse_args(argv)
    quick = a.quick
    a.rounds = a.rounds or (1 if quick else 5)
    a.creates = a.creates or (60 if quick else 200)
    a.orgs = a.orgs or (100 if quick else 400)
    a.org_rounds = a.org_rounds or (1 if quick else 2)
    a.samples = a.samples or (40 if quick else 200)
    a.trials = a.trials or (1 if quick else 3)
    if min(a.rounds, a.creates, a.orgs, a.org_rounds, a.samples, a.trials) < 1:
        p.error("every count must be at least 1")
    return a


# -- the fleet ---------------------------------------------------------------------------------


@dataclass
class Fleet:
    work: Path
    admin: str = field(default_factory=lambda: "sixpn_bench_" + secrets.token_hex(16))
    join: str = field(default_factory=lambda: "sixpn_join_" + secrets.token_hex(16))
    clusters: dict[str, EtcdCluster] = field(default_factory=dict)
    servers: dict[str, list[ServerProcess]] = field(default_factory=dict)
    others: list[ServerProcess] = field(default_factory=list)  # section 2's own servers

    def server(self, name: str, etcd: EtcdCluster | None = None, prefix: str = "") -> ServerProcess:
        s = ServerProcess(
            db=self.work / f"{name}.db",
            admin_token=self.admin,
            join_token=self.join,
            heartbeat=10.0,
            etcd=etcd.endpoints if etcd else None,
            etcd_prefix=prefix or "/sixpn/",
        )
        return s

    def urls(self, store: str) -> list[str]:
        return [s.url for s in self.servers[store]]

    def pids(self, store: str) -> list[int]:
        return [s.proc.pid for s in self.servers[store] if s.proc is not None]

    def etcd_pids(self, store: str) -> list[int]:
        cluster = {"etcd-1": "disk", "etcd-2": "disk", "etcd-tmpfs-1": "tmpfs"}.get(store)
        if cluster is None:
            return []
        return [m.process.pid for m in self.clusters[cluster].members if m.process]

    def stop(self) -> None:
        for s in [*self.others, *(s for group in self.servers.values() for s in group)]:
            s.kill()
        for c in self.clusters.values():
            c.stop()


def etcd_cluster(where: Path | None) -> EtcdCluster:
    """3 members; data under ``where`` (on disk) or where EtcdCluster chooses (/dev/shm)."""
    cluster = EtcdCluster(3)
    if where is not None:
        shutil.rmtree(cluster.dir, ignore_errors=True)
        where.mkdir(parents=True)
        cluster.dir = where
    return cluster.start()


def bring_up(fleet: Fleet) -> None:
    say("etcd: 3 members on disk, 3 on tmpfs")
    fleet.clusters["disk"] = etcd_cluster(fleet.work / "etcd")
    fleet.clusters["tmpfs"] = etcd_cluster(None)
    disk, shm = fleet.clusters["disk"], fleet.clusters["tmpfs"]
    fleet.servers["sqlite"] = [fleet.server("sqlite")]
    fleet.servers["etcd-1"] = [fleet.server("etcd-1", disk, "/bench-e1/")]
    fleet.servers["etcd-2"] = [fleet.server(f"etcd-2{x}", disk, "/bench-e2/") for x in "ab"]
    fleet.servers["etcd-tmpfs-1"] = [fleet.server("etcd-tmpfs-1", shm, "/bench-t1/")]
    for name, group in fleet.servers.items():
        for s in group:
            s.start()
        say(f"{name}: {', '.join(s.url for s in group)}")


@contextmanager
def before_tree(work: Path) -> Iterator[tuple[Path, str]]:
    """The commit before the ID blocks, as a worktree: (its src folder, its commit)."""
    sha = git("rev-parse", f"{BLOCKS_COMMIT}^")
    tree = work / "before"
    git("worktree", "add", "--detach", "--quiet", str(tree), sha)
    try:
        src = tree / "src"
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                "import importlib.util as u, sixpn; "
                "print(sixpn.__file__, u.find_spec('sixpn.control.ids') is None)",
            ],
            env={**os.environ, "PYTHONPATH": str(src)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if not probe[0].startswith(str(src)) or probe[1] != "True":
            raise SystemExit(f"ha bench: the old tree is not what runs: {probe}")
        yield src, sha
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False
        )


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def start_old(server: ServerProcess, src: Path) -> ServerProcess:
    """``server.start()`` with ``PYTHONPATH=src``: the harness's child inherits the environment."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(src)
    try:
        return server.start()
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


# -- the sections ------------------------------------------------------------------------------


async def creates(fleet: Fleet, args: argparse.Namespace) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = []
    for r in range(args.rounds):
        order = STORES[r % len(STORES) :] + STORES[: r % len(STORES)]
        for c in CONCURRENCY:
            for store in order:
                got = await load.burst(
                    fleet.urls(store),
                    fleet.admin,
                    args.creates,
                    c,
                    load.create_machine,
                    server_pids=fleet.pids(store),
                    etcd_pids=fleet.etcd_pids(store),
                )
                cell = {"store": store, "clients": c, "round": r + 1, **got.summary()}
                cell["latencies_ms"] = [round(x * 1e3, 3) for x in got.latencies]
                cells.append(cell)
                say(
                    f"creates r{r + 1} {store:13} x{c:<2} {cell['per_s']:7.1f}/s "
                    f"p50 {cell['p50_ms']:6.1f} p99 {cell['p99_ms']:7.1f} ms"
                    + (f"  errors {cell['errors']}" if cell["errors"] else "")
                )
    return cells


async def org_bursts(fleet: Fleet, args: argparse.Namespace, src: Path) -> dict[str, Any]:
    before = fleet.server("before")
    after = fleet.server("after-sqlite")
    fleet.others += [before, after]
    start_old(before, src)
    after.start()
    variants: dict[str, tuple[list[str], list[int], list[int]]] = {
        "before-sqlite": ([before.url], [before.proc.pid] if before.proc else [], []),
        "after-sqlite": ([after.url], [after.proc.pid] if after.proc else [], []),
        "after-etcd-1": (fleet.urls("etcd-1"), fleet.pids("etcd-1"), fleet.etcd_pids("etcd-1")),
        "after-etcd-2": (fleet.urls("etcd-2"), fleet.pids("etcd-2"), fleet.etcd_pids("etcd-2")),
    }
    runs: list[dict[str, Any]] = []
    for r in range(args.org_rounds):
        names = list(variants)
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            urls, pids, etcd = variants[name]
            prefix = f"r{r + 1}-{name}"
            got = await load.burst(
                urls,
                fleet.admin,
                args.orgs,
                ORG_CLIENTS,
                load.org_op(prefix),
                server_pids=pids,
                etcd_pids=etcd,
            )
            run = {"variant": name, "round": r + 1, **got.summary()}
            run["latencies_ms"] = [round(x * 1e3, 3) for x in got.latencies]
            runs.append(run)
            say(
                f"orgs r{r + 1} {name:14} {run['wall_s']:6.2f} s {run['per_s']:7.1f}/s "
                f"p50 {run['p50_ms']:6.1f} p99 {run['p99_ms']:7.1f} ms"
                + (f"  errors {run['errors']}" if run["errors"] else "")
            )
    checks = {}
    for name, (urls, _, _) in variants.items():
        try:
            checks[name] = await load.distinct_ids(urls[0], fleet.admin)
        except Exception as exc:
            checks[name] = {"error": load.brief(exc)}
    before.kill()
    return {"runs": runs, "distinct": checks}


async def follower(fleet: Fleet, args: argparse.Namespace) -> list[dict[str, Any]]:
    cases = [
        ("sqlite", "SQLite, writer and follower on the one server", "sqlite", 0, 0),
        ("etcd-1", "etcd, writer and follower on the one replica", "etcd-1", 0, 0),
        ("etcd-2", "etcd, writer on replica A, follower on replica B", "etcd-2", 0, 1),
    ]
    out = []
    for key, label, store, w, f in cases:
        urls = fleet.urls(store)
        got = await load.follow_delay(
            urls[w], urls[f], fleet.admin, args.samples, f"follow-{key}", 0.02
        )
        out.append({"case": key, "label": label, **got})
        say(
            f"follower {key:7} p50 {got['p50_ms']:6.2f} p99 {got['p99_ms']:6.2f} ms "
            f"(min {got['min_ms']:.2f}, max {got['max_ms']:.2f}, missed {len(got['missed'])})"
        )
    return out


async def failover(fleet: Fleet, args: argparse.Namespace) -> list[dict[str, Any]]:
    disk = fleet.clusters["disk"]
    a, b = fleet.servers["etcd-2"]
    quick = args.quick
    trials: list[dict[str, Any]] = []
    for t in range(args.trials):
        for kind in ("etcd-leader", "replica"):
            app = f"fo-{kind}-{t + 1}"
            async with Client(b.url, fleet.admin) as c:
                await c.create_app(load.ORG, app)
            killed: list[int] = []

            async def fault(kind: str = kind, killed: list[int] = killed) -> str:
                if kind == "replica":
                    a.kill()
                    return "replica A (SIGKILL)"
                leader = await disk.leader()
                disk.kill(leader)
                killed.append(leader)
                return f"etcd member {leader}, the leader (SIGKILL)"

            got = await load.stream_across(
                f"{a.url},{b.url}",
                fleet.admin,
                app,
                4,
                fault,
                warm=1.5 if quick else 2.0,
                after=3.0 if quick else 4.0,
                steady=1.0 if quick else 2.0,
                cap=30.0,
            )
            restored = await restore(fleet, kind, killed)
            ids = got.pop("ids")
            got["lost"], got["applied_unacked"] = await load.check_store(
                b.url, fleet.admin, app, ids
            )
            trials.append({"kind": kind, "trial": t + 1, "restored_s": restored, **got})
            say(
                f"failover {kind:11} #{t + 1}: longest gap {got['longest_gap_ms']:6.1f} ms, "
                f"slowest create {got['slowest_create_ms']:6.1f} ms "
                f"(before the kill {got['longest_gap_before_fault_ms']:6.1f}, after "
                f"{got['longest_gap_after_fault_ms']:6.1f} from "
                f"{got['after_gap_starts_ms']:+.1f}), acked {got['acked']}, "
                f"errors {got['errors']}, lost {len(got['lost'])}"
            )
    return trials


async def restore(fleet: Fleet, kind: str, killed: list[int]) -> float:
    """Restart what a trial killed; wait until both replicas create again. Seconds taken."""
    started = time.perf_counter()
    disk = fleet.clusters["disk"]
    if kind == "replica":
        fleet.servers["etcd-2"][0].start()
    for i in killed:
        disk.restart(i)
    await until(lambda: disk.leader(), 20, "an etcd leader")
    for s in fleet.servers["etcd-2"]:
        async with Client(s.url, fleet.admin) as c:
            await until(
                lambda c=c: c.create_machine(load.ORG, load.APP, host=load.HOSTS[0]),
                30,
                f"a create on {s.url}",
            )
    return time.perf_counter() - started


async def until(attempt: Callable[[], Awaitable[object]], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            await attempt()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise SystemExit(f"ha bench: no {what} within {seconds:g} s") from None
            await asyncio.sleep(0.1)


# -- the run -----------------------------------------------------------------------------------


def machine(work: Path) -> dict[str, Any]:
    etcd = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout
    return {
        **sysinfo.machine(),
        "sqlite": sqlite3.sqlite_version,
        "etcd": etcd.splitlines()[0] if etcd else "?",
        "work_dir_fs": filesystem(work),
        "tmpfs_etcd_fs": "tmpfs (/dev/shm)",
        "fsync_ms": fsync_ms(work),
    }


def fsync_ms(where: Path, count: int = 200) -> dict[str, float]:
    """p50/p99 of a 4 KiB append + fdatasync in ``where``: what one WAL commit costs there."""
    times = []
    fd = os.open(where / "fsync-probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(count):
            os.write(fd, b"x" * 4096)
            started = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        (where / "fsync-probe").unlink()
    return {"p50": load.pct(times, 50) * 1e3, "p99": load.pct(times, 99) * 1e3}


def filesystem(path: Path) -> str:
    best = ("", "?", "?")
    for line in Path("/proc/mounts").read_text().splitlines():
        dev, mnt, fstype = line.split()[:3]
        if str(path).startswith(mnt) and len(mnt) >= len(best[0]):
            best = (mnt, dev, fstype)
    return f"{best[2]} on {best[1]} (mounted at {best[0]})"


async def run(args: argparse.Namespace, fleet: Fleet, results: dict[str, Any]) -> None:
    for store in STORES:
        await load.prepare(fleet.urls(store)[0], fleet.admin)
    say("section 1: machine creates")
    results["creates"] = await creates(fleet, args)
    say("section 2: organizations at once, before and after per-replica ID blocks")
    with before_tree(fleet.work) as (src, sha):
        results["before_commit"] = sha
        results["orgs"] = await org_bursts(fleet, args, src)
    say("section 3: write to follower")
    results["follower"] = await follower(fleet, args)
    say("section 4: failover")
    results["failover"] = await failover(fleet, args)
    results["distinct_after"] = {
        s: await load.distinct_ids(fleet.urls(s)[0], fleet.admin) for s in STORES
    }


def terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: nothing left behind


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("etcd") is None:
        print("ha bench: etcd is not installed (scripts/sysdeps.sh etcd-server)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, terminate)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = Path(tempfile.mkdtemp(prefix="sixpn-ha-", dir="/var/tmp"))
    results: dict[str, Any] = {"stamp": stamp, "args": {k: str(v) for k, v in vars(args).items()}}
    results["machine"] = machine(work)
    fleet = Fleet(work)
    started = time.perf_counter()
    try:
        bring_up(fleet)
        asyncio.run(run(args, fleet, results))
    except BaseException:
        for group in [*fleet.servers.values(), fleet.others]:
            for s in group:
                tail = s.read_log()[-800:]
                if tail.strip():
                    print(f"--- {s.log} ---\n{tail}", file=sys.stderr)
        raise
    finally:
        fleet.stop()
        shutil.rmtree(work, ignore_errors=True)
    results["seconds"] = time.perf_counter() - started
    text = ha_report.render(results)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"ha-{stamp}.md").write_text(text)
    (args.out / f"ha-{stamp}.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

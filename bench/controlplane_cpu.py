"""The control plane's CPU per machine change, alone: what one create, stop or destroy costs
`sixpn server` on SQLite while change-stream followers are attached.

Why this exists: at 200 changes/s the propagation benchmark's p99 is the control plane's queue
for a CPU (docs/benchmarks.md, "Propagation at rate"); this measures the CPU it queues for,
without a lab, in ~1 minute, so that a change to the request path can be judged by a figure.

Method:

1. A real ``sixpn server`` (its own process, a temporary SQLite file, a Unix socket, as the lab
   runs it), an org with ``--apps`` apps, ``--hosts`` hosts joined through the API (no agent),
   ``--fleet`` started machines.
2. ``--followers`` change-stream followers (``GET /v1/watch``, raw HTTP, lines read and
   counted), the agents' and the propagation benchmark's streams.
3. The propagation benchmark's own load (``propagation_load.Load``: open loop at ``--rate``,
   ``--connections`` keep-alive connections, creates, stops and destroys in turn) for
   ``--seconds``, after ``--warmup`` seconds of the same.
4. The server's CPU over the measured window from ``/proc/PID/stat`` (utime + stime, every
   thread), divided by the changes made; every follower must have read up to the store's last
   revision at the end (nothing lost).

``--profile`` also runs ``py-spy record --nonblocking`` on the server over the measured window
(raw collapsed stacks in ``bench/out/controlplane-<stamp>-...-py-spy.txt``) and prints where
the samples fell, by package and by function. Output: ``bench/out/controlplane-<stamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sysinfo
from propagation_http import AsyncConn, HttpError
from propagation_load import Load

ROOT = Path(__file__).resolve().parents[1]
ORG = "cpu"
REGIONS = ("fra", "ams", "iad")
TICK = os.sysconf("SC_CLK_TCK")


def say(msg: str) -> None:
    print(f"[controlplane] {msg}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the process, every thread."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK  # utime, stime (fields 14, 15)


async def ok(conn: AsyncConn, method: str, path: str, body: Any | None = None) -> Any:
    status, value = await conn.call(method, path, body)
    if not 200 <= status < 300:
        raise HttpError(status, json.dumps(value))
    return value


class Follower:
    """One change stream, read as an agent reads it; remembers the last revision it saw."""

    def __init__(self, sock: str, token: str, since: int) -> None:
        self.sock, self.token, self.since = sock, token, since
        self.revision = since
        self.lines = 0
        self.task: asyncio.Task[None] | None = None
        self.target: int | None = None  # set at the end: the store's last revision
        self.reached = asyncio.Event()

    def wait_for(self, revision: int) -> None:
        self.target = revision
        if self.revision >= revision:
            self.reached.set()

    async def run(self) -> None:
        reader, writer = await asyncio.open_unix_connection(self.sock, limit=1 << 22)
        writer.write(
            f"GET /v1/watch?since={self.since} HTTP/1.1\r\nHost: sixpn\r\n"
            f"Authorization: Bearer {self.token}\r\n\r\n".encode()
        )
        try:
            await reader.readuntil(b"\r\n\r\n")
            while line := await reader.readline():
                # chunk-size lines (hex, then \r\n) are framing; the NDJSON lines start with {
                if line.startswith(b"{"):
                    self.revision = max(self.revision, json.loads(line)["revision"])
                    self.lines += 1
                    if self.target is not None and self.revision >= self.target:
                        self.reached.set()
        finally:
            writer.close()


async def setup(sock: str, token: str, args: argparse.Namespace) -> dict[str, Any]:
    conn = AsyncConn(sock, token)
    await ok(conn, "POST", "/v1/orgs", {"name": ORG})
    apps = [f"app-{i}" for i in range(args.apps)]
    for app in apps:
        await ok(conn, "POST", f"/v1/orgs/{ORG}/apps", {"name": app})
    hosts = []
    for i in range(args.hosts):
        body = {
            "name": f"h-{i}",
            "region": REGIONS[i % len(REGIONS)],
            "endpoint": f"198.51.100.{i + 1}:51820",  # TEST-NET-2: never reached
            "public_key": base64.b64encode(bytes([i + 1]) * 32).decode(),
        }
        await ok(conn, "POST", "/v1/hosts", body)
        hosts.append(body["name"])
    await conn.close()
    conns = [AsyncConn(sock, token) for _ in range(args.connections)]
    todo = iter(range(args.fleet))
    started: list[str] = []

    async def worker(c: AsyncConn) -> None:
        for i in todo:
            body = {"app": apps[i % len(apps)], "host": hosts[i % len(hosts)]}
            started.append((await ok(c, "POST", f"/v1/orgs/{ORG}/machines", body))["id"])

    await asyncio.gather(*(worker(c) for c in conns))
    for c in conns:
        await c.close()
    return {"apps": apps, "hosts": hosts, "started": started}


async def run_load(load: Load, seconds: float) -> dict[str, Any]:
    lines = asyncio.StreamReader()
    task = asyncio.create_task(load.run(lines))
    await asyncio.sleep(seconds)
    lines.feed_data(b"stop\n")
    return await task


async def revision(sock: str, token: str) -> int:
    conn = AsyncConn(sock, token)
    try:
        return int((await ok(conn, "GET", "/healthz"))["revision"])
    finally:
        await conn.close()


def _where(frame: str) -> tuple[str, str]:
    """py-spy's ``function (path:line)`` (paths relative to ``sys.path``) as
    (``function (file)``, package): a library's or the stdlib's top module, ``sixpn/<module>``."""
    function, _, place = frame.rpartition(" (")
    path = place.rstrip(")").rsplit(":", 1)[0]
    top = path.split("/", 1)[0].removesuffix(".py")
    package = path.removesuffix(".py").split("/", 1)[1] if top == "sixpn" else top
    return (
        f"{function} ({path.rsplit('/', 1)[-1]})",
        package if top != "sixpn" else f"sixpn/{package}",
    )


def profile_summary(raw: Path, n: int = 15) -> list[str]:
    """The samples' own time by package and by function, from py-spy's raw output (one
    collapsed stack and its count a line; the innermost frame is the one running)."""
    by_function: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            function, package = _where(stack.rsplit(";", 1)[-1])
            by_function[function] += int(count)
            by_package[package] += int(count)
    total = sum(by_package.values()) or 1
    lines = [f"  own samples by package ({total}):"]
    lines += [f"    {100 * c / total:5.1f}% {k}" for k, c in by_package.most_common(n)]
    lines.append("  own samples by function:")
    lines += [f"    {100 * c / total:5.1f}% {k}" for k, c in by_function.most_common(n)]
    return lines


def start_server(work: Path, sock: str, token: str, src: Path | None) -> subprocess.Popen[bytes]:
    """``sixpn server`` on a fresh SQLite file; from another source tree with ``src`` (the
    baseline: its ``src/`` first on ``PYTHONPATH``, before the venv's editable install)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    with open(work / "server.log", "wb") as log:
        return subprocess.Popen(
            [str(ROOT / ".venv/bin/python"), "-m", "sixpn", "server", "--db",
             str(work / "server.db"), "--listen", f"unix:{sock}", "--admin-token", token],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )  # fmt: skip


def start_spy(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy over the window: ``--gil`` keeps the samples of the thread holding the GIL
    (Python's own CPU: idle threads and waits drop out); ``--nonblocking`` never pauses it."""
    return subprocess.Popen(
        [str(ROOT / ".venv/bin/py-spy"), "record", "--pid", str(pid), "--nonblocking", "--gil",
         "--rate", "250", "--format", "raw", "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def measure(
    args: argparse.Namespace, work: Path, src: Path | None, profile: Path | None
) -> dict[str, Any]:
    """One server, its fleet, its followers and the measured window (module docstring)."""
    sock = str(work / "api.sock")
    token = "sixpn_bench_" + secrets.token_hex(16)
    server = start_server(work, sock, token, src)
    followers: list[Follower] = []
    spy: subprocess.Popen[bytes] | None = None
    try:
        async with asyncio.timeout(30):
            while True:
                try:
                    await revision(sock, token)
                    break
                except (OSError, HttpError):
                    if server.poll() is not None:
                        raise RuntimeError(
                            f"the server exited; see {work / 'server.log'}"
                        ) from None
                    await asyncio.sleep(0.05)
        t = time.monotonic()
        fleet = await setup(sock, token, args)
        say(f"set up: {args.hosts} hosts, {args.apps} apps, {args.fleet} machines "
            f"in {time.monotonic() - t:.1f} s")  # fmt: skip
        since = await revision(sock, token)
        followers = [Follower(sock, token, since) for _ in range(args.followers)]
        for f in followers:
            f.task = asyncio.create_task(f.run())
        cfg = {"socket": sock, "token": token, "org": ORG, "rate": args.rate,
               "connections": args.connections, "seed": args.seed, "apps": fleet["apps"],
               "hosts": fleet["hosts"], "started": fleet["started"]}  # fmt: skip
        load = Load(cfg)
        if args.warmup > 0:
            await run_load(load, args.warmup)
            # the measured load goes on from the warm-up's machines (started, stopped)
            cfg["started"] = load.started
            stopped, load = load.stopped, Load(cfg)
            load.stopped = stopped
        if profile is not None:
            spy = start_spy(server.pid, profile)
            await asyncio.sleep(1)
        rev0 = await revision(sock, token)
        cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
        loadavg0 = os.getloadavg()[0]
        summary = await run_load(load, args.seconds)
        cpu1, t1 = cpu_seconds(server.pid), time.monotonic()
        rev1 = await revision(sock, token)
        if spy is not None:
            stop_process(spy, signal.SIGINT)  # py-spy writes its output and exits
        for f in followers:
            f.wait_for(rev1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.gather(*(f.reached.wait() for f in followers))
        changes = summary["total"]
        user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
        cpu = user + system
        return {
            "load_average": loadavg0,
            "changes": changes,
            "revisions": rev1 - rev0,
            "seconds": t1 - t0,
            "rate": summary["rate"],
            "errors": summary["errors"],
            "server_cpu_s": cpu,
            "server_system_share": system / cpu if cpu else None,
            "cpu_ms_per_change": 1000 * cpu / changes if changes else None,
            "core_share": cpu / (t1 - t0),
            "api_latency_ms": summary["latency_ms"],
            "followers_behind": [f.revision for f in followers if f.revision < rev1],
            "profile": profile.name if profile is not None else None,
        }
    finally:
        for f in followers:
            if f.task is not None:
                f.task.cancel()
        if spy is not None:
            stop_process(spy)
        stop_process(server)


def baseline_tree(rev: str, work: Path) -> Path:
    """``src/`` of git revision ``rev``, unpacked into ``work`` (nothing in the checkout moves)."""
    archive = subprocess.run(
        ["git", "archive", rev, "src"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
    return work / "src"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=200, help="changes per second (200)")
    p.add_argument("--seconds", type=float, default=20, help="measured window, s (20)")
    p.add_argument("--warmup", type=float, default=3, help="load before the window, s (3)")
    p.add_argument("--connections", type=int, default=8, help="load connections (8)")
    p.add_argument("--followers", type=int, default=6, help="change streams (6)")
    p.add_argument("--hosts", type=int, default=25, help="hosts joined, no agent (25)")
    p.add_argument("--apps", type=int, default=10, help="apps (10)")
    p.add_argument("--fleet", type=int, default=1000, help="started machines first (1000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1, help="windows per variant, alternated (1)")
    p.add_argument(
        "--baseline",
        metavar="REV",
        help="also measure the server of git revision REV, alternating with the working tree's",
    )
    p.add_argument("--profile", action="store_true", help="py-spy the server over each window")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    return p.parse_args(argv)


def describe(name: str, r: dict[str, Any]) -> str:
    lat = r["api_latency_ms"]
    return (
        f"{name}: {r['changes']} changes at {r['rate']:.0f}/s: {r['cpu_ms_per_change']:.2f} ms "
        f"CPU per change ({100 * r['server_system_share']:.0f}% in the kernel), "
        f"{100 * r['core_share']:.0f}% of a core; API call p50 {lat['p50']:.1f} / "
        f"p99 {lat['p99']:.1f} ms; errors {r['errors'] or 0}; load average "
        f"{r['load_average']:.2f}; followers behind: {r['followers_behind'] or 'none'}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sixpn-cpbench-"))
    variants: dict[str, Path | None] = {"working tree": None}
    head = sysinfo.git("rev-parse", "--short", "HEAD")
    try:
        if args.baseline:
            base = sysinfo.git("rev-parse", "--short", args.baseline)
            (work / "base").mkdir()
            variants = {f"baseline {base}": baseline_tree(args.baseline, work / "base")} | variants
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        for i in range(args.rounds):
            for k, (name, src) in enumerate(variants.items()):
                run_dir = work / f"run-{i}-{k}"
                run_dir.mkdir()
                profile = (
                    args.out / f"controlplane-{stamp}-{k}-{i}-py-spy.txt" if args.profile else None
                )
                result = asyncio.run(measure(args, run_dir, src, profile))
                runs[name].append(result)
                say(describe(f"{name}, round {i + 1}", result))
                if profile is not None:
                    print("\n".join(profile_summary(profile)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        name: {
            "cpu_ms_per_change": [r["cpu_ms_per_change"] for r in rs],
            "core_share": [r["core_share"] for r in rs],
            "api_p99_ms": [r["api_latency_ms"]["p99"] for r in rs],
        }
        for name, rs in runs.items()
    }
    result = {
        "stamp": stamp,
        "machine": sysinfo.machine(),
        "git": head,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "runs": runs,
        "summary": summary,
    }
    path = args.out / f"controlplane-{stamp}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"control plane CPU per machine change, {args.followers} followers, {args.rate:.0f}/s:")
    for name, sm in summary.items():
        ms = sorted(sm["cpu_ms_per_change"])
        print(
            f"  {name}: median {ms[len(ms) // 2]:.2f} ms per change "
            f"({', '.join(f'{x:.2f}' for x in sm['cpu_ms_per_change'])}), "
            f"{100 * sorted(sm['core_share'])[len(ms) // 2]:.0f}% of a core"
        )
    print(f"  -> {path}")
    failed = any(r["errors"] or r["followers_behind"] for rs in runs.values() for r in rs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

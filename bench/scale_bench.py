"""Scale benchmark (SPEC 9): DNS and agent work on generated fleets of 1k, 10k and 100k machines.

SPEC 9: "a store of 100k machines, 10k apps, 1k hosts: full DNS state build under 2 s and under
1 KiB of memory per machine; an incremental change applied in time independent of fleet size".

Method
------
1. **Stores.** For each size N (``--sizes``, default 1,000, 10,000, 100,000), ``bench/fleetgen.py``
   writes a fleet into a fresh SQLite file (seed ``--seed``): N machines, N/10 apps, N/100 hosts
   in the built-in regions (one in 20 a gateway), N/100 organizations with 1-4 networks each,
   N/500 peers, 10% of machines stopped and 1% destroyed, and one *dense* host holding ~1,000
   machines (half the fleet at N = 1,000). Its time is reported (generator speed), and
   ``feed.snapshot`` on the file is timed in a process of its own (``scale_child.py snapshot``).
2. **Servers.** A real ``sixpn server`` on each file (``tests/harness.py``), on loopback, all up
   at once. Then ``--rounds`` rounds of fresh measuring processes, sizes in turn, up then down,
   so that load coming and going on a shared machine touches every size alike.
3. **DNS** (``scale_child.py dns``): what a DNS server does at start (runtime/dns.py):
   ``GET /v1/snapshot``, ``parse_snapshot``, ``View.from_snapshot``, ``Zone.load``, each timed in
   wall and CPU time (the server's CPU for the GET from ``/proc/PID/stat``). **Memory**:
   ``VmRSS`` after imports (the baseline), after the build, after ``gc.collect()`` with the
   snapshot bytes dropped (what the server keeps) and after ``malloc_trim(0)``, per machine in the
   store. **Anchor**, same process: ``json.loads`` of the same bytes (plain dicts, no entity).
   In the first round also every machine's ``<id>.vm.<app>``, every app's name and every
   network's listings answered once through a ``DnsServer``'s UDP path, and the memory that
   adds. Every round: ``--changes`` changes of each kind (a machine created, stopped, destroyed;
   an app added), each encoded as the server streams it: ``parse_line``, ``View.apply``,
   ``Zone.apply``, the drop of the changed network's kept responses, the first answer after it;
   and one full ``gc.collect()`` with the state loaded, before and after ``gc.freeze()``.
4. **Agent** (``scale_child.py agent``): ``desired_state`` of the dense host and of a host with
   the median number of machines; ``plan`` from an empty host (first resync) and an idle resync
   (rebuild + plan, which must be empty); then per change elsewhere in the fleet (same kinds, on
   other hosts) and for a machine created on the host itself: the change applied to the view,
   ``desired_state`` rebuilt, compared with the last, planned (CPU time). Measured through the
   public functions; ``agent.presence.Presence`` (the agent's filter of changes that cannot move
   the host's desired state), when it exists, is measured too: its cost and its verdict.
5. **Profiles** (cProfile, in process): the DNS build and one
   agent rebuild + plan at the largest size, top functions by own time; ``tracemalloc`` of the DNS
   state at the largest size, by allocating line.
6. **Report**: stdout and ``bench/out/scale-<UTC timestamp>.md`` + ``.json``.

Verdicts, in CPU time (the machine is shared): build (parse + view + zone, and from the request
of the snapshot on) under 2 s; resident memory after gc under 1,024 B/machine (after
malloc_trim shown too); per change "independent of fleet size": the largest size's median at
most 2x the smallest's (the noise allowance of a shared 2-core machine), else the growth factor.

Run: ``.venv/bin/python bench/scale_bench.py [--quick]`` (``make bench-scale``). Everything
started (servers, children) is stopped by PID; the stores are removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import scale_report  # noqa: E402
import sysinfo  # noqa: E402
from tests.harness import ServerProcess  # noqa: E402

OUT_DIR = HERE / "out"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smoke: 1k and 10k, 1 round, 5 changes")
    p.add_argument("--sizes", help="machine counts, comma-separated (1000,10000,100000)")
    p.add_argument("--rounds", type=int, help="fresh DNS processes per size (3)")
    p.add_argument("--changes", type=int, help="changes of each kind (30)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", type=Path, help="keep the generated stores in this folder")
    p.add_argument("--out", type=Path, default=OUT_DIR, help="report folder (bench/out)")
    args = p.parse_args(argv)
    sizes = args.sizes or ("1000,10000" if args.quick else "1000,10000,100000")
    args.sizes = sorted({int(n) for n in sizes.split(",")})
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.changes = args.changes or (5 if args.quick else 30)
    return args


def child(args: list[str], timeout: float = 900) -> dict[str, Any]:
    """Run a measuring process; its last stdout line is its JSON result."""
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr[-2000:]}"
        )
    if done.stderr.strip():
        print(done.stderr.strip(), file=sys.stderr)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


CHILD = str(HERE / "scale_child.py")


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def generate(size: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The fleet of ``size`` into a fresh SQLite file, and the server's assembly of it."""
    db = work / f"fleet-{size}.db"
    print(f"[{size:,}] generating the fleet into {db}", flush=True)
    argv = [str(HERE / "fleetgen.py"), "--db", str(db), "--machines", str(size)]
    gen = child([*argv, "--seed", str(args.seed), "--json"])
    print(f"[{size:,}] {gen['keys']:,} keys in {gen['seconds']['total']:.1f} s", flush=True)
    assembly = child([CHILD, "snapshot", "--db", str(db), "--rounds", str(args.rounds)])
    return {"size": size, "db": str(db), "generate": gen, "assembly": assembly}


def order(sizes: list[int], r: int) -> list[int]:
    """Round ``r``'s order: up, then down, so that a drift of the machine's load hits all."""
    return sizes if r % 2 == 0 else sizes[::-1]


def measure(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Every size's stores and servers at once, then the measuring processes size after size
    in alternating rounds (load that comes and goes on a shared machine touches every size)."""
    results = {size: generate(size, args, work) for size in args.sizes}
    servers: dict[int, ServerProcess] = {}
    try:
        for size in args.sizes:
            servers[size] = ServerProcess(db=Path(results[size]["db"]), heartbeat=10.0).start()

        def base(size: int) -> list[str]:
            server = servers[size]
            assert server.proc is not None
            return [
                "--url", server.url, "--token", server.admin_token, "--seed", str(args.seed),
                "--server-pid", str(server.proc.pid),
            ]  # fmt: skip

        for r in range(args.rounds):
            for size in order(args.sizes, r):
                print(f"[{size:,}] DNS round {r + 1}/{args.rounds} (load {loadavg()})", flush=True)
                extra = ["--answer-all"] if r == 0 else []
                row = child([CHILD, "dns", *base(size), "--changes", str(args.changes), *extra])
                row["loadavg"] = loadavg()
                results[size].setdefault("dns", []).append(row)
        per_round = max(1, -(-args.changes // args.rounds))
        largest = max(args.sizes)
        for r in range(args.rounds):
            for size in order(args.sizes, r):
                print(
                    f"[{size:,}] agent round {r + 1}/{args.rounds} (load {loadavg()})", flush=True
                )
                profile = ["--profile"] if r == 0 and size == largest else []
                row = child([CHILD, "agent", *base(size), "--changes", str(per_round), *profile])
                row["loadavg"] = loadavg()
                results[size].setdefault("agent", []).append(row)
        print(f"[{largest:,}] profiles", flush=True)
        results[largest]["dns_profile"] = child([CHILD, "dns", *base(largest), "--profile"])
        results[largest]["dns_tracemalloc"] = child([CHILD, "dns", *base(largest), "--tracemalloc"])
    finally:
        for server in servers.values():
            server.kill()
    return [results[size] for size in args.sizes]


def machine_info() -> dict[str, Any]:
    import pydantic

    return {
        **sysinfo.machine(),
        "pydantic": pydantic.VERSION,
        "git_dirty": sysinfo.git("status", "--short", "--", "src").splitlines(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    info = machine_info()
    t0 = time.monotonic()
    work = args.keep or Path(tempfile.mkdtemp(prefix="sixpn-scale-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        results = measure(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    info["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
    report = {
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - t0, 1),
        "argv": sys.argv[1:],
        "machine": info,
        "sizes": results,
    }
    text = scale_report.render(report)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    (args.out / f"scale-{stamp}.json").write_text(json.dumps(report, indent=1))
    (args.out / f"scale-{stamp}.md").write_text(text)
    print(f"report: {args.out / f'scale-{stamp}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

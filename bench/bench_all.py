"""``make bench``: every benchmark in sequence, one summary table of SPEC 9's targets, plots, and a
section appended to docs/benchmarks.md.

Each benchmark runs as ``make bench-<name> BENCH_ARGS="--out <this run's folder> <pass-through>"``
(so each installs its own system packages), output to ``bench/out/all-<UTC stamp>/`` (its log
too: ``<name>.log``). A failing benchmark is recorded and the next one runs. Then: the summary
(bench/summary.py) on stdout and in ``summary.md``, the plots (bench/plots.py) into docs/img,
and a section ``## make bench, <date>`` appended to docs/benchmarks.md with the machine, the
versions, the git revision, the method, the table and links to the plots.

    .venv/bin/python bench/bench_all.py                          # everything: over an hour
    .venv/bin/python bench/bench_all.py --only dns,scale          # these two
    .venv/bin/python bench/bench_all.py --only scale --quick --no-docs   # smoke: nothing in docs/

Options it does not know (``--quick``, ...) go to every benchmark. With ``--no-docs`` the plots
stay in the run's folder and docs/benchmarks.md is left alone. Exit code 0 when every benchmark
ran, 1 when one failed, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import plots  # noqa: E402
import summary  # noqa: E402
import sysinfo  # noqa: E402

ROOT = HERE.parent
DOCS = ROOT / "docs" / "benchmarks.md"
IMG = ROOT / "docs" / "img"
# The order they run in: the SPEC 9 ones first.
ORDER = (
    "dns",
    "propagation",
    "scale",
    "datapath",
    "peers",
    "resync",
    "forward",
    "vpc",
    "ha",
    "faults",
)
PLOT_TITLES = {
    "dns-latency": "DNS latency at 10k queries/s",
    "propagation": "propagation delay, CDF",
    "scale": "cost against fleet size",
}


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--only", help=f"comma-separated, from {','.join(ORDER)} (default all)")
    p.add_argument("--no-docs", action="store_true", help="no section in docs, plots in --out")
    p.add_argument("--out", type=Path, help="this run's folder (default bench/out/all-<stamp>)")
    args, passthrough = p.parse_known_args(argv)
    names = args.only.split(",") if args.only else list(ORDER)
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        p.error(f"--only: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(ORDER)}")
    args.names = [n for n in ORDER if n in names]
    return args, passthrough


def run_one(name: str, folder: Path, passthrough: list[str]) -> tuple[int, float]:
    """``make bench-<name>`` with its output on stdout and in ``<folder>/<name>.log``."""
    bench_args = shlex.join(["--out", str(folder), *passthrough])
    cmd = ["make", "--no-print-directory", f"bench-{name}", f"BENCH_ARGS={bench_args}"]
    # a `make bench BENCH_ARGS=...` above us passes its own BENCH_ARGS down in MAKEFLAGS
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    print(f"\n=== {shlex.join(cmd)}", flush=True)
    start = time.monotonic()
    with (folder / f"{name}.log").open("w") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
        except KeyboardInterrupt:  # the benchmark got it too: let it clean up first
            proc.wait()
            raise
        code = proc.wait()
    return code, time.monotonic() - start


def run_all(names: list[str], folder: Path, passthrough: list[str]) -> dict[str, str]:
    """Every benchmark in turn; name -> "exit N, M min" for each (the failed ones say so)."""
    ran: dict[str, str] = {}
    for name in names:
        code, seconds = run_one(name, folder, passthrough)
        ran[name] = f"exit {code}, {seconds / 60:.1f} min"
        print(f"=== bench-{name}: {ran[name]}", flush=True)
    return ran


def failures(ran: dict[str, str]) -> dict[str, str]:
    return {name: what for name, what in ran.items() if not what.startswith("exit 0,")}


def machine_line() -> str:
    m = sysinfo.machine()
    return (
        f"{m['cpus']} cores ({m['cpu']}), {sysinfo.memory_gib()}, Linux {m['kernel']}, Debian "
        f"{m['debian']}; WireGuard backend: {sysinfo.wireguard_backend()}; load average at the "
        f"end {m['loadavg_start'].split()[0]}"
    )


def docs_section(
    started: datetime, folder: Path, ran: dict[str, str], table: str, pngs: dict[str, Path]
) -> str:
    """The section appended to docs/benchmarks.md."""
    ended = datetime.now(UTC)
    versions = ", ".join(f"{k} {v}" for k, v in sysinfo.versions().items())
    runs = "; ".join(f"{name} ({what})" for name, what in ran.items())
    links = [
        f"![{PLOT_TITLES.get(what, what)}]({os.path.relpath(path, DOCS.parent)})"
        for what, path in pngs.items()
    ]
    lines = [
        f"## make bench, {started:%Y-%m-%d}",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M}-{ended:%H:%M} UTC.",
        f"- Machine: {machine_line()}.",
        f"- Versions: {versions}.",
        f"- sixpn at git `{sysinfo.git_revision()}`.",
        f"- Run: `bench/bench_all.py {shlex.join(sys.argv[1:])}`; {runs}; outputs in "
        f"`{os.path.relpath(folder, ROOT)}/`.",
        "- Method: every benchmark's own script (`make bench-<name>`, bench/README.md), one after "
        "the other on this machine, each measuring sixpn beside its anchor in the same run.",
        "  The table takes each benchmark's latest JSON and each report's own verdict "
        "(`bench/summary.py`); a run smaller than the target's fleet is inconclusive.",
        "",
        table.rstrip("\n"),
        "",
    ]
    if links:
        lines += [*links, ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args, passthrough = parse_args(argv)
    started = datetime.now(UTC)
    folder = (args.out or HERE / "out" / f"all-{started:%Y%m%dT%H%M%SZ}").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    print(f"bench_all: {', '.join(args.names)} -> {folder}", flush=True)
    ran = run_all(args.names, folder, passthrough)
    rows, lines = summary.collect(folder, failures(ran), args.names)
    table = summary.markdown(rows, lines)
    (folder / "summary.md").write_text(table)
    print("\n" + summary.text(rows, lines), end="")
    pngs = plots.make_all(folder, folder if args.no_docs else IMG, f"{started:%Y-%m-%d}")
    for path in pngs.values():
        print(f"plot: {path}")
    if not args.no_docs:
        with DOCS.open("a") as docs:
            docs.write("\n" + docs_section(started, folder, ran, table, pngs))
        print(f"appended to {DOCS}")
    return 1 if failures(ran) else 0


if __name__ == "__main__":
    sys.exit(main())

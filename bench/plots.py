"""Plots (PNG, matplotlib's Agg backend) from the latest benchmark outputs in a folder.

- ``bench-dns-latency-<date>.png``: dnsperf's latency at the paced 10k queries/s, per server
  (sixpn, Unbound, Knot): the JSON keeps percentiles (p50, p90, p99, p99.9 per round), so
  percentile curves, every round thin and the median over rounds thick, the 0.2 ms target.
- ``bench-propagation-<date>.png``: CDFs of every sample, API call -> every host's DNS and ->
  first packet, with the 50 ms and 250 ms targets (``propagation_report.plot``).
- ``bench-scale-<date>.png``: cost against fleet size (log x): DNS build CPU, resident memory
  per machine, DNS and agent CPU per change, at each size of the run (1k/10k/100k).

matplotlib is not a project dependency: ``make bench`` installs it into the venv.

    .venv/bin/python bench/plots.py bench/out --dest docs/img --date 2026-12-06
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, NullFormatter

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the report modules sit beside us

import propagation_report as prr
import scale_report as scr
from dnsbench_report import P99_TARGET_MS
from summary import dns_change_us, latest

PERCENTILES = ("50", "90", "99", "99.9")
COLORS = {"sixpn": "tab:blue", "unbound": "tab:orange", "knot": "tab:green"}


def plain_log_y(ax: Any) -> None:
    """A log y axis labelled 0.1, 0.2, 0.5, 1, ... rather than 10^-1."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(
        FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else "")
    )


def nines(p: str) -> float:
    """x position of a percentile: 1 for p90, 2 for p99, 3 for p99.9."""
    return -math.log10(1 - float(p) / 100)


# -- DNS -------------------------------------------------------------------------------------


def dns_latency(rounds: list[dict[str, Any]], dest: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = [nines(p) for p in PERCENTILES]
    for server in dict.fromkeys(r["server"] for r in rounds):
        mine = [r["paced"]["latency_us"] for r in rounds if r["server"] == server]
        mine = [lat for lat in mine if all(p in lat for p in PERCENTILES)]
        if not mine:
            continue
        color = COLORS.get(server, "tab:grey")
        for lat in mine:
            ax.plot(xs, [lat[p] / 1000 for p in PERCENTILES], color=color, alpha=0.3, lw=0.8)
        median = [statistics.median(lat[p] for lat in mine) / 1000 for p in PERCENTILES]
        label = f"{server} (median of {len(mine)} round{'s' if len(mine) > 1 else ''})"
        ax.plot(xs, median, color=color, lw=2, marker="o", label=label)
    ax.axhline(P99_TARGET_MS, color="red", lw=1, label="SPEC 9: p99 <= 0.2 ms")
    ax.axvline(nines("99"), color="grey", lw=0.5)
    ax.set_xticks(xs, [f"p{p}" for p in PERCENTILES])
    plain_log_y(ax)
    ax.set_xlabel("percentile of dnsperf's per-query latency")
    ax.set_ylabel("latency (ms, log)")
    ax.set_title("DNS latency at a paced 10k queries/s, same records, same run", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return save(fig, dest)


# -- propagation -----------------------------------------------------------------------------


def propagation(path: Path, dest: Path) -> Path | None:
    made = prr.plot(prr.from_json(path), [dest])
    return made[0] if made else None


# -- scale -----------------------------------------------------------------------------------


def scale_series(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    def dns_med(key: str) -> list[float]:
        return [scr.med([r["seconds"][key] for r in s["dns"]]) for s in sizes]

    def memory(key: str) -> list[float]:
        return [scr.med(scr.per_machine(s, key)) if scr.per_machine(s, key) else math.nan
                for s in sizes]  # fmt: skip

    return {
        "machines": [s["size"] for s in sizes],
        "build": {
            "build CPU": dns_med("build_cpu"),
            "from the snapshot request on, CPU": dns_med("end_to_end_cpu"),
            "anchor: json.loads of the same bytes": dns_med("anchor_json_loads"),
        },
        "memory": {
            "after gc": memory("after_gc"),
            "as kept (gc, malloc_trim)": memory("after_trim"),
        },
        "dns_change": {k: [dns_change_us(s, k) for s in sizes] for k in scr.KINDS},
        "agent_change": {k: [scr.agent_change(s, k) for s in sizes] for k in scr.AGENT_KINDS},
    }


def panel(ax: Any, xs: list[int], series: dict[str, list[float]], title: str, ylabel: str) -> None:
    for label, ys in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x // 1000}k" if x >= 1000 else str(x) for x in xs])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("machines in the store")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def scale(data: dict[str, Any], dest: Path) -> Path:
    s = scale_series(data["sizes"])
    xs = s["machines"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    (build, memory), (dns, agent) = axes
    panel(build, xs, s["build"], "DNS full build", "seconds")
    build.axhline(scr.BUILD_TARGET_S, color="red", lw=1, label="SPEC 9: < 2 s")
    panel(memory, xs, s["memory"], "DNS resident memory per machine", "bytes per machine")
    memory.axhline(scr.MEMORY_TARGET_B, color="red", lw=1, label="SPEC 9: < 1 KiB")
    panel(dns, xs, s["dns_change"], "DNS, one change: decode + apply (CPU)", "microseconds")
    panel(agent, xs, s["agent_change"], "Agent, one change: taken in and planned (CPU)", "ms")
    plain_log_y(agent)
    for ax in (build, memory):
        ax.legend(fontsize=7)
    fig.suptitle(f"sixpn cost against fleet size (bench-scale, {data.get('started', '')})")
    fig.tight_layout()
    return save(fig, dest)


# -- files -----------------------------------------------------------------------------------


def save(fig: Any, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=110)
    plt.close(fig)
    return dest


def make_all(folder: Path, dest: Path, date: str) -> dict[str, Path]:
    """Every plot whose benchmark has an output in ``folder``: what -> the PNG written. A plot
    that fails (an output of another shape) is reported on stderr and skipped."""
    found = latest(folder)
    jobs = {
        "dns-latency": ("dns", lambda path, png: dns_latency(json.loads(path.read_text()), png)),
        "propagation": ("propagation", propagation),
        "scale": ("scale", lambda path, png: scale(json.loads(path.read_text()), png)),
    }
    made: dict[str, Path] = {}
    for what, (bench, plot) in jobs.items():
        if bench not in found:
            continue
        try:
            png = plot(found[bench], dest / f"bench-{what}-{date}.png")
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            print(f"plots: {what} from {found[bench].name}: {exc!r}", file=sys.stderr)
            continue
        if png:
            made[what] = png
    return made


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("folder", type=Path, help="benchmark outputs (bench/out)")
    p.add_argument("--dest", type=Path, help="where the PNGs go (default: the folder)")
    p.add_argument("--date", default=f"{datetime.now(UTC):%Y-%m-%d}", help="in the file names")
    args = p.parse_args(argv)
    made = make_all(args.folder, args.dest or args.folder, args.date)
    for what, path in made.items():
        print(f"{what}: {path}")
    if not made:
        print("no plot: no dns, propagation or scale output in the folder")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Pool saved data-path runs: each run's and all runs' fabric/anchor throughput verdict.

A run's rounds are paired (anchor and fabric back to back), so rounds of several runs of the
same code can be pooled into one sample of per-round ratios; the verdict is the report's own
(``datapath_report.throughput_verdict``: the median's distribution-free 95% interval against
SPEC 9's 95%). Pool only runs whose data path is the same code: this script cannot tell.

    .venv/bin/python bench/datapath_pool.py bench/out/datapath-20261130T18*.json ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from datapath_measure import median
from datapath_report import median_interval, throughput_verdict


def run_ratios(path: Path) -> list[float]:
    """Per round, fabric / anchor Gbit/s, from a ``datapath-<stamp>.json`` report."""
    try:
        rounds = json.loads(path.read_text())["rounds"]
        return [
            r["fabric"]["gbps"] / r["anchor"]["gbps"]
            for r in rounds
            if r.get("fabric") and r.get("anchor") and r["anchor"]["gbps"] > 0
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"{path}: not a data-path benchmark report ({exc})") from exc


def line(name: str, ratios: list[float]) -> str:
    interval = median_interval(ratios)
    ci = f"{interval[0]:.1%}-{interval[1]:.1%}" if interval else "n/a (too few rounds)"
    verdict = throughput_verdict(ratios)
    return f"| {name} | {len(ratios)} | {median(ratios):.1%} | {ci} | {verdict} |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("reports", nargs="+", type=Path, help="datapath-<stamp>.json files")
    args = p.parse_args(argv)
    runs = {path.stem: run_ratios(path) for path in args.reports}
    for name, ratios in runs.items():
        if not ratios:
            raise SystemExit(f"{name}: no round with both setups measured")
    print("| run | rounds | fabric / anchor, median | 95% CI of the median | verdict |")
    print("|---|---:|---:|---|---|")
    for name, ratios in runs.items():
        print(line(name, ratios))
    if len(runs) > 1:
        print(line("**pooled**", [r for ratios in runs.values() for r in ratios]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One table of every SPEC 9 target from a folder of benchmark outputs.

For each benchmark the LATEST ``<name>-<UTC stamp>.json`` in the folder is read (by the stamp
in its name) and turned into one row per SPEC 9 target: the target, sixpn's figure, the anchor
measured in the same run, the verdict and the file it came from. Verdicts are the reports' own
where a report decides (``dnsbench_report.verdict``, the propagation report's ``verdicts``,
``datapath_report.throughput_verdict``, ``scale_report``'s comparisons); the peers report has
none, so its rows say what the benchmark checked (it fails the run when a check does not hold).
A run smaller than the target's fleet (a ``--quick`` one) is "inconclusive".

The benchmarks without a SPEC 9 target (resync, forward, vpc, ha) give one line of headline
figures each. A benchmark with no output gives a row saying "not run".

    .venv/bin/python bench/summary.py bench/out            # plain text on stdout
    .venv/bin/python bench/summary.py bench/out --markdown # the Markdown table
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the report modules sit beside us

import datapath_report as dpr
import dnsbench_report as dnr
import scale_report as scr

SPEC_BENCHES = ("dns", "propagation", "datapath", "scale", "peers")
HEADLINE_BENCHES = ("resync", "forward", "vpc", "ha", "faults")
TITLES = {
    "dns": "DNS: CPU per query and QPS against Knot and Unbound, p99 at 10k qps",
    "propagation": "Propagation: API call -> every host's DNS, -> first packet",
    "datapath": "Data path: TCP throughput against plain WireGuard",
    "scale": "Scale: DNS build, memory, per-change cost at 100k machines",
    "peers": "Scale: one gateway holds 5,000 peers, one added/removed touches no other",
}
SCALE_SIZE = 100_000  # SPEC 9: the store the scale targets are about
PEERS_HELD = 5_000
STAMP = re.compile(r"^([a-z]+)-(\d{8}T\d{6})Z?\.json$")
VERDICT_LINE = re.compile(r"^- (PASS|FAIL): (.+?) \((.*)\)$")


@dataclass(frozen=True)
class Row:
    target: str
    figure: str
    anchor: str
    verdict: str  # PASS, FAIL, inconclusive, not run
    source: str = "-"


# -- finding the outputs ---------------------------------------------------------------------


def latest(folder: Path) -> dict[str, Path]:
    """Benchmark name -> its newest ``<name>-<stamp>.json`` in ``folder``."""
    found: dict[str, tuple[str, Path]] = {}
    for path in folder.glob("*.json"):
        m = STAMP.match(path.name)
        if m and (m[1] not in found or m[2] > found[m[1]][0]):
            found[m[1]] = (m[2], path)
    return {name: path for name, (_, path) in found.items()}


def is_quick(data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    flags = [data.get("settings", {}).get("quick"), data.get("args", {}).get("quick")]
    return any(str(f) == "True" for f in flags) or "--quick" in data.get("argv", [])


def verdict_word(ok: bool | str | None) -> str:
    if ok is None or ok in ("n/a", "INCONCLUSIVE"):
        return "inconclusive"
    if isinstance(ok, str):
        return ok
    return "PASS" if ok else "FAIL"


def ms(x: float | None) -> str:
    if x is None:
        return "n/a"
    return "timeout" if math.isinf(x) else f"{x:.1f} ms"


# -- DNS -------------------------------------------------------------------------------------


def minmax(values: list[float]) -> tuple[float, float]:
    return min(values), max(values)


def dns_summary(name: str, rounds: list[dict[str, Any]]) -> dnr.Summary:
    """``dnsbench_report.Summary`` of one server from its rounds in the JSON (the JSON keeps
    percentiles, not every latency, so this mirrors ``dnsbench_report.summarize``)."""
    peak = [r["max_qps"] for r in rounds]
    paced = [r["paced"] for r in rounds]
    p50 = [p["latency_us"]["50"] / 1000 for p in paced]
    p99 = [p["latency_us"]["99"] / 1000 for p in paced]
    bounds = [dnr.bound(SimpleNamespace(**p)) for p in peak]
    nan = math.nan
    return dnr.Summary(
        name=name,
        rounds=len(rounds),
        qps=statistics.median(p["qps"] for p in peak),
        cpu_us=statistics.median(p["cpu_us_per_query"] for p in peak),
        cpu_us_paced=statistics.median(p["cpu_us_per_query"] for p in paced),
        user_us=statistics.median(p.get("user_us_per_query", nan) for p in peak),
        user_us_paced=statistics.median(p.get("user_us_per_query", nan) for p in paced),
        p50_ms=statistics.median(p50),
        p99_ms=statistics.median(p99),
        ok_percent=min(r["answers_ok_percent"] for r in rounds),
        bound=max(set(bounds), key=bounds.count),
        avg_response=peak[0]["avg_response"],
        spread={
            "QPS": minmax([p["qps"] for p in peak]),
            "CPU us/query": minmax([p["cpu_us_per_query"] for p in peak]),
            "paced CPU us/query": minmax([p["cpu_us_per_query"] for p in paced]),
            "p99 ms": minmax(p99),
        },
    )


def split_detail(detail: str) -> tuple[str, str]:
    """The report's "sixpn vs anchor, ratio" or "sixpn; anchors" into (figure, anchor)."""
    for sep in (" vs ", "; "):
        if sep in detail:
            figure, anchor = detail.split(sep, 1)
            return figure, anchor
    return detail, "-"


def dns_rows(data: list[dict[str, Any]]) -> list[Row]:
    names = dict.fromkeys(r["server"] for r in data)
    summaries = [dns_summary(n, [r for r in data if r["server"] == n]) for n in names]
    rows = []
    for line in dnr.verdict(summaries):
        m = VERDICT_LINE.match(line)
        if m:  # the issue-16 and NOTE lines are not SPEC 9 targets
            figure, anchor = split_detail(m[3])
            rows.append(Row(f"DNS: {m[2]}", figure, anchor, m[1]))
    return rows or [
        Row(TITLES["dns"], "no verdict: sixpn or the anchors missing", "-", "inconclusive")
    ]


# -- propagation -----------------------------------------------------------------------------


def propagation_rows(data: dict[str, Any]) -> list[Row]:
    f = data["figures"]
    v, quiet = f["verdicts"], f.get("quiet", {})
    every = f["dns"]["create+stop"]["every_host"]
    dp = f["data_path"]
    lost = len(data["check"].get("mismatches", []))
    timeouts = f["dns"]["all"]["every_host"]["timeouts"]
    rate = f["rates"]["revisions_per_s"]
    q_dns, q_dp = quiet.get("dns", {}).get("all", {}), quiet.get("data_path", {})
    return [
        Row("Propagation: changes arrive at 200/s", f"{rate:.0f} revisions/s", "-",
            verdict_word(v["rate_at_least_200"])),
        Row(
            "Propagation: create or stop -> every host's DNS, p99 < 50 ms",
            f"p99 {ms(every['p99'])} (p50 {ms(every['p50'])}, n {every['n']})",
            f"no load, same run: p99 {ms(q_dns.get('p99'))}" if q_dns else "-",
            verdict_word(v["dns_p99_create_stop"]),
        ),
        Row(
            "Propagation: create -> data path passes packets, p99 < 250 ms",
            f"p99 {ms(dp['p99'])} (p50 {ms(dp['p50'])}, n {dp['n']})",
            f"no load, same run: p99 {ms(q_dp.get('p99'))}" if q_dp else "-",
            verdict_word(v["data_path_p99"]),
        ),
        Row("Propagation: no change lost or out of order",
            f"{lost} mismatches, {timeouts} timeouts", "-", verdict_word(v["nothing_lost"])),
    ]  # fmt: skip


# -- data path -------------------------------------------------------------------------------


def datapath_rows(data: dict[str, Any]) -> list[Row]:
    rounds = [r for r in data["rounds"] if r.get("fabric") and r.get("anchor")]
    paired = [r["fabric"]["gbps"] / r["anchor"]["gbps"] for r in rounds if r["anchor"]["gbps"]]
    if not paired:
        return [Row(TITLES["datapath"], "no round with both setups", "-", "inconclusive")]
    fabric = dpr.median([r["fabric"]["gbps"] for r in rounds])
    anchor = dpr.median([r["anchor"]["gbps"] for r in rounds])
    interval = dpr.median_interval(paired)
    ci = f"95% CI {interval[0]:.1%}-{interval[1]:.1%}, " if interval else ""
    figure = (
        f"{dpr.median(paired):.1%} of the anchor ({ci}{len(paired)} rounds); {fabric:.2f} Gbit/s"
    )
    anchor_text = f"plain wireguard-go {anchor:.2f} Gbit/s"
    return [
        Row(
            f"Data path: TCP throughput >= {target:.0%} of plain WireGuard{label}",
            figure,
            anchor_text,
            verdict_word(dpr.throughput_verdict(paired, target)),
        )
        for target, label in ((0.98, ""), (dpr.THROUGHPUT_TARGET, " (the floor)"))
    ]


# -- scale -----------------------------------------------------------------------------------


SHORT = {
    "machine created": "created",
    "machine stopped": "stopped",
    "machine destroyed": "destroyed",
    "app added": "app added",
    "machine created here": "created here",
}


def short(case: str) -> str:
    """``machine created, moved`` -> ``created (moved)``."""
    kind, _, what = case.partition(", ")
    return f"{SHORT.get(kind, kind)} ({what})" if what else SHORT.get(kind, kind)


def below_size(verdict: str, size: int, needed: int, what: str) -> tuple[str, str]:
    """(verdict, note): a run smaller than the target's fleet cannot pass or fail it."""
    if size >= needed:
        return verdict, ""
    return "inconclusive", f" [report: {verdict} at {size:,} {what}, SPEC 9: {needed:,}]"


def scale_build_rows(large: dict[str, Any]) -> list[Row]:
    sec = [r["seconds"] for r in large["dns"]]
    build_cpu = scr.med([x["build_cpu"] for x in sec])
    e2e_cpu = scr.med([x["end_to_end_cpu"] for x in sec])
    loads = scr.med([x["anchor_json_loads"] for x in sec])
    trim = scr.per_machine(large, "after_trim") or scr.per_machine(large, "after_gc")
    memory = scr.med(trim)
    anchor = f"json.loads of the same bytes {loads:.2f} s"
    checks = [
        ("DNS full build < 2 s CPU", f"{build_cpu:.2f} s", anchor,
         build_cpu < scr.BUILD_TARGET_S),
        ("DNS build from the snapshot request on < 2 s CPU", f"{e2e_cpu:.2f} s", anchor,
         e2e_cpu < scr.BUILD_TARGET_S),
        ("DNS memory < 1 KiB/machine, resident", f"{memory:.0f} B/machine", "-",
         memory < scr.MEMORY_TARGET_B),
    ]  # fmt: skip
    rows = []
    for target, figure, anchor_text, ok in checks:
        verdict, note = below_size(scr.verdict(ok), large["size"], SCALE_SIZE, "machines")
        rows.append(Row(f"Scale: {target}", figure + note, anchor_text, verdict))
    return rows


def flat_row(
    target: str,
    small: dict[str, Any],
    large: dict[str, Any],
    cost: Callable[[dict[str, Any], str], float],
    kinds: Iterable[str],
    unit: str,
) -> Row:
    """Per change "independent of fleet size": ``scale_report.flat`` per kind; FAIL if any."""
    pairs = {k: (cost(small, k), cost(large, k)) for k in kinds}
    verdicts = [scr.flat(a, b).split()[0] for a, b in pairs.values()]
    verdict = "FAIL" if "FAIL" in verdicts else "PASS"
    digits = 0 if unit == "us" else 3

    def listing(i: int) -> str:
        return ", ".join(f"{short(k)} {ab[i]:.{digits}f}" for k, ab in pairs.items())

    figure = f"{large['size']:,} machines: {listing(1)} {unit}"
    anchor = f"{small['size']:,} machines (same run): {listing(0)} {unit}"
    if small["size"] == large["size"]:
        return Row(target, figure, anchor, "inconclusive")
    verdict, note = below_size(verdict, large["size"], SCALE_SIZE, "machines")
    return Row(target, figure + note, anchor, verdict)


def dns_change_us(size: dict[str, Any], kind: str) -> float:
    return sum(scr.dns_change(size, kind, part) for part in ("decode", "view", "zone"))


def scale_rows(data: dict[str, Any]) -> list[Row]:
    sizes = data["sizes"]
    small, large = sizes[0], sizes[-1]
    return [
        *scale_build_rows(large),
        flat_row("Scale: DNS per change independent of fleet size (decode + apply)", small,
                 large, dns_change_us, scr.KINDS, "us"),
        flat_row("Scale: agent per change independent of fleet size", small, large,
                 scr.agent_case, scr.agent_cases(sizes), "ms"),
    ]  # fmt: skip


# -- peers -----------------------------------------------------------------------------------


def peers_rows(data: dict[str, Any]) -> list[Row]:
    g = data["gateway"]
    held = max(g["counts"])
    install = next(row for row in g["installs"] if row["peers"] == held)
    total = statistics.median(s["total_s"] for s in install["sixpn"]) * 1000
    setconf = statistics.median(install["setconf"]) * 1000
    kib = g.get("daemon_kib_full")
    rss = f", wireguard-go {kib / 1024:.0f} MiB" if kib else ""
    verdict, note = below_size("PASS", held, PEERS_HELD, "peers")
    rows = [
        Row(
            "Scale: one gateway holds 5,000 peers",
            f"{held:,} installed in {total:.0f} ms (read + plan + apply){rss}{note}",
            f"`wg setconf` of one file {setconf:.0f} ms",
            verdict,
        )
    ]
    c = g["changes"]
    parts, anchors, single = [], [], True
    for kind, anchor_key, op in (
        ("add", "wg_add", "SetPeers/1"),
        ("remove", "wg_remove", "RemovePeers/1"),
    ):
        ops = {tuple(s["ops"]) for s in c[kind]}
        single = single and ops == {(op,)}
        t = statistics.median(s["total_s"] for s in c[kind]) * 1000
        parts.append(f"{kind} {t:.0f} ms ({', '.join(sorted({o for x in ops for o in x}))})")
        anchors.append(f"{kind} {statistics.median(c[anchor_key]) * 1000:.1f} ms")
    verdict, note = below_size("PASS" if single else "FAIL", held, PEERS_HELD, "peers")
    rows.append(
        Row(
            "Scale: adding or removing one peer touches no other",
            f"at {held:,}: " + "; ".join(parts) + ", the others unchanged (checked)" + note,
            "one `wg set` by hand: " + ", ".join(anchors),
            verdict,
        )
    )
    return rows


# -- headline figures ------------------------------------------------------------------------


def med(values: Iterable[float]) -> float:
    return statistics.median(values)


def resync_line(data: list[dict[str, Any]]) -> str:
    r = data[-1]
    six, anchor = r["measures"]["sixpn"], r["measures"]["iproute2"]

    def wall_cpu(pairs: list[list[float]]) -> str:
        return f"{med(p[0] for p in pairs) * 1000:.0f} / {med(p[1] for p in pairs) * 1000:.0f}"

    return (
        f"one full read of a host with {r['machines']} machines {wall_cpu(six)} ms wall / CPU, "
        f"iproute2 + nft + wg {wall_cpu(anchor)} ms; converging from empty {r['converge_s']:.1f} s "
        f"({r['ops']} operations)"
    )


def forward_line(data: dict[str, Any]) -> str:
    res = data["results"]

    def side(name: str) -> str:
        s, c = res[name]["stream"], res[name]["conn"]
        return (
            f"{med(x['gbit_s'] for x in s):.1f} Gbit/s, {med(x['conn_s'] for x in c):.0f} conn/s, "
            f"{med(x['cpu_ms_per_mb'] for x in s):.2f} ms CPU/MB"
        )

    return f"`sixpn forward` {side('sixpn')}; socat (anchor) {side('socat')}"


def vpc_line(data: dict[str, Any]) -> str:
    q, conn = data["queries"], data["connection_ms"]

    def place(name: str) -> str:
        return f"{q[name]['p50']:.2f} / {q[name]['p99']:.2f} ms, connect {med(conn[name]):.1f} ms"

    return (
        f"PostgreSQL query p50 / p99 through the fabric {place('fabric')}; the forwarder alone "
        f"{place('forwarder')}; inside the VPC (anchor) {place('vpc')}"
    )


def ha_line(data: dict[str, Any]) -> str:
    rates: dict[str, list[float]] = {}
    for c in data["creates"]:
        if c["clients"] == 8:
            rates.setdefault(c["store"], []).append(c["per_s"])
    creates = ", ".join(f"{store} {med(v):.0f}" for store, v in rates.items())
    gaps: dict[str, list[float]] = {}
    for t in data["failover"]:
        gaps.setdefault(t["kind"], []).append(t["fault_to_flowing_ms"])
    failover = ", ".join(f"{kind} {med(v):.0f} ms" for kind, v in gaps.items())
    lost = sum(len(t["lost"]) for t in data["failover"])
    return (
        f"creates/s at 8 clients: {creates} (SQLite the anchor); failover, kill -> creates "
        f"flowing: {failover}; acknowledged creates lost: {lost}"
    )


def faults_line(data: dict[str, Any]) -> str:
    by_fault: dict[str, list[dict[str, Any]]] = {}
    for r in data["rows"]:
        by_fault.setdefault(r["fault"], []).append(r)
    parts = []
    for fault, rows in by_fault.items():
        lost = "/".join(str(sum(r["lost"][k] for r in rows)) for k in ("a1->b1", "a1->c1"))
        parts.append(f"{fault} {med(r['recovery_s'] for r in rows):.2f} s (lost {lost})")
    return "recovery, median; packets lost a1->b1/a1->c1 over all rounds: " + "; ".join(parts)


ROWS: dict[str, Callable[[Any], list[Row]]] = {
    "dns": dns_rows,
    "propagation": propagation_rows,
    "datapath": datapath_rows,
    "scale": scale_rows,
    "peers": peers_rows,
}
HEADLINES: dict[str, Callable[[Any], str]] = {
    "resync": resync_line,
    "forward": forward_line,
    "vpc": vpc_line,
    "ha": ha_line,
    "faults": faults_line,
}


# -- the summary -----------------------------------------------------------------------------


def missing(name: str, failed: dict[str, str]) -> str:
    return f"failed: {failed[name]}" if name in failed else "not run"


def bench_rows(name: str, path: Path | None, failed: dict[str, str]) -> list[Row]:
    if path is None:
        return [Row(TITLES[name], missing(name, failed), "-", "not run")]
    source = path.name
    try:
        data = json.loads(path.read_text())
        rows = ROWS[name](data)
        source += " (--quick)" if is_quick(data) else ""
    except (OSError, ValueError, KeyError, TypeError, IndexError, StopIteration) as exc:
        rows = [Row(TITLES[name], f"unreadable: {type(exc).__name__} {exc}", "-", "inconclusive")]
    if name in failed:
        source += f"; this run {failed[name]}"
    return [replace(r, source=source) for r in rows]


def headline(name: str, path: Path | None, failed: dict[str, str]) -> str:
    if path is None:
        return f"{name}: {missing(name, failed)}"
    try:
        text = HEADLINES[name](json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        text = f"unreadable: {type(exc).__name__} {exc}"
    return f"{name}: {text} ({path.name})"


def collect(
    folder: Path, failed: dict[str, str] | None = None, only: Iterable[str] | None = None
) -> tuple[list[Row], list[str]]:
    """(rows, headline lines) for the latest outputs in ``folder``. ``failed``: benchmark ->
    what went wrong in this run; ``only``: the benchmarks to show (default all)."""
    failed = failed or {}
    wanted = set(only) if only is not None else set(SPEC_BENCHES + HEADLINE_BENCHES)
    found = latest(folder)
    rows = [r for n in SPEC_BENCHES if n in wanted for r in bench_rows(n, found.get(n), failed)]
    lines = [headline(n, found.get(n), failed) for n in HEADLINE_BENCHES if n in wanted]
    return rows, lines


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(rows: list[Row], lines: list[str]) -> str:
    out = [
        "| SPEC 9 target | sixpn | anchor, same run | verdict | source |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        verdict = f"**{r.verdict}**" if r.verdict in ("PASS", "FAIL") else r.verdict
        out.append(
            f"| {cell(r.target)} | {cell(r.figure)} | {cell(r.anchor)} | {verdict} "
            f"| `{cell(r.source)}` |"
        )
    if lines:
        out += ["", "Without a SPEC 9 target:", ""] + [f"- {cell(line)}" for line in lines]
    return "\n".join(out) + "\n"


def text(rows: list[Row], lines: list[str]) -> str:
    out = []
    for r in rows:
        out.append(f"{r.verdict:<12} {r.target}")
        out.append(f"{'':12}   sixpn:  {r.figure}")
        out.append(f"{'':12}   anchor: {r.anchor}")
        out.append(f"{'':12}   from:   {r.source}")
    if lines:
        out += ["", "Without a SPEC 9 target:"] + [f"  {line}" for line in lines]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("folder", type=Path, nargs="?", default=Path(__file__).parent / "out")
    p.add_argument("--markdown", action="store_true", help="the Markdown table, not plain text")
    args = p.parse_args(argv)
    if not args.folder.is_dir():
        p.error(f"{args.folder}: not a folder")
    rows, lines = collect(args.folder)
    print(markdown(rows, lines) if args.markdown else text(rows, lines), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The DNS benchmark's report: the Markdown table, the details behind it, the SPEC 9 verdict
against each anchor (Unbound, Knot DNS), and the profile of sixpn's paced phase.

Pure formatting over measured values, except :func:`tool_versions` (asks the tools) and
:func:`ensure_out_dir`. Definitions used in every table:

- QPS: dnsperf's "Queries per second" in the max-QPS phase; "client-bound" when dnsperf used at
  least 90% of its CPU, "server-bound" when the server did (either side may be the limit).
- CPU us/query: server utime+stime during the phase / queries completed in it; at max load
  and at the paced rate (one wake-up per query).
- p50/p99: nearest-rank percentiles of dnsperf's per-query latencies at the paced rate.
- answers ok %: NOERROR answers (every query names an existing record) over queries sent, both
  phases; in the paced phase each answer's rcode is also checked against its name.
- With several rounds (servers alternating), the main table shows each metric's median.
"""

from __future__ import annotations

import math
import platform
import re
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dnsbench_dataset as ds
from dnsbench_knot import knot_version
from dnsbench_measure import PerfRun, ServerResult, Settings, percentile
from dnsbench_profile import Profile, path_table

P99_TARGET_MS = 0.2  # SPEC 9
BOUND = 0.9  # share of a CPU above which a side counts as the limit
ANCHORS = {"unbound": "Unbound", "knot": "Knot"}  # in the order they run


def ensure_out_dir(out: Path) -> None:
    """``out`` exists with a ``.gitignore`` that ignores everything in it but itself."""
    out.mkdir(parents=True, exist_ok=True)
    ignore = out / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# benchmark results stay local\n*\n!.gitignore\n")


def tool_versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for tool, cmd in (("dnsperf", ["dnsperf", "-h"]), ("unbound", ["unbound", "-V"])):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        m = re.search(r"Version (\S+)", proc.stdout + proc.stderr)
        found[tool] = m.group(1) if m else "unknown"
    found["knot"] = knot_version()
    return found


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def ok_percent(r: ServerResult) -> float:
    sent = r.peak.sent + r.latency.sent
    ok = r.peak.rcodes.get("NOERROR", 0) + len(r.latency.latencies_us) - r.latency.bad_answers
    return 100.0 * ok / sent if sent else math.nan


def latency_ms(run: PerfRun, p: float) -> float:
    return percentile(sorted(run.latencies_us), p) / 1000.0


def share(cpu_s: float, run: PerfRun) -> float:
    return cpu_s / run.wall_s if run.wall_s else math.nan


def bound(run: PerfRun) -> str:
    sides = [
        side
        for side, cpu_s in (("client", run.dnsperf_cpu_s), ("server", run.server_cpu_s))
        if share(cpu_s, run) >= BOUND
    ]
    return f" ({'+'.join(sides)}-bound)" if sides else ""


def one_line(run: PerfRun) -> str:
    return (
        f"{run.qps:,.0f} qps, server {run.cpu_us_per_query:.2f} us/query, "
        f"completed {run.completed}/{run.sent}, rcodes {dict(run.rcodes)}, "
        f"CPU server {100 * share(run.server_cpu_s, run):.0f}% "
        f"dnsperf {100 * share(run.dnsperf_cpu_s, run):.0f}%"
    )


@dataclass(frozen=True)
class Summary:
    """One server over all rounds: medians, and the worst answers-ok share."""

    name: str
    rounds: int
    qps: float
    cpu_us: float
    cpu_us_paced: float
    user_us: float  # the user-space part of cpu_us (utime), the rest is the kernel's (stime)
    user_us_paced: float
    p50_ms: float
    p99_ms: float
    ok_percent: float
    bound: str
    avg_response: int
    spread: dict[str, tuple[float, float]]  # metric -> (min, max) over rounds


def summarize(results: list[ServerResult]) -> list[Summary]:
    names = list(dict.fromkeys(r.name for r in results))
    out = []
    for name in names:
        rs = [r for r in results if r.name == name]
        bounds = [bound(r.peak) for r in rs]
        per_round = {
            "QPS": [r.peak.qps for r in rs],
            "CPU us/query": [r.peak.cpu_us_per_query for r in rs],
            "paced CPU us/query": [r.latency.cpu_us_per_query for r in rs],
            "p99 ms": [latency_ms(r.latency, 99) for r in rs],
        }
        out.append(
            Summary(
                name=name,
                rounds=len(rs),
                qps=statistics.median(r.peak.qps for r in rs),
                cpu_us=statistics.median(r.peak.cpu_us_per_query for r in rs),
                cpu_us_paced=statistics.median(r.latency.cpu_us_per_query for r in rs),
                user_us=statistics.median(r.peak.user_us_per_query for r in rs),
                user_us_paced=statistics.median(r.latency.user_us_per_query for r in rs),
                p50_ms=statistics.median(latency_ms(r.latency, 50) for r in rs),
                p99_ms=statistics.median(latency_ms(r.latency, 99) for r in rs),
                ok_percent=min(ok_percent(r) for r in rs),
                bound=max(set(bounds), key=bounds.count),
                avg_response=rs[0].peak.avg_response,
                spread={k: (min(v), max(v)) for k, v in per_round.items()},
            )
        )
    return out


def main_table(summaries: list[Summary], s: Settings) -> list[str]:
    rate = f"{s.latency_qps // 1000}k" if s.latency_qps % 1000 == 0 else str(s.latency_qps)
    lines = [
        f"| server | QPS | CPU us/query at max QPS | CPU us/query at {rate} qps "
        f"| p50 ms at {rate} qps | p99 ms at {rate} qps | answers ok % |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in summaries:
        name = f"{m.name} (anchor)" if m.name in ANCHORS else m.name
        lines.append(
            f"| {name} | {m.qps:,.0f}{m.bound} | {m.cpu_us:.2f} | {m.cpu_us_paced:.2f} "
            f"| {m.p50_ms:.3f} | {m.p99_ms:.3f} | {m.ok_percent:.2f} |"
        )
    return lines


def split_table(summaries: list[Summary], s: Settings) -> list[str]:
    """CPU us/query split into user space and kernel (utime, stime of ``/proc/PID/stat``)."""
    rate = f"{s.latency_qps // 1000}k" if s.latency_qps % 1000 == 0 else str(s.latency_qps)
    lines = [
        f"| server | user us/query, max QPS | kernel us/query, max QPS | user us/query, {rate} qps "
        f"| kernel us/query, {rate} qps |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in summaries:
        lines.append(
            f"| {m.name} | {m.user_us:.2f} | {m.cpu_us - m.user_us:.2f} | {m.user_us_paced:.2f} "
            f"| {m.cpu_us_paced - m.user_us_paced:.2f} |"
        )
    return lines


def detail_table(results: list[ServerResult]) -> list[str]:
    lines = [
        "| server | round | phase | sent | completed | lost | QPS | NOERROR | NXDOMAIN "
        "| other rcodes | avg response B | server CPU s | CPU us/query | user us/query "
        "| server CPU % "
        "| dnsperf CPU % | other load CPU0 % | other load CPU1 % | control plane CPU s "
        "| p50 ms | p99 ms | p99.9 ms |",
        "|---|---:|---|" + "---:|" * 6 + "---|" + "---:|" * 12,
    ]
    for r in results:
        for phase, run in (("max QPS", r.peak), ("paced", r.latency)):
            other = {k: v for k, v in run.rcodes.items() if k not in ("NOERROR", "NXDOMAIN")}
            lat = sorted(run.latencies_us)
            pcts = " | ".join(
                f"{percentile(lat, p) / 1000:.3f}" if lat else "-" for p in (50, 99, 99.9)
            )
            lines.append(
                f"| {r.name} | {r.round} | {phase} | {run.sent} | {run.completed} | {run.lost} "
                f"| {run.qps:,.0f} | {run.rcodes.get('NOERROR', 0)} "
                f"| {run.rcodes.get('NXDOMAIN', 0)} | {other or '-'} | {run.avg_response} "
                f"| {run.server_cpu_s:.2f} | {run.cpu_us_per_query:.2f} "
                f"| {run.user_us_per_query:.2f} | {100 * share(run.server_cpu_s, run):.0f} "
                f"| {100 * share(run.dnsperf_cpu_s, run):.0f} "
                f"| {100 * run.other_cpu.get(0, 0):.0f} | {100 * run.other_cpu.get(1, 0):.0f} "
                f"| {run.control_cpu_s:.2f} | {pcts} |"
            )
    return lines


def spread_line(summaries: list[Summary]) -> str:
    """Round-to-round min-max per server: the noise floor the comparison has to beat."""
    parts = []
    for m in summaries:
        fmt = {"QPS": ",.0f", "CPU us/query": ".2f", "paced CPU us/query": ".2f", "p99 ms": ".3f"}
        ranges = ", ".join(f"{k} {lo:{fmt[k]}}-{hi:{fmt[k]}}" for k, (lo, hi) in m.spread.items())
        parts.append(f"{m.name}: {ranges}")
    return "Spread over rounds (min-max): " + "; ".join(parts) + "."


def verdict(summaries: list[Summary], latency_qps: int = 10_000) -> list[str]:
    """SPEC 9's DNS targets for sixpn, against each anchor of the same run (medians over rounds);
    and issue 16's paced comparison (CPU per query at the paced rate, one wake-up per query)."""
    by = {m.name: m for m in summaries}
    anchors = [by[a] for a in ANCHORS if a in by]
    if "sixpn" not in by or not anchors:
        return ["No verdict: the SPEC 9 comparison needs sixpn and at least one anchor."]
    six = by["sixpn"]
    checks: list[tuple[str, bool, str]] = []
    for a in anchors:
        who = ANCHORS[a.name]
        checks += [
            (
                f"CPU us/query at max QPS <= {who}'s",
                six.cpu_us <= a.cpu_us,
                f"{six.cpu_us:.2f} vs {a.cpu_us:.2f}, {six.cpu_us / a.cpu_us:.2f}x",
            ),
            (f"QPS >= {who}'s", six.qps >= a.qps, f"{six.qps:,.0f} vs {a.qps:,.0f}"),
        ]
    anchor_p99 = "; ".join(f"{ANCHORS[a.name]} {a.p99_ms:.3f} ms" for a in anchors)
    checks += [
        (
            f"p99 at {latency_qps} qps <= {P99_TARGET_MS} ms",
            six.p99_ms <= P99_TARGET_MS,
            f"{six.p99_ms:.3f} ms; {anchor_p99}",
        ),
        ("answers ok 100%", six.ok_percent >= 100.0, f"{six.ok_percent:.2f}%"),
    ]
    lines = [f"- {'PASS' if ok else 'FAIL'}: {what} ({detail})" for what, ok, detail in checks]
    for a in anchors:
        who = ANCHORS[a.name]
        ok = six.cpu_us_paced <= a.cpu_us_paced
        lines.append(
            f"- {'PASS' if ok else 'FAIL'} (issue 16, not SPEC 9's wording): CPU us/query at "
            f"{latency_qps} qps <= {who}'s ({six.cpu_us_paced:.2f} vs {a.cpu_us_paced:.2f}, "
            f"{six.cpu_us_paced / a.cpu_us_paced:.2f}x)"
        )
    for a in anchors:
        who = ANCHORS[a.name]
        if six.avg_response != a.avg_response:
            lines.append(
                f"- NOTE: average response size differs: sixpn {six.avg_response} B, {who} "
                f"{a.avg_response} B for the same queries: compare the answers' shape."
            )
        lo, hi = a.spread["CPU us/query"]
        if a.cpu_us < six.cpu_us <= a.cpu_us + (hi - lo):
            lines.append(
                f"- NOTE: sixpn's CPU us/query at max QPS is within {who}'s own round-to-round "
                "spread."
            )
        lo, hi = a.spread["paced CPU us/query"]
        if a.cpu_us_paced < six.cpu_us_paced <= a.cpu_us_paced + (hi - lo):
            lines.append(
                f"- NOTE: sixpn's paced CPU us/query is within {who}'s own round-to-round spread."
            )
        if a.p99_ms > P99_TARGET_MS:
            lines.append(f"- NOTE: {who}'s p99 is over the target too: likely a noisy machine.")
    if all("client" in m.bound for m in [six, *anchors]):
        lines.append("- NOTE: every QPS figure hit dnsperf's own limit: compare CPU us/query.")
    return lines


def profile_section(profiles: list[Profile], summaries: list[Summary], s: Settings) -> list[str]:
    """Where the servers' CPU goes in the paced phase, from the samplers (not measured)."""
    if not profiles:
        return []
    perfs = {p.server: p.paths for p in profiles if p.tool == "perf" and p.paths and not p.error}
    measured = {m.name: m.cpu_us_paced for m in summaries}
    profiled = ", ".join(
        f"{p.server} {p.run.cpu_us_per_query:.2f}" for p in profiles if p.tool == "perf" and p.run
    )
    out = [
        f"## Where the CPU goes at {s.latency_qps} qps (profiles, not measured)",
        "",
        "Each server started once more after the rounds and given the paced phase again under "
        "perf, sixpn once more under py-spy; the sampler attached to the server's PID and "
        "pinned to CPU 1 with dnsperf. perf's samples by path: each path's share of the "
        "server's samples, and that share of its measured CPU us/query at the paced rate "
        "(median over rounds; the profiled phases themselves read "
        f"{profiled} us/query, sampler and that moment's neighbours included):",
        "",
        *path_table(perfs, measured),
        "",
    ]
    for p in profiles:
        if p.server != "sixpn" and not p.error:
            continue
        cost = (
            f" CPU us/query in this phase {p.run.cpu_us_per_query:.2f} (with the sampler), "
            f"p99 {latency_ms(p.run, 99):.3f} ms."
            if p.run
            else ""
        )
        out += [f"### {p.server}, {p.tool}", "", f"`{' '.join(p.cmd)}`.{cost}", ""]
        out += [p.error] if p.error else p.lines
        out += ["", f"Raw: `{p.raw.name}` in the output directory.", ""]
    return out


def markdown(
    results: list[ServerResult],
    data: ds.Dataset,
    records: dict[ds.RecordKey, list[str]],
    s: Settings,
    lines: list[str],
    note: str,
    stamp: str,
    checked: list[str] | None = None,
    profiles: list[Profile] | None = None,
) -> str:
    versions = tool_versions()
    summaries = summarize(results)
    machines = sum(len(m) for m in data.apps.values())
    total = sum(w for _, w in ds.QUERY_MIX)
    mix = ", ".join(f"{kind} {round(100 * w / total)}%" for kind, w in ds.QUERY_MIX)
    out = [
        f"# DNS benchmark {stamp}",
        "",
        f"- Machine: Linux {platform.release()}, {cpu_model()}; server pinned to CPU 0, dnsperf "
        "to CPU 1, both in a fresh network namespace.",
        f"- Tools: dnsperf {versions['dnsperf']}, Unbound {versions['unbound']}, Knot DNS "
        f"{versions['knot']}.",
        f"- Data (seed {data.seed}): created through the control plane's API (`sixpn server`, "
        f"SQLite, Unix socket) and read back: org `{data.org}`, network {data.net_id}, "
        f"{len(data.apps)} apps, {machines} started machines on {len(data.hosts)} hosts; "
        f"{len(records)} records (Unbound's local-data and Knot's zone file derived from them); "
        f"{len(lines)} query lines ({mix}); client {data.client_address} -> "
        f"[{ds.SERVER_ADDRESS}]:53, EDNS on.",
        "- The control plane runs outside the namespace, unpinned, for the whole run; sixpn "
        "follows its change stream, idle while measuring (its CPU per phase is in the details: "
        "'control plane CPU s').",
        f"- Per server and round: warm-up {s.warmup:g} s, max QPS {s.duration:g} s "
        f"(-q {s.outstanding} -c {s.clients}), paced {s.duration:g} s at {s.latency_qps} qps; "
        f"{s.rounds} round(s), servers alternating; nice {s.nice}; paced phase "
        + ("under SCHED_RR 1 (server and dnsperf)." if s.rt else "under plain CFS."),
    ]
    if note:
        out.append(f"- {note}")
    out += [f"- {line}" for line in checked or []]
    out += ["", *main_table(summaries, s), ""]
    out += [
        "Where it goes, user space against kernel (utime and stime of the server's PID; the "
        "kernel's split of the same total, tick-sampled, medians over rounds):",
        "",
        *split_table(summaries, s),
        "",
    ]
    out += [
        *([spread_line(summaries), ""] if s.rounds > 1 else []),
        "## SPEC 9 verdict",
        "",
        *verdict(summaries, s.latency_qps),
        "",
        *profile_section(profiles or [], summaries, s),
        "## Details",
        "",
        *detail_table(results),
        "",
        "Commands (round 1):",
        "",
    ]
    for r in results:
        if r.round == 1:
            out += [
                f"- {r.name} server: `{' '.join(r.command)}` (the accounted PID runs `{r.exe}`)",
                f"- {r.name} max QPS: `{' '.join(r.peak.cmd)}`",
                f"- {r.name} paced: `{' '.join(r.latency.cmd)}`",
            ]
    out += [
        "",
        "## How to read this",
        "",
        "- CPU us/query is the fair comparison: on 2 cores dnsperf's own limit is near the "
        "servers' speed, so QPS may say more about the client (see 'client-bound').",
        "- Latency is dnsperf's own send-to-receive time (microsecond resolution): it includes "
        "both kernel loopback paths and dnsperf's scheduling, not the server alone.",
        "- 'other load' is busy time on that CPU that was neither the server nor dnsperf "
        "(other processes, interrupts): high values mean a noisy run; rerun or use more rounds.",
        "",
    ]
    return "\n".join(out)


def result_json(r: ServerResult) -> dict[str, Any]:
    def run_json(run: PerfRun) -> dict[str, Any]:
        lat = sorted(run.latencies_us)
        return {
            "cmd": run.cmd,
            "wall_s": run.wall_s,
            "sent": run.sent,
            "completed": run.completed,
            "lost": run.lost,
            "qps": run.qps,
            "rcodes": dict(run.rcodes),
            "avg_response": run.avg_response,
            "server_cpu_s": run.server_cpu_s,
            "cpu_us_per_query": run.cpu_us_per_query,
            "server_user_s": run.server_user_s,
            "user_us_per_query": run.user_us_per_query,
            "dnsperf_cpu_s": run.dnsperf_cpu_s,
            "other_cpu": run.other_cpu,
            "control_cpu_s": run.control_cpu_s,
            "latency_us": {str(p): percentile(lat, p) for p in (50, 90, 99, 99.9)} if lat else {},
            "bad_answers": run.bad_answers,
        }

    return {
        "server": r.name,
        "round": r.round,
        "command": r.command,
        "exe": r.exe,
        "answers_ok_percent": ok_percent(r),
        "max_qps": run_json(r.peak),
        "paced": run_json(r.latency),
    }

"""The Markdown report of ``ha_bench.py`` (pure: results in, text out)."""

from __future__ import annotations

import math
import statistics
from typing import Any

from ha_load import pct

LABELS = {
    "sqlite": "SQLite, 1 server (anchor)",
    "etcd-1": "etcd on disk, 1 replica",
    "etcd-2": "etcd on disk, 2 replicas",
    "etcd-tmpfs-1": "etcd on tmpfs, 1 replica",
    "before-sqlite": "before 5b78f81: SQLite (one counter key, in-process lock)",
    "after-sqlite": "after: SQLite",
    "after-etcd-1": "after: etcd on disk, 1 replica",
    "after-etcd-2": "after: etcd on disk, 2 replicas",
}


def f(x: float, digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def cpu(cells: list[dict[str, Any]]) -> str:
    """CPU ms per create of the clients / the server(s) / etcd, then the other load (%)."""
    parts = []
    for key in ("client_ms_per_op", "server_ms_per_op", "etcd_ms_per_op"):
        parts.append(f(statistics.median(c[key] for c in cells), 2))
    return " / ".join(parts) + f" | {statistics.median(c['other_load_pct'] for c in cells):.0f}"


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    a = r["args"]
    out = [
        f"# Control plane on SQLite and on etcd ({r['stamp']})",
        "",
        f"Machine: Linux {m['kernel']}, Debian {m['debian']}, {m['cpus']} x {m['cpu']}, "
        f"{m['memory']}; Python {m['python']}, SQLite {m['sqlite']}, {m['etcd']}; sixpn at "
        f"git {m['git_head']}. Load average at the start: {m['loadavg_start']}.",
        f"Work directory (SQLite files, the disk etcd cluster): {m['work_dir_fs']}; the tmpfs "
        f"etcd cluster: {m['tmpfs_etcd_fs']}. A 4 KiB append + fdatasync in the work directory: "
        f"p50 {m['fsync_ms']['p50']:.3f} ms, p99 {m['fsync_ms']['p99']:.3f} ms. "
        f"Run: {'--quick, ' if a['quick'] == 'True' else ''}"
        f"rounds {a['rounds']}, {a['creates']} creates per cell and round, {a['orgs']} orgs x "
        f"{a['org_rounds']}, {a['samples']} follower samples, {a['trials']} failover trials of "
        f"each kind; {r.get('seconds', 0):.0f} s in all.",
        "",
    ]
    out += creates_table(r["creates"])
    out += orgs_table(r["orgs"], r.get("before_commit", "?"))
    out += follower_table(r["follower"])
    out += failover_table(r["failover"])
    out += ["## Distinct IDs at the end", ""]
    for store, d in r.get("distinct_after", {}).items():
        out.append(f"- {LABELS[store]}: {fmt_distinct(d)}")
    out.append("")
    return "\n".join(out)


def fmt_distinct(d: dict[str, Any]) -> str:
    if "error" in d:
        return f"not checked ({d['error']})"
    ok = d["networks"] == d["distinct_net_ids"] and d["machines"] == d["distinct_addresses"]
    return (
        f"{d['networks']} networks / {d['distinct_net_ids']} distinct IDs, {d['machines']} "
        f"machines / {d['distinct_addresses']} distinct addresses: {'ok' if ok else 'DUPLICATES'}"
    )


def creates_table(cells: list[dict[str, Any]]) -> list[str]:
    out = [
        "## 1. Machine creates through the API",
        "",
        "creates/s: median over rounds (min-max); p50/p99: nearest rank over every round's "
        "creates; CPU: milliseconds of CPU per create spent by the clients (this process) / the "
        "server(s) / the etcd members (medians over rounds); other: the rest of the machine's "
        "busy time in the same interval, anyone's (% of one core of 200%).",
        "",
        "| clients | store | creates/s | spread | p50 ms | p99 ms | errors | CPU ms: clients / "
        "server / etcd | other % |",
        "|---:|---|---:|---|---:|---:|---:|---|---:|",
    ]
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["clients"], c["store"]), []).append(c)
    order = list(LABELS)
    for (clients, store), group in sorted(
        groups.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]))
    ):
        rates = [g["per_s"] for g in group]
        lat = [x for g in group for x in g["latencies_ms"]]
        errors = sum(g["errors"] for g in group)
        out.append(
            f"| {clients} | {LABELS[store]} | {f(statistics.median(rates))} | "
            f"{f(min(rates))}-{f(max(rates))} | {f(pct(lat, 50), 2)} | {f(pct(lat, 99), 2)} | "
            f"{errors} | {cpu(group)} |"
        )
    firsts = [e for c in cells for e in c["first_errors"]]
    if firsts:
        out += ["", "First errors: " + "; ".join(sorted(set(firsts))[:5])]
    return [*out, ""]


def orgs_table(orgs: dict[str, Any], before: str) -> list[str]:
    runs = orgs["runs"]
    n = runs[0]["ok"] + runs[0]["errors"] if runs else 0
    out = [
        f"## 2. {n} organizations created by 32 clients at once",
        "",
        f"*before* runs the code of {before[:10]} (the commit before 5b78f81) from a git "
        "worktree; the rest run this tree. Time: median over rounds (each round's in "
        "brackets); p50/p99 over every round's creates.",
        "",
        "| code and store | total s | orgs/s | p50 ms | p99 ms | errors | CPU ms: clients / "
        "server / etcd | other % |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(run["variant"], []).append(run)
    for variant in (v for v in LABELS if v in groups):
        group = groups[variant]
        walls = [g["wall_s"] for g in group]
        lat = [x for g in group for x in g["latencies_ms"]]
        each = ", ".join(f(w, 2) for w in walls)
        out.append(
            f"| {LABELS[variant]} | {f(statistics.median(walls), 2)} ({each}) | "
            f"{f(statistics.median(g['per_s'] for g in group))} | {f(pct(lat, 50), 1)} | "
            f"{f(pct(lat, 99), 1)} | {sum(g['errors'] for g in group)} | {cpu(group)} |"
        )
    out += ["", "Distinct IDs afterwards:"]
    for variant, d in orgs["distinct"].items():
        out.append(f"- {LABELS[variant]}: {fmt_distinct(d)}")
    firsts = [e for g in runs for e in g["first_errors"]]
    if firsts:
        out += ["", "First errors: " + "; ".join(sorted(set(firsts))[:5])]
    return [*out, ""]


def follower_table(cases: list[dict[str, Any]]) -> list[str]:
    out = [
        "## 3. From an acknowledged create to the follower's event",
        "",
        "One writer creates organizations one at a time; a change-stream follower "
        "(`Client.follow`) in the same process stamps each org's event. Negative: the event "
        "arrived before the create's answer.",
        "",
        "| writer -> follower | samples | p50 ms | p99 ms | min ms | max ms | negative | missed "
        "| create p50 ms | from send p50 / p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in cases:
        out.append(
            f"| {c['label']} | {c['samples']} | {f(c['p50_ms'], 2)} | {f(c['p99_ms'], 2)} | "
            f"{f(c['min_ms'], 2)} | {f(c['max_ms'], 2)} | {c['negative']} | {len(c['missed'])} "
            f"| {f(c['create_p50_ms'], 2)} | {f(c['from_send_p50_ms'], 2)} / "
            f"{f(c['from_send_p99_ms'], 2)} |"
        )
    return [*out, ""]


def failover_table(trials: list[dict[str, Any]]) -> list[str]:
    out = [
        "## 4. Failover: 4 clients creating through `URL_A,URL_B` (etcd on disk, 2 replicas)",
        "",
        "Gaps are intervals without an acknowledged create. *Longest*: in the whole trial (what "
        "a client saw). *Before the kill*: the longest in the warm-up, no fault: the machine's "
        "noise floor. *After the kill*: the longest that ends after the kill and begins "
        "before 1 s past it, and when it began (ms after the kill: creates the leader had "
        "committed may still be answered just after it); kill -> flowing: to its end. Lost: "
        "acknowledged creates missing from the store after the restart; applied: failed "
        "creates the store holds all the same. Slowest: the longest one create took "
        "(acknowledged or failed), and when it was sent (ms after the kill).",
        "",
        "| fault | # | longest gap ms | before the kill | after the kill | began at | kill -> "
        "flowing ms | acked (before / after) | failed (applied) | lost | slowest create ms "
        "(sent at) | restart s |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---|---:|",
    ]
    for t in trials:
        out.append(
            f"| {t['fault']} | {t['trial']} | {f(t['longest_gap_ms'])} | "
            f"{f(t['longest_gap_before_fault_ms'])} | {f(t['longest_gap_after_fault_ms'])} | "
            f"{f(t['after_gap_starts_ms'])} | {f(t['fault_to_flowing_ms'])} | {t['acked']} "
            f"({t['acked_before_fault']} / {t['acked_after_fault']}) | {t['errors']} "
            f"({t['applied_unacked']}) | "
            f"{len(t['lost'])} | {f(t['slowest_create_ms'])} {t['slowest_create_outcome']} "
            f"({f(t['slowest_create_sent_ms'])}) | {f(t['restored_s'])} |"
        )
    kinds = sorted({e for t in trials for e in t["first_errors"]})
    if kinds:
        out += ["", "Failed creates (first of each trial):", ""]
        out += [f"- `{e}`" for e in kinds[:8]]
    return [*out, ""]

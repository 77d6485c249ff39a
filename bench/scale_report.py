"""The Markdown report of ``scale_bench.py``: tables by fleet size, SPEC 9 verdicts, profiles.

Every size is measured in ``--rounds`` fresh processes, sizes alternating; a cell is the median
over rounds (with min-max where it says so); per change, each round's median over its changes,
then the median of those. Times marked CPU are CPU time (the measuring thread's, plus the
server's process for the GET), which other sessions' load on a shared machine inflates far less
than wall time. Memory is per machine in the store (destroyed ones included: their records are
in the snapshot too).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

BUILD_TARGET_S = 2.0
MEMORY_TARGET_B = 1024
FLAT_FACTOR = 2.0  # "independent of fleet size": largest size's median at most this x smallest's
KINDS = ("machine created", "machine stopped", "machine destroyed", "app added")
AGENT_KINDS = (*KINDS, "machine created here")


def med(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    if len(values) < 2:
        return fmt.format(values[0])
    return f"{fmt.format(med(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def per_machine(size: dict[str, Any], key: str) -> list[float]:
    out = []
    for r in size["dns"]:
        value = r["rss"][key]
        if value is not None:
            out.append((value - r["rss"]["base"]) / r["machines"])
    return out


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def flat(small: float, large: float) -> str:
    factor = large / small if small else float("inf")
    return f"{verdict(factor <= FLAT_FACTOR)} (x{factor:.1f} from the smallest to the largest)"


def dns_change(size: dict[str, Any], kind: str, part: str) -> float:
    """Median over rounds of each round's median of ``part`` for changes of ``kind`` (us).
    The drop of kept responses ("forget") from the rounds whose server had answered every
    name first (the others kept only what the changes themselves asked)."""
    rounds = [r for r in size["dns"] if r.get("changes")]
    if part in ("forget", "kept"):
        rounds = [r for r in rounds if r.get("answer_all")] or rounds
    return med([r["changes"][kind][part]["median"] for r in rounds])


def agent_change(
    size: dict[str, Any], kind: str, stat: str = "median", part: str = "desired_plan_ms"
) -> float:
    return med([r["changes"][kind][part][stat] for r in size["agent"]])


# Each kind's changes that moved the host's state and those that moved nothing, apart: the
# share that moves grows with the fleet, so a median over both compares two mixes, not costs.
AGENT_PARTS = {"moved": "moved_ms", "moved nothing": "still_ms"}


def agent_cases(sizes: list[dict[str, Any]]) -> list[str]:
    """``"<kind>, <moved|moved nothing>"`` for every kind and part measured at every size
    (older reports, without the split: the kinds)."""
    cases = [
        f"{kind}, {what}"
        for kind in AGENT_KINDS
        for what, part in AGENT_PARTS.items()
        if all(
            r["changes"][kind].get(part) for s in sizes for r in s["agent"] if kind in r["changes"]
        )
    ]
    return cases or list(AGENT_KINDS)


def agent_case(size: dict[str, Any], case: str, stat: str = "median") -> float:
    kind, _, what = case.rpartition(", ")
    if not kind:
        return agent_change(size, case, stat)
    part = AGENT_PARTS[what]
    return med([r["changes"][kind][part][stat] for r in size["agent"] if r["changes"][kind][part]])


def agent_stat(size: dict[str, Any], key: str) -> float:
    return med([r[key]["median"] for r in size["agent"]])


def answered(size: dict[str, Any]) -> dict[str, Any] | None:
    return next((r["answer_all"] for r in size["dns"] if r.get("answer_all")), None)


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    sizes = report["sizes"]
    dirty = f" with uncommitted changes in {len(m['git_dirty'])} file(s) of src/"
    lines = [
        f"# Scale benchmark, {report['started']}",
        "",
        f"Machine: Debian {m['debian']}, Linux {m['kernel']}, {m['cpus']} x {m['cpu']}, "
        f"{m['memory']}; Python {m['python']}, pydantic {m['pydantic']}; sixpn at git "
        f"`{m['git_head']}`{dirty if m['git_dirty'] else ''}. Load average at the start "
        f"{m['loadavg_start'].split()[0]}, at the end {m['loadavg_end'].split()[0]}. Run: "
        f"`scale_bench.py {' '.join(report['argv'])}`, {report['seconds']:.0f} s.",
        "",
        "## Fleets (bench/fleetgen.py into SQLite)",
        "",
        "| machines | orgs | networks | apps | hosts | peers | keys | snapshot MiB "
        "| generated in s | load average over the DNS rounds |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sizes:
        g, k = s["generate"], s["generate"]["by_kind"]
        loads = ", ".join(r.get("loadavg", "?") for r in s["dns"])
        lines.append(
            f"| {s['size']:,} | {k['org']:,} | {k['network']:,} | {k['app']:,} | {k['host']:,} "
            f"| {k.get('peer', 0):,} | {g['keys']:,} | {s['dns'][0]['snapshot_bytes'] / 2**20:.1f} "
            f"| {g['seconds']['total']:.1f} | {loads} |"
        )
    lines += dns_tables(sizes)
    lines += agent_tables(sizes)
    lines += verdicts(sizes)
    lines += profiles(sizes[-1])
    return "\n".join(lines) + "\n"


def dns_tables(sizes: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "## DNS: full build (median of rounds, min-max)",
        "",
        "GET = `GET /v1/snapshot`: wall, and CPU of the server process (its assembly and sending) "
        "+ the client's; build = `parse_snapshot` + `View.from_snapshot` + `Zone.load`; "
        "end to end = GET + build; anchor = `json.loads` of the same bytes (wall). Server "
        "assembly = `feed.snapshot` on the SQLite file in a process of its own (CPU).",
        "",
        "| machines | server assembly s | GET s | GET CPU s (server + client) | parse s "
        "| view s | zone s | build s | build CPU s | end to end s | end to end CPU s "
        "| anchor json.loads s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sizes:
        sec = [r["seconds"] for r in s["dns"]]

        def cell(part: str, sec: list[dict[str, float]] = sec) -> str:
            return spread([x[part] for x in sec], "{:.3f}")

        get_cpu = med([x["get_cpu_server"] + x["get_cpu_client"] for x in sec])
        lines.append(
            f"| {s['size']:,} | {s['assembly']['snapshot_cpu_s']['median']:.3f} | {cell('get')} "
            f"| {get_cpu:.2f} | {cell('parse')} | {cell('view')} | {cell('zone')} "
            f"| {cell('build')} | {cell('build_cpu')} | {cell('end_to_end')} "
            f"| {cell('end_to_end_cpu')} | {cell('anchor_json_loads')} |"
        )
    lines += [
        "",
        "## DNS: resident memory per machine (VmRSS over the baseline after imports)",
        "",
        "| machines | with the snapshot held | after gc | as kept (gc, freeze, malloc_trim) | "
        "peak | settle ms | answering every name once adds |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sizes:
        aa = answered(s)
        trim_ms = [1e3 * r["seconds"].get("malloc_trim", 0.0) for r in s["dns"]]
        added = (
            f"{aa['rss_added'] / s['dns'][0]['machines']:.0f} B ({aa['names']:,} names)"
            if aa
            else "-"
        )
        lines.append(
            f"| {s['size']:,} | {spread(per_machine(s, 'loaded'), '{:.0f}')} "
            f"| {spread(per_machine(s, 'after_gc'), '{:.0f}')} "
            f"| {spread(per_machine(s, 'after_trim'), '{:.0f}')} "
            f"| {spread(per_machine(s, 'peak'), '{:.0f}')} | {spread(trim_ms, '{:.1f}')} "
            f"| {added} |"
        )
    lines += [
        "",
        "## DNS: one change (CPU microseconds; median of the rounds' medians)",
        "",
        "decode = `parse_line` of the change as streamed; apply = `View.apply` + `Zone.apply`; "
        "drop = what the server's next UDP query does first (`DnsServer._forget_changed`: the "
        "kept whole responses of the changed network are dropped), measured in the round whose "
        "server had answered every name once; first answer = the app's name answered again "
        "(computed, encoded, kept). Kept responses: after answering every name once, in all and "
        "in the network holding most. Full GC: one `gc.collect()` with the state loaded, and "
        "after `gc.freeze()`.",
        "",
        "| machines | "
        + " | ".join(f"{k}: decode / apply / drop / first answer" for k in KINDS)
        + " | kept responses (largest network) | full GC ms (frozen) |",
        "|---:|" + "---:|" * (len(KINDS) + 2),
    ]
    for s in sizes:
        cells = [
            f"{dns_change(s, k, 'decode'):.0f} / "
            f"{dns_change(s, k, 'view') + dns_change(s, k, 'zone'):.0f} / "
            f"{dns_change(s, k, 'forget'):.0f} / "
            f"{dns_change(s, k, 'first_answer'):.0f}"
            for k in KINDS
        ]
        aa = answered(s)
        kept = f"{aa['kept']:,} ({aa['kept_per_network_max']:,})" if aa else "-"
        gc_ms = med([1e3 * r["seconds"]["gc_full"] for r in s["dns"]])
        frozen = med([1e3 * r["seconds"]["gc_full_frozen"] for r in s["dns"]])
        lines.append(
            f"| {s['size']:,} | " + " | ".join(cells) + f" | {kept} | {gc_ms:.1f} ({frozen:.1f}) |"
        )
    return lines


def agent_tables(sizes: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "## Agent: desired state and plans (CPU milliseconds, median of rounds)",
        "",
        "| machines | dense host: machines / networks / mesh peers | desired_state | "
        "kept state: index built | first resync plan (ops) | idle resync: rebuild + plan | "
        "typical host: machines, desired_state | full GC ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sizes:
        a = s["agent"][0]
        lines.append(
            f"| {s['size']:,} | {a['host_machines']:,} / {a['host_networks']:,} / "
            f"{a['host_wg_peers']:,} | {agent_stat(s, 'build_ms'):.1f} | "
            f"{agent_stat(s, 'kept_load_ms'):.1f} | "
            f"{agent_stat(s, 'first_resync_plan_ms'):.1f} ({a['first_resync_ops']:,}) | "
            f"{agent_stat(s, 'idle_resync_ms'):.1f} | {a['typical_host_machines']}, "
            f"{agent_stat(s, 'typical_build_ms'):.1f} | "
            f"{med([r['gc_full_ms'] for r in s['agent']]):.0f} |"
        )
    lines += [
        "",
        "## Agent: one change (taken into the kept state, planned if it moved: CPU ms, "
        "median / p90 of the rounds; elsewhere in the fleet unless 'here')",
        "",
        *median_p90_table(sizes, list(AGENT_KINDS), agent_change),
    ]
    cases = agent_cases(sizes)
    if cases != list(AGENT_KINDS):
        lines += [
            "",
            "The same changes apart, those that moved the host's state and those that moved "
            "nothing (CPU ms, median / p90):",
            "",
            *median_p90_table(sizes, cases, agent_case),
        ]
    lines += [
        "",
        "The way before (core/incremental.py): the desired state rebuilt from the whole view "
        "for every change, compared with the last, planned (CPU ms, median); and the share of "
        "changes that moved the host's state:",
        "",
        "| machines | " + " | ".join(AGENT_KINDS) + " |",
        "|---:|" + "---:|" * len(AGENT_KINDS),
    ]
    for s in sizes:
        cells = []
        for k in AGENT_KINDS:
            moved = 100 * med([r["changes"][k]["changed_share"] for r in s["agent"]])
            cells.append(f"{agent_change(s, k, part='rebuild_ms'):.1f}, {moved:.0f}%")
        lines.append(f"| {s['size']:,} | " + " | ".join(cells) + " |")
    return lines


Cost = Callable[[dict[str, Any], str, str], float]  # (size, column, stat) -> ms


def median_p90_table(sizes: list[dict[str, Any]], columns: list[str], cost: Cost) -> list[str]:
    """A table of ``cost(size, column, "median")`` / its p90, a row per fleet size."""
    return [
        "| machines | " + " | ".join(columns) + " |",
        "|---:|" + "---:|" * len(columns),
        *(
            f"| {s['size']:,} | "
            + " | ".join(f"{cost(s, c, 'median'):.3f} / {cost(s, c, 'p90'):.3f}" for c in columns)
            + " |"
            for s in sizes
        ),
    ]


def verdicts(sizes: list[dict[str, Any]]) -> list[str]:
    small, large = sizes[0], sizes[-1]
    sec = [r["seconds"] for r in large["dns"]]
    build, build_cpu = med([x["build"] for x in sec]), med([x["build_cpu"] for x in sec])
    e2e, e2e_cpu = med([x["end_to_end"] for x in sec]), med([x["end_to_end_cpu"] for x in sec])
    gc_b = med(per_machine(large, "after_gc"))
    trim = per_machine(large, "after_trim")
    lines = [
        "",
        f"## SPEC 9 verdicts at {large['size']:,} machines",
        "",
        f"- DNS full build under {BUILD_TARGET_S:.0f} s: build {build_cpu:.2f} s CPU "
        f"({build:.2f} s wall): {verdict(build_cpu < BUILD_TARGET_S)}; from the request of the "
        f"snapshot on {e2e_cpu:.2f} s CPU ({e2e:.2f} s wall): {verdict(e2e_cpu < BUILD_TARGET_S)}.",
        f"- DNS memory under {MEMORY_TARGET_B} B/machine, resident, as the server keeps it "
        "after a snapshot (follower.settle: gc, gc.freeze, malloc_trim): "
        + (
            f"{med(trim):.0f} B: {verdict(med(trim) < MEMORY_TARGET_B)} (after a gc alone "
            f"{gc_b:.0f} B)."
            if trim
            else f"malloc_trim unavailable; after a gc {gc_b:.0f} B: "
            f"{verdict(gc_b < MEMORY_TARGET_B)}."
        ),
    ]
    for k in KINDS:
        a, b = (
            sum(dns_change(s, k, part) for part in ("decode", "view", "zone"))
            for s in (small, large)
        )
        lines.append(
            f"- DNS per change, {k} (decode + apply): {a:.0f} -> {b:.0f} us: {flat(a, b)}."
        )
    drops = [
        (dns_change(s, k, "forget"), dns_change(s, k, "kept"))
        for s in (small, large)
        for k in KINDS
    ]
    if all(n for _, n in drops):
        per = [1e3 * us / n for us, n in drops]
        lines.append(
            "- DNS per change, the drop of the changed network's kept responses: "
            f"{min(us for us, _ in drops):.0f}-{max(us for us, _ in drops):.0f} us for a median "
            f"{min(n for _, n in drops):.0f}-{max(n for _, n in drops):.0f} kept responses, "
            f"{min(per):.0f}-{max(per):.0f} ns each: it follows the size of the network that "
            "changed (the generator's largest networks grow with the fleet), not the fleet."
        )
    for case in agent_cases(sizes):
        a, b = agent_case(small, case), agent_case(large, case)
        lines.append(f"- Agent per change, {case}: {a:.3f} -> {b:.3f} ms: {flat(a, b)}.")
    return lines


def profiles(large: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    agent_profile = next((r["profile"] for r in large["agent"] if r.get("profile")), None)
    for title, rows in (
        ("DNS build (parse + view + zone), cProfile", large.get("dns_profile", {}).get("profile")),
        ("the agent's rebuild + plan of the dense host, cProfile", agent_profile),
    ):
        if not rows:
            continue
        lines += [
            "",
            f"## Where the time goes at {large['size']:,} machines: {title}",
            "",
            "| function | calls | own ms | own % | cumulative ms |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| `{r['function']}` | {r['calls']:,} | {r['own_ms']:.1f} | {r['own_pct']:.1f} "
            f"| {r['cum_ms']:.1f} |"
            for r in rows
        ]
    tm = large.get("dns_tracemalloc")
    if tm:
        total = tm["tracemalloc_total"]
        lines += [
            "",
            f"## Live memory of the DNS state at {large['size']:,} machines (tracemalloc, "
            f"{total / tm['machines']:.0f} B/machine in all)",
            "",
            "| allocated at | B/machine | blocks |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| `{r['where']}` | {r['bytes'] / tm['machines']:.0f} | {r['count']:,} |"
            for r in tm["tracemalloc"]
        ]
    a = large["assembly"]
    lines += [
        "",
        f"Server side at {large['size']:,}: `feed.snapshot` on SQLite "
        f"{a['snapshot_cpu_s']['median']:.2f} s CPU, of which the reads (`Store.ranges`, one "
        f"per entity kind) {a['range_s']:.2f} s ({a['entity_keys']:,} entity keys of the "
        f"store's {a['keys']:,}) and the join {a['join_s']:.2f} s.",
    ]
    return lines

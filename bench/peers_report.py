"""The peers benchmark's report: Markdown tables from the results ``peers_bench.py`` gathers.

Pure: results in, text out. Medians over rounds for part A; p50 and p99 by nearest rank over
the samples for parts B and C (with 100 samples, p99 is the second-slowest).
"""

from __future__ import annotations

import math
import os
import statistics
import sys
from typing import Any

BATCH_PEERS = 500  # wg.BATCH_PEERS: one `wg set` process per this many peers


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def med(values: list[float]) -> float:
    return statistics.median(values)


def step(steps: list[dict[str, Any]], key: str) -> float:
    return med([s[key] for s in steps])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f}"


def report(results: dict[str, Any]) -> str:
    g = results["gateway"]
    n = max(g["counts"])
    lines = [
        f"# WireGuard peers on one gateway, {results['stamp']}",
        "",
        f"Backend {g['backend']}; part A medians of {g['rounds']} rounds; times in ms.",
        "",
        "## A. Installing N peers on an empty gateway",
        "",
        "| peers | sixpn: read + plan + apply | of which apply (`wg set` processes) "
        "| sixpn: removing them all | anchor: `wg setconf` of one file (clear) "
        "| anchor: one `wg set` per peer, 1 round | sixpn / setconf: total (apply) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in g["installs"]:
        total, setconf = step(row["sixpn"], "total_s"), med(row["setconf"])
        apply = step(row["sixpn"], "apply_s")
        processes = math.ceil(row["peers"] / BATCH_PEERS)
        lines.append(
            f"| {row['peers']} | {ms(total)} | {ms(apply)} ({processes}) "
            f"| {ms(step(row['remove'], 'total_s'))} | {ms(setconf)} ({ms(med(row['clear']))}) "
            f"| {ms(row['per_peer_s'])} | {total / setconf:.2f} ({apply / setconf:.2f}) |"
        )
    c = g["changes"]
    lines += [
        "",
        f"## A. One peer added or removed on a gateway holding {n}",
        "",
        "| change | read | plan | apply | total | operations | other peers "
        "| anchor: the same `wg set` by hand |",
        "|---|---:|---:|---:|---:|---|---|---:|",
    ]
    for kind, anchor in (("add", "wg_add"), ("remove", "wg_remove")):
        steps = c[kind]
        (ops,) = {tuple(s["ops"]) for s in steps}
        lines.append(
            f"| {kind} one | {ms(step(steps, 'read_s'))} | {ms(step(steps, 'plan_s'))} "
            f"| {ms(step(steps, 'apply_s'))} | {ms(step(steps, 'total_s'))} "
            f"| {', '.join(ops)} | {n} unchanged (`wg show`) | {ms(med(c[anchor]))} |"
        )
    r, pure = g["reads"], results["pure"]
    empty, full = g.get("daemon_kib_empty"), g.get("daemon_kib_full")
    per_peer = "" if not (empty and full) else f", {(full - empty) / n:.1f} KiB per peer"
    lines += [
        "",
        f"- Reading the gateway at {n} peers: `LinuxHost.read()` {ms(med(r['read']))} wall / "
        f"{ms(med(r['read_cpu']))} CPU, of which `wg.read` (dump + parse) "
        f"{ms(med(r['wg_read']))}; `wg show dump` alone {ms(med(r['dump']))}.",
        f"- The agent's pure work per change at {n} peers: `desired_state` "
        f"{ms(pure['desired_s'])}, `plan` {ms(pure['plan_s'])}.",
        f"- wireguard-go VmRSS: empty {mib(empty)} MiB, {n} peers {mib(full)} MiB{per_peer} "
        f"(VmHWM {mib(g.get('daemon_hwm_kib_full'))}); the anchor's daemon with the same peers "
        f"from one `wg setconf`: {mib(g.get('anchor_kib_full'))} MiB.",
    ]
    if "lab" in results:
        lines += lab_lines(results["lab"])
    uname = os.uname()
    lines += ["", f"- {uname.release}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"]
    return "\n".join(lines) + "\n"


def lab_lines(lab: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## B, C. A lab gateway: API call -> installed -> a laptop's first ping",
        "",
        "| gateway holds | samples | API call p50 / p99 | -> installed on the gateway p50 / p99 "
        "| -> file handed out (`installed` in the API) p50 / p99 "
        "| `wg-quick up` p50 | -> first ping p50 / p90 / p99 | first ping > 1 s "
        "(of which the peer was installed after `wg-quick up` began) "
        "| remove: API call -> off the gateway p50 / p99 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    phases = (("samples_empty", "0 + samples"), ("samples_full", f"{lab['peers_full']}"))
    for key, held in phases:
        s = lab[key]

        def both(field: str, s: list[dict[str, Any]] = s) -> str:
            values = [x[field] for x in s]
            return f"{ms(pct(values, 50))} / {ms(pct(values, 99))}"

        up = pct([x["wg_quick_up_s"] for x in s], 50)
        pings = [x["first_ping_s"] for x in s]
        slow = [x for x in s if x["first_ping_s"] > 1]
        late = [x for x in slow if x["installed_s"] > x["up_started_s"]]
        lines.append(
            f"| {held} | {len(s)} | {both('api_s')} | {both('installed_s')} "
            f"| {both('handed_out_s')} | {ms(up)} "
            f"| {ms(pct(pings, 50))} / {ms(pct(pings, 90))} / {ms(pct(pings, 99))} "
            f"| {len(slow)} ({len(late)}) | {both('removed_s')} |"
        )
    e, f, fill = lab["memory_empty"], lab["memory_full"], lab["fill"]
    created = fill["marks"][-1][0] if fill["marks"] else 0
    rates = _rates(fill["marks"])
    lines += [
        "",
        f"- Memory (VmRSS, VmHWM in MiB): the agent {mib(e['agent_rss_kib'])} with no peer, "
        f"{mib(f['agent_rss_kib'])} with {lab['peers_full']} (HWM {mib(f['agent_hwm_kib'])}); "
        f"its wireguard-go {mib(e['daemon_rss_kib'])} -> {mib(f['daemon_rss_kib'])} "
        f"(HWM {mib(f['daemon_hwm_kib'])}).",
        f"- Filling: {created} peers created one by one through the API in "
        f"{fill['created_s']:.0f} s ({rates}); the gateway held them all "
        f"{fill['installed_after_s']:.1f} s after the last create.",
    ]
    return lines


def _rates(marks: list[list[float]]) -> str:
    """Creates per second over the first and the last stretch between marks."""
    if len(marks) < 2:
        return "one stretch"
    (n0, t0), (n1, t1) = marks[0], marks[1]
    (m0, s0), (m1, s1) = marks[-2], marks[-1]
    return (
        f"{n0 / t0:.0f}/s for the first {n0:.0f}, {(n1 - n0) / (t1 - t0):.0f}/s next, "
        f"{(m1 - m0) / (s1 - s0):.0f}/s for the last {m1 - m0:.0f}"
    )

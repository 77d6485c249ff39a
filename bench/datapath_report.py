"""The data-path benchmark's report: the Markdown table, the details, and the SPEC 9 verdicts."""

from __future__ import annotations

import math
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from datapath_fabric import PropSample
from datapath_measure import CpuUsage, IperfResult, PingResult, median, percentile

THROUGHPUT_TARGET = 0.95  # fabric / anchor (SPEC 9)
DNS_TARGET_S = 0.100  # p99, API call -> every host's DNS answering (SPEC 9)
DATA_PATH_TARGET_S = 1.0  # p99, API call -> the data path passing packets (SPEC 9)


@dataclass
class Round:
    number: int
    order: list[str]
    iperf: dict[str, IperfResult] = field(default_factory=dict)
    ping: dict[str, PingResult] = field(default_factory=dict)
    paced: dict[str, IperfResult] = field(default_factory=dict)  # fixed rate: CPU per Gbit


@dataclass
class Run:
    settings: dict[str, object]
    rounds: list[Round]
    prop: list[PropSample]
    prop_hosts: int
    environment: dict[str, str]
    prop_cpu: CpuUsage | None = None  # over the timed creates
    notes: list[str] = field(default_factory=list)


def environment() -> dict[str, str]:
    def out(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        except OSError:
            return "?"
        return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr) else "?"

    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "kernel": platform.release(),
        "cpu": cpu,
        "wireguard-go": out(["wireguard-go", "--version"]),
        "iperf3": out(["iperf3", "--version"]),
        "nft": out(["nft", "--version"]),
        "python": platform.python_version(),
    }


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _spread(values: Sequence[float], digits: int = 3) -> str:
    if len(values) < 2:
        return ""
    return f" ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def median_interval(
    values: Sequence[float], confidence: float = 0.95
) -> tuple[float, float] | None:
    """A distribution-free confidence interval for the median: the k-th smallest and k-th
    largest value, k the largest for which P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2, so
    that it covers the true median with at least ``confidence`` whatever the distribution
    (n = 12 at 95%: the 3rd to the 10th of 12, 96.1%). None when there are too few values
    (fewer than 6 at 95%)."""
    xs = sorted(values)
    n = len(xs)
    tail = (1 - confidence) / 2
    k, below = 0, 0.0
    for j in range(n):
        below += math.comb(n, j) / 2**n  # P(X <= j)
        if below > tail:
            break
        k = j + 1
    return (xs[k - 1], xs[n - k]) if k else None


def throughput_verdict(paired: Sequence[float], target: float = THROUGHPUT_TARGET) -> str:
    """PASS when the median's confidence interval lies at or above ``target``, FAIL when it lies
    below, INCONCLUSIVE when it straddles it: a single round's ratio moves by ±10% on a shared
    2-core machine, so the median of a dozen can fall on either side of a target it is near.
    Without enough rounds for an interval, the median alone decides."""
    if not paired:
        return "n/a"
    interval = median_interval(paired)
    if interval is None:
        return _verdict(median(paired) >= target)
    low, high = interval
    if low >= target:
        return "PASS"
    return "FAIL" if high < target else "INCONCLUSIVE"


def ratios(rounds: Sequence[Round]) -> list[float]:
    """Per round, fabric / anchor: the two ran back to back, so load changes hit both."""
    return [
        r.iperf["fabric"].gbps / r.iperf["anchor"].gbps
        for r in rounds
        if "fabric" in r.iperf and "anchor" in r.iperf and r.iperf["anchor"].gbps > 0
    ]


def _pq(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """(p50, p99, timeouts) of a sample list, None for the timed out ones (counted as +inf)."""
    done = sorted(v for v in values if v is not None)
    misses = len(values) - len(done)
    full = done + [math.inf] * misses
    if not full:
        return None, None, 0
    return percentile(full, 50), percentile(full, 99), misses


def _ms(x: float | None) -> str:
    if x is None:
        return "n/a"
    return "timeout" if math.isinf(x) else f"{x * 1000:.1f}"


def markdown(run: Run, stamp: str) -> str:
    rounds = run.rounds
    lines = [f"# Data path benchmark, {stamp}", ""]
    gbps = {s: [r.iperf[s].gbps for r in rounds if s in r.iperf] for s in ("anchor", "fabric")}
    med = {s: median(v) for s, v in gbps.items()}
    paired = ratios(rounds)
    ratio = median(paired) if paired else float("nan")
    interval = median_interval(paired)
    ci = ""
    if interval:
        ci = f"; 95% CI of the median {interval[0] * 100:.1f}-{interval[1] * 100:.1f}%"

    def rtt(s: str) -> str:
        pings = [r.ping[s] for r in rounds if s in r.ping]
        if not pings:
            return "n/a"
        mins = [p.rtts_ms[0] for p in pings if p.rtts_ms]
        avgs = [p.avg for p in pings]
        p50s = [p.p(50) for p in pings]
        p99s = [p.p(99) for p in pings]
        lost = sum(p.lost for p in pings)
        text = " / ".join(_fmt(median(v)) for v in (mins, avgs, p50s, p99s))
        return text + (f" ({lost} lost)" if lost else "")

    lines += [
        "| measure | anchor: plain wireguard-go | fabric: sixpn | fabric / anchor | SPEC 9 "
        "target | verdict |",
        "|---|---:|---:|---:|---|---|",
        f"| TCP throughput, Gbit/s (median (min-max) of {len(rounds)}) "
        f"| {_fmt(med['anchor'])}{_spread(gbps['anchor'])} "
        f"| {_fmt(med['fabric'])}{_spread(gbps['fabric'])} "
        f"| {_fmt(ratio * 100, 1)}%{_spread([x * 100 for x in paired], 1)}{ci} "
        f"| ≥ 95% of the anchor | {throughput_verdict(paired)} |",
        f"| RTT ms, min / avg / p50 / p99 (medians over rounds) | {rtt('anchor')} "
        f"| {rtt('fabric')} | | | |",
    ]
    cost = {s: [r.paced[s].cost() for r in rounds if s in r.paced] for s in ("anchor", "fabric")}
    if cost["anchor"] and cost["fabric"]:
        paired_cost = [
            r.paced["fabric"].cost() / r.paced["anchor"].cost()
            for r in rounds
            if "fabric" in r.paced and "anchor" in r.paced
        ]
        rate = run.settings["paced_rate"]
        lines.append(
            f"| data-path CPU per Gbit at {rate}bit/s, core-s/Gbit (median (min-max)) "
            f"| {_fmt(median(cost['anchor']), 2)}{_spread(cost['anchor'], 2)} "
            f"| {_fmt(median(cost['fabric']), 2)}{_spread(cost['fabric'], 2)} "
            f"| {_fmt(median(paired_cost) * 100, 0)}%{_spread([x * 100 for x in paired_cost], 0)}"
            " | (none: explains the throughput) | |"
        )
    if run.prop:
        n = len(run.prop)
        dp50, dp99, dp_miss = _pq([s.data_path_s for s in run.prop])
        d50, d99, d_miss = _pq([s.dns_all() for s in run.prop])
        st50, st99, st_miss = _pq([s.stop_dns_all() for s in run.prop])
        post = sorted(s.post_s for s in run.prop)
        dp_ok = None if dp99 is None else dp99 < DATA_PATH_TARGET_S
        dns_ok = None if d99 is None else d99 < DNS_TARGET_S
        stop_ok = None if st99 is None else st99 < DNS_TARGET_S
        where = f"{run.prop_hosts}-host lab, {n} creates"
        lines += [
            f"| create → data path passes packets, ms p50 / p99 ({where}) | | "
            f"{_ms(dp50)} / {_ms(dp99)}{_misses(dp_miss)} | | p99 < 1000 ms | {_verdict(dp_ok)} |",
            f"| create → DNS answers on every host, ms p50 / p99 | | "
            f"{_ms(d50)} / {_ms(d99)}{_misses(d_miss)} | | p99 < 100 ms | {_verdict(dns_ok)} |",
            f"| stop → DNS stops listing it on every host, ms p50 / p99 | | "
            f"{_ms(st50)} / {_ms(st99)}{_misses(st_miss)} | | p99 < 100 ms | "
            f"{_verdict(stop_ok)} |",
            f"| the create POST itself, ms p50 / p99 (not included above) | | "
            f"{_ms(percentile(post, 50))} / {_ms(percentile(post, 99))} | | | |",
        ]
    lines += ["", *_settings(run), "", *_details(run)]
    return "\n".join(lines) + "\n"


def _misses(k: int) -> str:
    return f" ({k} timed out)" if k else ""


def _settings(run: Run) -> list[str]:
    s = run.settings
    env = run.environment
    out = [
        "## Settings",
        "",
        f"- iperf3: one TCP stream over IPv6, `-t {s['seconds']} -O {s['omit']}` "
        f"(the first {s['omit']} s omitted), client → server; ping: `-c {s['pings']} "
        f"-i {s['ping_interval']}` after each iperf3 run, without load.",
        (
            f"- paced run (CPU per Gbit): `-b {s['paced_rate']} -t {s['paced_seconds']} -O 0` "
            "after each ping; data-path CPU = both wireguard-go daemons + both iperf3 ends + "
            "irq/softirq."
            if str(s["paced_rate"]) != "0"
            else "- paced run (CPU per Gbit): none (`--paced-rate 0`)."
        ),
        f"- every data-path process (wireguard-go, iperf3, ping) at nice {s['nice']} in an "
        "autogroup of its own, in both setups.",
        f"- rounds: {len(run.rounds)}, alternating the order (anchor first in odd rounds, "
        f"fabric first in even ones); pinning: `{s['pin']}`"
        + (
            " (client side: iperf3 client and its wireguard-go on CPU 0; server side on CPU 1)"
            if s["pin"] == "split"
            else " (no process pinned, in both setups)"
        ),
        "- anchor: "
        + (
            "wireguard-go between two namespaces of its own on the lab's underlay bridge, "
            "iperf3 in them (no nftables, no forwarding)"
            if s.get("anchor") == "underlay"
            else "wireguard-go between two bare namespaces joined by a veth pair"
        ),
        f"- fabric: 2-host lab (fra, ams), agents' resync every {s['resync']:g} s, br_netfilter "
        "off in the lab's underlay namespace (as the lab builds it); propagation: "
        + (
            f"{run.prop_hosts}-host lab, one probe machine per host, {s['creates']} creates "
            "(+1 untimed warm-up), times from the POST's return"
            if s["creates"]
            else "not measured (`--creates 0`)"
        ),
        f"- load average at start / end: {s.get('load_start', '?')} / {s.get('load_end', '?')}",
        f"- {env['kernel']}, {env['cpu']}, {env['wireguard-go']}, {env['iperf3']}, "
        f"{env['nft']}, Python {env['python']}",
    ]
    out += [f"- NOTE: {n}" for n in run.notes]
    return out


def _details(run: Run) -> list[str]:
    out = [
        "## Every run",
        "",
        "CPU in % of one core over the iperf3 run (2 cores = 200): busy (whole machine), of which "
        "irq+softirq, steal; wireguard-go per side; iperf3 per iperf3's own report; agents + "
        "control plane (fabric only).",
        "",
        "| round | setup | Gbit/s | retr | busy | softirq | steal | wg-go client | wg-go server "
        "| iperf3 snd / rcv | agents+cp | core-s/Gbit max / paced | RTT avg / p99 ms "
        "| busiest other processes |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in run.rounds:
        for name in r.order:
            it = r.iperf.get(name)
            p = r.ping.get(name)
            if it is None:
                continue
            c = it.cpu
            mine = {"iperf3", "wireguard-go"}
            others = ", ".join(
                f"{comm} {pct:.0f}" for comm, _pid, pct in c.top if comm not in mine and pct >= 3
            )
            rtt = f"{_fmt(p.avg)} / {_fmt(p.p(99))}" if p else "n/a"
            paced = r.paced.get(name)
            cost = f"{it.cost():.2f} / {paced.cost():.2f}" if paced else f"{it.cost():.2f} / n/a"
            out.append(
                f"| {r.number} | {name} | {it.gbps:.3f} | {it.retransmits} | {c.busy:.0f} | "
                f"{c.softirq:.0f} | {c.steal:.0f} | "
                f"{c.roles.get('wireguard-go client', 0):.0f} | "
                f"{c.roles.get('wireguard-go server', 0):.0f} | "
                f"{it.sender_cpu:.0f} / {it.receiver_cpu:.0f} | "
                f"{_fmt(c.roles.get('agents + control plane'), 1) if name == 'fabric' else ''} | "
                f"{cost} | {rtt} | {others} |"
            )
    if run.prop:
        out += [
            "",
            *_prop_cpu(run.prop_cpu),
            "Propagation samples (ms from the POST's return; per host in lab order):",
            "",
            "| # | new on | POST | data path | DNS per host | stop POST | stop DNS per host |",
            "|---:|---|---:|---:|---|---:|---|",
        ]
        for i, s in enumerate(run.prop, start=1):
            dns = " ".join(_ms(v if v is not None else math.inf) for v in s.dns_s.values())
            stop = " ".join(_ms(v if v is not None else math.inf) for v in s.stop_dns_s.values())
            dp = _ms(s.data_path_s if s.data_path_s is not None else math.inf)
            out.append(
                f"| {i} | {s.host} | {_ms(s.post_s)} | {dp} | {dns} | {_ms(s.stop_post_s)} "
                f"| {stop} |"
            )
    return out


def _prop_cpu(c: CpuUsage | None) -> list[str]:
    if c is None:
        return []
    top = ", ".join(f"{comm} {pct:.0f}" for comm, _pid, pct in c.top[:6] if pct >= 1)
    return [
        f"CPU over the timed creates ({c.wall_s:.1f} s, % of one core): machine busy "
        f"{c.busy:.0f}, irq+softirq {c.softirq:.0f}; the lab's control plane and agents "
        f"{c.roles.get('lab', 0):.0f} (their short-lived nft/wg/ip children not included), the "
        f"probe helper {c.roles.get('probes', 0):.0f}; busiest processes: {top}.",
        "",
    ]


def summary_json(run: Run) -> dict[str, object]:
    return {
        "settings": run.settings,
        "environment": run.environment,
        "rounds": [
            {
                "round": r.number,
                "order": r.order,
                **{
                    name: {
                        "gbps": it.gbps,
                        "retransmits": it.retransmits,
                        "cpu": {
                            "busy": it.cpu.busy,
                            "softirq": it.cpu.softirq,
                            "steal": it.cpu.steal,
                            "roles": it.cpu.roles,
                            "top": it.cpu.top,
                        },
                        "rtt_ms": r.ping[name].rtts_ms if name in r.ping else [],
                        "paced": (
                            {
                                "gbps": r.paced[name].gbps,
                                "cost_core_s_per_gbit": r.paced[name].cost(),
                                "path_cpu": r.paced[name].path_cpu(),
                            }
                            if name in r.paced
                            else None
                        ),
                    }
                    for name, it in r.iperf.items()
                },
            }
            for r in run.rounds
        ],
        "propagation": [s.__dict__ for s in run.prop],
        "propagation_cpu": run.prop_cpu.__dict__ if run.prop_cpu else None,
        "notes": run.notes,
    }

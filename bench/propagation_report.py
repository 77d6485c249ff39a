"""The propagation benchmark's report: figures, SPEC 9 verdicts, the anchors' published figures,
the Markdown and JSON files and the CDF plot (matplotlib, when the venv has it)."""

from __future__ import annotations

import json
import math
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datapath_measure import CpuUsage, percentile

DNS_TARGET_MS = 50.0
DATA_PATH_TARGET_MS = 250.0
KINDS = ("create", "stop", "destroy")

# Published by the anchors themselves; nothing here measures them.
ANCHORS = (
    (
        "Fly.io, Consul era (one global Consul cluster, then consul-templaterb on every host)",
        "60-120 s",
        'Fly.io\'s engineering blog (the Consul posts, and "Corrosion", 2025)',
    ),
    (
        "Fly.io, Corrosion (gossip, cr-sqlite on every host)",
        '"under a second"',
        'Fly.io\'s engineering blog, "Corrosion" (2025); superfly/corrosion',
    ),
    (
        "headscale (Tailscale control server)",
        "~800 ms batching",
        "`tuning.batch_change_delay` defaults to `800ms` "
        "(juanfont/headscale, hscontrol/types/config.go)",
    ),
    (
        "innernet",
        "60 s polling",
        "its systemd unit runs `innernet up %i --daemon --interval 60` "
        "(tonarino/innernet, client/innernet@.service)",
    ),
)


@dataclass
class Run:
    settings: dict[str, Any]
    env: dict[str, str]
    hosts: list[str]
    regions: dict[str, str]
    changes: list[Any]  # propagation_bench.Change, under the load
    window_s: float
    revisions: int
    cpu: CpuUsage
    load: dict[str, Any]
    stream: dict[str, Any]
    check: dict[str, Any]
    cpu_load_only: CpuUsage | None = None
    runq_wait: dict[str, Any] = field(default_factory=dict)
    fleet: dict[str, Any] = field(default_factory=dict)
    profiles: list[str] = field(default_factory=list)
    quiet: list[Any] = field(default_factory=list)  # the same measured changes, no load


def environment() -> dict[str, str]:
    def out(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        except OSError:
            return "?"
        text = (r.stdout or r.stderr).strip()
        return text.splitlines()[0] if text else "?"

    cpu, mem = "?", "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
                break
    import os

    return {
        "kernel": platform.release(),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "wireguard-go": out(["wireguard-go", "--version"]),
        "python": platform.python_version(),
        "sixpn git": out(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"]),
        "debian": out(["cat", "/etc/debian_version"]),
    }


# -- figures --------------------------------------------------------------------------------


def _ms(x: float | None) -> float:
    return math.inf if x is None else x * 1000


def delays(changes: Sequence[Any], host: str) -> list[float]:
    """Per change: API call sent -> ``host``'s DNS shows it, ms (inf: timed out)."""
    return [_ms(None if c.seen.get(host) is None else c.seen[host] - c.sent) for c in changes]


def every_host(changes: Sequence[Any]) -> list[float]:
    """Per change: API call sent -> the last host's DNS shows it, ms."""
    out = []
    for c in changes:
        seen = list(c.seen.values())
        out.append(math.inf if None in seen else _ms(max(seen) - c.sent))
    return out


def stats(values: Sequence[float]) -> dict[str, Any]:
    s = sorted(values)
    if not s:
        return {"n": 0, "p50": None, "p99": None, "max": None, "timeouts": 0}
    return {
        "n": len(s),
        "p50": percentile(s, 50),
        "p99": percentile(s, 99),
        "max": s[-1],
        "timeouts": sum(1 for v in s if math.isinf(v)),
    }


def figures(run: Run) -> dict[str, Any]:
    by_kind = {k: [c for c in run.changes if c.kind == k] for k in KINDS}
    groups = {
        **by_kind,
        "create+stop": by_kind["create"] + by_kind["stop"],
        "all": run.changes,
        "all, machine on a lab host": [c for c in run.changes if c.host in run.hosts],
        "all, machine on a far host": [c for c in run.changes if c.host not in run.hosts],
    }
    out: dict[str, Any] = {"dns": {}, "per_host": {}}
    for name, cs in groups.items():
        pairs = [v for h in run.hosts for v in delays(cs, h)]
        out["dns"][name] = {"every_host": stats(every_host(cs)), "any_host": stats(pairs)}
        out["per_host"][name] = {h: stats(delays(cs, h)) for h in run.hosts}
    creates = [c for c in by_kind["create"] if c.data_path_from]
    out["data_path"] = stats(
        [_ms(None if c.data_path is None else c.data_path - c.sent) for c in creates]
    )
    out["data_path_after_answer"] = stats(
        [_ms(None if c.data_path is None else c.data_path - c.answered) for c in creates]
    )
    out["api_ms"] = {k: stats([_ms(c.answered - c.sent) for c in cs]) for k, cs in by_kind.items()}
    # the split at the change stream: control plane (sent -> line out) and agents (line -> DNS)
    split_cp, split_agents = [], []
    for c in run.changes:
        seen = list(c.seen.values())
        if c.stream is None or None in seen:
            continue
        split_cp.append(_ms(c.stream - c.sent))
        split_agents.append(_ms(max(seen) - c.stream))
    out["stream_split"] = {"control_plane": stats(split_cp), "agents": stats(split_agents)}
    out["early"] = sum(sum(1 for v in c.early.values() if v) for c in run.changes)
    out["pairs"] = sum(len(c.seen) for c in run.changes)
    lags = [_ms(t - c.sent) for c in run.changes for t in c.first_poll.values() if t is not None]
    out["arm_lag_ms"] = stats(lags)
    measured = len(run.changes)
    out["rates"] = {
        "window_s": run.window_s,
        "measured_per_s": measured / run.window_s if run.window_s else 0.0,
        "revisions_per_s": run.revisions / run.window_s if run.window_s else 0.0,
        "load_per_s": run.load.get("rate"),
    }
    every = out["dns"]["create+stop"]["every_host"]
    every_all = out["dns"]["all"]["every_host"]
    dp = out["data_path"]
    rate_ok = out["rates"]["revisions_per_s"] >= 200
    if run.quiet:
        q_creates = [c for c in run.quiet if c.kind == "create" and c.data_path_from]
        out["quiet"] = {
            "dns": {
                k: stats(every_host([c for c in run.quiet if k in ("all", c.kind)]))
                for k in (*KINDS, "all")
            },
            "data_path": stats(
                [_ms(None if c.data_path is None else c.data_path - c.sent) for c in q_creates]
            ),
            "api_ms": stats([_ms(c.answered - c.sent) for c in run.quiet]),
        }
    out["verdicts"] = {
        "rate_at_least_200": rate_ok,
        "dns_p99_create_stop": _pass(every["p99"], DNS_TARGET_MS),
        "dns_p99_all_kinds": _pass(every_all["p99"], DNS_TARGET_MS),
        "data_path_p99": _pass(dp["p99"], DATA_PATH_TARGET_MS),
        "nothing_lost": not run.check.get("mismatches") and every_all["timeouts"] == 0,
    }
    return out


def _others(cpu: CpuUsage) -> float:
    return max(0.0, cpu.busy - sum(cpu.roles.values()))


def _pass(value: float | None, target: float) -> bool | None:
    return None if value is None else value < target


def _f(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "n/a"
    return "timeout" if math.isinf(x) else f"{x:.{digits}f}"


def _v(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**PASS**" if ok else "**FAIL**")


def profile_summary(
    path: str, top: int = 12
) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    """py-spy's collapsed stacks: (samples, top inclusive %, top self %), by function and file."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n

    def best(d: dict[str, int]) -> list[tuple[str, float]]:
        rows = sorted(d.items(), key=lambda kv: -kv[1])
        return [(k, 100 * v / total) for k, v in rows if v < total][:top]

    return total, best(inclusive), best(own)


def _frame(frame: str) -> str:
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rstrip(")")
    parts = file.split("/")
    short = "/".join(parts[-2:]) if "site-packages" in file or "sixpn" in file else parts[-1]
    return f"{name} ({short})"


# -- Markdown / JSON ------------------------------------------------------------------------


def markdown(run: Run, stamp: str) -> str:
    f = figures(run)
    s, env, r = run.settings, run.env, f["rates"]
    lines = [
        f"# Propagation at rate, {stamp}",
        "",
        f"Machine: {env['cores']} cores ({env['cpu']}), {env['memory']}, Linux {env['kernel']}, "
        f"Debian {env['debian']}, Python {env['python']}, {env['wireguard-go']}; sixpn at "
        f"`{env['sixpn git']}`. Load average {s['load_start']} at the start, {s['load_end']} "
        f"at the end; run {s['run_s']} s.",
        "",
        f"Lab: {len(run.hosts)} hosts ("
        + ", ".join(f"{h} {run.regions[h]}" for h in run.hosts)
        + f"), {run.fleet.get('far_hosts')} more hosts without agent; baseline "
        f"{run.fleet.get('started')} started machines in 10 apps; agents' resync "
        f"{s['resync']:g} s; lab and load at nice {s['nice']}, observers 5 steps above.",
        "",
        f"Measured window {r['window_s']:.1f} s: **{r['revisions_per_s']:.0f} store revisions/s** "
        f"in all (load {_f(r['load_per_s'])} changes/s asked at {s['rate']:g}, measured "
        f"{r['measured_per_s']:.1f}/s, the agents' status reports the rest); "
        f"{len(run.changes)} measured changes ({len(run.changes) // 3} machines created, "
        f"stopped, destroyed, one started every {s['interval']:g} s, at most {s['parallel']} at "
        f"a time; one in {s['lab_every']} on a lab host, where it is wired and the first packet "
        f"to it timed, the others on far hosts); probers ask every {s['poll_ms']:g} ms.",
        "",
        "## API call -> every host's DNS (ms)",
        "",
        '"every host": per change, until the last of the hosts answered the new truth (SPEC 9\'s '
        'figure); "any host": every (change, host) pair.',
        "",
        "| changes | n | every host p50 | p99 | max | any host p50 | p99 | max | timeouts |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in (
        *KINDS,
        "create+stop",
        "all",
        "all, machine on a lab host",
        "all, machine on a far host",
    ):
        e, a = f["dns"][name]["every_host"], f["dns"][name]["any_host"]
        lines.append(
            f"| {name} | {e['n']} | {_f(e['p50'])} | {_f(e['p99'])} | {_f(e['max'])} | "
            f"{_f(a['p50'])} | {_f(a['p99'])} | {_f(a['max'])} | {a['timeouts']} |"
        )
    if "quiet" in f:
        qd = f["quiet"]
        lines += [
            "",
            f"The same lab, observers and measured changes before the load started ("
            f"{len(run.quiet)} changes, no background load), every host p50 / p99 / max ms: "
            + "; ".join(
                f"{k} {_f(qd['dns'][k]['p50'])} / {_f(qd['dns'][k]['p99'])} / "
                f"{_f(qd['dns'][k]['max'])}"
                for k in (*KINDS, "all")
            )
            + f"; first packet {_f(qd['data_path']['p50'])} / {_f(qd['data_path']['p99'])} / "
            f"{_f(qd['data_path']['max'])} (n {qd['data_path']['n']}); the API call p50 "
            f"{_f(qd['api_ms']['p50'])} ms.",
        ]
    lines += [
        "",
        "Per host, all measured changes (ms): p50 / p99 / max",
        "",
        "| host | region | p50 | p99 | max |",
        "|---|---|---:|---:|---:|",
    ]
    for h in run.hosts:
        st = f["per_host"]["all"][h]
        lines.append(
            f"| {h} | {run.regions[h]} | {_f(st['p50'])} | {_f(st['p99'])} | {_f(st['max'])} |"
        )
    dp, dpa = f["data_path"], f["data_path_after_answer"]
    lines += [
        "",
        "## API call -> first packet to the new machine (ms)",
        "",
        f"From another host's machine, a TCP connect every 2 ms until refused or accepted: "
        f"n {dp['n']}, p50 {_f(dp['p50'])}, p99 {_f(dp['p99'])}, max {_f(dp['max'])}, "
        f"timeouts {dp['timeouts']} (from the API's answer: p50 {_f(dpa['p50'])}, p99 "
        f"{_f(dpa['p99'])}).",
        "",
        "## Where the time goes",
        "",
        "| part | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|",
    ]
    for kind in KINDS:
        st = f["api_ms"][kind]
        lines.append(
            f"| the API call itself ({kind}) | {_f(st['p50'])} | {_f(st['p99'])} | "
            f"{_f(st['max'])} |"
        )
    cp, ag = f["stream_split"]["control_plane"], f["stream_split"]["agents"]
    lines += [
        f"| call sent -> the change on the stream (control plane) | {_f(cp['p50'])} | "
        f"{_f(cp['p99'])} | {_f(cp['max'])} |",
        f"| on the stream -> the last host's DNS answers it (agents) | {_f(ag['p50'])} | "
        f"{_f(ag['p99'])} | {_f(ag['max'])} |",
        "",
        f"{f['early']} of {f['pairs']} (change, host) answers showed the change before the API's "
        f"own answer had been read. Watches were armed before the call: the first query went "
        f"out {_f(f['arm_lag_ms']['p50'], 2)} ms (p50) / {_f(f['arm_lag_ms']['max'], 2)} ms "
        f"(max) after the call was sent (negative: before).",
        f"Change stream (a follower of its own): {run.stream.get('revisions')} revisions, "
        f"longest silence {_f((run.stream.get('max_gap_s') or 0) * 1000)} ms.",
        "",
        "## The load",
        "",
    ]
    ld = run.load
    if ld:
        per_s = ld.get("per_second", [])
        lines += [
            f"{ld.get('total')} changes in {ld.get('seconds', 0):.1f} s ({_f(ld.get('rate'))}/s; "
            f"{', '.join(f'{k} {v}' for k, v in ld.get('done', {}).items())}); errors "
            f"{ld.get('errors') or 'none'}; per second min {min(per_s[1:-1] or [0])} max "
            f"{max(per_s[1:-1] or [0])}; latency p50 {_f(ld['latency_ms']['p50'])} / p99 "
            f"{_f(ld['latency_ms']['p99'])} ms; start late p99 {_f(ld['late_ms']['p99'])} ms.",
        ]
    else:
        lines.append("none (`--rate 0`)")
    cpu = run.cpu
    lines += [
        "",
        f"CPU over the measured window, % of one core (200 = both): busy {cpu.busy:.0f}, "
        f"irq+softirq {cpu.softirq:.0f}, steal {cpu.steal:.0f}; "
        + ", ".join(f"{k} {v:.0f}" for k, v in cpu.roles.items())
        + f"; everything else (other sessions, kernel threads) {_others(cpu):.0f}"
        + "; busiest others: "
        + (", ".join(f"{c} ({p}) {v:.0f}" for c, p, v in cpu.top[:4]) or "none"),
        "",
    ]
    if run.cpu_load_only is not None:
        lo = run.cpu_load_only
        lines.append(
            f"The load alone ({lo.wall_s:.1f} s of the warm-up, probers idle): busy {lo.busy:.0f}; "
            + ", ".join(f"{k} {v:.0f}" for k, v in lo.roles.items())
            + f"; everything else {_others(lo):.0f}"
            + (": " + ", ".join(f"{c} ({p}) {v:.0f}" for c, p, v in lo.top[:3]) if lo.top else "")
            + "."
        )
    if run.runq_wait:
        lines += [
            "",
            "Run-queue wait (`/proc/PID/task/*/schedstat`: runnable, not running), ms per second "
            "of wall time, all threads of the role:",
            "",
            "| role | on CPU, measured | waiting, measured | on CPU, load alone "
            "| waiting, load alone |",
            "|---|---:|---:|---:|---:|",
        ]
        m, lo_w = run.runq_wait.get("measured", {}), run.runq_wait.get("load_only", {})
        for role, w in m.items():
            o = lo_w.get(role, {})
            lines.append(
                f"| {role} | {w['run_ms_per_s']:.0f} | {w['wait_ms_per_s']:.0f} | "
                f"{_f(o.get('run_ms_per_s'), 0)} | {_f(o.get('wait_ms_per_s'), 0)} |"
            )
    for path in run.profiles:
        total, inc, own = profile_summary(path)
        lines += [
            "",
            f"py-spy, `{Path(path).name}` ({total} samples at 200 Hz, on CPU only): "
            "inclusive " + "; ".join(f"{k} {v:.0f}%" for k, v in inc[:10]),
            "",
            "self: " + "; ".join(f"{k} {v:.1f}%" for k, v in own[:10]),
        ]
    lines += [
        "",
        "## No change lost or out of order",
        "",
    ]
    chk = run.check
    lines.append(
        f"After the load: {chk.get('questions_per_host')} questions to each of "
        f"{chk.get('hosts')} hosts (`<app>.internal AAAA`, `vms.` and `all.vms.<app>.internal "
        f"TXT` for every app, `<id>.vm.<app>.internal` of {chk.get('destroyed_checked')} "
        f"destroyed machines), store holding {chk.get('machines_in_store')}: "
        + (
            "**every answer matches the store**."
            if not chk.get("mismatches")
            else f"**{len(chk['mismatches'])} mismatches**:"
        )
    )
    lines += [f"- {m}" for m in chk.get("mismatches", [])[:20]]
    v = f["verdicts"]
    e_cs, e_all = f["dns"]["create+stop"]["every_host"], f["dns"]["all"]["every_host"]
    lines += [
        "",
        "## SPEC 9 verdicts",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
        f"| changes arrive at 200/s | {r['revisions_per_s']:.0f} revisions/s | "
        f"{_v(v['rate_at_least_200'])} |",
        f"| create or stop -> every host's DNS, p99 < 50 ms | {_f(e_cs['p99'])} ms | "
        f"{_v(v['dns_p99_create_stop'])} |",
        f"| same with destroys | {_f(e_all['p99'])} ms | {_v(v['dns_p99_all_kinds'])} |",
        f"| create -> data path, p99 < 250 ms | {_f(dp['p99'])} ms | {_v(v['data_path_p99'])} |",
        f"| no change lost or out of order | {len(chk.get('mismatches', []))} mismatches, "
        f"{e_all['timeouts']} timeouts | {_v(v['nothing_lost'])} |",
        "",
        "## Anchors: published, not measured here",
        "",
        "| system | change -> every node | source |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in ANCHORS]
    lines.append("")
    return "\n".join(lines)


def to_json(run: Run) -> dict[str, Any]:
    return {
        "settings": run.settings,
        "env": run.env,
        "figures": figures(run),
        "cpu": asdict(run.cpu),
        "cpu_load_only": asdict(run.cpu_load_only) if run.cpu_load_only else None,
        "runq_wait": run.runq_wait,
        "load": run.load,
        "stream": run.stream,
        "check": run.check,
        "changes": [asdict(c) for c in run.changes],
        "quiet": [asdict(c) for c in run.quiet],
    }


# -- the plot -------------------------------------------------------------------------------


def plot(run: Run, paths: Sequence[Path]) -> list[Path]:
    """CDFs: API call -> every host's DNS per kind, any (change, host) pair, and -> first packet.
    Nothing when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})

    def cdf(ax: Any, values: list[float], label: str, **kw: Any) -> None:
        s = sorted(v for v in values if not math.isinf(v))
        if not s:
            return
        n = len(values)
        ax.step(s, [(i + 1) / n for i in range(len(s))], where="post", label=label, **kw)

    for kind, color in zip(KINDS, ("tab:blue", "tab:orange", "tab:green"), strict=True):
        cs = [c for c in run.changes if c.kind == kind]
        cdf(left, every_host(cs), f"{kind}: every host (n={len(cs)})", color=color)
        pairs = [v for h in run.hosts for v in delays(cs, h)]
        cdf(left, pairs, f"{kind}: each host", color=color, linestyle=":", linewidth=1)
    if run.quiet:
        label = f"all kinds, no load: every host (n={len(run.quiet)})"
        cdf(left, every_host(run.quiet), label, color="grey", linewidth=1.5)
    left.axvline(DNS_TARGET_MS, color="red", linewidth=1, label="SPEC 9: p99 < 50 ms")
    left.axhline(0.99, color="grey", linewidth=0.5)
    left.set_xscale("log")
    left.set_xlabel("API call sent -> DNS answers the new truth (ms)")
    left.set_ylabel("fraction of changes")
    left.set_title("DNS, 5 hosts")
    left.legend(fontsize=7, loc="lower right")
    left.grid(True, which="both", alpha=0.3)
    creates = [c for c in run.changes if c.kind == "create" and c.data_path_from]
    dp = [_ms(None if c.data_path is None else c.data_path - c.sent) for c in creates]
    cdf(right, dp, f"create -> first packet (n={len(dp)})", color="tab:purple")
    q_creates = [c for c in run.quiet if c.kind == "create" and c.data_path_from]
    if q_creates:
        q_dp = [_ms(None if c.data_path is None else c.data_path - c.sent) for c in q_creates]
        cdf(right, q_dp, f"no load (n={len(q_dp)})", color="grey", linewidth=1.5)
    right.axvline(DATA_PATH_TARGET_MS, color="red", linewidth=1, label="SPEC 9: p99 < 250 ms")
    right.axhline(0.99, color="grey", linewidth=0.5)
    right.set_xscale("log")
    right.set_xlabel("API call sent -> first TCP contact from another host (ms)")
    right.set_title("Data path")
    right.legend(fontsize=7, loc="lower right")
    right.grid(True, which="both", alpha=0.3)
    r = figures(run)["rates"]
    load = (str(run.settings.get("load_start", "")).split() or ["?"])[0]
    fig.suptitle(
        f"sixpn propagation at {r['revisions_per_s']:.0f} changes/s in a 5-host lab on 2 shared "
        f"cores (load average {load} at the start)",
        fontsize=10,
    )
    fig.tight_layout()
    made = []
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=110)
        made.append(p)
    plt.close(fig)
    return made


# -- again from a saved report --------------------------------------------------------------


def from_json(path: Path) -> Run:
    """A :class:`Run` from ``propagation-<stamp>.json`` (changes as plain objects)."""
    from types import SimpleNamespace

    d = json.loads(path.read_text())
    hosts = sorted({h for c in d["changes"] for h in c["seen"]})
    return Run(
        settings=d["settings"],
        env=d["env"],
        hosts=hosts,
        regions={},
        changes=[SimpleNamespace(**c) for c in d["changes"]],
        window_s=d["figures"]["rates"]["window_s"],
        revisions=round(
            d["figures"]["rates"]["revisions_per_s"] * d["figures"]["rates"]["window_s"]
        ),
        cpu=CpuUsage(**d["cpu"]),
        load=d["load"],
        stream=d["stream"],
        check=d["check"],
        quiet=[SimpleNamespace(**c) for c in d.get("quiet", [])],
    )


def main() -> None:
    """``python propagation_report.py REPORT.json PNG...``: draw a saved run's plot again."""
    import sys

    if len(sys.argv) < 3:
        raise SystemExit("usage: propagation_report.py propagation-<stamp>.json OUT.png ...")
    made = plot(from_json(Path(sys.argv[1])), [Path(p) for p in sys.argv[2:]])
    print("written: " + ", ".join(map(str, made)) if made else "no plot: matplotlib missing")


if __name__ == "__main__":
    main()

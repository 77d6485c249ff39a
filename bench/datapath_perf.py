"""Where the fabric's data path spends its CPU, against plain wireguard-go: perf, same run.

The data-path benchmark (``datapath_bench.py``) says how much more the fabric costs than the
anchor; this says where. It builds the same two setups (``datapath_fabric.throughput_pair``: a
2-host lab, one machine per host; ``datapath_anchor.anchor``: plain wireguard-go between two
namespaces on the lab's underlay) and, alternating them, runs iperf3 (one TCP stream) at a
fixed paced rate (``--paced-rate``, default 1 Gbit/s: both setups carry it with CPU to spare)
and at full rate, each time recording the whole machine with ``perf record -a -g -e cpu-clock``
for the same ``--seconds`` (iperf3 started one second before: slow start is left out).

Samples are sorted after all runs are done (``perf script`` is CPU-heavy; it never runs beside
a measurement):

- **data path**: samples of the setup's processes (both wireguard-go daemons, both iperf3
  ends), of ``ksoftirqd``, and every sample with ``net_rx_action`` or ``net_tx_action`` on its
  kernel stack, whoever was interrupted (with receive packet steering the fabric's forwarding
  runs in softirq on whichever CPU the flow hashes to, often in another session's process);
- **idle**: the idle task outside network softirq; **other**: everything else (other sessions'
  load, the lab's agents and control plane, perf itself).

Data-path samples per Gbit carried give the CPU per Gbit (core-seconds per Gbit: samples /
frequency / (Gbit/s x seconds)). Each sample is put in one bucket: walking its stack from the
leaf up, the first frame that names a piece of the path (``nf_hook_slow``: the netfilter hooks;
``ip6_forward``; ``veth_xmit``; ``tcp_v6_rcv``; ``tun_get_user``; ...) names it, so a TCP
receive under a tun write counts as TCP receive. The report has, per load, the buckets in
milliseconds of CPU per Gbit for each setup side by side with the difference, the top
symbols by self samples (shares of the data path's samples), and the share of samples with
some functions anywhere on the stack (inclusive), beside ``/proc`` figures for the same
seconds (irq+softirq, function-call IPIs from ``/proc/interrupts``, the average size of the
skbs on the tunnels and the machines' veths, from their counters: offloads kept or lost).

``--variant-no-rps`` adds a third setup, the same fabric with receive packet steering cleared
on both hosts' WireGuard interfaces between its runs (the agent's value is put back after
each run and on the way out).

Limits: this kernel runs in a VM without a PMU, so samples come from a timer (``cpu-clock``);
time spent with interrupts off is charged to where they come back on
(``_raw_spin_unlock_irqrestore``, ``handle_softirqs``, ``irqentry_exit_to_user_mode``), so
self-symbol shares of those are skid, and the buckets (which read the whole stack) say more.
wireguard-go is a stripped Go binary: its user space is one row. The machine may be shared:
compare shares and same-run differences, not absolute figures.

Everything made is removed on the way out, also on failure or Ctrl-C (``Lab.down()``, the
anchor's namespaces and daemons, iperf3 and perf stopped by PID). Run as root:
``.venv/bin/python bench/datapath_perf.py``; ``make bench-datapath-perf``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from datapath_anchor import anchor
from datapath_fabric import throughput_pair
from datapath_measure import (
    IPERF_PORT,
    BenchError,
    Setup,
    apply_placement,
    ns_argv,
    prioritize,
    run,
    shielded,
    snapshot,
    start_iperf_server,
    stop_iperf_server,
    usage,
)
from datapath_report import environment
from dnsbench_measure import stop

from sixpn.lab.fabric import Lab
from sixpn.model.errors import SixpnError

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"
TOOLS = ("ip", "nsenter", "wireguard-go", "wg", "nft", "iperf3", "perf")
ANCHOR, FABRIC, NO_RPS = "anchor", "fabric", "fabric, no RPS"
PACED, FULL = "paced", "full rate"

# -- sorting samples -------------------------------------------------------------------------

# Walking a stack from the leaf up, the first frame found in one of these names the bucket.
BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("netfilter hooks (nf_hook_slow: inet sixpn)", ("nf_hook_slow",)),
    ("RPS: sending the IPI (net_rps_send_ipi)", ("net_rps_send_ipi",)),
    (
        "route lookups (fib6, fib)",
        (
            "ip6_route_input",
            "fib6_table_lookup",
            "ip6_pol_route",
            "ip6_route_output_flags",
            "fib_table_lookup",
            "ip_route_output_key_hash",
            "fib_lookup_good_nhc",
        ),
    ),
    ("forwarding: skb_cow's header copy (pskb_expand_head)", ("pskb_expand_head",)),
    ("forwarding: ip6_forward, the rest", ("ip6_forward", "ip6_forward_finish")),
    ("veth transmit (veth_xmit)", ("veth_xmit",)),
    ("GSO segmentation, software checksums", ("skb_segment", "skb_checksum_help", "csum_partial")),
    (
        "copies to and from user space",
        (
            "_copy_from_iter",
            "_copy_to_iter",
            "_copy_from_user",
            "_copy_to_user",
            "__skb_datagram_iter",
            "skb_copy_datagram_iter",
        ),
    ),
    ("TCP receive (tcp_v6_rcv)", ("tcp_v6_rcv", "tcp_v6_do_rcv")),
    ("TCP send (tcp_sendmsg)", ("tcp_sendmsg",)),
    ("TCP read (tcp_recvmsg)", ("tcp_recvmsg",)),
    ("UDP send: the encrypted datagrams (sendmmsg)", ("udp_sendmsg", "udpv6_sendmsg")),
    (
        "UDP receive: the encrypted datagrams",
        ("udp_recvmsg", "udpv6_recvmsg", "udp_rcv", "__udp4_lib_rcv", "udp_queue_rcv_skb"),
    ),
    ("the lab's underlay bridge", ("br_handle_frame", "br_dev_xmit")),
    ("tun write (wireguard-go -> kernel), the rest", ("tun_get_user",)),
    ("tun read and transmit", ("tun_do_read", "tun_net_xmit", "tun_chr_read_iter")),
    ("device transmit, qdisc", ("__dev_queue_xmit", "__qdisc_run", "sch_direct_xmit")),
    (
        "IP receive, backlog, softirq loop (the rest)",
        (
            "ipv6_rcv",
            "ip_rcv",
            "process_backlog",
            "__netif_receive_skb_one_core",
            "enqueue_to_backlog",
            "netif_rx",
            "net_rx_action",
        ),
    ),
    ("softirq entry (time with interrupts off before it)", ("handle_softirqs",)),
    (
        "scheduler, wake-ups, futexes",
        (
            "schedule",
            "__schedule",
            "try_to_wake_up",
            "futex_wait",
            "futex_wake",
            "finish_task_switch.isra.0",
            "schedule_idle",
        ),
    ),
    ("epoll", ("do_epoll_wait", "ep_poll")),
)
BUCKET_OF = {sym: name for name, syms in BUCKETS for sym in syms}
USER_WG = "user space: wireguard-go (crypto, Go runtime)"
USER_OTHER = "user space: iperf3, libc, vdso"
KERNEL_OTHER = "kernel: other"
BUCKET_ORDER = [USER_WG, USER_OTHER, *(name for name, _ in BUCKETS), KERNEL_OTHER]
# Anywhere on the stack: inclusive shares.
MARKERS = (
    "handle_softirqs",
    "net_rx_action",
    "process_backlog",
    "net_rps_send_ipi",
    "sysvec_call_function_single",
    "tun_get_user",
    "tcp_v6_rcv",
    "ip6_forward",
    "nf_hook_slow",
    "nft_do_chain",
    "veth_xmit",
    "ip6_route_input",
    "__dev_queue_xmit",
    "udp_sendmsg",
    "udp_recvmsg",
    "skb_segment",
    "pskb_expand_head",
)
NETWORK_SOFTIRQ = ("net_rx_action", "net_tx_action")
_HEADER = re.compile(r"^(?P<comm>\S.*?)\s+(?P<pid>-?\d+)/(?P<tid>-?\d+)\s*$")
_FRAME = re.compile(r"^\s*[0-9a-f]+ (?P<sym>.*) \((?P<dso>[^()]*)\)$")


@dataclass
class Profile:
    """One perf recording, sorted."""

    samples: int = 0
    data_path: int = 0
    idle: int = 0
    other: int = 0
    softirq: int = 0  # data-path samples in softirq context (handle_softirqs on the stack)
    buckets: Counter[str] = field(default_factory=Counter)
    symbols: Counter[str] = field(default_factory=Counter)  # self, data path only
    markers: Counter[str] = field(default_factory=Counter)  # inclusive, data path only

    def add(self, other: Profile) -> None:
        for name in ("samples", "data_path", "idle", "other", "softirq"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("buckets", "symbols", "markers"):
            getattr(self, name).update(getattr(other, name))


def _stacks(text: str) -> Iterator[tuple[str, int, list[tuple[str, str]]]]:
    """(comm, pid, [(symbol, dso) from the leaf up]) per sample of ``perf script`` output."""
    for block in text.split("\n\n"):
        lines = block.strip("\n").splitlines()
        if not lines or not (head := _HEADER.match(lines[0])):
            continue
        frames = [(m["sym"], m["dso"]) for line in lines[1:] if (m := _FRAME.match(line))]
        yield head["comm"], int(head["pid"]), frames


def _bucket(frames: list[tuple[str, str]]) -> str:
    if not frames:
        return KERNEL_OTHER
    sym, dso = frames[0]
    if not dso.startswith("[kernel"):
        return USER_WG if Path(dso).name == "wireguard-go" else USER_OTHER
    for sym, _ in frames:
        if sym in BUCKET_OF:
            return BUCKET_OF[sym]
    return KERNEL_OTHER


def sort_samples(text: str, data_path_pids: set[int]) -> Profile:
    p = Profile()
    for comm, pid, frames in _stacks(text):
        p.samples += 1
        kernel = {sym for sym, dso in frames if dso.startswith("[kernel")}
        net_softirq = any(s in kernel for s in NETWORK_SOFTIRQ)
        if pid in data_path_pids or comm.startswith("ksoftirqd") or net_softirq:
            p.data_path += 1
        elif comm == "swapper" or pid == 0:
            p.idle += 1
            continue
        else:
            p.other += 1
            continue
        if "handle_softirqs" in kernel:
            p.softirq += 1
        p.buckets[_bucket(frames)] += 1
        if frames:
            sym, dso = frames[0]
            p.symbols[sym if dso.startswith("[kernel") else f"[user] {Path(dso).name}"] += 1
        p.markers.update(m for m in MARKERS if m in kernel)
    return p


# -- the setups ------------------------------------------------------------------------------


@dataclass
class Subject:
    """One setup under measurement and the interfaces whose counters say how big its skbs are."""

    name: str
    setup: Setup
    links: list[tuple[str, str, str]]  # (label, namespace, ifname)
    rps: list[tuple[str, str, str]] = field(default_factory=list)  # (ns, ifname, agent's value)


@dataclass
class Measurement:
    subject: str
    load: str
    round: int
    gbps: float
    seconds: float
    retransmits: int
    proc: dict[str, float]  # /proc figures over the perf window
    ipis_per_s: float
    skb_bytes: dict[str, tuple[float, float]]  # label -> (bytes per packet, packets/s)
    data: Path
    pids: set[int]  # the data path's processes: both wireguard-go, both iperf3 ends
    profile: Profile | None = None


def _fabric_links(the_lab: Lab) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    assert the_lab.state is not None
    links, tuns = [], []
    for side, name in (("client", "a"), ("server", "b")):
        host = the_lab.state.hosts[name]
        ns, wg_if = str(host["ns"]), str(host["wg_ifname"])
        names = [
            str(item["ifname"]) for item in json.loads(run(["ip", "-n", ns, "-j", "link", "show"]))
        ]
        veth = next((n for n in names if n.startswith("sxm")), None)
        links.append((f"{side} host tun {wg_if}", ns, wg_if))
        if veth is not None:
            links.append((f"{side} host veth {veth}", ns, veth))
        tuns.append((ns, wg_if))
    return links, tuns


def _rps_path(ifname: str) -> str:
    return f"/sys/class/net/{ifname}/queues/rx-0/rps_cpus"


def read_rps(ns: str, ifname: str) -> str:
    # `ip netns exec` mounts a sysfs of the namespace: the interface's own queue.
    return run(["ip", "netns", "exec", ns, "cat", _rps_path(ifname)]).strip()


def write_rps(ns: str, ifname: str, mask: str) -> None:
    script = f'printf %s "$1" > {_rps_path(ifname)}'
    run(["ip", "netns", "exec", ns, "sh", "-c", script, "sh", mask])


def link_counters(links: Sequence[tuple[str, str, str]]) -> dict[str, tuple[int, int, int, int]]:
    """label -> (rx bytes, rx packets, tx bytes, tx packets)."""
    out = {}
    for label, ns, ifname in links:
        doc = json.loads(run(["ip", "-n", ns, "-s", "-j", "link", "show", "dev", ifname]))[0]
        st = doc["stats64"]
        out[label] = (
            st["rx"]["bytes"],
            st["rx"]["packets"],
            st["tx"]["bytes"],
            st["tx"]["packets"],
        )
    return out


def skb_sizes(
    a: dict[str, tuple[int, int, int, int]], b: dict[str, tuple[int, int, int, int]], wall: float
) -> dict[str, tuple[float, float]]:
    """label + direction -> (average bytes per packet counted, packets per second)."""
    out = {}
    for label in a:
        d = [y - x for x, y in zip(a[label], b[label], strict=True)]
        for direction, (nbytes, packets) in (("rx", d[0:2]), ("tx", d[2:4])):
            if packets > 100 and wall > 0:
                out[f"{label} {direction}"] = (nbytes / packets, packets / wall)
    return out


def function_call_ipis() -> int:
    """Function-call interrupts (``CAL``: RPS's IPIs among them), all CPUs."""
    for line in Path("/proc/interrupts").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "CAL:":
            return sum(int(x) for x in parts[1:] if x.isdigit())
    return 0


# -- one run ---------------------------------------------------------------------------------


def measure(
    subject: Subject,
    load: str,
    n: int,
    args: argparse.Namespace,
    workdir: Path,
) -> Measurement:
    s = subject.setup
    cmd = ["iperf3", "-6", "-c", s.server_addr, "-p", str(IPERF_PORT), "-J"]
    cmd += ["-t", f"{args.seconds + 2:g}", "-O", "1"]
    if load == PACED:
        cmd += ["-b", args.paced_rate]
    data = workdir / f"perf-{subject.name.replace(', ', '-').replace(' ', '-')}-{load[:4]}-{n}.data"
    perf = ["perf", "record", "-a", "-g", "-e", "cpu-clock", "-F", str(args.freq)]
    perf += ["-o", str(data), "--quiet", "--", "sleep", f"{args.seconds:g}"]
    client = subprocess.Popen(
        ns_argv(s.client_ns, cmd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        prioritize(client.pid, s.nice)
        time.sleep(1.2)  # iperf3's omitted first second: connection up, slow start over
        links0, ipis0, cpu0 = link_counters(subject.links), function_call_ipis(), snapshot()
        recorder = subprocess.Popen(
            perf, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            _, perf_err = recorder.communicate(timeout=args.seconds + 60)
        finally:
            stop(recorder)  # already gone unless something went wrong
        cpu1, ipis1, links1 = snapshot(), function_call_ipis(), link_counters(subject.links)
        if recorder.returncode != 0 or not data.exists():
            raise BenchError(f"perf record: exit {recorder.returncode}: {perf_err.strip()[-400:]}")
        out, err = client.communicate(timeout=args.seconds + 60)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    try:
        doc = json.loads(out)
    except json.JSONDecodeError as exc:
        raise BenchError(f"iperf3 to {s.server_addr}: no JSON ({err.strip()})") from exc
    if "error" in doc or client.returncode != 0:
        raise BenchError(f"iperf3 to {s.server_addr}: {doc.get('error', err.strip())}")
    roles = dict(s.roles())
    roles["iperf3 client"] = [client.pid]
    pids = {client.pid, *s.wg_pids.values()}
    if s.iperf_server is not None:
        pids.add(s.iperf_server.pid)
    cpu = usage(cpu0, cpu1, roles)
    proc = {"busy %": cpu.busy, "irq+softirq %": cpu.softirq, "steal %": cpu.steal}
    proc |= {f"{role} %": pct for role, pct in cpu.roles.items()}
    end = doc["end"]
    return Measurement(
        subject=subject.name,
        load=load,
        round=n,
        gbps=end["sum_received"]["bits_per_second"] / 1e9,
        seconds=args.seconds,
        retransmits=int(end["sum_sent"].get("retransmits", 0)),
        proc=proc,
        ipis_per_s=(ipis1 - ipis0) / cpu.wall_s if cpu.wall_s > 0 else 0.0,
        skb_bytes=skb_sizes(links0, links1, cpu.wall_s),
        data=data,
        pids=pids,
    )


def sort_run(m: Measurement) -> None:
    out = run(
        ["perf", "script", "-i", str(m.data), "-F", "comm,pid,tid,ip,sym,dso"],
        timeout=900,
    )
    m.profile = sort_samples(out, m.pids)


# -- the report ------------------------------------------------------------------------------


@dataclass
class Summary:
    subject: str
    load: str
    runs: list[Measurement]
    profile: Profile

    @property
    def gbit(self) -> float:  # Gbit carried over the recorded seconds, all rounds
        return sum(m.gbps * m.seconds for m in self.runs)

    @property
    def seconds(self) -> float:
        return sum(m.seconds for m in self.runs)

    def per_gbit_ms(self, samples: int, freq: int) -> float:
        return 1000 * samples / freq / self.gbit if self.gbit > 0 else float("nan")

    def proc(self, key: str) -> float:
        values = [m.proc.get(key, 0.0) for m in self.runs]
        return sum(values) / len(values) if values else float("nan")


def summarise(measurements: list[Measurement]) -> dict[tuple[str, str], Summary]:
    out: dict[tuple[str, str], Summary] = {}
    for m in measurements:
        key = (m.subject, m.load)
        if key not in out:
            out[key] = Summary(m.subject, m.load, [], Profile())
        out[key].runs.append(m)
        assert m.profile is not None
        out[key].profile.add(m.profile)
    return out


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _pct(x: float) -> str:
    return f"{x:.1f}%"


def markdown(
    summaries: dict[tuple[str, str], Summary],
    subjects: list[str],
    args: argparse.Namespace,
    env: dict[str, str],
    stamp: str,
) -> str:
    f = args.freq
    lines = [
        f"# Data path profile: fabric against plain wireguard-go ({stamp})",
        "",
        f"Command: `{' '.join(args.argv)}`. {args.rounds} rounds, setups alternated (order "
        "reversed every other round); per setup and round one paced run "
        f"(`iperf3 -b {args.paced_rate}`) and one at full rate, each recorded with `perf record "
        f"-a -g -e cpu-clock -F {f}` for {args.seconds:g} s after iperf3's first second.",
        "",
        "Machine: "
        + ", ".join(f"{k} {v}" for k, v in env.items())
        + f"; {os.cpu_count()} CPUs; load average at the start {args.load_start}, at the end "
        f"{args.load_end}.",
        "",
        "CPU per Gbit = data-path samples / frequency / (Gbit/s x seconds): core-seconds per "
        "Gbit carried (the data path: both wireguard-go daemons, both iperf3 ends, ksoftirqd, "
        "and every sample in network softirq whatever it interrupted). Shares are of the data "
        "path's samples. The machine may be shared: compare shares and same-run differences.",
        "",
    ]
    for load in (PACED, FULL):
        base = summaries.get((ANCHOR, load))
        lines += [f"## {load.capitalize()}", ""]
        lines += [
            "| setup | Gbit/s per round | CPU per Gbit, core-s | / anchor | data path, cores | "
            "in softirq | /proc irq+softirq, % of a core | other load, cores | "
            "function-call IPIs/s | retransmits |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in subjects:
            s = summaries.get((name, load))
            if s is None:
                continue
            p = s.profile
            cost = p.data_path / f / s.gbit if s.gbit > 0 else float("nan")
            ratio = ""
            if base is not None and base.gbit > 0 and base.profile.data_path > 0:
                ratio = _pct(100 * cost / (base.profile.data_path / f / base.gbit))
            gbps = ", ".join(f"{m.gbps:.3f}" for m in s.runs)
            ipis = sum(m.ipis_per_s for m in s.runs) / len(s.runs)
            lines.append(
                f"| {name} | {gbps} | {cost:.3f} | {ratio} | {p.data_path / f / s.seconds:.2f} | "
                f"{_pct(100 * p.softirq / max(1, p.data_path))} | "
                f"{s.proc('irq+softirq %'):.1f} | {p.other / f / s.seconds:.2f} | {ipis:.0f} | "
                f"{sum(m.retransmits for m in s.runs)} |"
            )
        lines += ["", "Average bytes per skb and skbs per second, from the devices' counters "]
        lines += ["(a tun's tx is what the kernel hands wireguard-go, its rx what wireguard-go "]
        lines += ["writes; a host-side veth's rx comes from the machine):", ""]
        for name in subjects:
            s = summaries.get((name, load))
            if s is None:
                continue
            sizes: dict[str, list[tuple[float, float]]] = {}
            for m in s.runs:
                for label, v in m.skb_bytes.items():
                    sizes.setdefault(label, []).append(v)
            text = "; ".join(
                f"{k} {_mean([b for b, _ in v]):,.0f} B x {_mean([r for _, r in v]):,.0f}/s"
                for k, v in sorted(sizes.items())
            )
            lines.append(f"- {name}: {text or 'n/a'}")
        lines += ["", f"### Where the CPU goes ({load}): ms of CPU per Gbit, by bucket", ""]
        head = "| bucket | " + " | ".join(subjects)
        head += "".join(f" | {n} - anchor" for n in subjects if n != ANCHOR) + " |"
        lines += [head, "|---|" + "---:|" * (2 * len(subjects) - 1)]
        rows = []
        for bucket in BUCKET_ORDER:
            vals = {}
            for name in subjects:
                s = summaries.get((name, load))
                vals[name] = s.per_gbit_ms(s.profile.buckets[bucket], f) if s else float("nan")
            if all(v == 0 for v in vals.values()):
                continue
            diffs = [vals[n] - vals[ANCHOR] for n in subjects if n != ANCHOR]
            rows.append((diffs[0] if diffs else 0.0, bucket, vals, diffs))
        rows.sort(key=lambda r: -r[0])
        for _, bucket, vals, diffs in rows:
            cells = " | ".join(f"{vals[n]:.1f}" for n in subjects)
            lines.append(f"| {bucket} | {cells} | " + " | ".join(f"{d:+.1f}" for d in diffs) + " |")
        totals = {}
        for name in subjects:
            s = summaries.get((name, load))
            totals[name] = s.per_gbit_ms(s.profile.data_path, f) if s else float("nan")
        cells = " | ".join(f"**{totals[n]:.1f}**" for n in subjects)
        diffs = " | ".join(
            f"**{totals[n] - totals[ANCHOR]:+.1f}**" for n in subjects if n != ANCHOR
        )
        lines += [f"| **total** | {cells} | {diffs} |", ""]
        lines += [f"### Top symbols by self samples ({load}), % of the data path's samples", ""]
        union: Counter[str] = Counter()
        for name in subjects:
            s = summaries.get((name, load))
            if s is not None and s.profile.data_path:
                for sym, k in s.profile.symbols.items():
                    union[sym] = max(union[sym], round(1e6 * k / s.profile.data_path))
        per_load = [summaries.get((name, load)) for name in subjects]
        top = [sym for sym, _ in union.most_common(args.top)]
        lines += share_table(
            "symbol",
            top,
            subjects,
            [s and s.profile.symbols for s in per_load],
            [s.profile.data_path if s else 0 for s in per_load],
        )
        lines += ["", f"### On the stack anywhere ({load}), % of the data path's samples", ""]
        lines += share_table(
            "function",
            list(MARKERS),
            subjects,
            [s and s.profile.markers for s in per_load],
            [s.profile.data_path if s else 0 for s in per_load],
        )
        lines.append("")
    lines += ["## Every run", ""]
    lines += [
        "| round | load | setup | Gbit/s | data-path cores | CPU per Gbit | busy % | "
        "irq+softirq % | wireguard-go client/server % | IPIs/s |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sorted(
        (m for v in summaries.values() for m in v.runs), key=lambda m: (m.round, m.load)
    ):
        assert s.profile is not None
        cores = s.profile.data_path / f / s.seconds
        wg_c, wg_s = (s.proc.get(f"wireguard-go {side} %", 0.0) for side in ("client", "server"))
        wg = f"{wg_c:.0f}/{wg_s:.0f}"
        lines.append(
            f"| {s.round} | {s.load} | {s.subject} | {s.gbps:.3f} | {cores:.2f} | "
            f"{cores / s.gbps if s.gbps else float('nan'):.3f} | {s.proc['busy %']:.0f} | "
            f"{s.proc['irq+softirq %']:.1f} | {wg} | {s.ipis_per_s:.0f} |"
        )
    lines += [
        "",
        "Buckets: walking each sample's stack from the leaf up, the first frame in the "
        "bucket's list names it (`bench/datapath_perf.py`, `BUCKETS`). cpu-clock samples in "
        "this VM: time with interrupts off is charged where they come back on (skid), e.g. "
        "`handle_softirqs` after an IPI, `_raw_spin_unlock_irqrestore` after a wake-up.",
        "",
    ]
    return "\n".join(lines)


def summary_json(summaries: dict[tuple[str, str], Summary], freq: int) -> dict[str, object]:
    out: dict[str, object] = {"freq": freq, "setups": []}
    for (name, load), s in summaries.items():
        p = s.profile
        out["setups"].append(  # type: ignore[union-attr]
            {
                "setup": name,
                "load": load,
                "gbps": [m.gbps for m in s.runs],
                "seconds": [m.seconds for m in s.runs],
                "samples": p.samples,
                "data_path": p.data_path,
                "idle": p.idle,
                "other": p.other,
                "softirq": p.softirq,
                "buckets": dict(p.buckets),
                "symbols": dict(p.symbols.most_common(200)),
                "markers": dict(p.markers),
                "runs": [
                    {
                        "round": m.round,
                        "gbps": m.gbps,
                        "proc": m.proc,
                        "ipis_per_s": m.ipis_per_s,
                        "skb_bytes": m.skb_bytes,
                        "retransmits": m.retransmits,
                    }
                    for m in s.runs
                ],
            }
        )
    return out


# -- the run ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=2, help="alternated rounds (default 2)")
    p.add_argument("--seconds", type=float, default=6.0, help="perf window per run, s (6)")
    p.add_argument("--paced-rate", default="1G", help="iperf3 -b of the paced runs (1G)")
    p.add_argument("--freq", type=int, default=999, help="perf -F, samples/s per CPU (999)")
    p.add_argument("--nice", type=int, default=-10, help="nice of the data path (-10)")
    p.add_argument("--resync", type=float, default=30.0, help="agents' resync period, s (30)")
    p.add_argument("--top", type=int, default=30, help="symbols in the top table (30)")
    p.add_argument(
        "--variant-no-rps",
        action="store_true",
        help="also measure the fabric with receive steering cleared on its WireGuard interfaces",
    )
    p.add_argument("--keep-data", action="store_true", help="keep perf.data files in --out")
    p.add_argument("--out", type=Path, default=OUT_DIR, help="report folder (bench/out)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0 or args.freq < 1:
        p.error("rounds and freq at least 1, seconds > 0")
    args.argv = [Path(sys.argv[0]).name if argv is None else "datapath_perf.py"]
    args.argv += sys.argv[1:] if argv is None else argv
    return args


def preflight() -> None:
    if os.geteuid() != 0:
        raise BenchError("needs root (network namespaces, wireguard-go, perf -a)")
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        raise BenchError(
            f"missing tools: {', '.join(missing)} (make bench-datapath-perf installs them: "
            "scripts/sysdeps.sh linux-perf iperf3 wireguard-go wireguard-tools nftables)"
        )


MAIN_PID = os.getpid()


def _terminate(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != MAIN_PID:  # a forked helper (pyroute2's): it must not unwind our stack
        os._exit(128 + signum)
    raise SystemExit(128 + signum)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != MAIN_PID:
        os._exit(128 + signum)
    raise KeyboardInterrupt


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def record(args: argparse.Namespace, workdir: Path) -> tuple[list[Measurement], list[str]]:
    measurements: list[Measurement] = []
    with (
        throughput_pair(workdir / "lab", args.resync) as (f, the_lab),
        anchor(workdir, the_lab.plug_into_underlay) as a,
    ):
        links, tuns = _fabric_links(the_lab)
        rps = [(ns, ifname, read_rps(ns, ifname)) for ns, ifname in tuns]
        anchor_links = [
            (f"{side} tun {name}", ns, name)
            for side, ns, name in (
                ("client", a.client_ns, _tun_name(a.client_ns)),
                ("server", a.server_ns, _tun_name(a.server_ns)),
            )
        ]
        subjects = [Subject(ANCHOR, a, anchor_links), Subject(FABRIC, f, links)]
        if args.variant_no_rps:
            subjects.append(Subject(NO_RPS, f, links, rps))
        print(f"fabric's receive steering (rps_cpus) on its tunnels: {[r[2] for r in rps]}")
        try:
            for s in (a, f):
                apply_placement(s, "none", args.nice)
                start_iperf_server(s, workdir / f"iperf3-server-{s.name}.log")
            for s in (a, f):  # warm-up, not recorded: handshakes, caches
                warm = ["iperf3", "-6", "-c", s.server_addr, "-p", str(IPERF_PORT), "-t", "2"]
                run(ns_argv(s.client_ns, warm), timeout=60)
            for n in range(1, args.rounds + 1):
                order = subjects if n % 2 else subjects[::-1]
                for load in (PACED, FULL):
                    for subject in order:
                        for ns, ifname, _ in subject.rps:
                            write_rps(ns, ifname, "0")
                        try:
                            m = measure(subject, load, n, args, workdir)
                        finally:
                            with shielded():
                                for ns, ifname, mask in subject.rps:
                                    write_rps(ns, ifname, mask)
                        measurements.append(m)
                        print(
                            f"round {n} {load:9} {subject.name:15}: {m.gbps:.3f} Gbit/s, "
                            f"irq+softirq {m.proc['irq+softirq %']:.0f}%, "
                            f"busy {m.proc['busy %']:.0f}%, IPIs {m.ipis_per_s:.0f}/s",
                            flush=True,
                        )
        finally:
            with shielded():
                for s in (a, f):
                    stop_iperf_server(s)
    return measurements, [s.name for s in subjects]


def _tun_name(ns: str) -> str:
    for item in json.loads(run(["ip", "-n", ns, "-j", "link", "show"])):
        if str(item["ifname"]).startswith("sxbw"):
            return str(item["ifname"])
    raise BenchError(f"no anchor tunnel in {ns}")


def share_table(
    head: str,
    keys: list[str],
    subjects: list[str],
    counts: list[Counter[str] | None],
    totals: list[int],
) -> list[str]:
    """A Markdown table: one row per key, each subject's count of it as % of its total."""
    lines = [f"| {head} | " + " | ".join(subjects) + " |", "|---|" + "---:|" * len(subjects)]
    for key in keys:
        cells = [
            f"{100 * c[key] / max(1, total):.2f}" if c is not None else "0.00"
            for c, total in zip(counts, totals, strict=True)
        ]
        lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _interrupt)
    args.load_start = _load()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    try:
        preflight()
        args.out.mkdir(parents=True, exist_ok=True)
        env = environment()
        env["perf"] = run(["perf", "--version"]).strip()
        workdir = Path(tempfile.mkdtemp(prefix="sixpn-dpperf-"))
        try:
            measurements, subjects = record(args, workdir)
            args.load_end = _load()
            print("sorting the samples (perf script)...", flush=True)
            for m in measurements:
                sort_run(m)
                if args.keep_data:
                    shutil.copy(m.data, args.out / f"datapath-perf-{stamp}-{m.data.name}")
        finally:
            with shielded():
                shutil.rmtree(workdir, ignore_errors=True)
    except (BenchError, SixpnError, subprocess.SubprocessError) as exc:
        print(f"datapath_perf: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("datapath_perf: interrupted; everything made was removed", file=sys.stderr)
        return 130
    summaries = summarise(measurements)
    text = markdown(summaries, subjects, args, env, stamp)
    md = args.out / f"datapath-perf-{stamp}.md"
    md.write_text(text)
    md.with_suffix(".json").write_text(json.dumps(summary_json(summaries, args.freq), indent=1))
    print(f"\n{text}\nwritten: {md} and {md.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    with suppress(BrokenPipeError):
        sys.exit(main())

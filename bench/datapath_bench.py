"""Data-path benchmark: sixpn's fabric against plain wireguard-go, same run (SPEC 9).

Method
------
1. **Anchor** (``datapath_anchor``): SPEC 9's "plain WireGuard between the same two namespaces
   with no fabric around it": two namespaces of the anchor's own, plugged into the lab's
   underlay bridge (the fabric's wire), one ``wireguard-go -f`` in each configured by hand with
   ``wg set`` (MTU 1420, as the fabric's), IPv6 ULA addresses on the tunnels, iperf3 in the two
   namespaces: no nftables, no forwarding, no 6PN address (``--anchor bare``: a veth pair of
   their own instead of the lab's bridge). The kernel has no WireGuard module (NOTES.md), so
   both setups use the same wireguard-go.
2. **Fabric** (``datapath_fabric``): a 2-host ``sixpn.lab.fabric.Lab`` (fra, ams), org ``bench``,
   app ``iperf``, one machine per host; the agents wire them (veths, routes, nftables, the
   WireGuard mesh through the lab's underlay bridge). iperf3's client runs in host a's machine,
   its server in host b's, so every packet crosses both hosts' forwarding and both tunnels.
3. **Throughput, RTT, CPU per Gbit**, both setups up at once, alternated over ``--rounds``
   rounds (default 12; anchor first in odd rounds, fabric first in even ones), so that a change
   in the machine's load hits both: per setup and round one ``iperf3 -6 -c ADDR -t 10 -O 1``
   (one TCP stream, the first second omitted), then ``ping -6 -c 100 -i 0.01`` without load,
   then a paced ``iperf3 -b 150M -t 5`` whose data-path CPU (both wireguard-go daemons, both
   iperf3 ends, irq+softirq, from ``/proc``) per Gbit says what each setup costs, whatever
   else runs on the machine. One unrecorded warm-up run of each first (handshakes, caches).
   The same treatment for both: every data-path process (wireguard-go, iperf3, ping) at nice
   ``--nice`` (-10) in an autogroup of its own (the fabric's daemons are reniced by PID, all
   threads), so that other sessions' load weighs less; pinning (``--pin``) ``none`` (default:
   the scheduler places everything) or ``split`` (client side's iperf3 and wireguard-go on CPU
   0, server side's on CPU 1). CPU is accounted around each iperf3 run from ``/proc``: the
   whole machine (busy, irq+softirq, steal), each wireguard-go daemon, the agents, and the
   busiest other processes (other sessions' load shows there). Reported: medians over rounds
   with min-max, and fabric/anchor as the median of the per-round ratios (paired: the two runs
   of a round are back to back) with a distribution-free 95% confidence interval; the verdict
   is PASS / FAIL only when that interval lies on one side of the target, else INCONCLUSIVE.
4. **Propagation** (``--prop-hosts``, default 5 as in SPEC 9, a lab of its own, after the
   throughput lab is down; control plane, agents and wireguard-go at ``--nice``): app ``prop``
   with one probe machine per host; then ``--creates`` times (after one untimed warm-up): POST
   a machine (hosts in turn), and from the POST's return time (a) the first TCP connect from
   the probe machine of the next host that is refused or accepted (a fresh non-blocking connect
   every 2 ms: packets crossed both ways) and (b) per host, the first answer of its ``fdaa::3``
   (queried from that host's probe machine, every 2 ms) listing the new machine for
   ``<id>.vm.prop.internal AAAA``; "every host" is the latest of them. Then POST ``.../stop``
   and time, per host, until ``prop.internal AAAA`` no longer lists it; then destroy it and
   wait for its namespace to go. The probes run in a helper process (``datapath_probe``, its
   own session, 5 nice steps above the lab) whose threads entered the probe machines'
   namespaces; all times are ``time.monotonic()``, one clock for every process. p50/p99
   nearest-rank; a probe that times out (``--prop-timeout``, 5 s) counts as infinite. CPU over
   the timed creates is reported (the lab's processes, the helper, the busiest others).
5. A Markdown table (and the details of every run) on stdout and in
   ``bench/out/datapath-<UTC timestamp>.md``, with a JSON twin.

Everything created (namespaces, wireguard-go daemons, iperf3 servers, labs) is removed on the
way out, also on failure, Ctrl-C or SIGTERM; processes are stopped by PID, never by name.
Run as root: ``.venv/bin/python bench/datapath_bench.py [--quick]``; see ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import datapath_report as report
from datapath_anchor import anchor
from datapath_fabric import Propagation, PropSample, lab, throughput_pair
from datapath_measure import (
    BenchError,
    CpuUsage,
    PingResult,
    Setup,
    apply_placement,
    iperf,
    ping,
    shielded,
    snapshot,
    start_iperf_server,
    stop_iperf_server,
    usage,
)

from sixpn.model.errors import SixpnError

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"
TOOLS = ("ip", "nsenter", "taskset", "ss", "wireguard-go", "wg", "nft", "iperf3", "ping")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 round, 2 s runs, 3 creates in a 3-host lab",
    )
    p.add_argument("--rounds", type=int, help="anchor/fabric rounds (default 12; quick 1)")
    p.add_argument("--seconds", type=float, help="iperf3 -t per run (default 10; quick 2)")
    p.add_argument("--omit", type=int, help="iperf3 -O, seconds left out (default 1)")
    p.add_argument("--pings", type=int, help="pings per run (default 100; quick 20)")
    p.add_argument("--ping-interval", type=float, default=0.01, help="ping -i (default 0.01)")
    p.add_argument(
        "--paced-rate",
        default="150M",
        help="iperf3 -b of the fixed-rate run measuring CPU per Gbit (default 150M; 0: none)",
    )
    p.add_argument("--paced-seconds", type=float, help="its -t (default 5; quick 2)")
    p.add_argument("--pin", choices=("none", "split"), default="none", help="CPU pinning (none)")
    p.add_argument(
        "--nice", type=int, default=-10, help="nice of every data-path process (default -10)"
    )
    p.add_argument(
        "--anchor",
        choices=("underlay", "bare"),
        default="underlay",
        help="where the plain tunnel's two namespaces are joined: the lab's underlay bridge "
        "(default: the fabric's wire) or a veth pair of their own",
    )
    p.add_argument(
        "--resync", type=float, default=30.0, help="agents' resync period, s (default 30)"
    )
    p.add_argument("--creates", type=int, help="propagation samples (default 20; quick 3)")
    p.add_argument(
        "--prop-hosts", type=int, help="hosts in the propagation lab (default 5; quick 3)"
    )
    p.add_argument("--prop-timeout", type=float, default=5.0, help="per probe, s (default 5)")
    p.add_argument("--out", type=Path, default=OUT_DIR, help="report folder (bench/out)")
    args = p.parse_args(argv)
    q = args.quick
    args.rounds = args.rounds or (1 if q else 12)
    args.seconds = args.seconds or (2.0 if q else 10.0)
    args.omit = 1 if args.omit is None else args.omit
    args.pings = args.pings or (20 if q else 100)
    args.paced_seconds = args.paced_seconds or (2.0 if q else 5.0)
    args.creates = (3 if q else 20) if args.creates is None else args.creates
    args.prop_hosts = args.prop_hosts or (3 if q else 5)
    if args.rounds < 1 or args.seconds <= 0 or args.pings < 1 or args.prop_hosts < 2:
        p.error("rounds and pings at least 1, seconds > 0, prop-hosts at least 2")
    return args


def preflight(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        raise BenchError("needs root (network namespaces, wireguard-go)")
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        raise BenchError(
            f"missing tools: {', '.join(missing)} (make bench-datapath installs them: "
            "apt-get install --no-install-recommends iperf3 wireguard-go wireguard-tools "
            "nftables iputils-ping util-linux iproute2)"
        )
    if args.pin == "split" and (os.cpu_count() or 1) < 2:
        raise BenchError("--pin split needs 2 CPUs")


MAIN_PID = os.getpid()


def _terminate(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != MAIN_PID:
        # A forked helper (pyroute2 creates namespaces in a child it then stops with SIGTERM):
        # it must not unwind this process's stack, whose finally blocks remove everything.
        os._exit(128 + signum)
    raise SystemExit(128 + signum)  # unwinds through every finally: processes, namespaces, labs


def _interrupt(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != MAIN_PID:  # Ctrl-C reaches the whole process group: see _terminate
        os._exit(128 + signum)
    raise KeyboardInterrupt


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def throughput(args: argparse.Namespace, workdir: Path) -> list[report.Round]:
    rounds: list[report.Round] = []
    with (
        throughput_pair(workdir / "lab-tp", args.resync) as (f, the_lab),
        anchor(workdir, the_lab.plug_into_underlay if args.anchor == "underlay" else None) as a,
    ):
        setups = {"anchor": a, "fabric": f}
        try:
            for s in setups.values():
                apply_placement(s, args.pin, args.nice)
                start_iperf_server(s, workdir / f"iperf3-server-{s.name}.log")
                print(f"{s.name}: {s.client_ns} -> [{s.server_addr}]:5201, {_pids(s)}")
            for s in setups.values():  # warm-up, not recorded
                _ping(args, s, count=5)
                c = s.cpus["client"]
                iperf(s.client_ns, s.server_addr, seconds=2, omit=0, cpu=c, roles={}, nice=s.nice)
            for n in range(1, args.rounds + 1):
                order = ["anchor", "fabric"] if n % 2 else ["fabric", "anchor"]
                r = report.Round(n, order)
                for name in order:
                    s = setups[name]
                    r.iperf[name] = iperf(
                        s.client_ns,
                        s.server_addr,
                        seconds=args.seconds,
                        omit=args.omit,
                        cpu=s.cpus["client"],
                        roles=s.roles(),
                        nice=s.nice,
                    )
                    r.ping[name] = _ping(args, s, count=args.pings)
                    if args.paced_rate != "0":
                        r.paced[name] = iperf(
                            s.client_ns,
                            s.server_addr,
                            seconds=args.paced_seconds,
                            omit=0,
                            cpu=s.cpus["client"],
                            roles=s.roles(),
                            nice=s.nice,
                            bitrate=args.paced_rate,
                        )
                    it, p = r.iperf[name], r.ping[name]
                    paced = r.paced.get(name)
                    print(
                        f"round {n} {name:6}: {it.gbps:.3f} Gbit/s, retr {it.retransmits}, "
                        f"busy {it.cpu.busy:.0f}%, RTT avg {p.avg:.3f} p99 {p.p(99):.3f} ms"
                        + (f", {p.lost} lost" if p.lost else "")
                        + (f"; paced: {paced.cost():.2f} core-s/Gbit" if paced else ""),
                        flush=True,
                    )
                rounds.append(r)
        finally:
            for s in setups.values():
                stop_iperf_server(s)
    return rounds


def _pids(s: Setup) -> str:
    return ", ".join(f"{role} PID {pid}" for role, pid in s.wg_pids.items())


def _ping(args: argparse.Namespace, s: Setup, count: int) -> PingResult:
    return ping(
        s.client_ns,
        s.server_addr,
        count=count,
        interval=args.ping_interval,
        cpu=s.cpus["client"],
        nice=s.nice,
    )


def propagation(
    args: argparse.Namespace, workdir: Path
) -> tuple[list[PropSample], CpuUsage | None]:
    samples: list[PropSample] = []
    with (
        lab(workdir / "lab-prop", args.prop_hosts, args.resync) as h,
        Propagation(h, args.prop_timeout, args.nice, workdir / "probe.log") as prop,
    ):
        prop.once(0)  # warm-up, not recorded
        assert h.lab.state is not None
        assert prop.prober is not None
        roles = {"lab": list(h.lab.state.pids.values()), "probes": [prop.prober.proc.pid]}
        before = snapshot()
        for i in range(1, args.creates + 1):
            s = prop.once(i)
            samples.append(s)
            dns = s.dns_all()
            print(
                f"create {i:2} on {s.host}: data path "
                f"{'timeout' if s.data_path_s is None else f'{s.data_path_s * 1000:.1f} ms'}, "
                f"DNS everywhere {'timeout' if dns is None else f'{dns * 1000:.1f} ms'}",
                flush=True,
            )
        cpu = usage(before, snapshot(), roles)
    return samples, cpu


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _interrupt)
    settings: dict[str, object] = {
        k: getattr(args, k)
        for k in ("rounds", "seconds", "omit", "pings", "ping_interval", "pin", "nice", "resync")
    }
    settings |= {"paced_rate": args.paced_rate, "paced_seconds": args.paced_seconds}
    settings["anchor"] = args.anchor
    settings |= {"creates": args.creates, "prop_hosts": args.prop_hosts}
    settings["load_start"] = _load()
    try:
        preflight(args)
        args.out.mkdir(parents=True, exist_ok=True)
        env = report.environment()
        workdir = Path(tempfile.mkdtemp(prefix="sixpn-dpbench-"))
        try:
            rounds = throughput(args, workdir)
            prop, prop_cpu = propagation(args, workdir) if args.creates > 0 else ([], None)
        finally:
            with shielded():
                shutil.rmtree(workdir, ignore_errors=True)
    except (BenchError, SixpnError) as exc:  # the lab raises LabError (a SixpnError)
        print(f"datapath_bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("datapath_bench: interrupted; everything made was removed", file=sys.stderr)
        return 130
    settings["load_end"] = _load()
    run = report.Run(settings, rounds, prop, args.prop_hosts, env, prop_cpu)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = report.markdown(run, stamp)
    md = args.out / f"datapath-{stamp}.md"
    md.write_text(text)
    md.with_suffix(".json").write_text(json.dumps(report.summary_json(run), indent=1) + "\n")
    print(f"\n{text}\nwritten: {md} and {md.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

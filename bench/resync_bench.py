"""Agent resync benchmark: what one full read of a host's kernel state costs the agent, by the
number of machines on the host, against iproute2 reading the same state, same run.

Why: every resync (``--resync``, 30 s by default) and every reload reads the whole host
(``LinuxHost.read``: links, addresses, routes, each machine's namespace, the nftables table, the
WireGuard peers). That CPU is taken from the data path and, as the read runs in a thread of the
agent's process, from its DNS server too.

Method
------
1. A host namespace of the benchmark's own (``sixpn-bench-rs-<hex>``) and a child process in it
   (``nsenter --net``, as the lab runs agents). The child makes the host's WireGuard interface
   and, for each N of ``--machines`` (default 10,50,100), converges the host to N machines of
   one network with the agent's own plan and apply (veths, namespaces ``sixpn-m-<id>``, routes,
   nftables elements): the real state a host with N machines has.
2. Per N, ``--rounds`` (default 7) alternated measures of:
   - **sixpn**: one ``LinuxHost.read()``, wall time and the process's CPU time;
   - **anchor, iproute2**: the same kernel state read by the standard tools, one process each:
     ``ip -6 -j -d -batch -`` (links, addresses, routes) in the host namespace and in every
     machine's (``ip -n NS``), ``nft -j list table inet sixpn`` and ``wg show IF dump``; wall
     time, and CPU from the children's rusage.
   Each read is checked: sixpn's must equal the desired state (else the benchmark fails).
3. Medians over rounds, and the cost per machine (the slope between the smallest and largest
   N), as a Markdown table on stdout and in ``bench/out/resync-<UTC timestamp>.md`` with a JSON
   twin.

Everything made (namespaces, the wireguard-go daemon, nftables table) is removed on the way out,
also on failure: the child tears the host down as the agent does (``LinuxHost.teardown``), then
the parent removes the host namespace and any machine namespace the child listed.
Run as root: ``.venv/bin/python bench/resync_bench.py [--quick]``; see ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sixpn.agent.linux import wg
from sixpn.agent.linux.host import LinuxHost
from sixpn.core import addressing
from sixpn.core.hoststate import (
    SIXPN_ROUTE,
    HostState,
    MachineLink,
    Route,
    machine_ifname,
    machine_netns,
    source_of,
    wg_ifname,
)
from sixpn.core.plan import plan
from sixpn.lab import netns

OUT_DIR = Path(__file__).resolve().parent / "out"
NET_ID, HOST_ID, PORT = 1, 7, 51899


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 and 5 machines, 2 rounds")
    p.add_argument("--machines", help="machine counts, comma-separated (default 10,50,100)")
    p.add_argument("--rounds", type=int, help="measures per count and side (default 7)")
    p.add_argument("--out", type=Path, default=OUT_DIR, help="report folder (bench/out)")
    p.add_argument("--child", help=argparse.SUPPRESS)  # JSON file: the child's results
    args = p.parse_args(argv)
    counts = args.machines or ("2,5" if args.quick else "10,50,100")
    try:
        args.counts = sorted({int(n) for n in counts.split(",")})
    except ValueError:
        p.error(f"--machines: not a list of numbers: {counts!r}")
    if args.counts[0] < 1:
        p.error("--machines: every count at least 1")
    args.rounds = args.rounds or (2 if args.quick else 7)
    if args.rounds < 1:
        p.error("--rounds: at least 1")
    return args


# -- the child, inside the host namespace ------------------------------------------------------


def machine(index: int) -> MachineLink:
    machine_id = secrets.token_hex(7)
    return MachineLink(
        machine_id=machine_id,
        netns=machine_netns(machine_id),
        host_ifname=machine_ifname(machine_id),
        address=addressing.machine_address(NET_ID, HOST_ID, 0x10000 + index),
        prefix=addressing.machine_prefix(NET_ID, HOST_ID, 0x10000 + index),
    )


def desired(ifname: str, machines: list[MachineLink]) -> HostState:
    routes = {Route(m.prefix, m.host_ifname) for m in machines} | {Route(SIXPN_ROUTE, ifname)}
    return HostState(
        wg_ifname=ifname,
        listen_port=PORT,
        service_addresses=frozenset({addressing.DNS_ADDRESS}),
        machines=frozenset(machines),
        routes=frozenset(routes),
        pairs=frozenset({addressing.network_prefix(NET_ID)}),
        sources=frozenset(source_of(m) for m in machines),
    )


def sixpn_read(host: LinuxHost, want: HostState) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    state = host.read()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if state != want:
        wrong = [f for f in want.__slots__ if getattr(state, f) != getattr(want, f)]
        raise SystemExit(f"resync bench: LinuxHost.read() is not the converged state: {wrong}")
    return wall, cpu


def iproute2_read(ifname: str, machines: list[MachineLink]) -> tuple[float, float]:
    batch = "link show\naddr show\nroute show\n"
    argvs = [["ip", "-6", "-j", "-d", "-batch", "-"]]
    argvs += [["ip", "-n", m.netns, "-6", "-j", "-d", "-batch", "-"] for m in machines]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    for argv in argvs:
        json_arrays = subprocess.run(argv, input=batch, capture_output=True, text=True, check=True)
        if json_arrays.stdout.count("[") < 3:
            raise SystemExit(f"resync bench: {' '.join(argv)} printed no JSON")
    subprocess.run(["nft", "-j", "list", "table", "inet", "sixpn"], capture_output=True, check=True)
    subprocess.run(["wg", "show", ifname, "dump"], capture_output=True, check=True)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def child(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="sixpn-resync-bench-"))
    key = tmp / "wg.key"
    key.write_text(subprocess.run(["wg", "genkey"], capture_output=True, text=True).stdout)
    key.chmod(0o600)
    ifname = wg_ifname(0x100 + secrets.randbits(20))
    host = LinuxHost(ifname, key, wg.detect_backend())
    made: list[MachineLink] = []
    results: list[dict[str, Any]] = []
    listing = Path(args.child).with_suffix(".netns")
    try:
        for n in args.counts:
            made += [machine(i) for i in range(len(made) + 1, n + 1)]
            listing.write_text("\n".join(m.netns for m in made))
            want = desired(ifname, made)
            started = time.perf_counter()
            ops = plan(host.read(), want)
            for op in ops:
                host.apply(op)
            converge = time.perf_counter() - started
            sixpn_read(host, want)  # warm: imports, caches
            measures: dict[str, list[tuple[float, float]]] = {"sixpn": [], "iproute2": []}
            for _ in range(args.rounds):
                measures["sixpn"].append(sixpn_read(host, want))
                measures["iproute2"].append(iproute2_read(ifname, made))
            results.append(
                {"machines": n, "ops": len(ops), "converge_s": converge, "measures": measures}
            )
            print(f"  {n} machines: converged in {converge:.1f} s ({len(ops)} operations)")
    finally:
        host.teardown()
        Path(args.child).write_text(json.dumps(results))
        for f in (key, listing):
            f.unlink(missing_ok=True)
        tmp.rmdir()


# -- the parent: namespace, child, report ------------------------------------------------------


def median_ms(pairs: list[list[float]], i: int) -> float:
    return statistics.median(p[i] for p in pairs) * 1000


def report(results: list[dict[str, Any]], args: argparse.Namespace, stamp: str) -> str:
    lines = [
        f"# Resync benchmark, {stamp}",
        "",
        "One full read of the host's kernel state (what every resync does), median of "
        f"{args.rounds} rounds: sixpn's `LinuxHost.read()` against iproute2, nft and wg reading "
        "the same state, one process per namespace.",
        "",
        "| machines | sixpn read, ms wall / CPU | iproute2 + nft + wg, ms wall / CPU "
        "| sixpn / anchor (wall) | converge from empty, s (ops) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        s, a = r["measures"]["sixpn"], r["measures"]["iproute2"]
        lines.append(
            f"| {r['machines']} | {median_ms(s, 0):.1f} / {median_ms(s, 1):.1f} "
            f"| {median_ms(a, 0):.1f} / {median_ms(a, 1):.1f} "
            f"| {median_ms(s, 0) / median_ms(a, 0):.2f} "
            f"| {r['converge_s']:.1f} ({r['ops']}) |"
        )
    if len(results) > 1:
        lo, hi = results[0], results[-1]
        extra = hi["machines"] - lo["machines"]
        lines.append("")
        for side in ("sixpn", "iproute2"):
            per = [
                (median_ms(hi["measures"][side], i) - median_ms(lo["measures"][side], i)) / extra
                for i in (0, 1)
            ]
            lines.append(f"- {side}: {per[0]:.2f} ms wall, {per[1]:.2f} ms CPU per machine.")
    uname = os.uname()
    lines += ["", f"- {uname.release}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    if os.geteuid() != 0:
        print("resync bench: run as root (namespaces, veths, nftables)", file=sys.stderr)
        return 1
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    host_ns = netns.unique_name("bench-rs")
    out = Path(tempfile.mkdtemp(prefix="sixpn-resync-")) / "results.json"
    netns.create(host_ns)
    try:
        argv_child = [sys.executable, __file__, "--child", str(out), "--rounds", str(args.rounds)]
        argv_child += ["--machines", ",".join(map(str, args.counts))]
        print(f"resync bench: host namespace {host_ns}, machines {args.counts}")
        subprocess.run(netns.enter_argv(host_ns, argv_child), check=True)
        results = json.loads(out.read_text())
    finally:
        listing = out.with_suffix(".netns")
        if listing.exists():  # the child's teardown removed them; this is the backstop
            for name in listing.read_text().split():
                netns.remove(name)
            listing.unlink()
        netns.remove(host_ns)
        out.unlink(missing_ok=True)
        out.parent.rmdir()
    text = report(results, args, stamp)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"resync-{stamp}.md").write_text(text)
    (args.out / f"resync-{stamp}.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

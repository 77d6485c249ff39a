"""DNS benchmark: the sixpn DNS server against the Unbound anchor, same data, same run (SPEC 9).

Method
------
1. A seeded data set (``dnsbench_dataset``): network 1, 100 apps x 5 started machines on hosts in
   fra/iad/syd, addresses laid out as SPEC 2. Written to ``bench/out/dataset.json`` (machines and
   the exact answers they imply) so the sixpn side serves the same truth as Unbound.
2. A network namespace ``sixpn-bench-<hex>`` whose ``lo`` holds ``fdaa::3`` (the server, as on a
   host) and ``fdaa:0:1::100`` (a 6PN client of network 1: sixpn answers 6PN sources only).
3. Servers take turns on ``[fdaa::3]:53`` (``--rounds``, default 3: unbound, sixpn, unbound,
   ...), each pinned with ``taskset -c 0`` while dnsperf is pinned to CPU 1, both in the namespace,
   both at nice -10 in their own autogroup (so other sessions' load weighs less). Per server:
   - correctness first: dig from the 6PN source must return exactly the expected records (status,
     AA, TTL 5, address sets, TXT strings) and NXDOMAIN for a missing app; else the run fails;
   - warm-up, then max QPS: dnsperf ``-l D -q 100 -c 4`` over the query mix; server CPU per
     answered query = delta(utime+stime of the server PID in ``/proc/PID/stat``) / completed;
   - latency: dnsperf ``-Q 10000 -v``, server and dnsperf under SCHED_RR 1 for that phase only
     (``--no-rt`` to skip); p50/p99 from dnsperf's per-query latencies (microseconds, from its
     send to its receive: both kernel paths and dnsperf's scheduling are in them; dnsperf 2.10
     has no histogram option); each ``-v`` line's rcode is checked against the expected one.
4. A Markdown table (medians over rounds) on stdout and in ``bench/out/dns-<timestamp>.md``, a
   JSON twin, and the SPEC 9 verdict when sixpn ran.

On a 2-core machine dnsperf itself tops out around the servers' speed, so QPS may be capped by
the client (flagged "client-bound"); CPU us/query is the comparison that stays meaningful.
Run as root: ``.venv/bin/python bench/dns_bench.py [--quick]``; ``bench/README.md`` has more.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import dnsbench_dataset as ds
import dnsbench_report as report
from dnsbench_measure import (
    BenchError,
    PerfRun,
    ServerResult,
    Settings,
    check_answer,
    dig,
    dnsperf,
    netns,
    run,
    set_realtime,
    spawn,
    stop,
    wait_ready,
)

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"
SERVER_CPU = 0
CLIENT_CPU = 1

# ---------------------------------------------------------------------------------------------
# The server under test: sixpn. EDIT HERE when `sixpn dns` lands (or pass --sixpn-cmd).
# Placeholders: {sixpn} the console script next to this Python, {snapshot} the data file
# (bench/out/dataset.json, see dnsbench_dataset.dataset_json), {address} fdaa::3, {port} 53.
# The command must exec the server (its PID, plus live children, is what gets CPU-accounted).
# ---------------------------------------------------------------------------------------------
SIXPN_CMD = "{sixpn} dns --snapshot {snapshot} --listen [{address}]:{port}"


def sixpn_binary() -> Path:
    return Path(sys.executable).parent / "sixpn"


def sixpn_command(template: str, snapshot: Path) -> list[str]:
    """The argv that starts the sixpn DNS server on ``[fdaa::3]:53`` over ``snapshot``."""
    fields = {"sixpn": sixpn_binary(), "snapshot": snapshot, "address": ds.SERVER_ADDRESS}
    try:
        return shlex.split(template.format(port=53, **fields))
    except (KeyError, IndexError, ValueError) as exc:
        raise BenchError(f"--sixpn-cmd {template!r}: bad placeholder ({exc!r})") from exc


def sixpn_available() -> bool:
    """Whether this checkout's ``sixpn`` has a ``dns`` command yet."""
    if not sixpn_binary().exists():
        return False
    try:
        probe = subprocess.run(
            [str(sixpn_binary()), "dns", "--help"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def start_sixpn(
    ns: str, dataset: ds.Dataset, *, template: str, snapshot: Path, log: Path, nice: int = 0
) -> subprocess.Popen[bytes]:
    """Start the sixpn DNS server in ``ns`` on CPU 0, serving ``dataset`` (already in
    ``snapshot``: if sixpn wants another format, convert ``dataset`` here)."""
    del dataset  # the snapshot file written by main() holds it
    return spawn(ns, SERVER_CPU, sixpn_command(template, snapshot), log, nice)


# --- the anchor ------------------------------------------------------------------------------


def write_unbound_config(records: dict[ds.RecordKey, list[str]], out: Path) -> Path:
    """``out/unbound.conf``: the anchor's config, kept for reproduction and A/A runs."""
    conf = out / "unbound.conf"
    conf.write_text(ds.unbound_config(records, out.resolve()))
    run(["unbound-checkconf", str(conf)])
    return conf


def start_unbound(ns: str, conf: Path, log: Path, nice: int = 0) -> subprocess.Popen[bytes]:
    """Unbound serving local-data from ``conf`` in ``ns`` on CPU 0."""
    return spawn(ns, SERVER_CPU, ["unbound", "-d", "-c", str(conf)], log, nice)


# --- one server ------------------------------------------------------------------------------


def verify(ns: str, records: dict[ds.RecordKey, list[str]], sample: list[ds.RecordKey]) -> None:
    """dig each sampled name from the 6PN client; raise BenchError listing every wrong answer."""
    problems: list[str] = []
    for name, rtype in sample:
        ans = dig(ns, ds.SERVER_ADDRESS, ds.CLIENT_ADDRESS, name, rtype)
        for p in check_answer(ans, name, rtype, records[(name, rtype)], ds.TTL):
            problems.append(f"{name} {rtype}: {p}")
    missing = dig(ns, ds.SERVER_ADDRESS, ds.CLIENT_ADDRESS, "no-such-app.internal", "AAAA")
    if missing.status != "NXDOMAIN":
        problems.append(f"no-such-app.internal AAAA: status {missing.status}, not NXDOMAIN")
    if problems:
        raise BenchError("wrong answers:\n  " + "\n  ".join(problems))


def dnsperf_args(queries: Path, seconds: float, s: Settings, *, paced: bool) -> list[str]:
    common = ["-s", ds.SERVER_ADDRESS, "-a", ds.CLIENT_ADDRESS, "-d", str(queries), "-e"]
    if paced:  # one socket, default 100 outstanding, dnsperf's own pacing; -v: per-query lines
        return [*common, "-l", f"{seconds:g}", "-Q", str(s.latency_qps), "-v"]
    return [*common, "-l", f"{seconds:g}", "-q", str(s.outstanding), "-c", str(s.clients)]


Starter = Callable[[str, Path], "subprocess.Popen[bytes]"]


@dataclass(frozen=True)
class Job:
    """What every server is measured against: the same records, sample, query file and settings."""

    ns: str
    workdir: Path
    records: dict[ds.RecordKey, list[str]]
    sample: list[ds.RecordKey]
    queries: Path
    expected_rcode: dict[str, str]
    settings: Settings


def argv_of(proc: subprocess.Popen[bytes]) -> list[str]:
    args = proc.args
    return [str(a) for a in args] if isinstance(args, list | tuple) else [str(args)]


def measure(name: str, start: Starter, job: Job, round_: int) -> ServerResult:
    """Start one server, check its answers, run warm-up, max-QPS and paced phases, stop it."""
    log = job.workdir / f"{name}.log"
    proc = start(job.ns, log)
    print(f"[{name} #{round_}] started, PID {proc.pid}: {shlex.join(argv_of(proc))}")
    s = job.settings

    def perf(phase: str, seconds: float, paced: bool) -> PerfRun:
        args = dnsperf_args(job.queries, seconds, s, paced=paced)
        out = job.workdir / f"{name}-{phase}.dnsperf"
        rt = paced and s.rt
        if rt:
            set_realtime(proc.pid, True)
        try:
            r = dnsperf(
                job.ns, CLIENT_CPU, proc.pid, SERVER_CPU, args, out, job.expected_rcode, s.nice, rt
            )
        finally:
            if rt and proc.poll() is None:
                set_realtime(proc.pid, False)
        if proc.poll() is not None:
            raise BenchError(f"server exited with code {proc.returncode} during {phase}")
        print(f"[{name} #{round_}] {phase}: {report.one_line(r)}")
        return r

    try:
        wait_ready(job.ns, proc, ds.SERVER_ADDRESS, ds.CLIENT_ADDRESS, "web-1.internal", 15)
        verify(job.ns, job.records, job.sample)
        print(f"[{name} #{round_}] answers verified ({len(job.sample)} names and an NXDOMAIN)")
        perf("warmup", s.warmup, paced=False)
        peak = perf("max-qps", s.duration, paced=False)
        latency = perf(f"{s.latency_qps}-qps", s.duration, paced=True)
    except BenchError as exc:
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        raise BenchError(f"{name}: {exc}\n--- server log tail ---\n{tail}") from exc
    finally:
        stop(proc)
    return ServerResult(name, round_, argv_of(proc), peak, latency)


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument(
        "--quick", action="store_true", help="smoke test: 2 s phases, 0.5 s warm-up, 1 round"
    )
    p.add_argument("--duration", type=float, help="seconds per measured phase (default 10)")
    p.add_argument("--outstanding", type=int, default=100, help="dnsperf -q at max QPS")
    p.add_argument("--clients", type=int, default=4, help="dnsperf -c (sockets) at max QPS")
    p.add_argument("--latency-qps", type=int, default=10_000, help="dnsperf -Q, latency phase")
    p.add_argument("--rounds", type=int, help="rounds, servers alternating (default 3; quick 1)")
    p.add_argument("--seed", type=int, default=6, help="data set seed")
    p.add_argument("--sixpn-cmd", help=f"server under test, a template (default: {SIXPN_CMD})")
    p.add_argument("--no-sixpn", action="store_true", help="run the Unbound anchor only")
    p.add_argument(
        "--no-rt",
        action="store_true",
        help="paced phase under plain CFS instead of SCHED_RR 1 (server and dnsperf)",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=-10,
        help="niceness (and autogroup niceness) of the server and dnsperf: other sessions' "
        "load weighs less (default -10; 0 leaves it alone)",
    )
    p.add_argument("--out", type=Path, default=OUT_DIR, help="where results go")
    return p.parse_args(argv)


def preflight() -> None:
    if os.geteuid() != 0:
        raise BenchError("needs root (network namespaces, port 53)")
    tools = ("ip", "taskset", "chrt", "unbound", "unbound-checkconf", "dnsperf", "dig")
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        raise BenchError(
            f"missing tools: {', '.join(missing)} (apt-get install --no-install-recommends "
            "iproute2 util-linux unbound dnsperf dnsutils)"
        )
    if (os.cpu_count() or 1) < 2:
        raise BenchError("needs 2 CPUs: the server on CPU 0, dnsperf on CPU 1")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: processes, namespace


def choose_servers(
    args: argparse.Namespace, data: ds.Dataset, conf: Path, snapshot: Path
) -> tuple[list[tuple[str, Starter]], str]:
    """The anchor, then sixpn when it can run; and a note saying why sixpn did not."""
    servers: list[tuple[str, Starter]] = [
        ("unbound", lambda ns, log: start_unbound(ns, conf, log, args.nice))
    ]
    if args.no_sixpn:
        return servers, "sixpn not run (--no-sixpn)."
    if not (args.sixpn_cmd or sixpn_available()):
        return servers, f"`{sixpn_binary()} dns` is not available yet: the anchor ran alone."
    template = args.sixpn_cmd or SIXPN_CMD
    servers.append(
        (
            "sixpn",
            lambda ns, log: start_sixpn(
                ns, data, template=template, snapshot=snapshot, log=log, nice=args.nice
            ),
        )
    )
    return servers, ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    s = Settings(
        duration=args.duration or (2.0 if args.quick else 10.0),
        warmup=0.5 if args.quick else 2.0,
        outstanding=args.outstanding,
        clients=args.clients,
        latency_qps=args.latency_qps,
        seed=args.seed,
        rt=not args.no_rt,
        rounds=args.rounds or (1 if args.quick else 3),
        nice=args.nice,
    )
    try:
        preflight()
        report.ensure_out_dir(args.out)
        data = ds.build_dataset(s.seed)
        records = ds.build_records(data)
        lines = ds.query_lines(data, s.seed)
        snapshot = ds.write_dataset(args.out / "dataset.json", data, records)
        conf = write_unbound_config(records, args.out)
        queries = args.out / "queries.txt"  # kept, so the report's dnsperf commands can be rerun
        queries.write_text("\n".join(lines) + "\n")
        sample = [("web-1.internal", "AAAA"), ("_apps.internal", "TXT")]
        sample += random.Random(s.seed).sample(sorted(records), 8)
        with tempfile.TemporaryDirectory(prefix="sixpn-dnsbench-") as tmp:
            workdir = Path(tmp)
            servers, note = choose_servers(args, data, conf, snapshot)
            if note:
                print(f"NOTE: {note}")
            expected = {line.lower(): "NOERROR" for line in lines}
            with netns([ds.SERVER_ADDRESS, ds.CLIENT_ADDRESS]) as ns:
                print(f"namespace {ns}: {len(records)} records, {len(lines)} query lines")
                job = Job(ns, workdir, records, sample, queries, expected, s)
                results = [
                    measure(name, start, job, round_)
                    for round_ in range(1, s.rounds + 1)
                    for name, start in servers
                ]
    except BenchError as exc:
        print(f"dns_bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dns_bench: interrupted; processes stopped, namespace removed", file=sys.stderr)
        return 130
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = report.markdown(results, data, records, s, lines, note, stamp)
    md = args.out / f"dns-{stamp}.md"
    md.write_text(text)
    md.with_suffix(".json").write_text(
        json.dumps([report.result_json(r) for r in results], indent=1) + "\n"
    )
    print(f"\n{text}\nwritten: {md} and {md.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

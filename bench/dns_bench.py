"""DNS benchmark: the sixpn DNS server against Unbound and Knot DNS, same data, same run (SPEC 9).

Method
------
1. The records come from the control plane: a `sixpn server` (fresh SQLite store, Unix socket,
   outside the namespace, unpinned; idle while measuring) is populated through its HTTP API with
   a seeded shape (``dnsbench_dataset.fleet_plan``, ``--fleet``): one org; by default 1,000 apps
   x 10 started machines (10,000) on 102 hosts in fra/iad/syd (``--fleet 500``: 100 apps x 5 on
   6 hosts). The control plane allocates every ID and address; the machines are read back
   (``GET /v1/orgs/{org}/machines``) and the records every server must serve (SPEC 4.2, as
   ``core.dnszone`` answers them), Unbound's ``local-data`` and Knot's zone file are derived from
   them. Written to ``bench/out/dataset.json``, ``bench/out/unbound.conf``; Knot's configuration
   and zone in the run's temporary directory (``dnsbench_knot``).
2. A network namespace ``sixpn-bench-<hex>`` whose ``lo`` holds ``fdaa::3`` (the server, as on a
   host) and ``<net48>::100`` of the org's network (a 6PN client: sixpn answers 6PN sources only,
   and only with the data of the source's network).
3. Before measuring, every server is started once and asked the same sample of names with dig
   (every name kind, a NODATA and an NXDOMAIN, and the ``_apps`` listing over UDP alone): each
   answer must match the expected records, and the servers' answers must be identical (status,
   AA, TC, answer and authority sections as sets).
4. Servers take turns on ``[fdaa::3]:53`` (``--rounds``, default 3: unbound, knot, sixpn,
   unbound, ...), each pinned with ``taskset -c 0`` while dnsperf is pinned to CPU 1, both in the
   namespace, both at nice -10 in their own autogroup (so other sessions' load weighs less). Per
   server:
   - ready when ``_apps.internal TXT`` answers NOERROR (sixpn: SERVFAIL until its first
     snapshot); the CPU-accounted PID must by then run the server's own executable (the
     ``ip netns exec`` and ``taskset`` wrappers exec), and every thread of it be pinned to CPU 0;
   - correctness again: dig from the 6PN source must return exactly the expected records (status,
     AA, TTL 5, address sets, TXT strings) and NXDOMAIN for a missing app; else the run fails;
   - warm-up, then max QPS: dnsperf ``-l D -q 100 -c 4`` over the query mix; server CPU per
     answered query = delta(utime+stime of the server PID in ``/proc/PID/stat``) / completed;
   - latency: dnsperf ``-Q 10000 -v``, server and dnsperf under SCHED_RR 1 for that phase only
     (``--no-rt`` to skip); p50/p99 from dnsperf's per-query latencies (microseconds, from its
     send to its receive: both kernel paths and dnsperf's scheduling are in them; dnsperf 2.10
     has no histogram option); each ``-v`` line's rcode is checked against the expected one.
5. Profile (``--no-profile`` skips it): each server once more, the paced phase again under perf
   on its PID, and sixpn's under py-spy too (``dnsbench_profile``); reported apart, never in the
   table: where each server's CPU goes, path by path, in us/query.
6. A Markdown table (medians over rounds) on stdout and in ``bench/out/dns-<start>.md``, a
   JSON twin, and the SPEC 9 verdict against each anchor when sixpn ran.

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
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import dnsbench_dataset as ds
import dnsbench_knot as knot
import dnsbench_profile as profile
import dnsbench_report as report
from dnsbench_control import POPULATE_WORKERS, ControlPlane, control_plane, populate
from dnsbench_measure import (
    WRAPPERS,
    BenchError,
    DigAnswer,
    PerfRun,
    ServerResult,
    Settings,
    check_answer,
    dig,
    dnsperf,
    exe_of,
    netns,
    run,
    set_realtime,
    spawn,
    stop,
    stray_threads,
    thread_count,
    wait_ready,
)

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"
SERVER_CPU = 0
CLIENT_CPU = 1
READY_PROBE = ("_apps.internal", "TXT")  # NOERROR once a server has its records
READY_TIMEOUT = 30.0

RecordKey = ds.RecordKey
Records = dict[RecordKey, list[str]]

# ---------------------------------------------------------------------------------------------
# The server under test: sixpn (or another command line: --sixpn-cmd).
# Placeholders: {sixpn} the console script next to this Python, {control} the control plane's
# URL (unix:/.../api.sock), {token} its admin token, {address} fdaa::3, {port} 53, {region} the
# server's region (fra), {snapshot} bench/out/dataset.json (the records as JSON; for A/A runs).
# The command must exec the server (its PID, plus live children, is what gets CPU-accounted).
# ---------------------------------------------------------------------------------------------
SIXPN_CMD = (
    "{sixpn} dns --control {control} --token {token} --listen [{address}]:{port} --region {region}"
)
SIXPN_REGION = "fra"


def sixpn_binary() -> Path:
    return Path(sys.executable).parent / "sixpn"


def sixpn_command(template: str, control: ControlPlane, snapshot: Path) -> list[str]:
    """The argv that starts the sixpn DNS server on ``[fdaa::3]:53`` following ``control``."""
    fields = {
        "sixpn": sixpn_binary(),
        "control": control.url,
        "token": control.token,
        "address": ds.SERVER_ADDRESS,
        "region": SIXPN_REGION,
        "snapshot": snapshot,
    }
    try:
        return shlex.split(template.format(port=53, **fields))
    except (KeyError, IndexError, ValueError) as exc:
        raise BenchError(f"--sixpn-cmd {template!r}: bad placeholder ({exc!r})") from exc


def sixpn_available() -> bool:
    """Whether this checkout's ``sixpn`` has a ``dns`` command."""
    if not sixpn_binary().exists():
        return False
    try:
        probe = subprocess.run(
            [str(sixpn_binary()), "dns", "--help"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def start_sixpn(ns: str, argv: list[str], log: Path, nice: int = 0) -> subprocess.Popen[bytes]:
    """Start the sixpn DNS server in ``ns`` on CPU 0; it loads its zone from the control plane."""
    return spawn(ns, SERVER_CPU, argv, log, nice)


# --- the anchor ------------------------------------------------------------------------------


def write_unbound_config(records: Records, out: Path) -> Path:
    """``out/unbound.conf``: the anchor's config, kept for reproduction and A/A runs."""
    conf = out / "unbound.conf"
    conf.write_text(ds.unbound_config(records, out.resolve()))
    run(["unbound-checkconf", str(conf)])
    return conf


def start_unbound(ns: str, conf: Path, log: Path, nice: int = 0) -> subprocess.Popen[bytes]:
    """Unbound serving local-data from ``conf`` in ``ns`` on CPU 0."""
    return spawn(ns, SERVER_CPU, ["unbound", "-d", "-c", str(conf)], log, nice)


def start_knot(ns: str, conf: Path, log: Path, nice: int = 0) -> subprocess.Popen[bytes]:
    """knotd serving the zone file named in ``conf`` in ``ns`` on CPU 0 (foreground)."""
    return spawn(ns, SERVER_CPU, knot.knot_command(conf), log, nice)


# --- one server ------------------------------------------------------------------------------


MISSING = ("no-such-app.internal", "AAAA")  # NXDOMAIN
NODATA = ("web-1.internal", "A")  # an existing name, another type: NOERROR, no answer
# Asked over UDP alone too (dig +ignore, EDNS 1232): TC exactly when the whole answer is larger
# than 1,232 bytes (every server's UDP limit here), else the same answer as without +ignore.
UDP_ONLY = (("_apps.internal", "TXT"), ("web-1.internal", "AAAA"))
UDP_LIMIT = 1232


def verify(ns: str, data: ds.Dataset, records: Records, sample: list[ds.RecordKey]) -> None:
    """dig each sampled name from the 6PN client; raise BenchError listing every wrong answer."""
    problems: list[str] = []
    for name, rtype in sample:
        ans = dig(ns, ds.SERVER_ADDRESS, data.client_address, name, rtype)
        for p in check_answer(ans, name, rtype, records[(name, rtype)], ds.TTL):
            problems.append(f"{name} {rtype}: {p}")
    missing = dig(ns, ds.SERVER_ADDRESS, data.client_address, *MISSING)
    if missing.status != "NXDOMAIN":
        problems.append(f"{' '.join(MISSING)}: status {missing.status}, not NXDOMAIN")
    if problems:
        raise BenchError("wrong answers:\n  " + "\n  ".join(problems))


def cross_sample(data: ds.Dataset, records: Records, seed: int, size: int = 24) -> list[RecordKey]:
    """Names for the cross-check: one of every kind for ``web-1``, then a seeded sample."""
    web = data.apps["web-1"]
    first = [
        ("web-1.internal", "AAAA"),
        ("global.web-1.internal", "AAAA"),
        (f"{web[0].region}.web-1.internal", "AAAA"),
        (f"{web[0].id}.vm.web-1.internal", "AAAA"),
        ("regions.web-1.internal", "TXT"),
        ("vms.web-1.internal", "TXT"),
        ("_apps.internal", "TXT"),
    ]
    rest = [k for k in sorted(records) if k not in first]
    return first + random.Random(seed ^ 0xC0FFEE).sample(rest, max(0, size - len(first)))


def cross_check(servers: list[tuple[str, Starter]], job: Job, sample: list[RecordKey]) -> list[str]:
    """Start each server once, ask it ``sample`` plus a NODATA and an NXDOMAIN question with
    dig, and require every answer to match the records and all servers to answer identically.
    Returns report lines."""
    queries = [*sample, NODATA, MISSING, *(q for q in UDP_ONLY if q not in sample)]
    seen: dict[str, dict[tuple[str, str, str], DigAnswer]] = {}
    problems: list[str] = []
    truncated: dict[str, int] = {}  # UDP-only question -> size of the whole answer (TC over UDP)
    for name, start in servers:
        log = job.workdir / f"{name}-crosscheck.log"
        proc = start(job.ns, log)
        try:
            wait_ready(job.ns, proc, ds.SERVER_ADDRESS, job.client, READY_PROBE, READY_TIMEOUT)
            answers = {q: dig(job.ns, ds.SERVER_ADDRESS, job.client, *q) for q in queries}
            udp = {
                q: dig(job.ns, ds.SERVER_ADDRESS, job.client, *q, udp_only=True) for q in UDP_ONLY
            }
        except BenchError as exc:
            raise BenchError(f"{name} (cross-check): {exc}\n{_log_tail(log)}") from exc
        finally:
            stop(proc)
        for q, ans in udp.items():
            whole = answers[q]
            tc = "tc" in ans.flags
            if tc != (whole.size > UDP_LIMIT):
                problems.append(
                    f"{name}: {' '.join(q)} over UDP: TC {tc} for a {whole.size}-byte answer"
                )
            if not tc and ans.fingerprint() != whole.fingerprint():
                problems.append(f"{name}: {' '.join(q)}: UDP {ans} but TCP/whole {whole}")
            if tc and ans.answer:
                problems.append(f"{name}: {' '.join(q)}: TC with records {ans.answer}")
            if tc:
                truncated[" ".join(q)] = whole.size
        seen[name] = {(*q, "whole"): a for q, a in answers.items()}
        seen[name] |= {(*q, "udp"): a for q, a in udp.items()}
        for (qname, rtype), ans in answers.items():
            if (qname, rtype) in job.records:
                for p in check_answer(ans, qname, rtype, job.records[(qname, rtype)], ds.TTL):
                    problems.append(f"{name}: {qname} {rtype}: {p}")
        if answers[NODATA].status != "NOERROR" or answers[NODATA].answer:
            problems.append(f"{name}: {' '.join(NODATA)}: {answers[NODATA]} is not NODATA")
        if answers[MISSING].status != "NXDOMAIN":
            problems.append(f"{name}: {' '.join(MISSING)}: status {answers[MISSING].status}")
    names = list(seen)
    for other in names[1:]:
        for key in seen[names[0]]:
            a, b = seen[names[0]][key].fingerprint(), seen[other][key].fingerprint()
            if a != b:
                problems.append(f"{' '.join(key)}: {names[0]} {a} but {other} {b}")
    if problems:
        raise BenchError("cross-check failed:\n  " + "\n  ".join(problems))
    who = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
    udp_note = (
        "; over UDP alone (dig +ignore, EDNS 1232) "
        + ", ".join(f"{q} ({size:,} bytes whole)" for q, size in truncated.items())
        + " came back with TC and no records from every server, as it must"
        if truncated
        else ""
    )
    line = (
        f"Answers cross-checked before measuring: {len(queries)} questions ({len(sample)} "
        f"records of every kind, a NODATA, an NXDOMAIN; {len(UDP_ONLY)} of them also over UDP "
        f"alone), asked with dig from {job.client}: {who} "
        + (
            "answered identically (status, AA, TC, answer and authority sets), "
            if len(names) > 1
            else "answered "
        )
        + f"as the records read back from the control plane say{udp_note}."
    )
    print(line)
    return [line]


def _log_tail(log: Path) -> str:
    tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
    return f"--- server log tail ---\n{tail}"


def dnsperf_args(
    queries: Path, client: str, seconds: float | None, s: Settings, *, paced: bool
) -> list[str]:
    """dnsperf's arguments for a phase of ``seconds``; None: one pass over the query file."""
    limit = ["-n", "1"] if seconds is None else ["-l", f"{seconds:g}"]
    common = ["-s", ds.SERVER_ADDRESS, "-a", client, "-d", str(queries), "-e", *limit]
    if paced:  # one socket, default 100 outstanding, dnsperf's own pacing; -v: per-query lines
        return [*common, "-Q", str(s.latency_qps), "-v"]
    return [*common, "-q", str(s.outstanding), "-c", str(s.clients)]


Starter = Callable[[str, Path], "subprocess.Popen[bytes]"]


@dataclass(frozen=True)
class Job:
    """What every server is measured against: the same records, sample, query file and settings."""

    ns: str
    workdir: Path
    data: ds.Dataset
    records: Records
    sample: list[ds.RecordKey]
    queries: Path
    expected_rcode: dict[str, str]
    settings: Settings
    control_pid: int | None = None  # the control plane, CPU-accounted around every phase
    hide: tuple[str, ...] = ()  # secrets (the throwaway admin token) kept out of logs/reports

    def shown(self, argv: list[str]) -> list[str]:
        out = argv
        for secret in self.hide:
            out = [a.replace(secret, "<admin-token>") for a in out]
        return out

    @property
    def client(self) -> str:
        return self.data.client_address


def argv_of(proc: subprocess.Popen[bytes]) -> list[str]:
    args = proc.args
    return [str(a) for a in args] if isinstance(args, list | tuple) else [str(args)]


Phase = Callable[[str, "float | None", bool], PerfRun]


def _phases(name: str, label: str, proc: subprocess.Popen[bytes], job: Job) -> Phase:
    """``phase(label, seconds, paced)``: one dnsperf run against ``proc``, CPU-accounted."""
    s = job.settings

    def phase(phase: str, seconds: float | None, paced: bool) -> PerfRun:
        args = dnsperf_args(job.queries, job.client, seconds, s, paced=paced)
        out = job.workdir / f"{name}-{phase}.dnsperf"
        rt = paced and s.rt
        if rt:
            set_realtime(proc.pid, True)
        try:
            r = dnsperf(
                job.ns,
                CLIENT_CPU,
                proc.pid,
                SERVER_CPU,
                args,
                out,
                job.expected_rcode,
                s.nice,
                rt,
                control_pid=job.control_pid,
            )
        finally:
            if rt and proc.poll() is None:
                set_realtime(proc.pid, False)
        if proc.poll() is not None:
            raise BenchError(f"server exited with code {proc.returncode} during {phase}")
        print(f"[{label}] {phase}: {report.one_line(r)}")
        return r

    return phase


def _ready(name: str, label: str, proc: subprocess.Popen[bytes], job: Job) -> str:
    """Wait for the server's answers; check the accounted PID and its threads' pinning; verify
    its answers; prime it (every name of the query file once) and warm it up. Its executable."""
    wait_ready(job.ns, proc, ds.SERVER_ADDRESS, job.client, READY_PROBE, READY_TIMEOUT)
    exe = exe_of(proc.pid)
    if Path(exe).name in WRAPPERS:
        raise BenchError(f"PID {proc.pid} still runs {exe}: CPU would be accounted wrong")
    stray = stray_threads(proc.pid, SERVER_CPU)
    if stray:
        raise BenchError(f"threads not pinned to CPU {SERVER_CPU} (thread: CPUs): {stray}")
    threads = thread_count(proc.pid)
    print(f"[{label}] ready; PID {proc.pid} runs {exe}; {threads} thread(s), all on CPU 0")
    verify(job.ns, job.data, job.records, job.sample)
    print(f"[{label}] answers verified ({len(job.sample)} names and an NXDOMAIN)")
    # Prime: every name of the query file once (sixpn encodes an answer on its first use; the
    # anchors build their data at start), then the timed warm-up.
    phase = _phases(name, label, proc, job)
    phase("prime", None, False)
    phase("warmup", job.settings.warmup, False)
    return exe


def measure(name: str, start: Starter, job: Job, round_: int) -> ServerResult:
    """Start one server, check its answers, run warm-up, max-QPS and paced phases, stop it."""
    log = job.workdir / f"{name}.log"
    proc = start(job.ns, log)
    label = f"{name} #{round_}"
    print(f"[{label}] started, PID {proc.pid}: {shlex.join(job.shown(argv_of(proc)))}")
    s = job.settings
    try:
        exe = _ready(name, label, proc, job)
        phase = _phases(name, label, proc, job)
        peak = phase("max-qps", s.duration, False)
        latency = phase(f"{s.latency_qps}-qps", s.duration, True)
    except BenchError as exc:
        raise BenchError(f"{name}: {exc}\n{_log_tail(log)}") from exc
    finally:
        stop(proc)
    return ServerResult(name, round_, job.shown(argv_of(proc)), peak, latency, exe)


def profile_paced(
    name: str, start: Starter, job: Job, tools: list[str], out: Path, stamp: str
) -> list[profile.Profile]:
    """After the measured rounds: start ``name`` once more and run the paced phase again under
    each sampler in ``tools`` (py-spy, perf) attached to its PID. Not part of any table."""
    log = job.workdir / f"{name}-profile.log"
    proc = start(job.ns, log)
    label = f"{name} profile"
    print(f"[{label}] started, PID {proc.pid}")
    s = job.settings
    found: list[profile.Profile] = []
    try:
        _ready(name, label, proc, job)
        phase = _phases(name, label, proc, job)
        for tool in tools:
            raw = out / profile.raw_name(stamp, name, tool)
            slog = job.workdir / f"{name}-{tool}.log"
            with profile.sampling(name, tool, proc.pid, raw, slog, CLIENT_CPU) as prof:
                prof.run = phase(f"{s.latency_qps}-qps-{tool}", s.duration, True)
            print(f"[{label}] {tool}: {prof.error or f'{prof.samples:,} samples in {raw}'}")
            found.append(prof)
    except BenchError as exc:
        raise BenchError(f"{name} (profile): {exc}\n{_log_tail(log)}") from exc
    finally:
        stop(proc)
    return found


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
    p.add_argument(
        "--fleet",
        choices=sorted(ds.FLEETS),
        default=ds.DEFAULT_FLEET,
        help="what the store holds, created through the API: "
        + "; ".join(f"{k}: {f.describe()}" for k, f in ds.FLEETS.items())
        + f" (default {ds.DEFAULT_FLEET})",
    )
    p.add_argument("--sixpn-cmd", help=f"server under test, a template (default: {SIXPN_CMD})")
    p.add_argument("--no-sixpn", action="store_true", help="run the anchors only")
    p.add_argument("--no-knot", action="store_true", help="leave the Knot DNS anchor out")
    p.add_argument(
        "--no-profile",
        action="store_true",
        help="skip the profiles of the paced phase after the rounds (perf on every server, "
        "py-spy on sixpn)",
    )
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


def preflight(with_knot: bool) -> None:
    if os.geteuid() != 0:
        raise BenchError("needs root (network namespaces, port 53)")
    tools: tuple[str, ...] = ("ip", "taskset", "chrt", "unbound", "unbound-checkconf", "dnsperf")
    tools += ("dig", *(("knotd", "knotc") if with_knot else ()))
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        raise BenchError(
            f"missing tools: {', '.join(missing)} (make bench-dns installs them; or apt-get "
            "install --no-install-recommends iproute2 util-linux unbound knot dnsperf dnsutils)"
        )
    if not sixpn_binary().exists():
        raise BenchError(f"{sixpn_binary()} is missing: the records come from `sixpn server`")
    if (os.cpu_count() or 1) < 2:
        raise BenchError("needs 2 CPUs: the server on CPU 0, dnsperf on CPU 1")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: processes, namespace


def choose_servers(
    args: argparse.Namespace,
    control: ControlPlane,
    conf: Path,
    knot_conf: Path | None,
    snapshot: Path,
) -> tuple[list[tuple[str, Starter]], str]:
    """The anchors (Unbound, Knot), then sixpn when it can run; and a note saying why sixpn did
    not."""
    servers: list[tuple[str, Starter]] = [
        ("unbound", lambda ns, log: start_unbound(ns, conf, log, args.nice))
    ]
    if knot_conf is not None:
        servers.append(("knot", lambda ns, log: start_knot(ns, knot_conf, log, args.nice)))
    if args.no_sixpn:
        return servers, "sixpn not run (--no-sixpn)."
    if not (args.sixpn_cmd or sixpn_available()):
        return servers, f"`{sixpn_binary()} dns` is not available: the anchors ran alone."
    argv = sixpn_command(args.sixpn_cmd or SIXPN_CMD, control, snapshot)
    servers.append(("sixpn", lambda ns, log: start_sixpn(ns, argv, log, args.nice)))
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
    fleet = ds.FLEETS[args.fleet]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")  # the run's start: names its files
    tools = [] if args.no_profile else profile.available()
    profiles: list[profile.Profile] = []
    try:
        preflight(not args.no_knot)
        report.ensure_out_dir(args.out)
        with (
            tempfile.TemporaryDirectory(prefix="sixpn-dnsbench-") as tmp,
            control_plane(sixpn_binary(), Path(tmp)) as control,
        ):
            workdir = Path(tmp)
            t0 = time.monotonic()
            data = populate(control, ds.fleet_plan(s.seed, fleet))
            populated_s = time.monotonic() - t0
            machines = sum(len(m) for m in data.apps.values())
            print(
                f"control plane PID {control.proc.pid} ({control.url}): {len(data.apps)} apps, "
                f"{machines} machines on {len(data.hosts)} hosts created in network "
                f"{data.net_id} and read back in {populated_s:.1f} s; client "
                f"{data.client_address}"
            )
            records = ds.build_records(data)
            lines = ds.query_lines(data, s.seed)
            snapshot = ds.write_dataset(args.out / "dataset.json", data, records)
            conf = write_unbound_config(records, args.out)
            knot_conf = None if args.no_knot else knot.write_knot(records, workdir / "knot")
            queries = args.out / "queries.txt"  # kept: the report's dnsperf commands can rerun
            queries.write_text("\n".join(lines) + "\n")
            sample = [("web-1.internal", "AAAA"), ("_apps.internal", "TXT")]
            sample += random.Random(s.seed).sample(sorted(records), 8)
            servers, note = choose_servers(args, control, conf, knot_conf, snapshot)
            if note:
                print(f"NOTE: {note}")
            if not args.no_profile and "sixpn" in dict(servers) and not tools:
                note += " No profiler found (py-spy in the venv or on PATH, perf): no profile."
            expected = {line.lower(): "NOERROR" for line in lines}
            with netns([ds.SERVER_ADDRESS, data.client_address]) as ns:
                print(f"namespace {ns}: {len(records)} records, {len(lines)} query lines")
                job = Job(
                    ns,
                    workdir,
                    data,
                    records,
                    sample,
                    queries,
                    expected,
                    s,
                    control_pid=control.proc.pid,
                    hide=(control.token,),
                )
                checked = cross_check(servers, job, cross_sample(data, records, s.seed))
                results = [
                    measure(name, start, job, round_)
                    for round_ in range(1, s.rounds + 1)
                    for name, start in servers
                ]
                for name, start in servers if "sixpn" in dict(servers) else []:
                    # perf on every server (the comparison by path), py-spy on sixpn alone
                    mine = [t for t in tools if t == "perf" or name == "sixpn"]
                    if mine:
                        profiles += profile_paced(name, start, job, mine, args.out, stamp)
            if control.proc.poll() is not None:
                raise BenchError(f"the control plane exited:\n{control.log_tail()}")
    except BenchError as exc:
        print(f"dns_bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dns_bench: interrupted; processes stopped, namespace removed", file=sys.stderr)
        return 130
    populated = (
        f"Populated through the API ({len(data.hosts)} hosts one by one, then apps and machines "
        f"from {POPULATE_WORKERS} concurrent clients) and read back in {populated_s:.1f} s."
    )
    text = report.markdown(
        results, data, records, s, lines, note, stamp, [populated, *checked], profiles
    )
    md = args.out / f"dns-{stamp}.md"
    md.write_text(text)
    md.with_suffix(".json").write_text(
        json.dumps([report.result_json(r) for r in results], indent=1) + "\n"
    )
    print(f"\n{text}\nwritten: {md} and {md.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The DNS benchmark's I/O: the network namespace, processes, CPU accounting, dnsperf and dig.

Rules that hold here:

- Every process is started by this module's callers through :func:`spawn` and stopped by PID
  (:func:`stop`); nothing is ever killed by name.
- The namespace is ``sixpn-bench-<random hex>``; :func:`netns` deletes it on the way out, also
  on Ctrl-C.
- Server CPU is utime+stime from ``/proc/PID/stat`` (clock ticks), summed over the server PID and
  its live descendants, read just before and just after a dnsperf run.
- Latency percentiles come from dnsperf's ``-v`` per-query lines (``> RCODE name type seconds``,
  microsecond resolution); dnsperf 2.10 (Debian 12) has no latency histogram option.
"""

from __future__ import annotations

import os
import re
import resource
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
RT_PRIORITY = 1  # the lowest SCHED_RR priority: above every CFS task, below the kernel's own


class BenchError(Exception):
    """The benchmark cannot go on: a tool is missing, a server gives wrong answers, ..."""


def run(cmd: Sequence[str], *, check: bool = True, timeout: float = 30) -> str:
    """Run a short command; its stdout. Raises BenchError naming the command on failure."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


@contextmanager
def netns(addresses: Sequence[str]) -> Iterator[str]:
    """A fresh namespace with ``lo`` up and ``addresses`` (/128) on it; deleted on exit."""
    name = f"sixpn-bench-{secrets.token_hex(4)}"
    run(["ip", "netns", "add", name])
    try:
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        for address in addresses:
            run(["ip", "-n", name, "addr", "add", f"{address}/128", "dev", "lo", "nodad"])
        yield name
    finally:
        run(["ip", "netns", "delete", name], check=False)


def wrapped(ns: str, cpu: int, cmd: Sequence[str]) -> list[str]:
    """``cmd`` run inside ``ns``, pinned to ``cpu``."""
    return ["ip", "netns", "exec", ns, "taskset", "-c", str(cpu), *cmd]


def spawn(
    ns: str, cpu: int, cmd: Sequence[str], log: Path, nice: int = 0
) -> subprocess.Popen[bytes]:
    """``ip netns exec NS taskset -c CPU CMD``; both exec, so the PID is the command's own.

    The process gets a session of its own: with the kernel's autogroup scheduling (one group per
    session) plain nice values only weigh inside a session, so ``nice`` is applied to the new
    session's autogroup as well, to hold the CPU against other sessions' load.
    """
    with log.open("wb") as out:
        proc = subprocess.Popen(
            wrapped(ns, cpu, cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    if nice:
        os.setpriority(os.PRIO_PROCESS, proc.pid, nice)
        with suppress(OSError):  # no autogroup (disabled, or kernel without it)
            Path(f"/proc/{proc.pid}/autogroup").write_text(f"{nice}\n")
    return proc


def set_realtime(pid: int, on: bool) -> None:
    """Every thread of ``pid`` to SCHED_RR priority :data:`RT_PRIORITY`, or back to SCHED_OTHER
    (its nice value is kept). A woken RT task preempts CFS tasks at once, so other sessions' load
    cannot add a CFS time slice (milliseconds) to a query's latency; the kernel's RT throttling
    (95% by default) keeps the machine usable even if the server spins."""
    policy, prio = (os.SCHED_RR, RT_PRIORITY) if on else (os.SCHED_OTHER, 0)
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setscheduler(int(task.name), policy, os.sched_param(prio))


def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the PID, SIGKILL it after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _descendants(pid: int) -> list[int]:
    out = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            out.extend(_descendants(int(child)))
    return out


def cpu_split(pid: int) -> tuple[int, int]:
    """(utime, stime) in clock ticks of ``pid`` and its live descendants, all threads."""
    user = system = 0
    for p in _descendants(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # fields 3.. (comm may hold spaces)
        user += int(fields[11])  # field 14: utime
        system += int(fields[12])  # field 15: stime
    return user, system


def cpu_ticks(pid: int) -> int:
    """utime+stime (clock ticks) of ``pid`` and its live descendants, all threads."""
    return sum(cpu_split(pid))


def cpu_busy_ticks() -> dict[int, int]:
    """Per CPU, busy clock ticks from ``/proc/stat`` (everything but idle and iowait)."""
    busy: dict[int, int] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        m = re.match(r"cpu(\d+) (.*)", line)
        if m:
            v = [int(x) for x in m.group(2).split()]
            busy[int(m.group(1))] = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    return busy


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


@dataclass
class PerfRun:
    """One dnsperf run: its summary, the server's CPU, and per-query latencies with ``-v``."""

    cmd: list[str]
    wall_s: float
    sent: int = 0
    completed: int = 0
    lost: int = 0
    qps: float = 0.0
    rcodes: Counter[str] = field(default_factory=Counter)
    avg_request: int = 0
    avg_response: int = 0
    latencies_us: list[int] = field(default_factory=list)
    bad_answers: int = 0  # -v lines whose rcode is not the one expected for that name
    server_cpu_s: float = 0.0
    server_user_s: float = 0.0  # the user-space part of server_cpu_s (utime); the rest is stime
    dnsperf_cpu_s: float = 0.0
    other_cpu: dict[int, float] = field(default_factory=dict)  # CPU -> busy share not ours
    control_cpu_s: float = 0.0  # the control plane (outside the namespace, unpinned), same span

    @property
    def cpu_us_per_query(self) -> float:
        return self.server_cpu_s * 1e6 / self.completed if self.completed else float("nan")

    @property
    def user_us_per_query(self) -> float:
        return self.server_user_s * 1e6 / self.completed if self.completed else float("nan")

    @property
    def kernel_us_per_query(self) -> float:
        return self.cpu_us_per_query - self.user_us_per_query


_SUMMARY = {
    "sent": re.compile(r"Queries sent:\s+(\d+)"),
    "completed": re.compile(r"Queries completed:\s+(\d+)"),
    "lost": re.compile(r"Queries lost:\s+(\d+)"),
    "qps": re.compile(r"Queries per second:\s+([\d.]+)"),
}
_SIZES = re.compile(r"Average packet size:\s+request (\d+), response (\d+)")
_RCODES = re.compile(r"Response codes:\s+(.*)")
_VERBOSE = re.compile(r"^> (\S+) (\S+) (\S+) (\d+)\.(\d{6})$")


def parse_dnsperf(text: str, run_: PerfRun, expected_rcode: dict[str, str] | None) -> None:
    """Fill ``run_`` from dnsperf's output; with ``expected_rcode`` also check each -v line."""
    for key, pattern in _SUMMARY.items():
        m = pattern.search(text)
        if not m:
            raise BenchError(f"dnsperf output has no {key!r} line:\n{text[-2000:]}")
        setattr(run_, key, float(m.group(1)) if key == "qps" else int(m.group(1)))
    if m := _SIZES.search(text):
        run_.avg_request, run_.avg_response = int(m.group(1)), int(m.group(2))
    if m := _RCODES.search(text):
        for code, count in re.findall(r"([A-Z]+) (\d+) \(", m.group(1)):
            run_.rcodes[code] += int(count)
    if expected_rcode is None:
        return
    for line in text.splitlines():
        v = _VERBOSE.match(line)
        if not v:
            continue
        run_.latencies_us.append(int(v.group(4)) * 1_000_000 + int(v.group(5)))
        name = f"{v.group(2)} {v.group(3)}".lower()
        if expected_rcode.get(name) != v.group(1):
            run_.bad_answers += 1


def dnsperf(
    ns: str,
    cpu: int,
    server_pid: int,
    server_cpu: int,
    args: Sequence[str],
    log: Path,
    expected_rcode: dict[str, str] | None = None,
    nice: int = 0,
    rt: bool = False,
    control_pid: int | None = None,
) -> PerfRun:
    """Run dnsperf in ``ns`` pinned to ``cpu`` and account the server's CPU around it.

    ``other_cpu`` is, per CPU, the busy share of the run's wall time that was neither the server
    (on ``server_cpu``) nor dnsperf (on ``cpu``): other load that disturbed the measurement.
    With ``rt`` dnsperf runs under ``chrt -r 1`` (SCHED_RR, see :func:`set_realtime`).
    ``control_pid``'s CPU over the same span goes to ``control_cpu_s`` (it is unpinned, so it
    is also inside ``other_cpu`` of whichever CPU ran it).
    """
    control0 = cpu_ticks(control_pid) if control_pid else 0
    cmd = [*(["chrt", "-r", str(RT_PRIORITY)] if rt else []), "dnsperf", *args]
    busy0, server0, own0 = cpu_busy_ticks(), cpu_split(server_pid), _children_cpu_s()
    start = time.monotonic()
    proc = spawn(ns, cpu, cmd, log, nice)
    try:
        code = proc.wait()
    finally:
        stop(proc)
    wall = time.monotonic() - start
    busy1, server1, own1 = cpu_busy_ticks(), cpu_split(server_pid), _children_cpu_s()
    text = log.read_text(errors="replace")
    if code != 0:
        raise BenchError(f"{' '.join(cmd)}: exit {code}:\n{text[-2000:]}")
    result = PerfRun(cmd=wrapped(ns, cpu, cmd), wall_s=wall)
    parse_dnsperf(text, result, expected_rcode)
    result.server_cpu_s = (sum(server1) - sum(server0)) / CLK_TCK
    result.server_user_s = (server1[0] - server0[0]) / CLK_TCK
    result.dnsperf_cpu_s = own1 - own0
    if control_pid:
        result.control_cpu_s = (cpu_ticks(control_pid) - control0) / CLK_TCK
    ours = {server_cpu: result.server_cpu_s, cpu: result.dnsperf_cpu_s}
    for c, ticks in busy1.items():
        spent = (ticks - busy0.get(c, 0)) / CLK_TCK
        result.other_cpu[c] = max(0.0, spent - ours.get(c, 0.0)) / wall
    return result


@dataclass(frozen=True)
class Settings:
    """How long and how hard each phase runs."""

    duration: float  # seconds per measured phase
    warmup: float
    outstanding: int  # dnsperf -q at max QPS
    clients: int  # dnsperf -c at max QPS
    latency_qps: int  # dnsperf -Q in the paced phase
    seed: int
    rt: bool = True  # paced phase under SCHED_RR (server and dnsperf)
    rounds: int = 1  # servers alternate: unbound, sixpn, unbound, sixpn, ...
    nice: int = 0  # niceness of the server and dnsperf


@dataclass
class ServerResult:
    """One server's measurements: the max-QPS phase and the paced (latency) phase."""

    name: str
    round: int
    command: list[str]
    peak: PerfRun
    latency: PerfRun
    exe: str = ""  # /proc/PID/exe of the CPU-accounted PID


def percentile(sorted_values: Sequence[int], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0-100) of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * p // 100))  # ceil(n * p / 100)
    return float(sorted_values[int(rank) - 1])


RR = tuple[str, int, str, str]  # (lowercased owner without the final dot, ttl, type, rdata)


@dataclass(frozen=True)
class DigAnswer:
    status: str
    flags: frozenset[str]
    rrs: tuple[RR, ...]  # every section
    answer: tuple[RR, ...] = ()
    authority: tuple[RR, ...] = ()
    size: int = 0  # dig's "MSG SIZE rcvd": the message that was finally answered

    def fingerprint(self) -> tuple[object, ...]:
        """What two servers giving the same answer must agree on: status, AA, TC, and the answer
        and authority sections as sets (order, e.g. Unbound's round-robin, does not count)."""
        return (
            self.status,
            "aa" in self.flags,
            "tc" in self.flags,
            tuple(sorted(normal_rr(rr) for rr in self.answer)),
            tuple(sorted(normal_rr(rr) for rr in self.authority)),
        )


def normal_rr(rr: RR) -> RR:
    """One record with its rdata in a canonical form (IPv6 addresses, TXT strings)."""
    name, ttl, rtype, rdata = rr
    if rtype == "AAAA":
        return (name, ttl, rtype, str(IPv6Address(rdata)))
    if rtype == "TXT":
        return (name, ttl, rtype, repr(txt_rdata(rdata)))
    return (name, ttl, rtype, " ".join(rdata.split()))


def dig(
    ns: str, server: str, source: str, name: str, rtype: str, *, udp_only: bool = False
) -> DigAnswer:
    """One query with dig from ``source`` inside ``ns``; the parsed header and sections.
    dig asks again over TCP when the UDP answer is truncated (TC); with ``udp_only`` it keeps
    the UDP answer (``+ignore``, dig's default EDNS buffer of 1,232 bytes)."""
    opts = ["+tries=1", "+time=1", "+noquestion", "+stats", "+nocmd"]
    opts += ["+ignore"] if udp_only else []
    cmd = ["ip", "netns", "exec", ns, "dig", f"@{server}", "-b", source, name, rtype, *opts]
    out = run(cmd, check=False)
    status = re.search(r"status: (\w+)", out)
    flags = re.search(r";; flags: ([^;]*);", out)
    rrs: list[RR] = []
    by_section: dict[str, list[RR]] = {"ANSWER": [], "AUTHORITY": [], "ADDITIONAL": []}
    section = ""
    for line in out.splitlines():
        if m := re.match(r";; (\w+) SECTION:", line):
            section = m.group(1)
            continue
        parts = line.split(None, 4)
        if line.startswith(";") or len(parts) < 5 or parts[2] != "IN":
            continue
        rr = (parts[0].rstrip(".").lower(), int(parts[1]), parts[3], parts[4])
        rrs.append(rr)
        by_section.setdefault(section, []).append(rr)
    size = re.search(r"MSG SIZE\s+rcvd: (\d+)", out)
    return DigAnswer(
        status=status.group(1) if status else "NO-ANSWER",
        flags=frozenset(flags.group(1).split()) if flags else frozenset(),
        rrs=tuple(rrs),
        answer=tuple(by_section["ANSWER"]),
        authority=tuple(by_section["AUTHORITY"]),
        size=int(size.group(1)) if size else 0,
    )


def txt_rdata(rdata: str) -> list[str]:
    """dig's presentation of one TXT record (``"a" "b"``) as its character-strings."""
    return [s.replace('\\"', '"') for s in re.findall(r'"((?:[^"\\]|\\.)*)"', rdata)]


def check_answer(ans: DigAnswer, name: str, rtype: str, values: list[str], ttl: int) -> list[str]:
    """What is wrong with ``ans`` for the expected record set; empty when it is right."""
    problems = []
    if ans.status != "NOERROR":
        problems.append(f"status {ans.status}")
    if "aa" not in ans.flags:
        problems.append("AA flag not set")
    rrs = [rr for rr in ans.rrs if rr[0] == name and rr[2] == rtype]
    if any(rr[1] != ttl for rr in rrs):
        problems.append(f"TTL {sorted({rr[1] for rr in rrs})} instead of {ttl}")
    if rtype == "AAAA":
        got = sorted(str(IPv6Address(rr[3])) for rr in rrs)
        if got != sorted(values):
            problems.append(f"addresses {got} instead of {sorted(values)}")
    else:
        got_txt = [txt_rdata(rr[3]) for rr in rrs]
        if got_txt != [values]:
            problems.append(f"TXT {got_txt} instead of {[values]}")
    return problems


def wait_ready(
    ns: str,
    proc: subprocess.Popen[bytes],
    server: str,
    source: str,
    probe: tuple[str, str],
    timeout: float,
) -> None:
    """Poll with dig until the server answers ``probe`` (name, type) with NOERROR (sixpn
    answers SERVFAIL until its first snapshot is loaded), or fail."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited with code {proc.returncode} before answering")
        status = dig(ns, server, source, *probe).status
        if status == "NOERROR":
            return
        last = status
        time.sleep(0.1)
    raise BenchError(
        f"server did not answer {' '.join(probe)} with NOERROR at {server} within "
        f"{timeout:.0f} s (last: {last})"
    )


def exe_of(pid: int) -> str:
    """The executable the PID runs now: after ``ip netns exec`` and ``taskset`` (and ``chrt``)
    have exec'd, the server's own (for `sixpn dns`: the venv's python, its script being run by
    the kernel's ``#!`` handling in the same PID)."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return "?"


WRAPPERS = frozenset({"ip", "taskset", "chrt", "nice", "env"})


def stray_threads(pid: int, cpu: int) -> dict[int, set[int]]:
    """Threads of ``pid`` (and its live descendants) allowed on other CPUs than ``cpu``: a
    server that sets its own affinity (Knot can, per UDP worker) would escape the pinning."""
    out: dict[int, set[int]] = {}
    for p in _descendants(pid):
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                allowed = os.sched_getaffinity(int(task.name))
            except OSError:
                continue
            if allowed != {cpu}:
                out[int(task.name)] = allowed
    return out


def thread_count(pid: int) -> int:
    return sum(len(list(Path(f"/proc/{p}/task").glob("*"))) for p in _descendants(pid))

"""The data-path benchmark's I/O: processes, CPU accounting, iperf3 and ping, and their parsing.

Rules that hold here:

- every process is started through :func:`spawn` (or :func:`run`) and stopped by PID
  (:func:`stop`); nothing is ever killed by name;
- ``ip netns exec`` and ``taskset`` both exec, so a spawned PID is the command's own;
- CPU shares come from ``/proc/stat`` (the whole machine) and ``/proc/PID/stat`` (utime+stime
  of every process alive at both ends of a window), read just before and just after a run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from dnsbench_measure import stop  # SIGTERM, then SIGKILL after a grace period; reaped

CLK_TCK = os.sysconf("SC_CLK_TCK")
IPERF_PORT = 5201


class BenchError(Exception):
    """The benchmark cannot go on: a missing tool, a tunnel that carries nothing, ..."""


@contextmanager
def shielded() -> Iterator[None]:
    """SIGINT and SIGTERM held back for the block and acted on when it ends: cleanup that a
    second Ctrl-C must not cut in half (a lab half torn down leaves its processes behind).

    Python runs signal handlers in the main thread whichever thread the kernel picked, so a
    per-thread mask would not do: the handlers are swapped for one that only takes note, then
    restored, and a noted signal is raised again. Main thread only (``signal.signal``)."""
    noted: list[int] = []
    me = os.getpid()

    def note(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != me:  # a forked helper (pyroute2's): it just ends
            os._exit(128 + signum)
        noted.append(signum)

    kinds = (signal.SIGINT, signal.SIGTERM)
    old = {kind: signal.signal(kind, note) for kind in kinds}
    try:
        yield
    finally:
        for kind, handler in old.items():
            signal.signal(kind, handler)
        if noted:
            signal.raise_signal(noted[0])


def run(cmd: Sequence[str], *, check: bool = True, timeout: float = 60) -> str:
    """Run a short command; its stdout. Raises BenchError naming the command on failure."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def ns_argv(ns: str, cmd: Sequence[str], cpu: int | None = None) -> list[str]:
    """``cmd`` inside namespace ``ns``, pinned to ``cpu`` when given (both wrappers exec)."""
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    return ["ip", "netns", "exec", ns, *pin, *cmd]


def spawn(
    ns: str,
    cmd: Sequence[str],
    log: Path,
    cpu: int | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in ``ns`` (its own session, output to ``log``); the PID is ``cmd``'s."""
    with log.open("ab") as out:
        return subprocess.Popen(
            ns_argv(ns, cmd, cpu),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
        )


def prioritize(pid: int, nice: int) -> None:
    """Every thread of ``pid`` to ``nice``, and its session's autogroup too: with the kernel's
    autogroup scheduling (one group per session) a plain nice value only weighs inside its
    session, so this is what holds the CPU against other sessions' load. Threads made later
    inherit it. No-op for ``nice == 0``."""
    if nice == 0:
        return
    with suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with suppress(OSError):  # a thread that just ended
                os.setpriority(os.PRIO_PROCESS, int(task.name), nice)
    with suppress(OSError):  # no autogroup (disabled, or a kernel without it)
        Path(f"/proc/{pid}/autogroup").write_text(f"{nice}\n")


def run_prioritized(cmd: Sequence[str], nice: int, timeout: float) -> tuple[int, str, str]:
    """Run ``cmd`` in a session of its own at ``nice`` (see :func:`prioritize`); (rc, out, err).
    Killed by its PID if it overstays ``timeout``."""
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        prioritize(proc.pid, nice)
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc.returncode, out, err


def pin(pid: int, cpu: int) -> None:
    """Every thread of ``pid`` to ``cpu`` (threads made later inherit it)."""
    run(["taskset", "-a", "-p", "-c", str(cpu), str(pid)])


def wait_for(check: object, timeout: float, what: str, step: float = 0.05) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def listening(ns: str, port: int) -> bool:
    out = run(["ip", "netns", "exec", ns, "ss", "-Hltn", f"sport = :{port}"], check=False)
    return bool(out.strip())


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0-100) of an ascending, non-empty sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * p // 100))  # ceil
    return sorted_values[int(rank) - 1]


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


# --- CPU accounting ------------------------------------------------------------------------------


@dataclass
class CpuSnapshot:
    t: float
    stat: list[int]  # the "cpu" line of /proc/stat: user nice system idle iowait irq softirq steal
    procs: dict[int, tuple[str, int]]  # pid -> (comm, utime+stime ticks)


def _proc_ticks(pid: int) -> tuple[str, int] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return comm, int(fields[11]) + int(fields[12])


def snapshot() -> CpuSnapshot:
    procs: dict[int, tuple[str, int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            got = _proc_ticks(int(entry.name))
            if got is not None:
                procs[int(entry.name)] = got
    line = Path("/proc/stat").read_text().splitlines()[0]
    return CpuSnapshot(time.monotonic(), [int(x) for x in line.split()[1:9]], procs)


@dataclass
class CpuUsage:
    """CPU over one window, each figure in % of one core (2 cores busy = 200)."""

    wall_s: float
    busy: float
    softirq: float  # irq + softirq: forwarding, veth, nftables, TCP receive, ...
    steal: float
    roles: dict[str, float] = field(default_factory=dict)  # named PIDs (wireguard-go, iperf3)
    top: list[tuple[str, int, float]] = field(default_factory=list)  # (comm, pid, %)


def usage(a: CpuSnapshot, b: CpuSnapshot, roles: Mapping[str, Sequence[int]]) -> CpuUsage:
    wall = b.t - a.t
    d = [y - x for x, y in zip(a.stat, b.stat, strict=True)]
    ticks = wall * CLK_TCK / 100  # ticks per 1% of one core

    def pct(t: int) -> float:
        return t / ticks if ticks > 0 else 0.0

    busy = d[0] + d[1] + d[2] + d[5] + d[6] + d[7]
    deltas: dict[int, tuple[str, int]] = {}
    for pid, (comm, t1) in b.procs.items():
        if pid in a.procs and a.procs[pid][0] == comm:
            deltas[pid] = (comm, t1 - a.procs[pid][1])
    role_pct = {
        role: pct(sum(deltas.get(p, ("", 0))[1] for p in pids)) for role, pids in roles.items()
    }
    top = sorted(deltas.items(), key=lambda kv: kv[1][1], reverse=True)[:8]
    return CpuUsage(
        wall,
        pct(busy),
        pct(d[5] + d[6]),
        pct(d[7]),
        role_pct,
        [(comm, pid, pct(t)) for pid, (comm, t) in top if t > 0],
    )


# --- iperf3 and ping -----------------------------------------------------------------------------


@dataclass
class IperfResult:
    gbps: float  # received by the server, omitted seconds excluded
    retransmits: int
    sender_cpu: float  # iperf3's own figures, % of one core
    receiver_cpu: float
    cpu: CpuUsage

    def path_cpu(self) -> float:
        """% of one core spent on the data path: both wireguard-go daemons, both iperf3 ends
        (the client as iperf3 reports it), and the machine's irq+softirq (forwarding, nftables,
        veths, bridge, TCP receive: without IRQ time accounting, ticks that land in softirq)."""
        roles = self.cpu.roles
        mine = ("wireguard-go client", "wireguard-go server", "iperf3 server")
        return sum(roles.get(r, 0.0) for r in mine) + self.sender_cpu + self.cpu.softirq

    def cost(self) -> float:
        """Data-path CPU per Gbit: core-seconds spent per Gbit carried."""
        return self.path_cpu() / 100 / self.gbps if self.gbps > 0 else float("nan")


def iperf(
    client_ns: str,
    server_addr: str,
    *,
    seconds: float,
    omit: int,
    cpu: int | None,
    roles: Mapping[str, Sequence[int]],
    nice: int = 0,
    bitrate: str | None = None,
) -> IperfResult:
    """One TCP run from ``client_ns`` to the iperf3 server listening on ``server_addr``."""
    cmd = ["iperf3", "-6", "-c", server_addr, "-p", str(IPERF_PORT), "-J"]
    cmd += ["-t", f"{seconds:g}", "-O", str(omit)]
    if bitrate is not None:
        cmd += ["-b", bitrate]
    before = snapshot()
    rc, out, err = run_prioritized(ns_argv(client_ns, cmd, cpu), nice, seconds + omit + 60)
    after = snapshot()
    try:
        doc = json.loads(out)
    except json.JSONDecodeError as exc:
        raise BenchError(f"iperf3 to {server_addr}: no JSON ({err.strip()})") from exc
    if "error" in doc or rc != 0:
        raise BenchError(f"iperf3 to {server_addr}: {doc.get('error', err.strip())}")
    end = doc["end"]
    return IperfResult(
        gbps=end["sum_received"]["bits_per_second"] / 1e9,
        retransmits=int(end["sum_sent"].get("retransmits", 0)),
        sender_cpu=float(end["cpu_utilization_percent"]["host_total"]),
        receiver_cpu=float(end["cpu_utilization_percent"]["remote_total"]),
        cpu=usage(before, after, roles),
    )


@dataclass
class PingResult:
    sent: int
    rtts_ms: list[float]  # ascending

    @property
    def lost(self) -> int:
        return self.sent - len(self.rtts_ms)

    @property
    def avg(self) -> float:
        return sum(self.rtts_ms) / len(self.rtts_ms) if self.rtts_ms else float("nan")

    def p(self, q: float) -> float:
        return percentile(self.rtts_ms, q)


_RTT = re.compile(r"time=([0-9.]+) ms")


def ping(
    ns: str, addr: str, *, count: int, interval: float, cpu: int | None, nice: int = 0
) -> PingResult:
    """``ping -6 -c COUNT -i INTERVAL`` from ``ns``; every reply's RTT (ms, 3 decimals)."""
    cmd = ["ping", "-6", "-n", "-c", str(count), "-i", f"{interval:g}", "-W", "1", addr]
    _, out, _ = run_prioritized(ns_argv(ns, cmd, cpu), nice, count * interval + 30)
    return PingResult(count, sorted(float(x) for x in _RTT.findall(out)))


# --- a setup under test --------------------------------------------------------------------------


@dataclass
class Setup:
    """Two endpoints of one data path: where iperf3's client and server run, and the daemons.

    ``wg_pids`` maps "client side" / "server side" to the wireguard-go PID carrying that side's
    packets; ``cpus`` the CPU each side is pinned to (None: not pinned).
    """

    name: str
    client_ns: str
    server_ns: str
    server_addr: str
    wg_pids: dict[str, int]
    other_pids: dict[str, list[int]] = field(default_factory=dict)  # e.g. the fabric's agents
    cpus: dict[str, int | None] = field(default_factory=lambda: {"client": None, "server": None})
    iperf_server: subprocess.Popen[bytes] | None = None
    nice: int = 0

    def roles(self) -> dict[str, list[int]]:
        out = {f"wireguard-go {side}": [pid] for side, pid in self.wg_pids.items()}
        if self.iperf_server is not None:
            out["iperf3 server"] = [self.iperf_server.pid]
        out.update(self.other_pids)
        return out


def apply_placement(setup: Setup, mode: str, nice: int) -> None:
    """Pinning: ``split``, the client side (iperf3 client, its wireguard-go) on CPU 0, the server
    side on CPU 1; ``none``, every process left to the scheduler. Priority: the wireguard-go
    daemons (and later iperf3 and ping) at ``nice`` in autogroups of their own."""
    setup.nice = nice
    for pid in setup.wg_pids.values():
        prioritize(pid, nice)
    if mode == "none":
        return
    setup.cpus = {"client": 0, "server": 1}
    for side, pid in setup.wg_pids.items():
        pin(pid, 0 if side == "client" else 1)


def start_iperf_server(setup: Setup, log: Path) -> None:
    setup.iperf_server = spawn(
        setup.server_ns, ["iperf3", "-s", "-p", str(IPERF_PORT)], log, setup.cpus["server"]
    )
    prioritize(setup.iperf_server.pid, setup.nice)
    wait_for(lambda: listening(setup.server_ns, IPERF_PORT), 10, f"iperf3 in {setup.server_ns}")


def stop_iperf_server(setup: Setup) -> None:
    with shielded():
        if setup.iperf_server is not None:
            stop(setup.iperf_server)
            setup.iperf_server = None


def tun_owner(ns: str, ifname: str) -> int:
    """The PID holding ``ifname``'s tun in namespace ``ns`` (the wireguard-go daemon), found by
    what it holds (``iff:`` in its tun descriptor's fdinfo), never by its name."""
    for pid in (int(p) for p in run(["ip", "netns", "pids", ns]).split()):
        with suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") != "/dev/net/tun":
                    continue
                if f"iff:\t{ifname}\n" in Path(f"/proc/{pid}/fdinfo/{fd}").read_text():
                    return pid
    raise BenchError(f"no process holds the tun of {ifname} in {ns}")

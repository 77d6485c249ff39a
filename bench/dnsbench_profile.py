"""Where the DNS servers' CPU goes at the paced rate: py-spy (sixpn) and perf (every server).

After the measured rounds, every server is started once more and given the paced phase again
(same dnsperf command, same SCHED_RR) under perf, and sixpn once more under py-spy; these
phases are reported apart and never enter the table or the verdict (a sampler costs the target
some CPU). perf's samples are grouped by path (user space; the kernel by system call, the
sends' loopback delivery to the client apart) and turned into us/query with the CPU the server
used in that phase, so the three servers' costs compare path by path.

- **py-spy** (``py-spy record --pid PID --nonblocking --rate 1000 --format raw``, from the venv
  or ``$PATH``; ``pip install py-spy`` into the venv): the Python stacks of the server's thread,
  samples py-spy deems idle left out. Time spent in C (the ``_fastpath`` extension, the kernel
  under a system call) shows as the Python line that called it. Summarised as self time per
  line and per function (the leaf frame) only: ``--nonblocking`` reads the stack while it
  changes, so parent frames are now and then torn (``EpollSelector.select`` "calling"
  ``DnsServer._drain_c``), and inclusive times would be wrong. The blocking mode (a ptrace stop
  per sample) was tried: consistent stacks, but its samples landed almost only on the two lines
  that make system calls (the stops happen there), hiding the interpreter's own work that perf
  shows in libpython; perf is the CPU-time truth, py-spy names the Python lines.
- **perf** (``perf record -e cpu-clock -F 4999 -g -p PID``): every CPU sample of the process,
  kernel included, by shared object and by symbol (no Python frames: libpython's C functions).

The samplers run pinned to the client's CPU (1), outside the namespace, at the default
priority, and are stopped with SIGINT by PID once dnsperf is done (both then write their
output). Their raw files stay in ``bench/out/`` next to the report
(``dns-<stamp>-profile-<server>-perf.data``, ``dns-<stamp>-profile-sixpn-py-spy.txt``); ``python
bench/dnsbench_profile.py bench/out/dns-<stamp>.json`` prints the per-path table again from them.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dnsbench_measure import PerfRun, run, stop

PYSPY_RATE = 1000
PERF_FREQ = 4999
TOP = 14
PERF_REPORT = ["perf", "report", "--stdio", "--no-children", "-q", "-n", "-g", "none"]


@dataclass
class Profile:
    """One profiled paced phase: the sampler's command, where its raw output is, the summary."""

    server: str
    tool: str
    cmd: list[str]
    raw: Path
    samples: int = 0
    lines: list[str] = field(default_factory=list)  # Markdown
    paths: Counter[str] = field(default_factory=Counter)  # perf: samples by coarse path
    run: PerfRun | None = None  # the dnsperf phase it sampled
    error: str = ""


def raw_name(stamp: str, server: str, tool: str) -> str:
    """The sampler's raw file, next to the run's report ``dns-<stamp>.md``."""
    return f"dns-{stamp}-profile-{server}-{tool}.{'txt' if tool == 'py-spy' else 'data'}"


def pyspy_binary() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def perf_binary() -> str | None:
    return shutil.which("perf")


def available() -> list[str]:
    """The profilers found: ``py-spy`` and/or ``perf``."""
    return [name for name, found in (("py-spy", pyspy_binary()), ("perf", perf_binary())) if found]


def sampler_command(tool: str, pid: int, raw: Path, cpu: int) -> list[str]:
    if tool == "py-spy":
        exe = pyspy_binary() or "py-spy"
        args = ["record", "--pid", str(pid), "--nonblocking", "--rate", str(PYSPY_RATE)]
        args += ["--format", "raw", "--output", str(raw)]
    else:
        exe = perf_binary() or "perf"
        args = ["record", "-e", "cpu-clock", "-F", str(PERF_FREQ), "-g", "-p", str(pid)]
        args += ["-o", str(raw), "--quiet"]
    return ["taskset", "-c", str(cpu), exe, *args]


@contextmanager
def sampling(server: str, tool: str, pid: int, raw: Path, log: Path, cpu: int) -> Iterator[Profile]:
    """The sampler runs on ``pid`` for the body's duration; SIGINT then, and its output read."""
    prof = Profile(server, tool, sampler_command(tool, pid, raw, cpu), raw)
    raw.unlink(missing_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            prof.cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        time.sleep(1.0 if tool == "py-spy" else 0.3)  # attach (py-spy reads the layout first)
        yield prof
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)  # perf and py-spy write their files on SIGINT
            except subprocess.TimeoutExpired:
                stop(proc)
    if proc.returncode not in (0, -signal.SIGINT, 130) or not raw.exists():
        tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
        prof.error = f"{tool} exited with {proc.returncode}, no output: {tail.strip()}"
        return
    summarise = _summarise_pyspy if tool == "py-spy" else _summarise_perf
    try:
        summarise(prof)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        prof.error = f"{tool}: could not read {raw.name}: {exc}"


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::(?P<line>\d+))?\)$")


def _short(frame: str, with_line: bool) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    file = m.group("file")
    for marker in ("site-packages/", "lib/python3", "src/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    line = f":{m.group('line')}" if with_line and m.group("line") else ""
    return f"{m.group('func')} ({file}{line})"


def _summarise_pyspy(prof: Profile) -> None:
    """py-spy's raw output is folded stacks (``frame;frame;... count``), root first."""
    self_line: Counter[str] = Counter()
    self_func: Counter[str] = Counter()
    total = 0
    for line in prof.raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        self_line[_short(frames[-1], True)] += n
        self_func[_short(frames[-1], False)] += n
    prof.samples = total
    if not total:
        raise ValueError("no samples")

    def pct(n: int) -> str:
        return f"{100 * n / total:.1f}%"

    prof.lines = [
        f"py-spy: {total:,} samples at {PYSPY_RATE} Hz (those py-spy deems idle left out). "
        "Self time by line:",
        "",
        "| line (self) | share |",
        "|---|---:|",
        *(f"| `{k}` | {pct(n)} |" for k, n in self_line.most_common(TOP)),
        "",
        "Self time by function: "
        + ", ".join(f"`{k}` {pct(n)}" for k, n in self_func.most_common(8))
        + ".",
    ]


_REPORT_LINE = re.compile(r"^\s*([\d.]+)%\s+(\d+)\s+(.*\S)\s*$")


def _perf_report(raw: Path, sort: str) -> list[tuple[float, int, str]]:
    """``perf report`` rows (share %, samples, key), self time, no call graphs."""
    out = run(
        [*PERF_REPORT, "-i", str(raw), "--sort", sort],
        timeout=300,
    )
    rows = []
    for line in out.splitlines():
        if m := _REPORT_LINE.match(line):
            rows.append((float(m.group(1)), int(m.group(2)), " ".join(m.group(3).split())))
    return rows


_SCRIPT_FRAME = re.compile(r"^\s*[0-9a-f]+ (?P<sym>.*) \((?P<dso>[^()]*)\)$")
# Kernel frames that say where a sample is, looked for from the leaf up: the first found names
# the sample's path (a system call), refined for sends by the loopback delivery the sender
# does itself (softirq: the client's socket gets the datagram and its reader is woken).
_LOOPBACK = "net_rx_action"


SEND_CALLS = ("sendto", "sendmsg", "sendmmsg", "write", "writev")
RECV_CALLS = ("recvfrom", "recvmsg", "recvmmsg", "read", "readv")
WAIT_CALLS = ("epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll", "select", "pselect6")
# The coarse paths, in the order the comparison table shows them.
PATHS = (
    "user space",
    "kernel: send, the loopback delivery to the client and its wake-up",
    "kernel: send, the rest",
    "kernel: receive",
    "kernel: wait (epoll_wait, poll, ...)",
    "kernel: other system calls",
    "kernel: no system call (interrupts, scheduler)",
)


def perf_paths(raw: Path) -> tuple[Counter[str], Counter[str]]:
    """Samples by path, fine (user space by shared object, the kernel by system call) and
    coarse (:data:`PATHS`). A send's loopback delivery (``net_rx_action`` under it: the client's
    socket gets the datagram and its reader is woken) is done in the sender's context."""
    out = run(["perf", "script", "-i", str(raw), "-F", "ip,sym,dso"], timeout=600)
    fine: Counter[str] = Counter()
    coarse: Counter[str] = Counter()
    for block in out.split("\n\n"):
        frames = [m for line in block.splitlines() if (m := _SCRIPT_FRAME.match(line))]
        if not frames:
            continue
        leaf = frames[0]
        if not leaf.group("dso").startswith("[kernel"):
            fine[f"user: {Path(leaf.group('dso')).name}"] += 1
            coarse[PATHS[0]] += 1
            continue
        syms = [f.group("sym") for f in frames if f.group("dso").startswith("[kernel")]
        call = next((s for s in syms if s.startswith("__x64_sys_")), None)
        if call is None:
            fine[PATHS[6]] += 1
            coarse[PATHS[6]] += 1
            continue
        name = call.removeprefix("__x64_sys_")
        if name in SEND_CALLS:
            loopback = _LOOPBACK in syms
            fine[f"kernel: {name}" + (", loopback delivery + wake-up" if loopback else "")] += 1
            coarse[PATHS[1] if loopback else PATHS[2]] += 1
            continue
        fine[f"kernel: {name}"] += 1
        if name in RECV_CALLS:
            coarse[PATHS[3]] += 1
        elif name in WAIT_CALLS:
            coarse[PATHS[4]] += 1
        else:
            coarse[PATHS[5]] += 1
    return fine, coarse


def path_table(shares: dict[str, Counter[str]], paced_us: dict[str, float]) -> list[str]:
    """Markdown: per server (column) and coarse path (row), the path's share of the server's
    perf samples applied to its measured CPU us/query at the paced rate: ``us (share%)``."""
    servers = [name for name in shares if sum(shares[name].values())]
    if not servers:
        return []
    rows = [path for path in PATHS if any(shares[name][path] for name in servers)]
    lines = [
        "| path | " + " | ".join(f"{name} us/query (share)" for name in servers) + " |",
        "|---|" + "---:|" * len(servers),
    ]
    for path in rows:
        cells = []
        for name in servers:
            share = shares[name][path] / sum(shares[name].values())
            cells.append(f"{share * paced_us.get(name, math.nan):.2f} ({100 * share:.1f}%)")
        lines.append(f"| {path} | " + " | ".join(cells) + " |")
    totals = " | ".join(f"**{paced_us.get(name, math.nan):.2f}**" for name in servers)
    lines.append(f"| all (measured, median over rounds) | {totals} |")
    return lines


def _summarise_perf(prof: Profile) -> None:
    by_dso = [(p, d) for p, _, d in _perf_report(prof.raw, "dso")]
    sym_rows = _perf_report(prof.raw, "dso,sym")
    prof.samples = sum(n for _, n, _ in sym_rows)
    by_sym = [(p, s) for p, _, s in sym_rows]
    if not by_dso:
        raise ValueError("perf report gave no rows")
    kernel = sum(p for p, d in by_dso if d.startswith("[kernel"))
    paths, prof.paths = perf_paths(prof.raw)
    total = sum(paths.values()) or 1
    prof.lines = [
        f"perf (cpu-clock, {PERF_FREQ} Hz, {prof.samples:,} samples): by shared object: "
        + ", ".join(f"{d} {p:.1f}%" for p, d in by_dso[:8])
        + f" (kernel {kernel:.1f}%).",
        "",
        "By path (user space by the leaf's shared object; kernel samples by the system call "
        "they are under):",
        "",
        "| path | share |",
        "|---|---:|",
        *(f"| {k} | {100 * n / total:.1f}% |" for k, n in paths.most_common(TOP)),
        "",
        "Top symbols (self):",
        "",
        "| shared object, symbol | share |",
        "|---|---:|",
        *(f"| `{s}` | {p:.1f}% |" for p, s in by_sym[:TOP]),
    ]


def main(argv: list[str] | None = None) -> int:
    """The per-path table again from a run's files: its JSON (the measured paced CPU, median
    over rounds) and the perf data it left next to it
    (``dns-<stamp>-profile-<server>-perf.data``)."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("report", type=Path, help="bench/out/dns-<stamp>.json")
    args = p.parse_args(argv)
    results = json.loads(args.report.read_text())
    paced: dict[str, list[float]] = {}
    for r in results:
        paced.setdefault(r["server"], []).append(r["paced"]["cpu_us_per_query"])
    shares = {}
    for server in paced:
        raw = args.report.parent / raw_name(args.report.stem.removeprefix("dns-"), server, "perf")
        if raw.exists():
            shares[server] = perf_paths(raw)[1]
    print("\n".join(path_table(shares, {k: statistics.median(v) for k, v in paced.items()})))
    return 0


if __name__ == "__main__":
    sys.exit(main())

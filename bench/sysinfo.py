"""What a benchmark report says about the machine it ran on (shared by the bench scripts)."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def first(path: str, key: str = "") -> str:
    """The value of the first line of ``path`` starting with ``key`` ("?" if none)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[-1].strip() if key else line.strip()
    except OSError:
        pass
    return "?"


def git(*argv: str) -> str:
    done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def machine() -> dict[str, Any]:
    """Kernel, distribution, CPU, memory, Python, the commit and the load at the start."""
    return {
        "kernel": platform.release(),
        "debian": first("/etc/debian_version"),
        "cpu": first("/proc/cpuinfo", "model name"),
        "cpus": os.cpu_count(),
        "memory": first("/proc/meminfo", "MemTotal"),
        "python": platform.python_version(),
        "git_head": git("rev-parse", "--short", "HEAD"),
        "loadavg_start": first("/proc/loadavg"),
    }


def memory_gib() -> str:
    """Total memory, e.g. "23.5 GiB" ("?" if unknown)."""
    kib = first("/proc/meminfo", "MemTotal").split()[0]
    return f"{int(kib) / 2**20:.1f} GiB" if kib.isdigit() else "?"


def wireguard_backend() -> str:
    """What the agent would use (``wg.detect_backend``: it probes with a link, so root only)."""
    if os.geteuid() != 0:
        return "unknown (needs root to probe)"
    try:
        from sixpn.agent.linux import wg

        return wg.detect_backend()
    except Exception as exc:  # no backend at all, or pyroute2 missing: say so
        return f"none ({exc})"


# tool -> (command, regular expression of the version in its output; first line if None)
TOOLS: dict[str, tuple[list[str], str | None]] = {
    "wireguard-go": (["wireguard-go", "--version"], r"v?(\d[\w.]*)"),
    "wireguard-tools": (["wg", "--version"], r"v(\d[\w.]*)"),
    "dnsperf": (["dnsperf", "-h"], r"Version (\S+)"),
    "unbound": (["unbound", "-V"], r"Version (\S+)"),
    "knot": (["knotd", "-V"], r"(\d+\.\d+\.\d+)"),
    "etcd": (["etcd", "--version"], r"etcd Version: (\S+)"),
    "iperf3": (["iperf3", "--version"], r"iperf (\S+)"),
    "nftables": (["nft", "--version"], r"v(\S+)"),
    "socat": (["socat", "-V"], r"socat version (\S+)"),
    "postgresql": (["psql", "--version"], r"(\d+\.\d+)"),
    "sqlite": ([sys.executable, "-c", "import sqlite3; print(sqlite3.sqlite_version)"], None),
}


def tool_version(argv: list[str], pattern: str | None) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    out = (done.stdout + done.stderr).strip()
    m = re.search(pattern, out) if pattern else None
    return m.group(1) if m else (out.splitlines()[0] if out else "?")


def versions() -> dict[str, str]:
    """Python and every tool the benchmarks run, as each reports itself."""
    found = {"python": platform.python_version()}
    found |= {name: tool_version(argv, pattern) for name, (argv, pattern) in TOOLS.items()}
    return found


def git_revision() -> str:
    """Short HEAD, and how many files have uncommitted changes."""
    dirty = [line for line in git("status", "--porcelain").splitlines() if line.strip()]
    head = git("rev-parse", "--short", "HEAD") or "?"
    return f"{head} (+ uncommitted changes in {len(dirty)} files)" if dirty else head

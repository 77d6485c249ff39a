"""What a benchmark report says about the machine it ran on (shared by the bench scripts)."""

from __future__ import annotations

import os
import platform
import subprocess
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

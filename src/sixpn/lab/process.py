"""Processes the lab starts and stops: by PID only, never by name (ARCHITECTURE habit).

``spawn_logged`` starts a process in a session of its own with its output in a log file; the
caller writes its PID into lab.json before anything else. ``stop_pid`` signals that PID, waits
a grace period, SIGKILLs it if it lingers, and returns once it is gone (a zombie of an earlier
command, left for init to reap, counts as gone). ``pid_runs`` checks that a PID read from an
old lab.json still runs what the lab started before it is signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def spawn_logged(argv: list[str], log: Path, *, cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a session of its own, its output appended to ``log``; the caller
    records its PID (``stop_pid`` stops it)."""
    out = open(log, "ab")  # noqa: SIM115 - the child keeps it
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        out.close()


def log_tail(log: Path, lines: int = 5) -> str:
    """The last ``lines`` of ``log`` on one line, for an error message."""
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def pid_runs(pid: int, marker: str) -> bool:
    """``pid`` still runs what the lab started (its command line names ``marker``): a PID in
    an old lab.json may have been reused by then."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return marker.encode() in cmdline


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    return not exited(pid)


def exited(pid: int) -> bool:
    """A process of another (earlier) command, now init's child, that has exited: a zombie
    until init reaps it, which some inits (this machine's) do seconds later; waiting for that
    made every PID ``down`` stopped cost about 2 s."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def stop_pid(pid: int, sig: int = signal.SIGTERM, grace: float = 5.0) -> None:
    """Send ``sig`` to ``pid``, SIGKILL it after ``grace`` seconds, and wait until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while alive(pid):
            time.sleep(0.02)


def kill_namespace_processes(ns: str) -> None:
    """Stop what still runs inside a lab namespace (wireguard-go daemons, by their PIDs)."""
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
    for pid in (int(p) for p in out.stdout.split()):
        stop_pid(pid, grace=2.0)

"""TCP forwarder benchmark: `sixpn forward` against socat, the tool operators use by hand, on the
same machine in the same run: one stream's throughput, connections per second, CPU per MB and
per connection.

Method
------
1. Everything is on loopback (127.0.0.1). The forwarder under test runs pinned to CPU 0
   (``taskset -c 0``); the targets and the clients are pinned to CPU 1, so the forwarder has a
   core of its own and what it costs is its own CPU time.
2. Forwarders, each started fresh for every round and torn down after it (by PID):
   - **sixpn**: ``python -m sixpn forward 127.0.0.1:P 127.0.0.1:T`` as shipped (log level INFO,
     the default: one line per connection, to a file);
   - **sixpn, WARNING**: the same with ``SIXPN_LOG_LEVEL=WARNING`` (no per-connection line), to
     show what the log line costs;
   - **socat** (the anchor): ``socat TCP-LISTEN:P,fork,reuseaddr TCP:127.0.0.1:T``, one child
     process per connection (socat's default 8 KiB buffer, as typed by hand);
   - **socat, backlog=1024**: the same with ``,backlog=1024`` on the listener: socat listens
     with a backlog of 5 by default, sixpn with min(1024, SOMAXCONN), and with 8 connections at
     a time a full backlog drops SYNs, which the client retries only after 1 s.
   The CPU of a forwarder is utime + stime from ``/proc/PID/stat`` (all threads), read before and
   after each test; for socat also its children's: ``cutime + cstime`` of the parent (children
   it has reaped) plus utime + stime (+ their own reaped children) of any child still alive.
3. **One stream**: ``iperf3 -s`` is the target; ``iperf3 -c 127.0.0.1 -p P -t S -J`` the client
   (its control and data connections both go through the forwarder). Gbit/s is iperf3's
   receiver figure; CPU per MB is the forwarder's CPU over the bytes the receiver got. The
   same client straight to iperf3 (no forwarder) is the ceiling.
4. **Connections per second**: an echo server of the benchmark's own (asyncio, one process) is
   the target; a client process (asyncio) opens ``--connections`` connections (default 2,000)
   with 8 at a time (``--concurrency``), each sending 100 bytes, reading the 100-byte echo back
   (checked) and closing. conn/s = connections / client wall time; CPU per connection = the
   forwarder's CPU / connections. Straight to the echo server is the ceiling (the client and
   the echo server share CPU 1: when a forwarder comes near it, the client side is the limit).
5. ``--rounds`` (default 3) rounds; in each, direct first, then the forwarders in turn (sixpn,
   sixpn WARNING, socat, socat backlog=1024). Medians over rounds in a Markdown table on stdout
   and in ``bench/out/forward-<UTC timestamp>.md``, with a JSON twin holding every measure.

Every process started (targets, forwarders, clients) is stopped by its PID on the way out, also
on failure. ``--quick``: 1 round, 2 s streams, 300 connections.
Run: ``.venv/bin/python bench/forward_bench.py [--quick]`` (socat, iperf3 and taskset needed;
``make bench-forward`` installs them); see ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "out"
ROOT = Path(__file__).resolve().parent.parent
FORWARDER_CPU, CLIENT_CPU = 0, 1
HOST = "127.0.0.1"
PAYLOAD = bytes(range(100))
TICK = os.sysconf("SC_CLK_TCK")
SIDES = ("direct", "sixpn", "sixpn-warning", "socat", "socat-backlog")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round, 2 s, 300 conns")
    p.add_argument("--rounds", type=int, help="rounds (default 3)")
    p.add_argument("--seconds", type=int, help="length of one iperf3 stream (default 5)")
    p.add_argument("--connections", type=int, help="connections per test (default 2000)")
    p.add_argument("--concurrency", type=int, default=8, help="connections at a time (8)")
    p.add_argument("--out", type=Path, default=OUT_DIR, help="report folder (bench/out)")
    # helper processes, run by the benchmark itself
    p.add_argument("--echo", type=int, help=argparse.SUPPRESS)  # echo server on this port
    p.add_argument("--connect", type=int, help=argparse.SUPPRESS)  # conn/s client to this port
    args = p.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.seconds = args.seconds or (2 if args.quick else 5)
    args.connections = args.connections or (300 if args.quick else 2000)
    if min(args.rounds, args.seconds, args.connections, args.concurrency) < 1:
        p.error("--rounds, --seconds, --connections, --concurrency: at least 1")
    return args


# -- helper processes: the echo target and the connections client ------------------------------


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool:
        return False  # close once the client is done


async def echo_server(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, HOST, port, backlog=1024, reuse_address=True)
    async with server:
        await server.serve_forever()


async def connect_client(port: int, total: int, concurrency: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    left = [total]
    failures: list[str] = []

    async def one() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (HOST, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_sendall(sock, PAYLOAD)
            got = b""
            while len(got) < len(PAYLOAD):
                chunk = await loop.sock_recv(sock, 4096)
                if not chunk:
                    break
                got += chunk
            if got != PAYLOAD:
                failures.append(f"echo of {len(got)} bytes, not the 100 sent")
        except OSError as exc:
            failures.append(str(exc))
        finally:
            sock.close()

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await one()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return {"connections": total, "wall_s": wall, "failures": len(failures), "first": failures[:3]}


# -- processes and CPU accounting --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port (from /proc/net/tcp: no probe connection,
    which iperf3 would take for a client)."""
    want = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want and fields[3] == "0A":
            return True
    return False


def start(
    argv: list[str], cpu: int, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``taskset -c CPU ARGV``; taskset execs, so the PID is the command's own."""
    with log.open("ab") as out:
        return subprocess.Popen(
            ["taskset", "-c", str(cpu), *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_listening(proc: subprocess.Popen[bytes], port: int, what: str, log: Path) -> None:
    deadline = time.monotonic() + 10
    while not listening(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-600:] if log.exists() else ""
            raise SystemExit(f"forward bench: {what} is not listening on {port}:\n{tail}")
        time.sleep(0.02)


def _stat(pid: int) -> list[int]:
    """(utime, stime, cutime, cstime) in ticks; zeros if the process is gone."""
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return [0, 0, 0, 0]
    return [int(x) for x in rest[11:15]]


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                kids.append(int(entry.name))
    return kids


def cpu_seconds(pid: int) -> float:
    """The process's CPU, its reaped children's, and that of the children still alive."""
    ticks = sum(_stat(pid))
    for kid in _children(pid):
        ticks += sum(_stat(kid))
    return ticks / TICK


# -- the measures ------------------------------------------------------------------------------


def forwarder_argv(side: str, port: int, target: int) -> tuple[list[str], dict[str, str]]:
    if side.startswith("socat"):
        listen = f"TCP-LISTEN:{port},bind={HOST},fork,reuseaddr"
        if side == "socat-backlog":
            listen += ",backlog=1024"  # socat's default is 5; sixpn's min(1024, SOMAXCONN)
        return ["socat", listen, f"TCP:{HOST}:{target}"], {}
    argv = [str(ROOT / ".venv/bin/python"), "-m", "sixpn", "forward"]
    env = {"SIXPN_LOG_LEVEL": "WARNING"} if side == "sixpn-warning" else {}
    return [*argv, f"{HOST}:{port}", f"{HOST}:{target}"], env


@contextmanager
def forwarder(side: str, target: int, tmp: Path) -> Iterator[tuple[int, int | None]]:
    """(port to use, PID to account) for a side; direct is the target itself, no PID."""
    if side == "direct":
        yield target, None
        return
    port = free_port()
    argv, env = forwarder_argv(side, port, target)
    log = tmp / f"{side}.log"
    proc = start(argv, FORWARDER_CPU, log, env)
    try:
        wait_listening(proc, port, side, log)
        yield port, proc.pid
        if proc.poll() is not None:
            raise SystemExit(f"forward bench: {side} died (see {log})")
    finally:
        stop(proc)


def settle(pid: int | None) -> None:
    """Let socat's per-connection children exit and be reaped before the CPU is read."""
    if pid is None:
        return
    deadline = time.monotonic() + 3
    while _children(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def stream(port: int, pid: int | None, seconds: int) -> dict[str, float]:
    before = cpu_seconds(pid) if pid else 0.0
    run = subprocess.run(
        [
            "taskset",
            "-c",
            str(CLIENT_CPU),
            "iperf3",
            "-c",
            HOST,
            "-p",
            str(port),
            "-t",
            str(seconds),
            "-J",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    )
    settle(pid)
    cpu = cpu_seconds(pid) - before if pid else 0.0
    try:
        end = json.loads(run.stdout)["end"]["sum_received"]
    except (ValueError, KeyError):
        msg = f"forward bench: iperf3 failed through {port}: {run.stdout[-600:]}"
        raise SystemExit(msg) from None
    mb = end["bytes"] / 1e6
    return {
        "gbit_s": end["bits_per_second"] / 1e9,
        "mb": mb,
        "cpu_s": cpu,
        "cpu_ms_per_mb": cpu * 1000 / mb,
    }


def connections(port: int, pid: int | None, args: argparse.Namespace) -> dict[str, float]:
    before = cpu_seconds(pid) if pid else 0.0
    run = subprocess.run(
        [
            *("taskset", "-c", str(CLIENT_CPU), sys.executable, __file__, "--connect", str(port)),
            *("--connections", str(args.connections), "--concurrency", str(args.concurrency)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    settle(pid)
    cpu = cpu_seconds(pid) - before if pid else 0.0
    if run.returncode:
        raise SystemExit(f"forward bench: the client failed: {run.stderr[-600:]}")
    res = json.loads(run.stdout)
    if res["failures"]:
        raise SystemExit(f"forward bench: {res['failures']} connections failed: {res['first']}")
    n = res["connections"]
    return {"conn_s": n / res["wall_s"], "cpu_s": cpu, "cpu_us_per_conn": cpu * 1e6 / n}


# -- report ------------------------------------------------------------------------------------


def med(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def report(
    results: dict[str, dict[str, list[dict[str, float]]]], args: argparse.Namespace, stamp: str
) -> str:
    lines = [
        f"# TCP forwarder benchmark, {stamp}",
        "",
        f"Loopback, forwarder on CPU {FORWARDER_CPU}, clients and targets on CPU {CLIENT_CPU}; "
        f"median of {args.rounds} round(s). One stream: iperf3, {args.seconds} s. Connections: "
        f"{args.connections} x (connect, 100 bytes each way, close), {args.concurrency} at a time.",
        "",
        "| path | one stream, Gbit/s | CPU ms/MB | conn/s | CPU us/conn |",
        "|---|---:|---:|---:|---:|",
    ]
    names = {
        "direct": "direct (ceiling)",
        "sixpn": "sixpn forward",
        "sixpn-warning": "sixpn forward, log WARNING",
        "socat": "socat fork (anchor)",
        "socat-backlog": "socat fork, backlog=1024",
    }
    for side in SIDES:
        s, c = results[side]["stream"], results[side]["conn"]
        fwd = side != "direct"
        cpu_mb = f"{med(s, 'cpu_ms_per_mb'):.3f}" if fwd else "-"
        cpu_conn = f"{med(c, 'cpu_us_per_conn'):.0f}" if fwd else "-"
        lines.append(
            f"| {names[side]} | {med(s, 'gbit_s'):.2f} | {cpu_mb} | {med(c, 'conn_s'):.0f} "
            f"| {cpu_conn} |"
        )
    lines.append("")
    six = results["sixpn"]
    for anchor in ("socat", "socat-backlog"):
        soc = results[anchor]
        ratios = [
            med(six[test], key) / med(soc[test], key)
            for test, key in (
                ("stream", "gbit_s"),
                ("stream", "cpu_ms_per_mb"),
                ("conn", "conn_s"),
                ("conn", "cpu_us_per_conn"),
            )
        ]
        lines.append(
            f"- sixpn / {names[anchor]}: throughput {ratios[0]:.2f}x, CPU per MB {ratios[1]:.2f}x, "
            f"conn/s {ratios[2]:.2f}x, CPU per connection {ratios[3]:.2f}x."
        )
    socat_v = subprocess.run(["socat", "-V"], capture_output=True, text=True).stdout
    socat_v = next((ln for ln in socat_v.splitlines() if "socat version" in ln), "socat ?")
    iperf_v = subprocess.run(["iperf3", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    uname = os.uname()
    lines.append(
        f"- {uname.release}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{socat_v.strip()}, {iperf_v.strip()}"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.echo:
        asyncio.run(echo_server(args.echo))
        return 0
    if args.connect:
        res = asyncio.run(connect_client(args.connect, args.connections, args.concurrency))
        print(json.dumps(res))
        return 0
    missing = [t for t in ("socat", "iperf3", "taskset") if shutil.which(t) is None]
    if missing:
        print(
            f"forward bench: missing {', '.join(missing)} (make bench-forward installs them)",
            file=sys.stderr,
        )
        return 1
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    tmp = Path(tempfile.mkdtemp(prefix="sixpn-forward-bench-"))
    results: dict[str, dict[str, list[dict[str, float]]]] = {
        s: {"stream": [], "conn": []} for s in SIDES
    }
    iperf = echo = None
    try:
        iperf_port, echo_port = free_port(), free_port()
        iperf = start(
            ["iperf3", "-s", "-B", HOST, "-p", str(iperf_port)], CLIENT_CPU, tmp / "iperf3.log"
        )
        echo = start(
            [sys.executable, __file__, "--echo", str(echo_port)], CLIENT_CPU, tmp / "echo.log"
        )
        wait_listening(iperf, iperf_port, "iperf3 -s", tmp / "iperf3.log")
        wait_listening(echo, echo_port, "the echo server", tmp / "echo.log")
        for rnd in range(1, args.rounds + 1):
            for side in SIDES:
                with forwarder(side, iperf_port, tmp) as (port, pid):
                    s = stream(port, pid, args.seconds)
                with forwarder(side, echo_port, tmp) as (port, pid):
                    c = connections(port, pid, args)
                results[side]["stream"].append(s)
                results[side]["conn"].append(c)
                cpu_mb = f", {s['cpu_ms_per_mb']:.3f} ms CPU/MB" if pid else ""
                cpu_c = f", {c['cpu_us_per_conn']:.0f} us CPU/conn" if pid else ""
                print(
                    f"  round {rnd} {side}: {s['gbit_s']:.2f} Gbit/s{cpu_mb}; "
                    f"{c['conn_s']:.0f} conn/s{cpu_c}",
                    flush=True,
                )
    finally:
        stop(echo)
        stop(iperf)
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    text = report(results, args, stamp)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"forward-{stamp}.md").write_text(text)
    meta = {"rounds": args.rounds, "seconds": args.seconds, "connections": args.connections}
    meta["concurrency"] = args.concurrency
    (args.out / f"forward-{stamp}.json").write_text(
        json.dumps({"args": meta, "results": results}, indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

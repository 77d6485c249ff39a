"""WireGuard peers on one gateway: what installing, adding and removing peers costs the agent,
against the ``wg`` tool doing the same, same run; the agent's and wireguard-go's memory at N
peers; and from the API call that creates a peer to the gateway having it and to a laptop's
first ping (SPEC 9: "one gateway holds 5,000 peers, and adding or removing one touches no
other"; SPEC 5).

Method
------
A. **The gateway's interface** (``peers_gateway.py``). A host namespace of the benchmark's own
   (``sixpn-bench-pe-<hex>``) and a child process in it (``nsenter --net``, as the lab runs
   agents). The child makes a gateway's state with the agent's adapter (``LinuxHost``: a
   wireguard-go interface ``sxw<hex>``, routes, service addresses, the nftables table) and then,
   for each N of ``--peers`` (default 1,100,5000), ``--rounds`` times (default 5): converges the
   empty gateway to N client peers (random 32-byte keys, ``peer_prefix`` /120s) by ``read``,
   ``plan`` and ``apply``, timing each step; checks the plan was one ``SetPeers`` of N and
   that ``wg show IF allowed-ips`` holds N peers; converges back to 0 (one ``RemovePeers``,
   timed); and, alternated, installs the same N peers on an anchor interface with one
   ``wg setconf`` of a file (the fastest the tool does it) and clears it. Once per N, the
   anchor also installs them with one ``wg set`` per peer: how the agent did it before
   batching. Then at N = max: ``--rounds`` times one peer added and removed, each plan+apply
   timed, each plan checked to be one operation of one peer, and ``wg show IF allowed-ips``
   checked to show every other peer exactly as before; the same single change by hand
   (``wg set``) on the anchor; the agent's full read (``LinuxHost.read()``, checked equal to
   the converged state), ``wg.read`` and ``wg show dump`` alone; wireguard-go's VmRSS (PID by
   ``wg.daemon_pid``) empty and full, and the anchor daemon's.
B. **The agent's memory and the time to install** (``peers_lab.py``): a lab
   (``sixpn.lab.fabric.Lab``) with one gateway host ``gw`` (resync 30 s, the default), an org,
   ``--samples`` (default 100) sample peers on the empty gateway, then peers created one by one
   through the API until it holds ``--lab-peers`` (default 5,000), waited for in ``wg show``,
   then ``--samples`` more. VmRSS/VmHWM of the agent (the lab's PID: ``nsenter`` execs, so it
   is the Python process; checked) and of its wireguard-go, with 0 and with all peers.
C. **To a laptop's first ping**: every sample is a fresh key pair, ``POST
   /v1/orgs/bench/peers``, the returned values rendered by ``core.wgquick`` (the ``DNS =`` line
   left out: it needs resolvconf), ``wg-quick up`` (wireguard-go) in one laptop namespace on
   the underlay, ``ping -6 -c1 -W1 <net48>::3`` until answered, ``wg-quick down``. Times from
   the API call: the gateway having the peer (the agent's log line ``reconciled`` after
   ``apply SetPeers(1 peer: <key> ...)``, millisecond timestamps), the file handed out (the
   API's ``installed``, waited for before ``wg-quick up`` as ``sixpn wireguard create`` does)
   and the first answered ping; then the peer is removed again, timed from ``DELETE`` to the
   gateway's ``wg show`` without it.

Everything made is removed on the way out, also on failure or SIGTERM: the child tears its
interfaces down as the agent does (``LinuxHost.teardown``, ``wg.remove_interface``); the parent
then stops what still runs in its namespace by PID (``ip netns pids``) and removes it and the
child's files (its keys); the lab goes with ``lab.down()``. Report: Markdown on stdout and
``bench/out/peers-<UTC>.md``, with a JSON twin. Run as root: ``make bench-peers
[BENCH_ARGS=--quick]``; see ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import peers_gateway
from peers_lab import PeerLab
from peers_report import report

from sixpn.lab import netns

OUT_DIR = Path(__file__).resolve().parent / "out"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smoke run: 1,10,200 peers, 2 rounds")
    p.add_argument("--peers", help="part A peer counts, comma-separated (default 1,100,5000)")
    p.add_argument("--rounds", type=int, help="part A rounds per measure (default 5)")
    p.add_argument("--lab-peers", type=int, help="peers on the lab's gateway (default 5000)")
    p.add_argument("--samples", type=int, help="create->ping samples per phase (default 100)")
    p.add_argument("--no-lab", action="store_true", help="part A only")
    p.add_argument("--out", type=Path, default=OUT_DIR, help="report folder (bench/out)")
    p.add_argument("--child", help=argparse.SUPPRESS)  # part A, inside the namespace
    args = p.parse_args(argv)
    counts = args.peers or ("1,10,200" if args.quick else "1,100,5000")
    try:
        args.counts = sorted({int(n) for n in counts.split(",")})
    except ValueError:
        p.error(f"--peers: not a list of numbers: {counts!r}")
    if args.counts[0] < 1:
        p.error("--peers: every count at least 1")
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.lab_peers = args.lab_peers if args.lab_peers is not None else 200 if args.quick else 5000
    args.samples = args.samples or (10 if args.quick else 100)
    if min(args.rounds, args.samples) < 1 or args.lab_peers < 0:
        p.error("--rounds and --samples: at least 1; --lab-peers: not negative")
    return args


def gateway_part(args: argparse.Namespace) -> dict[str, Any]:
    host_ns = netns.unique_name("bench-pe")
    tmp = Path(tempfile.mkdtemp(prefix="sixpn-peers-"))
    out = tmp / "results.json"
    netns.create(host_ns)
    try:
        argv = [sys.executable, __file__, "--child", str(out), "--rounds", str(args.rounds)]
        argv += ["--peers", ",".join(map(str, args.counts))]
        print(f"peers bench A: host namespace {host_ns}, peers {args.counts}")
        subprocess.run(netns.enter_argv(host_ns, argv), check=True)
        return dict(json.loads(out.read_text()))
    finally:
        # The child removed its interfaces (the daemons exit with them); this is the backstop.
        listed = subprocess.run(["ip", "netns", "pids", host_ns], capture_output=True, text=True)
        for pid in (int(p) for p in listed.stdout.split()):
            stop(pid)
        netns.remove(host_ns)
        shutil.rmtree(tmp, ignore_errors=True)  # the results, and the child's keys if it died


def stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


def lab_part(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="sixpn-peers-lab-"))
    root = tmp / "lab"
    print(f"peers bench B/C: a lab in {root}, {args.lab_peers} peers, {args.samples} samples")
    peer_lab: PeerLab | None = None
    try:
        peer_lab = PeerLab.up(root, lambda line: print(f"  {line}"))
        out: dict[str, Any] = {"pids": peer_lab.start(), "memory_empty": peer_lab.memory()}
        out["samples_empty"] = [peer_lab.sample(i) for i in range(args.samples)]
        print(f"  {args.samples} samples on the empty gateway done")
        out["fill"] = peer_lab.fill(max(args.lab_peers, args.samples))
        time.sleep(3)  # a peer report and a status write at the full size
        out["memory_full"] = peer_lab.memory()
        out["peers_full"] = peer_lab.installed()
        out["samples_full"] = [peer_lab.sample(args.samples + i) for i in range(args.samples)]
        out["peers_end"] = peer_lab.installed()
        held = peer_lab.created - peer_lab.removed  # the samples are removed again
        if out["peers_end"] != held:
            raise SystemExit(f"peers bench: gateway holds {out['peers_end']} of {held}")
        return out
    finally:
        if peer_lab is not None:
            peer_lab.close()
            peer_lab.lab.down()
        if tmp.exists() and not any(tmp.iterdir()):  # lab.down() removed the lab's root
            tmp.rmdir()


MAIN_PID = os.getpid()


def terminate(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != MAIN_PID:
        # A forked helper: pyroute2 makes namespaces in a child it stops with SIGTERM. It must
        # not unwind this process's copied stack, whose finally blocks take the lab down.
        os._exit(128 + signum)
    raise SystemExit(128 + signum)  # unwinds through every finally: nothing left behind


def interrupt(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != MAIN_PID:  # Ctrl-C reaches the whole process group: see terminate
        os._exit(128 + signum)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        result = peers_gateway.run(args.counts, args.rounds, Path(args.child).parent / "child")
        Path(args.child).write_text(json.dumps(result))
        return 0
    if os.geteuid() != 0:
        print("peers bench: run as root (namespaces, wireguard-go)", file=sys.stderr)
        return 1

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, interrupt)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {"stamp": stamp, "args": {k: str(v) for k, v in vars(args).items()}}
    results["gateway"] = gateway_part(args)
    results["pure"] = peers_gateway.pure_costs(max(args.counts), args.rounds)
    if not args.no_lab:
        results["lab"] = lab_part(args)
    text = report(results)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"peers-{stamp}.md").write_text(text)
    (args.out / f"peers-{stamp}.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

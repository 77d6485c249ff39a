"""A tiny listener run inside a machine's namespace by the fabric tests.

``python -m tests.netns.listener tcp|udp PORT FILE``: TCP answers "ok\\n" to every connection;
UDP records every datagram's source address; both append the source addresses to FILE (one a
line), so that the tests observe delivery at the receiver (a reply can go astray, NOTES.md).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def listening(ns: str, kind: str, port: int, out: Path) -> Iterator[Path]:
    """Run this listener in namespace ``ns`` until the block ends; yields the file it writes."""
    from sixpn.lab import netns

    out.write_text("")
    argv = [sys.executable, "-m", "tests.netns.listener", kind, str(port), str(out)]
    proc = subprocess.Popen(netns.exec_argv(ns, argv), stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        yield out
    finally:
        proc.kill()
        proc.wait(timeout=10)


def main() -> None:
    kind, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    family = socket.AF_INET6
    if kind == "tcp":
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::", port))
        sock.listen(64)
        print("ready", flush=True)
        while True:
            conn, addr = sock.accept()
            with open(out, "a") as f:
                f.write(addr[0] + "\n")
            conn.sendall(b"ok\n")
            conn.close()
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(("::", port))
    print("ready", flush=True)
    while True:
        _, addr = sock.recvfrom(2048)
        with open(out, "a") as f:
            f.write(addr[0] + "\n")


if __name__ == "__main__":
    main()

"""A tiny listener run inside a machine's namespace by the fabric tests.

``python -m tests.netns.listener tcp|udp PORT FILE``: TCP answers "ok\\n" to every connection;
UDP records every datagram's source address; both append the source addresses to FILE (one a
line), so that the tests observe delivery at the receiver (a reply can go astray, NOTES.md).
"""

from __future__ import annotations

import socket
import sys


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

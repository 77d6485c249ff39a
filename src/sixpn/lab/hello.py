"""A tiny HTTP service for the lab's demo: ``python -m sixpn.lab.hello PORT [NAME]``.

Listens on ``[::]:PORT`` inside a machine and answers every GET with one line saying which
machine answered (``NAME`` and the machine's ``SIXPN_PRIVATE_IP``) and who asked, so a
request's path through the fabric shows in its output.
"""

from __future__ import annotations

import os
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True


def main(argv: list[str]) -> int:
    if not argv or not argv[0].isdigit():
        print("usage: python -m sixpn.lab.hello PORT [NAME]", file=sys.stderr)
        return 2
    port = int(argv[0])
    address = os.environ.get("SIXPN_PRIVATE_IP", socket.gethostname())
    name = f"{argv[1]} ({address})" if len(argv) > 1 else address

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"hello from {name}, to {self.client_address[0]}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with _Server(("::", port), Hello) as server:
        print(f"listening on [::]:{port}", flush=True)
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

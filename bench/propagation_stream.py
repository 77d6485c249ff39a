"""The propagation benchmark's view of the change stream: when each measured change left the server.

Run as ``python propagation_stream.py SOCKET TOKEN SINCE APP`` (its own session, at the probers'
priority): it follows ``GET /v1/watch?since=SINCE`` on the control plane's Unix socket, as the
agents do, and stamps every line with ``time.monotonic()`` as it arrives. Until stdin ends; then
it prints one JSON object: the events of machines of app ``APP`` (the measured ones: revision,
arrival time, machine ID, state or ``deleted``), the number of lines and revisions seen, and the
longest silence between two lines (a stall of the server's stream shows there).

Splitting a change's delay at this point separates the control plane's part (API call sent ->
change on the stream: commit, encoding, writing to every follower) from the agents' part (line
on the stream -> the host's DNS answers the new truth: reading, parsing, applying, answering).
The agents read the same stream from the same server, so the arrival here stands for theirs
(the server writes the line to each follower in turn; this follower is one of six).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from typing import Any


def main() -> None:
    path, token, since, app = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(
        f"GET /v1/watch?since={since} HTTP/1.1\r\nHost: sixpn\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    events: list[dict[str, Any]] = []
    stats = {"lines": 0, "revisions": 0, "heartbeats": 0, "max_gap_s": 0.0, "max_gap_at": None}
    done = threading.Event()

    def read() -> None:
        buf = b""
        head_done = False
        last = None
        while not done.is_set():
            try:
                chunk = s.recv(262144)
            except OSError:
                return
            if not chunk:
                return
            t = time.monotonic()
            buf += chunk
            if not head_done:
                i = buf.find(b"\r\n\r\n")
                if i < 0:
                    continue
                buf, head_done = buf[i + 4 :], True
            # chunked transfer: chunk-size lines and data; the NDJSON lines themselves end in \n
            # and never start with a hex size followed by \r\n, so drop those framing lines
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                raw = raw.strip(b"\r")
                if not raw.startswith(b"{"):
                    continue
                stats["lines"] += 1
                if last is not None and t - last > stats["max_gap_s"]:
                    stats["max_gap_s"], stats["max_gap_at"] = t - last, t
                last = t
                obj = json.loads(raw)
                if obj.get("heartbeat"):
                    stats["heartbeats"] += 1
                    continue
                stats["revisions"] += 1
                for e in obj.get("events", ()):
                    o = e.get("object", {})
                    if e.get("kind") == "machine" and o.get("app") == app:
                        state = "deleted" if e.get("type") == "delete" else o.get("state")
                        events.append(
                            {"rev": obj["revision"], "t": t, "id": o.get("id"), "state": state}
                        )

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    print("ready", flush=True)
    while os.read(sys.stdin.fileno(), 4096):
        pass
    done.set()
    s.close()
    reader.join(timeout=2)
    print(json.dumps({"events": events, **stats}), flush=True)


if __name__ == "__main__":
    main()

"""The API under abuse (SPEC 10, issue 17): a real `sixpn server` process on loopback gets
oversized bodies (with a Content-Length and chunked), deeply nested JSON, 1,000 concurrent
connections and a flood of wrong tokens. Each abuse gets a clear 4xx; meanwhile another
organization's requests keep working; the server's resident memory (VmRSS, sampled from
/proc/<pid>/status all along) stays under :data:`RSS_BOUND` above what it was before.

Raw sockets are used where an HTTP library would be too polite (it would send the whole body,
or never leave a request half-sent). No timing assertions: only generous timeouts.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from sixpn.control.api.limits import MAX_BODY_BYTES
from tests.harness import ServerProcess

pytestmark = pytest.mark.component

MiB = 1 << 20
# Above the idle server's own footprint (~70 MiB here). Without the body cap, one 50 MiB body
# alone grows the server by ~110 MiB.
RSS_BOUND = 64 * MiB
FLOOD = 3000  # wrong-token requests, 20 at a time


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class RssWatch:
    """Samples a process's VmRSS in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = rss(pid)
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, rss(self.pid))

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss(self.pid))

    def check(self) -> None:
        grew = self.peak - self.baseline
        assert grew < RSS_BOUND, f"server RSS grew by {grew / MiB:.1f} MiB (bound 64 MiB)"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(db=tmp_path_factory.mktemp("abuse") / "server.db").start()
    try:
        with proc.client() as admin:
            for org in ("victim", "bystander"):
                assert admin.post("/v1/orgs", json={"name": org}).status_code == 201
        yield proc
    finally:
        proc.kill()


@pytest.fixture(scope="module")
def bystander(server: ServerProcess) -> str:
    """An org token of the organization that is not under attack."""
    with server.client() as admin:
        answer = admin.post("/v1/orgs/bystander/tokens", json={"description": "abuse test"})
        assert answer.status_code == 201, answer.text
        secret: str = answer.json()["secret"]
        return secret


def bystander_works(server: ServerProcess, token: str) -> None:
    """What the other organization does during an abuse: a write and a read, both answered."""
    name = "app-" + secrets.token_hex(4)
    with server.client(token) as http:
        made = http.post("/v1/orgs/bystander/apps", json={"name": name}, timeout=30)
        assert made.status_code == 201, made.text
        listed = http.get("/v1/orgs/bystander/apps", timeout=30)
        assert listed.status_code == 200
        assert name in [a["name"] for a in listed.json()]


def read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read an HTTP response head (and what came with it) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response head: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return int(lines[0].split()[1]), headers, rest


def request_head(server: ServerProcess, token: str, extra: str) -> bytes:
    return (
        f"POST /v1/orgs/victim/apps HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n{extra}\r\n"
    ).encode()


# -- oversized bodies ------------------------------------------------------------------------------


def test_declared_oversized_body_is_413_before_it_is_sent(
    server: ServerProcess, bystander: str
) -> None:
    assert server.proc is not None
    with (
        RssWatch(server.proc.pid) as watch,
        socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock,
    ):
        # A gigabyte announced, 64 KiB sent: the answer comes without the rest.
        sock.sendall(request_head(server, server.admin_token, "Content-Length: 1073741824\r\n"))
        sock.sendall(b"x" * 65536)
        status, headers, body = read_head(sock)
        while len(body) < int(headers.get("content-length", 0)):
            body += sock.recv(65536)
        bystander_works(server, bystander)
    assert status == 413
    assert headers.get("connection") == "close"
    assert json.loads(body)["error"]["code"] == "too_large"
    watch.check()


def test_oversized_body_through_httpx_is_a_clear_413(server: ServerProcess) -> None:
    with server.client() as http:
        answer = http.post(
            "/v1/orgs/victim/apps",
            content=b" " * (MAX_BODY_BYTES + 1),
            headers={"content-type": "application/json"},
        )
    assert answer.status_code == 413
    error = answer.json()["error"]
    assert error["code"] == "too_large"
    assert f"larger than {MAX_BODY_BYTES} bytes" in error["message"]


def test_a_body_at_the_cap_is_read(server: ServerProcess) -> None:
    body = json.dumps({"name": "at-the-cap", "network": "default"}).encode()
    body += b" " * (MAX_BODY_BYTES - len(body))  # exactly the cap: JSON allows the padding
    with server.client() as http:
        answer = http.post(
            "/v1/orgs/victim/apps", content=body, headers={"content-type": "application/json"}
        )
    assert answer.status_code == 201, answer.text


def test_endless_chunked_body_is_cut_at_the_cap(server: ServerProcess, bystander: str) -> None:
    assert server.proc is not None
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    sent = 0
    status = None
    with (
        RssWatch(server.proc.pid) as watch,
        socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock,
    ):
        sock.sendall(request_head(server, server.admin_token, "Transfer-Encoding: chunked\r\n"))
        sock.settimeout(5)
        try:
            while sent < 256 * MiB:  # far more than the server may read
                sock.sendall(chunk)
                sent += 65536
                if sent % MiB == 0:
                    sock.setblocking(False)
                    try:
                        peek = sock.recv(1, socket.MSG_PEEK)
                    except BlockingIOError:
                        peek = b""
                    sock.settimeout(5)
                    if peek:
                        break
        except OSError:  # the server closed the connection: writes fail (EPIPE, ECONNRESET)
            pass
        sock.settimeout(30)
        status = read_head(sock)[0]  # already received: Linux reads it out before a reset
        bystander_works(server, bystander)
    assert sent < 64 * MiB, f"the server went on reading: {sent / MiB:.0f} MiB sent"
    assert status == 413
    watch.check()


# -- malformed bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"[" * 500_000, b'{"a":' * 200_000, b"[" * 50_000 + b"]" * 50_000],
    ids=["open-brackets", "open-objects", "balanced-deep"],
)
def test_deeply_nested_json_is_a_quick_400(
    server: ServerProcess, bystander: str, body: bytes
) -> None:
    with server.client() as http:
        answer = http.post(
            "/v1/orgs/victim/apps",
            content=body,
            headers={"content-type": "application/json"},
            timeout=30,
        )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid"
    assert "JSON nested too deeply" in error["message"]
    bystander_works(server, bystander)


def test_malformed_json_is_a_4xx(server: ServerProcess) -> None:
    with server.client() as http:
        answer = http.post(
            "/v1/orgs/victim/apps",
            content=b'{"name": ',
            headers={"content-type": "application/json"},
        )
    assert answer.status_code == 422
    assert answer.json()["error"]["message"] == "body: not valid JSON"


# -- many connections ---------------------------------------------------------------------------


def test_a_thousand_connections_leave_others_served(server: ServerProcess, bystander: str) -> None:
    """1,000 connections at once: idle ones, half-sent request heads (slowloris) and complete
    requests whose answers are never read. The server keeps answering the other organization."""
    assert server.proc is not None
    socks: list[socket.socket] = []
    with RssWatch(server.proc.pid) as watch:
        try:
            for i in range(1000):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
                socks.append(sock)
                if i % 3 == 1:
                    sock.sendall(b"GET /v1/orgs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                elif i % 3 == 2:
                    sock.sendall(
                        b"GET /v1/orgs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Authorization: Bearer " + server.admin_token.encode() + b"\r\n\r\n"
                    )
            bystander_works(server, bystander)
            with server.client() as admin:
                assert admin.get("/healthz").status_code == 200
        finally:
            for sock in socks:
                sock.close()
    watch.check()
    bystander_works(server, bystander)


# -- wrong tokens at rate --------------------------------------------------------------------------


def test_a_flood_of_wrong_tokens_is_401_and_others_go_on(
    server: ServerProcess, bystander: str
) -> None:
    """FLOOD requests with wrong tokens from 20 connections at once (well-formed unknown
    tokens, and overlong ones that are refused unread), while the other organization works."""
    assert server.proc is not None
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def wrong(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for i in range(worker, FLOOD, 20):
                token = "sixpn_" + secrets.token_urlsafe(32) if i % 3 else "x" * (2000 + i)
                answer = http.get(
                    "/v1/orgs/victim/apps", headers={"Authorization": f"Bearer {token}"}
                )
                with lock:
                    statuses[answer.status_code] += 1

    with RssWatch(server.proc.pid) as watch, ThreadPoolExecutor(21) as pool:
        flood = [pool.submit(wrong, w) for w in range(20)]
        served = 0
        while not all(f.done() for f in flood):
            bystander_works(server, bystander)
            served += 1
        for f in flood:
            f.result()
    assert statuses == {401: FLOOD}
    assert served >= 1
    watch.check()

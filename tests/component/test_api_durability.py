"""No acknowledged write is lost when the server is killed (SPEC 10), and IDs stay never-reused.

A real `sixpn server` on a real SQLite file is SIGKILLed (by PID) while create requests are in
flight; a new process on the same file, port and tokens must show every machine whose 201 the
client received, unchanged, and no duplicate ID or address.
"""

from __future__ import annotations

import base64
import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import ServerProcess, wait_until

pytestmark = pytest.mark.component

STREAMS = 4
ACKS_BEFORE_KILL = 120
DEADLINE = 30.0


def wg_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@dataclass
class Stream:
    """One client creating machines back to back until the server goes away."""

    server: ServerProcess
    hosts: list[str]
    acked: list[dict[str, Any]] = field(default_factory=list)
    ended_by: BaseException | None = None
    refused: list[str] = field(default_factory=list)

    def run(self, stop: threading.Event) -> None:
        with self.server.client() as client:
            i = 0
            while not stop.is_set():
                body = {"app": "web", "host": self.hosts[i % len(self.hosts)]}
                i += 1
                try:
                    r = client.post("/v1/orgs/dur/machines", json=body)
                except httpx.HTTPError as exc:
                    self.ended_by = exc
                    return
                if r.status_code == 201:
                    self.acked.append(r.json())
                else:
                    self.refused.append(f"{r.status_code} {r.text}")
                    return


def setup_fleet(server: ServerProcess) -> list[str]:
    hosts = ["dh1", "dh2", "dh3"]
    with server.client() as admin:
        assert admin.post("/v1/orgs", json={"name": "dur"}).status_code == 201
        assert admin.post("/v1/orgs/dur/apps", json={"name": "web"}).status_code == 201
    with server.client(server.join_token) as joiner:
        for name in hosts:
            body = {
                "name": name,
                "region": "fra",
                "endpoint": "192.0.2.1:51820",
                "public_key": wg_key(),
            }
            assert joiner.post("/v1/hosts", json=body).status_code == 201
    return hosts


def all_machines(server: ServerProcess) -> list[dict[str, Any]]:
    with server.client() as admin:
        r = admin.get("/v1/orgs/dur/machines", params={"all": "true"})
        assert r.status_code == 200, r.text
        machines: list[dict[str, Any]] = r.json()
        return machines


def test_acknowledged_creates_survive_sigkill_during_concurrent_creates(tmp_path: Path) -> None:
    server = ServerProcess(db=tmp_path / "server.db").start()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        hosts = setup_fleet(server)
        streams = [Stream(server, hosts) for _ in range(STREAMS)]
        threads = [threading.Thread(target=s.run, args=(stop,), daemon=True) for s in streams]
        for t in threads:
            t.start()
        wait_until(
            lambda: (
                sum(len(s.acked) for s in streams) >= ACKS_BEFORE_KILL
                or any(s.refused for s in streams)
            ),
            DEADLINE,
            f"{ACKS_BEFORE_KILL} acknowledged creates",
        )
        # Every stream is inside a request right now: it sends the next one as soon as it has
        # an answer. Kill the server under them.
        server.kill()
        for t in threads:
            t.join(timeout=DEADLINE)
            assert not t.is_alive(), "a client stream did not notice the server was gone"
        assert [s.refused for s in streams] == [[]] * STREAMS
        assert all(isinstance(s.ended_by, httpx.HTTPError) for s in streams), [
            s.ended_by for s in streams
        ]
        acked = [m for s in streams for m in s.acked]
        assert len(acked) >= ACKS_BEFORE_KILL

        # SPEC 10: the file is in WAL mode (header bytes 18-19 are 2 in WAL mode, SQLite's
        # file format section 1.3.4). Synchronous commits cannot be seen in the file.
        assert server.db.read_bytes()[18:20] == b"\x02\x02"

        server.start()  # a new process: same db file, same port, same tokens
        after = all_machines(server)
        by_id = {m["id"]: m for m in after}
        lost = [m["id"] for m in acked if m["id"] not in by_id]
        assert lost == [], f"{len(lost)} acknowledged machines are gone after SIGKILL"
        for m in acked:
            assert by_id[m["id"]] == m
        assert len(by_id) == len(after), Counter(m["id"] for m in after).most_common(3)
        addresses = [m["address"] for m in after]
        assert len(set(addresses)) == len(addresses), Counter(addresses).most_common(3)
        # At most one create per stream was in flight, so at most that many unacknowledged ones.
        assert len(after) - len(acked) <= STREAMS

        # The restarted server keeps allocating without colliding with what was there before.
        with server.client() as admin:
            r = admin.post("/v1/orgs/dur/machines", json={"app": "web", "host": "dh1"})
            assert r.status_code == 201, r.text
            assert r.json()["address"] not in addresses
            assert r.json()["id"] not in by_id
    finally:
        stop.set()
        server.kill()
        for t in threads:
            t.join(timeout=DEADLINE)


def test_tokens_and_never_reused_ids_survive_restarts(tmp_path: Path) -> None:
    server = ServerProcess(db=tmp_path / "server.db").start()
    try:
        with server.client() as admin:
            assert admin.post("/v1/orgs", json={"name": "keep"}).status_code == 201
            r = admin.post("/v1/orgs/keep/networks", json={"name": "old"})
            assert r.status_code == 201, r.text
            old_net_id = r.json()["net_id"]
            r = admin.post("/v1/orgs/keep/tokens", json={"description": "ci"})
            assert r.status_code == 201, r.text
            org_token = r.json()["secret"]
            assert admin.delete("/v1/orgs/keep/networks/old").status_code == 204
        with server.client(server.join_token) as joiner:
            body = {"region": "fra", "endpoint": "192.0.2.1:51820"}
            r = joiner.post("/v1/hosts", json={**body, "name": "gone", "public_key": wg_key()})
            assert r.status_code == 201, r.text
            old_host_id = r.json()["host"]["host_id"]
            host_credential = r.json()["credential"]
        with server.client() as admin:
            assert admin.delete("/v1/hosts/gone").status_code == 204

        server.kill()  # SIGKILL: no orderly shutdown
        server.start()

        with server.client() as admin:
            assert admin.get("/v1/orgs").status_code == 200
            r = admin.post("/v1/orgs/keep/networks", json={"name": "new"})
            assert r.status_code == 201, r.text
            assert r.json()["net_id"] > old_net_id
            assert admin.post("/v1/orgs", json={"name": "later"}).status_code == 201
            later = admin.get("/v1/orgs/later/networks/default").json()["net_id"]
            assert later > r.json()["net_id"]
        with server.client(org_token) as org_client:
            assert org_client.get("/v1/orgs/keep/networks").status_code == 200
        with server.client(host_credential) as revoked:
            assert revoked.get("/v1/snapshot").status_code == 401
        with server.client(server.join_token) as joiner:
            r = joiner.post("/v1/hosts", json={**body, "name": "gone", "public_key": wg_key()})
            assert r.status_code == 201, r.text
            assert r.json()["host"]["host_id"] > old_host_id
    finally:
        server.kill()

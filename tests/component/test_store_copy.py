"""`sixpn store copy` from a populated SQLite store to real etcd: the server on the copy answers
every API read exactly as the server on the original did (SPEC 1, 10)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sixpn.client import Client, generate_keypair
from tests.etcdcluster import EtcdCluster, require_etcd
from tests.harness import ServerProcess

pytestmark = pytest.mark.component


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    require_etcd()
    with EtcdCluster(1) as cluster:
        yield cluster


async def populate(server: ServerProcess) -> dict[str, str]:
    """A bit of everything, through the API; returns the org token's secret by org."""
    async with Client(server.url, server.join_token) as joiner:
        for name, region, gateway in (("fra-1", "fra", True), ("ams-1", "ams", False)):
            await joiner.join_host(
                name, region, "192.0.2.1:51820", generate_keypair().public_key, gateway=gateway
            )
    secrets = {}
    async with Client(server.url, server.admin_token) as c:
        for org in ("acme", "globex"):
            await c.create_org(org)
            await c.create_app(org, "web")
            for host in ("fra-1", "ams-1"):
                await c.create_machine(org, "web", host=host)
            secrets[org] = (await c.create_org_token(org, "ci")).secret
        await c.create_network("acme", "staging")
        await c.create_app("acme", "preview", network="staging")
        stopped = await c.create_machine("acme", "preview", host="fra-1")
        await c.stop_machine("acme", stopped.id)
        await c.create_peer("acme", "laptop", generate_keypair().public_key)
        await c.create_peer(
            "acme", "vpc", generate_keypair().public_key, routes=["2001:db8:1::/56"]
        )
    return secrets


READS = [
    "/v1/regions",
    "/v1/orgs",
    "/v1/hosts",
    "/v1/tokens",
    *(
        f"/v1/orgs/{org}/{what}"
        for org in ("acme", "globex")
        for what in ("networks", "apps", "machines?all=true", "peers", "tokens")
    ),
    "/v1/orgs/acme/peers/vpc",
    "/v1/orgs/acme/peers/vpc/status",
    "/v1/hosts/fra-1",
]


def answers(server: ServerProcess, token: str | None = None) -> dict[str, object]:
    with server.client(token) as http:
        got = {}
        for path in READS:
            r = http.get(path)
            assert r.status_code == 200, (path, r.text)
            got[path] = r.json()
        return got


async def test_a_copied_store_answers_every_read_as_the_original(
    tmp_path: Path, etcd: EtcdCluster
) -> None:
    original = ServerProcess(db=tmp_path / "server.db").start()
    try:
        secrets = await populate(original)
        before = answers(original)
        before_org = answers_org(original, secrets["acme"])
    finally:
        original.stop()
    prefix = "/copy-test/"
    done = store_copy(original.db, etcd, prefix)
    assert done.returncode == 0, done.stderr
    assert "verified:" in done.stdout
    again = store_copy(original.db, etcd, prefix)
    assert again.returncode == 1
    assert "not empty" in again.stderr

    copy = ServerProcess(
        db=tmp_path / "replica",
        etcd=etcd.endpoints,
        etcd_prefix=prefix,
        admin_token=original.admin_token,
        join_token=original.join_token,
    ).start()
    try:
        assert answers(copy) == before
        assert answers_org(copy, secrets["acme"]) == before_org  # hashed tokens came along
        async with Client(copy.url, copy.admin_token) as c:  # and it goes on from there
            await c.create_org("initech")
            nets = [n.net_id for o in await c.list_orgs() for n in await c.list_networks(o.name)]
            assert len(nets) == len(set(nets)) == 4  # a new ID, none handed out twice
    finally:
        copy.kill()


def store_copy(db: Path, etcd: EtcdCluster, prefix: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "sixpn", "store", "copy", "--from", f"sqlite:{db}"]
    target = f"etcd:{','.join(etcd.endpoints)}"
    return subprocess.run(
        [*argv, "--to", target, "--etcd-prefix", prefix],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def answers_org(server: ServerProcess, token: str) -> object:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as http:
        r = http.get("/v1/orgs/acme/machines")
        assert r.status_code == 200, r.text
        return r.json()

"""A host's endpoint moved (``PUT /v1/hosts/{name}/endpoint``, agent/endpoint.py): validated,
written once, and carried by the change stream to every other host."""

from __future__ import annotations

import base64
import os

import httpx
import pytest

from tests.harness import ServerProcess

pytestmark = pytest.mark.component


def joined(server: ServerProcess, name: str) -> tuple[httpx.Client, str]:
    admin = httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=30,
    )
    body = {
        "name": name,
        "region": "fra",
        "endpoint": "192.0.2.11:51820",
        "public_key": base64.b64encode(os.urandom(32)).decode(),
    }
    r = admin.post("/v1/hosts", json=body)
    assert r.status_code == 201, r.text
    return admin, r.json()["credential"]


def revision(admin: httpx.Client) -> int:
    return int(admin.get("/v1/snapshot").json()["revision"])


def test_a_host_moves_its_endpoint_once_and_bad_input_changes_nothing(
    server: ServerProcess,
) -> None:
    admin, credential = joined(server, "h1")
    host = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {credential}"}, timeout=30
    )
    try:
        before = revision(admin)
        for bad in ("nope", "192.0.2.12", "192.0.2.12:0", "[zz::1]:51820"):
            r = host.put("/v1/hosts/h1/endpoint", json={"endpoint": bad})
            assert r.status_code == 422, (bad, r.text)
            assert "endpoint" in r.json()["error"]["message"], r.text
        assert host.put("/v1/hosts/h1/endpoint", json={}).status_code == 422
        assert revision(admin) == before
        assert admin.get("/v1/hosts/h1").json()["endpoint"] == "192.0.2.11:51820"

        r = host.put("/v1/hosts/h1/endpoint", json={"endpoint": "192.0.2.62:51820"})
        assert r.status_code == 200, r.text
        assert r.json()["endpoint"] == "192.0.2.62:51820"
        assert admin.get("/v1/hosts/h1").json()["endpoint"] == "192.0.2.62:51820"
        moved = revision(admin)
        assert moved > before
        again = host.put("/v1/hosts/h1/endpoint", json={"endpoint": "192.0.2.62:51820"})
        assert again.status_code == 200
        assert revision(admin) == moved  # the same endpoint again writes nothing

        r = admin.put("/v1/hosts/ghost/endpoint", json={"endpoint": "192.0.2.9:51820"})
        assert r.status_code == 404, r.text
    finally:
        admin.close()
        host.close()

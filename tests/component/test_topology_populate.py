"""`populate` against a real `sixpn server`: the topology's orgs, networks, apps and machines
exist afterwards, as the API reports them, with addresses inside their network and host."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sixpn.core.addressing import decode
from sixpn.lab import topology
from sixpn.lab.populate import populate
from sixpn.lab.topology import Topology
from sixpn.model.errors import AlreadyExists, InvalidInput, NotFound
from tests.harness import ServerProcess

pytestmark = pytest.mark.component


def join_hosts(server: ServerProcess, topo: Topology) -> None:
    """What the lab's agents do when they start: join each host with the join token."""
    with server.client(server.join_token) as joiner:
        for i, host in enumerate(topo.hosts, start=1):
            body = {
                "name": host.name,
                "region": host.region,
                "endpoint": f"192.0.2.{10 + i}:51820",
                "public_key": base64.b64encode(os.urandom(32)).decode(),
                "gateway": host.gateway,
            }
            answer = joiner.post("/v1/hosts", json=body)
            assert answer.status_code == 201, answer.text


@pytest.fixture
def admin(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def get(admin: httpx.Client, path: str) -> Any:
    answer = admin.get(path)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_populate_creates_the_default_topology(server: ServerProcess, admin: httpx.Client) -> None:
    topo = topology.default()
    join_hosts(server, topo)
    steps: list[str] = []

    created = populate(topo, admin, progress=steps.append)

    assert len(created) == topo.machine_count() == 9
    assert "org acme" in steps
    assert "network acme/staging" in steps
    assert "app acme/preview (network staging)" in steps
    assert sum(s.startswith("machine ") for s in steps) == 9

    hosts = {h["name"]: h for h in get(admin, "/v1/hosts")}
    assert {o["name"] for o in get(admin, "/v1/orgs")} == {"acme", "globex"}
    for org in topo.orgs:
        net_ids = {n["name"]: n["net_id"] for n in get(admin, f"/v1/orgs/{org.name}/networks")}
        assert set(net_ids) == {"default", *org.networks}
        apps = {a["name"]: a["network"] for a in get(admin, f"/v1/orgs/{org.name}/apps")}
        assert apps == {a.name: a.network for a in org.apps}

        listed = get(admin, f"/v1/orgs/{org.name}/machines")
        assert sorted(m["id"] for m in listed) == sorted(
            m["id"] for m in created if m["org"] == org.name
        )
        remaining = {m["id"]: m for m in listed}
        for spec in org.machines:
            # the machines of one spec were created in a row: take them in creation order
            mine = [m for m in created if m["id"] in remaining and m["app"] == spec.app]
            for m in mine[: spec.count]:
                del remaining[m["id"]]
                shown = get(admin, f"/v1/orgs/{org.name}/machines/{m['id']}")
                assert shown["state"] == spec.state.value
                assert shown["process_group"] == (spec.process_group or "app")
                assert shown["metadata"] == dict(spec.metadata)
                if spec.host:
                    assert shown["host"] == spec.host
                else:
                    assert hosts[shown["host"]]["region"] == spec.region
                fields = decode(shown["address"])
                assert fields.net_id == net_ids[apps[spec.app]]
                assert fields.host_id == hosts[shown["host"]]["host_id"]
        assert remaining == {}


def test_a_stopped_machine_is_created_stopped(server: ServerProcess, admin: httpx.Client) -> None:
    topo = topology.default()
    join_hosts(server, topo)
    created = populate(topo, admin)
    stopped = [m for m in created if m["state"] == "stopped"]
    assert [(m["org"], m["app"], m["host"], m["process_group"]) for m in stopped] == [
        ("acme", "api", "fra-1", "worker")
    ]


def test_a_host_that_has_not_joined_is_named_in_the_error(
    server: ServerProcess, admin: httpx.Client
) -> None:
    topo = topology.parse(
        '[[hosts]]\nname = "lone"\nregion = "fra"\n'
        '[[orgs]]\nname = "acme"\n[[orgs.apps]]\nname = "web"\n'
        '[[orgs.machines]]\napp = "web"\nhost = "lone"\n',
        "t.toml",
    )
    with pytest.raises(NotFound) as info:
        populate(topo, admin)
    message = info.value.message
    assert message.startswith("lab: creating a machine of app 'acme/web' on host 'lone': ")
    assert "answered 404" in message
    assert "host 'lone'" in message


def test_a_second_populate_is_refused_naming_the_org(
    server: ServerProcess, admin: httpx.Client
) -> None:
    topo = topology.default()
    join_hosts(server, topo)
    populate(topo, admin)
    with pytest.raises(AlreadyExists, match=r"^lab: creating organization 'acme': .* 409: "):
        populate(topo, admin)


def test_a_refused_region_placement_names_the_region(
    server: ServerProcess, admin: httpx.Client
) -> None:
    # The file says fra has a host; the control plane knows of none there yet.
    topo = topology.parse(
        '[[hosts]]\nname = "h1"\nregion = "fra"\n'
        '[[orgs]]\nname = "acme"\n[[orgs.apps]]\nname = "web"\n'
        '[[orgs.machines]]\napp = "web"\nregion = "fra"\n',
        "t.toml",
    )
    with pytest.raises(InvalidInput, match=r"in region 'fra': .* 422: no host has joined"):
        populate(topo, admin)

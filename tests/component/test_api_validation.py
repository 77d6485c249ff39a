"""Bad input is refused at the edge with an error naming the field, and changes nothing (SPEC 10).

Every case goes to a real server over HTTP and checks what a user sees: the status, the
``{"error": {"code", "message", "field"}}`` body, a message that names the offending value or
field, and that the store did not move (the revision of ``GET /v1/snapshot``).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.harness import ServerProcess

pytestmark = pytest.mark.component

ORG = "val"


def wg_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@dataclass
class Api:
    server: ServerProcess
    admin: httpx.Client
    joiner: httpx.Client
    host_client: httpx.Client

    def snapshot(self) -> dict[str, Any]:
        r = self.admin.get("/v1/snapshot")
        assert r.status_code == 200, r.text
        snap: dict[str, Any] = r.json()
        return snap

    def revision(self) -> int:
        revision: int = self.snapshot()["revision"]
        return revision

    def client(self, who: str) -> httpx.Client:
        return {"admin": self.admin, "join": self.joiner, "host": self.host_client}[who]


def host_body(name: str = "new-host", **changes: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "region": "fra",
        "endpoint": "192.0.2.1:51820",
        "public_key": wg_key(),
        "gateway": False,
    }
    body.update(changes)
    return body


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One server: org ``val`` with network ``blue``, app ``web`` (2 machines), peer ``laptop``,
    hosts ``vh1`` (fra, gateway) and ``vh2`` (iad)."""
    server = ServerProcess(db=tmp_path_factory.mktemp("validation") / "server.db").start()
    clients: list[httpx.Client] = []
    try:
        admin = server.client()
        joiner = server.client(server.join_token)
        clients += [admin, joiner]
        r = joiner.post("/v1/hosts", json=host_body("vh1", gateway=True))
        assert r.status_code == 201, r.text
        host_client = server.client(r.json()["credential"])
        clients.append(host_client)
        assert joiner.post("/v1/hosts", json=host_body("vh2", region="iad")).status_code == 201
        for path, body in (
            ("/v1/orgs", {"name": ORG}),
            (f"/v1/orgs/{ORG}/networks", {"name": "blue"}),
            (f"/v1/orgs/{ORG}/apps", {"name": "web"}),
            (f"/v1/orgs/{ORG}/machines", {"app": "web", "host": "vh1"}),
            (f"/v1/orgs/{ORG}/machines", {"app": "web", "region": "iad"}),
            (f"/v1/orgs/{ORG}/peers", {"name": "laptop", "public_key": wg_key()}),
        ):
            r = admin.post(path, json=body)
            assert r.status_code == 201, r.text
        yield Api(server, admin, joiner, host_client)
    finally:
        for c in clients:
            c.close()
        server.kill()


def refused(
    api: Api,
    method: str,
    path: str,
    body: Any,
    *,
    status: int,
    field: str | None,
    mentions: tuple[str, ...] = (),
    who: str = "admin",
) -> dict[str, Any]:
    """Send a bad request; check the answer and that the store did not move. Returns the error."""
    before = api.revision()
    if isinstance(body, bytes):
        r = api.client(who).request(
            method, path, content=body, headers={"content-type": "application/json"}
        )
    else:
        r = api.client(who).request(method, path, json=body)
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert set(error) <= {"code", "message", "field"}
    codes = {404: {"not_found"}, 409: {"conflict", "exists"}, 422: {"invalid"}}
    assert error["code"] in codes[status], error
    if field is not None:
        assert error.get("field") == field, error
    for text in mentions:
        assert text in error["message"], error
    assert api.revision() == before, "a refused request changed the store"
    return error


# --- names ----------------------------------------------------------------------------------------

BAD_NAMES = [
    pytest.param("Web", id="uppercase"),
    pytest.param("my_app", id="underscore"),
    pytest.param("1app", id="leading-digit"),
    pytest.param("app-", id="trailing-dash"),
    pytest.param("a" * 64, id="64-chars"),
    pytest.param("", id="empty"),
    pytest.param("a.b", id="dot"),
    pytest.param("-app", id="leading-dash"),
]

NAMED = {  # kind -> (method, path, who may create one)
    "org": ("POST", "/v1/orgs", "admin"),
    "network": ("POST", f"/v1/orgs/{ORG}/networks", "admin"),
    "app": ("POST", f"/v1/orgs/{ORG}/apps", "admin"),
    "peer": ("POST", f"/v1/orgs/{ORG}/peers", "admin"),
    "host": ("POST", "/v1/hosts", "join"),
}


def named_body(kind: str, name: str) -> dict[str, Any]:
    if kind == "peer":
        return {"name": name, "public_key": wg_key()}
    if kind == "host":
        return host_body(name)
    return {"name": name}


@pytest.mark.parametrize("kind", list(NAMED))
@pytest.mark.parametrize("bad", BAD_NAMES)
def test_names_that_are_not_dns_labels_are_refused(api: Api, kind: str, bad: str) -> None:
    method, path, who = NAMED[kind]
    error = refused(api, method, path, named_body(kind, bad), status=422, field="name", who=who)
    assert "name" in error["message"]
    if bad:
        assert repr(bad) in error["message"] or bad in error["message"]


def test_a_63_character_name_is_accepted(api: Api) -> None:
    name = "a" * 62 + "z"
    r = api.admin.post(f"/v1/orgs/{ORG}/networks", json={"name": name})
    assert r.status_code == 201, r.text
    assert api.admin.delete(f"/v1/orgs/{ORG}/networks/{name}").status_code == 204


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (f"/v1/orgs/{ORG}/apps", {"name": "ok", "network": "Blue"}, "network"),
        (f"/v1/orgs/{ORG}/peers", {"name": "ok", "network": "b_lue"}, "network"),
        (
            f"/v1/orgs/{ORG}/machines",
            {"app": "web", "host": "vh1", "process_group": "W"},
            "process_group",
        ),
        (f"/v1/orgs/{ORG}/machines", {"app": "web", "host": "VH1"}, "host"),
    ],
    ids=["app-network", "peer-network", "process-group", "machine-host"],
)
def test_other_name_fields_are_checked_too(
    api: Api, path: str, body: dict[str, Any], field: str
) -> None:
    if "peers" in path:
        body = {**body, "public_key": wg_key()}
    error = refused(api, "POST", path, body, status=422, field=field)
    assert field in error["message"]


# --- unknown references ---------------------------------------------------------------------------


def test_unknown_region_on_machine_create(api: Api) -> None:
    body = {"app": "web", "region": "zzz"}
    refused(
        api,
        "POST",
        f"/v1/orgs/{ORG}/machines",
        body,
        status=422,
        field="region",
        mentions=("'zzz'",),
    )


def test_unknown_region_on_host_join(api: Api) -> None:
    refused(
        api,
        "POST",
        "/v1/hosts",
        host_body(region="mars"),
        status=422,
        field="region",
        mentions=("'mars'",),
        who="join",
    )


def test_unknown_region_on_peer_create(api: Api) -> None:
    body = {"name": "nowhere", "public_key": wg_key(), "region": "xyz"}
    refused(
        api, "POST", f"/v1/orgs/{ORG}/peers", body, status=422, field="region", mentions=("'xyz'",)
    )


def test_region_with_no_host_is_refused_naming_the_region(api: Api) -> None:
    body = {"app": "web", "region": "syd"}
    refused(
        api,
        "POST",
        f"/v1/orgs/{ORG}/machines",
        body,
        status=422,
        field="region",
        mentions=("'syd'",),
    )


MISSING_REFERENCES = [
    pytest.param(
        f"/v1/orgs/{ORG}/machines", {"app": "web", "host": "nohost"}, "host", "nohost", id="host"
    ),
    pytest.param(
        f"/v1/orgs/{ORG}/machines", {"app": "noapp", "host": "vh1"}, "app", "noapp", id="app"
    ),
    pytest.param(
        f"/v1/orgs/{ORG}/apps", {"name": "x", "network": "nonet"}, "network", "nonet", id="network"
    ),
]


@pytest.mark.parametrize(("path", "body", "field", "value"), MISSING_REFERENCES)
def test_unknown_references_are_refused_naming_them(
    api: Api, path: str, body: dict[str, Any], field: str, value: str
) -> None:
    error = refused(api, "POST", path, body, status=404, field=None, mentions=(f"'{value}'",))
    assert field in error["message"]


@pytest.mark.parametrize(("path", "body", "field", "value"), MISSING_REFERENCES)
def test_unknown_references_carry_the_field_in_the_error_body(
    api: Api, path: str, body: dict[str, Any], field: str, value: str
) -> None:
    r = api.admin.post(path, json=body)
    assert r.status_code in (404, 422)
    assert r.json()["error"].get("field") == field


# --- duplicates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name"),
    [("org", ORG), ("network", "blue"), ("app", "web"), ("peer", "laptop"), ("host", "vh1")],
)
def test_duplicate_names_are_409_naming_the_field(api: Api, kind: str, name: str) -> None:
    method, path, who = NAMED[kind]
    error = refused(
        api,
        method,
        path,
        named_body(kind, name),
        status=409,
        field="name",
        mentions=(f"'{name}'",),
        who=who,
    )
    assert error["code"] == "exists"


def test_the_default_network_name_is_taken_from_the_start(api: Api) -> None:
    refused(
        api,
        "POST",
        f"/v1/orgs/{ORG}/networks",
        {"name": "default"},
        status=409,
        field="name",
        mentions=("'default'",),
    )


# --- WireGuard keys -------------------------------------------------------------------------------

BAD_KEYS = [
    pytest.param("not-a-key", id="garbage"),
    pytest.param(base64.b64encode(os.urandom(31)).decode(), id="31-bytes"),
    pytest.param(base64.b64encode(os.urandom(33)).decode(), id="33-bytes"),
    pytest.param(base64.urlsafe_b64encode(b"\xfb" * 32).decode(), id="urlsafe-alphabet"),
    pytest.param(base64.b64encode(os.urandom(32)).decode().rstrip("="), id="no-padding"),
    pytest.param("", id="empty"),
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_malformed_public_key_on_host_join(api: Api, key: str) -> None:
    error = refused(
        api,
        "POST",
        "/v1/hosts",
        host_body(public_key=key),
        status=422,
        field="public_key",
        who="join",
    )
    assert "public_key" in error["message"]
    assert repr(key[:60]) in error["message"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_malformed_public_key_on_peer_create(api: Api, key: str) -> None:
    body = {"name": "badkey", "public_key": key}
    error = refused(api, "POST", f"/v1/orgs/{ORG}/peers", body, status=422, field="public_key")
    assert "public_key" in error["message"]


def test_a_host_cannot_join_with_another_hosts_public_key(api: Api) -> None:
    hosts = {h["name"]: h for h in api.admin.get("/v1/hosts").json()}
    taken = hosts["vh1"]["public_key"]
    before = api.revision()
    r = api.joiner.post("/v1/hosts", json=host_body("twin", public_key=taken))
    if r.status_code == 201:  # leave the fixture as it was for the other tests
        api.admin.delete("/v1/hosts/twin")
    assert r.status_code == 409, r.text
    assert r.json()["error"]["field"] == "public_key"
    assert "vh1" in r.json()["error"]["message"]
    assert api.revision() == before


def test_a_key_with_surrounding_whitespace_is_refused(api: Api) -> None:
    body = {"name": "spacey", "public_key": " " + wg_key()}
    refused(api, "POST", f"/v1/orgs/{ORG}/peers", body, status=422, field="public_key")


# --- unknown fields, server-owned fields, wrong types ---------------------------------------------

UNKNOWN_FIELDS = [
    ("POST", "/v1/orgs", {"name": "neworg", "colour": "red"}, "colour", "admin"),
    ("POST", f"/v1/orgs/{ORG}/networks", {"name": "n2", "net_id": 7}, "net_id", "admin"),
    ("POST", f"/v1/orgs/{ORG}/apps", {"name": "a2", "netwrok": "blue"}, "netwrok", "admin"),
    (
        "POST",
        f"/v1/orgs/{ORG}/machines",
        {"app": "web", "host": "vh1", "address": "fdaa::2"},
        "address",
        "admin",
    ),
    (
        "POST",
        f"/v1/orgs/{ORG}/machines",
        {"app": "web", "host": "vh1", "id": "00000000000000"},
        "id",
        "admin",
    ),
    (
        "POST",
        f"/v1/orgs/{ORG}/peers",
        {"name": "p2", "public_key": "K", "gateway": "vh2"},
        "gateway",
        "admin",
    ),
    (
        "POST",
        f"/v1/orgs/{ORG}/peers",
        {"name": "p2", "public_key": "K", "private_key": "K"},
        "private_key",
        "admin",
    ),
    ("POST", "/v1/hosts", {**host_body("h9"), "host_id": 1}, "host_id", "join"),
    (
        "PUT",
        "/v1/hosts/vh1/status",
        {"backend": "kernel", "applied_revision": 1, "x": 1},
        "x",
        "host",
    ),
    ("POST", f"/v1/orgs/{ORG}/tokens", {"description": "d", "kind": "admin"}, "kind", "admin"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "field", "who"),
    UNKNOWN_FIELDS,
    ids=[f"{p.rsplit('/', 1)[-1]}-{f}" for _, p, _, f, _ in UNKNOWN_FIELDS],
)
def test_unknown_and_server_owned_fields_are_refused(
    api: Api, method: str, path: str, body: dict[str, Any], field: str, who: str
) -> None:
    if body.get("public_key") == "K":
        body = {**body, "public_key": wg_key()}
    error = refused(api, method, path, body, status=422, field=field, who=who)
    assert field in error["message"]
    assert "unknown field" in error["message"]


WRONG_TYPES = [
    ("POST", "/v1/orgs", {"name": 5}, "name", "admin"),
    ("POST", "/v1/orgs", {"name": ["a"]}, "name", "admin"),
    ("POST", "/v1/orgs", {"name": None}, "name", "admin"),
    ("POST", f"/v1/orgs/{ORG}/apps", {"name": "a3", "network": 1}, "network", "admin"),
    (
        "POST",
        f"/v1/orgs/{ORG}/machines",
        {"app": "web", "host": "vh1", "metadata": ["a"]},
        "metadata",
        "admin",
    ),
    (
        "POST",
        f"/v1/orgs/{ORG}/machines",
        {"app": "web", "host": "vh1", "metadata": {"k": 5}},
        "metadata.k",
        "admin",
    ),
    (
        "POST",
        f"/v1/orgs/{ORG}/machines",
        {"app": "web", "host": "vh1", "state": "running"},
        "state",
        "admin",
    ),
    ("POST", f"/v1/orgs/{ORG}/machines", {"app": "web", "host": 7}, "host", "admin"),
    (
        "POST",
        f"/v1/orgs/{ORG}/peers",
        {"name": "p3", "public_key": "K", "routes": "2001:db8::/48"},
        "routes",
        "admin",
    ),
    (
        "POST",
        f"/v1/orgs/{ORG}/peers",
        {"name": "p3", "public_key": "K", "ephemeral": "maybe"},
        "ephemeral",
        "admin",
    ),
    ("POST", "/v1/hosts", {**host_body("h8"), "gateway": "perhaps"}, "gateway", "join"),
    ("POST", "/v1/hosts", {**host_body("h8"), "public_key": 12}, "public_key", "join"),
    (
        "PUT",
        "/v1/hosts/vh1/status",
        {"backend": "kernel", "applied_revision": "one"},
        "applied_revision",
        "host",
    ),
    ("POST", "/v1/tokens", {"kind": "superuser"}, "kind", "admin"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "field", "who"),
    WRONG_TYPES,
    ids=[f"{i}-{f}" for i, (_, _, _, f, _) in enumerate(WRONG_TYPES)],
)
def test_wrong_types_are_422_naming_the_field(
    api: Api, method: str, path: str, body: dict[str, Any], field: str, who: str
) -> None:
    if body.get("public_key") == "K":
        body = {**body, "public_key": wg_key()}
    error = refused(api, method, path, body, status=422, field=field, who=who)
    assert error["message"].startswith(f"{field}:")


@pytest.mark.parametrize(
    "body", [[1, 2], "val", 5, None], ids=["array", "string", "number", "null"]
)
def test_a_body_that_is_not_an_object_is_refused(api: Api, body: Any) -> None:
    refused(api, "POST", "/v1/orgs", json.dumps(body).encode(), status=422, field="body")


def test_a_body_that_is_not_json_is_refused_naming_the_body(api: Api) -> None:
    refused(api, "POST", "/v1/orgs", b"{not json", status=422, field="body")


def test_missing_required_fields_are_named(api: Api) -> None:
    refused(api, "POST", "/v1/orgs", {}, status=422, field="name", mentions=("name",))
    refused(api, "POST", f"/v1/orgs/{ORG}/machines", {"host": "vh1"}, status=422, field="app")
    refused(api, "POST", f"/v1/orgs/{ORG}/peers", {"name": "nokey"}, status=422, field="public_key")


# --- machines -------------------------------------------------------------------------------------


def test_machine_create_with_neither_host_nor_region(api: Api) -> None:
    error = refused(
        api, "POST", f"/v1/orgs/{ORG}/machines", {"app": "web"}, status=422, field="host"
    )
    assert "host" in error["message"]
    assert "region" in error["message"]


@pytest.mark.parametrize(
    ("metadata", "mention"),
    [
        ({"Bad Key": "x"}, "'Bad Key'"),
        ({"UPPER": "x"}, "'UPPER'"),
        ({"": "x"}, "''"),
        ({"_lead": "x"}, "'_lead'"),
        ({"k" * 64: "x"}, "k" * 64),
        ({"dot.ted": "x"}, "'dot.ted'"),
    ],
    ids=["space", "uppercase", "empty", "leading-underscore", "64-chars", "dot"],
)
def test_metadata_with_a_bad_key(api: Api, metadata: dict[str, str], mention: str) -> None:
    body = {"app": "web", "host": "vh1", "metadata": metadata}
    error = refused(
        api, "POST", f"/v1/orgs/{ORG}/machines", body, status=422, mentions=(mention,), field=None
    )
    assert error["field"].startswith("metadata")


def test_metadata_value_too_long(api: Api) -> None:
    body = {"app": "web", "host": "vh1", "metadata": {"k": "v" * 256}}
    refused(
        api,
        "POST",
        f"/v1/orgs/{ORG}/machines",
        body,
        status=422,
        field="metadata.k",
        mentions=("'k'",),
    )


def test_metadata_with_too_many_entries(api: Api) -> None:
    body = {"app": "web", "host": "vh1", "metadata": {f"k{i}": "v" for i in range(65)}}
    refused(
        api,
        "POST",
        f"/v1/orgs/{ORG}/machines",
        body,
        status=422,
        field="metadata",
        mentions=("64",),
    )


def test_host_in_another_region_than_the_one_given(api: Api) -> None:
    body = {"app": "web", "host": "vh1", "region": "iad"}
    refused(
        api,
        "POST",
        f"/v1/orgs/{ORG}/machines",
        body,
        status=422,
        field="region",
        mentions=("'vh1'", "'fra'", "'iad'"),
    )


def test_a_new_machine_cannot_start_destroyed(api: Api) -> None:
    body = {"app": "web", "host": "vh1", "state": "destroyed"}
    refused(api, "POST", f"/v1/orgs/{ORG}/machines", body, status=422, field="state")


# --- deletions that would orphan something --------------------------------------------------------


def entities(api: Api) -> dict[str, Any]:
    """The snapshot without its revision: every entity the agents see."""
    snap = api.snapshot()
    del snap["revision"]
    return snap


def test_deleting_an_app_that_still_has_machines(api: Api) -> None:
    before = entities(api)
    machines = api.admin.get(f"/v1/orgs/{ORG}/machines", params={"app": "web"}).json()
    assert len(machines) == 2
    r = api.admin.delete(f"/v1/orgs/{ORG}/apps/web")
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "conflict"
    assert "web" in error["message"]
    for m in machines:
        assert m["id"] in error["message"]
    # Nothing deleted. (The refused deletion did write and remove its deletion guard, an
    # internal key, so the revision moves by two; no entity changed.)
    assert entities(api) == before
    assert api.admin.get(f"/v1/orgs/{ORG}/apps/web").status_code == 200
    # And the app is not left blocked by the guard: machines can still be created in it.
    r = api.admin.post(f"/v1/orgs/{ORG}/machines", json={"app": "web", "host": "vh2"})
    assert r.status_code == 201, r.text
    assert api.admin.delete(f"/v1/orgs/{ORG}/machines/{r.json()['id']}").status_code == 200


def test_deleting_the_default_network(api: Api) -> None:
    error = refused(
        api, "DELETE", f"/v1/orgs/{ORG}/networks/default", None, status=409, field="name"
    )
    assert "default" in error["message"]


def test_deleting_a_network_that_still_has_an_app_or_an_org_that_still_has_things(
    api: Api,
) -> None:
    r = api.admin.post(f"/v1/orgs/{ORG}/apps", json={"name": "on-blue", "network": "blue"})
    assert r.status_code == 201, r.text
    before = entities(api)
    r = api.admin.delete(f"/v1/orgs/{ORG}/networks/blue")
    assert r.status_code == 409, r.text
    assert "on-blue" in r.json()["error"]["message"]
    r = api.admin.delete(f"/v1/orgs/{ORG}")
    assert r.status_code == 409, r.text
    assert "web" in r.json()["error"]["message"]
    r = api.admin.delete("/v1/hosts/vh1")
    assert r.status_code == 409, r.text
    assert "laptop" in r.json()["error"]["message"]
    assert entities(api) == before


# --- other fields ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [
        ("192.0.2.1", "endpoint"),
        ("192.0.2.1:0", "endpoint"),
        ("192.0.2.1:70000", "endpoint"),
        ("[2001:db8::1:51820", "endpoint"),
        ("bad host name:51820", "endpoint"),
    ],
)
def test_bad_host_endpoint(api: Api, endpoint: str, field: str) -> None:
    refused(
        api,
        "POST",
        "/v1/hosts",
        host_body(endpoint=endpoint),
        status=422,
        field=field,
        mentions=(repr(endpoint),),
        who="join",
    )


@pytest.mark.parametrize(
    ("routes", "status", "mention"),
    [
        (["not-a-prefix"], 422, "'not-a-prefix'"),
        (["10.0.0.0/8"], 422, "'10.0.0.0/8'"),
        (["2001:db8::1/48"], 422, "'2001:db8::1/48'"),
        (["fdaa:0:1::/48"], 409, "fdaa:0:1::/48"),
        (["::/0"], 422, "::/0"),
        (["fe80::/64"], 422, "link-local"),
        (["2001:db8::/48", "2001:db8:0:1::/64"], 422, "2001:db8:0:1::/64"),
    ],
    ids=[
        "garbage",
        "ipv4",
        "host-bits",
        "inside-6pn",
        "default-route",
        "link-local",
        "self-overlap",
    ],
)
def test_bad_peer_routes(api: Api, routes: list[str], status: int, mention: str) -> None:
    body = {"name": "routed", "public_key": wg_key(), "routes": routes}
    refused(
        api,
        "POST",
        f"/v1/orgs/{ORG}/peers",
        body,
        status=status,
        field="routes",
        mentions=(mention,),
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"backend": "userspace", "applied_revision": 1}, "backend"),
        ({"backend": "kernel", "applied_revision": -1}, "applied_revision"),
    ],
)
def test_bad_host_status(api: Api, body: dict[str, Any], field: str) -> None:
    refused(
        api,
        "PUT",
        "/v1/hosts/vh1/status",
        body,
        status=422,
        field=field,
        mentions=(field,),
        who="host",
    )


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/tokens", {"kind": "host"}, "kind"),
        ("/v1/tokens", {"kind": "org"}, "org"),
        ("/v1/tokens", {"kind": "join", "description": "d" * 201}, "description"),
        (f"/v1/orgs/{ORG}/tokens", {"description": "d" * 201}, "description"),
    ],
    ids=["host-kind", "org-kind", "long-description", "org-long-description"],
)
def test_bad_token_requests(api: Api, path: str, body: dict[str, Any], field: str) -> None:
    refused(api, "POST", path, body, status=422, field=field)


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (f"/v1/orgs/{ORG}/machines?all=maybe", "all"),
        ("/v1/watch?since=-1", "since"),
        ("/v1/watch?since=abc", "since"),
    ],
)
def test_bad_query_parameters(api: Api, path: str, field: str) -> None:
    refused(api, "GET", path, None, status=422, field=field, mentions=(field,))


@pytest.mark.parametrize(
    ("method", "path", "status"), [("GET", "/v1/nothing", 404), ("PATCH", "/v1/orgs", 405)]
)
def test_unknown_routes_answer_the_error_body(
    api: Api, method: str, path: str, status: int
) -> None:
    before = api.revision()
    r = api.admin.request(method, path)
    assert r.status_code == status
    error = r.json()["error"]
    assert error["code"]
    assert path in error["message"]
    assert api.revision() == before

"""Who may call what (SPEC 10, ``control/api/auth.py``), against a real server over real HTTP.

Token kinds: admin; an org token of org ``alpha`` (the owner of every org-scoped object the
matrix touches); an org token of ``bravo`` (another tenant: alpha's objects must answer 404,
exactly like an organization that does not exist); a host credential (host ``h2``; ``h3`` is
another host); the join token; no token; a garbage token. Every refused call must change
nothing: the store revision does not move. Then: no secret is stored or logged in plaintext,
and revocation is immediate.
"""

from __future__ import annotations

import base64
import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.harness import ServerProcess

pytestmark = pytest.mark.component

KINDS = ("admin", "org_a", "org_b", "host", "join", "none", "garbage")
OWNER, OTHER, GHOST = "alpha", "bravo", "ghost-org"


def wg_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@dataclass
class World:
    server: ServerProcess
    secrets: dict[str, str | None]
    clients: dict[str, httpx.Client]
    ids: dict[str, Any] = field(default_factory=dict)
    counter: Iterator[int] = field(default_factory=itertools.count)

    @property
    def admin(self) -> httpx.Client:
        return self.clients["admin"]

    def fresh(self, prefix: str) -> str:
        return f"{prefix}-{next(self.counter)}"

    def ok(self, r: httpx.Response, status: int = 201) -> Any:
        assert r.status_code == status, r.text
        return r.json() if r.content else None

    def revision(self) -> int:
        revision: int = self.ok(self.admin.get("/v1/snapshot"), 200)["revision"]
        return revision

    def machine(self, org: str = OWNER, state: str = "started") -> str:
        body = {"app": "web", "host": "h1", "state": state}
        machine_id: str = self.ok(self.admin.post(f"/v1/orgs/{org}/machines", json=body))["id"]
        return machine_id

    def peer(self, org: str = OWNER) -> str:
        name = self.fresh("peer")
        body = {"name": name, "public_key": wg_key()}
        self.ok(self.admin.post(f"/v1/orgs/{org}/peers", json=body))
        return name

    def org_token(self, org: str = OWNER) -> tuple[str, str]:
        made = self.ok(self.admin.post(f"/v1/orgs/{org}/tokens", json={"description": "t"}))
        return made["token"]["id"], made["secret"]

    def join(self, name: str | None = None, region: str = "fra") -> tuple[str, str]:
        name = name or self.fresh("host")
        body = {
            "name": name,
            "region": region,
            "endpoint": "192.0.2.1:51820",
            "public_key": wg_key(),
            "gateway": True,
        }
        made = self.ok(self.admin.post("/v1/hosts", json=body))
        return name, made["credential"]


def client_for(server: ServerProcess, secret: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {secret}"} if secret is not None else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    server = ServerProcess(db=tmp_path_factory.mktemp("auth") / "server.db").start()
    clients: dict[str, httpx.Client] = {}
    try:
        clients["admin"] = client_for(server, server.admin_token)
        w = World(server, {"admin": server.admin_token}, clients)
        w.join("h1")  # the gateway every peer lands on (lowest host ID)
        for org in (OWNER, OTHER):
            w.ok(w.admin.post("/v1/orgs", json={"name": org}))
            w.ok(w.admin.post(f"/v1/orgs/{org}/apps", json={"name": "web"}))
        w.ids["a_machine"] = w.machine(OWNER)
        w.ids["b_machine"] = w.machine(OTHER)
        w.ids["a_peer"] = w.peer(OWNER)
        w.ids["b_peer"] = w.peer(OTHER)
        w.ids["a_token"], w.secrets["org_a"] = w.org_token(OWNER)
        w.ids["b_token"], w.secrets["org_b"] = w.org_token(OTHER)
        # The host credential of the matrix belongs to h2; h3 is "another host".
        _, w.secrets["host"] = w.join("h2", region="iad")
        w.join("h3", region="iad")
        w.secrets["join"] = server.join_token
        w.secrets["none"] = None
        w.secrets["garbage"] = "sixpn_" + base64.urlsafe_b64encode(os.urandom(32)).decode()
        for kind in KINDS[1:]:
            clients[kind] = client_for(server, w.secrets[kind])
        status = {"backend": "kernel", "applied_revision": 1}
        w.ok(clients["host"].put("/v1/hosts/h2/status", json=status), 200)
        yield w
    finally:
        for c in clients.values():
            c.close()
        server.kill()


# --- the matrix -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # "{org}" is replaced by the target organization
    body: dict[str, Any] | None = None


def org_scoped(ok: int) -> dict[str, int]:
    return {"admin": ok, "org_a": ok, "org_b": 404, "host": 403, "join": 403}


def admin_only(ok: int) -> dict[str, int]:
    return {"admin": ok, "org_a": 403, "org_b": 403, "host": 403, "join": 403}


def fabric_reader(ok: int) -> dict[str, int]:
    return {"admin": ok, "org_a": 403, "org_b": 403, "host": ok, "join": 403}


def any_member(ok: int) -> dict[str, int]:
    return {"admin": ok, "org_a": ok, "org_b": ok, "host": ok, "join": 403}


@dataclass(frozen=True)
class Case:
    name: str
    prepare: Callable[[World, str], Call]
    expect: dict[str, int]


def fixed(method: str, path: str, body: dict[str, Any] | None = None) -> Callable[..., Call]:
    return lambda w, kind: Call(method, path, body)


def delete_org(w: World, kind: str) -> Call:
    if kind == "admin":  # the admin really deletes: give it an org of its own
        name = w.fresh("doomed")
        w.ok(w.admin.post("/v1/orgs", json={"name": name}))
        return Call("DELETE", f"/v1/orgs/{name}")
    return Call("DELETE", "/v1/orgs/{org}")


def delete_network(w: World, kind: str) -> Call:
    name = w.fresh("net")
    w.ok(w.admin.post(f"/v1/orgs/{OWNER}/networks", json={"name": name}))
    return Call("DELETE", f"/v1/orgs/{{org}}/networks/{name}")


def delete_app(w: World, kind: str) -> Call:
    name = w.fresh("app")
    w.ok(w.admin.post(f"/v1/orgs/{OWNER}/apps", json={"name": name}))
    return Call("DELETE", f"/v1/orgs/{{org}}/apps/{name}")


def machine_action(action: str, state: str) -> Callable[[World, str], Call]:
    def prepare(w: World, kind: str) -> Call:
        machine_id = w.machine(OWNER, state=state)
        if action == "destroy":
            return Call("DELETE", f"/v1/orgs/{{org}}/machines/{machine_id}")
        return Call("POST", f"/v1/orgs/{{org}}/machines/{machine_id}/{action}")

    return prepare


def delete_peer(w: World, kind: str) -> Call:
    return Call("DELETE", f"/v1/orgs/{{org}}/peers/{w.peer(OWNER)}")


def revoke_org_token(w: World, kind: str) -> Call:
    return Call("DELETE", f"/v1/orgs/{{org}}/tokens/{w.org_token(OWNER)[0]}")


def create_org(w: World, kind: str) -> Call:
    return Call("POST", "/v1/orgs", {"name": w.fresh("new-org")})


def create_named(path: str, **extra: Any) -> Callable[[World, str], Call]:
    return lambda w, kind: Call("POST", path, {"name": w.fresh("made"), **extra})


def create_peer(w: World, kind: str) -> Call:
    return Call("POST", "/v1/orgs/{org}/peers", {"name": w.fresh("p"), "public_key": wg_key()})


def join_host(w: World, kind: str) -> Call:
    body = {
        "name": w.fresh("joiner"),
        "region": "ams",
        "endpoint": "192.0.2.7:51820",
        "public_key": wg_key(),
    }
    return Call("POST", "/v1/hosts", body)


def delete_host(w: World, kind: str) -> Call:
    return Call("DELETE", f"/v1/hosts/{w.join()[0]}")


def revoke_token(w: World, kind: str) -> Call:
    made = w.ok(w.admin.post("/v1/tokens", json={"kind": "join"}))
    return Call("DELETE", f"/v1/tokens/{made['token']['id']}")


STATUS = {"backend": "kernel", "applied_revision": 3, "message": "ok"}
MACHINE = {"app": "web", "host": "h1"}

CASES = [
    # organizations
    Case("list orgs", fixed("GET", "/v1/orgs"), any_member(200) | {"host": 403}),
    Case("create org", create_org, admin_only(201)),
    Case("get org", fixed("GET", "/v1/orgs/{org}"), org_scoped(200)),
    Case("delete org", delete_org, admin_only(204)),
    # networks
    Case("list networks", fixed("GET", "/v1/orgs/{org}/networks"), org_scoped(200)),
    Case("create network", create_named("/v1/orgs/{org}/networks"), org_scoped(201)),
    Case("get network", fixed("GET", "/v1/orgs/{org}/networks/default"), org_scoped(200)),
    Case("delete network", delete_network, org_scoped(204)),
    # apps
    Case("list apps", fixed("GET", "/v1/orgs/{org}/apps"), org_scoped(200)),
    Case("create app", create_named("/v1/orgs/{org}/apps"), org_scoped(201)),
    Case("get app", fixed("GET", "/v1/orgs/{org}/apps/web"), org_scoped(200)),
    Case("delete app", delete_app, org_scoped(204)),
    # machines
    Case("list machines", fixed("GET", "/v1/orgs/{org}/machines"), org_scoped(200)),
    Case("create machine", fixed("POST", "/v1/orgs/{org}/machines", MACHINE), org_scoped(201)),
    Case(
        "get machine",
        lambda w, kind: Call("GET", f"/v1/orgs/{{org}}/machines/{w.ids['a_machine']}"),
        org_scoped(200),
    ),
    Case("start machine", machine_action("start", "stopped"), org_scoped(200)),
    Case("stop machine", machine_action("stop", "started"), org_scoped(200)),
    Case("destroy machine", machine_action("destroy", "started"), org_scoped(200)),
    # peers
    Case("list peers", fixed("GET", "/v1/orgs/{org}/peers"), org_scoped(200)),
    Case("create peer", create_peer, org_scoped(201)),
    Case(
        "get peer",
        lambda w, kind: Call("GET", f"/v1/orgs/{{org}}/peers/{w.ids['a_peer']}"),
        org_scoped(200),
    ),
    Case(
        "peer status",
        lambda w, kind: Call("GET", f"/v1/orgs/{{org}}/peers/{w.ids['a_peer']}/status"),
        org_scoped(200),
    ),
    Case("delete peer", delete_peer, org_scoped(204)),
    # org tokens
    Case("list org tokens", fixed("GET", "/v1/orgs/{org}/tokens"), org_scoped(200)),
    Case("create org token", fixed("POST", "/v1/orgs/{org}/tokens", {}), org_scoped(201)),
    Case("revoke org token", revoke_org_token, org_scoped(204)),
    # hosts
    Case("list hosts", fixed("GET", "/v1/hosts"), any_member(200)),
    Case("get host", fixed("GET", "/v1/hosts/h1"), any_member(200)),
    Case("join host", join_host, admin_only(201) | {"join": 201}),
    Case("delete host", delete_host, admin_only(204)),
    Case(
        "own host status write",
        fixed("PUT", "/v1/hosts/h2/status", STATUS),
        admin_only(403) | {"host": 200},
    ),
    Case("other host status write", fixed("PUT", "/v1/hosts/h3/status", STATUS), admin_only(403)),
    Case("read host status", fixed("GET", "/v1/hosts/h2/status"), fabric_reader(200)),
    Case(
        "own host endpoint",
        fixed("PUT", "/v1/hosts/h2/endpoint", {"endpoint": "192.0.2.1:51820"}),
        admin_only(200) | {"host": 200},
    ),
    Case(
        "other host endpoint",
        fixed("PUT", "/v1/hosts/h3/endpoint", {"endpoint": "192.0.2.1:51820"}),
        admin_only(200),
    ),
    Case(
        "own peer report",
        fixed("PUT", "/v1/hosts/h2/peers", {"peers": []}),
        admin_only(403) | {"host": 200},
    ),
    Case(
        "other host peer report", fixed("PUT", "/v1/hosts/h3/peers", {"peers": []}), admin_only(403)
    ),
    # fleet-wide tokens, the feed, regions
    Case("list tokens", fixed("GET", "/v1/tokens"), admin_only(200)),
    Case("create token", fixed("POST", "/v1/tokens", {"kind": "join"}), admin_only(201)),
    Case("revoke token", revoke_token, admin_only(204)),
    Case("snapshot", fixed("GET", "/v1/snapshot"), fabric_reader(200)),
    Case("watch", fixed("GET", "/v1/watch"), fabric_reader(200)),
    Case("regions", fixed("GET", "/v1/regions"), any_member(200)),
]

KNOWN_BUGS: dict[tuple[str, str], str] = {}


def matrix() -> Iterator[Any]:
    for case in CASES:
        for kind in KINDS:
            marks = []
            if (case.name, kind) in KNOWN_BUGS:
                marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[case.name, kind]))
            yield pytest.param(case, kind, id=f"{case.name}-{kind}", marks=marks)


def send(client: httpx.Client, call: Call, org: str) -> tuple[int, bytes]:
    path = call.path.format(org=org)
    if call.path == "/v1/watch":
        with client.stream(call.method, path) as r:
            first = next(r.iter_lines(), "") if r.status_code == 200 else r.read().decode()
            if r.status_code == 200:
                assert '"heartbeat"' in first
            return r.status_code, first.encode()
    r = client.request(call.method, path, json=call.body)
    return r.status_code, r.content


@pytest.mark.parametrize(("case", "kind"), list(matrix()))
def test_auth_matrix(world: World, case: Case, kind: str) -> None:
    expected = case.expect.get(kind, 401)  # "none" and "garbage": 401 everywhere
    call = case.prepare(world, kind)
    before = world.revision()
    status, body = send(world.clients[kind], call, OWNER)
    assert status == expected, body
    if status >= 400:
        error = httpx.Response(status, content=body).json()["error"]
        assert error["code"] == {401: "unauthorized", 403: "forbidden", 404: "not_found"}[status]
        assert error["message"]
        assert world.revision() == before, "a refused call changed the store"
    if kind == "org_b" and "{org}" in call.path:
        # Another tenant's org answers exactly like an org that does not exist.
        ghost_status, ghost_body = send(world.clients[kind], call, GHOST)
        assert ghost_status == status
        assert body.decode().replace(OWNER, GHOST) == ghost_body.decode()
        assert world.revision() == before


# --- beyond the matrix ----------------------------------------------------------------------------


def test_org_tokens_list_only_their_own_org(world: World) -> None:
    for kind, org in (("org_a", OWNER), ("org_b", OTHER)):
        r = world.clients[kind].get("/v1/orgs")
        assert r.status_code == 200
        assert [o["name"] for o in r.json()] == [org]
    assert {OWNER, OTHER} <= {o["name"] for o in world.admin.get("/v1/orgs").json()}


def test_org_token_cannot_reach_another_orgs_objects_through_its_own_org_path(
    world: World,
) -> None:
    """Object IDs of bravo used under alpha's path: 404, and bravo's objects are untouched."""
    a = world.clients["org_a"]
    b_machine, b_token = world.ids["b_machine"], world.ids["b_token"]
    admin_token_id = next(
        t["id"] for t in world.admin.get("/v1/tokens").json() if t["kind"] == "admin"
    )
    before = world.revision()
    for method, path in (
        ("GET", f"/v1/orgs/{OWNER}/machines/{b_machine}"),
        ("POST", f"/v1/orgs/{OWNER}/machines/{b_machine}/stop"),
        ("DELETE", f"/v1/orgs/{OWNER}/machines/{b_machine}"),
        ("DELETE", f"/v1/orgs/{OWNER}/tokens/{b_token}"),
        ("DELETE", f"/v1/orgs/{OWNER}/tokens/{admin_token_id}"),
    ):
        r = a.request(method, path)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] == "not_found"
    assert world.revision() == before
    machine = world.admin.get(f"/v1/orgs/{OTHER}/machines/{b_machine}").json()
    assert machine["state"] == "started"
    assert world.clients["org_b"].get(f"/v1/orgs/{OTHER}").status_code == 200
    # The listing of alpha's machines never shows bravo's.
    listed = a.get(f"/v1/orgs/{OWNER}/machines", params={"all": "true"}).json()
    assert {m["org"] for m in listed} == {OWNER}
    assert b_machine not in {m["id"] for m in listed}


def test_no_secret_is_stored_or_logged_in_plaintext(world: World) -> None:
    # Use every credential once more, so that whatever a request could write has been written.
    for kind in ("admin", "org_a", "org_b", "host"):
        assert world.clients[kind].get("/v1/regions").status_code == 200
    fresh_host, fresh_credential = world.join()
    _, fresh_org_token = world.org_token(OWNER)
    made = world.ok(world.admin.post("/v1/tokens", json={"kind": "join"}))
    secrets = [s for s in world.secrets.values() if s is not None]
    secrets += [fresh_credential, fresh_org_token, made["secret"]]
    secrets.remove(world.secrets["garbage"])  # never valid: may be logged as an attempt

    db = world.server.db
    files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    assert world.server.log is not None
    files.append(world.server.log)
    contents = {str(f): f.read_bytes() for f in files if f.exists()}
    assert str(db) in contents
    assert str(files[1]) in contents, "no WAL file: is the store in WAL mode?"
    for secret in secrets:
        needles = [secret.encode(), secret.removeprefix("sixpn_").encode()]
        for name, data in contents.items():
            for needle in needles:
                assert needle not in data, f"a token secret is in plaintext in {name}"
    # Nor does the API ever show a secret again once it was handed out.
    for path in ("/v1/tokens", f"/v1/orgs/{OWNER}/tokens", "/v1/snapshot", "/v1/hosts"):
        text = world.admin.get(path).text
        assert not [s for s in secrets if s in text], path
    assert fresh_host in world.admin.get("/v1/hosts").text


def test_revoking_an_org_token_refuses_it_at_once(world: World) -> None:
    token_id, secret = world.org_token(OWNER)
    with client_for(world.server, secret) as c:
        assert c.get(f"/v1/orgs/{OWNER}/apps").status_code == 200
        r = world.clients["org_a"].delete(f"/v1/orgs/{OWNER}/tokens/{token_id}")
        assert r.status_code == 204, r.text
        r = c.get(f"/v1/orgs/{OWNER}/apps")
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"
        assert token_id not in {t["id"] for t in world.admin.get("/v1/tokens").json()}

    token_id, secret = world.org_token(OWNER)
    with client_for(world.server, secret) as c:
        assert c.get(f"/v1/orgs/{OWNER}").status_code == 200
        assert world.admin.delete(f"/v1/tokens/{token_id}").status_code == 204
        assert c.get(f"/v1/orgs/{OWNER}").status_code == 401


def test_deleting_a_host_or_an_org_revokes_its_credentials(world: World) -> None:
    name, credential = world.join()
    with client_for(world.server, credential) as c:
        assert c.get("/v1/snapshot").status_code == 200
        assert world.admin.delete(f"/v1/hosts/{name}").status_code == 204
        assert c.get("/v1/snapshot").status_code == 401

    org = world.fresh("short-lived")
    world.ok(world.admin.post("/v1/orgs", json={"name": org}))
    _, secret = world.org_token(org)
    with client_for(world.server, secret) as c:
        assert c.get(f"/v1/orgs/{org}").status_code == 200
        assert world.admin.delete(f"/v1/orgs/{org}").status_code == 204
        assert c.get(f"/v1/orgs/{org}").status_code == 401
        # A new org of the same name does not bring the old token back.
        world.ok(world.admin.post("/v1/orgs", json={"name": org}))
        assert c.get(f"/v1/orgs/{org}").status_code == 401


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Basic dXNlcjpwYXNz", "Token abc", "bearer not-a-token"],
)
def test_malformed_authorization_headers_get_401(world: World, header: str) -> None:
    headers = {"Authorization": header} if header else {}
    r = httpx.get(f"{world.server.url}/v1/orgs", headers=headers, timeout=10)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"


def test_unauthenticated_request_with_a_malformed_body_gets_401(world: World) -> None:
    r = httpx.post(
        f"{world.server.url}/v1/orgs",
        content=b"{not json",
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 401


def test_a_revoked_host_credential_stops_receiving_the_change_stream(world: World) -> None:
    name, credential = world.join()
    secret_org = world.fresh("after-revoke")
    with (
        client_for(world.server, credential) as c,
        c.stream("GET", "/v1/watch", params={"since": world.revision()}) as stream,
    ):
        assert stream.status_code == 200
        lines = stream.iter_lines()
        assert '"heartbeat"' in next(lines)
        assert world.admin.delete(f"/v1/hosts/{name}").status_code == 204
        assert c.get("/v1/snapshot").status_code == 401
        world.ok(world.admin.post("/v1/orgs", json={"name": secret_org}))
        # Heartbeats (every 0.5 s here) keep the loop turning until the deadline.
        deadline = time.monotonic() + 3
        delivered = []
        for line in lines:
            delivered.append(line)
            if secret_org in line or time.monotonic() > deadline:
                break
    assert not [line for line in delivered if secret_org in line], (
        "a change made after the revocation reached the revoked host"
    )

"""The typed API client: one method per operation of the control plane's HTTP API.

``async with Client(url, token) as c: machine = await c.create_machine("acme", "web", host="h1")``.
Methods return the entity dataclasses of ``model/entities.py`` (or the API's response models,
``PeerCreated``, ``HostJoined``, ``TokenCreated``); failures are the ``model/errors.py`` tree
(``wire.py`` translates, in one place). Request bodies are built from the API's own request
schemas, so client and server cannot disagree on a field name.

The token is a secret: it is sent as ``Authorization: Bearer`` and never appears in ``repr``
or in logs (httpx logs request lines, not headers).

Several replicas (``url`` = ``"URL,URL,..."``, as in ``SIXPN_API`` or ``--control``): the client
talks to one at a time and moves to the next when it cannot reach it. A request moves with it
only when it surely was not received (the connection was never made), or when it is a read
(GET): a create whose answer was lost is not sent twice. The change stream (:meth:`follow`)
reconnects to the next replica after any failure and resumes from its last revision, which
every replica shares (they serve one store).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import AsyncGenerator, Iterable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from sixpn.client import feed
from sixpn.client.feed import ChangeBatch, Snapshot
from sixpn.client.wire import (
    UNIX_TLS_NAME,
    check_url,
    decode,
    error_from_answer,
    tls_context,
    translating,
)
from sixpn.control.api.schemas import (
    AppCreate,
    HostEndpoint,
    HostJoin,
    HostJoined,
    HostStatusReport,
    MachineCreate,
    NetworkCreate,
    OrgCreate,
    OrgTokenCreate,
    PeerCounters,
    PeerCreate,
    PeerCreated,
    PeerReport,
    PeerReportAccepted,
    PeerStatusView,
    TokenCreate,
    TokenCreated,
)
from sixpn.model.entities import (
    App,
    Host,
    HostStatus,
    Machine,
    MachineState,
    Network,
    Org,
    Peer,
    Region,
    Token,
    TokenKind,
)
from sixpn.model.errors import Unavailable

T = TypeVar("T")
log = logging.getLogger("sixpn.client")

DEFAULT_API = "http://127.0.0.1:7180"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
WATCH_READ_TIMEOUT = 60.0  # several heartbeats (10 s by default): a silent stream is a dead one


def _http_client(
    url: str,
    headers: Mapping[str, str],
    timeout: httpx.Timeout,
    transport: httpx.AsyncBaseTransport | None,
    verify: ssl.SSLContext | bool,
) -> httpx.AsyncClient:
    base_url = url
    if url.startswith("unix:"):
        # A control plane on a Unix socket (a local server; the tests' namespaces).
        transport = transport or httpx.AsyncHTTPTransport(uds=url[5:])
        base_url = "http://sixpn"
    elif url.startswith("https+unix:"):
        # The same over TLS (the lab, with its own CA): the certificate names UNIX_TLS_NAME.
        path = url[len("https+unix:") :]
        transport = transport or httpx.AsyncHTTPTransport(uds=path, verify=verify)
        base_url = f"https://{UNIX_TLS_NAME}"
    return httpx.AsyncClient(
        base_url=base_url,
        headers=dict(headers),
        timeout=timeout,
        transport=transport,
        verify=verify,
    )


def _may_resend(method: str, exc: Unavailable) -> bool:
    """Whether a failed request may go to another replica: a read always; anything when the
    connection was never made (so the request never reached a server)."""
    cause = exc.__cause__
    never_sent = isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout)
    return method == "GET" or never_sent


def _seg(value: str) -> str:
    """A path segment, quoted so that a name can never change the route it is sent to."""
    return quote(value, safe="")


def split_urls(urls: str) -> list[str]:
    """``"URL[,URL...]"`` as checked base URLs, in order; InvalidInput names a bad one."""
    found = [check_url(u.strip()) for u in urls.split(",") if u.strip()]
    if not found:
        found = [check_url(urls)]  # the empty string: check_url says what is wrong
    return found


class Client:
    """An async client of a control plane (one or several replicas). Use as ``async with``,
    or call :meth:`aclose`."""

    def __init__(
        self,
        url: str = DEFAULT_API,
        token: str | None = None,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        watch_read_timeout: float = WATCH_READ_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        ca: str | os.PathLike[str] | None = None,
    ) -> None:
        self.urls = split_urls(url)
        self._ca = None if ca is None else os.fspath(ca)
        # One TLS context for every replica, made only when one is https (it reads the
        # system's trust store, or the CA file, which must then be usable: InvalidInput).
        verify: ssl.SSLContext | bool = True
        if any(u.startswith(("https:", "https+unix:")) for u in self.urls):
            verify = tls_context(self._ca)
        self._current = 0
        self._has_token = bool(token)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = timeout
        self._watch_timeout = httpx.Timeout(
            connect=timeout.connect, read=watch_read_timeout, write=timeout.write, pool=timeout.pool
        )
        self._clients = [
            _http_client(u, headers, timeout, transport if len(self.urls) == 1 else None, verify)
            for u in self.urls
        ]

    @property
    def url(self) -> str:
        """The replica this client talks to now."""
        return self.urls[self._current]

    @property
    def _http(self) -> httpx.AsyncClient:
        return self._clients[self._current]

    def _move_on(self, failed: str, why: Exception) -> None:
        """After a failure at ``failed``: the next replica (if that one is still current)."""
        if len(self.urls) > 1 and self.url == failed:
            self._current = (self._current + 1) % len(self.urls)
            log.warning("control plane at %s: %s; now using %s", failed, why, self.url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Client:
        """``SIXPN_API`` (default ``http://127.0.0.1:7180``), ``SIXPN_TOKEN``, and ``SIXPN_CA``
        (the CA that an https control plane's certificate must chain to; default: the
        system's trust store)."""
        env = os.environ if environ is None else environ
        return cls(
            env.get("SIXPN_API") or DEFAULT_API,
            env.get("SIXPN_TOKEN") or None,
            ca=env.get("SIXPN_CA") or None,
        )

    @property
    def has_token(self) -> bool:
        return self._has_token

    def __repr__(self) -> str:
        token = "<redacted>" if self._has_token else None
        return f"Client(url={self.url!r}, token={token})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for http in self._clients:
            await http.aclose()

    # -- the one request path ---------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: BaseModel | None = None,
        params: Mapping[str, str | int] | None = None,
    ) -> bytes:
        payload = None if body is None else body.model_dump(mode="json")
        for tries_left in reversed(range(len(self.urls))):
            url, http = self.url, self._http
            try:
                with translating(url, ca=self._ca):
                    resp = await http.request(method, path, json=payload, params=params)
            except Unavailable as exc:
                if not tries_left or not _may_resend(method, exc):
                    self._move_on(url, exc)  # the next call tries another replica
                    raise
                self._move_on(url, exc)
                continue
            if resp.is_error:
                raise error_from_answer(url, resp.status_code, resp.content)
            return resp.content
        raise AssertionError("unreachable: the last try raises or returns")

    async def _get(self, tp: type[T], path: str, **params: str | int) -> T:
        return decode(self.url, tp, await self._call("GET", path, params=params or None))

    async def _post(self, tp: type[T], path: str, body: BaseModel | None = None) -> T:
        return decode(self.url, tp, await self._call("POST", path, body=body))

    async def _delete(self, path: str) -> None:
        await self._call("DELETE", path)

    # -- meta ---------------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """``GET /healthz``: ``{"status": "ok", "revision": R}``; needs no token."""
        return decode(self.url, dict[str, Any], await self._call("GET", "/healthz"))

    async def list_regions(self) -> list[Region]:
        return await self._get(list[Region], "/v1/regions")

    # -- organizations, networks, apps ----------------------------------------------------

    async def create_org(self, name: str) -> Org:
        return await self._post(Org, "/v1/orgs", OrgCreate(name=name))

    async def list_orgs(self) -> list[Org]:
        return await self._get(list[Org], "/v1/orgs")

    async def get_org(self, name: str) -> Org:
        return await self._get(Org, f"/v1/orgs/{_seg(name)}")

    async def delete_org(self, name: str) -> None:
        await self._delete(f"/v1/orgs/{_seg(name)}")

    async def create_network(self, org: str, name: str) -> Network:
        return await self._post(Network, f"/v1/orgs/{_seg(org)}/networks", NetworkCreate(name=name))

    async def list_networks(self, org: str) -> list[Network]:
        return await self._get(list[Network], f"/v1/orgs/{_seg(org)}/networks")

    async def get_network(self, org: str, name: str) -> Network:
        return await self._get(Network, f"/v1/orgs/{_seg(org)}/networks/{_seg(name)}")

    async def delete_network(self, org: str, name: str) -> None:
        await self._delete(f"/v1/orgs/{_seg(org)}/networks/{_seg(name)}")

    async def create_app(self, org: str, name: str, network: str = "default") -> App:
        body = AppCreate(name=name, network=network)
        return await self._post(App, f"/v1/orgs/{_seg(org)}/apps", body)

    async def list_apps(self, org: str) -> list[App]:
        return await self._get(list[App], f"/v1/orgs/{_seg(org)}/apps")

    async def get_app(self, org: str, name: str) -> App:
        return await self._get(App, f"/v1/orgs/{_seg(org)}/apps/{_seg(name)}")

    async def delete_app(self, org: str, name: str) -> None:
        await self._delete(f"/v1/orgs/{_seg(org)}/apps/{_seg(name)}")

    async def create_org_token(self, org: str, description: str = "") -> TokenCreated:
        body = OrgTokenCreate(description=description)
        return await self._post(TokenCreated, f"/v1/orgs/{_seg(org)}/tokens", body)

    async def list_org_tokens(self, org: str) -> list[Token]:
        return await self._get(list[Token], f"/v1/orgs/{_seg(org)}/tokens")

    async def revoke_org_token(self, org: str, token_id: str) -> None:
        await self._delete(f"/v1/orgs/{_seg(org)}/tokens/{_seg(token_id)}")

    # -- machines -------------------------------------------------------------------------------

    async def create_machine(
        self,
        org: str,
        app: str,
        *,
        host: str | None = None,
        region: str | None = None,
        state: MachineState = MachineState.STARTED,
        process_group: str = "app",
        metadata: Mapping[str, str] | None = None,
    ) -> Machine:
        body = MachineCreate(
            app=app,
            host=host,
            region=region,
            state=state,
            process_group=process_group,
            metadata=dict(metadata or {}),
        )
        return await self._post(Machine, f"/v1/orgs/{_seg(org)}/machines", body)

    async def list_machines(
        self, org: str, *, app: str | None = None, include_destroyed: bool = False
    ) -> list[Machine]:
        params: dict[str, str | int] = {}
        if app is not None:
            params["app"] = app
        if include_destroyed:
            params["all"] = "true"
        return await self._get(list[Machine], f"/v1/orgs/{_seg(org)}/machines", **params)

    async def get_machine(self, org: str, machine_id: str) -> Machine:
        return await self._get(Machine, f"/v1/orgs/{_seg(org)}/machines/{_seg(machine_id)}")

    async def start_machine(self, org: str, machine_id: str) -> Machine:
        return await self._post(Machine, f"/v1/orgs/{_seg(org)}/machines/{_seg(machine_id)}/start")

    async def stop_machine(self, org: str, machine_id: str) -> Machine:
        return await self._post(Machine, f"/v1/orgs/{_seg(org)}/machines/{_seg(machine_id)}/stop")

    async def destroy_machine(self, org: str, machine_id: str) -> Machine:
        """The machine leaves the network; its record stays, in state ``destroyed``."""
        path = f"/v1/orgs/{_seg(org)}/machines/{_seg(machine_id)}"
        return decode(self.url, Machine, await self._call("DELETE", path))

    # -- WireGuard peers ------------------------------------------------------------------------

    async def create_peer(
        self,
        org: str,
        name: str,
        public_key: str,
        *,
        network: str = "default",
        region: str | None = None,
        ephemeral: bool = False,
        routes: Iterable[str] = (),
    ) -> PeerCreated:
        body = PeerCreate(
            name=name,
            public_key=public_key,
            network=network,
            region=region,
            ephemeral=ephemeral,
            routes=list(routes),
        )
        return await self._post(PeerCreated, f"/v1/orgs/{_seg(org)}/peers", body)

    async def list_peers(self, org: str) -> list[Peer]:
        return await self._get(list[Peer], f"/v1/orgs/{_seg(org)}/peers")

    async def get_peer(self, org: str, name: str) -> Peer:
        return await self._get(Peer, f"/v1/orgs/{_seg(org)}/peers/{_seg(name)}")

    async def delete_peer(self, org: str, name: str) -> None:
        await self._delete(f"/v1/orgs/{_seg(org)}/peers/{_seg(name)}")

    async def peer_status(self, org: str, name: str) -> PeerStatusView:
        """Latest handshake, endpoint and byte counts as the peer's gateway last reported them."""
        return await self._get(PeerStatusView, f"/v1/orgs/{_seg(org)}/peers/{_seg(name)}/status")

    async def report_peers(self, host: str, peers: Iterable[PeerCounters]) -> int:
        """A gateway's report of its peers' counters (that host's own credential only)."""
        path = f"/v1/hosts/{_seg(host)}/peers"
        body = PeerReport(peers=list(peers))
        answer = decode(self.url, PeerReportAccepted, await self._call("PUT", path, body=body))
        return answer.accepted

    # -- hosts ----------------------------------------------------------------------------------

    async def join_host(
        self, name: str, region: str, endpoint: str, public_key: str, *, gateway: bool = False
    ) -> HostJoined:
        """Join with a join (or admin) token; the answer's credential is shown once."""
        body = HostJoin(
            name=name, region=region, endpoint=endpoint, public_key=public_key, gateway=gateway
        )
        return await self._post(HostJoined, "/v1/hosts", body)

    async def list_hosts(self) -> list[Host]:
        return await self._get(list[Host], "/v1/hosts")

    async def get_host(self, name: str) -> Host:
        return await self._get(Host, f"/v1/hosts/{_seg(name)}")

    async def delete_host(self, name: str) -> None:
        await self._delete(f"/v1/hosts/{_seg(name)}")

    async def set_host_endpoint(self, name: str, endpoint: str) -> Host:
        """A host's new underlay endpoint (admin, or that host's own credential)."""
        body = HostEndpoint(endpoint=endpoint)
        path = f"/v1/hosts/{_seg(name)}/endpoint"
        return decode(self.url, Host, await self._call("PUT", path, body=body))

    async def report_host_status(
        self, name: str, *, backend: str, applied_revision: int, message: str = ""
    ) -> HostStatus:
        """Written only with that host's own credential."""
        body = HostStatusReport(backend=backend, applied_revision=applied_revision, message=message)
        path = f"/v1/hosts/{_seg(name)}/status"
        return decode(self.url, HostStatus, await self._call("PUT", path, body=body))

    async def get_host_status(self, name: str) -> HostStatus:
        return await self._get(HostStatus, f"/v1/hosts/{_seg(name)}/status")

    # -- fleet-wide tokens --------------------------------------------------------------------

    async def create_token(self, kind: TokenKind, description: str = "") -> TokenCreated:
        """Admin and join tokens (org tokens: :meth:`create_org_token`)."""
        body = TokenCreate(kind=kind, description=description)
        return await self._post(TokenCreated, "/v1/tokens", body)

    async def list_tokens(self) -> list[Token]:
        return await self._get(list[Token], "/v1/tokens")

    async def revoke_token(self, token_id: str) -> None:
        await self._delete(f"/v1/tokens/{_seg(token_id)}")

    # -- the change feed --------------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        """Every entity and the revision it was read at (admin or host credential)."""
        return feed.parse_snapshot(self.url, await self._call("GET", "/v1/snapshot"))

    async def watch(self, since: int) -> AsyncGenerator[ChangeBatch, None]:
        """One connection to ``GET /v1/watch?since=``: its lines until it ends or fails.

        Most callers want :meth:`follow`, which survives drops and restarts.
        """
        url, http = self.url, self._http
        try:
            with translating(url, ca=self._ca):
                async with http.stream(
                    "GET", "/v1/watch", params={"since": since}, timeout=self._watch_timeout
                ) as resp:
                    if resp.is_error:
                        raise error_from_answer(url, resp.status_code, await resp.aread())
                    async for line in resp.aiter_lines():
                        if line.strip():
                            yield feed.parse_line(url, line)
        except Unavailable as exc:
            self._move_on(url, exc)  # the follower's next connection goes to another replica
            raise

    def follow(
        self, since: int, *, min_backoff: float = 0.1, max_backoff: float = 5.0
    ) -> AsyncGenerator[ChangeBatch, None]:
        """Every change after revision ``since`` and heartbeats, forever, across reconnects.

        Nothing is missed or repeated (rules: ``client/feed.py``); a 410 (``Gone``) is raised
        and means: take a new :meth:`snapshot` and follow from its revision.
        """
        return feed.resume(
            self.watch,
            since,
            source=lambda: self.url,
            min_backoff=min_backoff,
            max_backoff=max_backoff,
        )

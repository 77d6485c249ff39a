"""Hosts (join, list, status), fleet-wide tokens and the region catalogue."""

from __future__ import annotations

from fastapi import APIRouter, Response

from sixpn.control.api.auth import Admin, Principal, Reader, Svc, require
from sixpn.control.api.schemas import (
    HostEndpoint,
    HostJoin,
    HostJoined,
    HostStatusReport,
    PeerReport,
    PeerReportAccepted,
    TokenCreate,
    TokenCreated,
)
from sixpn.control.peerstatus import Counters
from sixpn.model.entities import Host, HostStatus, Region, Token, TokenKind
from sixpn.model.errors import Forbidden, NotFound

router = APIRouter(tags=["hosts"])


def require_own_host(token: Token, name: str) -> None:
    """What a host reports about itself is written only with that host's own credential."""
    require(token, TokenKind.HOST)
    if token.host != name:
        raise Forbidden(f"this credential belongs to host '{token.host}', not '{name}'")


@router.post("/v1/hosts", status_code=201)
async def join_host(body: HostJoin, svc: Svc, token: Principal) -> HostJoined:
    """Join a host with a join token (or the admin token); the answer's credential is shown once."""
    require(token, TokenKind.JOIN, TokenKind.ADMIN)
    host, credential = await svc.hosts.join(
        body.name, body.region, body.endpoint, body.public_key, gateway=body.gateway
    )
    return HostJoined(host=host, credential=credential)


@router.get("/v1/hosts")
async def list_hosts(svc: Svc, token: Principal) -> list[Host]:
    require(token, TokenKind.ADMIN, TokenKind.HOST, TokenKind.ORG)
    return await svc.hosts.list()


@router.get("/v1/hosts/{name}")
async def get_host(name: str, svc: Svc, token: Principal) -> Host:
    require(token, TokenKind.ADMIN, TokenKind.HOST, TokenKind.ORG)
    return await svc.hosts.get(name)


@router.delete("/v1/hosts/{name}", status_code=204)
async def delete_host(name: str, svc: Svc, _: Admin) -> Response:
    await svc.hosts.delete(name)
    return Response(status_code=204)


@router.put("/v1/hosts/{name}/endpoint")
async def set_endpoint(name: str, body: HostEndpoint, svc: Svc, token: Principal) -> Host:
    """A host's underlay endpoint moved: the admin, or that host's own credential (its agent
    follows its address, agent/endpoint.py)."""
    if token.kind != TokenKind.ADMIN:
        require_own_host(token, name)
    return await svc.hosts.set_endpoint(name, body.endpoint)


@router.put("/v1/hosts/{name}/status")
async def report_status(
    name: str, body: HostStatusReport, svc: Svc, token: Principal
) -> HostStatus:
    """Written only with that host's own credential."""
    require_own_host(token, name)
    return await svc.hosts.report_status(
        name, backend=body.backend, applied_revision=body.applied_revision, message=body.message
    )


@router.put("/v1/hosts/{name}/peers")
async def report_peers(
    name: str, body: PeerReport, svc: Svc, token: Principal
) -> PeerReportAccepted:
    """A gateway's report of its client peers' counters; only with that host's credential."""
    require_own_host(token, name)
    entries = [Counters(**line.model_dump()) for line in body.peers]
    return PeerReportAccepted(accepted=await svc.peer_status.report(name, entries))


@router.get("/v1/hosts/{name}/status")
async def get_status(name: str, svc: Svc, _: Reader) -> HostStatus:
    status = await svc.hosts.status(name)
    if status is None:
        raise NotFound(f"host '{name}' has not reported a status yet")
    return status


@router.get("/v1/tokens")
async def list_tokens(svc: Svc, _: Admin) -> list[Token]:
    return await svc.tokens.list()


@router.post("/v1/tokens", status_code=201)
async def create_token(body: TokenCreate, svc: Svc, _: Admin) -> TokenCreated:
    """Admin and join tokens (org tokens: POST /v1/orgs/{org}/tokens)."""
    token, secret = await svc.tokens.create(body.kind, description=body.description)
    return TokenCreated(token=token, secret=secret)


@router.delete("/v1/tokens/{token_id}", status_code=204)
async def revoke_token(token_id: str, svc: Svc, _: Admin) -> Response:
    await svc.tokens.revoke(token_id)
    return Response(status_code=204)


@router.get("/v1/regions", tags=["regions"])
async def list_regions(svc: Svc, token: Principal) -> list[Region]:
    require(token, TokenKind.ADMIN, TokenKind.ORG, TokenKind.HOST)
    return list(svc.ctx.regions)

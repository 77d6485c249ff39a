"""Organizations, their networks, apps and tokens."""

from __future__ import annotations

from fastapi import APIRouter, Response

from sixpn.control.api.auth import Admin, OrgMember, Principal, Svc, require
from sixpn.control.api.schemas import (
    AppCreate,
    NetworkCreate,
    OrgCreate,
    OrgTokenCreate,
    TokenCreated,
)
from sixpn.model.entities import App, Network, Org, Token, TokenKind

router = APIRouter(prefix="/v1/orgs", tags=["orgs"])


@router.get("")
async def list_orgs(svc: Svc, token: Principal) -> list[Org]:
    if token.kind == TokenKind.ORG and token.org is not None:
        return [await svc.orgs.get(token.org)]
    require(token, TokenKind.ADMIN)
    return await svc.orgs.list()


@router.post("", status_code=201)
async def create_org(body: OrgCreate, svc: Svc, _: Admin) -> Org:
    return await svc.orgs.create(body.name)


@router.get("/{org}")
async def get_org(org: str, svc: Svc, _: OrgMember) -> Org:
    return await svc.orgs.get(org)


@router.delete("/{org}", status_code=204)
async def delete_org(org: str, svc: Svc, _: Admin) -> Response:
    await svc.orgs.delete(org)
    return Response(status_code=204)


@router.get("/{org}/networks")
async def list_networks(org: str, svc: Svc, _: OrgMember) -> list[Network]:
    return await svc.orgs.list_networks(org)


@router.post("/{org}/networks", status_code=201)
async def create_network(org: str, body: NetworkCreate, svc: Svc, _: OrgMember) -> Network:
    return await svc.orgs.create_network(org, body.name)


@router.get("/{org}/networks/{name}")
async def get_network(org: str, name: str, svc: Svc, _: OrgMember) -> Network:
    return await svc.orgs.get_network(org, name)


@router.delete("/{org}/networks/{name}", status_code=204)
async def delete_network(org: str, name: str, svc: Svc, _: OrgMember) -> Response:
    await svc.orgs.delete_network(org, name)
    return Response(status_code=204)


@router.get("/{org}/apps")
async def list_apps(org: str, svc: Svc, _: OrgMember) -> list[App]:
    return await svc.orgs.list_apps(org)


@router.post("/{org}/apps", status_code=201)
async def create_app(org: str, body: AppCreate, svc: Svc, _: OrgMember) -> App:
    return await svc.orgs.create_app(org, body.name, body.network)


@router.get("/{org}/apps/{name}")
async def get_app(org: str, name: str, svc: Svc, _: OrgMember) -> App:
    return await svc.orgs.get_app(org, name)


@router.delete("/{org}/apps/{name}", status_code=204)
async def delete_app(org: str, name: str, svc: Svc, _: OrgMember) -> Response:
    await svc.orgs.delete_app(org, name)
    return Response(status_code=204)


@router.get("/{org}/tokens")
async def list_org_tokens(org: str, svc: Svc, _: OrgMember) -> list[Token]:
    await svc.orgs.get(org)
    return await svc.tokens.list(org=org)


@router.post("/{org}/tokens", status_code=201)
async def create_org_token(org: str, body: OrgTokenCreate, svc: Svc, _: OrgMember) -> TokenCreated:
    token, secret = await svc.tokens.create(TokenKind.ORG, org=org, description=body.description)
    return TokenCreated(token=token, secret=secret)


@router.delete("/{org}/tokens/{token_id}", status_code=204)
async def revoke_org_token(org: str, token_id: str, svc: Svc, _: OrgMember) -> Response:
    await svc.tokens.revoke(token_id, org=org)
    return Response(status_code=204)

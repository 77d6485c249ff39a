"""WireGuard peers of an organization. Only public keys ever arrive here."""

from __future__ import annotations

from fastapi import APIRouter, Response

from sixpn.control.api.auth import OrgMember, Svc
from sixpn.control.api.schemas import Gateway, PeerCreate, PeerCreated
from sixpn.core import addressing
from sixpn.model.entities import Peer

router = APIRouter(prefix="/v1/orgs/{org}/peers", tags=["peers"])


@router.get("")
async def list_peers(org: str, svc: Svc, _: OrgMember) -> list[Peer]:
    return await svc.peers.list(org)


@router.post("", status_code=201)
async def create_peer(org: str, body: PeerCreate, svc: Svc, _: OrgMember) -> PeerCreated:
    peer, gw = await svc.peers.create(
        org,
        body.name,
        body.public_key,
        network=body.network,
        region=body.region,
        ephemeral=body.ephemeral,
        routes=body.routes,
    )
    return PeerCreated(
        peer=peer,
        gateway=Gateway(
            name=gw.name, region=gw.region, endpoint=gw.endpoint, public_key=gw.public_key
        ),
        dns=str(addressing.network_service_address(peer.net_id)),
        allowed_ips=str(addressing.network_prefix(peer.net_id)),
    )


@router.get("/{name}")
async def get_peer(org: str, name: str, svc: Svc, _: OrgMember) -> Peer:
    return await svc.peers.get(org, name)


@router.delete("/{name}", status_code=204)
async def delete_peer(org: str, name: str, svc: Svc, _: OrgMember) -> Response:
    await svc.peers.delete(org, name)
    return Response(status_code=204)

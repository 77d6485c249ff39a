"""WireGuard peers of an organization. Only public keys ever arrive here."""

from __future__ import annotations

from fastapi import APIRouter, Response

from sixpn.control.api.auth import OrgMember, Svc
from sixpn.control.api.schemas import Gateway, PeerCreate, PeerCreated, PeerStatusView
from sixpn.control.peerstatus import idle_since
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


@router.get("/{name}/status")
async def peer_status(org: str, name: str, svc: Svc, _: OrgMember) -> PeerStatusView:
    """Latest handshake, endpoint and byte counts, as the gateway last reported them."""
    peer, status, revision = await svc.peer_status.get(org, name)
    now = svc.ctx.clock()
    view = PeerStatusView(
        org=peer.org,
        name=peer.name,
        network=peer.network,
        address=str(peer.address),
        gateway=peer.gateway,
        ephemeral=peer.ephemeral,
        reported=status is not None,
        installed=await svc.peer_status.installed(revision, peer.gateway),
    )
    if peer.ephemeral:
        view.expires_at = idle_since(peer, status) + svc.peer_status.ephemeral_idle
    if status is None:
        return view
    handshake = status.latest_handshake or None
    view.endpoint = status.endpoint
    view.latest_handshake = handshake
    view.handshake_age = None if handshake is None else max(0.0, now - handshake)
    view.rx_bytes, view.tx_bytes = status.rx_bytes, status.tx_bytes
    view.last_active = status.last_active or None
    view.reported_at = status.reported_at
    return view


@router.delete("/{name}", status_code=204)
async def delete_peer(org: str, name: str, svc: Svc, _: OrgMember) -> Response:
    await svc.peers.delete(org, name)
    return Response(status_code=204)

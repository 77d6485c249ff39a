"""Request and response bodies. Requests accept only what the caller may choose; the server owns
every allocated or derived field (IDs, addresses, gateway, timestamps). Unknown fields are
refused, so a typo is an error and not a silently ignored option.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sixpn.model.entities import Host, Machine, MachineState, Peer, Token, TokenKind


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrgCreate(Request):
    name: str


class NetworkCreate(Request):
    name: str


class AppCreate(Request):
    name: str
    network: str = "default"


class MachineCreate(Request):
    app: str
    host: str | None = None
    region: str | None = None
    state: MachineState = MachineState.STARTED
    process_group: str = "app"
    metadata: dict[str, str] = Field(default_factory=dict)


class PeerCreate(Request):
    name: str
    public_key: str
    network: str = "default"
    region: str | None = None
    ephemeral: bool = False
    routes: list[str] = Field(default_factory=list)


class HostJoin(Request):
    name: str
    region: str
    endpoint: str
    public_key: str
    gateway: bool = False


class HostStatusReport(Request):
    backend: str
    applied_revision: int
    message: str = ""


class TokenCreate(Request):
    kind: TokenKind
    description: str = ""


class OrgTokenCreate(Request):
    description: str = ""


class Gateway(BaseModel):
    name: str
    region: str
    endpoint: str
    public_key: str


class PeerCreated(BaseModel):
    """Everything a peer's wg-quick file needs, besides the private key the server never sees."""

    peer: Peer
    gateway: Gateway
    dns: str  # <net48>::3
    allowed_ips: str  # <net48>::/48


class HostJoined(BaseModel):
    host: Host
    credential: str = Field(repr=False)  # shown once


class TokenCreated(BaseModel):
    token: Token
    secret: str = Field(repr=False)  # shown once


class MachineList(BaseModel):
    machines: list[Machine]


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody

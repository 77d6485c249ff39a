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


class HostEndpoint(Request):
    endpoint: str


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


class PeerCounters(Request):
    """One peer's line in a gateway's report: ``wg show`` as the gateway sees it."""

    org: str
    name: str
    public_key: str
    endpoint: str | None = None
    latest_handshake: float = Field(0.0, ge=0)  # Unix time on the gateway; 0: never
    rx_bytes: int = Field(0, ge=0)
    tx_bytes: int = Field(0, ge=0)


class PeerReport(Request):
    """Only the peers whose counters changed since the gateway's last report (maybe none)."""

    peers: list[PeerCounters] = Field(default_factory=list, max_length=1000)


class PeerReportAccepted(BaseModel):
    accepted: int


class PeerStatusView(BaseModel):
    """``sixpn wireguard status``: a peer as its gateway last reported it."""

    org: str
    name: str
    network: str
    address: str
    gateway: str
    ephemeral: bool
    installed: bool  # the gateway's agent has applied the store as of the peer's creation
    reported: bool  # False: the gateway has not reported this peer (yet)
    endpoint: str | None = None
    latest_handshake: float | None = None  # None: never
    handshake_age: float | None = None  # seconds, by the control plane's clock
    rx_bytes: int = 0
    tx_bytes: int = 0
    last_active: float | None = None  # when a report last showed a handshake or bytes received
    reported_at: float | None = None
    expires_at: float | None = None  # ephemeral peers: removal time if it stays idle

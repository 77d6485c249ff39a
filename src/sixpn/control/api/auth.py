"""Who may call what.

- admin tokens: everything;
- org tokens: their own organization's objects; another organization's objects answer 404,
  exactly as if they did not exist (nothing reveals which names other tenants use);
- host credentials: the snapshot and the change stream, hosts and regions, and writing their
  own host's status;
- join tokens: joining a new host, nothing else.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from sixpn.control.service import Service
from sixpn.model.entities import Token, TokenKind
from sixpn.model.errors import Forbidden, NotFound, Unauthorized

# The dependencies below are ``async def`` although none of them waits for anything but the store:
# FastAPI runs a plain ``def`` dependency in a worker thread, and the two hand-offs per request
# (there and back, for ``Svc`` and for the token check) cost the control plane more CPU than the
# checks themselves (docs/benchmarks.md, "Propagation at rate", 2026-12-06).


async def service(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


# Every token is at least 16 characters (operators' own, ``tokens.ensure``) and the generated
# ones are 49; anything outside these bounds is refused without hashing or reading the store,
# so that a flood of junk credentials costs the server as little as possible (issue 17).
MIN_SECRET, MAX_SECRET = 16, 1024


async def principal(request: Request) -> Token:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise Unauthorized("missing credential: send 'Authorization: Bearer <token>'")
    if not MIN_SECRET <= len(secret) <= MAX_SECRET:
        raise Unauthorized("unknown or revoked token")  # the same answer as any wrong token
    svc: Service = request.app.state.service
    return await svc.tokens.authenticate(secret)


Principal = Annotated[Token, Depends(principal)]
Svc = Annotated[Service, Depends(service)]


def require(token: Token, *kinds: TokenKind) -> None:
    if token.kind not in kinds:
        allowed = " or ".join(str(k) for k in kinds)
        raise Forbidden(f"this needs an {allowed} token; this is a {token.kind} token")


async def require_admin(token: Principal) -> Token:
    require(token, TokenKind.ADMIN)
    return token


async def require_org(org: str, token: Principal) -> Token:
    """Admin, or a token of organization ``org`` (another org's token: 404 for the org)."""
    if token.kind == TokenKind.ADMIN:
        return token
    if token.kind == TokenKind.ORG:
        if token.org != org:
            raise NotFound(f"organization '{org}' not found")
        return token
    raise Forbidden(f"a {token.kind} token cannot act on organizations")


async def require_reader(token: Principal) -> Token:
    """Admin or host: whoever may read the whole fabric's state."""
    require(token, TokenKind.ADMIN, TokenKind.HOST)
    return token


Admin = Annotated[Token, Depends(require_admin)]
OrgMember = Annotated[Token, Depends(require_org)]
Reader = Annotated[Token, Depends(require_reader)]

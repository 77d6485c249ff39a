"""Credentials: admin, organization, host and join tokens.

A token's secret is shown once, when it is made, and never stored: the store keeps the record
under the SHA-256 of the secret (secrets are 256 random bits, so a plain hash is enough; no slow
password hash is needed), plus an index from the token's short public ID for revocation.
"""

from __future__ import annotations

import base64
import hashlib

from sixpn.control import codec, keys
from sixpn.control.context import Context
from sixpn.control.orgs import live_org
from sixpn.control.tx import Tx
from sixpn.model.entities import Token, TokenKind
from sixpn.model.errors import InvalidInput, NotFound, Unauthorized

SECRET_PREFIX = "sixpn_"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Tokens:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def _new_secret(self) -> str:
        return SECRET_PREFIX + base64.urlsafe_b64encode(self.ctx.rand_bytes(32)).decode().rstrip(
            "="
        )

    def issue(
        self,
        tx: Tx,
        kind: TokenKind,
        *,
        org: str | None = None,
        host: str | None = None,
        description: str = "",
        secret: str | None = None,
    ) -> tuple[Token, str]:
        """Add a new token's writes to ``tx``; return the record and the secret."""
        secret = secret or self._new_secret()
        token = Token(
            id=self.ctx.rand_bytes(5).hex(),
            kind=kind,
            created_at=tx.now,
            org=org,
            host=host,
            description=description,
        )
        tx.put(keys.token(digest(secret)), token)
        tx.put_text(keys.token_id(token.id), digest(secret))
        return token, secret

    async def create(
        self, kind: TokenKind, *, org: str | None = None, description: str = ""
    ) -> tuple[Token, str]:
        if kind == TokenKind.HOST:
            raise InvalidInput("host credentials are issued when a host joins", field="kind")
        if (kind == TokenKind.ORG) != (org is not None):
            raise InvalidInput(
                "an org token needs an organization, no other kind has one", field="org"
            )
        if len(description) > 200:
            raise InvalidInput("description: at most 200 characters", field="description")

        async def fn(tx: Tx) -> tuple[Token, str]:
            if org is not None:
                await live_org(tx, org)
            return self.issue(tx, kind, org=org, description=description)

        return await self.ctx.run(fn, what=f"creating {kind} token")

    async def ensure(self, kind: TokenKind, secret: str, description: str = "") -> Token:
        """Install a token with an operator-chosen secret (idempotent)."""
        if len(secret) < 16:
            raise InvalidInput(f"{kind} token: at least 16 characters", field="token")

        async def fn(tx: Tx) -> Token:
            kv = await tx.get(keys.token(digest(secret)))
            if kv is not None:
                return codec.decode(Token, kv.value)
            return self.issue(tx, kind, description=description, secret=secret)[0]

        return await self.ctx.run(fn, what=f"installing {kind} token")

    async def authenticate(self, secret: str) -> Token:
        kv = await self.ctx.store.get(keys.token(digest(secret)))
        if kv is None:
            raise Unauthorized("unknown or revoked token")
        return codec.decode(Token, kv.value)

    async def list(self, *, org: str | None = None, kind: TokenKind | None = None) -> list[Token]:
        kvs, _ = await self.ctx.store.range(keys.TOKENS)
        tokens = (codec.decode(Token, kv.value) for kv in kvs)
        return sorted(
            (
                t
                for t in tokens
                if (org is None or t.org == org) and (kind is None or t.kind == kind)
            ),
            key=lambda t: (t.created_at, t.id),
        )

    async def revoke(self, token_id: str, *, org: str | None = None) -> None:
        """Revoke by public ID; with ``org``, only that organization's tokens are visible."""

        async def fn(tx: Tx) -> None:
            kv = await tx.get(keys.token_id(token_id))
            if kv is None:
                raise NotFound(f"token '{token_id}' not found")
            token_key = keys.token(kv.value.decode())
            token = await tx.entity(Token, token_key, f"token '{token_id}' not found")
            if org is not None and token.org != org:
                raise NotFound(f"token '{token_id}' not found")
            tx.delete(token_key)
            tx.delete(keys.token_id(token_id))

        await self.ctx.run(fn, what=f"revoking token '{token_id}'")

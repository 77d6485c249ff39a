"""`sixpn tokens`: fleet-wide tokens (admin, join). Organization tokens: `sixpn orgs token`.

A token's secret is printed once, when it is created; the server keeps only its hash.
"""

from __future__ import annotations

import click

from sixpn.cli import verbs
from sixpn.cli.common import SECRET_ONCE, Columns, call, echo_done, json_option
from sixpn.client import Client
from sixpn.model.entities import Token, TokenKind


@click.group()
def tokens() -> None:
    """Admin and join tokens (admin token needed)."""


@tokens.command("create")
@click.option(
    "--kind",
    type=click.Choice([TokenKind.JOIN.value, TokenKind.ADMIN.value]),
    required=True,
    help="join: may only join hosts; admin: may do everything.",
)
@click.option("--description", default="", help="What the token is for.")
@json_option
def create(kind: str, description: str, as_json: bool) -> None:
    """Create a token; its secret is shown once."""
    created = call(lambda c: c.create_token(TokenKind(kind), description))
    message = f"created {kind} token {created.token.id}: {created.secret}"
    echo_done(created, as_json, message, note=SECRET_ONCE)


COLUMNS: Columns[Token] = {
    "id": "id",
    "kind": "kind",
    "org": "org",
    "host": "host",
    "description": "description",
    "created": "created_at",
}
verbs.add_list(tokens, Client.list_tokens, COLUMNS, "List tokens (IDs, never secrets).")
verbs.add_delete(
    tokens,
    Client.revoke_token,
    "Revoke token ID.",
    "revoked token {token_id}",
    name="revoke",
    argument="token_id",
    metavar="ID",
)

"""`sixpn tokens`: fleet-wide tokens (admin, join). Organization tokens: `sixpn orgs token`.

A token's secret is printed once, when it is created; the server keeps only its hash.
"""

from __future__ import annotations

import click

from sixpn.cli.common import call, echo_json, echo_table, json_option, when
from sixpn.model.entities import TokenKind


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
    if as_json:
        echo_json(created)
        return
    click.echo(f"created {kind} token {created.token.id}: {created.secret}")
    click.echo("the secret is shown only once: keep it safe", err=True)


@tokens.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List tokens (IDs, never secrets)."""
    found = call(lambda c: c.list_tokens())
    if as_json:
        echo_json(found)
        return
    rows = [[t.id, t.kind, t.org, t.host, t.description, when(t.created_at)] for t in found]
    echo_table(["id", "kind", "org", "host", "description", "created"], rows)


@tokens.command("revoke")
@click.argument("token_id", metavar="ID")
def revoke(token_id: str) -> None:
    """Revoke token ID."""
    call(lambda c: c.revoke_token(token_id))
    click.echo(f"revoked token {token_id}")

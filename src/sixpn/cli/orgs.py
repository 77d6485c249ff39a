"""`sixpn orgs`: organizations (admin token), and `sixpn orgs token`: an organization's tokens.

An organization's token can act only on that organization; its secret is printed once, when it
is created, and is not recoverable afterwards (only its hash is stored).
"""

from __future__ import annotations

import click

from sixpn.cli import verbs
from sixpn.cli.common import SECRET_ONCE, Columns, call, echo_done, json_option, org_option
from sixpn.client import Client
from sixpn.model.entities import Org, Token


@click.group()
def orgs() -> None:
    """Organizations: each has its own private network (6PN)."""


@orgs.command("create")
@click.argument("name")
@json_option
def create(name: str, as_json: bool) -> None:
    """Create organization NAME (with its default network)."""
    org = call(lambda c: c.create_org(name))
    echo_done(org, as_json, f"created organization {org.name}")


COLUMNS: Columns[Org] = {"name": "name", "created": "created_at"}
verbs.add_list(orgs, Client.list_orgs, COLUMNS, "List organizations (an org token sees its own).")
verbs.add_show(orgs, Client.get_org, "Show organization NAME.")
DELETE = "Delete organization NAME (refused while it has apps, networks or peers)."
verbs.add_delete(orgs, Client.delete_org, DELETE, "deleted organization {name}")


@orgs.group("token")
def token() -> None:
    """Tokens of one organization: they act only on that organization."""


@token.command("create")
@org_option
@click.option("--description", default="", help="What the token is for.")
@json_option
def token_create(org: str, description: str, as_json: bool) -> None:
    """Create a token of the organization; its secret is shown once."""
    created = call(lambda c: c.create_org_token(org, description))
    message = f"created org token {created.token.id} (org {org}): {created.secret}"
    echo_done(created, as_json, message, note=SECRET_ONCE)


TOKEN_COLUMNS: Columns[Token] = {"id": "id", "description": "description", "created": "created_at"}
verbs.add_list(
    token,
    Client.list_org_tokens,
    TOKEN_COLUMNS,
    "List the organization's tokens (IDs, never secrets).",
    org=True,
)
verbs.add_delete(
    token,
    Client.revoke_org_token,
    "Revoke the organization's token ID.",
    "revoked org token {token_id} (org {org})",
    org=True,
    name="revoke",
    argument="token_id",
    metavar="ID",
)

"""`sixpn orgs`: organizations (admin token), and `sixpn orgs token`: an organization's tokens.

An organization's token can act only on that organization; its secret is printed once, when it
is created, and is not recoverable afterwards (only its hash is stored).
"""

from __future__ import annotations

import click

from sixpn.cli.common import call, echo_json, echo_table, json_option, org_option, show, when


@click.group()
def orgs() -> None:
    """Organizations: each has its own private network (6PN)."""


@orgs.command("create")
@click.argument("name")
@json_option
def create(name: str, as_json: bool) -> None:
    """Create organization NAME (with its default network)."""
    org = call(lambda c: c.create_org(name))
    if as_json:
        echo_json(org)
    else:
        click.echo(f"created organization {org.name}")


@orgs.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List organizations (an org token sees its own)."""
    found = call(lambda c: c.list_orgs())
    if as_json:
        echo_json(found)
    else:
        echo_table(["name", "created"], [[o.name, when(o.created_at)] for o in found])


@orgs.command("show")
@click.argument("name")
@json_option
def show_(name: str, as_json: bool) -> None:
    """Show organization NAME."""
    show(call(lambda c: c.get_org(name)), as_json)


@orgs.command("delete")
@click.argument("name")
def delete(name: str) -> None:
    """Delete organization NAME (refused while it has apps, networks or peers)."""
    call(lambda c: c.delete_org(name))
    click.echo(f"deleted organization {name}")


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
    if as_json:
        echo_json(created)
        return
    click.echo(f"created org token {created.token.id} (org {org}): {created.secret}")
    click.echo("the secret is shown only once: keep it safe", err=True)


@token.command("list")
@org_option
@json_option
def token_list(org: str, as_json: bool) -> None:
    """List the organization's tokens (IDs, never secrets)."""
    found = call(lambda c: c.list_org_tokens(org))
    if as_json:
        echo_json(found)
    else:
        rows = [[t.id, t.description, when(t.created_at)] for t in found]
        echo_table(["id", "description", "created"], rows)


@token.command("revoke")
@org_option
@click.argument("token_id", metavar="ID")
def token_revoke(org: str, token_id: str) -> None:
    """Revoke the organization's token ID."""
    call(lambda c: c.revoke_org_token(org, token_id))
    click.echo(f"revoked org token {token_id} (org {org})")

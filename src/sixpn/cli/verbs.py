"""The commands every noun has: ``list``, ``show`` and ``delete``, made from the client method.

They differ between nouns only in the ``Client`` method they call, whether they take ``--org``,
their argument and their text, so a noun module declares them in one call each
(``verbs.add_list(apps, Client.list_apps, COLUMNS, "List ...", org=True)``) and the parsing,
the call and the output (``common.echo_list``, ``common.show``) live here once. Commands with
options of their own (``create``, ``machines list --app``) stay hand-written in the noun module,
and print with the same ``common`` functions.

The method gets its positional arguments in one order, the organization first, as every
``Client`` method takes them, whatever order they were given in on the command line.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import click

from sixpn.cli.common import Columns, call, echo_list, json_option, org_option, show

T = TypeVar("T")
Body = Callable[[list[str], dict[str, str], bool], None]


def _command(
    group: click.Group,
    name: str,
    doc: str,
    *,
    org: bool,
    argument: str | None = None,
    metavar: str | None = None,
    with_json: bool = True,
) -> Callable[[Body], None]:
    """Add command ``name`` to ``group``, taking ``[ARGUMENT] [--org ORG] [--json]`` (declared
    in that order, as the hand-written commands declare theirs). Its body gets the client
    method's positional arguments, the parameters by name, and whether ``--json`` was given."""
    keys = [key for key in ("org" if org else None, argument) if key is not None]

    def register(body: Body) -> None:
        def callback(as_json: bool = False, **params: str) -> None:
            body([params[key] for key in keys], params, as_json)

        decorated: Callable[..., None] = callback
        if with_json:
            decorated = json_option(decorated)
        if org:
            decorated = org_option(decorated)
        if argument is not None:
            decorated = click.argument(argument, metavar=metavar)(decorated)
        group.command(name, help=doc)(decorated)

    return register


def add_list(
    group: click.Group,
    fetch: Callable[..., Awaitable[Sequence[T]]],
    columns: Columns[T],
    doc: str,
    *,
    org: bool = False,
) -> None:
    """``GROUP list [--org ORG] [--json]``: what ``fetch`` returns, as a table of ``columns``."""

    @_command(group, "list", doc, org=org)
    def body(args: list[str], params: dict[str, str], as_json: bool) -> None:
        echo_list(call(lambda c: fetch(c, *args)), as_json, columns)


def add_show(
    group: click.Group,
    fetch: Callable[..., Awaitable[object]],
    doc: str,
    *,
    org: bool = False,
    name: str = "show",
    argument: str = "name",
    metavar: str | None = None,
) -> None:
    """``GROUP show NAME [--org ORG] [--json]``: the one object ``fetch`` returns."""

    @_command(group, name, doc, org=org, argument=argument, metavar=metavar)
    def body(args: list[str], params: dict[str, str], as_json: bool) -> None:
        show(call(lambda c: fetch(c, *args)), as_json)


def add_delete(
    group: click.Group,
    act: Callable[..., Awaitable[None]],
    doc: str,
    done: str,
    *,
    org: bool = False,
    name: str = "delete",
    argument: str = "name",
    metavar: str | None = None,
) -> None:
    """``GROUP delete NAME [--org ORG]``: ``act``, then the line ``done`` with the parameters
    filled in (``"deleted app {org}/{name}"``)."""

    @_command(group, name, doc, org=org, argument=argument, metavar=metavar, with_json=False)
    def body(args: list[str], params: dict[str, str], as_json: bool) -> None:
        call(lambda c: act(c, *args))
        click.echo(done.format(**params))

"""What every CLI noun shares: calling the API, the ``--org`` and ``--json`` options, output.

Conventions that hold for every command:

- the API is ``$SIXPN_API`` (default ``http://127.0.0.1:7180``), the credential ``$SIXPN_TOKEN``;
  ``--org`` defaults to ``$SIXPN_ORG``;
- reads print an aligned table (a list) or ``key  value`` lines (one object); ``--json`` prints
  the API's JSON instead (a list as a JSON array);
- mutations print one line saying what they did; creates also take ``--json``;
- failures are ``model/errors.py`` exceptions, turned into a message and exit code 1 (or 2 for
  ``InvalidInput``) by the root group in ``cli/main.py``.

Every command prints through :func:`echo_list` (a list), :func:`show` (one object) or
:func:`echo_done` (what a mutation made), so these conventions hold in one place; the ``list``,
``show`` and ``delete`` commands themselves are made from the client method in ``verbs.py``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import click

from sixpn.client import Client, to_jsonable
from sixpn.model.errors import InvalidInput

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

SECRET_ONCE = "the secret is shown only once: keep it safe"
"""The note after a created token's secret: the server keeps only its hash."""


def org_option(fn: F) -> F:
    return click.option(
        "--org",
        envvar="SIXPN_ORG",
        required=True,
        metavar="ORG",
        help="Organization (default: $SIXPN_ORG).",
    )(fn)


def ca_option(fn: F) -> F:
    """``--ca FILE`` of a long-running process that follows the control plane (agent, DNS)."""
    return click.option(
        "--ca",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="SIXPN_CA",
        help="Trust only this CA (PEM) for an https:// control plane (default: the system's "
        "store).",
    )(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")(fn)


def call(fn: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``fn`` with a client built from the environment, and close it afterwards."""
    if os.environ.get("SIXPN_LOG_LEVEL", "").upper() != "DEBUG":
        # httpx logs every request at INFO: noise on a command's standard error.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    client = Client.from_env()
    if not client.has_token:
        raise InvalidInput("no credential: set SIXPN_TOKEN to an API token", field="SIXPN_TOKEN")

    async def run() -> T:
        async with client:
            return await fn(client)

    return asyncio.run(run())


def echo_json(value: object) -> None:
    click.echo(json.dumps(to_jsonable(value), indent=2))


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key.endswith("_at") and isinstance(value, int | float):
        when = datetime.datetime.fromtimestamp(value, tz=datetime.UTC)
        return when.isoformat(timespec="seconds").replace("+00:00", "Z")
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """An aligned table: columns separated by two spaces, headers in capitals."""
    cells = [[h.upper() for h in headers]]
    cells += [[_cell("", v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def echo_record(value: object) -> None:
    """One object as ``key  value`` lines, keys aligned."""
    data = to_jsonable(value)
    width = max(len(k) for k in data)
    for key, item in data.items():
        click.echo(f"{key.ljust(width)}  {_cell(key, item)}")


def show(value: object, as_json: bool) -> None:
    """One object (a ``show``): the API's JSON, or ``key  value`` lines."""
    if as_json:
        echo_json(value)
    else:
        echo_record(value)


Columns: TypeAlias = Mapping[str, str | Callable[[T], object]]
"""A table's columns: header -> the item's attribute of that name, shown as ``show`` shows it
(``None`` as ``-``, a ``*_at`` timestamp as a UTC time), or a function giving the cell."""


def echo_list(items: Sequence[T], as_json: bool, columns: Columns[T]) -> None:
    """A list (a ``list``): the API's JSON array, or a table of ``columns``."""
    if as_json:
        echo_json(items)
        return

    def cell(item: T, get: str | Callable[[T], object]) -> object:
        return _cell(get, getattr(item, get)) if isinstance(get, str) else get(item)

    echo_table(list(columns), [[cell(item, get) for get in columns.values()] for item in items])


def echo_done(value: object, as_json: bool, message: str, *, note: str | None = None) -> None:
    """What a mutation made: the API's JSON, or ``message``, one line saying what was done
    (and ``note`` on standard error: a warning for the person at the terminal, not for a
    script reading the output)."""
    if as_json:
        echo_json(value)
        return
    click.echo(message)
    if note is not None:
        click.echo(note, err=True)


def when(timestamp: float) -> str:
    return _cell("created_at", timestamp)

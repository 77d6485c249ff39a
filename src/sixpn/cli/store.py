"""`sixpn store`: the control plane's store itself (run where the store is, no server needed).

``sixpn store copy --from sqlite:PATH --to etcd:URL[,URL...]`` moves an installation from the
embedded SQLite store to an etcd cluster and verifies it (``runtime/storecopy.py``). Stop every
``sixpn server`` on the source first; start them on the target (``--etcd``) afterwards.
The etcd options (prefix, TLS files, user; the password from ``$SIXPN_ETCD_PASSWORD``) apply to
whichever side is etcd, and are the same as ``sixpn server``'s.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import click

from sixpn.runtime.stores import DEFAULT_ETCD_PREFIX, EtcdOptions, parse_spec

F = TypeVar("F", bound=Callable[..., Any])


def _file_option(flag: str, help: str) -> Callable[[F], F]:
    """``--etcd-X FILE``, an existing file, also from ``$SIXPN_ETCD_X``."""
    envvar = "SIXPN_" + flag.removeprefix("--").replace("-", "_").upper()
    path = click.Path(exists=True, dir_okay=False, path_type=Path)
    return click.option(flag, type=path, envvar=envvar, help=help)


def etcd_options(fn: F) -> F:
    """The options that say how to reach an etcd cluster (all but its endpoints)."""
    for option in reversed(
        [
            click.option(
                "--etcd-prefix",
                default=DEFAULT_ETCD_PREFIX,
                show_default=True,
                envvar="SIXPN_ETCD_PREFIX",
                help="Key prefix of this installation in etcd.",
            ),
            _file_option(
                "--etcd-cacert", "CA bundle that signed the etcd members' certificates (TLS)."
            ),
            _file_option("--etcd-cert", "Client certificate for etcd (TLS client authentication)."),
            _file_option("--etcd-key", "Key of --etcd-cert."),
            click.option(
                "--etcd-user",
                envvar="SIXPN_ETCD_USER",
                help="etcd user (its password from $SIXPN_ETCD_PASSWORD, not the command line).",
            ),
        ]
    ):
        fn = option(fn)
    return fn


def etcd_settings(
    endpoints: tuple[str, ...],
    etcd_prefix: str,
    etcd_cacert: Path | None,
    etcd_cert: Path | None,
    etcd_key: Path | None,
    etcd_user: str | None,
) -> EtcdOptions:
    return EtcdOptions(
        endpoints,
        prefix=etcd_prefix,
        ca_file=etcd_cacert,
        cert_file=etcd_cert,
        key_file=etcd_key,
        user=etcd_user,
        password=os.environ.get("SIXPN_ETCD_PASSWORD") or None,
    )


@click.group()
def store() -> None:
    """The control plane's store (SQLite or etcd), handled directly."""


@store.command("copy")
@click.option("--from", "source", required=True, metavar="SPEC", help="sqlite:PATH or etcd:URLS")
@click.option("--to", "target", required=True, metavar="SPEC", help="sqlite:PATH or etcd:URLS")
@etcd_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def copy(
    source: str,
    target: str,
    etcd_prefix: str,
    etcd_cacert: Path | None,
    etcd_cert: Path | None,
    etcd_key: Path | None,
    etcd_user: str | None,
    as_json: bool,
) -> None:
    """Copy every key of the store FROM into the empty store TO, and verify it."""
    from sixpn.runtime.storecopy import copy_store
    from sixpn.runtime.stores import open_store

    etcd = etcd_settings((), etcd_prefix, etcd_cacert, etcd_cert, etcd_key, etcd_user)
    src, dst = parse_spec(source, etcd, field="--from"), parse_spec(target, etcd, field="--to")
    if src.db is not None and not src.db.exists():
        raise click.BadParameter(f"{src.db}: no such SQLite store", param_hint="--from")

    async def run() -> Any:
        a = await open_store(src)
        try:
            b = await open_store(dst)
            try:
                return await copy_store(a, b)
            finally:
                await b.close()
        finally:
            await a.close()

    report = asyncio.run(run())
    if as_json:
        out = {"from": src.describe(), "to": dst.describe(), **asdict(report)}
        click.echo(json.dumps(out, indent=2))
        return
    kinds = ", ".join(f"{kind} {n}" for kind, n in report.by_kind.items())
    click.echo(
        f"copied {report.keys} keys from {src.describe()} (revision {report.source_revision}) "
        f"to {dst.describe()} (revision {report.target_revision})"
    )
    click.echo(f"verified: {report.keys} keys on both sides, sha256 {report.checksum}")
    click.echo(f"by kind: {kinds}")
    click.echo(
        "the target's history starts at its revision: agents and DNS servers take a fresh "
        "snapshot when they reconnect"
    )

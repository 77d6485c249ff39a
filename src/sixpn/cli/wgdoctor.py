"""`sixpn wireguard doctor [FILE...] [--json]`: overlapping AllowedIPs, offline (SPEC section 5).

Reads wg-quick FILEs and, with ``--interfaces``, the running WireGuard interfaces of this network
namespace (``wg show all dump``); reports identical prefixes, nested prefixes and a ``::/0`` (or
``0.0.0.0/0``) tunnel covering a network, within one peer, between the peers of one interface, or
across files and interfaces; says which claim carries the packets for which prefix and what to
change. The rules for who wins live in ``core/wgdoctor.py``. No control plane is needed.

Exit codes: 0 no overlap, 1 at least one conflict, 2 an unreadable or malformed input (a missing
FILE, a malformed line, ``wg`` failing) or a usage error (``InvalidInput`` is mapped to
2 by the root group in ``cli/main.py``).

Decisions:

- ``--interfaces`` defaults to on when running as root with ``wg`` on PATH, else to off with a
  note on standard error; with no FILE and interfaces off there is nothing to check: usage error.
  When the default turned it on and ``wg`` fails, the FILEs are still checked (with a note);
  asked for explicitly, a failing ``wg`` is unreadable input (exit 2).
- wireguard-go keeps the control sockets of every namespace in ``/var/run/wireguard``, so
  ``wg show all`` also lists interfaces that live in other namespaces; only those that exist in
  this namespace share its routing table, so the others are left out, with a note.
- A running interface named like the interface a FILE brings up is checked as that file: it is
  that file brought up, or must go before the file can come up.
- FILE ``-`` reads standard input (``sixpn wireguard create acme | sixpn wireguard doctor - ...``);
  the same FILE given twice is read once. Private keys are never read into anything printed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import click

from sixpn.core.wgdoctor import (
    Claim,
    Finding,
    Source,
    check,
    parse_wg_dump,
    parse_wg_quick,
    select_sources,
)
from sixpn.model.errors import InvalidInput

_WIDTH = 100


def _read_file(path: str) -> Source:
    name = "<stdin>" if path == "-" else path
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{name}: cannot read: {exc.strerror or exc}", field="FILE") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{name}: not a wg-quick file (not UTF-8 text)", field="FILE") from exc
    return parse_wg_quick(text, name)


def _read_files(paths: tuple[str, ...]) -> list[Source]:
    seen: set[str] = set()
    sources = []
    for path in paths:
        key = path if path == "-" else os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            sources.append(_read_file(path))
    return sources


def _in_this_namespace(ifname: str) -> bool:
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        return False
    return True


def _running() -> tuple[list[Source], list[str]]:
    """This namespace's WireGuard interfaces, and notes on what was left out."""
    argv = ["wg", "show", "all", "dump"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InvalidInput(f"reading running interfaces (wg show all dump): {exc}") from exc
    problems = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    if done.returncode != 0 and not done.stdout.strip():
        why = "; ".join(problems) or f"exit code {done.returncode}"
        raise InvalidInput(f"reading running interfaces (wg show all dump): {why}")
    # wg reports an interface it cannot read and goes on with the others.
    notes = [f"wg show all dump: {p}" for p in problems]
    found = parse_wg_dump(done.stdout)
    here = [s for s in found if _in_this_namespace(s.name)]
    if elsewhere := [s.name for s in found if s not in here]:
        notes.append(
            f"left out {len(elsewhere)} interface(s) of other network namespaces (wireguard-go "
            f"shares its socket directory): {', '.join(elsewhere)}"
        )
    return here, notes


def _want_interfaces(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    if os.geteuid() == 0 and shutil.which("wg") is not None:
        return True
    click.echo(
        "note: not reading running interfaces (that needs root and `wg`; --interfaces to try)",
        err=True,
    )
    return False


def _claim_json(claim: Claim) -> dict[str, object]:
    return {
        "source": claim.source.name,
        "source_kind": claim.source.kind,
        "peer": claim.peer.public_key,
        "peer_index": claim.peer.index,
        "prefix": str(claim.prefix),
    }


def _finding_json(finding: Finding) -> dict[str, object]:
    return {
        "kind": finding.kind,
        "prefix": str(finding.b.prefix),
        "a": _claim_json(finding.a),
        "b": _claim_json(finding.b),
        "winner": finding.winner,
        "wins": finding.wins,
        "fix": finding.fix,
    }


def _source_json(source: Source) -> dict[str, object]:
    return {
        "name": source.name,
        "kind": source.kind,
        "interface": source.ifname,
        "table": source.table,
        "dns": list(source.dns),
        "peers": [
            {"public_key": p.public_key, "allowed_ips": [str(n) for n in p.allowed_ips]}
            for p in source.peers
        ],
    }


def _field(label: str, text: str) -> str:
    head = f"  {label:<5} "
    return textwrap.fill(
        text, _WIDTH, initial_indent=head, subsequent_indent=" " * len(head), break_on_hyphens=False
    )


def _echo_finding(finding: Finding) -> None:
    click.echo(f"{finding.kind}: {finding.b.prefix}")
    for label, claim in (("a", finding.a), ("b", finding.b)):
        click.echo(_field(label, f"{claim.label} claims {claim.prefix}"))
    click.echo(_field("wins", finding.wins))
    click.echo(_field("fix", finding.fix))
    click.echo()


@click.command("doctor")
@click.argument("files", nargs=-1, metavar="[FILE]...")
@click.option(
    "--interfaces/--no-interfaces",
    default=None,
    help="Also check the running interfaces (wg show all dump). Default: on as root with wg.",
)
@click.option("--json", "as_json", is_flag=True, help="Print sources and findings as JSON.")
@click.pass_context
def doctor(
    ctx: click.Context, files: tuple[str, ...], interfaces: bool | None, as_json: bool
) -> None:
    """Check wg-quick FILEs and running interfaces for overlapping AllowedIPs (offline).

    Reports identical and nested prefixes and ::/0 (0.0.0.0/0) tunnels covering a network, says
    which claim wins for which prefix and what to change. Exit 0: no overlap; 1: conflicts;
    2: unreadable input. FILE '-' is standard input.
    """
    use_interfaces = _want_interfaces(interfaces)
    if not files and not use_interfaces:
        raise click.UsageError("nothing to check: give FILE... or --interfaces")
    from_files = _read_files(files)
    running: list[Source] = []
    notes: list[str] = []
    if use_interfaces:
        try:
            running, notes = _running()
        except InvalidInput as exc:
            if interfaces or not files:  # asked for, or nothing else to check
                raise
            notes = [f"{exc.message}; checking the files only"]
    sources, more = select_sources(from_files, running)
    for note in [*notes, *more]:
        click.echo(f"note: {note}", err=True)
    findings = check(sources)
    if as_json:
        out = {
            "sources": [_source_json(s) for s in sources],
            "findings": [_finding_json(f) for f in findings],
            "ok": not findings,
        }
        click.echo(json.dumps(out, indent=2))
    else:
        for finding in findings:
            _echo_finding(finding)
        if findings:
            click.echo(f"{len(findings)} conflict(s) in {len(sources)} file(s)/interface(s)")
        else:
            click.echo(f"no overlapping AllowedIPs in {len(sources)} file(s)/interface(s)")
    ctx.exit(1 if findings else 0)

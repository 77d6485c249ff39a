"""Overlapping AllowedIPs in local WireGuard configurations (`sixpn wireguard doctor`). Pure.

Sources are wg-quick files (``parse_wg_quick``) and running interfaces (``parse_wg_dump``, the
output of ``wg show all dump``); ``check`` compares every prefix claimed by any peer of any source
with every other and returns one ``Finding`` per overlapping pair:

- ``identical``: the same prefix twice;
- ``nested``: one prefix inside another;
- ``default-route``: a ``::/0`` (or ``0.0.0.0/0``) claim covering another prefix of its family.

Who wins, the rule behind each ``wins`` text (checked against /usr/bin/wg-quick and a real run):

- Inside one interface WireGuard's cryptokey routing holds each prefix for one peer only: an
  identical prefix belongs to the peer that claimed it last (``wg setconf`` applies a file's
  ``[Peer]`` sections in order; the earlier peer loses it, for sending and for receiving), a
  nested one goes by longest prefix. A peer's own overlapping prefixes are only redundant, but
  count too.
- Across interfaces the routing table decides, by longest prefix. wg-quick (``Table`` absent or
  ``auto``) adds each prefix to the main table, unless it is already routed *on its own
  interface* (``ip route show dev IF match P``): for an identical prefix, the interface brought up
  first keeps the route, and ``wg-quick up`` of the second fails with "RTNETLINK answers: File
  exists" and deletes its interface again. A ``/0`` goes elsewhere: table 51820 (the next free
  one for a second tunnel) behind a ``not fwmark`` rule, with ``suppress_prefixlength 0`` on
  main, so any more specific route in main still wins while its interface is up; when it is down
  (or its routes are in another table, or ``Table = off``), the ``/0`` tunnel carries that
  network's packets. Two ``/0`` tunnels: the last one up takes the default, and its own
  encrypted packets go through the first one.
- ``Table = off``: wg-quick adds no route, so such a file's wider prefixes shadow nothing in
  other interfaces (the fix for a full tunnel you route yourself), while its own prefixes go to
  whatever other interface routes them; ``Table = N``: the route goes to table N, consulted only
  where your ``ip rule``s send packets. A running interface's Table is unknown: wg-quick's
  default is assumed.

Private and preshared keys are never kept, so nothing here can print them. Interfaces show their
peers in the order WireGuard holds them, which means nothing for "claimed last": one interface
never holds a prefix twice anyway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Literal

from sixpn.model.errors import InvalidInput

IPNetwork = IPv4Network | IPv6Network
FindingKind = Literal["identical", "nested", "default-route"]
SourceKind = Literal["file", "interface"]
Winner = Literal["a", "b"] | None

# wg-quick only accepts FILE when its name is an interface name plus ".conf" (parse_options).
_CONF_NAME = re.compile(r"(?:^|/)([a-zA-Z0-9_=+.-]{1,15})\.conf$")
_PREFIX = re.compile(r"^[0-9a-fA-F:.]+(?:/[0-9]{1,3})?$")
_MAIN, _POLICY = "main", "wg-quick /0 table"  # where a claim's route lands (see _route)


@dataclass(frozen=True)
class PeerClaim:
    """A peer's AllowedIPs. ``index``: its ``[Peer]`` section (0-based), the order WireGuard
    applies them in; for an interface, its position in ``wg show``."""

    public_key: str
    allowed_ips: tuple[IPNetwork, ...]
    index: int


@dataclass(frozen=True)
class Source:
    """One wg-quick file (``name`` as given) or one running interface.

    ``table``: a file's wg-quick ``Table`` ("auto" when absent, "off", a table number or name);
    None for an interface (unknown: wg-quick's default assumed). ``ifname``: the interface the
    file brings up (None if wg-quick would refuse its name). ``dns``: its DNS line.
    """

    name: str
    kind: SourceKind
    peers: tuple[PeerClaim, ...]
    table: str | None = None
    ifname: str | None = None
    dns: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class Claim:
    """One prefix claimed by one peer of one source."""

    source: Source
    peer: PeerClaim
    prefix: IPNetwork

    @property
    def peer_label(self) -> str:
        which = f"peer {self.peer.index + 1}" if self.source.kind == "file" else "peer"
        return f"{which} {self.peer.public_key[:10]}..."

    @property
    def label(self) -> str:
        return f"{self.source.label}, {self.peer_label}"


@dataclass(frozen=True)
class Finding:
    """Claims ``a`` (the wider or equal prefix) and ``b`` overlap. ``winner``: which one carries
    the packets for ``b.prefix`` (None: it depends on the order they came up, or on ip rules)."""

    kind: FindingKind
    a: Claim
    b: Claim
    winner: Winner
    wins: str
    fix: str


def interface_name_of(path: str) -> str | None:
    """The interface ``wg-quick up PATH`` creates, or None if wg-quick would refuse the name."""
    found = _CONF_NAME.search(path)
    return found.group(1) if found else None


def _bad(where: str, lineno: int, what: str) -> InvalidInput:
    return InvalidInput(f"{where}, line {lineno}: {what}", field="FILE")


def _prefixes(value: str, where: str, lineno: int, *, dump: bool = False) -> list[IPNetwork]:
    out: list[IPNetwork] = []
    for item in value.split(","):
        entry = item.strip()
        if not dump and entry[:1] in ("+", "-"):
            if entry[0] == "-":
                continue  # wg's "-PREFIX" removes an entry: it claims nothing
            entry = entry[1:]
        try:
            if not _PREFIX.match(entry):
                raise ValueError(entry)
            # wg accepts host bits (with a warning) and the kernel masks them.
            out.append(ip_network(entry, strict=False))
        except ValueError:
            raise _bad(where, lineno, f"{entry!r} in AllowedIPs is not an IP prefix") from None
    return out


def parse_wg_quick(text: str, name: str) -> Source:
    """A wg-quick file, read the way ``wg``/``wg-quick`` read it: ``#`` starts a comment, blanks
    are dropped, keys and section names are case-insensitive, AllowedIPs lines add up. Keys this
    check does not need are ignored, secrets included; their values are never quoted."""
    drafts: list[tuple[int, list[str], list[IPNetwork]]] = []  # header line, [key], prefixes
    section: str | None = None
    seen_interface = False
    table = "auto"
    dns: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        # wg's config_read_line: everything from '#' on goes, then every blank character.
        line = "".join(raw.split("#", 1)[0].split())
        if not line:
            continue
        if line.startswith("["):
            section = line.lower()
            if section == "[interface]":
                seen_interface = True
            elif section == "[peer]":
                drafts.append((lineno, [], []))
            else:
                raise _bad(name, lineno, "unknown section: expected [Interface] or [Peer]")
            continue
        key, eq, value = line.partition("=")
        if not eq or not key:
            raise _bad(name, lineno, "expected 'Key = value', a [Section] or a # comment")
        key = key.lower()
        if section is None:
            raise _bad(name, lineno, "a setting before any [Interface] or [Peer] section")
        if section == "[interface]" and key == "table":
            table = value
        elif section == "[interface]" and key == "dns":
            dns += [v for v in value.split(",") if v]
        elif section == "[peer]" and key == "publickey":
            drafts[-1][1][:] = [value]
        elif section == "[peer]" and key == "allowedips" and value:
            drafts[-1][2].extend(_prefixes(value, name, lineno))
    if not seen_interface:
        raise InvalidInput(f"{name}: no [Interface] section: not a wg-quick file", field="FILE")
    by_key: dict[str, PeerClaim] = {}
    for index, (lineno, key_seen, prefixes) in enumerate(drafts):
        if not key_seen:
            raise _bad(name, lineno, "this [Peer] has no PublicKey")
        # A second section for the same key replaces the first one's AllowedIPs (wg sets
        # WGPEER_REPLACE_ALLOWEDIPS per section), and claims them at its own position.
        by_key.pop(key_seen[0], None)
        by_key[key_seen[0]] = PeerClaim(key_seen[0], tuple(prefixes), index)
    return Source(name, "file", tuple(by_key.values()), table, interface_name_of(name), tuple(dns))


def parse_wg_dump(text: str) -> list[Source]:
    """``wg show all dump``: per interface a line of 5 tab-separated fields (name, private key,
    public key, port, fwmark), then per peer 9 (name, public key, preshared key, endpoint,
    allowed ips, latest handshake, rx, tx, keepalive). Keys other than public ones are dropped."""
    peers: dict[str, list[PeerClaim]] = {}
    where = "wg show all dump"
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) == 5:
            peers.setdefault(fields[0], [])
        elif len(fields) == 9:
            ifname, public_key, allowed = fields[0], fields[1], fields[4]
            if ifname not in peers:
                raise _bad(where, lineno, f"a peer of {ifname!r} before its interface line")
            nets = (
                () if allowed == "(none)" else tuple(_prefixes(allowed, where, lineno, dump=True))
            )
            peers[ifname].append(PeerClaim(public_key, nets, len(peers[ifname])))
        else:
            raise _bad(where, lineno, f"expected 5 or 9 tab-separated fields, not {len(fields)}")
    return [Source(name, "interface", tuple(ps), None, name) for name, ps in peers.items()]


def select_sources(files: list[Source], interfaces: list[Source]) -> tuple[list[Source], list[str]]:
    """Files, then the interfaces no file names: an interface called like a file's interface is
    that file brought up (or has to go before it can be), so comparing the two would flag every
    prefix as identical. Returns the sources and a note per interface left out."""
    named = {s.ifname: s for s in files if s.ifname}
    notes = [
        f"interface {i.name}: checked as {named[i.name].name}, which brings up that interface"
        for i in interfaces
        if i.name in named
    ]
    return [*files, *(i for i in interfaces if i.name not in named)], notes


def _covers(wide: IPNetwork, narrow: IPNetwork) -> bool:
    if wide.version != narrow.version or wide.prefixlen > narrow.prefixlen:
        return False
    shift = wide.max_prefixlen - wide.prefixlen
    return int(wide.network_address) >> shift == int(narrow.network_address) >> shift


def check(sources: list[Source]) -> list[Finding]:
    """Every overlapping pair of claims, explained (module docstring). Claims are sorted by
    address so that each one meets only the prefixes that contain it: a stack of the open
    ones, O(claims + findings), even for a gateway with thousands of peers."""
    claims = [
        (n.version, int(n.network_address), n.prefixlen, si, p.index, Claim(s, p, n))
        for si, s in enumerate(sources)
        for p in s.peers
        for n in p.allowed_ips
    ]
    claims.sort(key=lambda c: c[:5])
    findings: list[Finding] = []
    open_: list[Claim] = []
    for *_, claim in claims:
        while open_ and not _covers(open_[-1].prefix, claim.prefix):
            open_.pop()
        for wider in open_:
            found = _explain(wider, claim)
            if found is not None:
                findings.append(found)
        open_.append(claim)
    return findings


def _kind(a: IPNetwork, b: IPNetwork) -> FindingKind:
    if a.prefixlen == b.prefixlen:
        return "identical"
    return "default-route" if a.prefixlen == 0 else "nested"


def _explain(a: Claim, b: Claim) -> Finding | None:
    kind = _kind(a.prefix, b.prefix)
    if a.source is b.source:
        return Finding(kind, a, b, *_inside(kind, a, b))
    if kind == "identical" and _route(a) is None:
        a, b = b, a  # the side wg-quick adds no route for is the one shadowed
    if _route(a) is None:
        return None  # Table = off: the wider claim installs no route, nothing competes
    return Finding(kind, a, b, *_across(kind, a, b))


def _inside(kind: FindingKind, a: Claim, b: Claim) -> tuple[Winner, str, str]:
    """Two claims of one interface: WireGuard's cryptokey routing (allowed-ips trie) decides."""
    src, pa, pb, la, lb = a.source.label, a.prefix, b.prefix, a.peer_label, b.peer_label
    if a.peer.public_key == b.peer.public_key:
        wins = f"{pb} goes to the same peer either way"
        return "a", wins, f"drop the redundant {pb} from {la}'s AllowedIPs in {src}"
    if kind == "identical":
        winner: Winner = "b" if b.peer.index > a.peer.index else "a"
        ll, lf = (lb, la) if winner == "b" else (la, lb)
        wins = (
            f"inside {src} a prefix belongs to one peer only, the one that claims it last: {ll} "
            f"takes {pa}; {lf} loses it (nothing is sent to it for {pa}, and packets from {pa} "
            "arriving over it are dropped)"
        )
        return winner, wins, f"keep {pa} on one peer only: remove it from {lf} or {ll} in {src}"
    rest = "everything else of its family" if kind == "default-route" else f"the rest of {pa}"
    wins = (
        f"inside {src} the longest prefix wins: packets to {pb} go to {lb}, {rest} to {la}, "
        f"which can no longer send from {pb}"
    )
    fix = (
        f"if {lb} is meant to carry {pb}, keep it; otherwise remove {pb} from it, or narrow {la}'s "
        f"AllowedIPs in {src} to what it should carry"
    )
    return "b", wins, fix


def _route(c: Claim) -> str | None:
    """Where wg-quick puts the route for a claim: main, the /0 policy table, table N, or None."""
    table = c.source.table
    if table == "off":
        return None
    if table in (None, "auto"):
        return _POLICY if c.prefix.prefixlen == 0 else _MAIN
    return table


def _across(kind: FindingKind, a: Claim, b: Claim) -> tuple[Winner, str, str]:
    """Two interfaces: the routing table decides (module docstring)."""
    pa, pb, ra, rb = a.prefix, b.prefix, _route(a), _route(b)
    both = f"{a.source.label} and {b.source.label}"
    if kind == "default-route":
        return _default(a, b)
    if kind == "identical" and ra == rb == _POLICY:
        wins = (
            f"both wg-quick tunnels route {pa} through their own table: the one brought up last "
            "takes every packet not routed more specifically, and its own encrypted packets go "
            "through the other tunnel"
        )
        return None, wins, f"bring up only one of {both} at a time"
    if ra != rb:
        if rb is None:
            wins = f"{b.source.label} has Table = off: no route for {pb}, so "
        else:
            wins = f"the routes are in different tables ({ra}, {rb}): unless ip rules say "
            wins += "otherwise, "
        winner: Winner = "a" if rb is None or ra == _MAIN else "b" if rb == _MAIN else None
        holder = {"a": a.label, "b": b.label, None: "whichever table your ip rules consult first"}
        return (
            winner,
            f"{wins}packets to {pb} go to {holder[winner]}",
            f"remove {pb} from one of {both}",
        )
    if kind == "nested":
        wins = (
            f"the routing table's longest prefix wins: packets to {pb} go to {b.label}, the rest "
            f"of {pa} to {a.label} (wg-quick adds both routes)"
        )
        fix = (
            f"if {b.source.label} is meant to carry {pb}, keep it; otherwise remove {pb} from it, "
            f"or narrow {pa} in {a.source.label}"
        )
        return "b", wins, fix
    add = f"`ip -{pa.version} route add {pa}` (RTNETLINK answers: File exists)"
    if a.source.kind == b.source.kind == "file":
        how = (
            f"the one brought up first keeps it; `wg-quick up` of the other fails at {add} "
            "and deletes its interface again"
        )
    elif a.source.kind == b.source.kind:
        how = (
            f"both are up, but only the one that added the route first gets the packets for "
            f"{pa} (see `ip -{pa.version} route show {pa}`)"
        )
    else:
        up, down = (a, b) if a.source.kind == "interface" else (b, a)
        how = (
            f"{up.source.label} is up and holds it (if wg-quick brought it up); `wg-quick up "
            f"{down.source.name}` would fail at {add} and delete its interface again"
        )
    wins = f"both want the route {pa} and only one interface can carry it: {how}"
    return None, wins, f"remove {pa} from one of {both}, or bring only one of them up"


def _default(a: Claim, b: Claim) -> tuple[Winner, str, str]:
    """``a`` is a /0 claim, ``b`` a network of the same family in another source."""
    pa, pb, ra, rb = a.prefix, b.prefix, _route(a), _route(b)
    winner: Winner
    if ra == rb:
        winner = "b"
        wins = f"both routes are in table {ra}: the longest prefix, {pb}, goes to {b.label}"
    elif ra == _POLICY and rb == _MAIN:
        winner = "b"
        wins = (
            f"while {b.source.label} is up, {pb} goes to it: wg-quick routes {a.source.label}'s "
            f"{pa} through its own table behind a `suppress_prefixlength 0` rule, so the main "
            f"table's more specific {pb} comes first; whenever {b.source.label} is down, packets "
            f"to {pb} go into the {pa} tunnel instead"
        )
    elif ra in (_POLICY, _MAIN):
        winner = "a"
        why = "Table = off" if rb is None else f"its route in table {rb}"
        wins = (
            f"{b.source.label} has {why}, so the main table holds no route for {pb}: "
            f"{a.label}'s {pa} carries its packets (unless your own ip rules say otherwise)"
        )
    else:
        winner = None
        wins = (
            f"{pa} is in table {ra}: it takes {pb}'s packets wherever your ip rules consult "
            f"table {ra} before the route to {pb}"
        )
    if a.source.dns and b.source.dns:
        wins += (
            f"; names too: wg-quick registers each DNS line exclusively (`resolvconf -x`), so "
            f"while {a.source.label} is the one brought up last, its resolvers "
            f"({', '.join(a.source.dns)}) answer instead of {b.source.label}'s"
        )
    fix = (
        f"narrow {a.source.label}'s AllowedIPs to what the tunnel should carry instead of {pa}, "
        f"or set `Table = off` in it and add your own routes, or keep {b.source.label} up "
        f"whenever {a.source.label} is"
    )
    return winner, wins, fix

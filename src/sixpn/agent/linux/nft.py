"""Isolation (SPEC 3) as one nftables table the agent owns: ``table inet sixpn``.

The whole policy, with the mesh interface ``sxw1``, one network and one machine (``M48`` and
``M112`` stand for the masks of a network's /48 and a machine's /112, ``ffff:ffff:ffff::`` and
``ffff:ffff:ffff:ffff:ffff:ffff:ffff:0``)::

    table inet sixpn {
        set pairs {               # network /48s, forwarded within themselves (from the mesh)
            type ipv6_addr . ipv6_addr
            elements = { fdaa:0:18:: . fdaa:0:18:: }
        }
        set sources {             # machine veth . its /112 . its network's /48
            type ifname . ipv6_addr . ipv6_addr
            elements = { "sxm3d8f0a1b2c4e" . fdaa:0:18:a7b:7d:f066:b83b:0 . fdaa:0:18:: }
        }
        set peered {              # routed peering: a network /48 . a prefix behind its peer
            type ipv6_addr . ipv6_addr
            flags interval
            elements = { fdaa:0:18::/48 . 2001:db8:1::/56 }
        }
        chain input {             # a machine reaches its host for DNS only
            type filter hook input priority filter; policy accept;
            iifname "sxm*" jump from_machine
            ip6 saddr fdaa::/16 iifname != "lo" iifname != "sxw1" drop
        }
        chain from_machine {
            icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
            iifname . ip6 saddr & M112 . ip6 saddr & M48 != @sources drop
            ip6 daddr fdaa::3 udp dport 53 accept
            ip6 daddr fdaa::3 tcp dport 53 accept
            drop
        }
        chain forward {           # 6PN forwarding only within a network /48
            type filter hook forward priority filter; policy accept;
            iifname "sxw1" ip6 saddr & M48 . ip6 daddr & M48 @pairs accept
            iifname . ip6 saddr & M112 . ip6 daddr & M48 @sources accept
            iifname "sxw1" ip6 saddr . ip6 daddr @peered accept
            iifname "sxw1" ip6 daddr . ip6 saddr @peered accept
            iifname . ip6 saddr & M112 . ip6 saddr & M48 @sources \
                ip6 saddr . ip6 daddr @peered accept
            iifname "sxm*" drop
            oifname "sxm*" drop
            iifname "sxw1" drop
            oifname "sxw1" drop
            ip6 saddr fdaa::/16 drop
            ip6 daddr fdaa::/16 drop
        }
    }

Why this shape:

- one lookup decides a forwarded packet, whatever the number of networks and machines, in a
  hash set keyed by masked addresses (NOTES.md: a linear rule per network costs 75% of the
  tunnel's throughput). A packet from the mesh passes if its source's /48 and its
  destination's /48 are one network of this host (``pairs``); WireGuard's cryptokey routing
  already checked its source (a peer host's /80s, a client peer's /120). A packet from a
  machine passes if (its veth, its source's /112, its destination's /48) is that machine's
  element of ``sources``: anti-spoofing (the source inside the machine's /112) and isolation
  in the same lookup. ICMPv6 errors between two addresses of a network pass like any packet;
- the drops after the accepts cover everything that touches 6PN (our interfaces, an
  ``fdaa::/16`` address: a forged 6PN source from the underlay, IPv4 from a machine) and is
  not accepted, but let the host's other forwarding be (a Docker bridge on the same host): a
  drop in any table is final in nftables, so ``policy drop`` here would break it;
- routed peering (SPEC 6) is the only traffic that leaves 6PN: ``peered`` pairs a network's
  /48 with a prefix behind one of its peers, an interval set (the prefixes are anything an
  operator routes), consulted only by packets that the two exact lookups did not accept, so
  6PN traffic pays nothing for it. From the mesh, WireGuard has checked the source (a host's
  /80s and the routes it carries on this host, a client peer's /120 and routes), so the pair
  of source and destination, in either order, decides: the network's machines and peers reach
  the prefix, and the prefix reaches them (replies, and connections opened from the external
  network). From a machine, its ``sources`` element checks its source first;
- a machine reaches its host for NDP (link-local or its own source) and, from its own /112,
  for DNS at ``fdaa::3``: the same ``sources`` element, with the source's /48 standing for the
  destination's;
- measured (docs/benchmarks.md, 2026-11-30): exact keys in hash sets instead of an interval
  set of prefixes, and the set instead of a ``fib saddr . iif oif missing`` route lookup per
  packet from a machine, halved the table's CPU (2.5% to 1.2% of the machine at 1 Gbit/s);
  swapped by hand in one lab the table is now as cheap as no table at all. There is no
  prerouting chain: the underlay's encrypted datagrams, the packets a host receives most,
  cross only the input chain's two rules, which do not match them.

Every change is one ``nft -f`` batch, so atomic. The table is replaced by "create empty, delete,
define" in one batch (works whether or not it exists); elements change by ``add element`` /
``delete element``. ``read`` compares the kernel's rules with the kernel's own rendering of
:func:`render_table`, obtained once per process by loading it in a throwaway namespace
(``unshare --net``): both sides then pass through the same kernel and the same ``nft -j``, so
the comparison does not depend on how this nft version prints rules.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from ipaddress import IPv6Address, IPv6Network
from typing import Any, NamedTuple

from sixpn.agent.linux import _sys
from sixpn.core.addressing import DNS_ADDRESS, SIXPN_PREFIX
from sixpn.core.hoststate import MACHINE_IF_PREFIX, NFT_TABLE, Peering, Source
from sixpn.model.errors import InvalidInput, SixpnError

TABLE = f"inet {NFT_TABLE}"
PAIRS = "pairs"
SOURCES = "sources"
PEERED = "peered"
NETWORK_BITS = 48  # SPEC 2: a network's /48
MACHINE_BITS = 112  # a machine's /112
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def _mask(bits: int) -> IPv6Address:
    return IPv6Network(f"::/{bits}").netmask


NET = f"& {_mask(NETWORK_BITS)}"
MACHINE = f"& {_mask(MACHINE_BITS)}"


class Contents(NamedTuple):
    """What ``read`` finds: the sets' elements, and whether the rest is as rendered."""

    pairs: frozenset[IPv6Network]
    sources: frozenset[Source]
    rules_ok: bool
    peered: frozenset[Peering] = frozenset()


def render_table(
    wg_ifname: str,
    pairs: Iterable[IPv6Network],
    sources: Iterable[Source] = (),
    peered: Iterable[Peering] = (),
) -> str:
    """The ``nft -f`` script that makes the table exactly this, atomically."""
    _check_ifname(wg_ifname)
    machines = f'"{MACHINE_IF_PREFIX}*"'
    wg = f'"{wg_ifname}"'
    return (
        f"table {TABLE} {{}}\n"
        f"delete table {TABLE}\n"
        f"table {TABLE} {{\n"
        f"\tset {PAIRS} {{\n"
        "\t\ttype ipv6_addr . ipv6_addr\n"
        f"{_element_line(_pair_elements(pairs))}"
        "\t}\n"
        f"\tset {SOURCES} {{\n"
        "\t\ttype ifname . ipv6_addr . ipv6_addr\n"
        f"{_element_line(_source_elements(sources))}"
        "\t}\n"
        f"\tset {PEERED} {{\n"
        "\t\ttype ipv6_addr . ipv6_addr\n"
        "\t\tflags interval\n"
        f"{_element_line(_peered_elements(peered))}"
        "\t}\n"
        "\tchain input {\n"
        "\t\ttype filter hook input priority filter; policy accept;\n"
        f"\t\tiifname {machines} jump from_machine\n"
        f'\t\tip6 saddr {SIXPN_PREFIX} iifname != "lo" iifname != {wg} drop\n'
        "\t}\n"
        "\tchain from_machine {\n"
        "\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept\n"
        f"\t\tiifname . ip6 saddr {MACHINE} . ip6 saddr {NET} != @{SOURCES} drop\n"
        f"\t\tip6 daddr {DNS_ADDRESS} udp dport 53 accept\n"
        f"\t\tip6 daddr {DNS_ADDRESS} tcp dport 53 accept\n"
        "\t\tdrop\n"
        "\t}\n"
        "\tchain forward {\n"
        "\t\ttype filter hook forward priority filter; policy accept;\n"
        f"\t\tiifname {wg} ip6 saddr {NET} . ip6 daddr {NET} @{PAIRS} accept\n"
        f"\t\tiifname . ip6 saddr {MACHINE} . ip6 daddr {NET} @{SOURCES} accept\n"
        f"\t\tiifname {wg} ip6 saddr . ip6 daddr @{PEERED} accept\n"
        f"\t\tiifname {wg} ip6 daddr . ip6 saddr @{PEERED} accept\n"
        f"\t\tiifname . ip6 saddr {MACHINE} . ip6 saddr {NET} @{SOURCES}"
        f" ip6 saddr . ip6 daddr @{PEERED} accept\n"
        f"\t\tiifname {machines} drop\n"
        f"\t\toifname {machines} drop\n"
        f"\t\tiifname {wg} drop\n"
        f"\t\toifname {wg} drop\n"
        f"\t\tip6 saddr {SIXPN_PREFIX} drop\n"
        f"\t\tip6 daddr {SIXPN_PREFIX} drop\n"
        "\t}\n"
        "}\n"
    )


def replace_table(
    wg_ifname: str,
    pairs: Iterable[IPv6Network],
    sources: Iterable[Source],
    peered: Iterable[Peering] = (),
) -> None:
    script = render_table(wg_ifname, pairs, sources, peered)
    _sys.run(["nft", "-f", "-"], "replacing nftables table", input=script)


def add_pairs(networks: Iterable[IPv6Network]) -> None:
    _add(PAIRS, _pair_elements(networks), "forwarding pairs")


def remove_pairs(networks: Iterable[IPv6Network]) -> None:
    _remove(PAIRS, _pair_elements(set(networks) & read().pairs), "forwarding pairs")


def add_sources(sources: Iterable[Source]) -> None:
    _add(SOURCES, _source_elements(sources), "machine sources")


def remove_sources(sources: Iterable[Source]) -> None:
    _remove(SOURCES, _source_elements(set(sources) & read().sources), "machine sources")


def add_peered(peerings: Iterable[Peering]) -> None:
    _add(PEERED, _peered_elements(peerings), "routed peerings")


def remove_peered(peerings: Iterable[Peering]) -> None:
    _remove(PEERED, _peered_elements(set(peerings) & read().peered), "routed peerings")


def delete_table() -> None:
    script = f"table {TABLE} {{}}\ndelete table {TABLE}\n"
    _sys.run(["nft", "-f", "-"], "deleting nftables table", input=script)


def read(wg_ifname: str | None = None) -> Contents:
    """The sets' elements in the kernel, and whether everything else equals ``render_table``
    (checked only when ``wg_ifname`` is given).

    No table: no elements, not ok. An element of a shape the agent never writes also makes it
    not ok, so that the planner rewrites the table.
    """
    doc = _list()
    if doc is None:
        return Contents(frozenset(), frozenset(), False)
    pairs, odd_pairs = _read_pairs(doc)
    sources, odd_sources = _read_sources(doc)
    peered, odd_peered = _read_peered(doc)
    ok = not (odd_pairs or odd_sources or odd_peered)
    if wg_ifname is not None:
        ok = ok and _shape(doc) == _reference(wg_ifname)
    return Contents(pairs, sources, ok, peered)


# -- elements ----------------------------------------------------------------------------------


def _check_ifname(name: str) -> None:
    if not _IFNAME.match(name):
        raise InvalidInput(f"nftables: bad interface name {name!r}", field="ifname")


def _net48(address: IPv6Address) -> IPv6Address:
    return IPv6Network(f"{address}/{NETWORK_BITS}", strict=False).network_address


def _pair_elements(networks: Iterable[IPv6Network]) -> list[str]:
    nets = sorted(set(networks), key=lambda n: (int(n.network_address), n.prefixlen))
    for n in nets:
        if n.prefixlen != NETWORK_BITS:
            raise InvalidInput(f"nftables: a pair is a network /48, not {n}", field="pairs")
    return [f"{n.network_address} . {n.network_address}" for n in nets]


def _source_elements(sources: Iterable[Source]) -> list[str]:
    out = []
    for src in sorted(set(sources), key=lambda x: (x.ifname, int(x.prefix.network_address))):
        _check_ifname(src.ifname)
        if src.prefix.prefixlen != MACHINE_BITS:
            raise InvalidInput(f"nftables: a source is a machine /112, not {src.prefix}")
        address = src.prefix.network_address
        out.append(f'"{src.ifname}" . {address} . {_net48(address)}')
    return out


def _peered_elements(peerings: Iterable[Peering]) -> list[str]:
    out = []
    for p in sorted(set(peerings), key=lambda x: (_net_key(x.network), _net_key(x.prefix))):
        if p.network.prefixlen != NETWORK_BITS:
            raise InvalidInput(f"nftables: a peering is of a network /48, not {p.network}")
        out.append(f"{p.network} . {p.prefix}")
    return out


def _net_key(net: IPv6Network) -> tuple[int, int]:
    return (int(net.network_address), net.prefixlen)


def _element_line(elements: list[str]) -> str:
    return f"\t\telements = {{ {', '.join(elements)} }}\n" if elements else ""


def _add(set_name: str, elements: list[str], what: str) -> None:
    if elements:
        script = f"add element {TABLE} {set_name} {{ {', '.join(elements)} }}\n"
        _sys.run(["nft", "-f", "-"], f"adding {what} {', '.join(elements)}", input=script)


def _remove(set_name: str, present: list[str], what: str) -> None:
    """Delete elements known to be there (``delete element`` of an absent one fails the whole
    batch, and nft 1.0.6 has no ``destroy``)."""
    if present:
        script = f"delete element {TABLE} {set_name} {{ {', '.join(present)} }}\n"
        _sys.run(["nft", "-f", "-"], f"removing {what} {', '.join(present)}", input=script)


def _list() -> dict[str, Any] | None:
    code, out, err = _sys.try_run(["nft", "-j", "list", "table", *TABLE.split()], "reading nft")
    if code != 0:
        if "No such file or directory" in err:
            return None
        raise SixpnError(f"reading nftables table {TABLE}: {err.strip()[-800:]}")
    doc: dict[str, Any] = json.loads(out)
    return doc


def _set_elements(doc: dict[str, Any], name: str) -> list[Any]:
    """The elements of set ``name`` as ``nft -j`` gives them: a list of fields each."""
    out: list[Any] = []
    for obj in doc.get("nftables", []):
        nft_set = obj.get("set")
        if nft_set and nft_set.get("name") == name:
            for elem in nft_set.get("elem", []):
                fields = elem.get("concat") if isinstance(elem, dict) else None
                out.append(fields if isinstance(fields, list) else None)
    return out


def _address(value: Any) -> IPv6Address | None:
    try:
        return IPv6Address(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _read_pairs(doc: dict[str, Any]) -> tuple[frozenset[IPv6Network], bool]:
    """(the pairs, whether some element is not of the ``N . N`` shape)."""
    found: set[IPv6Network] = set()
    odd = False
    for fields in _set_elements(doc, PAIRS):
        addrs = [_address(f) for f in fields] if fields else []
        if len(addrs) == 2 and addrs[0] is not None and addrs[0] == addrs[1] == _net48(addrs[0]):
            found.add(IPv6Network(f"{addrs[0]}/{NETWORK_BITS}"))
        else:
            odd = True
    return frozenset(found), odd


def _read_sources(doc: dict[str, Any]) -> tuple[frozenset[Source], bool]:
    """(the sources, whether some element is not of the ``veth . /112 . its /48`` shape)."""
    found: set[Source] = set()
    odd = False
    for fields in _set_elements(doc, SOURCES):
        if fields and len(fields) == 3 and isinstance(fields[0], str):
            name, machine, net = fields[0], _address(fields[1]), _address(fields[2])
            if machine is not None and net is not None and net == _net48(machine):
                prefix = IPv6Network(f"{machine}/{MACHINE_BITS}", strict=False)
                if prefix.network_address == machine and _IFNAME.match(name):
                    found.add(Source(name, prefix))
                    continue
        odd = True
    return frozenset(found), odd


def _prefix(value: Any) -> IPv6Network | None:
    """A prefix as ``nft -j`` gives an interval element's field: ``{"prefix": {"addr": A,
    "len": N}}``, or the bare address of a /128."""
    if isinstance(value, dict) and isinstance(value.get("prefix"), dict):
        value = f"{value['prefix'].get('addr')}/{value['prefix'].get('len')}"
    try:
        return IPv6Network(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _read_peered(doc: dict[str, Any]) -> tuple[frozenset[Peering], bool]:
    """(the peerings, whether some element is not of the ``network /48 . prefix`` shape)."""
    found: set[Peering] = set()
    odd = False
    for fields in _set_elements(doc, PEERED):
        nets = [_prefix(f) for f in fields] if fields else []
        network, prefix = (nets[0], nets[1]) if len(nets) == 2 else (None, None)
        if network is not None and prefix is not None and network.prefixlen == NETWORK_BITS:
            found.add(Peering(network, prefix))
        else:
            odd = True
    return frozenset(found), odd


def _shape(doc: dict[str, Any]) -> str:
    """The table without handles and set elements, as canonical JSON: what must not drift."""
    out = []
    for obj in doc.get("nftables", []):
        for kind in ("table", "set", "chain", "rule"):
            if kind in obj:
                body = {k: v for k, v in obj[kind].items() if k not in ("handle", "elem")}
                out.append({kind: body})
    return json.dumps(out, sort_keys=True)


@functools.lru_cache(maxsize=8)
def _reference(wg_ifname: str) -> str:
    """The kernel's rendering of ``render_table(wg_ifname, ())``, from a throwaway namespace."""
    script = "nft -f - && nft -j list table " + TABLE
    out = _sys.run(
        ["unshare", "--net", "--", "sh", "-c", script],
        "rendering the reference nftables table in a throwaway namespace",
        input=render_table(wg_ifname, ()),
    )
    doc: dict[str, Any] = json.loads(out)
    return _shape(doc)

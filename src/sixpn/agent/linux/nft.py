"""Isolation (SPEC 3) as one nftables table the agent owns: ``table inet sixpn``.

The whole policy, with the mesh interface ``sxw1`` and one network::

    table inet sixpn {
        set pairs {
            type ipv6_addr . ipv6_addr; flags interval;
            elements = { fdaa:0:18::/48 . fdaa:0:18::/48 }
        }
        chain input {             # a machine reaches its host for DNS only
            type filter hook input priority filter; policy accept;
            iifname "sxm*" jump from_machine
            ip6 saddr fdaa::/16 iifname != "lo" iifname != "sxw1" drop
        }
        chain from_machine {
            fib saddr . iif oif missing drop
            icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
            ip6 daddr fdaa::3 udp dport 53 accept
            ip6 daddr fdaa::3 tcp dport 53 accept
            drop
        }
        chain forward {           # 6PN forwarding only within a network /48
            type filter hook forward priority filter; policy accept;
            iifname "sxm*" fib saddr . iif oif missing drop
            ip6 saddr fdaa::/16 iifname != "sxm*" iifname != "sxw1" drop
            ip6 saddr . ip6 daddr @pairs accept
            iifname "sxm*" drop
            oifname "sxm*" drop
            iifname "sxw1" drop
            oifname "sxw1" drop
            ip6 daddr fdaa::/16 drop
        }
    }

Why this shape:

- one set lookup per forwarded packet whatever the number of networks (NOTES.md: a linear rule
  per network costs 75% of the tunnel's throughput, the concatenated interval set nothing);
  ICMPv6 errors between two addresses of a network match the pair like any other packet;
- the forward chain drops everything that touches 6PN (our interfaces, or an ``fdaa::/16``
  address) and is not a pair, but lets the host's other forwarding be (a Docker bridge on the
  same host): a drop in any table is final in nftables, so ``policy drop`` here would break it;
- reverse-path anti-spoofing, in front of everything else in both chains a machine's packet
  can reach: a packet from a machine's veth must have a source routed back to that veth (its
  /112; IPv4 has no route back, so IPv4 from machines is dropped too); a 6PN source may arrive
  only from a machine's veth, the mesh or ``lo``, which stops forged 6PN sources from the
  underlay. The mesh needs no route lookup: WireGuard's cryptokey routing accepts from a peer
  only the sources in its AllowedIPs (other hosts' /80s, a client peer's /120);
- no prerouting chain: the packets a host receives most are the mesh's own encrypted
  datagrams on the underlay, and they cross only the input chain, two rules that do not match
  (an interface-name compare, an IPv6 check that an IPv4 datagram fails at once). With a
  prerouting chain in front they crossed two hooks and six rules (docs/benchmarks.md).

Every change is one ``nft -f`` batch, so atomic. The table is replaced by "create empty, delete,
define" in one batch (works whether or not it exists); pairs change by ``add element`` /
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
from ipaddress import IPv6Network
from typing import Any

from sixpn.agent.linux import _sys
from sixpn.core.addressing import DNS_ADDRESS, SIXPN_PREFIX
from sixpn.core.hoststate import MACHINE_IF_PREFIX, NFT_TABLE
from sixpn.model.errors import InvalidInput, SixpnError

TABLE = f"inet {NFT_TABLE}"
SET = "pairs"
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def render_table(wg_ifname: str, pairs: Iterable[IPv6Network]) -> str:
    """The ``nft -f`` script that makes the table exactly this, atomically."""
    if not _IFNAME.match(wg_ifname):
        raise InvalidInput(f"rendering nftables: bad interface name {wg_ifname!r}", field="ifname")
    machines = f'"{MACHINE_IF_PREFIX}*"'
    wg = f'"{wg_ifname}"'
    elements = _elements(pairs)
    element_line = f"\t\telements = {{ {elements} }}\n" if elements else ""
    return (
        f"table {TABLE} {{}}\n"
        f"delete table {TABLE}\n"
        f"table {TABLE} {{\n"
        f"\tset {SET} {{\n"
        "\t\ttype ipv6_addr . ipv6_addr\n"
        "\t\tflags interval\n"
        f"{element_line}"
        "\t}\n"
        "\tchain input {\n"
        "\t\ttype filter hook input priority filter; policy accept;\n"
        f"\t\tiifname {machines} jump from_machine\n"
        f'\t\tip6 saddr {SIXPN_PREFIX} iifname != "lo" iifname != {wg} drop\n'
        "\t}\n"
        "\tchain from_machine {\n"
        "\t\tfib saddr . iif oif missing drop\n"
        "\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept\n"
        f"\t\tip6 daddr {DNS_ADDRESS} udp dport 53 accept\n"
        f"\t\tip6 daddr {DNS_ADDRESS} tcp dport 53 accept\n"
        "\t\tdrop\n"
        "\t}\n"
        "\tchain forward {\n"
        "\t\ttype filter hook forward priority filter; policy accept;\n"
        f"\t\tiifname {machines} fib saddr . iif oif missing drop\n"
        f"\t\tip6 saddr {SIXPN_PREFIX} iifname != {machines} iifname != {wg} drop\n"
        f"\t\tip6 saddr . ip6 daddr @{SET} accept\n"
        f"\t\tiifname {machines} drop\n"
        f"\t\toifname {machines} drop\n"
        f"\t\tiifname {wg} drop\n"
        f"\t\toifname {wg} drop\n"
        f"\t\tip6 daddr {SIXPN_PREFIX} drop\n"
        "\t}\n"
        "}\n"
    )


def replace_table(wg_ifname: str, pairs: Iterable[IPv6Network]) -> None:
    _sys.run(["nft", "-f", "-"], "replacing nftables table", input=render_table(wg_ifname, pairs))


def add_pairs(networks: Iterable[IPv6Network]) -> None:
    elements = _elements(networks)
    if elements:
        script = f"add element {TABLE} {SET} {{ {elements} }}\n"
        _sys.run(["nft", "-f", "-"], f"adding forwarding pairs {elements}", input=script)


def remove_pairs(networks: Iterable[IPv6Network]) -> None:
    """Delete the pairs of ``networks`` that are there (``delete element`` of an absent one
    fails the whole batch, and nft 1.0.6 has no ``destroy``)."""
    present, _ = read_pairs()
    elements = _elements(set(networks) & present)
    if elements:
        script = f"delete element {TABLE} {SET} {{ {elements} }}\n"
        _sys.run(["nft", "-f", "-"], f"removing forwarding pairs {elements}", input=script)


def delete_table() -> None:
    script = f"table {TABLE} {{}}\ndelete table {TABLE}\n"
    _sys.run(["nft", "-f", "-"], "deleting nftables table", input=script)


def read(wg_ifname: str) -> tuple[frozenset[IPv6Network], bool]:
    """(the pairs in the kernel, whether everything else equals ``render_table``).

    No table: no pairs, not ok. A pair element that is not ``N . N`` also makes it not ok, so
    the planner rewrites the table.
    """
    doc = _list()
    if doc is None:
        return frozenset(), False
    pairs, odd = _pairs(doc)
    return pairs, not odd and _shape(doc) == _reference(wg_ifname)


def read_pairs() -> tuple[frozenset[IPv6Network], bool]:
    """(the pairs, whether some element is not of the ``N . N`` shape)."""
    doc = _list()
    return (frozenset(), False) if doc is None else _pairs(doc)


def _elements(networks: Iterable[IPv6Network]) -> str:
    nets = sorted(set(networks), key=lambda n: (int(n.network_address), n.prefixlen))
    return ", ".join(f"{n} . {n}" for n in nets)


def _list() -> dict[str, Any] | None:
    code, out, err = _sys.try_run(["nft", "-j", "list", "table", *TABLE.split()], "reading nft")
    if code != 0:
        if "No such file or directory" in err:
            return None
        raise SixpnError(f"reading nftables table {TABLE}: {err.strip()[-800:]}")
    doc: dict[str, Any] = json.loads(out)
    return doc


def _pairs(doc: dict[str, Any]) -> tuple[frozenset[IPv6Network], bool]:
    found: set[IPv6Network] = set()
    odd = False
    for obj in doc.get("nftables", []):
        nft_set = obj.get("set")
        if not nft_set or nft_set.get("name") != SET:
            continue
        for elem in nft_set.get("elem", []):
            halves = elem.get("concat") if isinstance(elem, dict) else None
            nets = [_network(h) for h in halves] if isinstance(halves, list) else []
            if len(nets) == 2 and nets[0] is not None and nets[0] == nets[1]:
                found.add(nets[0])
            else:
                odd = True
    return frozenset(found), odd


def _network(value: Any) -> IPv6Network | None:
    try:
        if isinstance(value, str):
            return IPv6Network(value)
        if isinstance(value, dict) and "prefix" in value:
            return IPv6Network(f"{value['prefix']['addr']}/{value['prefix']['len']}")
    except (ValueError, KeyError, TypeError):
        return None
    return None


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

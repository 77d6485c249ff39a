"""`sixpn wireguard doctor`'s core: parsing wg-quick files and `wg show all dump`, the findings
and who wins (core/wgdoctor.py)."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixpn.core.wgdoctor import (
    Finding,
    PeerClaim,
    Source,
    check,
    interface_name_of,
    parse_wg_dump,
    parse_wg_quick,
    select_sources,
)
from sixpn.model.errors import InvalidInput

pytestmark = pytest.mark.unit

PRIVATE = "mEAUbP+VfaQsG2Cxc40k1sO6s4B0NtH2fLOvnuE46FM="
K1 = "PZukvQtMOrWDN/2uDjjDMnR+ruwG29eI5Yhmd/ADKTo="
K2 = "hzz0mWisf5OW8DiO8FNPZ2lYe3ntq0uOHro3+6DzNn4="
K3 = "lQrU0ibCYmhf25aZuQ6eGFET9P6Cqq4ykcpU/dER4EI="


def conf(*peers: tuple[str, str], interface: str = "") -> str:
    """A wg-quick file like the ones sixpn writes, one [Peer] per (key, AllowedIPs)."""
    lines = ["[Interface]", f"PrivateKey = {PRIVATE}", "Address = fdaa:0:1:0:a::102/120"]
    lines += interface.splitlines()
    for key, allowed in peers:
        lines += ["", "[Peer]", f"PublicKey = {key}", f"AllowedIPs = {allowed}"]
        lines += ["Endpoint = 203.0.113.7:51820", "PersistentKeepalive = 15"]
    return "\n".join(lines) + "\n"


def src(name: str, *peers: tuple[str, str], interface: str = "") -> Source:
    return parse_wg_quick(conf(*peers, interface=interface), name)


def nets(*texts: str) -> tuple[object, ...]:
    return tuple(ip_network(t) for t in texts)


# parsing wg-quick files


def test_parses_the_file_sixpn_writes() -> None:
    source = src("/etc/wireguard/wg6pn.conf", (K1, "fdaa:0:1::/48"), interface="DNS = fdaa:0:1::3")
    assert source.kind == "file"
    assert source.ifname == "wg6pn"
    assert source.table == "auto"
    assert source.dns == ("fdaa:0:1::3",)
    assert source.peers == (PeerClaim(K1, nets("fdaa:0:1::/48"), 0),)  # type: ignore[arg-type]
    assert PRIVATE not in repr(source)  # secrets are never kept


def test_comments_blanks_case_and_multi_line_allowed_ips() -> None:
    text = (
        "# a laptop\n"
        "[interface]   # section names are case-insensitive too\n"
        f"privatekey={PRIVATE}\n"
        "TABLE = off\n"
        "\n"
        "[PEER]\n"
        f"  publicKey = {K1}   # the gateway\n"
        "allowedips = fdaa:0:1::/48,  10.0.0.0/8 # two at once\n"
        "Allowed IPs = 192.168.1.7\n"  # wg drops every blank: this is AllowedIPs too
        "ALLOWEDIPS = fdaa:0:2::1/48\n"  # host bits: wg warns, the kernel masks them
        "AllowedIPs =\n"
    )
    source = parse_wg_quick(text, "x.conf")
    assert source.table == "off"
    (peer,) = source.peers
    assert peer.public_key == K1
    assert peer.allowed_ips == nets(
        "fdaa:0:1::/48", "10.0.0.0/8", "192.168.1.7/32", "fdaa:0:2::/48"
    )


def test_a_repeated_peer_section_replaces_the_earlier_one() -> None:
    source = src("x.conf", (K1, "fdaa:0:1::/48"), (K2, "fdaa:0:2::/48"), (K1, "fdaa:0:3::/48"))
    assert [(p.public_key, p.index) for p in source.peers] == [(K2, 1), (K1, 2)]
    assert source.peers[1].allowed_ips == nets("fdaa:0:3::/48")


def test_plus_and_minus_entries() -> None:
    source = src("x.conf", (K1, "+fdaa:0:1::/48, -fdaa:0:2::/48"))
    assert source.peers[0].allowed_ips == nets("fdaa:0:1::/48")


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("[Interface]\n[Peers]\n", 2, "unknown section"),
        ("[Interface]\n[Peer]\nPublicKey = K\nAllowedIPs = fdaa::/480\n", 4, "'fdaa::/480'"),
        ("[Interface]\n[Peer]\nPublicKey = K\nAllowedIPs = fdaa::/48,\n", 4, "'' in AllowedIPs"),
        ("[Interface]\n[Peer]\nPublicKey = K\nAllowedIPs = example.com/32\n", 4, "not an IP"),
        (f"[Interface]\n{PRIVATE[:-1]}\n", 2, "expected 'Key = value'"),
        ("Address = fdaa::1/128\n[Interface]\n", 1, "before any [Interface]"),
        ("[Interface]\n\n[Peer]\nAllowedIPs = fdaa::/48\n", 3, "no PublicKey"),
    ],
)
def test_bad_input_names_the_file_and_line(text: str, line: int, what: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_wg_quick(text, "bad.conf")
    assert caught.value.message.startswith(f"bad.conf, line {line}: ")
    assert what in caught.value.message
    assert PRIVATE[:-1] not in caught.value.message  # a stray key is never echoed


def test_no_interface_section() -> None:
    with pytest.raises(InvalidInput, match=r"notes\.txt: no \[Interface\]"):
        parse_wg_quick(f"[Peer]\nPublicKey = {K1}\n", "notes.txt")


def test_interface_name_of() -> None:
    assert interface_name_of("/etc/wireguard/wg0.conf") == "wg0"
    assert interface_name_of("laptop.conf") == "laptop"
    assert interface_name_of("a-name-far-too-long.conf") is None
    assert interface_name_of("wg0.txt") is None


# parsing `wg show all dump`

DUMP = "\n".join(
    [
        f"wg0\t{PRIVATE}\t{K3}\t51820\toff",
        f"wg0\t{K1}\t(none)\t203.0.113.7:51820\tfdaa:0:1::/48,fdaa:0:1:2::/64\t1700000000\t1\t2\t15",
        f"wg0\t{K2}\t(none)\t(none)\t(none)\t0\t0\t0\toff",
        f"wg1\t{PRIVATE}\t{K2}\t51821\t0xca6c",
        f"wg1\t{K3}\t{PRIVATE}\t[2001:db8::1]:51820\t0.0.0.0/0,::/0\t0\t0\t0\toff",
    ]
)


def test_parses_the_dump() -> None:
    wg0, wg1 = parse_wg_dump(DUMP + "\n")
    assert (wg0.name, wg0.kind, wg0.ifname, wg0.table) == ("wg0", "interface", "wg0", None)
    assert wg0.peers == (
        PeerClaim(K1, nets("fdaa:0:1::/48", "fdaa:0:1:2::/64"), 0),  # type: ignore[arg-type]
        PeerClaim(K2, (), 1),
    )
    assert wg1.peers == (PeerClaim(K3, nets("0.0.0.0/0", "::/0"), 0),)  # type: ignore[arg-type]
    assert PRIVATE not in repr([wg0, wg1])
    assert parse_wg_dump("") == []


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("wg0\tonly\tthree", "expected 5 or 9 tab-separated fields, not 3"),
        (f"wg0\t{K1}\t(none)\t(none)\tfdaa::/48\t0\t0\t0\toff", "before its interface line"),
        (f"wg0\tp\tk\t1\toff\nwg0\t{K1}\t(none)\t(none)\tnope\t0\t0\t0\toff", "'nope'"),
    ],
)
def test_bad_dump(text: str, what: str) -> None:
    with pytest.raises(InvalidInput, match="wg show all dump, line"):
        parse_wg_dump(text)
    with pytest.raises(InvalidInput) as caught:
        parse_wg_dump(text)
    assert what in caught.value.message


def test_an_interface_named_like_a_file_is_checked_as_the_file() -> None:
    files = [src("/etc/wireguard/wg0.conf", (K1, "fdaa:0:1::/48"))]
    wg0, wg1 = parse_wg_dump(DUMP)
    sources, notes = select_sources(files, [wg0, wg1])
    assert [s.name for s in sources] == ["/etc/wireguard/wg0.conf", "wg1"]
    assert notes == [
        "interface wg0: checked as /etc/wireguard/wg0.conf, which brings up that interface"
    ]


# findings and who wins


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, findings
    return findings[0]


def test_a_clean_setup_has_no_findings() -> None:
    assert check([src("a.conf", (K1, "fdaa:0:1::/48")), src("b.conf", (K2, "fdaa:0:2::/48"))]) == []
    # a full tunnel alone: its two /0s are of different families
    assert check([src("vpn.conf", (K1, "0.0.0.0/0, ::/0"))]) == []
    # an IPv4 /0 does not cover an IPv6 network
    assert check([src("vpn.conf", (K1, "0.0.0.0/0")), src("a.conf", (K2, "fdaa:0:1::/48"))]) == []


def test_two_files_for_the_same_network() -> None:
    a, b = src("a.conf", (K1, "fdaa:0:1::/48")), src("b.conf", (K2, "fdaa:0:1::/48"))
    found = only(check([a, b]))
    assert found.kind == "identical"
    assert (found.a.source.name, found.b.source.name) == ("a.conf", "b.conf")
    assert found.winner is None  # the one brought up first
    assert "brought up first keeps it" in found.wins
    assert "ip -6 route add fdaa:0:1::/48" in found.wins
    assert "File exists" in found.wins
    assert "remove fdaa:0:1::/48 from one of file a.conf and file b.conf" in found.fix


def test_identical_between_a_file_and_a_running_interface() -> None:
    (wg0, _) = parse_wg_dump(DUMP)
    findings = check([src("a.conf", (K2, "fdaa:0:1::/48")), wg0])
    found = only([f for f in findings if f.kind == "identical"])
    assert found.kind == "identical"
    assert "interface wg0 is up and holds it" in found.wins
    assert "`wg-quick up a.conf` would fail" in found.wins


def test_nested_across_files_goes_by_longest_prefix() -> None:
    wide, narrow = src("a.conf", (K1, "fdaa:0:1::/48")), src("b.conf", (K2, "fdaa:0:1:2::/64"))
    for order in ([wide, narrow], [narrow, wide]):
        found = only(check(order))
        assert found.kind == "nested"
        assert str(found.a.prefix) == "fdaa:0:1::/48"
        assert str(found.b.prefix) == "fdaa:0:1:2::/64"
        assert found.winner == "b"
        assert "packets to fdaa:0:1:2::/64 go to file b.conf" in found.wins


def test_a_default_route_tunnel_beside_a_network() -> None:
    vpn = src("vpn.conf", (K1, "0.0.0.0/0, ::/0"), interface="DNS = 1.1.1.1")
    net = src("a.conf", (K2, "fdaa:0:1::/48"), interface="DNS = fdaa:0:1::3")
    found = only(check([net, vpn]))
    assert found.kind == "default-route"
    assert found.a.source is vpn
    assert str(found.a.prefix) == "::/0"
    assert found.winner == "b"  # while a.conf is up: wg-quick's policy routing
    assert "suppress_prefixlength 0" in found.wins
    assert "whenever file a.conf is down" in found.wins
    assert "resolvconf -x" in found.wins
    assert "1.1.1.1" in found.wins
    assert "Table = off" in found.fix


def test_the_default_route_wins_when_the_network_has_no_main_route() -> None:
    vpn = src("vpn.conf", (K1, "::/0"))
    for table in ("off", "1234"):
        net = src("a.conf", (K2, "fdaa:0:1::/48"), interface=f"Table = {table}")
        found = only(check([vpn, net]))
        assert found.kind == "default-route"
        assert found.winner == "a", table


def test_table_off_on_the_wider_claim_shadows_nothing() -> None:
    vpn = src("vpn.conf", (K1, "::/0"), interface="Table = off")
    assert check([vpn, src("a.conf", (K2, "fdaa:0:1::/48"))]) == []


def test_identical_with_one_side_table_off_is_carried_by_the_other() -> None:
    off = src("a.conf", (K1, "fdaa:0:1::/48"), interface="Table = off")
    found = only(check([off, src("b.conf", (K2, "fdaa:0:1::/48"))]))
    assert found.a.source.name == "b.conf"
    assert found.winner == "a"
    assert "file a.conf has Table = off" in found.wins


def test_routes_in_different_tables() -> None:
    a = src("a.conf", (K1, "fdaa:0:1::/48"))
    b = src("b.conf", (K2, "fdaa:0:1:2::/64"), interface="Table = 1234")
    found = only(check([a, b]))
    assert found.winner == "a"  # the main table holds only a.conf's route
    assert "different tables (main, 1234)" in found.wins


def test_two_default_route_tunnels() -> None:
    found = only(check([src("v1.conf", (K1, "::/0")), src("v2.conf", (K2, "::/0"))]))
    assert found.kind == "identical"
    assert found.winner is None
    assert "brought up last" in found.wins


def test_identical_inside_one_file_belongs_to_the_peer_that_claims_it_last() -> None:
    source = src("wg0.conf", (K1, "fdaa:0:1::/48"), (K2, "fdaa:0:1::/48"))
    found = only(check([source]))
    assert found.kind == "identical"
    assert found.b.peer.public_key == K2
    assert found.winner == "b"
    assert "peer 2" in found.wins
    assert "peer 1" in found.wins
    assert "loses it" in found.wins


def test_nested_and_default_route_inside_one_interface_go_by_longest_prefix() -> None:
    source = src("wg0.conf", (K1, "::/0"), (K2, "fdaa:0:1::/48"), (K3, "fdaa:0:1:2::/64"))
    found = check([source])
    assert [(f.kind, str(f.a.prefix), str(f.b.prefix)) for f in found] == [
        ("default-route", "::/0", "fdaa:0:1::/48"),
        ("default-route", "::/0", "fdaa:0:1:2::/64"),
        ("nested", "fdaa:0:1::/48", "fdaa:0:1:2::/64"),
    ]
    assert all(f.winner == "b" for f in found)
    assert "inside file wg0.conf the longest prefix wins" in found[2].wins


def test_a_running_interface_with_a_peers_own_nesting() -> None:
    (wg0, _) = parse_wg_dump(DUMP)
    found = only(check([wg0]))
    assert found.kind == "nested"
    assert found.a.source.label == "interface wg0"


def test_a_single_peers_own_prefixes_nesting() -> None:
    found = only(check([src("a.conf", (K1, "fdaa:0:1::/48, fdaa:0:1:2::/64"))]))
    assert found.kind == "nested"
    assert found.a.peer is found.b.peer
    assert "same peer either way" in found.wins
    assert "drop the redundant fdaa:0:1:2::/64" in found.fix


# the sweep finds exactly the overlapping pairs

PREFIXES = st.builds(
    lambda addr, length: ip_network(f"fdaa::{addr:x}/{112 + length}", strict=False),
    st.integers(0, 0xFFFF),
    st.integers(0, 16),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(PREFIXES, min_size=1, max_size=4), min_size=1, max_size=6))
def test_check_reports_every_overlapping_pair_once(peers: list[list[object]]) -> None:
    keys = [f"{i:043d}=" for i in range(len(peers))]
    sources = [
        Source(f"s{i % 2}", "file", (PeerClaim(keys[i], tuple(p), i),))  # type: ignore[arg-type]
        for i, p in enumerate(peers)
    ]
    claims = [(k, n) for k, p in zip(keys, peers, strict=True) for n in p]
    expected = sorted(
        tuple(sorted([(k1, str(n1)), (k2, str(n2))]))
        for i, (k1, n1) in enumerate(claims)
        for (k2, n2) in claims[i + 1 :]
        if n1.overlaps(n2)  # type: ignore[attr-defined]
    )
    got = sorted(
        tuple(
            sorted([(f.a.peer.public_key, str(f.a.prefix)), (f.b.peer.public_key, str(f.b.prefix))])
        )
        for f in check(sources)
    )
    assert got == expected

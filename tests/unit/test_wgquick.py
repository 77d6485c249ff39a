"""The wg-quick file of a peer (SPEC section 5): exact lines, and it parses back."""

from __future__ import annotations

import configparser

import pytest

from sixpn.core import addressing
from sixpn.core.wgquick import render_wg_quick
from sixpn.model.errors import InvalidInput

pytestmark = pytest.mark.unit

PRIVATE = "mEAUbP+VfaQsG2Cxc40k1sO6s4B0NtH2fLOvnuE46FM="
PUBLIC = "PZukvQtMOrWDN/2uDjjDMnR+ruwG29eI5Yhmd/ADKTo="
GATEWAY = "hzz0mWisf5OW8DiO8FNPZ2lYe3ntq0uOHro3+6DzNn4="


def render(**overrides: object) -> str:
    args: dict[str, object] = {
        "private_key": PRIVATE,
        "address": addressing.peer_address(0x18, 0x0A7B007D, 1),
        "dns": addressing.network_service_address(0x18),
        "gateway_public_key": GATEWAY,
        "allowed_ips": addressing.network_prefix(0x18),
        "endpoint": "203.0.113.7:51820",
    }
    args.update(overrides)
    return render_wg_quick(**args)  # type: ignore[arg-type]


def test_exact_lines() -> None:
    assert render().splitlines() == [
        "[Interface]",
        f"PrivateKey = {PRIVATE}",
        "Address = fdaa:0:18:a7b:7d:0:a:102/120",
        "DNS = fdaa:0:18::3",
        "",
        "[Peer]",
        f"PublicKey = {GATEWAY}",
        "AllowedIPs = fdaa:0:18::/48",
        "Endpoint = 203.0.113.7:51820",
        "PersistentKeepalive = 15",
    ]
    assert render().endswith("PersistentKeepalive = 15\n")


def test_strings_are_accepted_and_normalised() -> None:
    text = render(
        address="FDAA:0:18:A7B:7D:0:A:102", dns="fdaa:0:18:0::3", allowed_ips="fdaa:0:18::/48"
    )
    assert "Address = fdaa:0:18:a7b:7d:0:a:102/120\n" in text
    assert "DNS = fdaa:0:18::3\n" in text


def test_parses_back_with_configparser() -> None:
    parser = configparser.ConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep wg-quick's case
    parser.read_string(render(header="sixpn WireGuard peer laptop of acme/default\nsecond line"))
    assert parser.sections() == ["Interface", "Peer"]
    assert dict(parser["Interface"]) == {
        "PrivateKey": PRIVATE,
        "Address": "fdaa:0:18:a7b:7d:0:a:102/120",
        "DNS": "fdaa:0:18::3",
    }
    assert dict(parser["Peer"]) == {
        "PublicKey": GATEWAY,
        "AllowedIPs": "fdaa:0:18::/48",
        "Endpoint": "203.0.113.7:51820",
        "PersistentKeepalive": "15",
    }


def test_header_lines_are_comments() -> None:
    lines = render(header="peer laptop\nof acme").splitlines()
    assert lines[:3] == ["# peer laptop", "# of acme", "[Interface]"]


def test_without_private_key_the_line_is_a_placeholder_comment() -> None:
    text = render(private_key=None, public_key=PUBLIC)
    placeholder = f"# PrivateKey = <your private key of public key {PUBLIC}: sixpn never sees it>"
    assert placeholder in text.splitlines()
    parser = configparser.ConfigParser()
    parser.read_string(text)
    assert "privatekey" not in parser["Interface"]


def test_ipv6_endpoint_keeps_brackets() -> None:
    assert "Endpoint = [2001:db8::1]:51820\n" in render(endpoint="[2001:db8::1]:51820")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"private_key": "not-a-key"}, "private_key"),
        ({"private_key": PRIVATE + "\n[Peer]"}, "private_key"),
        ({"gateway_public_key": "x" * 44}, "gateway_public_key"),
        ({"endpoint": "203.0.113.7"}, "endpoint"),
        ({"endpoint": "evil\nPostUp = rm -rf /:51820"}, "endpoint"),
        ({"address": "10.0.0.1"}, "address"),
        ({"dns": "nope"}, "dns"),
        ({"allowed_ips": "fdaa:0:18::1/48"}, "allowed_ips"),
        ({"keepalive": -1}, "keepalive"),
    ],
)
def test_bad_values_are_refused_naming_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        render(**overrides)
    assert err.value.field == field


def test_a_server_peer_keeps_its_resolver_and_gets_an_mtu() -> None:
    """SPEC 6: the instance in a VPC must keep the VPC's resolver (its RDS endpoint) and fit
    the internet path to the gateway; the DNS address stays visible as a comment."""
    text = render(use_dns=False, mtu=1420)
    lines = text.splitlines()
    assert "DNS = fdaa:0:18::3" not in lines
    assert "# DNS = fdaa:0:18::3  (left out: .internal names resolve there)" in lines
    assert lines[lines.index("[Peer]") - 2] == "MTU = 1420"
    parser = configparser.ConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    assert dict(parser["Interface"]).keys() == {"PrivateKey", "Address", "MTU"}


@pytest.mark.parametrize("mtu", [1279, 9001, 0, True])
def test_an_mtu_out_of_range_is_refused(mtu: object) -> None:
    with pytest.raises(InvalidInput) as info:
        render(mtu=mtu)
    assert info.value.field == "mtu"

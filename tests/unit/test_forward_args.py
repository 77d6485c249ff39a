"""`sixpn forward` arguments: LISTEN and TARGET grammar, limits, the error for each bad value."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from sixpn.cli.main import cli
from sixpn.forward import Endpoint, check_limits, parse_listen, parse_target
from sixpn.model.errors import InvalidInput

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("[::]:5432", Endpoint("::", 5432)),
        ("[fdaa:0:1::2]:80", Endpoint("fdaa:0:1::2", 80)),
        ("[FDAA::0002]:80", Endpoint("fdaa::2", 80)),
        ("127.0.0.1:0", Endpoint("127.0.0.1", 0)),
        ("0.0.0.0:65535", Endpoint("0.0.0.0", 65535)),
        (":5432", Endpoint("::", 5432)),
    ],
)
def test_listen_accepts(value: str, expected: Endpoint) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("5432", "no port given"),
        ("[::]", "expected [IPV6]:PORT"),
        ("[::]5432", "expected [IPV6]:PORT"),
        ("::1:5432", "in brackets"),
        ("localhost:5432", "not an IP address"),
        ("[127.0.0.1]:80", "write IPv6 as"),
        ("[::1]:65536", "port must be 0..65535"),
        ("[::1]:-1", "port must be"),
        ("[::1]:http", "port must be"),
        ("127.0.0.1:", "port must be"),
    ],
)
def test_listen_refuses(value: str, says: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_listen(value)
    assert repr(value) in info.value.message
    assert says in info.value.message
    assert info.value.field == "listen"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("db.abc.rds.amazonaws.com:5432", Endpoint("db.abc.rds.amazonaws.com", 5432)),
        ("localhost:1", Endpoint("localhost", 1)),
        ("10.0.0.5:5432", Endpoint("10.0.0.5", 5432)),
        ("[2600:1f18::5]:5432", Endpoint("2600:1f18::5", 5432)),
        ("db-1.internal.:80", Endpoint("db-1.internal.", 80)),
    ],
)
def test_target_accepts(value: str, expected: Endpoint) -> None:
    assert parse_target(value) == expected


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("db.example.com", "no port given"),
        ("db.example.com:0", "port must be 1..65535"),
        ("db.example.com:99999", "port must be 1..65535"),
        ("2600:1f18::5:5432", "in brackets"),
        ("[10.0.0.5]:5432", "not an IPv6 address"),
        ("[nonsense]:5432", "not an IPv6 address"),
        ("db example.com:5432", "neither an IPv4 address nor a DNS name"),
        (":5432", "neither an IPv4 address nor a DNS name"),
        ("-db.example.com:5432", "neither"),
        ("db..example.com:5432", "neither"),
        ("a" * 300 + "!:5432", "neither"),  # and quickly: no regex backtracking
    ],
)
def test_target_refuses(value: str, says: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_target(value)
    assert repr(value) in info.value.message
    assert says in info.value.message


def test_endpoint_prints_ipv6_in_brackets() -> None:
    assert str(Endpoint("::", 5432)) == "[::]:5432"
    assert str(Endpoint("db.example.com", 5432)) == "db.example.com:5432"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((0, 0.0, 1.0), "--max-connections 0"),
        ((1, -1.0, 1.0), "--idle-timeout"),
        ((1, 0.0, -2.0), "--grace"),
    ],
)
def test_limits_refused(args: tuple[int, float, float], says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        check_limits(*args)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["localhost:5432", "db:5432"], "listen 'localhost:5432'"),
        (["[::]:5432", "db"], "target 'db'"),
        (["[::]:5432", "db:5432", "--max-connections", "0"], "--max-connections 0"),
    ],
)
def test_cli_exits_2_naming_the_value(argv: list[str], says: str) -> None:
    result = CliRunner().invoke(cli, ["forward", *argv])
    assert result.exit_code == 2
    assert says in result.output

"""Reading queries and writing answers on the wire: every rcode path, and no input crashes."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixpn.core import dnswire

pytestmark = pytest.mark.unit


def wire(name: str = "web.internal", qtype: str = "AAAA", **kw: object) -> bytes:
    return dns.message.make_query(name, qtype, **kw).to_wire()  # type: ignore[arg-type]


def test_a_plain_query_is_read() -> None:
    parsed = dnswire.parse_query(wire("Web.Internal"))
    assert isinstance(parsed, tuple)
    qend, qname, qtype, edns = parsed
    assert qname == b"\x03web\x08internal\x00"
    assert qtype == dnswire.QTYPE_AAAA
    assert edns == 0
    assert qend == 12 + len(qname) + 4


def test_edns_size_is_read_and_never_below_512() -> None:
    parsed = dnswire.parse_query(wire(use_edns=0, payload=4096))
    assert isinstance(parsed, tuple)
    assert parsed[3] == 4096
    parsed = dnswire.parse_query(wire(use_edns=0, payload=100))
    assert isinstance(parsed, tuple)
    assert parsed[3] == 512
    assert dnswire.udp_limit(4096) == dnswire.OUR_UDP_SIZE
    assert dnswire.udp_limit(0) == 512


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x00" * 11, None),  # no header
        (dns.message.make_response(dns.message.make_query("a.internal", "A")).to_wire(), None),
        (b"\x12\x34\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00", dnswire.FORMERR),  # qdcount 2
        (b"\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05ab", dnswire.FORMERR),  # cut name
        (
            b"\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",
            dnswire.FORMERR,
        ),
        (b"\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01", dnswire.FORMERR),
    ],
    ids=["short", "response", "qdcount-2", "cut-name", "pointer", "cut-type"],
)
def test_malformed_queries(data: bytes, expected: int | None) -> None:
    assert dnswire.parse_query(data) == expected


def test_other_opcodes_classes_and_edns_versions() -> None:
    notify = dns.message.make_query("web.internal", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    assert dnswire.parse_query(notify.to_wire()) == dnswire.NOTIMP
    chaos = dns.message.make_query("version.bind", "TXT", rdclass="CH")
    assert dnswire.parse_query(chaos.to_wire()) == dnswire.REFUSED
    future = dns.message.make_query("web.internal", "AAAA", use_edns=1)
    assert dnswire.parse_query(future.to_wire()) == dnswire.BADVERS
    reply = dns.message.from_wire(dnswire.error_response(future.to_wire(), dnswire.BADVERS))
    assert reply.rcode() == dns.rcode.BADVERS
    assert reply.id == future.id


@pytest.mark.parametrize("rcode", [dnswire.FORMERR, dnswire.SERVFAIL, dnswire.REFUSED])
def test_error_responses_are_valid_dns(rcode: int) -> None:
    query = dns.message.make_query("x.internal", "AAAA")
    query.flags |= dns.flags.RD
    reply = dns.message.from_wire(dnswire.error_response(query.to_wire(), rcode))
    assert reply.id == query.id
    assert reply.rcode() == rcode
    assert reply.flags & dns.flags.QR
    assert reply.flags & dns.flags.RD


def test_truncation_keeps_the_question_and_edns() -> None:
    entry = dnswire.build_entry(b"\x03web\x08internal\x00", 28, rcode=0, txt="x" * 2000)
    data = wire(use_edns=0, payload=1232)
    parsed = dnswire.parse_query(data)
    assert isinstance(parsed, tuple)
    out = dnswire.respond(data, parsed[0], parsed[3], entry, 1232)
    reply = dns.message.from_wire(out)
    assert reply.flags & dns.flags.TC
    assert reply.edns == 0
    assert reply.question[0].name.to_text() == "web.internal."


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=300))
def test_no_input_crashes_the_reader(data: bytes) -> None:
    parsed = dnswire.parse_query(data)
    if isinstance(parsed, int):
        out = dnswire.error_response(data, parsed)
        assert out[:2] == data[:2]
        assert out[2] & 0x80  # QR: an answer, never a query echoed back
    elif parsed is not None:
        assert parsed[0] <= len(data)


@settings(max_examples=2000, deadline=None)
@given(st.data())
def test_mutated_valid_queries_never_crash(data: st.DataObject) -> None:
    base = bytearray(wire("a.b.internal", use_edns=0))
    for _ in range(data.draw(st.integers(1, 5))):
        base[data.draw(st.integers(0, len(base) - 1))] = data.draw(st.integers(0, 255))
    parsed = dnswire.parse_query(bytes(base))
    if isinstance(parsed, tuple):
        entry = dnswire.build_entry(b"\x01a\x01b\x08internal\x00", 28, rcode=3)
        dnswire.respond(bytes(base), parsed[0], parsed[3], entry, 512)


def answer_over(query: bytes, entry: dnswire.Entry, *, tcp: bool) -> dns.message.Message:
    parsed = dnswire.parse_query(query)
    assert isinstance(parsed, tuple)
    qend, _, _, edns = parsed
    limit = dnswire.MAX_MESSAGE if tcp else dnswire.udp_limit(edns)
    out = dnswire.respond(query, qend, edns, entry, limit)
    assert len(out) <= dnswire.MAX_MESSAGE
    return dns.message.from_wire(out)


def test_an_answer_too_large_for_dns_keeps_what_fits_and_stays_valid() -> None:
    """5,000 machines in one app: AAAA answers hold the first ~2,300 addresses; a listing holds
    its first whole rows; over UDP both say "ask over TCP"; nothing raises."""
    from ipaddress import IPv6Address

    query = wire("big.internal", use_edns=0, payload=1232)
    addresses = tuple(IPv6Address(f"fdaa:0:1:0:3:{i:x}:1:2") for i in range(5000))
    qname = b"\x03big\x08internal\x00"
    entry = dnswire.build_entry(qname, dnswire.QTYPE_AAAA, rcode=dnswire.NOERROR, aaaa=addresses)
    whole = answer_over(query, entry, tcp=True)
    got = [IPv6Address(r.address) for r in whole.answer[0]]
    assert 2000 < len(got) < 2400
    assert set(got) == set(addresses[: len(got)])  # the first ones (the wire order is its own)
    assert answer_over(query, entry, tcp=False).flags & dns.flags.TC

    rows = [f"instance={i:014x},app=web,ip=fdaa:0:1::{i:x},region=fra" for i in range(5000)]
    listing = wire("_instances.internal", "TXT", use_edns=0, payload=1232)
    qname = b"\x0a_instances\x08internal\x00"
    entry = dnswire.build_entry(
        qname, dnswire.QTYPE_TXT, rcode=dnswire.NOERROR, txt=";".join(rows), txt_sep=";"
    )
    whole = answer_over(listing, entry, tcp=True)
    (record,) = whole.answer[0]
    kept = b"".join(record.strings).decode().split(";")
    assert 500 < len(kept) < len(rows)
    assert kept == rows[: len(kept)]  # whole rows, the first ones
    assert answer_over(listing, entry, tcp=False).flags & dns.flags.TC

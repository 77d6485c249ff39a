"""DNS on the wire for the hot path: reading a query, and answers pre-encoded once.

An answer is stored as an :class:`Entry`: the header's counts and rcode, and the *tail*, the
bytes that follow the question. A response is then ``id + flags + counts + the client's own
question bytes + tail (+ OPT)``, with no parsing or building per query. The tail is rendered by
dnspython for the lowercased question: its compression pointers point into the question, which
the client's bytes replace with a name of identical layout. So the owner names of the answer
echo the question's case exactly (SPEC 4.2), for free.

Query handling follows RFC 1035 4.1, RFC 6891 (EDNS(0): the client's UDP size, BADVERS for
version > 0, our OPT in every answer to an EDNS query) and RFC 2308 (negative answers carry the
zone's SOA in the authority section).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

QTYPE_A = 1
QTYPE_TXT = 16
QTYPE_AAAA = 28
QTYPE_OPT = 41
QTYPE_ANY = 255
QCLASS_IN = 1

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16

OUR_UDP_SIZE = 1232  # DNS flag day 2020: avoids IP fragmentation on every path
PLAIN_UDP_LIMIT = 512  # without EDNS (RFC 1035 4.2.1)
SUFFIX = b"\x08internal\x00"
ZONE = dns.name.from_text("internal.")


# What the hot path needs of a well-formed query, as a plain tuple (a dataclass costs ~1.5 us
# to build, a tuple 0.07): (qend: offset just past QTYPE/QCLASS, qname: the question name on
# the wire with its final zero, lowercased, qtype, edns_size: 0 without EDNS, else the client's
# UDP payload size, at least 512).
Query = tuple[int, bytes, int, int]


@dataclass(frozen=True, slots=True)
class Entry:
    """A pre-encoded answer: header counts for plain and EDNS responses, rcode, tail."""

    rcode: int
    counts: bytes  # QD, AN, NS, AR (8 bytes) for a response without OPT
    counts_edns: bytes  # the same with one more additional record (our OPT)
    tail: bytes


def parse_query(data: bytes) -> Query | int | None:
    """A query's question and EDNS size; an rcode to answer with; None to drop it.

    Drops what has no readable header or is itself a response; FORMERR for a question that
    cannot be read; NOTIMP for opcodes other than QUERY; REFUSED for classes other than IN;
    BADVERS for EDNS versions other than 0.
    """
    n = len(data)
    if n < 12 or data[2] & 0x80:
        return None
    if data[2] & 0x78:
        return NOTIMP
    if data[4] or data[5] != 1:
        return FORMERR
    i = 12
    while True:
        if i >= n:
            return FORMERR
        length = data[i]
        if length == 0:
            i += 1
            break
        if length > 63:  # a compression pointer or reserved label type: not in a question
            return FORMERR
        i += length + 1
    if i > 12 + 255 or i + 4 > n:
        return FORMERR
    qtype = (data[i] << 8) | data[i + 1]
    qclass = (data[i + 2] << 8) | data[i + 3]
    qend = i + 4
    edns_size = 0
    if data[10] or data[11]:  # additional records: the first may be our OPT
        if qend + 11 > n:
            return FORMERR
        if data[qend] == 0 and data[qend + 1] == 0 and data[qend + 2] == QTYPE_OPT:
            rdlen = (data[qend + 9] << 8) | data[qend + 10]
            if qend + 11 + rdlen > n:
                return FORMERR
            if data[qend + 6] != 0:
                return BADVERS
            edns_size = max(PLAIN_UDP_LIMIT, (data[qend + 3] << 8) | data[qend + 4])
    if qclass != QCLASS_IN:
        return REFUSED
    return (qend, data[12:i].lower(), qtype, edns_size)


def _opt(ext_rcode: int = 0) -> bytes:
    return b"\x00\x00\x29" + OUR_UDP_SIZE.to_bytes(2, "big") + bytes((ext_rcode, 0, 0, 0, 0, 0))


OPT = _opt()
OPT_BADVERS = _opt(BADVERS >> 4)


def _flags(data: bytes, rcode: int, *, tc: bool = False) -> bytes:
    # QR, opcode copied (always QUERY here), AA, TC, RD copied from the query; RA; rcode.
    return bytes((0x84 | (0x02 if tc else 0) | (data[2] & 0x01), 0x80 | (rcode & 0x0F)))


def respond(data: bytes, qend: int, edns_size: int, entry: Entry, limit: int) -> bytes:
    """The response to ``data`` from ``entry``; truncated (TC, no records) past ``limit``."""
    if edns_size:
        if qend + len(entry.tail) + 11 > limit:
            return truncated(data, qend, entry.rcode, edns=True)
        return (
            data[:2]
            + _flags(data, entry.rcode)
            + entry.counts_edns
            + data[12:qend]
            + entry.tail
            + OPT
        )
    if qend + len(entry.tail) > limit:
        return truncated(data, qend, entry.rcode, edns=False)
    return data[:2] + _flags(data, entry.rcode) + entry.counts + data[12:qend] + entry.tail


def truncated(data: bytes, qend: int, rcode: int, *, edns: bool) -> bytes:
    """Header and question of ``data`` with TC set: "ask again over TCP"."""
    counts = b"\x00\x01\x00\x00\x00\x00" + (b"\x00\x01" if edns else b"\x00\x00")
    head = data[:2] + _flags(data, rcode, tc=True) + counts + data[12:qend]
    return head + OPT if edns else head


def error_response(data: bytes, rcode: int) -> bytes:
    """A header-only answer with ``rcode`` (the question is not echoed: it may be unreadable)."""
    if rcode == BADVERS:
        return data[:2] + _flags(data, 0) + b"\x00\x00\x00\x00\x00\x00\x00\x01" + OPT_BADVERS
    return data[:2] + _flags(data, rcode) + b"\x00" * 8


def udp_limit(edns_size: int) -> int:
    return min(edns_size, OUR_UDP_SIZE) if edns_size else PLAIN_UDP_LIMIT


# --- building entries (when the state changes, never per query) ---------------------------------


def _soa(neg_ttl: int) -> dns.rrset.RRset:
    # RFC 2308 section 5: the negative TTL is min(SOA TTL, SOA MINIMUM): both are neg_ttl.
    return dns.rrset.from_text(
        ZONE, neg_ttl, "IN", "SOA", f"ns.internal. hostmaster.internal. 1 3600 600 86400 {neg_ttl}"
    )


MAX_MESSAGE = 65535  # a DNS message's size limit (TCP's length prefix; RFC 1035 4.2.2)
OPT_SIZE = 11  # the OPT record every answer may carry (``Entry.counts_edns``)
AAAA_RR_SIZE = 2 + 10 + 16  # a compressed owner name, type/class/TTL/length, the address


def fit_aaaa(qname: bytes, aaaa: tuple[IPv6Address, ...]) -> tuple[IPv6Address, ...]:
    """As many of ``aaaa`` as one message holds (about 2,300): an app with more machines
    answers with the first of them in the answer's order, never with an error (SPEC 4.2)."""
    room = MAX_MESSAGE - 12 - (len(qname) + 4) - OPT_SIZE
    return aaaa[: room // AAAA_RR_SIZE]


def fit_txt(qname: bytes, value: str, sep: str = ",") -> str:
    """``value`` cut after its last whole ``sep``-separated item that fits one message (one TXT
    record of 255-byte strings, each with its length byte): a listing too long for DNS holds its
    first items, never an error."""
    room = MAX_MESSAGE - 12 - (len(qname) + 4) - OPT_SIZE - (2 + 10)
    fits = room - -(-room // 256)  # the text, less one length byte per 255-byte string
    raw = value.encode()
    if len(raw) <= fits:
        return value
    cut = raw[: fits + 1].rfind(sep.encode())
    return raw[: max(cut, 0)].decode("utf-8", "ignore")


def txt_strings(value: str) -> tuple[bytes, ...]:
    """One TXT value as character-strings of at most 255 bytes (SPEC 4.2)."""
    raw = value.encode()
    return tuple(raw[i : i + 255] for i in range(0, len(raw), 255)) or (b"",)


def build_entry(
    qname: bytes,
    qtype: int,
    *,
    rcode: int,
    aaaa: tuple[IPv6Address, ...] = (),
    txt: str | None = None,
    txt_sep: str = ",",
    ttl: int = 5,
    neg_ttl: int = 5,
) -> Entry:
    """Render an answer for the question ``qname`` (lowercased wire form, with its final zero).
    An answer larger than one DNS message keeps what fits (``fit_aaaa``, ``fit_txt``)."""
    aaaa = fit_aaaa(qname, aaaa)
    txt = None if txt is None else fit_txt(qname, txt, txt_sep)
    name = dns.name.from_wire(qname, 0)[0]
    msg = dns.message.Message(id=0)
    msg.flags = dns.flags.QR | dns.flags.AA | dns.flags.RA
    msg.set_rcode(dns.rcode.Rcode.make(rcode))
    msg.question = [dns.rrset.RRset(name, dns.rdataclass.IN, dns.rdatatype.RdataType.make(qtype))]
    if aaaa:
        msg.answer.append(dns.rrset.from_text_list(name, ttl, "IN", "AAAA", [str(a) for a in aaaa]))
    elif txt is not None:
        rrset = dns.rrset.RRset(name, dns.rdataclass.IN, dns.rdatatype.TXT)
        rrset.add(
            dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, txt_strings(txt)), ttl
        )
        msg.answer.append(rrset)
    else:
        msg.authority.append(_soa(neg_ttl))
    wire = msg.to_wire(max_size=65535)
    qend = 12 + len(qname) + 4
    counts = wire[4:12]
    ar = int.from_bytes(counts[6:8], "big")
    return Entry(rcode, counts, counts[:6] + (ar + 1).to_bytes(2, "big"), wire[qend:])

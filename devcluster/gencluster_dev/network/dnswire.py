"""The DNS wire format (RFC 1035, EDNS0 of RFC 6891): the pure half of the cluster DNS server.

Only what a stub resolver's query and a small authoritative answer need: one question in, a
response with answer, authority and additional sections out. Queries are parsed strictly (a
malformed one gets FORMERR or no answer at all, never an exception out of the server); names
in responses are written uncompressed, which every resolver accepts, so the encoder stays
simple. A response that does not fit the client's limit (512 bytes, or its EDNS payload size)
is cut to its header and question with TC set, and the client retries over TCP, as RFC 7766
asks of a server.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

# Record types and classes the cluster DNS answers or recognises.
TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_PTR = 12
TYPE_TXT = 16
TYPE_AAAA = 28
TYPE_SRV = 33
TYPE_OPT = 41
TYPE_AXFR = 252
TYPE_IXFR = 251
CLASS_IN = 1

# Response codes.
NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5

#: The largest UDP response to a client that sent no EDNS record (RFC 1035 4.2.1).
CLASSIC_UDP_LIMIT = 512
#: The payload size this server advertises in its own OPT record (the DNS flag day value).
EDNS_PAYLOAD = 1232
#: A DNS message over TCP is at most this long (its two-byte length prefix).
TCP_MESSAGE_LIMIT = 65535

_HEADER = struct.Struct("!HHHHHH")
_FLAG_QR = 0x8000
_FLAG_AA = 0x0400
_FLAG_TC = 0x0200
_FLAG_RD = 0x0100
_FLAG_RA = 0x0080
_OPCODE_SHIFT = 11
_MAX_POINTER_JUMPS = 32


class DnsFormatError(ValueError):
    """A message that is not a well-formed DNS query."""


@dataclass(frozen=True)
class Query:
    """One parsed query: the header fields a response echoes and its single question."""

    id: int
    opcode: int
    recursion_desired: bool
    name: str
    """The question's name as the client wrote it (case kept), without the final dot."""
    qtype: int
    qclass: int
    edns_payload: int | None = None
    """The client's EDNS UDP payload size (None: it sent no OPT record)."""
    raw_question: bytes = b""
    """The question section as received, echoed byte for byte in the response."""

    def udp_limit(self) -> int:
        """The largest UDP response this client accepts."""
        if self.edns_payload is None:
            return CLASSIC_UDP_LIMIT
        return max(CLASSIC_UDP_LIMIT, min(self.edns_payload, EDNS_PAYLOAD))


@dataclass(frozen=True)
class Record:
    """A resource record with its RDATA already encoded."""

    name: str
    rtype: int
    ttl: int
    rdata: bytes
    rclass: int = CLASS_IN

    def encode(self) -> bytes:
        return (encode_name(self.name)
                + struct.pack("!HHIH", self.rtype, self.rclass, self.ttl, len(self.rdata))
                + self.rdata)


@dataclass(frozen=True)
class Response:
    """What a query gets: a response code and the records of each section."""

    rcode: int
    answers: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = field(default=())
    authoritative: bool = False


# -- names ------------------------------------------------------------------------------------

def encode_name(name: str) -> bytes:
    """A domain name as length-prefixed labels ending in the root label."""
    out = bytearray()
    text = name.rstrip(".")
    if text:
        for label in text.split("."):
            raw = label.encode("ascii", errors="strict")
            if not 0 < len(raw) <= 63:
                raise ValueError(f"invalid label {label!r} in {name!r}")
            out.append(len(raw))
            out += raw
    out.append(0)
    if len(out) > 255:
        raise ValueError(f"name {name!r} is longer than 255 bytes")
    return bytes(out)


def decode_name(message: bytes, offset: int) -> tuple[str, int]:
    """The name at `offset` (compression pointers followed) and the offset after it.

    Labels are read as latin-1 so any byte survives; the caller compares names
    case-insensitively, as DNS does for ASCII.
    """
    labels: list[str] = []
    end: int | None = None
    jumps = 0
    total = 0
    while True:
        if offset >= len(message):
            raise DnsFormatError("name runs past the end of the message")
        length = message[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(message):
                raise DnsFormatError("truncated compression pointer")
            if end is None:
                end = offset + 2
            jumps += 1
            if jumps > _MAX_POINTER_JUMPS:
                raise DnsFormatError("compression pointer loop")
            offset = ((length & 0x3F) << 8) | message[offset + 1]
            continue
        if length & 0xC0:
            raise DnsFormatError("unsupported label type")
        offset += 1
        if length == 0:
            break
        if offset + length > len(message):
            raise DnsFormatError("label runs past the end of the message")
        total += length + 1
        if total > 255:
            raise DnsFormatError("name longer than 255 bytes")
        labels.append(message[offset:offset + length].decode("latin-1"))
        offset += length
    return ".".join(labels), end if end is not None else offset


# -- queries ----------------------------------------------------------------------------------

def query_id(message: bytes) -> int | None:
    """The id of a message, if it has a header at all (to address a FORMERR to it)."""
    if len(message) < _HEADER.size:
        return None
    return int(struct.unpack_from("!H", message)[0])


def parse_query(message: bytes) -> Query:
    """The query in `message`; DnsFormatError if it is not a well-formed single-question query.

    An OPT record in the additional section gives the client's UDP payload size; other
    additional and authority records are skipped.
    """
    if len(message) < _HEADER.size:
        raise DnsFormatError("message shorter than a DNS header")
    ident, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(message)
    if flags & _FLAG_QR:
        raise DnsFormatError("a response, not a query")
    if qdcount != 1:
        raise DnsFormatError(f"{qdcount} questions (exactly one is supported)")
    name, offset = decode_name(message, _HEADER.size)
    if offset + 4 > len(message):
        raise DnsFormatError("truncated question")
    qtype, qclass = struct.unpack_from("!HH", message, offset)
    raw_question = message[_HEADER.size:offset + 4]
    offset += 4
    edns_payload: int | None = None
    for index in range(ancount + nscount + arcount):
        _, offset = decode_name(message, offset)
        if offset + 10 > len(message):
            raise DnsFormatError("truncated resource record")
        rtype, rclass, _, length = struct.unpack_from("!HHIH", message, offset)
        offset += 10 + length
        if offset > len(message):
            raise DnsFormatError("resource record runs past the end of the message")
        if rtype == TYPE_OPT and index >= ancount + nscount:
            edns_payload = rclass
    return Query(id=ident, opcode=(flags >> _OPCODE_SHIFT) & 0xF,
                 recursion_desired=bool(flags & _FLAG_RD), name=name, qtype=qtype,
                 qclass=qclass, edns_payload=edns_payload, raw_question=raw_question)


def encode_query(ident: int, name: str, qtype: int, *, recursion_desired: bool = True) -> bytes:
    """A standard query for `name` (what a stub resolver sends; the tests and the forwarder's
    own checks use it)."""
    flags = _FLAG_RD if recursion_desired else 0
    return (_HEADER.pack(ident, flags, 1, 0, 0, 0) + encode_name(name)
            + struct.pack("!HH", qtype, CLASS_IN))


# -- responses --------------------------------------------------------------------------------

def _opt_record() -> bytes:
    return b"\x00" + struct.pack("!HHIH", TYPE_OPT, EDNS_PAYLOAD, 0, 0)


def encode_response(query: Query, response: Response, *, limit: int = TCP_MESSAGE_LIMIT,
                    recursion_available: bool = True) -> bytes:
    """The response to `query`; cut to header and question with TC set when longer than
    `limit` (the client then asks again over TCP)."""
    flags = (_FLAG_QR | (query.opcode << _OPCODE_SHIFT) | (response.rcode & 0xF)
             | (_FLAG_RD if query.recursion_desired else 0)
             | (_FLAG_RA if recursion_available else 0)
             | (_FLAG_AA if response.authoritative else 0))
    opt = _opt_record() if query.edns_payload is not None else b""
    sections = [response.answers, response.authority, response.additional]
    body = b"".join(record.encode() for section in sections for record in section)
    counts = (len(response.answers), len(response.authority),
              len(response.additional) + (1 if opt else 0))
    message = _HEADER.pack(query.id, flags, 1, *counts) + query.raw_question + body + opt
    if len(message) <= limit:
        return message
    return (_HEADER.pack(query.id, flags | _FLAG_TC, 1, 0, 0, 1 if opt else 0)
            + query.raw_question + opt)


def error_response(message: bytes, rcode: int) -> bytes | None:
    """A bare response with `rcode` to a message that could not be parsed as a query (None:
    not even a header to answer)."""
    ident = query_id(message)
    if ident is None:
        return None
    return _HEADER.pack(ident, _FLAG_QR | (rcode & 0xF), 0, 0, 0, 0)


def response_rcode(message: bytes) -> int | None:
    """The response code of a response message (None: too short to be one)."""
    if len(message) < _HEADER.size:
        return None
    return int(struct.unpack_from("!H", message, 2)[0]) & 0xF


# -- record data ------------------------------------------------------------------------------

def a_record(name: str, address: str, ttl: int) -> Record:
    return Record(name, TYPE_A, ttl, ipaddress.IPv4Address(address).packed)


def aaaa_record(name: str, address: str, ttl: int) -> Record:
    return Record(name, TYPE_AAAA, ttl, ipaddress.IPv6Address(address).packed)


def cname_record(name: str, target: str, ttl: int) -> Record:
    return Record(name, TYPE_CNAME, ttl, encode_name(target))


def ptr_record(name: str, target: str, ttl: int) -> Record:
    return Record(name, TYPE_PTR, ttl, encode_name(target))


def ns_record(name: str, target: str, ttl: int) -> Record:
    return Record(name, TYPE_NS, ttl, encode_name(target))


def srv_record(name: str, *, priority: int, weight: int, port: int, target: str,
               ttl: int) -> Record:
    return Record(name, TYPE_SRV, ttl,
                  struct.pack("!HHH", priority, weight, port) + encode_name(target))


def txt_record(name: str, text: str, ttl: int) -> Record:
    raw = text.encode()
    chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
    return Record(name, TYPE_TXT, ttl, b"".join(bytes([len(c)]) + c for c in chunks))


def soa_record(zone: str, *, serial: int, ttl: int) -> Record:
    """The zone's SOA as CoreDNS writes it (`ns.dns.ZONE`, `hostmaster.ZONE`, its timers;
    the minimum is the negative-caching TTL)."""
    rdata = (encode_name(f"ns.dns.{zone}") + encode_name(f"hostmaster.{zone}")
             + struct.pack("!IIIII", serial & 0xFFFFFFFF, 7200, 1800, 86400, ttl))
    return Record(zone, TYPE_SOA, ttl, rdata)


# -- reading responses (tests, the forwarder's sanity checks) ---------------------------------

@dataclass(frozen=True)
class ParsedRecord:
    """A record read back from a response: its name, type, TTL and decoded data."""

    name: str
    rtype: int
    ttl: int
    data: str | tuple[int, int, int, str] | bytes


@dataclass(frozen=True)
class ParsedResponse:
    id: int
    rcode: int
    authoritative: bool
    truncated: bool
    question: str
    answers: tuple[ParsedRecord, ...]
    authority: tuple[ParsedRecord, ...]
    additional: tuple[ParsedRecord, ...]


def _record_data(message: bytes, rtype: int, offset: int, length: int
                 ) -> str | tuple[int, int, int, str] | bytes:
    rdata = message[offset:offset + length]
    if rtype == TYPE_A and length == 4:
        return str(ipaddress.IPv4Address(rdata))
    if rtype == TYPE_AAAA and length == 16:
        return str(ipaddress.IPv6Address(rdata))
    if rtype in (TYPE_CNAME, TYPE_PTR, TYPE_NS):
        return decode_name(message, offset)[0]
    if rtype == TYPE_SRV and length >= 7:
        priority, weight, port = struct.unpack_from("!HHH", message, offset)
        return priority, weight, port, decode_name(message, offset + 6)[0]
    if rtype == TYPE_SOA:
        return decode_name(message, offset)[0]
    if rtype == TYPE_TXT:
        parts, index = [], 0
        while index < len(rdata):
            size = rdata[index]
            parts.append(rdata[index + 1:index + 1 + size].decode(errors="replace"))
            index += 1 + size
        return "".join(parts)
    return bytes(rdata)


def parse_response(message: bytes) -> ParsedResponse:
    """A response read back into records (what a resolver would see)."""
    if len(message) < _HEADER.size:
        raise DnsFormatError("message shorter than a DNS header")
    ident, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(message)
    offset = _HEADER.size
    question = ""
    for _ in range(qdcount):
        question, offset = decode_name(message, offset)
        offset += 4
    sections: list[list[ParsedRecord]] = [[], [], []]
    for index in range(ancount + nscount + arcount):
        name, offset = decode_name(message, offset)
        if offset + 10 > len(message):
            raise DnsFormatError("truncated resource record")
        rtype, _, ttl, length = struct.unpack_from("!HHIH", message, offset)
        offset += 10
        if offset + length > len(message):
            raise DnsFormatError("resource record runs past the end of the message")
        record = ParsedRecord(name, rtype, ttl, _record_data(message, rtype, offset, length))
        offset += length
        section = 0 if index < ancount else 1 if index < ancount + nscount else 2
        sections[section].append(record)
    return ParsedResponse(
        id=ident, rcode=flags & 0xF, authoritative=bool(flags & _FLAG_AA),
        truncated=bool(flags & _FLAG_TC), question=question,
        answers=tuple(sections[0]), authority=tuple(sections[1]),
        additional=tuple(r for r in sections[2] if r.rtype != TYPE_OPT))

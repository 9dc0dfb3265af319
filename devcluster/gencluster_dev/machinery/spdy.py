"""SPDY/3.1 framing, the part of it `kubectl port-forward` needs (pure: bytes in, bytes out).

kubectl (client-go 1.31 and later) forwards ports by running SPDY/3.1 inside a WebSocket
("tunneling SPDY over websocket", subprotocol `SPDY/3.1+portforward.k8s.io`): each WebSocket
binary message carries an arbitrary slice of the SPDY byte stream. client-go's SPDY peer
(moby/spdystream) does no flow control, so WINDOW_UPDATE and SETTINGS are read and ignored.

Header blocks are zlib streams, one per direction for the whole session, primed with the
dictionary of the SPDY/3 specification (section 2.6.10.1); every block ends with a sync flush.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

VERSION = 3

SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9

FLAG_FIN = 0x01

# RST_STREAM status codes (section 2.4.2).
PROTOCOL_ERROR = 1
INVALID_STREAM = 2
REFUSED_STREAM = 3
CANCEL = 5

MAX_DATA_LENGTH = (1 << 24) - 1

# The SPDY/3 header dictionary: these words, each behind a 32-bit big-endian length, then the
# tail below as it stands. Its Adler-32 (the zlib dictionary id) is 0xE3C6A7C2.
_DICTIONARY_WORDS = (
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
    "accept-encoding", "accept-language", "accept-ranges", "age", "allow", "authorization",
    "cache-control", "connection", "content-base", "content-encoding", "content-language",
    "content-length", "content-location", "content-md5", "content-range", "content-type", "date",
    "etag", "expect", "expires", "from", "host", "if-match", "if-modified-since", "if-none-match",
    "if-range", "if-unmodified-since", "last-modified", "location", "max-forwards", "pragma",
    "proxy-authenticate", "proxy-authorization", "range", "referer", "retry-after", "server",
    "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
    "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url",
    "public", "set-cookie", "keep-alive", "origin",
)
_DICTIONARY_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
HEADER_DICTIONARY = b"".join(
    struct.pack(">I", len(word)) + word.encode() for word in _DICTIONARY_WORDS
) + _DICTIONARY_TAIL.encode()


def new_deflate() -> zlib._Compress:
    """A header compressor primed with the SPDY dictionary (one per direction and session)."""
    return zlib.compressobj(zlib.Z_BEST_COMPRESSION, zlib.DEFLATED, 15, 9,
                            zlib.Z_DEFAULT_STRATEGY, HEADER_DICTIONARY)


class ProtocolError(ValueError):
    """The peer sent bytes that are not SPDY/3: the session must end (GOAWAY)."""


@dataclass(frozen=True)
class DataFrame:
    stream_id: int
    data: bytes
    fin: bool


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: dict[str, list[str]]
    fin: bool


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int


@dataclass(frozen=True)
class Ignored:
    """A frame this server reads and drops (SETTINGS, WINDOW_UPDATE, HEADERS, SYN_REPLY)."""

    frame_type: int


Frame = DataFrame | SynStream | RstStream | Ping | GoAway | Ignored


def _decode_header_block(block: bytes) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    try:
        (count,) = struct.unpack_from(">I", block, 0)
        offset = 4
        for _ in range(count):
            (name_length,) = struct.unpack_from(">I", block, offset)
            offset += 4
            name = block[offset:offset + name_length].decode()
            offset += name_length
            (value_length,) = struct.unpack_from(">I", block, offset)
            offset += 4
            value = block[offset:offset + value_length].decode()
            offset += value_length
            if len(name) != name_length or len(value.encode()) != value_length:
                raise ProtocolError("a header block ends inside a name or value")
            headers.setdefault(name.lower(), []).extend(value.split("\x00"))
    except (struct.error, UnicodeDecodeError) as error:
        raise ProtocolError(f"malformed header block: {error}") from None
    return headers


def _encode_header_block(headers: dict[str, list[str]]) -> bytes:
    parts = [struct.pack(">I", len(headers))]
    for name, values in headers.items():
        encoded_name, encoded_value = name.lower().encode(), "\x00".join(values).encode()
        parts += [struct.pack(">I", len(encoded_name)), encoded_name,
                  struct.pack(">I", len(encoded_value)), encoded_value]
    return b"".join(parts)


@dataclass
class FrameReader:
    """Turns the bytes of one direction of a session into frames, however they are sliced."""

    _buffer: bytearray = field(default_factory=bytearray)
    _inflate: zlib._Decompress = field(
        default_factory=lambda: zlib.decompressobj(zdict=HEADER_DICTIONARY))

    def feed(self, data: bytes) -> list[Frame]:
        """The frames completed by `data` (raises ProtocolError on bytes that are not SPDY)."""
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= 8:
            first, flags_length = struct.unpack_from(">II", self._buffer, 0)
            length = flags_length & 0xFFFFFF
            flags = flags_length >> 24
            if len(self._buffer) < 8 + length:
                break
            payload = bytes(self._buffer[8:8 + length])
            del self._buffer[:8 + length]
            if first & 0x80000000:
                frames.append(self._control(first, flags, payload))
            else:
                frames.append(DataFrame(first & 0x7FFFFFFF, payload, bool(flags & FLAG_FIN)))
        return frames

    def _headers(self, compressed: bytes) -> dict[str, list[str]]:
        try:
            return _decode_header_block(self._inflate.decompress(compressed))
        except zlib.error as error:
            raise ProtocolError(f"header block does not inflate: {error}") from None

    def _control(self, first: int, flags: int, payload: bytes) -> Frame:
        version, frame_type = (first >> 16) & 0x7FFF, first & 0xFFFF
        if version != VERSION:
            raise ProtocolError(f"unsupported SPDY version {version}")
        try:
            if frame_type == SYN_STREAM:
                (stream_id,) = struct.unpack_from(">I", payload, 0)
                return SynStream(stream_id & 0x7FFFFFFF, self._headers(payload[10:]),
                                 bool(flags & FLAG_FIN))
            if frame_type in (SYN_REPLY, HEADERS):
                self._headers(payload[4:])  # keeps the shared zlib stream in step
                return Ignored(frame_type)
            if frame_type == RST_STREAM:
                stream_id, status = struct.unpack_from(">II", payload, 0)
                return RstStream(stream_id & 0x7FFFFFFF, status)
            if frame_type == PING:
                return Ping(struct.unpack_from(">I", payload, 0)[0])
            if frame_type == GOAWAY:
                last, status = struct.unpack_from(">II", payload, 0)
                return GoAway(last & 0x7FFFFFFF, status)
        except struct.error:
            raise ProtocolError(f"control frame {frame_type} is too short") from None
        return Ignored(frame_type)


def _control_frame(frame_type: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, frame_type,
                       (flags << 24) | len(payload)) + payload


@dataclass
class FrameWriter:
    """Frames for the other direction (the header compressor is shared by the session, so one
    writer per session and its frames sent in the order they were made)."""

    _deflate: zlib._Compress = field(default_factory=new_deflate)

    def syn_reply(self, stream_id: int, headers: dict[str, list[str]] | None = None,
                  *, fin: bool = False) -> bytes:
        block = self._deflate.compress(_encode_header_block(headers or {}))
        block += self._deflate.flush(zlib.Z_SYNC_FLUSH)
        return _control_frame(SYN_REPLY, FLAG_FIN if fin else 0,
                              struct.pack(">I", stream_id) + block)

    @staticmethod
    def data(stream_id: int, data: bytes, *, fin: bool = False) -> list[bytes]:
        """DATA frames carrying `data` (several when it exceeds a frame's 24-bit length)."""
        frames = []
        chunks = [data[i:i + MAX_DATA_LENGTH] for i in range(0, len(data), MAX_DATA_LENGTH)]
        for index, chunk in enumerate(chunks or [b""]):
            last = index == max(len(chunks), 1) - 1
            flags = FLAG_FIN if fin and last else 0
            frames.append(struct.pack(">II", stream_id & 0x7FFFFFFF,
                                      (flags << 24) | len(chunk)) + chunk)
        return frames

    @staticmethod
    def rst_stream(stream_id: int, status: int) -> bytes:
        return _control_frame(RST_STREAM, 0, struct.pack(">II", stream_id, status))

    @staticmethod
    def ping(ping_id: int) -> bytes:
        return _control_frame(PING, 0, struct.pack(">I", ping_id))

    @staticmethod
    def goaway(last_good_stream_id: int, status: int = 0) -> bytes:
        return _control_frame(GOAWAY, 0, struct.pack(">II", last_good_stream_id, status))


def encode_syn_stream(deflate: zlib._Compress, stream_id: int,
                      headers: dict[str, list[str]], *, fin: bool = False) -> bytes:
    """A client's SYN_STREAM (what kubectl sends; the tests speak it to check the server)."""
    block = deflate.compress(_encode_header_block(headers)) + deflate.flush(zlib.Z_SYNC_FLUSH)
    return _control_frame(SYN_STREAM, FLAG_FIN if fin else 0,
                          struct.pack(">IIBB", stream_id, 0, 0, 0) + block)

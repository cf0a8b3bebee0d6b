"""Wire format v1: one packet per window, from the device to the host. Pure Python.

Layout (big-endian; specified in docs/wire-format.md):

    offset  size  field
    0       1     version            1
    1       1     flags              bit 0: residual byte present; bit 1: tag present; others 0
    2       4     model id           first 4 bytes of the sha256 of the export's manifest.json
                                     (manifest.Export.model_id)
    6       2     sensor id          0..65535
    8       4     sequence number    0..2^32-1, +1 per window
    12      4     timestamp          seconds since 1970-01-01 UTC
    16      1     code length n      1..64
    17      n     code               int8 values, two's complement
    17+n    1     residual           (if flag 0) the device's quantized reconstruction error, uint8
    ..      2     CRC-16/CCITT-FALSE over every byte before it
    ..      4     tag                (if flag 1) HMAC-SHA256 over every byte before it, first 4 bytes,
                                     keyed per sensor

An 8-value code with residual and tag is 32 bytes, a 16-value one 40: both fit LoRaWAN's
51-byte payload at EU868's slowest data rates. `decode` either returns a valid `Packet` or raises
`PacketError` with a reason.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from .errors import EdgeaeError, existing_file
from .fsutil import atomic_file

VERSION = 1
FLAG_RESIDUAL = 0x01
FLAG_TAG = 0x02
HEADER = struct.Struct(">BBIHIIB")  # version, flags, model id, sensor, seq, timestamp, code length
CRC_BYTES = 2
TAG_BYTES = 4
#: The shortest HMAC key taken: a key of a few bytes is found from tagged packets by trying every one,
#: and 128 bits is the usual floor.
MIN_KEY_BYTES = 16
MAX_CODE = 64
SENSOR_IDS = range(2**16)  # what the header's uint16 sensor field holds
# LoRaWAN's application payload at EU868's slowest data rates (DR0-2; Regional Parameters). US915's
# slowest, DR0, carries 11 bytes, less than any packet; its DR1 carries 53.
LORAWAN_SLOW_PAYLOAD = 51

# Reasons a packet is rejected (stored as they are in serve's rejected table).
TRUNCATED = "truncated"
BAD_LENGTH = "bad_length"
BAD_VERSION = "bad_version"
BAD_FLAGS = "bad_flags"
BAD_CRC = "bad_crc"
MISSING_TAG = "missing_tag"
BAD_TAG = "bad_tag"
UNKNOWN_SENSOR_KEY = "unknown_sensor_key"
WRONG_MODEL = "wrong_model"


class PacketError(EdgeaeError):
    """A packet that does not decode; `reason` is one of the constants above."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Packet:
    model_id: int
    sensor: int
    seq: int
    timestamp: int
    code: tuple[int, ...]
    residual: int | None = None
    tagged: bool = False

    def __post_init__(self):
        if not 1 <= len(self.code) <= MAX_CODE:
            raise ValueError(f"code must have 1..{MAX_CODE} values, got {len(self.code)}")
        if any(not -128 <= v <= 127 for v in self.code):
            raise ValueError("code values must be int8")
        if self.residual is not None and not 0 <= self.residual <= 255:
            raise ValueError("residual must be a byte")
        for name, value, bits in (("model_id", self.model_id, 32), ("sensor", self.sensor, 16),
                                  ("seq", self.seq, 32), ("timestamp", self.timestamp, 32)):  # fmt: skip
            if not 0 <= value < 2**bits:
                raise ValueError(f"{name} must fit in {bits} bits, got {value}")


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _tag(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()[:TAG_BYTES]


def check_key(key: bytes, what: str) -> bytes:
    """`key` if it is long enough to keep forgers out (MIN_KEY_BYTES); else one line naming `what`."""
    if len(key) < MIN_KEY_BYTES:
        raise EdgeaeError(f"{what} is {len(key)} byte(s): give at least {MIN_KEY_BYTES} ({2 * MIN_KEY_BYTES} hex digits; "
                          f"`openssl rand -hex {MIN_KEY_BYTES}` makes one): a key of a few bytes is found by trying every one, "
                          "and 128 bits is the usual floor")  # fmt: skip
    return key


def encode(p: Packet, key: bytes | None = None) -> bytes:
    """The packet's bytes; with `key`, tagged with the truncated HMAC."""
    flags = (FLAG_RESIDUAL if p.residual is not None else 0) | (FLAG_TAG if key is not None else 0)
    body = HEADER.pack(VERSION, flags, p.model_id, p.sensor, p.seq, p.timestamp, len(p.code))
    body += bytes(v & 0xFF for v in p.code)
    if p.residual is not None:
        body += bytes([p.residual])
    body += struct.pack(">H", crc16(body))
    return body + _tag(key, body) if key is not None else body


def packet_size(code_size: int, residual: bool = True, tag: bool = True) -> int:
    return HEADER.size + code_size + int(residual) + CRC_BYTES + TAG_BYTES * int(tag)


def fits_lorawan(size: int) -> bool:
    """Whether a packet of `size` bytes fits LoRaWAN's payload at EU868's slowest data rates."""
    return size <= LORAWAN_SLOW_PAYLOAD


def radio_note(size: int) -> str:
    """`fits_lorawan`, said in words for the CLI's summaries."""
    if fits_lorawan(size):
        return f"fits LoRaWAN's {LORAWAN_SLOW_PAYLOAD}-byte payload at EU868's slowest data rates"
    return f"over LoRaWAN's {LORAWAN_SLOW_PAYLOAD}-byte payload at EU868's slowest data rates: a faster data rate or a smaller code"


def decode(data: bytes, keys: dict[int, bytes] | None = None, model_ids: set[int] | None = None) -> Packet:
    """Parse and check one packet.

    `keys` (sensor -> key): when given, every packet must carry a valid tag. `model_ids`: when
    given, the packet's model id must be one of them. Raises `PacketError` otherwise.
    """
    if len(data) < HEADER.size:
        raise PacketError(TRUNCATED, f"{len(data)} bytes, a header is {HEADER.size}")
    version, flags, mid, sensor, seq, ts, n = HEADER.unpack_from(data)
    if version != VERSION:
        raise PacketError(BAD_VERSION, f"version {version}, expected {VERSION}")
    if flags & ~(FLAG_RESIDUAL | FLAG_TAG):
        raise PacketError(BAD_FLAGS, f"reserved flag bits set (0x{flags:02x})")
    if not 1 <= n <= MAX_CODE:
        raise PacketError(BAD_LENGTH, f"code length {n}")
    has_res, has_tag = bool(flags & FLAG_RESIDUAL), bool(flags & FLAG_TAG)
    expected = packet_size(n, has_res, has_tag)
    if len(data) < expected:
        raise PacketError(TRUNCATED, f"{len(data)} bytes, expected {expected}")
    if len(data) > expected:
        raise PacketError(BAD_LENGTH, f"{len(data)} bytes, expected {expected}")
    end = expected - CRC_BYTES - TAG_BYTES * has_tag
    (crc,) = struct.unpack_from(">H", data, end)
    if crc != crc16(data[:end]):
        raise PacketError(BAD_CRC)
    if keys is not None:
        if not has_tag:
            raise PacketError(MISSING_TAG)
        key = keys.get(sensor)
        if key is None:
            raise PacketError(UNKNOWN_SENSOR_KEY, f"no key for sensor {sensor}")
        if not hmac.compare_digest(_tag(key, data[: end + CRC_BYTES]), data[end + CRC_BYTES :]):
            raise PacketError(BAD_TAG)
    if model_ids is not None and mid not in model_ids:
        raise PacketError(WRONG_MODEL, f"model id {mid:08x}")
    code = tuple(b - 256 if b > 127 else b for b in data[HEADER.size : HEADER.size + n])
    residual = data[HEADER.size + n] if has_res else None
    return Packet(mid, sensor, seq, ts, code, residual, has_tag)


def frame(packet: bytes) -> bytes:
    """A packet with its 2-byte big-endian length: the record of a packet file / stream."""
    return struct.pack(">H", len(packet)) + packet


def unframe(stream: bytes):
    """Yield the packets of a length-prefixed stream; a cut-off last record is yielded as is
    (truncated), so the reader rejects it with a reason rather than dropping it silently."""
    i = 0
    while i < len(stream):
        if i + 2 > len(stream):
            yield stream[i:]
            return
        (n,) = struct.unpack_from(">H", stream, i)
        yield stream[i + 2 : i + 2 + n]
        i += 2 + n


def read_packet_file(path) -> list[bytes]:
    """The records of a packet file (`edgeae encode --out`), each a packet to decode or reject.
    A file none of whose records starts like a packet (version byte, a packet's length) is refused
    as a whole: it is some other file given by mistake, not packets to reject one by one."""
    path = existing_file(path, "packet file")
    records = list(unframe(path.read_bytes()))
    sizes = range(packet_size(1, False, False), packet_size(MAX_CODE) + 1)
    if records and not any(len(r) in sizes and r[0] == VERSION for r in records):
        raise EdgeaeError(f"{path}: not a packet file: none of its {len(records)} record(s) starts like a version-{VERSION} "
                          "packet (edgeae encode --out writes packet files)")  # fmt: skip
    return records


def write_packet_file(path, packets) -> None:
    """`packets` as a packet file (`frame` per packet), written whole or not at all."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(b"".join(frame(p) for p in packets))

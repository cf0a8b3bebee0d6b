"""Wire format v1: layout, sizes, and property-based tests of the decoder."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeae import wire

KEY = b"sensor-key-0123"
packets = st.builds(
    wire.Packet,
    model_id=st.integers(0, 2**32 - 1),
    sensor=st.integers(0, 2**16 - 1),
    seq=st.integers(0, 2**32 - 1),
    timestamp=st.integers(0, 2**32 - 1),
    code=st.lists(st.integers(-128, 127), min_size=1, max_size=wire.MAX_CODE).map(tuple),
    residual=st.none() | st.integers(0, 255),
)


@given(packets, st.booleans())
def test_encode_decode_is_the_identity(p, tagged):
    raw = wire.encode(p, KEY if tagged else None)
    assert len(raw) == wire.packet_size(len(p.code), p.residual is not None, tagged)
    keys = {p.sensor: KEY} if tagged else None
    q = wire.decode(raw, keys, {p.model_id})
    assert (q.model_id, q.sensor, q.seq, q.timestamp, q.code, q.residual, q.tagged) == (
        p.model_id, p.sensor, p.seq, p.timestamp, p.code, p.residual, tagged)  # fmt: skip


@settings(max_examples=500)
@given(st.binary(max_size=120), st.booleans())
def test_any_bytes_decode_or_are_rejected_with_a_reason(data, with_keys):
    keys = {s: KEY for s in range(4)} if with_keys else None
    try:
        p = wire.decode(data, keys)
    except wire.PacketError as e:
        assert e.reason in {wire.TRUNCATED, wire.BAD_LENGTH, wire.BAD_VERSION, wire.BAD_FLAGS, wire.BAD_CRC,
                            wire.MISSING_TAG, wire.BAD_TAG, wire.UNKNOWN_SENSOR_KEY, wire.WRONG_MODEL}  # fmt: skip
    else:
        assert wire.encode(p) == data[: len(wire.encode(p))]  # a valid packet re-encodes to its bytes


@given(packets, st.data())
def test_any_single_bit_flip_is_rejected(p, data):
    raw = bytearray(wire.encode(p, KEY))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(wire.PacketError):
        wire.decode(bytes(raw), {p.sensor: KEY}, {p.model_id})


@given(packets, st.data())
def test_every_truncation_is_rejected(p, data):
    raw = wire.encode(p, KEY)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(wire.PacketError):
        wire.decode(raw[:cut], {p.sensor: KEY})


def test_layout_is_big_endian_as_documented():
    p = wire.Packet(0x01020304, 0x0506, 0x0708090A, 0x0B0C0D0E, (1, -1), 200)
    raw = wire.encode(p)
    assert raw[:17] == bytes([1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 2])
    assert raw[17:19] == bytes([1, 255]) and raw[19] == 200
    assert struct.unpack(">H", raw[20:22])[0] == wire.crc16(raw[:20])
    assert wire.crc16(b"123456789") == 0x29B1  # the CRC-16/CCITT-FALSE check value


def test_lorawan_fit():
    for n in (8, 16):
        assert wire.packet_size(n, residual=True, tag=True) <= wire.LORAWAN_SLOW_PAYLOAD
    assert wire.packet_size(8) == 32 and wire.packet_size(16) == 40 and wire.packet_size(32) == 56
    assert wire.radio_note(51).startswith("fits LoRaWAN's 51-byte") and wire.radio_note(56).startswith("over LoRaWAN's 51-byte")


def test_specific_reasons():
    p = wire.Packet(7, 1, 2, 3, (1, 2, 3), 9)
    raw = wire.encode(p, KEY)
    assert pytest.raises(wire.PacketError, wire.decode, raw, {1: b"other"}).value.reason == wire.BAD_TAG
    assert pytest.raises(wire.PacketError, wire.decode, wire.encode(p), {1: KEY}).value.reason == wire.MISSING_TAG
    assert pytest.raises(wire.PacketError, wire.decode, raw, None, {8}).value.reason == wire.WRONG_MODEL
    assert pytest.raises(wire.PacketError, wire.decode, raw[:10]).value.reason == wire.TRUNCATED
    assert pytest.raises(wire.PacketError, wire.decode, b"\x02" + raw[1:]).value.reason == wire.BAD_VERSION


def test_frames_round_trip_and_keep_a_cut_record():
    pkts = [wire.encode(wire.Packet(1, 1, i, 0, (i % 100,), None)) for i in range(5)]
    stream = b"".join(wire.frame(x) for x in pkts)
    assert list(wire.unframe(stream)) == pkts
    cut = list(wire.unframe(stream[:-3]))
    assert cut[:4] == pkts[:4] and len(cut) == 5 and cut[4] == pkts[4][:-3]


def test_a_packet_file_is_kept_whole_unless_nothing_in_it_is_a_packet(tmp_path):
    good = wire.frame(wire.encode(wire.Packet(1, 1, 0, 0, (1, 2), 3), b"k"))
    damaged = tmp_path / "damaged.bin"  # garbage around one packet: served, the garbage rejected
    damaged.write_bytes(wire.frame(b"\x07" * 30) + good + b"\x00")
    assert wire.read_packet_file(damaged) == [b"\x07" * 30, good[2:], b"\x00"]
    (tmp_path / "empty.bin").write_bytes(b"")
    assert wire.read_packet_file(tmp_path / "empty.bin") == []
    for name, data in (("notes.txt", b"time,vib\n0,1\n"), ("oversized.bin", wire.frame(b"\x01" * 200)), ("zeros.bin", bytes(64))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(wire.EdgeaeError, match=f"{name}: not a packet file"):
            wire.read_packet_file(tmp_path / name)
    with pytest.raises(wire.EdgeaeError, match="no such packet file"):
        wire.read_packet_file(tmp_path / "nope.bin")

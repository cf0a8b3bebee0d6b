"""Wire format v1: layout, sizes, and property-based tests of the decoder."""

import shutil
import struct
import subprocess
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT
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


def test_lorawan_airtime_and_what_a_packet_rate_asks_of_the_radio():
    """A window every hop goes out at tens of packets a second; LoRaWAN allows a few an hour. The
    airtime is Semtech's (AN1200.13): 51 bytes take 2793.5 ms at SF12 and 118.0 ms at SF7, the
    figures network servers and airtime calculators give for EU868's largest slow payload."""
    from edgeae import lorawan

    assert lorawan.airtime(51, 12) == pytest.approx(2.7935, abs=1e-4) and lorawan.airtime(51, 7) == pytest.approx(0.1180, abs=1e-4)
    assert lorawan.airtime(0, 7) < lorawan.airtime(28, 7) < lorawan.airtime(28, 8) < lorawan.airtime(28, 12)
    fast = lorawan.budget(32, 0.016)
    assert fast.startswith("a 32-byte packet every 16 ms, 92 ms on air at SF7, 2.1 s at SF12: EU868's 1 % duty cycle allows one every")
    assert "The Things Network's fair use (30 s a day) allows one every 4.44 min at SF7, 1.71 h at SF12" in fast
    assert lorawan.budget(32, 3 * 3600).endswith("within EU868's duty cycle and The Things Network's fair use at every data rate")


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


HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "edgeae_packet.h"
/* Per line: model sensor seq timestamp residual key-hex|- code...; prints the packet in hex. */
int main(void) {
  unsigned long model, sensor, seq, ts; int residual; char keyhex[512];
  while (scanf("%lu %lu %lu %lu %d %511s", &model, &sensor, &seq, &ts, &residual, keyhex) == 6) {
    int8_t code[64]; size_t n = 0; int v; uint8_t key[255]; size_t key_len = 0;
    while (n < 64 && scanf("%d", &v) == 1) code[n++] = (int8_t)v;
    scanf(" ;");
    if (keyhex[0] != '-')
      for (; keyhex[2 * key_len]; ++key_len) sscanf(keyhex + 2 * key_len, "%2hhx", &key[key_len]);
    uint8_t out[EDGEAE_PACKET_MAX_SIZE];
    size_t len = edgeae_packet(out, sizeof(out), (uint32_t)model, (uint16_t)sensor, (uint32_t)seq, (uint32_t)ts,
                               code, n, residual, keyhex[0] == '-' ? NULL : key, key_len);
    for (size_t i = 0; i < len; ++i) printf("%02x", out[i]);
    printf("\n");
  }
  int8_t c[65] = {0}; uint8_t small[20];  /* what it refuses: 0, nothing written */
  printf("%zu %zu %zu %zu\n", edgeae_packet(small, sizeof(small), 1, 1, 1, 1, c, 8, -1, NULL, 0),
         edgeae_packet(small, sizeof(small), 1, 1, 1, 1, c, 0, -1, NULL, 0),
         edgeae_packet(small, sizeof(small), 1, 1, 1, 1, c, 1, 256, NULL, 0),
         edgeae_packet(small, sizeof(small), 1, 1, 1, 1, c, 1, -1, NULL, 0));
  return 0;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("g++") is None, reason="no system C/C++ compiler")
def test_the_c_packet_encoder_for_firmware_makes_the_bytes_the_host_decodes(tmp_path):
    """The MCU export gave the firmware the models but left the packet (layout, CRC-16, HMAC-SHA256)
    to be written by hand from docs/wire-format.md, where one slip has every packet rejected.
    edgeae_packet.c is that code: compiled as C99 and as C++, byte for byte `wire.encode`'s."""
    import random

    src = ROOT / "edgeae" / "c"
    (tmp_path / "harness.c").write_text(HARNESS)
    for compiler, flags in (("gcc", ["-std=c99", "-pedantic"]), ("g++", ["-std=c++11", "-x", "c++"])):
        exe = tmp_path / f"harness-{compiler}"
        subprocess.run([compiler, *flags, "-Wall", "-Wextra", "-Werror", f"-I{src}", str(tmp_path / "harness.c"), str(src / "edgeae_packet.c"),
                        "-o", str(exe)], check=True)  # fmt: skip
        rng = random.Random(3)
        cases = [wire.Packet(2**32 - 1, 2**16 - 1, 2**32 - 1, 2**32 - 1, (-128,) * 64, 255), wire.Packet(0, 0, 0, 0, (127,), None)]
        cases += [wire.Packet(rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(32), rng.getrandbits(32),
                              tuple(rng.randint(-128, 127) for _ in range(rng.randint(1, 64))), rng.choice([None, rng.randint(0, 255)]))
                  for _ in range(200)]  # fmt: skip
        keys = [None, b"\x00", bytes(range(16)), bytes(range(64)), bytes(range(65)), bytes(rng.getrandbits(8) for _ in range(200))]
        keys += [rng.choice(keys) for _ in cases[len(keys) :]]
        lines = [f"{p.model_id} {p.sensor} {p.seq} {p.timestamp} {-1 if p.residual is None else p.residual} {k.hex() if k else '-'} "
                 f"{' '.join(map(str, p.code))} ;" for p, k in zip(cases, keys)]  # fmt: skip
        out = subprocess.run([str(exe)], input="\n".join(lines) + "\n", capture_output=True, text=True, check=True).stdout.splitlines()
        assert [bytes.fromhex(h) for h in out[:-1]] == [wire.encode(p, k) for p, k in zip(cases, keys)]
        assert all(wire.decode(bytes.fromhex(h), None if k is None else {p.sensor: k}) == replace(p, tagged=k is not None)
                   for h, p, k in zip(out, cases, keys))  # fmt: skip
        assert out[-1] == "0 0 0 20"  # too small for the code, no code, residual 256; the smallest packet

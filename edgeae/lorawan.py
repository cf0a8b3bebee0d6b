"""Uplinks from a LoRaWAN network server's MQTT integration: the packet inside their JSON.

A device on LoRaWAN sends the packet as its application payload, and the network server, not the
device, publishes each uplink on MQTT, as JSON with the payload in base64:

- The Things Stack (v3): topic `v3/{application}@{tenant}/devices/{device}/up`, the packet in
  `uplink_message.frm_payload`;
- ChirpStack (v4 with the JSON marshaler, or v3): topic `application/{id}/device/{dev_eui}/event/up`
  (v3: `application/{id}/device/{dev_eui}/rx`), the packet in `data`.

`edgeae serve --envelope tts|chirpstack` takes the packet from there. A message that is not such an
uplink is rejected as `not_an_uplink`, an uplink without application payload (MAC commands only)
as `no_payload`; both are kept, raw, as every rejected message is.

Over the air, each uplink costs airtime (`airtime`), which EU868's 1 % duty cycle and The Things
Network's fair use policy (30 s of uplink airtime a day per device) ration: `budget` says, in
words, what a packet every so often asks of them.

The uplink also says when the network server received it (The Things Stack:
`uplink_message.received_at`; ChirpStack v4: `time`, v3: `publishedAt`): serve stamps a packet
from a device without a clock (timestamp 0) with that time, which stays right for the packets a
broker held while serve was stopped.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import NamedTuple

from .data import duration, unix_seconds
from .fsutil import parse_json
from .wire import PacketError

ENVELOPES = ("tts", "chirpstack")
NOT_AN_UPLINK = "not_an_uplink"
NO_PAYLOAD = "no_payload"
FRAME_OVERHEAD = 13  # bytes of a LoRaWAN frame around the application payload: MHDR 1, FHDR 7 (no MAC commands), FPort 1, MIC 4
DUTY_CYCLE = 0.01  # EU868's uplink sub-band g1: 1 % of the time on air
FAIR_USE_S = 30.0  # The Things Network's fair use policy: seconds of uplink airtime a day per device


class Uplink(NamedTuple):
    packet: bytes
    received_at: float | None  # Unix seconds, when the network server received it; None if it does not say


def unwrap(message: bytes, envelope: str) -> Uplink:
    """The packet carried by a network server's uplink message; PacketError if it carries none."""
    try:
        doc = parse_json(message)
    except ValueError:  # UnicodeDecodeError and the JSON errors among them
        raise PacketError(NOT_AN_UPLINK, "not JSON") from None
    if envelope == "tts":
        uplink = doc.get("uplink_message") if isinstance(doc, dict) else None
        if not isinstance(uplink, dict):
            raise PacketError(NOT_AN_UPLINK, "no uplink_message (a The Things Stack uplink has one)")
        field, payload = "uplink_message.frm_payload", uplink.get("frm_payload")
        received = uplink.get("received_at", doc.get("received_at"))
    else:
        if not (isinstance(doc, dict) and ("data" in doc or "fCnt" in doc)):
            raise PacketError(NOT_AN_UPLINK, "no data or fCnt (a ChirpStack uplink event has them)")
        field, payload = "data", doc.get("data")
        received = doc.get("time", doc.get("publishedAt"))
    if payload is None:
        raise PacketError(NO_PAYLOAD, f"an uplink without {field}")
    try:
        packet = base64.b64decode(payload, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise PacketError(NOT_AN_UPLINK, f"{field} is not base64") from None
    return Uplink(packet, _seconds(received))


def _seconds(when) -> float | None:
    """An uplink's RFC 3339 time in Unix seconds; None when absent or not such a time (the packet
    itself is good: serve then takes its own time)."""
    try:
        return unix_seconds(when) if isinstance(when, str) else None
    except ValueError:
        return None


def airtime(payload: int, sf: int, bandwidth_hz: float = 125_000.0) -> float:
    """Seconds on air of an uplink with `payload` application bytes at spreading factor `sf`, as
    Semtech's LoRa Modem Designer's Guide (AN1200.13) counts them: preamble of 8, explicit header,
    CRC, coding rate 4/5, low data rate optimization at SF11 and SF12 on 125 kHz."""
    symbol = 2**sf / bandwidth_hz
    low_rate = 1 if sf >= 11 and bandwidth_hz <= 125_000 else 0
    bits = 8 * (payload + FRAME_OVERHEAD) - 4 * sf + 28 + 16
    return (8 + 4.25 + 8 + max(math.ceil(bits / (4 * (sf - 2 * low_rate))) * 5, 0)) * symbol


def budget(size: int, interval: float) -> str:
    """What a packet of `size` bytes every `interval` seconds asks of LoRaWAN, in words: its
    airtime at SF7 and SF12, against EU868's duty cycle and The Things Network's fair use."""
    fast, slow = airtime(size, 7), airtime(size, 12)
    limits = {"EU868's 1 % duty cycle": 1 / DUTY_CYCLE, f"The Things Network's fair use ({FAIR_USE_S:g} s a day)": 86_400 / FAIR_USE_S}
    said = f"a {size}-byte packet every {duration(interval)}, {fast * 1e3:.0f} ms on air at SF7, {slow:.1f} s at SF12"
    over = {name: factor for name, factor in limits.items() if interval < factor * slow}
    if not over:
        return f"{said}: within EU868's duty cycle and The Things Network's fair use at every data rate"
    return f"{said}: " + "; ".join(f"{name} allows one every {duration(factor * fast)} at SF7, {duration(factor * slow)} at SF12"
                                  for name, factor in over.items())  # fmt: skip

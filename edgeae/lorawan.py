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

The uplink also says when the network server received it (The Things Stack:
`uplink_message.received_at`; ChirpStack v4: `time`, v3: `publishedAt`): serve stamps a packet
from a device without a clock (timestamp 0) with that time, which stays right for the packets a
broker held while serve was stopped.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import NamedTuple

from .data import unix_seconds
from .wire import PacketError

ENVELOPES = ("tts", "chirpstack")
NOT_AN_UPLINK = "not_an_uplink"
NO_PAYLOAD = "no_payload"


class Uplink(NamedTuple):
    packet: bytes
    received_at: float | None  # Unix seconds, when the network server received it; None if it does not say


def unwrap(message: bytes, envelope: str) -> Uplink:
    """The packet carried by a network server's uplink message; PacketError if it carries none."""
    try:
        doc = json.loads(message)
    except (UnicodeDecodeError, ValueError):
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

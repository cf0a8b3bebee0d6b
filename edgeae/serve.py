"""`edgeae serve`: packets in (MQTT or a packet file), decoded, scored and stored in SQLite.

Every packet is validated (length, version, CRC, HMAC tag when keys are configured, model
id). A valid packet is checked against its sensor's sequence numbers: one already stored is
rejected as `replayed_seq` (unless the broker itself sent it again after a reconnect, MQTT's DUP:
then it is counted, `Server.redelivered`, as is such a copy of a packet already rejected); one that skips ahead records the missing numbers as a gap; one that
fills a gap is stored and marked `reordered`. Valid packets are decoded in batches through the
export's decoder and scored by the export's scorer (`host.Host`: scorer.json from `edgeae calibrate`,
or a residual scorer fitted on the export's reference windows). Given several exports (a fleet
moving to a new model sends packets of both), each packet goes to the export whose model id it
carries. A packet without the residual byte
that scorer needs is stored unscored (score NULL). Every rejected packet is kept, raw,
with its reason. Nothing is dropped and the server never stops on a bad packet; each batch is
one SQLite transaction, so a SIGTERM never leaves a half-written batch. Sequence numbers are stored
counted on past the packet's 32-bit counter when it wraps (`_counted_on`). While another connection
holds the database locked, packets are held and stored once it lets go. Packets the database will
not take (serve stopped while it is locked, or any other database error, which stops serve) are
written to a packet file beside it, to serve later. Over MQTT, serve keeps its session at the broker
(`session_id`): the packets published while serve is stopped are delivered when it is back. It
acknowledges a message to the broker only once it is stored (or kept in that file), so a serve
killed outright (SIGKILL, out of memory) leaves what it had taken in with the broker, which sends
it again. With a state topic, serve publishes each sensor's state there (retained, QoS 1) when a
stored packet changes it: anomalous or not, since which packet, its score and threshold. A late
(reordered) or unscored packet changes no state. A restarted serve takes each sensor's state up from
the database (its `since` kept) and publishes it again at the sensor's first packet. With
`silent_after`, a sensor from which no packet came for that long is silent: said once, and its state
published with `silent` true, until a packet comes again.

The database's tables and their reading are `edgeae.results`'.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import re
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import lorawan, wire
from .data import duration
from .errors import EdgeaeError, existing_file
from .fsutil import parse_json
from .host import Hosts
from .mqtt import Message, Subscriber
from .results import damage_named, iso_utc, open_results

REPLAYED = "replayed_seq"
CLOCK_AHEAD_S = 300  # a window time this far after its packet arrived cannot be right (`Server._note_clock`)
CLOCK_BEHIND_S = 30 * 86_400  # ... nor this far before: longer than a broker holds packets for serve
MAX_GAP_RECORDED = 10_000  # a jump larger than this is recorded as its first 10,000 numbers


class _NotStored(Exception):
    """A batch the database would not take (`error`), with the raw packets of it (`raws`)."""

    def __init__(self, error: sqlite3.Error, raws: list[bytes]):
        super().__init__(str(error))
        self.error, self.raws = error, raws


def _locked(e: sqlite3.Error) -> bool:
    """Whether `e` is another connection holding the database (worth waiting out), not a fault."""
    return isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "busy" in str(e))


class Server:
    """Packets in, rows out. `notify` gets one-line notices (a locked database, waited out);
    `stop`, once set, ends `run_mqtt` and ends waiting on a locked database. With `envelope`
    ('tts', 'chirpstack'), each message is a LoRaWAN network server's uplink JSON holding the
    packet (`lorawan.unwrap`). With `state_topic`, `run_mqtt` publishes each sensor's state there
    (`_state`); with `silent_after` (seconds), it marks the sensors it hears nothing from as silent
    (`_check_silence`)."""

    def __init__(self, export_dirs, db: str | Path, keys: dict[int, bytes] | None = None,
                 notify: Callable[[str], None] = lambda message: None, envelope: str | None = None,
                 state_topic: str | None = None, silent_after: float | None = None):  # fmt: skip
        self.unwrap = (lambda message: lorawan.Uplink(message, None)) if envelope is None else functools.partial(lorawan.unwrap, envelope=envelope)
        self.hosts = Hosts([export_dirs] if isinstance(export_dirs, (str, Path)) else export_dirs, keys)
        self.db_path, self.notify, self.stop = Path(db), notify, threading.Event()
        self.db, self.started = open_results(db, notify=notify), time.time()
        try:
            self._record_scorers(self.hosts, self.started)
        except sqlite3.Error as e:
            self.db.close()
            raise EdgeaeError(f"{db}: cannot open it as the results database ({e})") from None
        self.stored, self.redelivered = 0, 0  # redelivered: copies the broker sent again of what is stored or rejected
        self.unscored = 0  # stored without a score: no residual byte, which the scorer needs
        self.rejected: collections.Counter[str] = collections.Counter()  # this run's, per reason
        self.last_seq: dict[int, int | None] = {}  # highest sequence number stored, per sensor
        self.data_version: int | None = None  # the database's as this connection last saw it (`_begin`)
        self.replays_noted: set[int] = set()  # sensors whose first replay this run was told to `notify`
        self.clocks_noted: set[int] = set()  # sensors whose window times `_note_clock` said cannot be right
        self.live = False  # packets arriving as they are sent (run_mqtt), not from a packet file
        self.state_topic = state_topic  # with run_mqtt: each sensor's state published there, retained, on change
        self.states = self._stored_states() if state_topic else {}  # per sensor, its current state (`_state`)
        self.announced: set[int] = set()  # sensors whose state this run has published
        self.publish: Callable[[str, bytes], None] | None = None  # set by run_mqtt when there is a state topic
        self.silent_after = silent_after  # `_check_silence`, in run_mqtt
        self.silent: set[int] = set()  # sensors silent for longer than silent_after
        self.heard: dict[int, float] = dict(self.db.execute("SELECT sensor, MAX(received_at) FROM packets GROUP BY sensor")) if silent_after else {}

    def _record_scorers(self, hosts: Hosts, t: float) -> None:
        """The scorers that judge packets from time `t` on, in the scorers table: per export a row,
        and one per sensor with a threshold of its own, all with started_at `t`."""
        with self.db:
            self.db.executemany("INSERT INTO scorers VALUES (?,?,?,?,?,?)", [
                (t, f"{mid:08x}", h.scorer.mode, h.scorer.rule, threshold, sensor) for mid, h in hosts.by_id.items()
                for sensor, threshold in [(None, h.scorer.threshold_), *h.scorer.sensor_thresholds_.items()]])  # fmt: skip

    def reload(self, load: Callable[[], Hosts]) -> None:
        """Judge packets by the exports and keys `load` reads again (SIGHUP: a sensor's threshold
        set by `edgeae calibrate`, a new sensor's key), once recorded in the scorers table. If they
        do not load, or the database does not take the record, serve on as before."""
        try:
            hosts = load()
            self._record_scorers(hosts, time.time())
        except (EdgeaeError, sqlite3.Error) as e:
            self.notify(f"reload failed, serving on as before: {e}")
            return
        self.hosts = hosts
        self._rejudge_states()
        judged = "; ".join(f"{mid:08x} threshold {h.scorer.threshold_:.6g}"
                           + "".join(f", sensor {s} {t:.6g}" for s, t in sorted(h.scorer.sensor_thresholds_.items()))
                           for mid, h in hosts.by_id.items())  # fmt: skip
        self.notify(f"reloaded: {judged}" + (f"; keys of {len(hosts.keys)} sensors" if hosts.keys else ""))

    # -- one batch of raw messages
    def handle(self, batch: list[Message]) -> None:
        """Store a batch in one transaction. While another connection holds the database, wait
        (SQLite's busy timeout, again and again) until it lets go or `stop` is set; a batch that
        cannot be stored raises `_NotStored` with its raw packets, for `_keep_unstored`."""
        waiting = False
        while True:
            try:
                with damage_named(self.db):  # a stored value serve does not write (byte damage) is a database error
                    self._handle(batch)
                break
            except sqlite3.Error as e:
                self.last_seq.clear()  # the rolled-back batch may have moved it: read it again from the database
                if self.stop.is_set() or not _locked(e):
                    raise _NotStored(e, [m.payload for m in batch]) from None
                if not waiting:
                    self.notify(f"{self.db_path}: locked by another connection ({e}); holding {len(batch)} packet(s) "
                                "until it lets go (SIGTERM: they are kept in a packet file)")  # fmt: skip
                    waiting = True
        if waiting:
            self.notify(f"{self.db_path}: unlocked; the {len(batch)} packet(s) held are stored")

    def _keep_unstored(self, failure: _NotStored, more: list[bytes], still_at: str) -> EdgeaeError:
        """Write the packets the database would not take to a packet file beside it; returns the
        error that says so, for the caller to raise once it has done what the file allows. When the
        file cannot be written either (the full disk that stopped the database, as a rule), raises
        the error saying both, and where the packets still are (`still_at`)."""
        raws = [*failure.raws, *more]
        path = self.db_path.with_name(f"{self.db_path.name}.unstored-{time.strftime('%Y%m%dT%H%M%S')}.bin")
        try:
            wire.write_packet_file(path, [self._packet_or_message(r) for r in raws])
        except OSError as e:
            raise EdgeaeError(f"{self.db_path}: cannot store packets ({failure.error}), nor keep the {len(raws)} not stored "
                              f"in a packet file ({path}: {e.strerror or e}); {still_at}") from None  # fmt: skip
        return EdgeaeError(f"{self.db_path}: cannot store packets ({failure.error}); the {len(raws)} not stored are kept "
                           f"in {path} (edgeae serve --packets {path} stores them)")  # fmt: skip

    def _packet_or_message(self, raw: bytes) -> bytes:
        """For a packet file: the packet a message carries, or the message as it came if it carries none."""
        try:
            return self.unwrap(raw).packet
        except wire.PacketError:
            return raw

    def _begin(self) -> None:
        """Begin a batch's transaction holding the write lock, before its packets are checked: another
        writer (a second serve storing a packet file, say) cannot store a packet between its check
        here and its insert, and what another wrote since the last batch is read again
        (`PRAGMA data_version` moves when another connection commits)."""
        self.db.execute("BEGIN IMMEDIATE")
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        if version != self.data_version:
            self.last_seq.clear()
            self.data_version = version

    def _handle(self, batch: list[Message]) -> None:
        valid, rejected, again = [], [], 0
        seen_in_batch: set[tuple[int, int]] = set()
        rejected_in_batch: set[bytes] = set()
        with self.db:  # one transaction per batch
            self._begin()
            for topic, raw, t, dup in batch:
                try:
                    uplink = self.unwrap(raw)
                    p = self.hosts.decode(uplink.packet)
                except wire.PacketError as e:
                    if dup and (raw in rejected_in_batch or self._rejected(raw)):  # sent again by the broker: kept once
                        again += 1
                        continue
                    rejected_in_batch.add(raw)
                    rejected.append((t, topic, e.reason, str(e), None, None, raw))
                    continue
                seq = self._counted_on(p)
                key = (p.sensor, seq)
                if key in seen_in_batch or self._stored(key):
                    if dup:  # the broker sending again what it sent before a reconnect: no replay, and stored once
                        again += 1
                        continue
                    rejected.append((t, topic, REPLAYED, f"sensor {p.sensor} seq {seq} already received", p.sensor, seq, raw))
                    self._note_replay(p.sensor, seq)
                    continue
                seen_in_batch.add(key)
                if not p.timestamp:  # a device without a clock (docs/wire-format.md): when the network server or serve received it
                    p = dataclasses.replace(p, timestamp=int(uplink.received_at or t))
                elif self.live:
                    self._note_clock(p, seq, uplink.received_at or t)
                valid.append((topic, p, t, seq))
            unscored, changes = self._store(valid) if valid else (0, [])
            self.db.executemany(
                "INSERT INTO rejected (received_at, topic, reason, detail, sensor, seq, raw) VALUES (?,?,?,?,?,?,?)",
                rejected,
            )
        for state in changes:  # once stored: a state never runs ahead of the database
            self._publish(state)
            self.announced.add(state["sensor"])
        for _, p, t, _ in valid if self.silent_after else ():  # when each sensor was last heard, for `_check_silence`
            if p.sensor in self.silent:
                self.silent.discard(p.sensor)
                self.notify(f"sensor {p.sensor}: heard again after {t - self.heard[p.sensor]:.0f} s of silence")
            self.heard[p.sensor] = max(t, self.heard.get(p.sensor, t))
        self.stored += len(valid)
        self.unscored += unscored
        self.redelivered += again
        self.rejected.update(r[2] for r in rejected)

    def _publish(self, state: dict) -> None:
        self.states[state["sensor"]] = state
        if self.publish is not None:
            self.publish(self.state_topic.format(sensor=state["sensor"]), json.dumps(state).encode())

    def _check_silence(self, now: float) -> None:
        """Each sensor from which no packet came for longer than `silent_after` (the host's clock; never
        before serve itself has run so long) turns silent: said once, and published in its state."""
        for sensor, t in self.heard.items():
            if sensor in self.silent or now - max(t, self.started) <= self.silent_after:
                continue
            self.silent.add(sensor)
            self.notify(f"sensor {sensor}: silent, no packet for {now - t:.0f} s (the last came in at {iso_utc(t)})")
            if sensor in self.states:
                self._publish({**self.states[sensor], "silent": True, "silent_since": iso_utc(t)})

    def _note_replay(self, sensor: int, seq: int) -> None:
        """Say once per sensor that its packets come as replays: a device loop restarted at sequence
        number 0 has every packet rejected so, until it passes the last one stored."""
        if sensor in self.replays_noted:
            return
        self.replays_noted.add(sensor)
        last = self._highest_seq(sensor)
        self.notify(f"sensor {sensor}: seq {seq} is stored already, rejected as {REPLAYED} (stored up to {last}); "
                    "a device that restarted its count has every packet rejected so: keep the count across restarts "
                    "(edgeae encode --seq-file; in firmware, in non-volatile memory)")  # fmt: skip

    def _note_clock(self, p: wire.Packet, seq: int, arrived: float) -> None:
        """Say once per sensor that its window times cannot be its packets' (stored as they are):
        ahead of their arrival, or further behind it than a broker holds packets (a clock reset to
        1970 by a flat battery; a recording replayed). They are what `results --plot` and
        `calibrate --since` go by. `seq` is the packet's number as stored (`_counted_on`)."""
        off = p.timestamp - arrived
        if p.sensor in self.clocks_noted or -CLOCK_BEHIND_S <= off <= CLOCK_AHEAD_S:
            return
        self.clocks_noted.add(p.sensor)
        self.notify(f"sensor {p.sensor}: seq {seq}'s window time {iso_utc(p.timestamp)} is {duration(abs(off))} "
                    f"{'after' if off > 0 else 'before'} it arrived ({iso_utc(arrived)}): the device's clock is wrong, "
                    "or a recording is replayed; stored as it is (a device without a clock sends 0, and serve stamps it)")  # fmt: skip

    def _stored(self, key) -> bool:
        """Whether the packet (sensor, seq) is stored, or was and is archived: below its sensor's
        archived numbers, and not an open gap (a late packet that fills one is still let in)."""
        return self.db.execute(
            "SELECT 1 FROM packets WHERE sensor=?1 AND seq=?2 UNION ALL SELECT 1 FROM archived WHERE sensor=?1 AND ?2 < below_seq "
            "AND NOT EXISTS (SELECT 1 FROM missing WHERE sensor=?1 AND seq=?2 AND filled_at IS NULL)", key).fetchone() is not None  # fmt: skip

    def _highest_seq(self, sensor: int) -> int | None:
        """The highest sequence number stored for `sensor`, archived ones included."""
        return self.db.execute("SELECT MAX(m) FROM (SELECT MAX(seq) AS m FROM packets WHERE sensor=?1 "
                               "UNION ALL SELECT below_seq - 1 FROM archived WHERE sensor=?1)", (sensor,)).fetchone()[0]  # fmt: skip

    def _rejected(self, raw: bytes) -> bool:
        return self.db.execute("SELECT 1 FROM rejected WHERE raw=? LIMIT 1", (raw,)).fetchone() is not None

    def _store(self, valid) -> tuple[int, list[dict]]:
        """Insert the valid packets' rows, (topic, packet, arrival, sequence number counted on);
        returns how many of them are unscored, and each change of a sensor's state (`_state`) among
        them, in order."""
        now = time.time()
        rows, changes, current, announced = [], [], dict(self.states), set(self.announced)
        readings = self.hosts.read([p for _, p, _, _ in valid])
        for (topic, p, t, seq), r in zip(valid, readings):
            reordered = self._sequence(p.sensor, seq, now)
            rows.append((p.sensor, seq, p.timestamp, f"{p.model_id:08x}", json.dumps(list(p.code)), p.residual,
                         json.dumps([round(float(v), 6) for v in r.rms]), r.score if r.scored else None, int(r.anomaly),
                         reordered, t, now, topic))  # fmt: skip
            last = current.get(p.sensor)
            if r.scored and not reordered and (last is None or last["anomaly"] != r.anomaly):
                threshold = self.hosts.by_id[p.model_id].scorer.threshold_for(p.sensor)
                current[p.sensor] = _state(p.sensor, r.anomaly, seq, p.timestamp, r.score, threshold, f"{p.model_id:08x}")
            elif last is not None and (last["silent"] or p.sensor not in announced):
                current[p.sensor] = {**last, "silent": False, "silent_since": None}
            else:
                continue
            announced.add(p.sensor)
            changes.append(current[p.sensor])
        self.db.executemany("INSERT INTO packets VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        return sum(not r.scored for r in readings), changes

    def _rejudge_states(self) -> None:
        """Each sensor's state under the thresholds a reload brought, published where its threshold
        changed: its last scored in-order packet judged again, and where the flag turns, the state
        turns with it, since that packet (else a dashboard showed the old flag until the next one)."""
        for sensor, state in list(self.states.items()):
            last = self.db.execute(f"SELECT seq, timestamp, score, model_id FROM packets WHERE {_IN_ORDER} ORDER BY seq DESC LIMIT 1",
                                   (sensor,)).fetchone()  # fmt: skip
            host = last and self.hosts.by_id.get(int(last[3], 16))
            if not host or (threshold := host.scorer.threshold_for(sensor)) == state["threshold"]:
                continue  # archived, its export no longer served, or its threshold as it was
            seq, t, score, model_id = last
            if (anomaly := bool(score > threshold)) == state["anomaly"]:
                self._publish({**state, "threshold": threshold})
            else:  # turned, since that packet; silent or not as it was
                self._publish({**_state(sensor, anomaly, seq, t, score, threshold, model_id),
                               "silent": state["silent"], "silent_since": state["silent_since"]})  # fmt: skip
            self.announced.add(sensor)

    def _stored_states(self) -> dict[int, dict]:
        """Each sensor's state as the database holds it: the flag of its last scored in-order packet,
        since the first packet of that flag's last run, with the threshold that flagged it."""
        q = lambda sql, *args: self.db.execute(sql, args).fetchone()  # noqa: E731
        states = {}
        for (sensor,) in self.db.execute("SELECT DISTINCT sensor FROM packets").fetchall():
            last = q(f"SELECT anomaly FROM packets WHERE {_IN_ORDER} ORDER BY seq DESC LIMIT 1", sensor)
            if last is None:
                continue
            (before,) = q(f"SELECT COALESCE(MAX(seq), -1) FROM packets WHERE {_IN_ORDER} AND anomaly!=?", sensor, last[0])
            seq, t, score, model_id, stored_at = q(f"SELECT seq, timestamp, score, model_id, stored_at FROM packets "
                                                   f"WHERE {_IN_ORDER} AND seq>? ORDER BY seq LIMIT 1", sensor, before)  # fmt: skip
            threshold = q("SELECT threshold FROM scorers WHERE model_id=? AND started_at<=? AND (sensor IS NULL OR sensor=?) "
                          "ORDER BY started_at DESC, sensor IS NULL LIMIT 1", model_id, stored_at, sensor)  # its own, if that run had one
            states[sensor] = _state(sensor, bool(last[0]), seq, t, score, threshold and threshold[0], model_id)
        return states

    def _last_seq(self, sensor: int) -> int | None:
        """The highest sequence number stored for `sensor` (kept between batches; `_begin`)."""
        if sensor not in self.last_seq:
            self.last_seq[sensor] = self._highest_seq(sensor)
        return self.last_seq[sensor]

    def _counted_on(self, p: wire.Packet) -> int:
        """`p`'s sequence number counted on past the packet's 32-bit counter, as it is stored: of the
        numbers it may stand for (seq + k * 2^32), the one nearest its sensor's highest stored. A
        device sending a packet every 16 ms wraps in 2.2 years, and every packet after (0, 1, ...)
        was rejected as a replay of the first ones."""
        last = self._last_seq(p.sensor)
        return p.seq if last is None else p.seq + (last - p.seq + 2**31) // 2**32 * 2**32

    def _sequence(self, sensor: int, seq: int, now: float) -> int:
        """Record the gap before this packet; returns 1 when it arrives after a later one
        (it fills a recorded gap, or precedes the first number seen)."""
        last = self._last_seq(sensor)
        if last is not None and seq < last:
            self.db.execute("UPDATE missing SET filled_at=? WHERE sensor=? AND seq=?", (now, sensor, seq))
            return 1
        if last is not None and seq > last + 1:
            gap = range(last + 1, min(seq, last + 1 + MAX_GAP_RECORDED))
            self.db.executemany("INSERT OR IGNORE INTO missing VALUES (?,?,?,NULL)", [(sensor, s, now) for s in gap])
        self.last_seq[sensor] = seq
        return 0

    # -- sources
    def run_packets(self, records: list[bytes], batch: int = 256) -> None:
        """Serve the records of a packet file (`wire.read_packet_file`)."""
        now = time.time()
        self._handle_all([Message(None, raw, now) for raw in records], batch)

    def _handle_all(self, items: list, batch: int) -> None:
        """`handle` batch by batch; from a batch the database will not take on, the packets are
        kept in a packet file (`_keep_unstored`)."""
        for i in range(0, len(items), batch):
            try:
                self.handle(items[i : i + batch])
            except _NotStored as failure:
                raise self._keep_unstored(failure, [m.payload for m in items[i + batch :]],
                                          "they are still in the packet file given: serve it again once the database takes packets") from None  # fmt: skip

    def run_mqtt(self, url: str, pattern: str, stop: threading.Event, batch: int = 256, ready=lambda: None,
                 client_id: str = "", keep_session: bool = False, status_topic: str | None = None,
                 reload: threading.Event | None = None, load: Callable[[], Hosts] | None = None) -> None:  # fmt: skip
        """Serve until `stop` is set; `ready()` is called once the subscription is confirmed. A
        message is acknowledged to the broker only once it is stored (or kept in a packet file,
        `_keep_unstored`, when the database will not take it): whatever serve has taken in when it
        stops, or is killed, is either stored or still held by the broker. With `keep_session`,
        the broker keeps the subscription of `client_id` (`session_id`), and so those messages and
        the ones that come after serve stops, for its next run; without, it drops them. With
        `status_topic`, serve's availability is kept there, retained: 'online', 'offline'. Each
        time `reload` is set, between batches, the exports and keys are read again (`load`)."""
        self.stop, self.live = stop, True
        sub = Subscriber(url, pattern, client_id=client_id, notify=self.notify, keep_session=keep_session, manual_ack=True,
                         status_topic=status_topic)  # fmt: skip
        if self.state_topic is not None:
            self.publish = lambda topic, payload: sub.client.publish(topic, payload, qos=1, retain=True)
        ready()
        try:
            while not stop.is_set():
                self._store_taken(sub, batch, wait=0.2)
                if reload is not None and reload.is_set():
                    reload.clear()
                    self.reload(load)
                if self.silent_after:
                    self._check_silence(time.time())
            self._store_taken(sub, sys.maxsize, wait=0)  # what came before the stop (the broker sends more as it is acknowledged)
        except _NotStored as failure:
            more = [m.payload for m in sub.take(sys.maxsize, wait=0)]
            error = self._keep_unstored(failure, more, f"not acknowledged, they stay with the broker for session {client_id!r}, for serve's next run"
                                        if keep_session else "not acknowledged, and the broker keeps no session (--clean-session): lost")  # fmt: skip
            sub.ack(len(failure.raws) + len(more))
            if keep_session:
                error = EdgeaeError(f"{error}; the broker keeps what it holds beyond them for session {client_id!r}, for serve's next run")
            raise error from None
        finally:
            sub.close()

    def _store_taken(self, sub, batch: int, wait: float) -> int:
        """Store what the subscriber has (up to `batch`, waiting up to `wait` s for the first),
        then acknowledge it; returns how many."""
        taken = sub.take(batch, wait)
        if taken:
            self.handle(taken)
            sub.ack(len(taken))
        return len(taken)

    def close(self) -> None:
        self.db.close()


def session_id(db: str | Path, pattern: str) -> str:
    """The MQTT client id serve takes by default: the same for the same database and topic
    pattern, so that a restarted serve resumes its session at the broker (and two serves of
    different databases do not take over each other's). 23 letters and digits, the most MQTT 3.1.1
    obliges a broker to accept."""
    key = f"{Path(db).resolve()}\0{pattern}".encode()
    return f"edgeaeserve{hashlib.sha256(key).hexdigest()[:12]}"


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for a clean shutdown."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def reload_on_sighup() -> threading.Event:
    """An event set by SIGHUP (`systemctl reload`): `run_mqtt` then reads the exports and keys again."""
    reload = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    return reload


def load_keys(path: str | Path) -> dict[int, bytes]:
    """A keys file: JSON {"<sensor id>": "<hex key>", ...}, each sensor once, its id in decimal.

    Read as pairs, not a dict: a sensor given twice ("1" and "01", or "1" repeated) would
    otherwise keep one of its keys without a word, and its packets tagged with the other fail."""
    try:
        pairs = parse_json(existing_file(path, "keys file").read_text(), object_pairs_hook=tuple)
        if not isinstance(pairs, tuple):
            raise TypeError
        keys = [(int(k) if re.fullmatch("[0-9]{1,5}", k) else None, k, bytes.fromhex(v)) for k, v in pairs]
    except (OSError, ValueError, TypeError) as e:
        raise EdgeaeError(f"{path}: not a keys file of {{sensor: hex key}} ({e.__class__.__name__})") from None
    bad = [repr(k) if i is None else k for i, k, v in keys if i not in wire.SENSOR_IDS or not v]
    if not keys or bad:
        raise EdgeaeError(f"{path}: needs at least one sensor id 0..65535 with a non-empty hex key"
                          + (f" (bad: {', '.join(bad)})" if bad else ""))  # fmt: skip
    ids = [i for i, _, _ in keys]
    repeated = sorted({str(i) for i in ids if ids.count(i) > 1}, key=int)
    if repeated:
        raise EdgeaeError(f"{path}: sensor {', '.join(repeated)} given more than once (each sensor has one key)")
    return {i: wire.check_key(v, f"{path}: sensor {i}'s key") for i, _, v in keys}


#: The packets a sensor's state follows: scored, in order (a late packet does not turn it back).
_IN_ORDER = "sensor=? AND score IS NOT NULL AND reordered=0"


def _state(sensor: int, anomaly: bool, seq: int, timestamp: int, score: float, threshold: float | None, model_id: str) -> dict:
    """A sensor's state as the state topic carries it: anomalous or not since packet `seq`; `silent`
    (with `silent_since`, when its last packet came in) once no packet came for --silent-after."""
    return {"sensor": sensor, "anomaly": anomaly, "since_seq": seq, "since": iso_utc(timestamp), "score": score, "threshold": threshold,
            "model_id": model_id, "silent": False, "silent_since": None}  # fmt: skip

"""serve: every valid packet stored once, every bad one rejected with its reason, gaps recorded;
end to end through a real Mosquitto broker on a loopback port."""

import base64
import contextlib
import json
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, Stderr, save_npz
from edgeae import simulate, wire
from edgeae.errors import EdgeaeError
from edgeae.manifest import Export

KEYS = {1: "a1" * 16, 2: "b2" * 16, 3: "c3" * 16, 9: "d4" * 16}


def _bad_and_gap_packets(export_dir, valid_replay: bytes) -> tuple[list[bytes], dict]:
    """Injected packets (sensor 9 and bad ones) and what serve must make of them."""
    mid = Export.open(export_dir).model_id
    key = bytes.fromhex(KEYS[9])

    def pkt(seq, model=mid, k=key):
        return wire.encode(wire.Packet(model, 9, seq, 1_700_000_000 + seq, (1, -2, 3, -4), 17), k)

    good = [pkt(s) for s in (0, 1, 2, 5, 6)] + [pkt(4)]  # 3 never arrives, 4 arrives late
    flipped = bytearray(pkt(7))
    flipped[18] ^= 0x10
    bad = {
        "truncated": pkt(8)[:-5],
        "bad_crc": bytes(flipped),
        "wrong_model": pkt(9, model=(mid + 1) % 2**32),
        "bad_tag": pkt(10, k=b"not the key"),
        "replayed_seq": valid_replay,
    }
    return good + list(bad.values()), {"good": len(good), "reasons": set(bad)}


def _check_db(db, expect_per_sensor: dict):
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    per = dict(con.execute("SELECT sensor, COUNT(*) FROM packets GROUP BY sensor").fetchall())
    assert per == expect_per_sensor
    for sensor, n in expect_per_sensor.items():
        if sensor != 9:  # the encoded streams: every sequence number exactly once
            seqs = [s for (s,) in con.execute("SELECT seq FROM packets WHERE sensor=? ORDER BY seq", (sensor,))]
            assert seqs == list(range(n))
    rejected = dict(con.execute("SELECT reason, COUNT(*) FROM rejected GROUP BY reason").fetchall())
    assert rejected == {r: 1 for r in ("truncated", "bad_crc", "wrong_model", "bad_tag", "replayed_seq")}
    assert con.execute("SELECT seq, filled_at IS NULL FROM missing WHERE sensor=9 ORDER BY seq").fetchall() == [(3, 1), (4, 0)]
    assert con.execute("SELECT reordered FROM packets WHERE sensor=9 AND seq=4").fetchone() == (1,)
    row = con.execute("SELECT code, residual, reconstruction_rms, score, anomaly FROM packets WHERE sensor=1 AND seq=0").fetchone()
    assert len(json.loads(row[0])) == 4 and 0 <= row[1] <= 255 and len(json.loads(row[2])) == 4 and np.isfinite(row[3])
    con.close()


@pytest.fixture(scope="module")
def streams(tmp_path_factory):
    d = tmp_path_factory.mktemp("streams")
    return {s: save_npz(d / f"s{s}.npz", simulate.machine(seconds=4, seed=10 + s)) for s in (1, 2, 3)}


def _encode_file(export, stream, sensor, out):
    from edgeae import device

    enc = device.Encoder(export, sensor, bytes.fromhex(KEYS[sensor]), t0=1_700_000_000, period=0.001)
    return list(enc.packets(device.Source(str(stream), enc.ex)))


def test_serve_packet_file(tmp_path, small_export, streams):
    from edgeae.serve import Server

    sent = {s: _encode_file(small_export, streams[s], s, None) for s in (1, 2, 3)}
    injected, expect = _bad_and_gap_packets(small_export, sent[1][0])
    (tmp_path / "p.bin").write_bytes(b"".join(wire.frame(p) for s in (1, 2, 3) for p in sent[s]) +
                                     b"".join(wire.frame(p) for p in injected))  # fmt: skip
    server = Server(small_export, tmp_path / "r.sqlite", {k: bytes.fromhex(v) for k, v in KEYS.items()})
    server.run_packets(wire.read_packet_file(tmp_path / "p.bin"), batch=50)  # batches split the injected ones
    server.close()
    expect_per_sensor = {1: len(sent[1]), 2: len(sent[2]), 3: len(sent[3]), 9: expect["good"]}
    _check_db(tmp_path / "r.sqlite", expect_per_sensor)
    assert server.stored == sum(expect_per_sensor.values()) and server.rejected == {r: 1 for r in expect["reasons"]}

    from test_cli import edgeae

    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({str(k): v for k, v in KEYS.items()}))
    proc = edgeae("serve", small_export, "--packets", tmp_path / "p.bin", "--db", tmp_path / "cli.sqlite", "--keys", keys)
    reasons = ", ".join(f"1 {r}" for r in sorted(expect["reasons"]))
    assert proc.returncode == 0 and proc.stderr.strip().endswith(
        f"stored {server.stored}, rejected 5 ({reasons}; kept, raw, in the rejected table of {tmp_path / 'cli.sqlite'})"), proc.stderr

    from edgeae.results import score_series, thresholds

    assert thresholds(tmp_path / "r.sqlite", [1]) == {1: sorted(h.scorer.threshold_ for h in server.hosts.by_id.values())}  # the plot draws it across
    series = score_series(tmp_path / "r.sqlite")  # what `results --plot` draws: every stored packet, per sensor
    assert {s: len(d["score"]) for s, d in series.items()} == {1: len(sent[1]), 2: len(sent[2]), 3: len(sent[3]), 9: expect["good"]}
    assert all(np.all(np.diff(d["timestamp"]) >= 0) for d in series.values())
    proc = edgeae("results", tmp_path / "r.sqlite", "--plot", tmp_path / "scores.png")
    assert proc.returncode == 0 and "scores plotted in" in proc.stderr, proc.stderr
    assert (tmp_path / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_packet_from_a_device_without_a_clock_is_stamped_on_arrival(tmp_path, small_export):
    """Many LoRaWAN nodes keep no clock and send timestamp 0; serve stored 0, and results, its plot
    and the state topic put those windows in 1970. Now it stores the time the packet came in."""
    from edgeae.serve import Server

    ex = Export.open(small_export)
    raws = [wire.encode(wire.Packet(ex.model_id, 3, seq, stamp, (0,) * ex.manifest["code_size"], 10))
            for seq, stamp in ((0, 0), (1, 1_700_000_000), (2, 0))]  # fmt: skip
    before = int(time.time())
    server = Server(small_export, tmp_path / "r.sqlite", state_topic="s/{sensor}")
    server.run_packets(raws)
    server.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "r.sqlite")) as con:
        stamps = [t for (t,) in con.execute("SELECT timestamp FROM packets ORDER BY seq")]
    assert stamps[1] == 1_700_000_000 and all(before <= t <= time.time() for t in stamps[::2])
    assert server.states[3]["since_seq"] == 0 and server.states[3]["since"] >= time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(before))


@pytest.mark.parametrize("envelope", ["tts", "chirpstack"])
def test_a_clockless_packet_over_lorawan_is_stamped_when_the_network_server_received_it(tmp_path, small_export, envelope):
    """Packets a broker held while serve was stopped all came in when serve started again: stamped
    on serve's arrival, a clockless sensor's hour of windows landed on one second. The network
    server's uplink says when it received each; a time it does not give, or garbles, is serve's."""
    from edgeae.mqtt import Message
    from edgeae.serve import Server

    ex = Export.open(small_export)
    raws = [wire.encode(wire.Packet(ex.model_id, 3, seq, stamp, (0,) * ex.manifest["code_size"], 10))
            for seq, stamp in ((0, 0), (1, 1_700_000_000), (2, 0), (3, 0))]  # fmt: skip
    field = {"tts": "received_at", "chirpstack": "time"}[envelope]
    messages = [_uplink(envelope, raw).replace(b"2026-11-29T10:00:00Z", when) for raw, when in
                zip(raws, [b"2026-11-29T10:00:00.123456789Z", b"2026-11-29T10:00:01Z", b"2026-11-29T10:00:02Z", b"yesterday"])]  # fmt: skip
    assert all(field.encode() in m for m in messages)
    server = Server(small_export, tmp_path / "r.sqlite", envelope=envelope)
    server.handle([Message("up", m, 1_800_000_000.5, False) for m in messages])
    server.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "r.sqlite")) as con:
        stamps = [t for (t,) in con.execute("SELECT timestamp FROM packets ORDER BY seq")]
    assert stamps == [1_795_946_400, 1_700_000_000, 1_795_946_402, 1_800_000_000]


def test_a_locked_database_is_waited_out_and_what_it_refuses_is_kept(tmp_path, small_export, streams):
    """Another connection writing to the results database (a DB browser, a second program) made
    serve fail with a traceback after SQLite's 5 s, losing the batch in hand; it now holds the
    packets until the lock goes, or, when stopped meanwhile, writes them to a packet file."""
    import threading

    from edgeae.serve import Server

    first, second = (_encode_file(small_export, streams[s], s, None) for s in (1, 2))
    db, notes = tmp_path / "r.sqlite", []
    server = Server(small_export, db, notify=notes.append)
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # holds the write lock: serve can read, not write
    threading.Timer(6, holder.commit).start()
    server.run_packets(first, batch=100)
    assert server.stored == len(first) and len(notes) == 2, notes
    assert "locked by another connection" in notes[0] and "unlocked; the 100 packet(s) held are stored" in notes[1]
    with contextlib.closing(sqlite3.connect(db)) as con:  # the failed attempt's sequence bookkeeping was undone
        assert con.execute("SELECT COUNT(*), SUM(reordered) FROM packets").fetchone() == (len(first), 0)
        assert con.execute("SELECT COUNT(*) FROM missing").fetchone() == (0,)

    holder.execute("BEGIN IMMEDIATE")
    server.stop.set()  # SIGTERM while locked
    with pytest.raises(EdgeaeError, match=f"the {len(second)} not stored are kept in .*unstored") as e:
        server.run_packets(second, batch=100)
    holder.rollback()
    (kept,) = tmp_path.glob("r.sqlite.unstored-*.bin")
    assert str(kept) in str(e.value) and wire.read_packet_file(kept) == second
    server.stop.clear()
    server.run_packets(wire.read_packet_file(kept))
    server.close()
    assert server.stored == len(first) + len(second) and not server.rejected


def test_sequence_numbers_go_on_past_the_32_bit_counter(tmp_path, small_export):
    """The packet's counter wraps at 2^32 (2.2 years of a packet every 16 ms); serve took the
    packets after it (0, 1, ...) for replays of the first ones, and rejected every one."""
    from edgeae.serve import REPLAYED, Server

    mid = Export.open(small_export).model_id
    raw = {s: wire.encode(wire.Packet(mid, 4, s % 2**32, 1_700_000_000 + s % 100, (1, -2, 3, -4), 17)) for s in range(2**32 - 3, 2**32 + 3)}
    server = Server(small_export, tmp_path / "r.sqlite")
    server.run_packets([raw[2**32 - 3], raw[2**32 - 1]])  # one missing before the wrap
    server.run_packets([raw[2**32], raw[2**32 + 2], raw[2**32 - 2], raw[2**32 - 1], raw[2**32 + 1]])  # the late one, a replay
    server.close()
    assert server.stored == 6 and server.rejected == {REPLAYED: 1}
    with contextlib.closing(sqlite3.connect(tmp_path / "r.sqlite")) as con:
        assert [s for (s,) in con.execute("SELECT seq FROM packets ORDER BY seq")] == list(range(2**32 - 3, 2**32 + 3))
        assert con.execute("SELECT seq, filled_at IS NOT NULL FROM missing ORDER BY seq").fetchall() == [(2**32 - 2, 1), (2**32 + 1, 1)]
        assert con.execute("SELECT seq FROM rejected").fetchall() == [(2**32 - 1,)]


def test_two_serves_storing_the_same_packets_store_each_once(tmp_path, small_export, streams):
    """A second serve on the same database (`serve --packets` of a packet file while the service
    runs) checked a packet before the other stored it and inserted it after: 'UNIQUE constraint
    failed', and the batch went to a packet file as unstorable. Each batch now takes the write lock
    before its checks: the packets the other stored first are replays."""
    import threading

    from edgeae.serve import REPLAYED, Server

    packets, db = _encode_file(small_export, streams[1], 1, None), tmp_path / "r.sqlite"
    first, second = Server(small_export, db), Server(small_export, db)
    second.run_packets(packets[:1])  # its bookkeeping of sensor 1 made before the other's batch
    read, other = second.hosts.read, threading.Thread(target=first.run_packets, args=(packets[1:],))

    def read_while_the_other_stores(batch):  # the other serve's packets, between this batch's checks and its insert
        second.hosts.read = read
        other.start()
        other.join(2)  # without the lock, they are stored by now; with it, they wait for this batch
        return read(batch)

    second.hosts.read = read_while_the_other_stores
    second.run_packets(packets[1:], batch=len(packets))
    other.join(30)
    # what the other stored meanwhile is no gap: sensor 2's packets 1-49 are not missing before 50
    more = _encode_file(small_export, streams[2], 2, None)
    second.run_packets(more[:1]), first.run_packets(more[1:50]), second.run_packets(more[50:])
    first.close(), second.close()
    packets += more
    assert second.stored + first.stored == len(packets) and first.rejected[REPLAYED] == len(packets) - len(more) - 1
    with contextlib.closing(sqlite3.connect(db)) as con:
        assert con.execute("SELECT COUNT(*), COUNT(DISTINCT sensor || '/' || seq), SUM(reordered) FROM packets").fetchone() == (len(packets),) * 2 + (0,)
        assert con.execute("SELECT COUNT(*) FROM missing").fetchone() == (0,)
    assert not list(tmp_path.glob("r.sqlite.unstored-*"))


def test_on_a_full_disk_serve_says_where_the_packets_are(tmp_path, small_export, sim_test):
    """The database and the packet file serve keeps what it refuses in share a disk: when both
    failed, serve said only '[Errno 28] No space left on device', nothing of the packets. A file
    size limit (RLIMIT_FSIZE) is a full disk as the process sees it."""
    import resource

    from test_cli import assert_one_line_error

    from edgeae.serve import Server

    packets, db = tmp_path / "p.bin", tmp_path / "r.sqlite"
    wire.write_packet_file(packets, _encode_file(small_export, sim_test, 1, None))
    Server(small_export, db).close()
    limit = db.stat().st_size + 8192  # room for the database's first pages, not for all of the packets
    assert packets.stat().st_size > limit
    proc = subprocess.run([sys.executable, "-m", "edgeae", "serve", small_export, "--packets", packets, "--db", db], cwd=ROOT,
                          capture_output=True, text=True, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit,) * 2))  # fmt: skip
    assert_one_line_error(proc, f"{db}: cannot store packets (")
    assert re.search(r"nor keep the \d+ not stored in a packet file \(.*unstored-.*\.bin: File too large\); they are still in the "
                     "packet file given: serve it again once the database takes packets$", proc.stderr.strip()), proc.stderr  # fmt: skip
    assert not list(tmp_path.glob("*unstored*")) and not list(tmp_path.glob(".*tmp"))  # no half-written file


# ---------------------------------------------------------------- through Mosquitto


@pytest.fixture
def broker(tmp_path):
    """A Mosquitto broker on a free loopback port, for this test only."""
    from edgeae.mqtt import local_broker

    with local_broker(tmp_path) as url:
        yield url


def test_local_broker_that_never_answers_is_stopped_and_named(tmp_path, monkeypatch):
    """A broker that does not answer in time: one error, and the process stopped. The readiness
    loop read the running broker's stderr first, which blocks until it exits: a hang. A probe that
    connects to itself (a TCP self-connect, before mosquitto listens) is not taken for the broker."""
    from edgeae import mqtt

    class SelfConnected:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def getsockname(self):
            return ("127.0.0.1", 1)

        getpeername = getsockname

    started = []
    real_popen = subprocess.Popen
    monkeypatch.setattr(mqtt.socket, "create_connection", lambda *a, **k: SelfConnected())
    monkeypatch.setattr(mqtt.subprocess, "Popen", lambda *a, **k: started.append(real_popen(*a, **k)) or started[-1])
    with pytest.raises(EdgeaeError, match=r"mosquitto did not start on port \d+ within 0.5 s"):
        with mqtt.local_broker(tmp_path, timeout=0.5):
            pass
    assert started[0].poll() is not None


def _count(db) -> int:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return con.execute("SELECT COUNT(*) FROM packets").fetchone()[0]


_STARTED: list[subprocess.Popen] = []


def _cli(*args, **kw):
    """A running edgeae command; killed after the test if still running (a failed test left serve running)."""
    _STARTED.append(subprocess.Popen([sys.executable, "-m", "edgeae", *map(str, args)], cwd=ROOT, **kw))
    return _STARTED[-1]


@pytest.fixture(autouse=True)
def _no_command_outlives_its_test():
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_end_to_end_through_mosquitto(tmp_path, small_export, streams, broker):
    from edgeae.mqtt import Publisher

    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({str(k): v for k, v in KEYS.items()}))
    db = tmp_path / "r.sqlite"
    serve = _cli("serve", small_export, "--mqtt", broker, "--db", db, "--keys", keys, stderr=subprocess.PIPE, text=True)
    Stderr(serve).wait_for("serving")

    counts = {}
    for s in (1, 2, 3):  # three device loops publishing through the broker
        enc = _cli("encode", small_export, "--data", streams[s], "--sensor", s, "--mqtt", broker, "--key", KEYS[s],
                   "--t0", "1700000000", "--period", "0.001", stderr=subprocess.PIPE, text=True)  # fmt: skip
        _, err = enc.communicate(timeout=120)
        assert enc.returncode == 0, err
        counts[s] = int(err.split(": ")[1].split()[0])
    first = _encode_file(small_export, streams[1], 1, None)[0]  # sensor 1, seq 0 again: a replay
    injected, expect = _bad_and_gap_packets(small_export, first)
    pub = Publisher(broker)
    for raw in injected:
        pub.publish("edgeae/9/up", raw)
        pub.flush()
    pub.close()

    total = sum(counts.values()) + expect["good"] + len(expect["reasons"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        con = sqlite3.connect(db)
        n = con.execute("SELECT (SELECT COUNT(*) FROM packets) + (SELECT COUNT(*) FROM rejected)").fetchone()[0]
        con.close()
        if n >= total:
            break
        time.sleep(0.2)
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(30) == 0
    _check_db(db, {**counts, 9: expect["good"]})

    out = subprocess.run([sys.executable, "-m", "edgeae", "results", db, "--parquet", tmp_path / "r.parquet"],
                         capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["open_gaps"] == {"9": 1} and summary["reordered"] == 1
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "r.parquet").num_rows == summary["packets"] == total - len(expect["reasons"])


def test_serve_publishes_each_sensors_state_when_it_changes(tmp_path, small_export, broker):
    """Anomalies were only rows in the database, for someone to query. With --state-topic, serve
    publishes each sensor's state, retained, when a stored packet changes it: a dashboard or an
    alarm subscribes, and one that comes later still gets the current state."""
    from edgeae import device
    from edgeae.mqtt import Publisher, Subscriber

    s = simulate.machine(seconds=8, seed=5)  # faults in the second half
    packets = list(device.Encoder(small_export, 4, t0=1_700_000_000, period=0.001).packets(device.windows_from_series(s, Export.open(small_export))))
    db = tmp_path / "r.sqlite"
    serve = _cli("serve", small_export, "--mqtt", broker, "--db", db, "--state-topic", "plant/{sensor}/state", stderr=subprocess.PIPE, text=True)
    Stderr(serve).wait_for("serving")
    watcher = Subscriber(broker, "plant/+/state")
    pub = Publisher(broker)
    for raw in packets:
        pub.publish("edgeae/4/up", raw)
    pub.flush()
    pub.close()
    deadline = time.monotonic() + 60
    while _count(db) < len(packets) and time.monotonic() < deadline:
        time.sleep(0.2)
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(30) == 0
    time.sleep(0.5)
    seen = watcher.take(10_000, wait=1)
    watcher.close()

    with contextlib.closing(sqlite3.connect(db)) as con:
        flags = [bool(a) for (a,) in con.execute("SELECT anomaly FROM packets WHERE sensor=4 ORDER BY seq")]
    starts = [i for i, f in enumerate(flags) if i == 0 or f != flags[i - 1]]  # where each run of one state begins
    assert 2 < len(starts) < len(flags) / 4  # the faults come and go
    states = [json.loads(m.payload) for m in seen]
    assert all(m.topic == "plant/4/state" for m in seen)
    assert [(x["since_seq"], x["anomaly"]) for x in states] == [(i, flags[i]) for i in starts]
    assert states[-1]["since"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wire.decode(packets[starts[-1]]).timestamp))
    late = Subscriber(broker, "plant/+/state")  # a dashboard started afterwards: the retained state
    (retained,) = late.take(10, wait=2)
    late.close()
    assert json.loads(retained.payload) == states[-1]


def test_serve_says_when_a_sensor_falls_silent_and_keeps_states_over_a_restart(tmp_path, small_export, broker):
    """A state was published only on a change, so a sensor whose battery died stayed 'normal' on a
    dashboard for ever, and a restarted serve began each state's `since` anew. With --silent-after,
    a sensor that sends nothing for that long is published silent (and said on stderr) until it sends
    again; a restarted serve takes the states up from the database."""
    from edgeae import device
    from edgeae.host import Host
    from edgeae.mqtt import Publisher, Subscriber

    s = simulate.machine(seconds=8, seed=5)
    packets = list(device.Encoder(small_export, 4, t0=1_700_000_000, period=0.001).packets(device.windows_from_series(s, Export.open(small_export))))
    flags = [r.anomaly for r in Host(small_export).read([wire.decode(raw) for raw in packets])]
    a = len(packets) // 4  # silence after packet a - 1, in the healthy half
    b = next(i for i in range(len(packets) * 3 // 4, len(packets)) if flags[i] == flags[i - 1] == flags[i - 2])  # restart within a run
    run_start = max(i for i in range(b) if i == 0 or flags[i] != flags[i - 1])
    db, watcher = tmp_path / "r.sqlite", Subscriber(broker, "plant/+/state")
    args = ("serve", small_export, "--mqtt", broker, "--db", db, "--state-topic", "plant/{sensor}/state", "--silent-after", "1")

    def send(part):
        pub = Publisher(broker)
        for raw in part:
            pub.publish("edgeae/4/up", raw)
        pub.flush()
        pub.close()

    seen: list[dict] = []  # every state published, in order

    def next_state(after: int, which=lambda state: True) -> int:
        """The index in `seen` of the first state after `after` that is `which`, waiting for it."""
        deadline = time.monotonic() + 30
        while not any(which(x) for x in seen[after + 1 :]) and time.monotonic() < deadline:
            seen.extend(json.loads(m.payload) for m in watcher.take(10_000, wait=0.2))
        return next(i for i in range(after + 1, len(seen)) if which(seen[i]))

    serve = _cli(*args, stderr=subprocess.PIPE, text=True)
    log = Stderr(serve)
    log.wait_for("serving")
    send(packets[:a])
    log.wait_for("sensor 4: silent, no packet for")
    i = next_state(-1, lambda state: state["silent"])
    before, silent = seen[i - 1 : i + 1]
    assert silent == {**before, "silent": True, "silent_since": silent["silent_since"]} and not before["silent"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", silent["silent_since"])
    send(packets[a:b])
    log.wait_for("sensor 4: heard again after")
    log.wait_for(until=lambda: _count(db) == b)
    again = seen[next_state(i)]
    assert not again["silent"] and again["silent_since"] is None
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(30) == 0
    time.sleep(0.5)
    seen.extend(json.loads(m.payload) for m in watcher.take(10_000, wait=1))
    last = seen[-1]
    assert last["since_seq"] == run_start and last["anomaly"] == flags[b]
    assert all(x != y for x, y in zip(seen, seen[1:]))  # each state once: a change, or news of silence

    serve = _cli(*args, stderr=subprocess.PIPE, text=True)  # restarted: a state's since is kept
    Stderr(serve).wait_for("serving")
    send(packets[b:])
    deadline = time.monotonic() + 60
    while _count(db) < len(packets) and time.monotonic() < deadline:
        time.sleep(0.2)
    first = seen[next_state(len(seen) - 1, lambda state: not state["silent"])]  # (a slow start may say it silent first)
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(30) == 0
    watcher.close()
    assert first == {**last, "silent": False, "silent_since": None}


def test_serve_keeps_its_availability_on_a_status_topic(tmp_path, small_export, broker):
    """A dashboard showing serve's states could not tell a stopped or dead serve from a quiet
    plant. With --status-topic: 'online' while it runs, 'offline' when it stops, and 'offline'
    from the broker (the last will) when it is killed."""
    from edgeae.mqtt import Subscriber

    watcher = Subscriber(broker, "plant/serve/status")
    args = ("serve", small_export, "--mqtt", broker, "--db", tmp_path / "r.sqlite", "--status-topic", "plant/serve/status")

    def next_status():
        (m,) = watcher.take(1, wait=10)
        return m.payload.decode()

    for sig in (signal.SIGTERM, signal.SIGKILL):
        serve = _cli(*args, stderr=subprocess.PIPE, text=True)
        Stderr(serve).wait_for("serving")
        assert next_status() == "online"
        serve.send_signal(sig)
        serve.wait(30)
        assert next_status() == "offline"
    watcher.close()
    late = Subscriber(broker, "plant/serve/status")  # retained: what a dashboard started now sees
    assert [m.payload for m in late.take(5, wait=2)] == [b"offline"]
    late.close()


@pytest.mark.slow
@pytest.mark.slow
def test_packets_serve_can_keep_nowhere_stay_with_the_broker(tmp_path, small_export, streams, broker, monkeypatch):
    """When neither the database nor a packet file takes what serve took in (a full disk), serve
    acknowledges none of it: the broker keeps it for serve's session, and the next run stores it."""
    import errno
    import threading

    from edgeae.serve import Server

    def run(server, stop, failures):
        try:
            server.run_mqtt(broker, "edgeae/+/up", stop, client_id="fulldisk", keep_session=True, ready=ready.set)
        except EdgeaeError as e:
            failures.append(str(e))

    db, notes, failures, ready, stop = tmp_path / "r.sqlite", [], [], threading.Event(), threading.Event()
    server = Server(small_export, db, notify=notes.append)
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # serve cannot write; stopped meanwhile, it keeps what it took in a packet file
    serving = threading.Thread(target=run, args=(server, stop, failures))
    serving.start()
    assert ready.wait(30)
    enc = _cli("encode", small_export, "--data", streams[1], "--sensor", 1, "--mqtt", broker,
               "--t0", "1700000000", "--period", "0.001", stderr=subprocess.PIPE, text=True)  # fmt: skip
    _, err = enc.communicate(timeout=120)
    sent = int(err.split(": ")[1].split()[0])
    while not any("locked by another connection" in n for n in notes):
        time.sleep(0.1)

    def disk_full(path, packets):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(wire, "write_packet_file", disk_full)
    stop.set()
    serving.join(60)
    holder.rollback()
    holder.close()
    server.close()
    (failure,) = failures
    assert "nor keep the" in failure and failure.endswith("No space left on device); not acknowledged, they stay with the broker "
                                                          "for session 'fulldisk', for serve's next run"), failure  # fmt: skip
    assert _count(db) == 0 and not list(tmp_path.glob("*unstored*"))

    ready.clear()
    stop.clear()
    server = Server(small_export, db)
    serving = threading.Thread(target=run, args=(server, stop, failures))
    serving.start()
    deadline = time.time() + 60
    while _count(db) < sent and time.time() < deadline:
        time.sleep(0.2)
    stop.set()
    serving.join(60)
    server.close()
    with contextlib.closing(sqlite3.connect(db)) as con:
        assert [r[0] for r in con.execute("SELECT seq FROM packets ORDER BY seq")] == list(range(sent))


def test_serve_stopped_while_its_database_is_locked_keeps_every_packet(tmp_path, small_export, streams, broker):
    """What serve took in is kept in a packet file; what the broker did not send it yet (it sends
    only 20 unacknowledged at a time) waits there for serve's session. Between them, every packet."""
    db = tmp_path / "r.sqlite"
    serve = _cli("serve", small_export, "--mqtt", broker, "--db", db, stderr=subprocess.PIPE, text=True)
    log = Stderr(serve)
    log.wait_for("serving")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    enc = _cli("encode", small_export, "--data", streams[1], "--sensor", 1, "--mqtt", broker,
               "--t0", "1700000000", "--period", "0.001", stderr=subprocess.PIPE, text=True)  # fmt: skip
    _, err = enc.communicate(timeout=120)
    sent = int(err.split(": ")[1].split()[0])
    log.wait_for("locked by another connection")
    time.sleep(1)  # the last packets through the broker
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(60) == 2
    holder.rollback()
    holder.close()
    (kept,) = tmp_path.glob("r.sqlite.unstored-*.bin")
    log.wait_for(f" not stored are kept in {kept}")
    assert "the broker keeps what it holds beyond them for session 'edgeaeserve" in log.lines[-1]
    in_file = int(log.lines[-1].split("; the ")[1].split()[0])
    assert 0 < in_file < sent
    serve = _cli("serve", small_export, "--mqtt", broker, "--db", db, stderr=subprocess.PIPE, text=True)
    log = Stderr(serve)
    log.wait_for("resumed session", until=lambda: _count(db) == sent - in_file)
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(30) == 0
    proc = subprocess.run([sys.executable, "-m", "edgeae", "serve", small_export, "--packets", kept, "--db", db],
                          capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert proc.stderr.strip().endswith(f"stored {in_file}, rejected 0"), proc.stderr
    with contextlib.closing(sqlite3.connect(db)) as con:
        assert [r[0] for r in con.execute("SELECT seq FROM packets ORDER BY seq")] == list(range(sent))


@pytest.mark.slow
def test_packets_serve_took_in_survive_it_being_killed(tmp_path, small_export, streams, broker):
    """serve acknowledged each message when it arrived, before storing it: killed outright
    (SIGKILL, out of memory) while it held packets, it lost them, and the broker had let them go.
    It now acknowledges a batch once it is stored, so the broker sends them again to its session."""
    from edgeae.mqtt import Publisher

    packets = _encode_file(small_export, streams[1], 1, None)[:6]
    db = tmp_path / "r.sqlite"
    serve = _cli("serve", small_export, "--mqtt", broker, "--db", db, stderr=subprocess.PIPE, text=True)
    log = Stderr(serve)
    log.wait_for("serving")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # serve takes the packets in and cannot store them
    pub = Publisher(broker)
    for raw in packets:
        pub.publish("edgeae/1/up", raw)
    pub.close()
    log.wait_for("locked by another connection")
    time.sleep(0.5)  # the last packets through the broker
    serve.kill()
    serve.wait()
    holder.rollback()
    holder.close()
    assert _count(db) == 0
    serve = _cli("serve", small_export, "--mqtt", broker, "--db", db, stderr=subprocess.PIPE, text=True)
    log = Stderr(serve)
    log.wait_for("resumed session", until=lambda: _count(db) == 6)
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(30) == 0
    log.wait_for("stored 6, rejected 0")


def test_acknowledged_messages_come_once_and_the_rest_come_again(broker):
    """A subscriber that acknowledges what it took, then disconnects: the broker sends its session
    the rest, and only the rest, on the next connect. Closing the socket with messages unread
    reset it, and the acknowledgements written just before were lost with it (sent again, they
    would be stored twice)."""
    from edgeae.mqtt import Publisher, Subscriber

    sub = Subscriber(broker, "ack/#", client_id="acktest", keep_session=True, manual_ack=True)
    pub = Publisher(broker)
    for i in range(300):
        pub.publish("ack/x", i.to_bytes(2, "big"))
    pub.close()
    got = sub.take(1000, wait=1)
    sub.ack(len(got))
    sub.close()
    sub = Subscriber(broker, "ack/#", client_id="acktest", keep_session=True, manual_ack=True)
    while more := sub.take(1000, wait=1):
        sub.ack(len(more))
        got += more
    sub.close()
    assert [int.from_bytes(m[1], "big") for m in got] == list(range(300))


def _live_stream(export) -> tuple[list[str], int, int]:
    """CSV lines for `encode --data -` (the header first), and how many of them make 3 windows and 6."""
    ex = Export.open(export)
    s = simulate.machine(seconds=1, seed=4)
    rows = [",".join(s.channels) + "\n"] + [",".join(f"{v:.6g}" for v in r) + "\n" for r in s.values]
    return rows, 1 + ex.window + 2 * ex.hop, 1 + ex.window + 5 * ex.hop


@pytest.mark.slow
def test_serve_and_encode_carry_on_when_the_broker_restarts(tmp_path, small_export):
    """paho reconnected by itself, but to a restarted broker that had forgotten serve's
    subscription: serve then received nothing more, and said nothing. Now serve subscribes again,
    and both sides say when they lose and regain the broker; a live stream through a broker
    restart arrives whole."""
    from edgeae.mqtt import local_broker

    rows, before, total = _live_stream(small_export)
    db = tmp_path / "r.sqlite"
    with local_broker(tmp_path) as url:
        serve = _cli("serve", small_export, "--mqtt", url, "--db", db, stderr=subprocess.PIPE, text=True)
        served = Stderr(serve)
        served.wait_for("serving")
        enc = _cli("encode", small_export, "--data", "-", "--sensor", 1, "--mqtt", url, "--t0", "1700000000",
                   stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        encoded = Stderr(enc)
        enc.stdin.write("".join(rows[:before]))
        enc.stdin.flush()
        served.wait_for(until=lambda: _count(db) == 3)
    for log in (served, encoded):
        log.wait_for(f"lost the MQTT broker at {url}")
    with local_broker(tmp_path, port=int(url.rsplit(":", 1)[1])):
        for log in (served, encoded):
            log.wait_for(f"reconnected to the MQTT broker at {url}")
        enc.stdin.write("".join(rows[before:total]))
        enc.stdin.close()
        assert enc.wait(60) == 0
        served.wait_for(until=lambda: _count(db) == 6)
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0
    served.wait_for("stored 6, rejected 0")


@pytest.mark.parametrize("unlocked", ["before the broker is back", "after"])
def test_what_the_broker_sends_again_after_a_reconnect_is_stored_once(tmp_path, small_export, streams, unlocked):
    """serve acknowledges a packet once stored, so the packets it holds when the broker goes
    away are sent again, marked duplicate, by a broker that kept its session (here across a
    restart). They were rejected as replayed: a network blip looked like an attack. A copy the
    broker sends again is now stored once, and counted apart; a replay by anyone else is still
    a replay (MQTT passes no publisher's DUP flag on). A bad packet sent again is kept once."""
    from edgeae.mqtt import Publisher, local_broker

    packets = _encode_file(small_export, streams[1], 1, None)[:7]
    db = tmp_path / "r.sqlite"
    with local_broker(tmp_path, persistent=True) as url:
        serve = _cli("serve", small_export, "--mqtt", url, "--db", db, stderr=subprocess.PIPE, text=True)
        log = Stderr(serve)
        log.wait_for("serving")
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # serve takes the packets in and cannot store them yet
        pub = Publisher(url)
        for raw in [packets[0][:-5], *packets[:6]]:  # a truncated one first
            pub.publish("edgeae/1/up", raw)
        pub.close()
        log.wait_for("locked by another connection")
        time.sleep(0.5)  # the last packets through the broker
    log.wait_for(f"lost the MQTT broker at {url}")
    if unlocked != "after":
        holder.rollback()
        log.wait_for(until=lambda: _count(db) == 6)
    with local_broker(tmp_path, port=int(url.rsplit(":", 1)[1]), persistent=True):
        log.wait_for(f"reconnected to the MQTT broker at {url}")
        if unlocked == "after":
            holder.rollback()
        pub = Publisher(url)
        pub.publish("edgeae/1/up", packets[6])  # after what the broker sends again
        pub.close()
        log.wait_for(until=lambda: _count(db) == 7)
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0
    holder.close()
    again = re.search(r"stored 7, rejected 1 \(1 truncated; .*\); (\d+) sent again by the broker after a reconnect, kept once", log.lines[-1])
    assert again and int(again[1]) > 0, log.lines[-1]


@pytest.mark.parametrize("clean", [False, True])
def test_packets_published_while_serve_is_stopped_are_stored_when_it_is_back(tmp_path, small_export, streams, broker, clean):
    """serve subscribed with a clean session: a restart (a deploy, a reboot of the host) lost
    every packet published meanwhile, a gap in the results for good. It now keeps its session at
    the broker, which holds them for it; --clean-session (for a broker that keeps none) loses them."""
    from edgeae.mqtt import Publisher

    packets = _encode_file(small_export, streams[1], 1, None)[:6]
    db = tmp_path / "r.sqlite"
    pub = Publisher(broker)
    stored = [0, 1, 5] if clean else list(range(6))
    for start, stop in ((0, 2), (2, 5), (5, 6)):  # before serve stops, while it is stopped, once it is back
        if start != 2:
            serve = _cli("serve", small_export, "--mqtt", broker, "--db", db, *["--clean-session"] * clean, stderr=subprocess.PIPE, text=True)
            log = Stderr(serve)
            log.wait_for("keeping no session" if clean else ", its session kept")
        for raw in packets[start:stop]:
            pub.publish("edgeae/1/up", raw)
        pub.flush()
        if start != 2:
            log.wait_for(until=lambda: _count(db) == len([n for n in stored if n < stop]))
            serve.send_signal(signal.SIGTERM)
            assert serve.wait(30) == 0
    pub.close()
    log.wait_for(f"stored {len(stored) - 2}, rejected 0")  # the second run's
    assert any("resumed session 'edgeaeserve" in line for line in log.lines) != clean
    with contextlib.closing(sqlite3.connect(db)) as con:
        assert [r[0] for r in con.execute("SELECT seq FROM packets ORDER BY seq")] == stored
        assert con.execute("SELECT COUNT(*) FROM missing").fetchone()[0] == 6 - len(stored)


def test_packets_published_while_the_broker_is_away_count_once_it_acknowledges_them(tmp_path):
    """paho resends them on reconnect, but its handle on each still read 'not connected', and
    waiting on it raised RuntimeError: encode died with a traceback after any outage."""
    from edgeae.mqtt import Publisher, local_broker

    with local_broker(tmp_path) as url:
        pub = Publisher(url)
    while pub.client.is_connected():
        time.sleep(0.05)
    for i in range(3):
        pub.publish("edgeae/1/up", bytes([i]))
    with local_broker(tmp_path, port=int(url.rsplit(":", 1)[1])):
        pub.flush()
        assert pub.close() == []


def test_packets_the_broker_never_acknowledges_are_kept_in_a_packet_file(tmp_path, small_export, streams):
    """The broker goes away mid-stream and stays away: encode gave up after 30 s with every packet
    paho still held lost (from a live stream, for good). They are now kept in a packet file."""
    from edgeae import device
    from edgeae.mqtt import local_broker

    packets = _encode_file(small_export, streams[1], 1, None)[:8]
    broker = contextlib.ExitStack()
    url = broker.enter_context(local_broker(tmp_path))

    def stream():
        yield from packets[:3]
        broker.close()
        yield from packets[3:]

    kept = tmp_path / "unsent.bin"
    with pytest.raises(EdgeaeError, match=rf"acknowledged no packet in 2 s; \d of 8 packets were acknowledged, the other \d are kept in {kept} "
                       rf"\(edgeae serve --packets {kept} stores them\)"):  # fmt: skip
        device.publish(stream(), url, "edgeae/1/up", kept, timeout=2)
    unsent = list(wire.unframe(kept.read_bytes()))
    assert len(unsent) >= 5 and unsent == packets[-len(unsent) :]


def test_ctrl_c_while_encode_waits_for_an_absent_broker_keeps_the_packets(tmp_path, small_export):
    """Ctrl-C ends a live stream, and encode then waits up to 30 s for the broker to acknowledge
    what it holds; a second Ctrl-C in that wait killed it, and every packet not acknowledged was
    lost. It now ends the wait and keeps them in the --unsent file."""
    from edgeae.mqtt import local_broker

    rows, before, total = _live_stream(small_export)
    kept = tmp_path / "unsent.bin"
    with local_broker(tmp_path) as url:
        enc = _cli("encode", small_export, "--data", "-", "--sensor", 1, "--mqtt", url, "--unsent", kept,
                   stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        encoded = Stderr(enc)
        enc.stdin.write("".join(rows[:before]))
        enc.stdin.flush()
        time.sleep(1)  # connected, and the 3 packets acknowledged
    encoded.wait_for(f"lost the MQTT broker at {url}")
    enc.stdin.write("".join(rows[before:total]))
    enc.stdin.flush()
    time.sleep(1)
    enc.send_signal(signal.SIGINT)
    encoded.wait_for("packets (SIGTERM or Ctrl-C stops waiting: they are then kept in")
    enc.send_signal(signal.SIGINT)
    assert enc.wait(10) == 2
    encoded.wait_for(f"stopped by SIGINT while waiting for the MQTT broker at {url}; ")
    m = re.search(r"(\d) of 6 packets were acknowledged, the other (\d) are kept in (\S+) ", "".join(encoded.lines))
    assert m and int(m[1]) + int(m[2]) == 6 and int(m[2]) >= 3 and m[3] == str(kept)
    assert [wire.decode(p).seq for p in wire.read_packet_file(kept)] == list(range(6 - int(m[2]), 6))


def _uplink(envelope: str, payload: bytes | None) -> bytes:
    """A network server's uplink message as The Things Stack or ChirpStack publishes it (fields trimmed)."""
    data = {} if payload is None else {"frm_payload" if envelope == "tts" else "data": base64.b64encode(payload).decode()}
    if envelope == "tts":
        return json.dumps({"end_device_ids": {"device_id": "pump-1", "application_ids": {"application_id": "edgeae"}},
                           "received_at": "2026-11-29T10:00:00.041Z",
                           "uplink_message": {"f_port": 1, "f_cnt": 7, "received_at": "2026-11-29T10:00:00Z", **data}}).encode()  # fmt: skip
    return json.dumps({"deduplicationId": "4f1c", "time": "2026-11-29T10:00:00Z", "deviceInfo": {"devEui": "0004a30b001c0530"},
                       "fCnt": 7, "fPort": 1, **data}).encode()  # fmt: skip


@pytest.mark.parametrize("envelope", ["tts", "chirpstack"])
def test_network_server_uplinks_unwrap_to_their_packet_or_a_reason(envelope):
    from edgeae import lorawan

    assert lorawan.unwrap(_uplink(envelope, b"\x01packet"), envelope) == (b"\x01packet", 1_795_946_400.0)  # 2026-11-29T10:00:00Z
    for message, reason in [(b"\x01\x02 not json", "not_an_uplink"), (b"[1, 2]", "not_an_uplink"),
                            (json.dumps({"join_accept": {"session_key_id": "AX"}}).encode(), "not_an_uplink"),
                            (_uplink(envelope, None), "no_payload"),
                            (_uplink(envelope, b"x").replace(base64.b64encode(b"x"), b"%%%%"), "not_an_uplink"),
                            (b"[" * 100_000, "not_an_uplink")]:  # fmt: skip
        with pytest.raises(wire.PacketError) as e:
            lorawan.unwrap(message, envelope)
        assert e.value.reason == reason, message[:80]


def test_a_message_nested_too_deeply_for_the_parser_is_rejected_and_serve_goes_on(tmp_path, small_export):
    """Anyone who may publish on the uplink topic stopped serve with one message: JSON nested some
    thousand levels deep was a RecursionError out of the batch (Python's parser recurses), the
    batch's good packets not stored with it."""
    from edgeae.mqtt import Message
    from edgeae.serve import Server

    ex = Export.open(small_export)
    good = wire.encode(wire.Packet(ex.model_id, 3, 0, 1_700_000_000, (0,) * ex.manifest["code_size"], 10))
    server = Server(small_export, tmp_path / "r.sqlite", envelope="tts")
    server.handle([Message("up", b"[" * 100_000, 1_800_000_000.0, False), Message("up", _uplink("tts", good), 1_800_000_000.0, False)])
    server.close()
    assert server.stored == 1 and server.rejected == {"not_an_uplink": 1}


@pytest.mark.slow
@pytest.mark.parametrize("envelope, topic, pattern", [
    ("tts", "v3/edgeae@ttn/devices/pump-{s}/up", "v3/+/devices/+/up"),
    ("chirpstack", "application/7/device/000000000000000{s}/event/up", "application/+/device/+/event/up"),
])  # fmt: skip
def test_serve_takes_packets_from_a_lorawan_network_servers_uplinks(tmp_path, small_export, streams, broker, envelope, topic, pattern):
    """Over LoRaWAN the network server, not the device, publishes on MQTT, the packet wrapped in
    its uplink JSON: serve stored each such message as a `bad_version` rejection."""
    from edgeae.mqtt import Publisher

    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({str(k): v for k, v in KEYS.items()}))
    db = tmp_path / "r.sqlite"
    serve = _cli("serve", small_export, "--mqtt", broker, "--db", db, "--keys", keys, "--topic", pattern, "--envelope", envelope,
                 stderr=subprocess.PIPE, text=True)  # fmt: skip
    log = Stderr(serve)
    log.wait_for("serving")
    sent = {s: _encode_file(small_export, streams[s], s, None) for s in (1, 2)}
    pub = Publisher(broker)
    for s, packets in sent.items():
        for raw in packets:
            pub.publish(topic.format(s=s), _uplink(envelope, raw))
    pub.publish(topic.format(s=1), _uplink(envelope, None))  # MAC commands only
    pub.publish(topic.format(s=1), sent[1][0])  # a raw packet where an uplink JSON belongs
    pub.flush()
    pub.close()
    total = sum(map(len, sent.values()))
    log.wait_for(until=lambda: _count(db) == total)
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(30) == 0
    log.wait_for(f"stored {total}, rejected 2 (1 no_payload, 1 not_an_uplink;")
    con = sqlite3.connect(db)
    for s, packets in sent.items():
        assert [q for (q,) in con.execute("SELECT seq FROM packets WHERE sensor=? ORDER BY seq", (s,))] == list(range(len(packets)))
    assert con.execute("SELECT raw FROM rejected WHERE reason='not_an_uplink'").fetchone() == (sent[1][0],)  # kept as it came
    con.close()


def _certificates(d):
    """A throwaway CA, and a certificate for 127.0.0.1 that it signed (openssl)."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=edgeae test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "broker.pem",
            "-days", "2", "-extfile", "san.ext")  # fmt: skip
    return d / "ca.pem", (d / "broker.pem", d / "broker.key")


@pytest.mark.slow
def test_through_a_broker_with_tls_and_passwords(tmp_path, small_export, streams, monkeypatch):
    """Mosquitto 2 admits no anonymous client beyond localhost by default, and a broker on a
    network speaks TLS: --mqtt takes mqtts:// and a user, the password from the address or from
    $EDGEAE_MQTT_PASSWORD, and no message repeats it."""
    from test_cli import assert_one_line_error, edgeae

    from edgeae.mqtt import local_broker

    ca, tls = _certificates(tmp_path)
    db = tmp_path / "r.sqlite"
    with local_broker(tmp_path, users={"gateway": "s3cret", "node7": "n0de"}, tls=tls) as url:
        at = f"127.0.0.1:{url.rsplit(':', 1)[1]}"
        proc = edgeae("serve", small_export, "--mqtt", f"mqtts://gateway@{at}", "--db", db)  # the system's CAs
        assert_one_line_error(proc, f"cannot connect to the MQTT broker at {at} (")
        assert "certificate verify failed" in proc.stderr
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        proc = edgeae("serve", small_export, "--mqtt", f"mqtts://gateway:wrong@{at}", "--db", db)
        assert_one_line_error(proc, f"the MQTT broker at {at} did not accept the connection (")
        assert "wrong" not in proc.stderr

        monkeypatch.setenv("EDGEAE_MQTT_PASSWORD", "s3cret")
        serve = _cli("serve", small_export, "--mqtt", f"mqtts://gateway@{at}", "--db", db, stderr=subprocess.PIPE, text=True)
        served = Stderr(serve)
        served.wait_for(f"serving edgeae/+/up on {at}")
        monkeypatch.delenv("EDGEAE_MQTT_PASSWORD")
        enc = edgeae("encode", small_export, "--data", streams[1], "--sensor", 1, "--mqtt", f"mqtts://node7:n0de@{at}",
                     "--t0", "1700000000", "--period", "0.001")  # fmt: skip
        assert enc.returncode == 0 and f"to {at} (" in enc.stderr and "n0de" not in enc.stderr, enc.stderr
        sent = int(enc.stderr.split(": ")[1].split()[0])
        served.wait_for(until=lambda: _count(db) == sent)
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0


def test_broker_unreachable_is_one_line(small_export, tmp_path):
    from test_cli import assert_one_line_error, edgeae

    # The port stays bound (not listening) while serve tries it: once released, another process, or
    # the client itself (a TCP self-connect from the same ephemeral port), could answer on it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        proc = edgeae("serve", small_export, "--mqtt", f"127.0.0.1:{port}", "--db", tmp_path / "r.sqlite")
    assert_one_line_error(proc, "cannot connect to the MQTT broker")
    assert not (tmp_path / "r.sqlite").exists()  # the database it made for the broker's packets, removed
    # an empty --mqtt ("$BROKER" unset) went to localhost:1883, and serve's database was left behind
    for command in (("serve", small_export, "--db", tmp_path / "r.sqlite"), ("encode", small_export, "--data", "-", "--sensor", 1)):
        assert_one_line_error(edgeae(*command, "--mqtt", ""), "--mqtt must be [mqtt://|mqtts://][USER@]HOST[:PORT]")
    assert not (tmp_path / "r.sqlite").exists()


def test_without_the_serve_extra_says_what_to_install(small_export, tmp_path):
    from test_cli import assert_one_line_error, edgeae

    proc = edgeae("serve", small_export, "--mqtt", "127.0.0.1:1", "--db", tmp_path / "r.sqlite", hide=["paho"])
    assert_one_line_error(proc, "needs the serve extra (paho")
    assert not (tmp_path / "r.sqlite").exists()  # said before the database is made
    from edgeae.serve import Server

    Server(small_export, tmp_path / "r.sqlite").close()
    proc = edgeae("results", tmp_path / "r.sqlite", "--parquet", tmp_path / "r.parquet", hide=["pyarrow"])
    assert_one_line_error(proc, "needs the serve extra (pyarrow is not installed)")
    assert not (tmp_path / "r.parquet").exists()
    proc = edgeae("results", tmp_path / "r.sqlite", "--plot", tmp_path / "s.png", hide=["matplotlib"])  # a gateway without [eval]
    assert_one_line_error(proc, "needs the eval extra (matplotlib is not installed)")
    assert proc.stdout == ""  # said before the summary, not after it


def test_missing_packet_file_or_unusable_database_is_one_line(small_export, tmp_path):
    from test_cli import assert_one_line_error, edgeae

    assert_one_line_error(edgeae("serve", small_export, "--packets", tmp_path / "nope.bin", "--db", tmp_path / "r.sqlite"),
                          "nope.bin: no such packet file")  # fmt: skip
    assert not (tmp_path / "r.sqlite").exists()  # checked before the database is created
    (tmp_path / "m.csv").write_text("time,vib_x\n" + "".join(f"{i},0.5\n" for i in range(200)))
    assert_one_line_error(edgeae("serve", small_export, "--packets", tmp_path / "m.csv", "--db", tmp_path / "r.sqlite"),
                          "m.csv: not a packet file: none of its 1 record(s) starts like a version-1 packet")  # fmt: skip
    assert not (tmp_path / "r.sqlite").exists()
    (tmp_path / "p.bin").write_bytes(b"")
    (tmp_path / "not.sqlite").write_text("not a database, but someone's notes\n" * 100)
    assert_one_line_error(edgeae("serve", small_export, "--packets", tmp_path / "p.bin", "--db", tmp_path / "not.sqlite"),
                          "cannot open it as the results database (file is not a database)")  # fmt: skip
    assert (tmp_path / "not.sqlite").read_text().startswith("not a database")  # left as it was
    assert_one_line_error(edgeae("serve", small_export, "--packets", tmp_path / "p.bin", "--db", tmp_path / "no" / "r.sqlite"),
                          "cannot open it as the results database")  # fmt: skip
    other = sqlite3.connect(tmp_path / "other.sqlite")  # another program's database with a 'packets' table
    other.execute("CREATE TABLE packets (id INTEGER, payload BLOB)")
    other.commit()
    other.close()
    assert_one_line_error(edgeae("serve", small_export, "--packets", tmp_path / "p.bin", "--db", tmp_path / "other.sqlite"),
                          "its table(s) packets are not edgeae's")  # fmt: skip


def test_results_database_of_another_program_is_left_untouched(small_export, tmp_path):
    """No edgeae table is added beside another program's tables, nor to a file marked as another's."""
    from test_cli import assert_one_line_error, edgeae

    from edgeae.results import APPLICATION_ID, SCHEMA, thresholds
    from edgeae.serve import Server

    def tables(path):
        with contextlib.closing(sqlite3.connect(path)) as con:
            return sorted(r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))

    (tmp_path / "p.bin").write_bytes(b"")
    with contextlib.closing(sqlite3.connect(tmp_path / "notes.sqlite")) as con:
        con.execute("CREATE TABLE notes (body TEXT)")
        con.commit()
    assert_one_line_error(edgeae("serve", small_export, "--packets", tmp_path / "p.bin", "--db", tmp_path / "notes.sqlite"),
                          "its table(s) notes are not edgeae's")  # fmt: skip
    assert tables(tmp_path / "notes.sqlite") == ["notes"]
    with contextlib.closing(sqlite3.connect(tmp_path / "marked.sqlite")) as con:
        con.execute("PRAGMA application_id = 1234")
        con.commit()
    assert_one_line_error(edgeae("serve", small_export, "--packets", tmp_path / "p.bin", "--db", tmp_path / "marked.sqlite"),
                          "another program's database (application id 0x4d2)")  # fmt: skip
    assert tables(tmp_path / "marked.sqlite") == []

    with contextlib.closing(sqlite3.connect(tmp_path / "older.sqlite")) as con:  # edgeae's tables, not yet marked,
        con.executescript(SCHEMA.split("CREATE TABLE IF NOT EXISTS scorers")[0])  # nor with the scorers table
    assert thresholds(tmp_path / "older.sqlite", [1]) == {}
    Server(small_export, tmp_path / "older.sqlite").close()
    assert len(thresholds(tmp_path / "older.sqlite", [1])[1]) == 1
    Server(small_export, tmp_path / "new.sqlite").close()
    for name in ("older.sqlite", "new.sqlite"):
        with contextlib.closing(sqlite3.connect(tmp_path / name)) as con:
            assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert tables(tmp_path / name) == ["archived", "missing", "packets", "rejected", "scorers", "sqlite_sequence"]


def test_results_reads_only_edgeae_databases_and_changes_none(small_export, tmp_path):
    """`edgeae results` refuses what serve would refuse, plus a database without edgeae's tables,
    in one line; no file it is given changes, nor is one created. A database that a killed serve
    left mid-transaction is read as of its last commit (SQLite rolls the hot journal back)."""
    from test_cli import assert_one_line_error, edgeae

    from edgeae.serve import Server

    with contextlib.closing(sqlite3.connect(tmp_path / "notes.sqlite")) as con:
        con.execute("CREATE TABLE notes (body TEXT)")
        con.commit()
    with contextlib.closing(sqlite3.connect(tmp_path / "marked.sqlite")) as con:
        con.execute("PRAGMA application_id = 1234")
        con.commit()
    (tmp_path / "text.sqlite").write_text("someone's notes\n" * 100)
    sqlite3.connect(tmp_path / "empty.sqlite").close()  # a 0-byte file: sqlite's "new database"
    cases = {"notes.sqlite": "its table(s) notes are not edgeae's", "marked.sqlite": "another program's database (application id 0x4d2)",
             "text.sqlite": "cannot read it as a results database (file is not a database)",
             "empty.sqlite": "not a results database of edgeae serve (no packets table)",
             "absent.sqlite": "absent.sqlite: no such results database"}  # fmt: skip
    before = {n: (tmp_path / n).read_bytes() for n in cases if (tmp_path / n).exists()}
    for name, message in cases.items():
        assert_one_line_error(edgeae("results", tmp_path / name, "--parquet", tmp_path / "r.parquet"), message)
    assert {n: (tmp_path / n).read_bytes() for n in cases if (tmp_path / n).exists()} == before
    assert not (tmp_path / "r.parquet").exists()
    Server(small_export, tmp_path / "ours.sqlite").close()
    assert json.loads(edgeae("results", tmp_path / "ours.sqlite").stdout)["packets"] == 0
    proc = edgeae("results", tmp_path / "ours.sqlite", "--plot", tmp_path / "s.png")
    assert_one_line_error(proc, "holds no packets: nothing to plot")
    assert proc.stdout == ""  # not the summary, then the error: one or the other
    for option in ("--plot", "--parquet"):  # the parquet's missing folder was said after the summary had printed
        proc = edgeae("results", tmp_path / "ours.sqlite", option, tmp_path / "nowhere" / "s.x")
        assert_one_line_error(proc, "does not exist")
        assert proc.stdout == ""
    assert not (tmp_path / "s.png").exists()
    with contextlib.closing(sqlite3.connect(tmp_path / "ours.sqlite")) as con:
        con.execute("INSERT INTO rejected (received_at, reason, raw) VALUES (0, 'bad_crc', x'00')")
        con.commit()
    killed = ("import os, sqlite3, sys\ncon = sqlite3.connect(sys.argv[1], isolation_level=None)\ncon.execute('PRAGMA cache_size=1')\n"
              "con.execute('BEGIN')\nfor _ in range(5000):\n    con.execute(\"INSERT INTO rejected (received_at, reason, raw) VALUES (0, 'x', randomblob(200))\")\n"
              "os._exit(9)")  # fmt: skip
    subprocess.run([sys.executable, "-c", killed, str(tmp_path / "ours.sqlite")], check=False)
    assert (tmp_path / "ours.sqlite-journal").is_file()  # a hot journal: the process died mid-transaction
    proc = edgeae("results", tmp_path / "ours.sqlite")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rejected"] == {"bad_crc": 1}


@pytest.mark.parametrize("topic, wildcards, ok", [
    ("edgeae/7/up", False, True), ("edgeae/+/up", False, False), ("a/#", False, False), ("", False, False),
    ("edgeae/+/up", True, True), ("edgeae/#", True, True), ("#", True, True), ("a/#/b", True, False),
    ("a/b+/c", True, False), ("a/#b", True, False), ("", True, False),
])  # fmt: skip
def test_mqtt_topic_names_and_filters(topic, wildcards, ok):
    """paho raised ValueError (a traceback) for these only once connected; now one line before."""
    from edgeae.mqtt import check_topic

    if ok:
        assert check_topic(topic, wildcards) == topic
    else:
        with pytest.raises(EdgeaeError, match="--topic must be"):
            check_topic(topic, wildcards)


def test_broker_addresses(monkeypatch):
    from edgeae.mqtt import Broker, parse_broker

    monkeypatch.delenv("EDGEAE_MQTT_PASSWORD", raising=False)
    assert parse_broker("h") == Broker("h", 1883) and parse_broker("h:1884") == Broker("h", 1884)
    assert parse_broker("mqtts://h") == Broker("h", 8883, tls=True) and parse_broker("mqtt://[::1]:7") == Broker("::1", 7)
    assert parse_broker("mqtts://u:pw@h").password == "pw" and parse_broker("u@h").password is None
    monkeypatch.setenv("EDGEAE_MQTT_PASSWORD", "env")
    assert parse_broker("mqtt://u@h:9") == Broker("h", 9, user="u", password="env") and parse_broker("h").password is None
    assert "env" not in repr(parse_broker("u@h"))
    for bad in ("h:0", "h:99999", "h:x", "http://h", "mqtt://h/path", "u:pw@h:0", "", ":1883", "mqtt://"):  # no host: was localhost
        with pytest.raises(EdgeaeError, match="--mqtt must be") as e:
            parse_broker(bad)
        assert "pw" not in str(e.value)


def test_encode_takes_its_key_from_the_environment(tmp_path, small_export, streams, monkeypatch):
    """`--key` on the command line is readable by every user of the device (ps, /proc/PID/cmdline);
    the key now comes from $EDGEAE_KEY too, as the MQTT password from $EDGEAE_MQTT_PASSWORD."""
    from test_cli import edgeae

    monkeypatch.setenv("EDGEAE_KEY", KEYS[1])
    proc = edgeae("encode", small_export, "--data", streams[1], "--sensor", 1, "--out", tmp_path / "p.bin")
    assert proc.returncode == 0, proc.stderr
    raws = wire.read_packet_file(tmp_path / "p.bin")
    assert raws and all(wire.decode(raw, {1: bytes.fromhex(KEYS[1])}).sensor == 1 for raw in raws)
    with pytest.raises(wire.PacketError, match="tag"):
        wire.decode(raws[0], {1: bytes.fromhex(KEYS[2])})


def test_encode_and_serve_refuse_a_bad_topic_or_port_before_connecting(small_export, tmp_path):
    from test_cli import assert_one_line_error, edgeae

    enc = ("encode", small_export, "--data", "-", "--sensor", "1", "--mqtt", "127.0.0.1:1")
    assert_one_line_error(edgeae(*enc, "--topic", "edgeae/{node}/up"), "--topic may use only {sensor}")
    assert_one_line_error(edgeae(*enc, "--topic", "edgeae/#/{sensor}"), "--topic must be a topic without wildcards")
    assert_one_line_error(edgeae(*enc, "--unsent", tmp_path / "no" / "u.bin"), f"folder {tmp_path / 'no'} does not exist")
    assert_one_line_error(edgeae(*enc[:-2], "--out", "-", "--unsent", "u.bin"), "--unsent goes with --mqtt")
    assert_one_line_error(edgeae("serve", small_export, "--db", tmp_path / "r.sqlite", "--packets", "p.bin", "--envelope", "tts"),
                          "--envelope goes with --mqtt")  # fmt: skip
    assert_one_line_error(edgeae("serve", small_export, "--db", tmp_path / "r.sqlite", "--packets", "p.bin", "--client-id", "me"),
                          "--client-id, --clean-session, --state-topic, --status-topic and --silent-after go with --mqtt")  # fmt: skip
    assert_one_line_error(edgeae("serve", small_export, "--db", tmp_path / "r.sqlite", "--packets", "p.bin", "--silent-after", "60"),
                          "--silent-after go with --mqtt")  # fmt: skip
    serve = ("serve", small_export, "--db", tmp_path / "r.sqlite", "--mqtt", "127.0.0.1:1")
    assert_one_line_error(edgeae(*serve, "--state-topic", "a/+/{sensor}"), "--state-topic must be a topic without wildcards")
    assert_one_line_error(edgeae(*serve, "--state-topic", "a/{node}"), "--state-topic may use only {sensor} in braces")
    assert_one_line_error(edgeae(*serve, "--status-topic", "a/#"), "--status-topic must be a topic without wildcards")
    assert_one_line_error(edgeae(*serve, "--client-id", ""), "--client-id is empty")  # an unset $ID served another session
    assert_one_line_error(edgeae("encode", small_export, "--data", "-", "--sensor", "1", "--mqtt", "127.0.0.1:99999"),
                          "port in 1..65535")  # fmt: skip
    assert_one_line_error(edgeae("encode", small_export, "--data", "-", "--sensor", "1", "--out", "-", "--key", ""),
                          "--key is empty")  # an unset $KEY sent untagged packets  # fmt: skip
    assert_one_line_error(edgeae("encode", small_export, "--data", "-", "--sensor", "1", "--out", "-", "--key", "a1" * 8),
                          "--key is 8 byte(s): give at least 16 (32 hex digits")  # fmt: skip
    assert_one_line_error(edgeae("serve", small_export, "--db", tmp_path / "r.sqlite", "--mqtt", "127.0.0.1:1", "--topic", "a/#/b"),
                          "--topic must be a topic filter")  # fmt: skip
    assert not (tmp_path / "r.sqlite").exists()


@pytest.mark.parametrize("text, message", [
    ('{"1": 5}', "not a keys file of {sensor: hex key} (TypeError)"),
    ('{"1": "abc"}', "not a keys file of {sensor: hex key} (ValueError)"),
    ('{"70000": "aa"}', "sensor id 0..65535 with a non-empty hex key (bad: 70000)"),
    ('{"1": ""}', "(bad: 1)"),
    ('{"1_0": "aa", " 2": "aa"}', "(bad: '1_0', ' 2')"),
    ('[["1", "aa"]]', "not a keys file of {sensor: hex key} (TypeError)"),
    ("[" * 100_000, "not a keys file of {sensor: hex key} (JSONDecodeError)"),  # a RecursionError traceback
    ('{"1": "aa", "2": "aa", "1": "bb"}', "sensor 1 given more than once (each sensor has one key)"),
    ('{"01": "aa", "1": "bb", "7": "cc", "007": "cc"}', "sensor 1, 7 given more than once"),
    ("{}", "needs at least one sensor id"),
    ('{"1": "' + "aa" * 16 + '", "2": "aa"}', "k.json: sensor 2's key is 1 byte(s): give at least 16 (32 hex digits"),
    (None, "k.json: no such keys file"),
    ("folder", "k.json: a folder, not a keys file"),
])  # fmt: skip
def test_bad_keys_files(tmp_path, text, message):
    """A number as a key was a traceback; an out-of-range sensor, an empty key or no keys at all
    were accepted, and then every packet was rejected. A sensor given twice kept one of its keys
    without a word, and "1_0" was read as sensor 10 (Python's int takes underscores). A key of a
    byte was taken: one tagged packet gives it away to anyone trying all 256."""
    from edgeae.serve import load_keys

    if text == "folder":
        (tmp_path / "k.json").mkdir()
    elif text is not None:
        (tmp_path / "k.json").write_text(text)
    with pytest.raises(EdgeaeError) as e:
        load_keys(tmp_path / "k.json")
    assert message in str(e.value)


def test_python_api_refuses_short_keys(small_export):
    """The CLI refused a key shorter than 16 bytes; `Host`, `Hosts`, `Server` and `Encoder` took one
    from a gateway's own code, and a key of a few bytes is found by trying every one."""
    from edgeae.device import Encoder
    from edgeae.host import Host, Hosts

    for make in (lambda k: Host(small_export, k), lambda k: Hosts([small_export], k)):
        with pytest.raises(EdgeaeError, match="sensor 3's key is 4 byte"):
            make({1: b"k" * 16, 3: b"abcd"})
        assert make({1: b"k" * 16}).keys == {1: b"k" * 16}
    with pytest.raises(EdgeaeError, match="--key is 8 byte"):
        Encoder(small_export, 1, b"k" * 8)
    assert Encoder(small_export, 1, b"k" * 16).key == b"k" * 16


def test_host_reads_packets_as_serve_stores_them(tmp_path, small_export, streams):
    """The host half as a Python API, for a gateway that sends readings elsewhere than serve's
    database: `Host` gives the scores, flags and reconstruction RMS serve stores, with TensorFlow
    unavailable, and a bad packet raises an error naming why."""
    from edgeae.serve import Server
    from test_cli import NO_TF

    keys = {1: bytes.fromhex(KEYS[1])}
    sent = _encode_file(small_export, streams[1], 1, None)
    wire.write_packet_file(tmp_path / "p.bin", sent)
    server = Server(small_export, tmp_path / "r.sqlite", keys)
    server.run_packets(sent)
    server.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "r.sqlite")) as con:
        stored = con.execute("SELECT seq, score, anomaly, reconstruction_rms FROM packets ORDER BY seq").fetchall()

    code = NO_TF + f"""
import json, edgeae
from edgeae import wire
host = edgeae.Host({str(small_export)!r}, {{1: bytes.fromhex({KEYS[1]!r})}})
readings = host.read([host.decode(raw) for raw in wire.read_packet_file({str(tmp_path / "p.bin")!r})])
print(json.dumps([[r.packet.seq, r.score, int(r.anomaly), [round(float(v), 6) for v in r.rms], r.reconstruction.shape] for r in readings]))
try:
    host.decode(wire.read_packet_file({str(tmp_path / "p.bin")!r})[0][:-3])
except wire.PacketError as e:
    print(e.reason)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    readings, reason = proc.stdout.splitlines()
    ex = Export.open(small_export)
    assert [(seq, score, anomaly, json.loads(rms)) for seq, score, anomaly, rms in stored] == \
        [(seq, score, anomaly, rms) for seq, score, anomaly, rms, _ in json.loads(readings)]  # fmt: skip
    assert {tuple(shape) for *_, shape in json.loads(readings)} == {(ex.window, len(ex.channels))}
    assert len(stored) == len(sent) and reason == "truncated"


def test_packets_without_a_residual_leave_the_others_scored(tmp_path, small_export, streams):
    """A sensor whose firmware runs the encoder alone sends no residual byte. One such packet in a
    batch left every packet of the batch unscored (NaN, never flagged) under a residual scorer, so
    a fleet mixing the two firmwares lost its alarms at random, as batches fell."""
    from edgeae.host import Host
    from edgeae.serve import Server

    host = Host(small_export)
    sent = [host.decode(raw) for raw in _encode_file(small_export, streams[1], 1, None)]
    alone = host.read(sent)
    codes_only = [replace(p, sensor=2, residual=None) for p in sent[:3]]
    mixed = host.read(sent[:5] + codes_only + sent[5:])
    assert host.scorer.mode == "residual"
    assert [r.score for r in mixed[:5] + mixed[8:]] == [r.score for r in alone]
    assert np.isnan([r.score for r in mixed[5:8]]).all() and not any(r.anomaly for r in mixed[5:8])

    server = Server(small_export, tmp_path / "r.sqlite")
    server.run_packets([wire.encode(p) for p in sent[:5] + codes_only + sent[5:]])
    server.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "r.sqlite")) as con:
        unscored = con.execute("SELECT sensor, COUNT(*) FROM packets WHERE score IS NULL GROUP BY sensor").fetchall()
    assert unscored == [(2, 3)] and server.unscored == 3 and server.stored == len(sent) + 3


def test_a_database_from_before_unscored_packets_takes_them(tmp_path, small_export, streams):
    """A results database made when every packet had a score (score NOT NULL) refused the batch
    holding a packet without the residual byte (serve stopped, the packets kept in a file): its
    packets table is rebuilt with the rows it holds, and the CLI says what was left unscored."""
    from edgeae.host import Host
    from edgeae.results import SCHEMA
    from test_cli import edgeae

    host = Host(small_export)
    sent = [host.decode(raw) for raw in _encode_file(small_export, streams[1], 1, None)]
    db = tmp_path / "old.sqlite"
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.executescript(SCHEMA.replace("score REAL,", "score REAL NOT NULL,"))
        con.execute("INSERT INTO packets VALUES (7, 0, 0, 'x', '[]', 1, '[]', 0.5, 0, 0, 0, 0, NULL)")
        con.commit()
    wire.write_packet_file(tmp_path / "p.bin", [wire.encode(replace(p, residual=None)) if p.seq % 2 else wire.encode(p) for p in sent])
    proc = edgeae("serve", small_export, "--packets", tmp_path / "p.bin", "--db", db)
    odd = len(sent) // 2
    assert proc.returncode == 0 and proc.stderr.strip().endswith(
        f"stored {len(sent)}, rejected 0; {odd} stored unscored, without the residual byte the scorer (mode residual) "
        "needs (edgeae calibrate --mode code scores codes alone)"), proc.stderr  # fmt: skip
    summary = json.loads(edgeae("results", db).stdout)
    assert summary["packets"] == len(sent) + 1 and summary["unscored"] == odd
    with contextlib.closing(sqlite3.connect(db)) as con:
        assert con.execute("SELECT score FROM packets WHERE sensor=7").fetchall() == [(0.5,)]
        assert sorted(t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")) == \
            ["archived", "missing", "packets", "rejected", "scorers", "sqlite_sequence"]  # fmt: skip


def test_serve_several_exports_while_a_fleet_moves_to_a_new_model(tmp_path, small_run, small_export, streams):
    """A fleet updated to a new export sends packets of both models for a while; serve took one
    export and rejected the other's packets as wrong_model. Now each packet goes to the export
    whose model id it carries, scored by that export's scorer."""
    from edgeae.export import export
    from edgeae.serve import Server
    from test_cli import edgeae

    new = export(small_run, tmp_path / "v2", decoder_int8=True)
    old_id, new_id = Export.open(small_export).model_id, Export.open(new).model_id
    sent = {1: _encode_file(small_export, streams[1], 1, None), 2: _encode_file(new, streams[2], 2, None)}
    mixed = [p for pair in zip(sent[1], sent[2]) for p in pair]  # interleaved, as they come in
    keys = {s: bytes.fromhex(KEYS[s]) for s in (1, 2)}
    server = Server([small_export, new], tmp_path / "r.sqlite", keys)
    server.run_packets(mixed)
    server.close()
    assert server.stored == len(mixed) and not server.rejected
    with contextlib.closing(sqlite3.connect(tmp_path / "r.sqlite")) as con:
        assert dict(con.execute("SELECT sensor, model_id FROM packets GROUP BY sensor")) == {1: f"{old_id:08x}", 2: f"{new_id:08x}"}
        assert sorted(m for (m,) in con.execute("SELECT model_id FROM scorers")) == sorted([f"{old_id:08x}", f"{new_id:08x}"])
        got = {s: [x for (x,) in con.execute("SELECT score FROM packets WHERE sensor=? ORDER BY seq", (s,))] for s in (1, 2)}
    from edgeae.host import Host

    for s, ex in ((1, small_export), (2, new)):  # each packet scored by its own export
        np.testing.assert_allclose(got[s], [r.score for r in Host(ex, keys).read([wire.decode(p, keys) for p in sent[s]])])
    import edgeae as api

    hosts = api.Hosts([small_export, new], keys)  # the same for a gateway's own code
    readings = hosts.read([hosts.decode(raw) for raw in mixed])
    assert [(r.packet.sensor, r.packet.seq) for r in readings] == [(p.sensor, p.seq) for p in (wire.decode(raw, keys) for raw in mixed)]
    np.testing.assert_allclose([r.score for r in readings if r.packet.sensor == 2], got[2])

    server = Server(new, tmp_path / "only-new.sqlite", keys)
    server.run_packets(mixed)
    server.close()
    assert server.rejected == {"wrong_model": len(sent[1])}
    with pytest.raises(EdgeaeError, match="the same export as"):
        Server([new, tmp_path / "v2"], tmp_path / "x.sqlite")
    (tmp_path / "p.bin").write_bytes(b"".join(wire.frame(p) for p in mixed))
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({str(s): KEYS[s] for s in (1, 2)}))
    proc = edgeae("serve", small_export, new, "--packets", tmp_path / "p.bin", "--db", tmp_path / "cli.sqlite", "--keys", keys_file)
    assert proc.returncode == 0 and proc.stderr.strip() == f"stored {len(mixed)}, rejected 0", proc.stderr


def test_results_are_read_in_batches_as_parquet_types(tmp_path, monkeypatch):
    """`results --parquet` fetched the whole packets table into Python at once (1.8 GB of memory for
    2 million packets, a gateway's month or two), and wrote codes and times as SQLite's JSON text
    and Unix seconds. Now a batch of rows at a time, as lists and UTC timestamps; the plot's
    series are read a sensor at a time, only for the sensors it draws."""
    import datetime

    import pyarrow.parquet as pq

    from edgeae.results import open_results, score_series, to_parquet

    con = open_results(tmp_path / "r.sqlite")
    rows = [(s, q, 1_700_000_000 + q, "0badcafe", json.dumps([q, -q]), None if q == 2 else 200 + q, "[0.5, 1.25]",
             None if q == 2 else q / 10, int(q == 3), 0, 1_700_000_100.25, 1_700_000_100.5, None if s == 1 else "t")
            for s in (3, 1) for q in range(5)]  # fmt: skip
    with con:
        con.executemany("INSERT INTO packets VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    con.close()
    t = pq.read_table(to_parquet(tmp_path / "r.sqlite", tmp_path / "r.parquet", batch=3))
    got = t.to_pylist()
    assert [(r["sensor"], r["seq"]) for r in got] == [(s, q) for s in (1, 3) for q in range(5)]
    times = {k: got[7].pop(k) for k in ("timestamp", "received_at", "stored_at")}
    assert {k: (t.timestamp(), t.utcoffset()) for k, t in times.items()} == {
        "timestamp": (1_700_000_002, datetime.timedelta(0)), "received_at": (1_700_000_100.25, datetime.timedelta(0)),
        "stored_at": (1_700_000_100.5, datetime.timedelta(0))}  # fmt: skip
    assert got[7] == {"sensor": 3, "seq": 2, "model_id": "0badcafe", "code": [2, -2], "residual": None, "reconstruction_rms": [0.5, 1.25],
                      "score": None, "anomaly": False, "reordered": False, "topic": "t"}  # fmt: skip
    assert [r["anomaly"] for r in got[:5]] == [False, False, False, True, False] and got[0]["topic"] is None
    assert str(t.schema.field("code").type) == "list<element: int8>" and str(t.schema.field("received_at").type) == "timestamp[us, tz=UTC]"

    from edgeae.results import summary

    assert summary(tmp_path / "r.sqlite")["per_sensor"][3] == {  # what an operator asks first: how many, when last heard
        "packets": 5, "anomalies": 1, "first_seq": 0, "last_seq": 4, "first_time": "2023-11-14T22:13:20Z",
        "last_time": "2023-11-14T22:13:24Z", "last_received": "2023-11-14T22:15:00Z"}  # fmt: skip

    series = score_series(tmp_path / "r.sqlite", sensors=1)
    assert list(series) == [1]
    np.testing.assert_array_equal(series[1]["score"], [0, 0.1, np.nan, 0.3, 0.4])
    np.testing.assert_array_equal(series[1]["anomaly"], [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(series[1]["timestamp"], 1_700_000_000 + np.arange(5))
    assert len(score_series(tmp_path / "r.sqlite")) == 2
    import matplotlib.pyplot as plt

    from edgeae.report import results_plot

    monkeypatch.setattr(plt, "close", lambda fig: None)
    results_plot(series, tmp_path / "s.png", total=2, sensors=1)
    assert plt.gcf()._suptitle.get_text() == "Anomaly score per packet (the first 1 of 2 sensors)"
    plt.close("all")


def test_archive_moves_old_results_to_parquet_and_serve_still_rejects_their_replays(tmp_path, small_export, streams):
    """A gateway's database grew by a row a packet for ever (160 bytes: 4 GB a month for 10 sensors at
    a packet a second) and nothing took old rows out but SQL by hand, which would also have let
    a replay of a deleted packet in. `edgeae archive --before` moves what came in before a time
    into Parquet, and serve still rejects those packets' replays; a late packet that fills an
    open gap is still let in, and the sequence numbers go on without a gap."""
    import pyarrow.parquet as pq
    from test_cli import assert_one_line_error, edgeae

    from edgeae.serve import Server

    keys = {k: bytes.fromhex(v) for k, v in KEYS.items()}
    sent = _encode_file(small_export, streams[1], 1, None)
    injected, _ = _bad_and_gap_packets(small_export, sent[0])  # sensor 9: 3 missing, 4 late; 5 bad packets

    def serve(packets):
        server = Server(small_export, db, keys)
        server.run_packets(packets)
        server.close()
        return server

    def rows(table, where="1"):
        with contextlib.closing(sqlite3.connect(db)) as con:
            return con.execute(f"SELECT * FROM {table} WHERE {where} ORDER BY 1, 2").fetchall()

    db = tmp_path / "r.sqlite"
    serve(sent[:40] + injected)
    old = {t: rows(t) for t in ("packets", "rejected", "missing")}
    time.sleep(0.05)
    before = time.time()
    time.sleep(0.05)
    serve(sent[40:60])
    proc = edgeae("archive", db, "--before", str(before), "--out", tmp_path / "a1")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["packets"], report["rejected"], report["missing"]) == (46, 5, 1)  # the open gap (9, 3) stays
    assert json.loads((tmp_path / "a1" / "archive.json").read_text()) == report
    archived = pq.read_table(tmp_path / "a1" / "packets.parquet").to_pylist()
    assert [(r["sensor"], r["seq"], r["code"], r["score"]) for r in archived] == [
        (s, q, json.loads(c), score) for s, q, _, _, c, _, _, score, *_ in old["packets"]]
    assert [r["raw"] for r in pq.read_table(tmp_path / "a1" / "rejected.parquet").to_pylist()] == [r[-1] for r in old["rejected"]]
    assert [(r["sensor"], r["seq"]) for r in pq.read_table(tmp_path / "a1" / "missing.parquet").to_pylist()] == [(9, 4)]
    assert [r[:2] for r in rows("packets")] == [(1, q) for q in range(40, 60)] and rows("rejected") == []
    assert [r[:2] for r in rows("missing")] == [(9, 3)]
    summary = json.loads(edgeae("results", db).stdout)
    assert {s: (a["packets"], a["below_seq"]) for s, a in summary["archived"].items()} == {"1": (40, 40), "9": (6, 7)}

    mid = Export.open(small_export).model_id
    late, nine = (wire.encode(wire.Packet(mid, 9, q, 1_700_000_000 + q, (1, -2, 3, -4), 17), keys[9]) for q in (3, 7))
    server = serve(sent[:40] + [late, nine] + sent[60:])  # the archived packets again, a late one, the next ones
    assert server.rejected == {"replayed_seq": 40} and server.stored == 2 + len(sent) - 60
    assert [(r[1], r[9]) for r in rows("packets", "sensor = 9")] == [(3, 1), (7, 0)]  # the gap filled: stored as late
    assert [r[:2] for r in rows("missing", "filled_at IS NULL")] == []  # no gap opened: 7 follows the archived 6
    assert [r[1] for r in rows("packets", "sensor = 1")] == list(range(40, len(sent)))

    before_all = {t: rows(t) for t in ("packets", "rejected", "missing")}
    assert_one_line_error(edgeae("archive", db, "--before", "now", "--out", tmp_path / "a1"), "an archive goes to a new folder")
    assert_one_line_error(edgeae("archive", tmp_path / "none.sqlite", "--before", "now", "--out", tmp_path / "a2"), "no such results database")
    with contextlib.closing(sqlite3.connect(tmp_path / "notes.sqlite")) as con:
        con.execute("CREATE TABLE notes (body TEXT)")
        con.commit()
    notes = (tmp_path / "notes.sqlite").read_bytes()
    assert_one_line_error(edgeae("archive", tmp_path / "notes.sqlite", "--before", "now", "--out", tmp_path / "a2"),
                          "its table(s) notes are not edgeae's; give a database made by edgeae serve")  # fmt: skip
    assert (tmp_path / "notes.sqlite").read_bytes() == notes and not (tmp_path / "a2").exists()
    assert not (tmp_path / "notes.sqlite.archive.lock").exists()  # nothing left beside another program's file
    (tmp_path / "empty.sqlite").write_bytes(b"")  # found by fuzzing: archive gave it serve's tables, then "nothing archived"
    assert_one_line_error(edgeae("archive", tmp_path / "empty.sqlite", "--before", "now", "--out", tmp_path / "a2"),
                          "empty.sqlite: not a results database of edgeae serve (no packets table)")  # fmt: skip
    assert (tmp_path / "empty.sqlite").read_bytes() == b"" and not (tmp_path / "a2").exists()
    import fcntl

    with open(f"{db}.archive.lock", "w") as other:  # another archive of it, running
        fcntl.flock(other, fcntl.LOCK_EX)
        assert_one_line_error(edgeae("archive", db, "--before", "now", "--out", tmp_path / "a2"),
                              f"another edgeae archive of {db} is running already")  # fmt: skip
    proc = edgeae("archive", db, "--before", "2020-01-01", "--out", tmp_path / "a2")
    assert proc.returncode == 0 and "nothing archived" in proc.stderr and not (tmp_path / "a2").exists()
    assert {t: rows(t) for t in ("packets", "rejected", "missing")} == before_all


def test_results_are_read_for_parquet_a_query_a_batch_so_serve_stores_meanwhile(tmp_path, monkeypatch):
    """`results --parquet` (and `archive`) read the packets through one query, which held SQLite's
    lock until its last row: serve could not store a packet for 11.7 s of 2 million
    (tools/bench_results.py), and the broker drops what is beyond its queue meanwhile. Each batch
    is now a query of its own: between them, serve stores (here with no wait allowed at all)."""
    import pyarrow.parquet as pq

    from edgeae.results import archive, open_results, to_parquet

    db = tmp_path / "r.sqlite"
    packet = lambda sensor, seq, t: (sensor, seq, 1_700_000_000 + seq, "0badcafe", "[1, -1]", 0, "[0.5]", 0.1, 0, 0, t, t, None)  # noqa: E731
    con = open_results(db)
    with con:
        con.executemany("INSERT INTO packets VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", [packet(1, q, 1.7e9 + q) for q in range(10)])
    con.close()
    stored = []
    write_batch = pq.ParquetWriter.write_batch

    def serve_stores_one(writer, *args, **kw):
        with contextlib.closing(sqlite3.connect(db, timeout=0)) as serve:
            with serve:
                serve.execute("INSERT INTO packets VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", packet(0, len(stored), time.time()))
        stored.append(1)
        return write_batch(writer, *args, **kw)

    monkeypatch.setattr(pq.ParquetWriter, "write_batch", serve_stores_one)
    assert pq.read_table(to_parquet(db, tmp_path / "p.parquet", batch=3)).num_rows == 10  # sensor 0's sort before: not read
    assert len(stored) == 4
    report = archive(db, 1.7e9 + 5, tmp_path / "a", batch=2)
    assert report["packets"] == 5 and len(stored) == 4 + 3
    assert [r["seq"] for r in pq.read_table(tmp_path / "a" / "packets.parquet").to_pylist()] == [0, 1, 2, 3, 4]
    with contextlib.closing(sqlite3.connect(db)) as con:
        assert con.execute("SELECT sensor, COUNT(*) FROM packets GROUP BY sensor").fetchall() == [(0, 7), (1, 5)]


def test_results_since_a_time(tmp_path):
    """A gateway's database holds months; `results` summed, exported and drew all of it, where an
    operator asks what came in this week. --since keeps what came in since a time."""
    import pyarrow.parquet as pq
    from test_cli import assert_one_line_error, edgeae

    from edgeae.results import open_results

    con = open_results(tmp_path / "r.sqlite")
    with con:
        con.executemany("INSERT INTO packets VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        [(s, q, 1_000 + q, "0badcafe", "[1]", 0, "[0.5]", q / 10, int(q == 4), 0, 2_000 + q, 2_000 + q, None)
                         for s in (1, 2) for q in range(5)])  # fmt: skip
        con.execute("INSERT INTO rejected (received_at, reason, raw) VALUES (2000, 'bad_crc', x'00'), (2004, 'truncated', x'01')")
    con.close()
    proc = edgeae("results", tmp_path / "r.sqlite", "--since", "2003", "--parquet", tmp_path / "p.parquet", "--plot", tmp_path / "s.png")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["since"], summary["packets"], summary["anomalies"], summary["rejected"]) == ("1970-01-01T00:33:23Z", 4, 2, {"truncated": 1})
    assert {s: (d["first_seq"], d["last_seq"]) for s, d in summary["per_sensor"].items()} == {"1": (3, 4), "2": (3, 4)}
    assert [(r["sensor"], r["seq"]) for r in pq.read_table(tmp_path / "p.parquet").to_pylist()] == [(1, 3), (1, 4), (2, 3), (2, 4)]
    assert (tmp_path / "s.png").stat().st_size > 0
    assert json.loads(edgeae("results", tmp_path / "r.sqlite").stdout)["packets"] == 10
    proc = edgeae("results", tmp_path / "r.sqlite", "--since", "2005", "--plot", tmp_path / "n.png")
    assert_one_line_error(proc, "no packet came in since 1970-01-01T00:33:25Z: nothing to plot")
    assert proc.stdout == ""


def test_results_plot_ticks_unscored_packets(tmp_path, monkeypatch):
    """Unscored packets (NaN) broke the score line into dashes and went unmentioned."""
    import matplotlib.pyplot as plt

    from edgeae.report import results_plot

    score = np.array([0.1, np.nan, 0.2, np.nan, 0.3, 2.0])
    series = {1: {"timestamp": np.arange(6.0) + 1.7e9, "score": score, "anomaly": (score > 1).astype(float)}}
    monkeypatch.setattr(plt, "close", lambda fig: None)
    results_plot(series, tmp_path / "s.png", {1: [1.0]})
    ax = plt.gcf().axes[0]
    line = next(l for l in ax.get_lines() if l.get_label() == "anomaly score")
    assert list(line.get_ydata()) == [0.1, 0.2, 0.3, 2.0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "anomaly score", "flagged anomalous (1 of 6)", "unscored: no residual byte (2)", "threshold"]  # fmt: skip
    plt.close("all")


def test_a_forged_packet_with_another_code_size_is_rejected(tmp_path, small_export):
    """The model id is public (the manifest's hash), so without keys anyone can send a packet that
    passes every check of the wire format with a code of another size: serve crashed on it
    (a traceback, the batch lost with it) instead of rejecting it."""
    from edgeae.host import Host
    from test_cli import edgeae

    mid, k = Export.open(small_export).model_id, Export.open(small_export).manifest["code_size"]
    made = [wire.Packet(mid, 1, seq, 1_700_000_000 + seq, tuple(range(n)), 9) for seq, n in enumerate((k, k + 1, k, 1, k))]
    wire.write_packet_file(tmp_path / "p.bin", [wire.encode(p) for p in made])
    proc = edgeae("serve", small_export, "--packets", tmp_path / "p.bin", "--db", tmp_path / "r.sqlite")
    assert proc.returncode == 0 and proc.stderr.strip().endswith(
        f"stored 3, rejected 2 (2 bad_length; kept, raw, in the rejected table of {tmp_path / 'r.sqlite'})"), proc.stderr  # fmt: skip
    with pytest.raises(wire.PacketError, match=f"bad_length: code of {k + 1} values, this export's has {k}"):
        Host(small_export).decode(wire.encode(made[1]))


def test_a_sensor_gets_a_threshold_of_its_own_from_its_stored_packets(tmp_path, small_export, sim_test):
    """One export serves a fleet, and a machine noisier than the one it was trained on was flagged
    at every packet, with no way to tell serve otherwise short of a recording and a new scorer for
    all. `calibrate --db --sensor` sets that sensor's threshold from its packets of a normal week;
    the other sensors keep the export's."""
    import shutil

    from test_cli import assert_one_line_error, edgeae

    from edgeae.host import Host
    from edgeae.results import thresholds
    from edgeae.score import load
    from edgeae.serve import Server

    export = tmp_path / "export"
    shutil.copytree(small_export, export)
    host = Host(export)
    limit = host.scorer.threshold_
    residual = host.pipe.residual(np.arange(256))
    quiet, noisy = np.flatnonzero(residual < 0.5 * limit), np.flatnonzero((residual > 1.2 * limit) & (residual < 2 * limit))
    assert len(quiet) and len(noisy)
    rng, day = np.random.default_rng(0), 1_795_946_400  # 2026-11-29T10:00:00Z

    def packets(sensor, first, n, t0, byte):  # one a minute, each residual byte drawn from `byte`
        code = (0,) * host.export.manifest["code_size"]
        return [wire.encode(wire.Packet(host.model_id, sensor, seq, t0 + 60 * i, code, int(rng.choice(byte))))
                for i, seq in enumerate(range(first, first + n))]

    db = tmp_path / "r.sqlite"
    server = Server(export, db)
    server.run_packets(packets(1, 0, 300, day, quiet) + packets(2, 0, 300, day, noisy))
    server.close()
    with contextlib.closing(sqlite3.connect(db)) as con:
        assert con.execute("SELECT sensor, SUM(anomaly) FROM packets GROUP BY sensor").fetchall() == [(1, 0), (2, 300)]

    for args, message in [(("--sensor", 2), "give exactly one of --data (fit the export's scorer) and --db"),
                          (("--db", db), "--db needs --sensor"),
                          (("--db", db, "--sensor", 2, "--mode", "code"), "--mode, --train-rows and --f1 go with --data"),
                          (("--db", db, "--sensor", 5), f"{db}: 0 scorable packets of sensor 5 from export {host.model_id:08x}; need at least 100"),
                          (("--db", db, "--sensor", 2, "--since", "2026-11-30"), "0 scorable packets of sensor 2 from export")]:  # fmt: skip
        assert_one_line_error(edgeae("calibrate", export, *args), message)
    proc = edgeae("calibrate", export, "--db", db, "--sensor", 2, "--since", "2026-11-29", "--until", "2026-11-30", no_tf=True)  # on a gateway
    assert proc.returncode == 0 and "judges by it once reloaded (SIGHUP, systemctl reload) or restarted" in proc.stderr, proc.stderr
    (report,) = json.loads(proc.stdout)
    assert report["sensor"] == 2 and report["packets"] == 300 and report["previous_threshold"] == limit
    assert report["first_time"] == "2026-11-29T10:00:00Z" and report["last_time"] == "2026-11-29T14:59:00Z"
    assert report["flagged_before"] == 300 and report["flagged_now"] == 0 and report["threshold"] > 1.2 * limit
    scorer = load(host.export)
    assert scorer.threshold_ == limit and scorer.sensor_thresholds_ == {2: report["threshold"]}

    server = Server(export, db, state_topic="s/{sensor}")  # serve reads it when it starts
    server.run_packets(packets(1, 300, 1, day + 86400, noisy) + packets(2, 300, 1, day + 86400, noisy))
    server.close()
    with contextlib.closing(sqlite3.connect(db)) as con:
        assert con.execute("SELECT sensor, anomaly FROM packets WHERE seq=300 ORDER BY sensor").fetchall() == [(1, 1), (2, 0)]
        assert sorted(con.execute("SELECT sensor, threshold FROM scorers"), key=str) == [(2, report["threshold"]), (None, limit), (None, limit)]
    assert server.states[2]["threshold"] == report["threshold"] and server.states[1]["threshold"] == limit
    restarted = Server(export, db, state_topic="s/{sensor}")
    restarted.close()
    assert restarted.states[2]["threshold"] == report["threshold"]  # taken up from the database
    assert thresholds(db, [1, 2]) == {1: [limit], 2: sorted([limit, report["threshold"]])}  # the plot: each sensor's own

    assert_one_line_error(edgeae("calibrate", export, "--sensor", 5, "--remove"), "sensor(s) 5 have no threshold of their own (those that do: 2)")
    assert_one_line_error(edgeae("calibrate", export, "--sensor", 2, "--remove", "--db", db), "--remove takes --sensor and nothing else")
    proc = edgeae("calibrate", export, "--sensor", 2, "--remove")  # undone: the export's threshold again
    assert proc.returncode == 0 and json.loads(proc.stdout) == {"removed": [2], "threshold": limit}, proc.stderr
    assert load(host.export).sensor_thresholds_ == {}

    server = Server(export, db)  # a machine too rough for the residual byte: its UCL lies beyond byte 255's error
    server.run_packets(packets(3, 0, 300, day, np.arange(230, 256)))
    server.close()
    assert_one_line_error(edgeae("calibrate", export, "--db", db, "--sensor", 2, "--sensor", 3),
                          f"{db}: sensor 3's threshold by the ucl rule would be")  # fmt: skip
    assert load(host.export).sensor_thresholds_ == {}  # all or none: not 2's either

    assert edgeae("calibrate", export, "--db", db, "--sensor", 2, "--until", "2026-11-30").returncode == 0
    proc = edgeae("calibrate", export, "--data", sim_test)  # a new scorer: the sensor's threshold was on the old one's scale
    assert proc.returncode == 0 and json.loads(proc.stdout)["sensor_thresholds_dropped"] == [2], proc.stderr
    assert load(host.export).sensor_thresholds_ == {}


def test_a_database_of_an_older_edgeae_gets_the_columns_and_constraints_added_since(tmp_path, small_export):
    """The scorers table gained a sensor column (a sensor's own threshold), and every table CHECK
    constraints (`results.SERVED`); a database from before them must still be read and served
    into, not refused as another program's: its tables are rebuilt with their rows, and the
    rejected table's ids go on past those archived (AUTOINCREMENT), as they would have."""
    import shutil

    from test_cli import edgeae

    from edgeae.results import SCHEMA, _ours, summary, thresholds
    from edgeae.serve import Server

    db = tmp_path / "older.sqlite"
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.executescript(SCHEMA.replace(",\n    sensor INTEGER);", ");"))
        con.execute("INSERT INTO scorers VALUES (1, 'abcd0123', 'residual', 'ucl', 0.5)")
        con.executemany("INSERT INTO rejected (received_at, reason, raw) VALUES (1, 'too_short', x'00')", [()] * 3)
        con.execute("DELETE FROM rejected")  # archived
        con.commit()
    assert thresholds(db, [1]) == {1: [0.5]} and summary(db)["packets"] == 0  # read as it is
    archived = tmp_path / "archived.sqlite"
    shutil.copy(db, archived)
    notes = []
    Server(small_export, db, notify=notes.append).close()
    Server(small_export, db, notify=notes.append).close()  # rebuilt once
    said = "made by an older edgeae: rebuilding its table(s) packets, rejected, missing, scorers, archived (1 row) with this one's constraints, once; writers wait meanwhile"
    assert notes == [f"{db}: {said}"]
    proc = edgeae("archive", archived, "--before", "2020-01-01", "--out", tmp_path / "a", no_tf=True)  # archive, from cron, says so too
    assert proc.returncode == 0 and proc.stderr.splitlines()[0] == f"{archived}: {said}", proc.stderr
    with contextlib.closing(sqlite3.connect(db)) as con:
        assert [c[1] for c in con.execute("PRAGMA table_info(scorers)")][-1] == "sensor"
        assert con.execute("SELECT threshold, sensor FROM scorers ORDER BY started_at").fetchone() == (0.5, None)
        assert dict(con.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name != 'sqlite_sequence'")) == \
            {t: sql for t, (_, sql) in _ours().items()}  # fmt: skip
        assert con.execute("INSERT INTO rejected (received_at, reason, raw) VALUES (2, 'too_short', x'00') RETURNING id").fetchone() == (4,)
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed: threshold"):
            con.execute("UPDATE scorers SET threshold = 'high'")
    assert len(thresholds(db, [1])[1]) == 2


def test_results_plot_draws_each_sensor_its_own_thresholds(tmp_path, monkeypatch):
    """A sensor with a threshold of its own (calibrate --db) was drawn with every scorer's line."""
    import matplotlib.pyplot as plt

    from edgeae.report import results_plot

    score = np.array([0.1, 0.2, 0.3])
    series = {s: {"timestamp": np.arange(3.0) + 1.7e9, "score": score, "anomaly": np.zeros(3)} for s in (1, 2)}
    monkeypatch.setattr(plt, "close", lambda fig: None)
    results_plot(series, tmp_path / "s.png", {1: [0.5], 2: [0.5, 0.9]})
    dashed = [[line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"] for ax in plt.gcf().axes[:2]]
    assert dashed == [[0.5], [0.5, 0.9]]


@pytest.mark.slow
def test_sighup_makes_a_running_serve_read_the_thresholds_and_keys_again(tmp_path, small_export, broker):
    """A sensor's threshold set by calibrate, or a new sensor's key, reached serve only through a
    restart; SIGHUP killed it. Now SIGHUP reads the exports and the keys file again between
    batches, and a scorer or keys file that does not load leaves serve as it was."""
    import shutil

    from test_cli import edgeae

    from edgeae.host import Host
    from edgeae.mqtt import Publisher

    export = tmp_path / "export"
    shutil.copytree(small_export, export)
    host = Host(export)
    residual = host.pipe.residual(np.arange(256))
    noisy = int(np.flatnonzero((residual > 1.2 * host.scorer.threshold_) & (residual < 2 * host.scorer.threshold_))[0])
    key = bytes.fromhex(KEYS[2])
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"1": KEYS[1]}))
    packets = [wire.encode(wire.Packet(host.model_id, 2, seq, 1_795_946_400 + seq, (0,) * host.export.manifest["code_size"], noisy), key)
               for seq in range(300)]  # fmt: skip
    db = tmp_path / "r.sqlite"
    serve = _cli("serve", export, "--mqtt", broker, "--db", db, "--keys", keys, stderr=subprocess.PIPE, text=True)
    log = Stderr(serve)
    log.wait_for("SIGHUP to read the exports' scorers and the keys again")
    pub = Publisher(broker)

    def send(raws, stored):
        for raw in raws:
            pub.publish("edgeae/2/up", raw)
        pub.flush()
        log.wait_for(until=lambda: _count(db) + _rejected(db) == stored)

    send(packets[:1], 1)  # sensor 2 has no key yet: rejected
    keys.write_text(json.dumps({"1": KEYS[1], "2": KEYS[2]}))
    serve.send_signal(signal.SIGHUP)
    log.wait_for("reloaded: ")
    assert "; keys of 2 sensors" in log.lines[-1]
    send(packets[1:200], 200)
    assert edgeae("calibrate", export, "--db", db, "--sensor", 2).returncode == 0  # beside the running serve
    serve.send_signal(signal.SIGHUP)
    log.wait_for(", sensor 2 ")  # its own threshold
    send(packets[200:250], 250)
    (export / "scorer.json").write_text("{")
    serve.send_signal(signal.SIGHUP)
    log.wait_for("reload failed, serving on as before: ")
    send(packets[250:], 300)
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(30) == 0
    with contextlib.closing(sqlite3.connect(db)) as con:
        flagged = dict(con.execute("SELECT seq >= 200, SUM(anomaly) FROM packets GROUP BY seq >= 200"))
        assert con.execute("SELECT COUNT(*) FROM packets").fetchone() == (299,) and flagged == {0: 199, 1: 0}
        assert con.execute("SELECT COUNT(*) FROM scorers WHERE sensor=2").fetchone() == (1,)
    assert pub.close() == []


def test_a_reload_judges_each_sensors_state_again(tmp_path, small_export):
    """A sensor flagged under the export's threshold stayed flagged on the state topic after its
    own threshold was set and serve reloaded, until its next packet (minutes, over LoRaWAN)."""
    import shutil

    from edgeae.host import Host, Hosts
    from edgeae.score import calibrate_sensor
    from edgeae.serve import Server

    export, db, published = tmp_path / "export", tmp_path / "r.sqlite", []
    shutil.copytree(small_export, export)
    host = Host(export)
    residual = host.pipe.residual(np.arange(256))
    noisy = np.flatnonzero((residual > 1.2 * host.scorer.threshold_) & (residual < 2 * host.scorer.threshold_))
    quiet = int(np.flatnonzero(residual < 0.5 * host.scorer.threshold_)[-1])
    code = (0,) * host.export.manifest["code_size"]
    server = Server(export, db, state_topic="plant/{sensor}/state")
    server.publish = lambda topic, payload: published.append((topic, json.loads(payload)))
    server.run_packets([wire.encode(wire.Packet(host.model_id, s, seq, 1_795_946_400 + seq, code, int(noisy[seq % len(noisy)] if s == 2 else quiet)))
                        for s in (1, 2) for seq in range(200)])  # fmt: skip
    assert [(t, st["anomaly"], st["since_seq"]) for t, st in published] == [("plant/1/state", False, 0), ("plant/2/state", True, 0)]
    (report,) = calibrate_sensor(export, db, [2])[1]
    server.reload(lambda: Hosts([export]))
    (topic, state), = published[2:]  # sensor 1's threshold is as it was: not published again
    assert topic == "plant/2/state" and state == {**server.states[2], "anomaly": False, "since_seq": 199, "threshold": report["threshold"]}
    server.reload(lambda: Hosts([export]))
    assert len(published) == 3  # nothing changed
    server.close()


def _served_copy(tmp_path, small_export, packets: int) -> tuple[Path, Path, Export]:
    """A copy of the export (calibrate writes its scorer there) and a database into which serve
    stored `packets` packets of sensor 2, seq 0, 1, ...: (export, db, the export opened)."""
    import shutil

    from edgeae.serve import Server

    export, db = tmp_path / "export", tmp_path / "r.sqlite"
    shutil.copytree(small_export, export)
    ex = Export.open(export)
    server = Server(export, db)
    server.run_packets([wire.encode(wire.Packet(ex.model_id, 2, seq, 1_795_946_400 + seq, (0,) * ex.manifest["code_size"], 10))
                        for seq in range(packets)])  # fmt: skip
    server.close()
    return export, db, ex


@pytest.mark.parametrize("edit, parquet", [
    ("code = '[1, 2'", "packets.code holds a value serve does not write (JSONDecodeError"),
    ("code = '[1, 2]'", None),
])  # fmt: skip
def test_a_hand_edited_code_is_named(tmp_path, small_export, edit, parquet):
    """A packet's code that is not serve's JSON list (text, as serve writes, so SQLite takes it)
    edited into the database: `results --parquet`, `archive` and `calibrate --db` ended in a traceback."""
    from edgeae.results import to_parquet
    from edgeae.score import calibrate_sensor

    export, db, _ = _served_copy(tmp_path, small_export, 200)
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.execute(f"UPDATE packets SET {edit} WHERE seq = 7")
    if parquet:
        with pytest.raises(EdgeaeError, match=re.escape(f"r.sqlite: cannot read it as a results database ({parquet}")):
            to_parquet(db, tmp_path / "r.parquet")
        assert not (tmp_path / "r.parquet").exists()
    calibrate = parquet or "packets.code holds a value serve does not write (ValueError"
    with pytest.raises(EdgeaeError, match=re.escape(f"r.sqlite: cannot read it as a results database ({calibrate}")):
        calibrate_sensor(export, db, [2])


@pytest.mark.parametrize("edit, column", [
    ("UPDATE packets SET timestamp = 'x' WHERE seq = 3", "packets.timestamp"),
    ("UPDATE packets SET timestamp = 99999999999999 WHERE seq = 3", "packets.timestamp"),
    ("UPDATE packets SET received_at = 1e300 WHERE seq = 3", "packets.received_at"),
    ("UPDATE packets SET score = 'x' WHERE seq = 3", "packets.score"),
    ("UPDATE packets SET residual = 999 WHERE seq = 3", "packets.residual"),
    ("UPDATE packets SET seq = 'x' WHERE seq = 3", "packets.seq"),
    ("UPDATE packets SET seq = 9223372036854775807 WHERE seq = 3", "packets.seq"),
    ("UPDATE packets SET sensor = X'00ff' WHERE seq = 3", "packets.sensor"),
    ("INSERT INTO archived VALUES (2, 0, 0, 1e300)", "archived.archived_at"),
])  # fmt: skip
def test_a_value_serve_does_not_write_is_refused_by_the_database(tmp_path, small_export, edit, column):
    """Text, a blob, 1e300, a date past 2106 or 2^63 - 1 edited into a column that serve fills with
    numbers was a traceback in results, results --plot, --parquet, archive, calibrate --db or serve
    (TypeError, OverflowError, matplotlib's or pyarrow's errors), where no reader guarded that
    column. Now SQLite refuses the edit (the tables' CHECK constraints); in a database an older
    edgeae made, without them, each reader names the first such value, and serve and archive,
    which would add them, refuse it."""
    from test_cli import assert_one_line_error, edgeae

    from edgeae import results
    from edgeae.results import SCHEMA
    from edgeae.score import calibrate_sensor
    from edgeae.serve import Server

    (export, db, _), old = _served_copy(tmp_path, small_export, 5), tmp_path / "old.sqlite"
    with contextlib.closing(sqlite3.connect(db)) as con, pytest.raises(sqlite3.IntegrityError, match=f"^CHECK constraint failed: {column.split('.')[1]}$"):
        con.execute(edit)
    with contextlib.closing(sqlite3.connect(old)) as con, con:  # an older edgeae's: the same rows, no constraints
        con.executescript(SCHEMA)
        con.execute("ATTACH ? AS new", (str(db),))
        con.execute("INSERT INTO packets SELECT * FROM new.packets")
        con.execute(edit)
    named = f"{column} holds a value serve does not write (row "
    for read in (results.summary, results.score_series, lambda db: results.to_parquet(db, tmp_path / "o.parquet"),
                 lambda db: calibrate_sensor(export, db, [2])):  # fmt: skip
        with pytest.raises(EdgeaeError, match=re.escape(f"old.sqlite: cannot read it as a results database ({named}")):
            read(old)
    notes = []
    with pytest.raises(EdgeaeError, match=re.escape(f"old.sqlite: cannot open it as the results database ({named}")):
        Server(export, old, notify=notes.append)
    assert notes == []  # not told it is being rebuilt, then that it cannot be
    assert_one_line_error(edgeae("archive", old, "--before", "0d", "--out", tmp_path / "a"), f"cannot open it as the results database ({named}")
    assert_one_line_error(edgeae("results", old, "--plot", tmp_path / "p.png"), f"cannot read it as a results database ({named}")
    assert not (tmp_path / "a").exists() and not (tmp_path / "p.png").exists() and not (tmp_path / "o.parquet").exists()


@pytest.mark.parametrize("edit, command, column", [
    ("UPDATE packets SET received_at = 1e300 WHERE seq = 3", ["results"], "packets.received_at"),
    ("UPDATE packets SET sensor = X'00ff' WHERE seq = 3", ["results"], "packets.sensor"),
    ("UPDATE packets SET timestamp = 99999999999999 WHERE seq = 3", ["results", "--plot", "PLOT"], "packets.timestamp"),
    ("UPDATE packets SET anomaly = '' WHERE seq = 3", ["results", "--plot", "PLOT"], "packets.anomaly"),
    ("UPDATE packets SET timestamp = '' WHERE seq = 3", ["calibrate", "EXPORT", "--sensor", "2", "--db"], "packets.timestamp"),
    ("UPDATE packets SET seq = 9223372036854775807 WHERE seq = 3", ["archive", "--before", "2100-01-01", "--out", "ARCHIVE"], "packets.seq"),
    ("UPDATE packets SET seq = 'x' WHERE seq = 3", ["serve", "EXPORT", "--packets", "PACKETS", "--db"], "packets.seq"),
    ("INSERT INTO missing VALUES (X'00ff', 1, 1795946400.0, NULL)", ["results", "--plot", "PLOT"], "missing.sensor"),
])  # fmt: skip
def test_a_value_its_checks_refuse_left_by_damage_is_named(tmp_path, small_export, edit, command, column):
    """SQLite checks the CHECK constraints only on writing: byte damage (a flipped bit in the file
    of a gateway's SD card), or a hand edit under PRAGMA ignore_check_constraints, can leave a value
    they refuse in a database of this edgeae, and results, calibrate --db and archive ended in a
    traceback (OverflowError from the clock, json's TypeError on a sensor of bytes, matplotlib's
    date range, the int too large for SQLite, serve's TypeError counting on from a sequence number
    of text), or in a plot written before the summary failed. Now the command names the value, as
    for an older edgeae's database, and writes nothing; archive says its folder holds copies of rows
    it kept, serve keeps the packets it could not store in a packet file."""
    from test_cli import assert_one_line_error, edgeae

    export, db, ex = _served_copy(tmp_path, small_export, 100)  # calibrate needs 100
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.execute("PRAGMA ignore_check_constraints = 1")
        con.execute(edit)
    wire.write_packet_file(tmp_path / "more.bin", [wire.encode(wire.Packet(ex.model_id, 2, 100, 1_795_946_500, (0,) * ex.manifest["code_size"], 10))])
    paths = {"PLOT": tmp_path / "p.png", "ARCHIVE": tmp_path / "a", "EXPORT": export, "PACKETS": tmp_path / "more.bin"}
    args = [str(paths.get(a, a)) for a in command]
    args = [*args, db] if command[0] in ("calibrate", "serve") else [args[0], db, *args[1:]]
    verb = {"archive": "archive", "serve": "store packets"}.get(command[0], "read it as a results database")
    proc = edgeae(*args)
    assert_one_line_error(proc, f"r.sqlite: cannot {verb} ({column} holds a value serve does not write (row ")
    if command[0] == "serve":
        assert "the 1 not stored are kept in" in proc.stderr and len(list(tmp_path.glob("r.sqlite.unstored-*.bin"))) == 1
    if command[0] == "archive":
        assert proc.stderr.rstrip().endswith("a holds copies of rows still in the database: remove it before archiving again")
        with contextlib.closing(sqlite3.connect(db)) as con:
            assert con.execute("SELECT COUNT(*) FROM packets").fetchone()[0] == 100
    assert not (tmp_path / "p.png").exists()


def test_a_schema_damaged_into_bytes_that_are_not_utf8_is_named(tmp_path, small_export):
    """SQLite's "malformed database schema" error quotes the damaged bytes, and Python's decoding
    of that message raised a UnicodeDecodeError traceback from every command that opens the database
    (a flipped bit in the file, in a byte fuzz of it: 1 of 150)."""
    import shutil

    from test_cli import assert_one_line_error, edgeae

    from edgeae.serve import Server

    db, packets, ex = tmp_path / "r.sqlite", tmp_path / "p.bin", Export.open(small_export)
    Server(small_export, db).close()
    wire.write_packet_file(packets, [wire.encode(wire.Packet(ex.model_id, 1, 0, 1_795_946_400, (0,) * ex.manifest["code_size"], 10))])
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        sql = con.execute("SELECT sql FROM sqlite_master WHERE name = 'rejected'").fetchone()[0].encode()
        con.execute("PRAGMA writable_schema = ON")
        con.execute("UPDATE sqlite_master SET sql = CAST(? AS TEXT) WHERE name = 'rejected'", (sql.replace(b"typeof(raw)", b"typeof(r\xe1w)"),))
    named = "malformed database schema (rejected) - no such column: r\ufffdw"
    shutil.copytree(small_export, tmp_path / "export")  # calibrate would write its scorer
    for command, verb in ((["results", db], "read it as a"), (["calibrate", tmp_path / "export", "--sensor", "1", "--db", db], "read it as a"),
                          (["archive", db, "--before", "0", "--out", tmp_path / "a"], "open it as the"),
                          (["serve", small_export, "--db", db, "--packets", packets], "open it as the")):  # fmt: skip
        assert_one_line_error(edgeae(*command), f"r.sqlite: cannot {verb} results database ({named})")


def test_window_times_that_cannot_be_right_are_said_once_per_sensor(tmp_path, small_export):
    """A device whose clock a flat battery reset to 1970 sent window times serve stored as they
    came, without a word; `calibrate --since` and the results plot, which go by them, then missed
    its packets. serve (live) says so once per sensor, and stores them as they are."""
    from edgeae.mqtt import Message
    from edgeae.serve import Server

    ex = Export.open(small_export)
    now, code = time.time(), (0,) * ex.manifest["code_size"]
    stamps = {1: 120 + 60 * np.arange(10), 2: now + 3600 + np.arange(5), 3: now - 3 * 86_400 + np.arange(5)}  # reset, ahead, a backlog
    raws = {s: [wire.encode(wire.Packet(ex.model_id, s, i, int(t), code, 9)) for i, t in enumerate(ts)] for s, ts in stamps.items()}
    db, notes = tmp_path / "r.sqlite", []
    server = Server(small_export, db, notify=notes.append)
    server.run_packets(raws[1][:5])  # a packet file is not live: its times are whenever it was recorded
    assert notes == []
    server.live = True  # as run_mqtt sets it
    server.handle([Message("edgeae/1/up", raw, now, False) for raw in raws[1][5:] + raws[2] + raws[3]])
    server.close()
    assert len(notes) == 2 and notes[0].startswith("sensor 1: seq 5's window time 1970-01-01T00:07:00Z is 5")
    assert " years before it arrived (" in notes[0] and "stored as it is (a device without a clock sends 0" in notes[0]
    assert notes[1].startswith("sensor 2: seq 0's window time ") and " is 60 min after it arrived (" in notes[1]
    assert _count(db) == 20
    server = Server(small_export, db, notify=notes.append)  # past the 32-bit counter: the seq as stored, as results shows it
    server.run_packets([wire.encode(wire.Packet(ex.model_id, 4, 2**32 - 1, int(now), code, 9))])
    server.live = True
    server.handle([Message("edgeae/4/up", wire.encode(wire.Packet(ex.model_id, 4, 0, 120, code, 9)), now, False)])
    server.close()
    assert notes[2].startswith(f"sensor 4: seq {2**32}'s window time 1970-01-01T00:02:00Z")


def _rejected(db) -> int:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return con.execute("SELECT COUNT(*) FROM rejected").fetchone()[0]


def test_a_reload_the_database_cannot_record_changes_nothing(tmp_path, small_export):
    """The scorers that judge packets are recorded with them; a reload the database will not take
    (locked past SQLite's busy timeout) leaves serve judging as before, where it switched unrecorded."""
    from edgeae.host import Hosts
    from edgeae.serve import Server

    db, notes = tmp_path / "r.sqlite", []
    server = Server(small_export, db, notify=notes.append)
    before = server.hosts
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as holder:
        holder.execute("BEGIN IMMEDIATE")
        server.reload(lambda: Hosts([small_export]))
        holder.rollback()
    assert server.hosts is before and notes == ["reload failed, serving on as before: database is locked"]
    server.reload(lambda: Hosts([small_export]))
    assert server.hosts is not before and notes[-1].startswith("reloaded: ")
    server.close()

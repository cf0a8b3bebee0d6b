"""The results database that `edgeae serve` writes: its tables, opened only when they are edgeae's,
and read back (`edgeae results`: a summary, each sensor's scores, Parquet).

Tables (see `SCHEMA`): packets, rejected, missing (gaps; `filled_at` set when a late packet arrives),
scorers (one row per serve run and export: the scorer whose threshold set that run's anomaly flags).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path

import numpy as np

from .errors import EdgeaeError, existing_file, require
from .fsutil import atomic_file


#: score is NULL for a packet without the residual byte that a scorer of residuals needs (`Host.read`).
PACKETS = """
CREATE TABLE IF NOT EXISTS packets (
    sensor INTEGER NOT NULL, seq INTEGER NOT NULL, timestamp INTEGER NOT NULL,
    model_id TEXT NOT NULL, code TEXT NOT NULL, residual INTEGER,
    reconstruction_rms TEXT NOT NULL, score REAL, anomaly INTEGER NOT NULL,
    reordered INTEGER NOT NULL DEFAULT 0, received_at REAL NOT NULL, stored_at REAL NOT NULL,
    topic TEXT, PRIMARY KEY (sensor, seq))"""
SCHEMA = PACKETS + """;
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL NOT NULL, topic TEXT,
    reason TEXT NOT NULL, detail TEXT, sensor INTEGER, seq INTEGER, raw BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS missing (
    sensor INTEGER NOT NULL, seq INTEGER NOT NULL, detected_at REAL NOT NULL, filled_at REAL,
    PRIMARY KEY (sensor, seq));
CREATE TABLE IF NOT EXISTS scorers (
    started_at REAL NOT NULL, model_id TEXT NOT NULL, mode TEXT NOT NULL, rule TEXT NOT NULL, threshold REAL NOT NULL);
"""
APPLICATION_ID = 0x65646165  # "edae" in PRAGMA application_id: marks a results database as edgeae's


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def _refuse_foreign(con: sqlite3.Connection, db, advice: str) -> list[str]:
    """The edgeae tables `con` holds; an error if it holds any other table or is marked as
    another program's (a database from before the mark, application id 0, passes)."""
    app_id = con.execute("PRAGMA application_id").fetchone()[0]
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    with contextlib.closing(sqlite3.connect(":memory:")) as ours:
        ours.executescript(SCHEMA)
        foreign = [t for t in tables if _columns(con, t) != _columns(ours, t)]
    if foreign:
        raise EdgeaeError(f"{db}: its table(s) {', '.join(foreign)} are not edgeae's; {advice}")
    if app_id not in (0, APPLICATION_ID):
        raise EdgeaeError(f"{db}: another program's database (application id {app_id:#x}); {advice}")
    return tables


@contextlib.contextmanager
def read_results(db: str | Path):
    """A connection to an existing results database for reading (`edgeae results`). It never
    creates the file, refuses one that is not edgeae's as `open_results` does, and writes nothing
    but SQLite's own recovery: a transaction that a killed serve left unfinished (a hot journal)
    is rolled back, as any SQLite reader does; a read-only connection could not read the file."""
    path = existing_file(db, "results database")
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)
    except sqlite3.Error as e:
        raise EdgeaeError(f"{db}: cannot open it as a results database ({e})") from None
    try:
        if "packets" not in _refuse_foreign(con, db, "give a database made by edgeae serve"):
            raise EdgeaeError(f"{db}: not a results database of edgeae serve (no packets table)")
        yield con
    except sqlite3.Error as e:
        raise EdgeaeError(f"{db}: cannot read it as a results database ({e})") from None
    finally:
        con.close()


def open_results(db: str | Path) -> sqlite3.Connection:
    """The results database at `db`, created if new. Checked before anything is written: a database
    of another program (another application id, or any table that is not edgeae's) is refused
    rather than given edgeae's tables beside its own."""
    try:
        con = sqlite3.connect(str(db), check_same_thread=False)
    except sqlite3.Error as e:
        raise EdgeaeError(f"{db}: cannot open it as the results database ({e})") from None
    try:
        _refuse_foreign(con, db, "give another --db")
        _allow_unscored(con)
        con.executescript(SCHEMA)
        con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        con.commit()
    except sqlite3.Error as e:
        con.close()
        raise EdgeaeError(f"{db}: cannot open it as the results database ({e})") from None
    except EdgeaeError:
        con.close()
        raise
    return con


def _allow_unscored(con: sqlite3.Connection) -> None:
    """A packets table from before unscored packets (score NOT NULL) gets today's, its rows kept.
    SQLite cannot drop a NOT NULL in place: a new table, the rows copied, the old one dropped, in
    one transaction."""
    if not any(name == "score" and notnull for _, name, _, notnull, *_ in con.execute("PRAGMA table_info(packets)")):
        return
    con.execute("BEGIN IMMEDIATE")
    try:
        con.execute("ALTER TABLE packets RENAME TO packets_score_not_null")
        con.execute(PACKETS)
        con.execute("INSERT INTO packets SELECT * FROM packets_score_not_null")
        con.execute("DROP TABLE packets_score_not_null")
        con.commit()
    except BaseException:
        con.rollback()
        raise


def summary(db: str | Path) -> dict:
    """What a results database holds: per sensor the packets, anomalies, sequence numbers, the
    first and last window times and when the last packet came in; open gaps, reordering, rejections."""
    with read_results(db) as con:
        q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        return {
            "packets": q("SELECT COUNT(*) FROM packets")[0][0],
            "anomalies": q("SELECT COUNT(*) FROM packets WHERE anomaly=1")[0][0],
            "unscored": q("SELECT COUNT(*) FROM packets WHERE score IS NULL")[0][0],
            "per_sensor": {s: {"packets": n, "anomalies": k, "first_seq": a, "last_seq": b, "first_time": _utc(t0), "last_time": _utc(t1),
                               "last_received": _utc(r)} for s, n, k, a, b, t0, t1, r in
                           q("SELECT sensor, COUNT(*), SUM(anomaly), MIN(seq), MAX(seq), MIN(timestamp), MAX(timestamp), MAX(received_at) "
                             "FROM packets GROUP BY sensor")},  # fmt: skip
            "open_gaps": {s: n for s, n in q("SELECT sensor, COUNT(*) FROM missing WHERE filled_at IS NULL GROUP BY sensor")},
            "reordered": q("SELECT COUNT(*) FROM packets WHERE reordered=1")[0][0],
            "rejected": {r: n for r, n in q("SELECT reason, COUNT(*) FROM rejected GROUP BY reason")},
        }


def _utc(t: float) -> str:
    """Unix seconds as ISO 8601 in UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def score_series(db: str | Path, sensors: int | None = None) -> dict[int, dict[str, np.ndarray]]:
    """Per sensor (the first `sensors` by id, or all), in sequence order: the packets' window
    timestamps, scores and anomaly flags, read a sensor at a time into arrays (24 bytes a packet,
    not the rows' Python tuples: a gateway's database holds millions)."""
    with read_results(db) as con:
        ids = [s for (s,) in con.execute("SELECT DISTINCT sensor FROM packets ORDER BY sensor")][:sensors]
        out = {}
        for s in ids:
            rows = con.execute("SELECT timestamp, score, anomaly FROM packets WHERE sensor=? ORDER BY seq", (s,))
            a = np.fromiter(rows, dtype=[("timestamp", float), ("score", float), ("anomaly", float)])
            out[s] = {k: a[k].copy() for k in a.dtype.names}
    return out


def thresholds(db: str | Path) -> list[float]:
    """The distinct thresholds that serve runs into `db` flagged packets with (none in a database
    from before the scorers table)."""
    with read_results(db) as con:
        if not con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'scorers'").fetchone():
            return []
        return [t for (t,) in con.execute("SELECT DISTINCT threshold FROM scorers ORDER BY threshold")]


#: `results --parquet`: the packets table's columns as Parquet types (lists, UTC timestamps)
#: instead of SQLite's JSON text and Unix seconds, for pandas, polars or DuckDB to read as they are.
PARQUET_BATCH = 65_536  # rows held at a time


def _parquet_schema(pa):
    utc = lambda unit: pa.timestamp(unit, tz="UTC")  # noqa: E731
    return pa.schema([("sensor", pa.int64()), ("seq", pa.int64()), ("timestamp", utc("s")), ("model_id", pa.string()),
                      ("code", pa.list_(pa.int8())), ("residual", pa.uint8()), ("reconstruction_rms", pa.list_(pa.float64())),
                      ("score", pa.float64()), ("anomaly", pa.bool_()), ("reordered", pa.bool_()),
                      ("received_at", utc("us")), ("stored_at", utc("us")), ("topic", pa.string())])  # fmt: skip


def to_parquet(db: str | Path, out: str | Path, batch: int = PARQUET_BATCH) -> Path:
    """The packets table as Parquet, in (sensor, seq) order, `batch` rows at a time so that a
    database of any size fits in memory (written to a temporary file, then renamed)."""
    pa = require("pyarrow", "serve")
    pq = require("pyarrow.parquet", "serve")
    schema = _parquet_schema(pa)
    convert = {"code": json.loads, "reconstruction_rms": json.loads, "anomaly": bool, "reordered": bool,
               "received_at": lambda t: round(t * 1e6), "stored_at": lambda t: round(t * 1e6)}  # fmt: skip

    def column(field, values):
        f = convert.get(field.name)
        return pa.array(values if f is None else [None if v is None else f(v) for v in values], type=field.type)

    with read_results(db) as con, atomic_file(out) as tmp:
        cur = con.execute(f"SELECT {', '.join(schema.names)} FROM packets ORDER BY sensor, seq")
        with pq.ParquetWriter(tmp, schema) as writer:
            while rows := cur.fetchmany(batch):
                writer.write_batch(pa.record_batch([column(f, v) for f, v in zip(schema, zip(*rows))], schema=schema))
    return Path(out)

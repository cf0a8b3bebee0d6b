"""The results database that `edgeae serve` writes: its tables, opened only when they are edgeae's,
read back (`edgeae results`: a summary, each sensor's scores, Parquet) and archived (`edgeae
archive`: what came in before a time moved out into Parquet files, so that the database of a
gateway that runs for years stops growing).

Tables (see `SCHEMA`): packets, rejected, missing (gaps; `filled_at` set when a late packet arrives),
scorers (per serve run and export, the scorer whose threshold set that run's anomaly flags: a row
with sensor NULL, and one per sensor that has a threshold of its own),
archived (per sensor, the sequence numbers below which its packets were archived: serve rejects them
as replays, as it would the packets themselves). Each column holds only values serve writes (`SERVED`,
the tables' CHECK constraints): the readers here trust the types and ranges of what they read.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import reprlib
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import EdgeaeError, existing_file, require
from .fsutil import PENDING, atomic_file, deferring_signals, fsync_path, only_one, parse_json, temp_folder_beside


#: The tables, with their values' constraints added from `SERVED` (`_ours`). In packets, score is
#: NULL for a packet without the residual byte that a scorer of residuals needs (`Host.read`); seq
#: is the packet's counted on past its 32-bit wraps (2^32, 2^32 + 1, ...: `serve.Server._counted_on`).
SCHEMA = """
CREATE TABLE IF NOT EXISTS packets (
    sensor INTEGER NOT NULL, seq INTEGER NOT NULL, timestamp INTEGER NOT NULL,
    model_id TEXT NOT NULL, code TEXT NOT NULL, residual INTEGER,
    reconstruction_rms TEXT NOT NULL, score REAL, anomaly INTEGER NOT NULL,
    reordered INTEGER NOT NULL DEFAULT 0, received_at REAL NOT NULL, stored_at REAL NOT NULL,
    topic TEXT, PRIMARY KEY (sensor, seq));
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL NOT NULL, topic TEXT,
    reason TEXT NOT NULL, detail TEXT, sensor INTEGER, seq INTEGER, raw BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS missing (
    sensor INTEGER NOT NULL, seq INTEGER NOT NULL, detected_at REAL NOT NULL, filled_at REAL,
    PRIMARY KEY (sensor, seq));
CREATE TABLE IF NOT EXISTS scorers (
    started_at REAL NOT NULL, model_id TEXT NOT NULL, mode TEXT NOT NULL, rule TEXT NOT NULL, threshold REAL NOT NULL,
    sensor INTEGER);
CREATE TABLE IF NOT EXISTS archived (
    sensor INTEGER PRIMARY KEY, below_seq INTEGER NOT NULL, packets INTEGER NOT NULL, archived_at REAL NOT NULL);
"""
APPLICATION_ID = 0x65646165  # "edae" in PRAGMA application_id: marks a results database as edgeae's


def _integer(low: int, high: int) -> str:
    return f"typeof({{c}}) = 'integer' AND {{c}} BETWEEN {low} AND {high}"


_TIME = "typeof({c}) = 'real' AND {c} >= 0 AND {c} < 4294967296"  # Unix seconds until 2106, as the packet's field
_TEXT = "typeof({c}) = 'text'"
#: The values serve writes, per column name (the same in each table that has it), as SQL: the CHECK
#: constraints of each table, named for the column, so that SQLite refuses any other value, a hand
#: edit's too ("CHECK constraint failed: seq"); a NULL passes (NOT NULL says where it may not).
#: Sequence numbers stay below 2^53, exact as a double (a JSON reader's); score NaN is stored NULL.
SERVED = {
    "sensor": _integer(0, 65535), "timestamp": _integer(0, 2**32 - 1), "residual": _integer(0, 255),
    "seq": _integer(0, 2**53 - 1), **dict.fromkeys(["below_seq", "packets"], _integer(0, 2**53)), **dict.fromkeys(["anomaly", "reordered"], _integer(0, 1)),
    **dict.fromkeys(["received_at", "stored_at", "detected_at", "filled_at", "archived_at", "started_at"], _TIME),
    **dict.fromkeys(["score", "threshold"], "typeof({c}) = 'real'"), "raw": "typeof({c}) = 'blob'",
    **dict.fromkeys(["model_id", "code", "reconstruction_rms", "topic", "reason", "detail", "mode", "rule"], _TEXT),
}  # fmt: skip


def _served(column: str) -> str:
    return f"{column} IS NULL OR ({SERVED[column].format(c=column)})"


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


@functools.cache
def _ours() -> dict[str, tuple[list[str], str]]:
    """Each table of `SCHEMA`: its columns' names, and the statement that creates it with
    a CHECK constraint per column of `SERVED` (made once, in an in-memory database)."""
    with contextlib.closing(sqlite3.connect(":memory:")) as plain:
        plain.executescript(SCHEMA)
        ours = {}
        for t, sql in plain.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").fetchall():
            columns = _columns(plain, t)
            checks = "".join(f",\n    CONSTRAINT {c} CHECK ({_served(c)})" for c in columns if c in SERVED)
            ours[t] = columns, f"{sql[:-1]}{checks})"
        return ours


def _older(con: sqlite3.Connection) -> list[str]:
    """The tables of `con` that an older edgeae made: short of the columns added since, or of the
    CHECK constraints (their statement is not ours)."""
    stored = dict(con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
    return [t for t, (_, sql) in _ours().items() if t in stored and stored[t] != sql]


def _check_served(con: sqlite3.Connection, table: str) -> None:
    """`not_served` for the first value of `table` that its CHECK or NOT NULL constraints would
    refuse. SQLite checks them only on writing: a table an older edgeae made has no CHECKs, so a
    hand edit could have put anything there, and byte damage (or PRAGMA ignore_check_constraints)
    can leave any value in one of ours. One scan."""
    checks = {c: f"{c} IS NOT NULL AND ({_served(c)})" if not_null else _served(c)
              for _, c, _, not_null, *_ in con.execute(f"PRAGMA table_info({table})") if c in SERVED}  # fmt: skip
    row = con.execute(f"SELECT rowid, {', '.join(f'{c}, {ok}' for c, ok in checks.items())} FROM {table} "
                      f"WHERE NOT ({' AND '.join(f'({ok})' for ok in checks.values())}) LIMIT 1").fetchone()  # fmt: skip
    if row is not None:
        rowid, values, served = row[0], row[1::2], row[2::2]
        column, value = next((c, v) for c, v, ok in zip(checks, values, served) if not ok)
        raise not_served(f"{table}.{column}", f"row {rowid}: {reprlib.repr(value)}")


def _refuse_foreign(con: sqlite3.Connection, db, advice: str) -> list[str]:
    """The edgeae tables `con` holds; an error if it holds any other table or is marked as
    another program's (a database from before the mark, application id 0, passes). A table
    whose columns begin ours is an older edgeae's, short of the columns added since."""
    app_id = con.execute("PRAGMA application_id").fetchone()[0]
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    ours = {t: columns for t, (columns, _) in _ours().items()}
    foreign = [t for t in tables if (c := _columns(con, t)) != ours.get(t, [])[: len(c)] or not c]
    if foreign:
        raise EdgeaeError(f"{db}: its table(s) {', '.join(foreign)} are not edgeae's; {advice}")
    if app_id not in (0, APPLICATION_ID):
        raise EdgeaeError(f"{db}: another program's database (application id {app_id:#x}); {advice}")
    return tables


NOT_SERVES = "not a results database of edgeae serve (no packets table)"


def not_served(column: str, what: str | Exception) -> sqlite3.DataError:
    """The error for a value in `column` that serve does not write (the database edited by hand or
    damaged), `what` saying which, or the exception reading it raised: raised inside `read_results`
    or `open_results`, it is named with the database, as SQLite's own are."""
    if isinstance(what, Exception):
        what = f"{what.__class__.__name__}: {what}"
    return sqlite3.DataError(f"{column} holds a value serve does not write ({what}): an edited or damaged database")


def sqlite_message(e: sqlite3.Error | UnicodeDecodeError) -> str:
    """SQLite's error message. One that quotes a damaged database's bytes (its schema's, "malformed
    database schema (packets) - no such column: ...") reaches Python as the UnicodeDecodeError of
    decoding it: that happens where a connection first reads the schema (`read_results`,
    `open_results`), before any query of edgeae's runs."""
    return e.object.decode("utf-8", "replace") if isinstance(e, UnicodeDecodeError) else str(e)


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
            raise EdgeaeError(f"{db}: {NOT_SERVES}")
        for table in _older(con):
            _check_served(con, table)
        yield con
    except (sqlite3.Error, UnicodeDecodeError) as e:
        raise EdgeaeError(f"{db}: cannot read it as a results database ({sqlite_message(e)})") from None
    finally:
        con.close()


@contextlib.contextmanager
def damage_named(db: str | Path | sqlite3.Connection):
    """Around what reads the database `db` (a path, or a connection whose transaction is then
    rolled back): a TypeError, ValueError or OverflowError that a value serve does not write caused
    becomes the error naming that value (`not_served`). The tables' checks keep such values out
    only as rows are written: byte damage, or a hand edit under PRAGMA ignore_check_constraints,
    can leave one. The database is scanned for one only on such an error (a gateway's takes
    seconds); if it holds none, the error is edgeae's own and goes on as it is."""
    try:
        yield
    except (TypeError, ValueError, OverflowError):
        if isinstance(db, sqlite3.Connection):
            db.rollback()
            _check_all_served(db)
        else:
            with read_results(db) as con:
                _check_all_served(con)
        raise


def _check_all_served(con: sqlite3.Connection) -> None:
    """`_check_served` of each of edgeae's tables that `con` holds."""
    for table in _ours():
        if _has(con, table):
            _check_served(con, table)


def open_results(db: str | Path, advice: str = "give another --db", create: bool = True,
                 notify: Callable[[str], None] = lambda message: None) -> sqlite3.Connection:  # fmt: skip
    """The results database at `db`, created if new (unless not `create`: then one that serve has
    made). Checked before anything is written: a database of another program (another application
    id, or any table that is not edgeae's) is refused rather than given edgeae's tables beside its own.
    An older edgeae's is rebuilt as ours (`_upgrade`), said to `notify` first: it takes a while."""
    try:
        con = sqlite3.connect(str(db), check_same_thread=False)
    except sqlite3.Error as e:
        raise EdgeaeError(f"{db}: cannot open it as the results database ({e})") from None
    try:
        if "packets" not in _refuse_foreign(con, db, advice) and not create:
            raise EdgeaeError(f"{db}: {NOT_SERVES}")
        _upgrade(con, db, notify)
        con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        con.commit()
    except (sqlite3.Error, UnicodeDecodeError) as e:
        con.close()
        raise EdgeaeError(f"{db}: cannot open it as the results database ({sqlite_message(e)})") from None
    except EdgeaeError:
        con.close()
        raise
    return con


def _upgrade(con: sqlite3.Connection, db, notify: Callable[[str], None]) -> None:
    """Create the tables `con` lacks, and rebuild those an older edgeae made (`_older`) as ours, their
    rows copied once all are checked (`_check_served`) and `notify` told: SQLite cannot add a
    constraint, nor drop a NOT NULL, in place. In one transaction, under the write lock: a serve and
    an archive opening it at once do it once. A table's AUTOINCREMENT count goes on where it was (an
    archived id is not given again)."""
    if not _older(con) and all(_has(con, t) for t in _ours()):
        return
    con.execute("BEGIN IMMEDIATE")
    try:
        older = _older(con)
        for table in older:
            _check_served(con, table)
        if older:
            rows = sum(con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in older)
            notify(f"{db}: made by an older edgeae: rebuilding its table(s) {', '.join(older)} ({rows} row{'s' * (rows != 1)}) with this one's "
                   "constraints, once; writers wait meanwhile")  # fmt: skip
        for table, (_, sql) in _ours().items():
            if table in older:
                kept = ", ".join(_columns(con, table))
                con.execute(f"ALTER TABLE {table} RENAME TO {table}_older")
                con.execute(sql)
                con.execute(f"INSERT INTO {table} ({kept}) SELECT {kept} FROM {table}_older")
                if _has(con, "sqlite_sequence"):
                    con.execute("DELETE FROM sqlite_sequence WHERE name = ?", (table,))
                    con.execute("UPDATE sqlite_sequence SET name = ? WHERE name = ?", (table, f"{table}_older"))
                con.execute(f"DROP TABLE {table}_older")
            elif not _has(con, table):
                con.execute(sql)
        con.commit()
    except BaseException:
        con.rollback()
        raise


def _since(column: str, since: float | None) -> str:
    """The SQL condition on `column` (Unix seconds) for what came since `since` (None: everything)."""
    return "1" if since is None else f"{column} >= {float(since)!r}"


def summary(db: str | Path, since: float | None = None) -> dict:
    """What a results database holds (of what came in since `since`, a Unix time, if given): per
    sensor the packets, anomalies, sequence numbers, the first and last window times and when the
    last packet came in; open gaps, reordering, rejections; each sensor's archived packets."""
    recent = _since("received_at", since)
    with read_results(db) as con:
        q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        return {
            **({} if since is None else {"since": iso_utc(since)}),
            "packets": q(f"SELECT COUNT(*) FROM packets WHERE {recent}")[0][0],
            "anomalies": q(f"SELECT COUNT(*) FROM packets WHERE anomaly=1 AND {recent}")[0][0],
            "unscored": q(f"SELECT COUNT(*) FROM packets WHERE score IS NULL AND {recent}")[0][0],
            "per_sensor": {s: {"packets": n, "anomalies": k, "first_seq": a, "last_seq": b, "first_time": iso_utc(t0),
                               "last_time": iso_utc(t1), "last_received": iso_utc(r)}
                           for s, n, k, a, b, t0, t1, r in
                           q("SELECT sensor, COUNT(*), SUM(anomaly), MIN(seq), MAX(seq), MIN(timestamp), MAX(timestamp), MAX(received_at) "
                             f"FROM packets WHERE {recent} GROUP BY sensor")},  # fmt: skip
            "open_gaps": {s: n for s, n in q(f"SELECT sensor, COUNT(*) FROM missing WHERE filled_at IS NULL AND {_since('detected_at', since)} "
                                             "GROUP BY sensor")},  # fmt: skip
            "reordered": q(f"SELECT COUNT(*) FROM packets WHERE reordered=1 AND {recent}")[0][0],
            "rejected": {r: n for r, n in q(f"SELECT reason, COUNT(*) FROM rejected WHERE {recent} GROUP BY reason")},
            "archived": {s: {"packets": n, "below_seq": w, "archived_at": iso_utc(t)} for s, n, w, t in
                         q("SELECT sensor, packets, below_seq, archived_at FROM archived ORDER BY sensor")} if _has(con, "archived") else {},
        }


def _has(con: sqlite3.Connection, table: str) -> bool:
    """Whether the database has `table` (one from an older edgeae may lack the newer ones)."""
    return con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is not None


def iso_utc(t: float) -> str:
    """Unix seconds as ISO 8601 in UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def score_series(db: str | Path, sensors: int | None = None, since: float | None = None) -> dict[int, dict[str, np.ndarray]]:
    """Per sensor (the first `sensors` by id, or all), in sequence order: the window timestamps,
    scores and anomaly flags of its packets (that came in since `since`, if given), read a sensor
    at a time into arrays (24 bytes a packet, not the rows' Python tuples: a gateway's database
    holds millions)."""
    recent = _since("received_at", since)
    with read_results(db) as con:
        ids = [s for (s,) in con.execute(f"SELECT DISTINCT sensor FROM packets WHERE {recent} ORDER BY sensor")][:sensors]
        out = {}
        for s in ids:
            rows = con.execute(f"SELECT timestamp, score, anomaly FROM packets WHERE sensor=? AND {recent} ORDER BY seq", (s,))
            a = np.fromiter(rows, dtype=[("timestamp", float), ("score", float), ("anomaly", float)])
            out[s] = {k: a[k].copy() for k in a.dtype.names}
    return out


def thresholds(db: str | Path, sensors) -> dict[int, list[float]]:
    """Per sensor, the distinct thresholds that serve runs into `db` flagged packets with: a run's
    own for the sensor if it had one, else the export's (none in a database from before the
    scorers table)."""
    with read_results(db) as con:
        if not _has(con, "scorers"):
            return {}
        if "sensor" not in _columns(con, "scorers"):  # an older edgeae's: every sensor judged by the export's
            return {s: [t for (t,) in con.execute("SELECT DISTINCT threshold FROM scorers ORDER BY threshold")] for s in sensors}
        return {s: [t for (t,) in con.execute(
            "SELECT DISTINCT COALESCE(own.threshold, export.threshold) FROM scorers export LEFT JOIN scorers own ON "
            "own.started_at=export.started_at AND own.model_id=export.model_id AND own.sensor=? WHERE export.sensor IS NULL ORDER BY 1",
            (s,))] for s in sensors}  # fmt: skip


#: `results --parquet` and `archive`: the tables' columns as Parquet types (lists, UTC timestamps)
#: instead of SQLite's JSON text and Unix seconds, for pandas, polars or DuckDB to read as they are.
PARQUET_BATCH = 65_536  # rows held at a time


def _parquet_schema(pa, table: str):
    utc = lambda unit: pa.timestamp(unit, tz="UTC")  # noqa: E731
    i64, f64, text = pa.int64(), pa.float64(), pa.string()
    return pa.schema({
        "packets": [("sensor", i64), ("seq", i64), ("timestamp", utc("s")), ("model_id", text), ("code", pa.list_(pa.int8())),
                    ("residual", pa.uint8()), ("reconstruction_rms", pa.list_(f64)), ("score", f64), ("anomaly", pa.bool_()),
                    ("reordered", pa.bool_()), ("received_at", utc("us")), ("stored_at", utc("us")), ("topic", text)],
        "rejected": [("id", i64), ("received_at", utc("us")), ("topic", text), ("reason", text), ("detail", text), ("sensor", i64),
                     ("seq", i64), ("raw", pa.binary())],
        "missing": [("sensor", i64), ("seq", i64), ("detected_at", utc("us")), ("filled_at", utc("us"))],
    }[table])  # fmt: skip


def batches(con: sqlite3.Connection, table: str, columns: str, where: str, args=(), key: str = "rowid", batch: int = PARQUET_BATCH):
    """The `columns` of the rows of `table` that `where` (with `args`) selects, in the order of
    `key` (its columns), as lists of `batch` rows, each batch its own query (the next begins after
    the last key read): no read holds SQLite's lock for longer than a batch, which would stall a
    running serve's writes."""
    k = len(key.split(","))
    select = f"SELECT {key}, {columns} FROM {table} WHERE ({where})"
    rows = con.execute(f"{select} ORDER BY {key} LIMIT {batch}", args).fetchall()
    while rows:
        yield [r[k:] for r in rows]
        rows = con.execute(f"{select} AND ({key}) > ({', '.join('?' * k)}) ORDER BY {key} LIMIT {batch}", (*args, *rows[-1][:k])).fetchall()


def _write_parquet(con: sqlite3.Connection, table: str, where: str, path: Path, batch: int, key: str) -> int:
    """The rows of `table` that `where` selects, in the order of `key` (its columns), as Parquet at
    `path`; returns how many. Read a batch at a time (`batches`): a database of any size fits in
    memory, and serve's writes go on meanwhile."""
    pa = require("pyarrow", "serve")
    pq = require("pyarrow.parquet", "serve")
    schema = _parquet_schema(pa, table)
    micro = lambda t: round(t * 1e6)  # noqa: E731
    convert = {"code": parse_json, "reconstruction_rms": parse_json, "anomaly": bool, "reordered": bool,
               "received_at": micro, "stored_at": micro, "detected_at": micro, "filled_at": micro}  # fmt: skip

    def column(field, values):
        f = convert.get(field.name)
        try:
            return pa.array(values if f is None else [None if v is None else f(v) for v in values], type=field.type)
        except (ValueError, TypeError, OverflowError) as e:  # pyarrow's ArrowInvalid and ArrowTypeError among them
            raise not_served(f"{table}.{field.name}", e) from None

    n = 0
    with pq.ParquetWriter(path, schema) as writer:
        for rows in batches(con, table, ", ".join(schema.names), where, key=key, batch=batch):
            writer.write_batch(pa.record_batch([column(f, v) for f, v in zip(schema, zip(*rows))], schema=schema))
            n += len(rows)
    return n


def to_parquet(db: str | Path, out: str | Path, batch: int = PARQUET_BATCH, since: float | None = None) -> Path:
    """The packets table (what came in since `since`, if given) as Parquet, in (sensor, seq) order
    (written to a temporary file, then renamed)."""
    with read_results(db) as con, atomic_file(out) as tmp:
        _write_parquet(con, "packets", _since("received_at", since), tmp, batch, "sensor, seq")
    return Path(out)


#: What `archive` moves out: the packets and rejected messages received before the time, and the
#: gaps filled before it (open gaps stay: the packet that fills one is still let in): per table, the
#: column of that time, and the key in whose order the rows are written. Only the rows up to each
#: table's last one when the archive began: a row added since (serve had held a packet received
#: before the time) stays.
_ARCHIVED_ROWS = {"packets": ("received_at", "sensor, seq"), "rejected": ("received_at", "id"), "missing": ("filled_at", "sensor, seq")}


def archive(db: str | Path, before: float, out: str | Path, batch: int = PARQUET_BATCH,
            notify: Callable[[str], None] = lambda message: None) -> dict | None:  # fmt: skip
    """Move what `db` received before Unix time `before` (at the latest, now) into a new folder
    `out`: packets.parquet, rejected.parquet, missing.parquet and archive.json (what it holds).
    Returns that, or None when nothing came in before `before` (then no folder is made).

    Beside a running serve: the rows are read a batch at a time (`_write_parquet`), each batch a
    short read, so that serve's writes go on. The folder is synced to the disk and renamed to
    `out`, and only then, in one write transaction, are the rows deleted and each sensor's sequence
    numbers below its archived ones put in the archived table, so that serve rejects a replay of
    an archived packet as it did before. Nothing is lost: a crash before that commit leaves every
    row in the database (and perhaps the folder, a copy). One archive of a database at a time (a
    lock on `<db>.archive.lock`): the rows are those up to each table's last rowid when it began,
    and only another's deletion could let SQLite give a rowid below it to a new row. An older
    edgeae's database is first rebuilt, said to `notify`, as serve does (`open_results`)."""
    existing_file(db, "results database")
    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise EdgeaeError(f"{out}: exists; an archive goes to a new folder (one is never replaced)")
    if not out.parent.is_dir():
        raise EdgeaeError(f"{out}: folder {out.parent} does not exist")
    con = open_results(db, "give a database made by edgeae serve", create=False, notify=notify)  # another program's file gets no lock file beside it
    try:
        with only_one(Path(f"{db}.archive.lock"), f"another edgeae archive of {db}"):  # rowids stay put until it deletes
            with damage_named(con):
                return _archive(con, Path(db), min(before, time.time()), out, batch)  # a gap filled from now on: filled_at >= before
    except sqlite3.Error as e:
        con.rollback()
        kept = f"; {out} holds copies of rows still in the database: remove it before archiving again" if out.exists() else ""
        raise EdgeaeError(f"{db}: cannot archive ({e}){kept}") from None
    finally:
        con.close()


def _archive(con: sqlite3.Connection, db: Path, before: float, out: Path, batch: int) -> dict | None:
    con.execute("PRAGMA busy_timeout = 60000")  # serve's batch in progress: wait for it
    where = {t: f"{col} < {before!r} AND rowid <= {con.execute(f'SELECT COALESCE(MAX(rowid), 0) FROM {t}').fetchone()[0]}"
             for t, (col, _) in _ARCHIVED_ROWS.items()}  # fmt: skip
    counts = {t: con.execute(f"SELECT COUNT(*) FROM {t} WHERE {w}").fetchone()[0] for t, w in where.items()}
    if not any(counts.values()):
        return None
    sensors = {s: {"packets": n, "first_seq": a, "last_seq": b} for s, n, a, b in con.execute(
        f"SELECT sensor, COUNT(*), MIN(seq), MAX(seq) FROM packets WHERE {where['packets']} GROUP BY sensor")}  # fmt: skip
    report = {"database": str(db.resolve()), "before": iso_utc(before), "archived_at": iso_utc(time.time()), **counts, "per_sensor": sensors}
    tmp = temp_folder_beside(out)
    PENDING.add(tmp)  # SIGTERM meanwhile: removed, and nothing deleted
    try:
        for table, (_, key) in _ARCHIVED_ROWS.items():
            _write_parquet(con, table, where[table], tmp / f"{table}.parquet", batch, key)
        (tmp / "archive.json").write_text(json.dumps(report, indent=2) + "\n")
        for f in [*tmp.iterdir(), tmp]:
            fsync_path(f)
        with deferring_signals():  # the folder in place and the rows deleted, or neither
            os.replace(tmp, out)
            PENDING.discard(tmp)
            fsync_path(out.parent)
            con.execute("BEGIN IMMEDIATE")
            now = time.time()
            for s, d in sensors.items():
                con.execute("INSERT INTO archived VALUES (?1, ?2, ?3, ?4) ON CONFLICT (sensor) DO UPDATE SET below_seq = "
                            "MAX(below_seq, ?2), packets = packets + ?3, archived_at = ?4", (s, d["last_seq"] + 1, d["packets"], now))  # fmt: skip
            for table, w in where.items():
                con.execute(f"DELETE FROM {table} WHERE {w}")
            con.commit()
    finally:
        if tmp in PENDING:
            PENDING.discard(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
    return report

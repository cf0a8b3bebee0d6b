"""`edgeae results` and `edgeae archive` on a large serve database: time, peak memory, and how long
a running serve's writes wait meanwhile.

Fills a results database (edgeae's schema, `results.open_results`) with N packets spread over S
sensors, rows as serve writes them (an 8-byte code, 4 channels' reconstruction RMS), then runs
`edgeae results DB --parquet`, `edgeae results DB --plot` and `edgeae archive DB` (half of each
sensor's packets) each as its own process and reads its peak resident memory from the kernel
(`os.wait4`). Beside each, a writer inserts a packet every 20 ms in a transaction of its own, as
serve does, and records its longest wait for SQLite's lock (`writer_max_wait_s`): the broker holds
what serve does not take meanwhile, and drops what is beyond its queue. A gateway's database grows
by one row per packet: at one packet a second a sensor adds 2.6 million a month. Then the same
rows in a database an older edgeae made (the tables without `results.SERVED`'s CHECK
constraints): `edgeae results` on it (which first scans it for values serve does not write), and
its upgrade (`edgeae archive --before 0`, which archives nothing but first rebuilds the tables
with the constraints, under the write lock: the writer waits for it). Writes JSON.

    python tools/bench_results.py [--packets 2000000] [--sensors 10] [--out tools/out/results.json]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import _measure  # noqa: E402
from edgeae.results import SCHEMA, open_results  # noqa: E402


def fill(db: Path, packets: int, sensors: int, older: bool = False) -> None:
    """`packets` rows as serve writes them, in edgeae's tables (`older`: an older edgeae's, without the constraints)."""
    con = sqlite3.connect(db) if older else open_results(db)
    if older:
        con.executescript(SCHEMA)
    per = packets // sensors
    rows = ((s, q, 1_700_000_000 + q, "0badcafe", json.dumps([(q * 7 + k) % 256 - 128 for k in range(8)]), q % 256,
             "[0.036981, 0.03778, 5.201715, 45.025692]", (q % 100) / 50, int(q % 100 > 95), 0, 1.7e9 + q, 1.7e9 + q, "edgeae/1/up")
            for s in range(sensors) for q in range(per))  # fmt: skip
    with con:
        con.executemany("INSERT INTO packets VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    con.close()


_WRITERS = itertools.count()  # each writer its own sensor


def measure(db: Path, command: str, *args: str) -> dict:
    """Wall time and peak resident memory of `edgeae COMMAND DB ARGS` in its own process, and the
    longest wait of a writer beside it."""
    stop, waits, sensor = threading.Event(), [0.0], 10**4 + next(_WRITERS)

    def writer():
        con = sqlite3.connect(db, timeout=120)
        for i in range(10**9):
            t = time.perf_counter()
            with con:
                con.execute("INSERT INTO packets VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                            (sensor, i, 0, "0badcafe", "[]", 0, "[]", 0.0, 0, 0, time.time(), time.time(), None))  # fmt: skip
            waits[0] = max(waits[0], time.perf_counter() - t)
            if stop.wait(0.02):
                break
        con.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = _measure.run([sys.executable, "-m", "edgeae", command, str(db), *args], cwd=ROOT)
    finally:
        stop.set()
        thread.join()
    return {**result, "writer_max_wait_s": round(waits[0], 3)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=2_000_000)
    ap.add_argument("--sensors", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "tools" / "out" / "results.json"))
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "r.sqlite"
        fill(db, a.packets, a.sensors)
        half = 1.7e9 + a.packets // a.sensors // 2  # `fill`'s received_at: half of each sensor's packets before it
        out = {"packets": a.packets, "sensors": a.sensors, "db_mb": round(db.stat().st_size / 2**20, 1),
               "summary": measure(db, "results"), "parquet": measure(db, "results", "--parquet", str(Path(tmp) / "p.parquet")),
               "plot": measure(db, "results", "--plot", str(Path(tmp) / "s.png")),
               "archive_half": measure(db, "archive", "--before", str(half), "--out", str(Path(tmp) / "archive"))}  # fmt: skip
        with contextlib.closing(sqlite3.connect(db)) as con:
            assert con.execute("SELECT COUNT(*) FROM packets WHERE received_at < ?", (half,)).fetchone()[0] == 0
        older = Path(tmp) / "older.sqlite"
        fill(older, a.packets, a.sensors, older=True)
        out["older_summary"] = measure(older, "results")
        out["older_upgrade"] = measure(older, "archive", "--before", "0", "--out", str(Path(tmp) / "nothing"))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()

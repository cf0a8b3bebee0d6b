"""`edgeae results` on a large serve database: time and peak memory of --parquet and --plot.

Fills a results database (edgeae's schema, `results.open_results`) with N packets spread over S
sensors, rows as serve writes them (an 8-byte code, 4 channels' reconstruction RMS), then runs
`edgeae results DB --parquet` and `edgeae results DB --plot` each as its own process and reads its
peak resident memory from the kernel (`os.wait4`). A gateway's database grows by one row per
packet: at one packet a second a sensor adds 2.6 million a month. Writes JSON.

    python tools/bench_results.py [--packets 2000000] [--sensors 10] [--out tools/out/results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import _measure  # noqa: E402
from edgeae.results import open_results  # noqa: E402


def fill(db: Path, packets: int, sensors: int) -> None:
    con = open_results(db)
    per = packets // sensors
    rows = ((s, q, 1_700_000_000 + q, "0badcafe", json.dumps([(q * 7 + k) % 256 - 128 for k in range(8)]), q % 256,
             "[0.036981, 0.03778, 5.201715, 45.025692]", (q % 100) / 50, int(q % 100 > 95), 0, 1.7e9 + q, 1.7e9 + q, "edgeae/1/up")
            for s in range(sensors) for q in range(per))  # fmt: skip
    with con:
        con.executemany("INSERT INTO packets VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    con.close()


def measure(*args: str) -> dict:
    """Wall time and peak resident memory of `edgeae results ARGS` in its own process."""
    return _measure.run([sys.executable, "-m", "edgeae", "results", *args], cwd=ROOT)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=2_000_000)
    ap.add_argument("--sensors", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "tools" / "out" / "results.json"))
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "r.sqlite"
        fill(db, a.packets, a.sensors)
        out = {"packets": a.packets, "sensors": a.sensors, "db_mb": round(db.stat().st_size / 2**20, 1),
               "summary": measure(str(db)), "parquet": measure(str(db), "--parquet", str(Path(tmp) / "p.parquet")),
               "plot": measure(str(db), "--plot", str(Path(tmp) / "s.png"))}  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()

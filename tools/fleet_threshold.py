"""Study: one export on a rougher machine, with the export's threshold and with the sensor's own.

An export is trained on one machine and serves a fleet. This script simulates the machine it was
trained on (sensor 1) and a rougher one (sensor 2: white noise added to vib_x and vib_y, of
`--roughness` times each channel's standard deviation on the healthy machine), each first healthy
(`--seconds`, the commissioning time), then with the simulator's four faults. Both go through `serve` into one
database; `calibrate_sensor` then sets sensor 2's threshold from its healthy packets, and the
fault recordings are served. Reports, per sensor: the false-alarm rate on the healthy windows of
the fault recording and the share of each fault's windows flagged, under the export's threshold
and under the sensor's own; writes JSON. Needs an export of the simulated machine (the demo's).

    python tools/fleet_threshold.py [--export edgeae-demo/export] [--roughness 0.5] [--out tools/out/fleet_threshold.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeae import data as D  # noqa: E402
from edgeae import device, simulate  # noqa: E402
from edgeae.errors import EdgeaeError  # noqa: E402
from edgeae.manifest import Export  # noqa: E402
from edgeae.score import calibrate_sensor  # noqa: E402
from edgeae.serve import Server  # noqa: E402

FS = 1000.0  # the simulated machine's sampling rate (simulate.machine's default)
VIB = [0, 1]  # vib_x, vib_y in the simulated machine's channels


def recording(seed: int, seconds: float, faults: bool, noise: np.ndarray, rng: np.random.Generator) -> D.Series:
    """The simulated machine, healthy or with its faults, white noise of std `noise` (g) added to its vibration."""
    s = simulate.machine(seconds=seconds, seed=seed, schedule=None if faults else [])
    values = s.values.copy()
    values[:, VIB] += rng.normal(size=(len(values), len(VIB))) * noise
    return replace(s, values=values)


def flagged(db: Path, sensor: int, first_seq: int) -> np.ndarray:
    with sqlite3.connect(db) as con:
        return np.array([a for (a,) in con.execute("SELECT anomaly FROM packets WHERE sensor=? AND seq>=? ORDER BY seq", (sensor, first_seq))])


def rates(series: D.Series, ex: Export, flags: np.ndarray) -> dict:
    """False-alarm rate on the healthy windows, and the share of each fault's windows flagged."""
    last = np.arange(len(flags)) * ex.hop + ex.window - 1  # each packet's window's last row
    y = series.labels[last]
    out = {"far_percent": round(100 * float(flags[y == 0].mean()), 2)}
    for kind, start, end in simulate.default_schedule(len(series) / FS):
        inside = (last >= start * FS) & (last < end * FS)
        out[kind] = round(float(flags[inside].mean()), 3)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", default=str(ROOT / "edgeae-demo" / "export"), help="An export of the simulated machine.")
    ap.add_argument("--roughness", type=float, default=0.5)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--out", default=str(ROOT / "tools" / "out" / "fleet_threshold.json"))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "export"
        shutil.copytree(args.export, export)  # calibrate writes the sensor's threshold into it
        ex, db = Export.open(export), Path(tmp) / "r.sqlite"

        def serve(sensor: int, series: D.Series, start_seq: int, t0: float) -> None:
            enc = device.Encoder(export, sensor, t0=t0, period=1 / FS, start_seq=start_seq)
            server = Server(export, db)
            server.run_packets(list(enc.packets(device.windows_from_series(series, ex))))
            server.close()

        assert [ex.channels[i] for i in VIB] == ["vib_x", "vib_y"], ex.channels
        rough = args.roughness * simulate.machine(seconds=args.seconds, seed=0, schedule=[]).values[:, VIB].std(axis=0)
        healthy = {1: recording(1, args.seconds, False, np.zeros_like(rough), rng), 2: recording(2, args.seconds, False, rough, rng)}
        faulty = {1: recording(3, args.seconds, True, np.zeros_like(rough), rng), 2: recording(4, args.seconds, True, rough, rng)}
        first = {s: (len(healthy[s]) - ex.window) // ex.hop + 1 for s in healthy}  # packets of the healthy recording
        day = 1_795_000_000  # the healthy recordings on a first day, the faulty ones on the next
        for s in healthy:
            serve(s, healthy[s], 0, day)
        commissioning = {s: float(flagged(db, s, 0)[: first[s]].mean()) for s in healthy}
        for s in faulty:
            serve(s, faulty[s], first[s], day + 86400)
        before = {s: rates(faulty[s], ex, flagged(db, s, first[s])) for s in faulty}
        result = {"roughness": args.roughness, "commissioning_flagged_by_export_threshold": commissioning,
                  "faults_by_export_threshold": before}  # fmt: skip
        try:
            (report,) = calibrate_sensor(export, db, [2], until=day + 86400)[1]  # its healthy day
        except EdgeaeError as e:  # too rough for the export's residual byte: calibrate refuses
            result["sensor_2_refused"] = str(e)
        else:
            with sqlite3.connect(db) as con:
                con.execute("DELETE FROM packets WHERE seq>=?", (first[2],))  # served again, judged by its own threshold
            serve(2, faulty[2], first[2], day + 86400)
            result.update(thresholds={"export": report["previous_threshold"], "sensor_2": report["threshold"]},
                          faults_sensor_2_by_own_threshold=rates(faulty[2], ex, flagged(db, 2, first[2])))  # fmt: skip
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()

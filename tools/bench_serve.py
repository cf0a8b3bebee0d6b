"""Load benchmark: N sensors x M packets through a Mosquitto broker into `edgeae serve`.

Trains and exports a small model on the simulated machine, encodes M real packets per sensor,
starts a broker on a loopback port, `edgeae serve` as its own process, and a plain MQTT
subscriber in this process; publishes every packet (QoS 1, as fast as the broker acknowledges),
then waits until serve has stored them all and stops it with SIGTERM.

Reports: packets per second sustained by serve (publish of the first to storage of the last),
end-to-end latency p50 / p99 (publish -> row stored), loss (sent - stored, must be 0), and the
same delivery rate and latency for the plain subscriber, for comparison. Writes JSON.

    python tools/bench_serve.py [--sensors 10] [--packets 1000] [--out tools/out/serve_load.json]
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeae import device, recipe, simulate  # noqa: E402
from edgeae.mqtt import Publisher, Subscriber, local_broker  # noqa: E402


def small_export(work: Path) -> Path:
    from edgeae.export import export
    from edgeae.train import train

    r = recipe.from_dict({"model": {"kind": "dense", "hidden": [32], "code_size": 8},
                          "data": {"window": 32, "hop": 8}, "train": {"epochs": 3}}, name="load")  # fmt: skip
    run = train(r, simulate.machine(seconds=20, seed=0), work / "run", progress=False)
    return export(run, work / "dist")


def packets_for(export_dir: Path, sensors: int, per_sensor: int) -> dict[int, list[bytes]]:
    seconds = per_sensor * 8 / 1000 + 1  # hop 8 rows at 1 kHz
    out = {}
    for s in range(sensors):
        enc = device.Encoder(export_dir, s, t0=1_700_000_000, period=0.001)
        series = simulate.machine(seconds=seconds, seed=100 + s)
        wins = device.windows_from_series(series, enc.ex)
        out[s] = list(enc.packets(wins))[:per_sensor]
    return out


def percentiles(x) -> dict:
    x = np.asarray(x) * 1000
    return {"p50_ms": float(np.percentile(x, 50)), "p99_ms": float(np.percentile(x, 99)), "max_ms": float(x.max())}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sensors", type=int, default=10)
    ap.add_argument("--packets", type=int, default=1000, help="per sensor")
    ap.add_argument("--out", default=str(ROOT / "tools" / "out" / "serve_load.json"))
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp, local_broker(Path(tmp)) as url:
        tmp = Path(tmp)
        export_dir = small_export(tmp)
        packets = packets_for(export_dir, args.sensors, args.packets)
        total = sum(len(v) for v in packets.values())
        db = tmp / "load.sqlite"
        serve = subprocess.Popen([sys.executable, "-m", "edgeae", "serve", str(export_dir), "--mqtt", url, "--db", str(db)],
                                 stderr=subprocess.PIPE, text=True)  # fmt: skip
        for line in serve.stderr:
            if "serving" in line:
                break
        threading.Thread(target=serve.stderr.read, daemon=True).start()
        plain = Subscriber(url, "edgeae/+/up")

        sent_at: dict[tuple[int, int], float] = {}
        pub = Publisher(url)
        t_start = time.time()
        for i in range(args.packets):  # interleave sensors, as a fleet does
            for s in range(args.sensors):
                if i < len(packets[s]):
                    sent_at[(s, i)] = time.time()
                    pub.publish(f"edgeae/{s}/up", packets[s][i])
        pub.close()
        t_published = time.time()

        deadline = time.monotonic() + 300
        stored = 0
        while time.monotonic() < deadline:
            con = sqlite3.connect(db)
            stored = con.execute("SELECT COUNT(*) FROM packets").fetchone()[0]
            con.close()
            if stored >= total:
                break
            time.sleep(0.2)
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)
        plain.close()

        con = sqlite3.connect(db)
        rows = con.execute("SELECT sensor, seq, stored_at FROM packets").fetchall()
        rejected = con.execute("SELECT COUNT(*) FROM rejected").fetchone()[0]
        con.close()
        lat = [stored_at - sent_at[(s, q)] for s, q, stored_at in rows]
        got = []
        while not plain.messages.empty():
            got.append(plain.messages.get())
        plain_lat = [m.received_at - sent_at[(int(m.topic.split("/")[1]), i)] for i, m in _per_sensor_index(got)]

    result = {
        "sensors": args.sensors, "packets_per_sensor": args.packets, "sent": total,
        "publish_s": t_published - t_start,
        "serve": {"stored": len(rows), "rejected": rejected, "lost": total - len(rows),
                  "packets_per_s": len(rows) / (max(r[2] for r in rows) - t_start), **percentiles(lat)},
        "plain_subscriber": {"received": len(got), "lost": total - len(got),
                             "packets_per_s": len(got) / (max(m.received_at for m in got) - t_start), **percentiles(plain_lat)},
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


def _per_sensor_index(messages):
    """(sequence index, message) per sensor topic, in arrival order (QoS 1 keeps per-topic order)."""
    counters: dict[str, int] = {}
    for m in messages:
        i = counters.get(m.topic, 0)
        counters[m.topic] = i + 1
        yield i, m


if __name__ == "__main__":
    main()

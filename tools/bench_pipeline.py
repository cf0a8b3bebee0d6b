"""Pipeline benchmark: per recipe, training and export time, artifact sizes, per-layer sparsity,
code SQNR, ROC-AUC float / int8, encoder latency int8 vs float32 (`edgeae bench`), the CLI's
start-up time, and the time and memory of reading a 1.2-million-row CSV, and of cutting one
with a time column at its gap (`edgeae cut`). Writes JSON.

Runs the shipped simulated-data recipes (mlperf-ad, conv1d-vibration) on a simulated
training recording and verifies on a separate one.

    python tools/bench_pipeline.py [--recipes mlperf-ad,conv1d-vibration] [--seconds 120] [--out tools/out/pipeline.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import _measure  # noqa: E402
from edgeae import recipe as R  # noqa: E402
from edgeae import simulate  # noqa: E402
from edgeae.data import write_npz  # noqa: E402


def cli_startup_s(repeats: int = 5) -> dict:
    """Wall time of `edgeae --help` in a fresh interpreter (median and max of `repeats`)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "edgeae", "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return {"median": statistics.median(times), "max": max(times), "repeats": repeats}


def csv_read(work: Path, seconds: float = 1200.0) -> dict:
    """Time and peak memory of reading a long recording's CSV (`read_series`), in its own process:
    20 minutes of the simulated 1 kHz machine, 1.2 million rows."""
    path = work / "long.csv"
    s = simulate.machine(seconds=seconds, seed=3)
    np.savetxt(path, np.column_stack([s.values, s.labels]), delimiter=",", header=",".join([*s.channels, "label"]), comments="", fmt="%.6g")
    code = f"from edgeae.data import read_series; read_series({str(path)!r})"
    return {"rows": len(s), "csv_mb": round(path.stat().st_size / 2**20, 1), **_measure.run([sys.executable, "-c", code], cwd=ROOT)}


def csv_cut(work: Path, seconds: float = 1200.0) -> dict:
    """Time and peak memory of `data.cut` (`edgeae cut`), in its own process: the same 20 minutes
    with a time column (ISO 8601, to the millisecond) and a second missing in the middle: read,
    every time parsed, two .npz files written."""
    full, path = work / "timed.csv", work / "gap.csv"
    simulate.save(simulate.machine(seconds=seconds, seed=3), full, start=1.7e9)
    gap = range(int(seconds * 500), int(seconds * 500) + 1000)  # rows (after the header) left out
    with open(full) as f, open(path, "w") as g:
        g.writelines(line for i, line in enumerate(f, start=-1) if i not in gap)
    code = f"from edgeae.data import cut; cut({str(path)!r}, {str(work / 'cut')!r})"
    return {"rows": int(seconds * 1000) - len(gap), "csv_mb": round(path.stat().st_size / 2**20, 1),
            **_measure.run([sys.executable, "-c", code], cwd=ROOT)}  # fmt: skip


def bench_recipe(name: str, train_data: Path, test_data: Path, work: Path) -> dict:
    from edgeae.bench import bench
    from edgeae.export import export
    from edgeae.train import train
    from edgeae.verify import verify

    recipe = R.load(ROOT / "models" / f"{name}.toml")
    t0 = time.perf_counter()
    run = train(recipe, train_data, work / "run", progress=False)
    t1 = time.perf_counter()
    out = export(run, work / "dist")
    t2 = time.perf_counter()
    rep = verify(out, data=test_data)
    t3 = time.perf_counter()
    man = json.loads((out / "manifest.json").read_text())
    pruning = man["pruning"] or {}
    return {
        "recipe": name,
        "train_s": t1 - t0,
        "export_s": t2 - t1,
        "verify_s": t3 - t2,
        "artifact_bytes": {k: v["bytes"] for k, v in man["artifacts"].items() if k.endswith(".tflite")},
        "code_bytes": man["code_bytes"],
        "raw_bytes_per_window_int16": man["raw_bytes_per_window"]["int16"],
        "gzip_weight_bytes": {"before": pruning.get("gzip_bytes_before"), "after": pruning.get("gzip_bytes_after")},
        "layer_sparsity": {f"{l['model']}/{l['layer']}": l["sparsity"] for l in pruning.get("layers", [])},
        "code_sqnr_db": {"litert": rep.code_sqnr_db, "tflm": rep.tflm_code_sqnr_db},
        "litert_tflm": {"rms_steps": rep.litert_tflm_rms_steps, "mismatch": rep.litert_tflm_mismatch, "max_diff": rep.litert_tflm_max_diff},
        "recon_error": {"float": rep.error_float, "int8": rep.error_int8},
        "auc": {"float": rep.auc_float, "int8": rep.auc_int8},
        "verify_passed": rep.passed,
        "latency": bench(out)["models"],
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", default="mlperf-ad,conv1d-vibration")
    ap.add_argument("--seconds", type=float, default=120.0, help="length of each simulated recording")
    ap.add_argument("--out", default=str(ROOT / "tools" / "out" / "pipeline.json"))
    args = ap.parse_args(argv)

    result = {"cli_startup_s": cli_startup_s(), "recipes": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        result["csv_read"] = csv_read(tmp)
        print("CSV read:", json.dumps(result["csv_read"]))
        result["csv_cut"] = csv_cut(tmp)
        print("CSV cut:", json.dumps(result["csv_cut"]))
        paths = {}
        for split, seed in (("train", 0), ("test", 1)):
            s = simulate.machine(seconds=args.seconds, seed=seed)
            paths[split] = tmp / f"{split}.npz"
            write_npz(s, paths[split])
        for name in args.recipes.split(","):
            result["recipes"].append(bench_recipe(name, paths["train"], paths["test"], tmp / name))
            print(json.dumps(result["recipes"][-1], indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"CLI start-up (edgeae --help): median {result['cli_startup_s']['median'] * 1000:.0f} ms")
    print(f"written to {args.out}")
    return result


if __name__ == "__main__":
    main()

"""`edgeae demo`: the whole chain on the embedded simulated machine, in a couple of minutes.

Simulates a training recording and a separate test recording (another seed, so another speed
and load history and other noise), trains a small dense autoencoder on the healthy part of
the first with 50 % pruning, exports it to int8, verifies it on the second, and summarises.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import simulate
from .recipe import from_dict

DATA_MARKER = "simulation.json"  # how data/ was made; marks it as the demo's to replace
RECIPE = {
    "model": {"kind": "dense", "hidden": [64, 32], "code_size": 8},
    "data": {"window": 64, "hop": 16},
    "train": {"epochs": 40, "batch_size": 64, "patience": 6, "seed": 0},
    "prune": {"sparsity": 0.5, "epochs": 8},
}


def run(out: str | Path = "edgeae-demo", seconds: float = 120.0, progress: bool = True) -> dict:
    """Run the demo into `out` (data/, run/, export/); returns the summary figures."""
    from .export import export
    from .fsutil import atomic_dir, check_replaceable, write_json
    from .manifest import MANIFEST, RUN_MARKER
    from .train import train
    from .verify import verify

    out = Path(out)
    for sub, marker in (("data", DATA_MARKER), ("run", RUN_MARKER), ("export", MANIFEST)):
        check_replaceable(out / sub, marker)
    seeds = {"train": 0, "test": 1}
    simulated = {name: simulate.machine(seconds=seconds, seed=seed) for name, seed in seeds.items()}
    with atomic_dir(out / "data", DATA_MARKER) as tmp:
        for name, s in simulated.items():
            simulate.save(s, tmp / f"{name}.npz", simulate.START)  # with times: the export keeps the rows' rate
        write_json(tmp / DATA_MARKER, {"made_by": "edgeae.simulate.machine", "seconds": seconds, "seeds": seeds})
    recordings = {name: out / "data" / f"{name}.npz" for name in simulated}
    recipe = from_dict(RECIPE, name="demo")
    run_dir = train(recipe, recordings["train"], out / "run", progress=progress)
    export_dir = export(run_dir, out / "export")
    report = verify(export_dir, data=recordings["test"])
    man = json.loads((export_dir / "manifest.json").read_text())
    prune = man["pruning"]
    return {
        "out": str(out),
        "channels": man["window"]["channels"],
        "window": man["window"]["length"],
        "raw_bytes_int16": man["raw_bytes_per_window"]["int16"],
        "raw_bytes_float32": man["raw_bytes_per_window"]["float32"],
        "code_bytes": man["code_bytes"],
        "encoder_bytes_int8": man["artifacts"]["encoder_int8.tflite"]["bytes"],
        "encoder_bytes_float32": man["artifacts"]["encoder_float32.tflite"]["bytes"],
        "sparsity": prune["target_sparsity"],
        "gzip_bytes_before": prune["gzip_bytes_before"],
        "gzip_bytes_after": prune["gzip_bytes_after"],
        "report": report,
    }


def summary(r: dict) -> str:
    rep = r["report"]
    lines = [
        f"edgeae demo: simulated bearing rig, channels {', '.join(r['channels'])}, window {r['window']} samples",
        f"  bytes per window   raw {r['raw_bytes_int16']} (int16) / {r['raw_bytes_float32']} (float32)"
        f"  ->  code {r['code_bytes']} (int8), {r['raw_bytes_int16'] / r['code_bytes']:.0f}x smaller than int16",
        f"  encoder size       int8 {r['encoder_bytes_int8'] / 1024:.1f} KiB  vs  float32 {r['encoder_bytes_float32'] / 1024:.1f} KiB",
        f"  pruning            {r['sparsity']:.0%} target; gzip weights {r['gzip_bytes_before'] / 1024:.1f} -> {r['gzip_bytes_after'] / 1024:.1f} KiB",
        f"  ROC-AUC (faults)   float {rep.auc_float:.4f}  int8 {rep.auc_int8:.4f}  on {rep.data_windows} test windows",
        f"  LiteRT vs TFLM     {rep.runtime_agreement()} on {rep.windows} windows",
        "",
        rep.table(),
        "",
        f"outputs in {r['out']}/: data/ (train.npz, test.npz), run/, export/  -- try: edgeae verify {r['out']}/export --data {r['out']}/data/test.npz",
        f"the plots: edgeae eval {r['out']}/export --data {r['out']}/data/test.npz --out {r['out']}/report && edgeae report {r['out']}/report",
    ]  # fmt: skip
    return "\n".join(lines)

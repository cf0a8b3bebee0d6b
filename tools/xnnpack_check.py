"""Does LiteRT's default XNNPACK delegate compute an export's models as the builtin kernels do?

edgeae runs LiteRT without XNNPACK (`runtime.Model`), because with ai-edge-litert 2.3.0 XNNPACK
computed the float conv1d decoder of models/skab.toml wrongly: right on the first invocation
after the input was resized to a new batch, wrong (errors of 1-7) from the second on. LiteRT's
`experimental_preserve_all_tensors` (no reuse of the tensor arena) avoids it, so it looks like an
arena-planning fault; a minimal Keras model with the same ops did not show it. Run this after
upgrading ai-edge-litert to see whether the workaround can go:

    .venv/bin/python tools/xnnpack_check.py dist/<name> [--out tools/out/xnnpack.json]

For every .tflite in the export it feeds the same random inputs through both, batch after batch
as `runtime.Model` does (a resize, then several invocations of one batch size), and prints the
largest difference of the outputs (in the model's output units; int8 models in steps).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgeae.fsutil import atomic_file, check_writable  # noqa: E402
from edgeae.runtime import Model  # noqa: E402

SCHEDULE = (3, 3, 3, 64, 64, 1, 1, 256, 256)


def compare(path: Path, seed: int = 0) -> dict:
    """Largest |XNNPACK - builtin| per invocation of SCHEDULE, for one model."""
    builtin, xnnpack = Model(path), Model(path, xnnpack=True)
    rng = np.random.default_rng(seed)
    info = np.iinfo(builtin.input["dtype"]) if builtin.input["dtype"] != np.float32 else None
    diffs = []
    for n in SCHEDULE:
        shape = (n,) + builtin.input_shape
        x = rng.integers(info.min, info.max + 1, shape) if info else rng.normal(size=shape)
        a, b = (m.run_outputs_raw(x) for m in (builtin, xnnpack))
        diffs.append(max(float(np.abs(u.astype(np.float64) - v).max()) for u, v in zip(a, b)))
    return {"batches": list(SCHEDULE), "max_abs_diff": diffs}


def main() -> None:
    ap = argparse.ArgumentParser(description="Compare XNNPACK with LiteRT's builtin kernels on every model of an export.")
    ap.add_argument("export_dir", type=Path)
    ap.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = ap.parse_args()
    paths = sorted(args.export_dir.glob("*.tflite"))
    if not paths:
        sys.exit(f"xnnpack_check: no .tflite models in {args.export_dir}")
    if args.out:
        check_writable(args.out)
    import ai_edge_litert

    report = {"ai_edge_litert": getattr(ai_edge_litert, "__version__", "?"), "models": {}}
    for path in paths:
        report["models"][path.name] = r = compare(path)
        print(f"{path.name:<28} " + " ".join(f"{d:.2g}" for d in r["max_abs_diff"]))
    if args.out:
        with atomic_file(args.out) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""`edgeae bench`: encoder latency on this CPU through LiteRT, int8 vs float32.

Through LiteRT as a user gets it, with its default XNNPACK delegate (edgeae's other runs switch
it off: runtime.Model). For each model and batch size, times `repeats` invocations on reference
windows after a warm-up, and reports per-window latency p50 / p99 and windows per second. A model
with a fixed batch of 1 (the Edge TPU export) is timed at batch 1 only. With `edgetpu=True` the
int8 encoder also runs through the Edge TPU delegate (libedgetpu), which must be installed.
"""

from __future__ import annotations

import time

import numpy as np

from .manifest import Export
from .runtime import Model, edgetpu_delegate


def _time(model: Model, x: np.ndarray, batch: int, repeats: int) -> dict:
    xb = np.resize(x, (batch,) + x.shape[1:])
    model.run_raw(xb, batch)  # warm-up and resize
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model.run_raw(xb, batch)
        times.append(time.perf_counter() - t)
    per_window = np.array(times) / batch
    return {
        "batch": batch,
        "repeats": repeats,
        "p50_us_per_window": float(np.percentile(per_window, 50) * 1e6),
        "p99_us_per_window": float(np.percentile(per_window, 99) * 1e6),
        "windows_per_s": float(batch * repeats / sum(times)),
    }


def bench(export_dir, threads: int | None = None, batches=(1, 64), repeats: int = 200, edgetpu: bool = False) -> dict:
    ex = Export.open(export_dir)
    windows = ex.reference()[0]
    models = {kind: Model(path, threads=threads, xnnpack=True)
              for kind, path in (("int8", ex.encoder_int8), ("float32", ex.encoder_float))}
    if edgetpu:
        models["int8-edgetpu"] = Model(ex.encoder_int8, threads=threads, delegates=[edgetpu_delegate()])
    result = {"export": str(export_dir), "threads": threads, "models": {}}
    for name, model in models.items():
        x = windows.reshape((len(windows),) + model.input_shape)
        if model.input["dtype"] != np.float32:
            from .runtime import quantize

            x = quantize(x, *model.input_quant, dtype=model.input["dtype"])
        sizes = batches if model.batchable else [1]  # a fixed-batch (Edge TPU) model runs window by window
        result["models"][name] = [_time(model, x, b, repeats if b == 1 else max(10, repeats // 10)) for b in sizes]
    return result


def table(result: dict) -> str:
    lines = [f"{'model':<14} {'batch':>5} {'p50 us/win':>11} {'p99 us/win':>11} {'windows/s':>11}"]
    for name, rows in result["models"].items():
        for r in rows:
            lines.append(
                f"{name:<14} {r['batch']:>5} {r['p50_us_per_window']:>11.1f} {r['p99_us_per_window']:>11.1f} {r['windows_per_s']:>11.0f}"
            )
    return "\n".join(lines)

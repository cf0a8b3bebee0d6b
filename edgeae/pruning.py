"""Magnitude pruning with TFMOT: polynomial-decay schedule, fine-tuning, strip_pruning.

Encoder and decoder are wrapped separately (`prune_low_magnitude` on each model), then trained
together through `zoo.training_model`. TFMOT wraps the original layer objects rather than
copies, and `strip_pruning` hands them back, so tied weights stay tied throughout.
"""

from __future__ import annotations

import gzip
import io

import numpy as np

from . import zoo
from ._tf import tfmot
from .recipe import Recipe
from .train import fit, steps_per_epoch


def prune(encoder, decoder, recipe: Recipe, x_train, x_val, progress: bool = True):
    """Prune to `recipe.prune.sparsity`; returns (encoder, decoder, history, report)."""
    p = recipe.prune
    before = gzip_size([encoder, zoo.untie(decoder)])
    steps = steps_per_epoch(len(x_train), recipe.train.batch_size)
    ramp_epochs = max(1, p.epochs - 2)  # reach the target, then fine-tune at constant sparsity
    frequency = max(1, min(p.frequency, steps))
    end_step = max(frequency, (steps * ramp_epochs) // frequency * frequency)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=p.sparsity, begin_step=0, end_step=end_step, frequency=frequency
    )
    penc = tfmot.sparsity.keras.prune_low_magnitude(encoder, pruning_schedule=schedule)
    pdec = tfmot.sparsity.keras.prune_low_magnitude(decoder, pruning_schedule=schedule)
    model = zoo.training_model(penc, pdec, recipe)
    history = fit(model, "prune", recipe, x_train, x_val, max(p.epochs, ramp_epochs + 1), [tfmot.sparsity.keras.UpdatePruningStep()], progress)
    encoder = tfmot.sparsity.keras.strip_pruning(penc)
    decoder = tfmot.sparsity.keras.strip_pruning(pdec)
    plain = zoo.untie(decoder)
    report = {
        "target_sparsity": p.sparsity,
        "schedule": {"kind": "polynomial_decay", "end_step": end_step, "frequency": frequency},
        "layers": layer_sparsity(encoder) + layer_sparsity(plain, tied=_tied_names(decoder)),
        "gzip_bytes_before": before,
        "gzip_bytes_after": gzip_size([encoder, plain]),
    }
    return encoder, decoder, history, report


def _tied_names(decoder) -> set[str]:
    return {l.name for l in decoder.layers if isinstance(l, (zoo.DenseTied, zoo.Conv1DTransposeTied))}


def layer_sparsity(model, tied: set[str] = frozenset()) -> list[dict]:
    """Zero fraction of each layer's kernel (biases are not pruned)."""
    rows = []
    for layer in model.layers:
        kernels = [w for w in layer.weights if "kernel" in w.name]
        if kernels:
            k = kernels[0].numpy()
            row = {"model": model.name, "layer": layer.name, "weights": int(k.size), "sparsity": float(np.mean(k == 0))}
            if layer.name in tied:
                row["tied"] = True  # shares (and is pruned with) the mirrored encoder kernel
            rows.append(row)
    return rows


def gzip_size(models) -> int:
    """gzip-compressed size of all weights as float32: what pruning saves on disk or over the air."""
    buf = io.BytesIO()
    for m in models:
        for w in m.get_weights():
            buf.write(np.asarray(w, dtype="<f4").tobytes())
    return len(gzip.compress(buf.getvalue(), compresslevel=9, mtime=0))


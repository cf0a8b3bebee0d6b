"""Quantization-aware training of the encoder (the model that runs in int8 on the device).

TFMOT's `quantize_apply` rebuilds each layer from its config. That cuts a tied decoder loose
from the encoder kernel it shares (silently: the decoder keeps the old kernel), and TFMOT has no
QAT config for `Conv1D`. For those models `unavailable` gives the reason and training falls back
to post-training quantization. With pruning, the pruning-preserving scheme keeps the zeros.
"""

from __future__ import annotations

from . import zoo
from ._tf import tfmot
from .recipe import Recipe
from .train import fit


def unavailable(recipe: Recipe, encoder) -> str | None:
    """Why QAT cannot be applied to this model, or None when it can."""
    if recipe.model.tied:
        return "tied weights: TFMOT's quantize_apply rebuilds layers from their config, which breaks the tie"
    registry = tfmot.quantization.keras.default_8bit.Default8BitQuantizeRegistry()
    unsupported = sorted({l.__class__.__name__ for l in encoder.layers[1:] if not registry.supports(l)})
    if unsupported:
        return f"TFMOT has no QAT support for {', '.join(unsupported)} layers"
    return None


def qat(encoder, decoder, recipe: Recipe, x_train, x_val, progress: bool = True):
    """Fine-tune with fake-quantized encoder weights and activations; returns (encoder, history)."""
    q = tfmot.quantization.keras
    annotated = q.quantize_annotate_model(encoder)
    if recipe.prune.sparsity > 0:
        qenc = q.quantize_apply(annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
    else:
        qenc = q.quantize_apply(annotated)
    model = zoo.training_model(qenc, decoder, recipe)
    return qenc, fit(model, "qat", recipe, x_train, x_val, recipe.train.qat_epochs, [], progress)


def load_scope():
    """The custom-object scope needed to load a saved QAT model."""
    return tfmot.quantization.keras.quantize_scope()


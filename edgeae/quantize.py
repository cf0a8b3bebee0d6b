"""Conversion to TFLite: float32, or full-integer post-training quantization.

Full int8 means int8 weights and activations and int8 input and output tensors
(`TFLITE_BUILTINS_INT8`), calibrated on a representative set, so the model runs on integer-only
targets (TFLite Micro, the Edge TPU) and the code leaves the encoder as bytes.
"""

from __future__ import annotations

import numpy as np

from ._tf import keras, tf
from .runtime import native_stderr_captured
from .errors import EdgeaeError


def to_tflite(
    model,
    representative: np.ndarray | None = None,
    io_type: str = "int8",
    per_tensor: bool = False,
    static_batch: bool = False,
) -> bytes:
    """The model as a .tflite flatbuffer.

    With `representative` inputs: full integer quantization with `io_type` (int8 or uint8)
    input and output; `per_tensor` quantizes weights per tensor instead of per output channel.
    Without: float32. The batch dimension stays dynamic (LiteRT can batch on the host; TFLite
    Micro runs batch 1 either way) unless `static_batch`, which fixes it to 1 as the Edge TPU
    compiler requires.
    """
    if static_batch:
        inp = keras.Input(model.input_shape[1:], batch_size=1, name="window")
        model = keras.Model(inp, model(inp), name=model.name)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        rep = np.asarray(representative, dtype=np.float32)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([rep[i : i + 1]] for i in range(len(rep)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = {"int8": tf.int8, "uint8": tf.uint8}[io_type]
        conv._experimental_disable_per_channel = per_tensor
    with native_stderr_captured() as log:
        try:
            return conv.convert()
        except Exception as e:
            lines = [l for l in (str(e) + "\n" + log()).splitlines() if l.strip()]
            raise EdgeaeError(f"TFLite conversion of '{model.name}' failed: {lines[0] if lines else e}") from None


"""Conversion to TFLite: float32, or full-integer post-training quantization.

Full int8 means int8 weights and activations and int8 input and output tensors
(`TFLITE_BUILTINS_INT8`), calibrated on a representative set, so the model runs on integer-only
targets (TFLite Micro, the Edge TPU) and the code leaves the encoder as bytes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

import numpy as np

from ._tf import tf
from .errors import EdgeaeError


def to_tflite(model, representative: np.ndarray | None = None) -> bytes:
    """The model as a .tflite flatbuffer: full int8 when `representative` inputs are given."""
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        rep = np.asarray(representative, dtype=np.float32)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([rep[i : i + 1]] for i in range(len(rep)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    with _native_stderr_captured() as log:
        try:
            return conv.convert()
        except Exception as e:
            lines = [l for l in (str(e) + "\n" + log()).splitlines() if l.strip()]
            raise EdgeaeError(f"TFLite conversion of '{model.name}' failed: {lines[0] if lines else e}") from None


@contextlib.contextmanager
def _native_stderr_captured():
    """Send the converter's C++ chatter on fd 2 to a buffer; yield a function that reads it."""
    with tempfile.TemporaryFile(mode="w+") as buf:
        saved = os.dup(2)
        os.dup2(buf.fileno(), 2)
        try:
            yield lambda: (buf.seek(0), buf.read())[1]
        finally:
            os.dup2(saved, 2)
            os.close(saved)

"""The one place TensorFlow is imported (training / export half only), with its logging quieted."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # bit-repeatable CPU kernels

from .runtime import native_stderr_captured

try:
    with native_stderr_captured():
        import tensorflow as tf
        import tensorflow_model_optimization as tfmot
        import tf_keras as keras
except ImportError as e:  # the runtime-only install has no TensorFlow
    from .errors import EdgeaeError

    raise EdgeaeError(
        f"this command needs the training extra ({e.name} is not installed): pip install 'edgeae[train]'"
    ) from None

tf.get_logger().setLevel("ERROR")
tf.config.experimental.enable_op_determinism()  # seeded training repeats exactly

__all__ = ["tf", "keras", "tfmot"]

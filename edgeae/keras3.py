"""Keras 3 models, read into tf-keras for export.

TensorFlow 2.16 and later save `tf.keras` models with Keras 3, whose files tf-keras cannot read
(TFMOT and the rest of edgeae work on tf-keras). A Keras 3 model is loaded with Keras 3, its
configuration rewritten in tf-keras's terms (InputLayer's `batch_shape`, dtype policies,
functional nodes, renamed arguments; arguments Keras 3 added are dropped when at their default or
at what tf-keras's layer does anyway, refused otherwise),
rebuilt in tf-keras, given the same weights, and checked to give the same outputs on random
inputs. A layer tf-keras does not have, or outputs that differ, is refused in one line.
"""

from __future__ import annotations

import inspect
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np

from .errors import EdgeaeError, cause
from .fsutil import parse_json

#: Arguments every tf-keras layer takes through **kwargs, and those its recurrent layers take so.
_LAYER_BASE = {"name", "trainable", "dtype", "dynamic", "input_dim", "input_shape", "batch_input_shape", "batch_size",
               "zero_output_for_mask"}  # fmt: skip
_MODELS = {"Sequential", "Functional", "Model"}
#: Keras 3 activations tf-keras has not (hard_silu, also saved for hard_swish), or has otherwise
#: (its hard_sigmoid is clip(0.2 x + 0.5, 0, 1); Keras 3's, relu6(x + 3) / 6), as registered in
#: tf-keras by `_register_activations`.
_ACTIVATIONS = {"hard_sigmoid": "edgeae>hard_sigmoid", "hard_silu": "edgeae>hard_silu"}
#: Arguments Keras 3 renamed: {layer: {Keras 3 name: tf-keras name}}.
_RENAMED = {"LeakyReLU": {"negative_slope": "alpha"}}
#: Arguments Keras 3 added that tf-keras has no place for, and the value its layer behaves as
#: (None: any value, as a seed, which only training draws on).
_IMPLIED = {"seed": None, "data_format": "channels_last"}


def is_keras3_file(path: Path) -> bool:
    """Whether `path` (.keras or .h5) was saved by Keras 3."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                version = parse_json(z.read("metadata.json")).get("keras_version", "")
        else:
            with h5py.File(path, "r") as f:
                version = f.attrs.get("keras_version", "")
    except (OSError, KeyError, ValueError):
        return False  # tf-keras's loader names what is wrong with the file
    return str(version if isinstance(version, str) else version.decode()).startswith("3.")


def load(path: Path, custom_objects: dict):
    """The Keras 3 model saved at `path`, rebuilt as a tf-keras model with its weights."""
    import keras as keras3

    from ._tf import keras

    try:
        original = keras3.saving.load_model(path, compile=False)
    except Exception as e:
        raise EdgeaeError(f"{path}: cannot load as a Keras 3 model ({cause(e)})") from None
    _register_activations(keras)
    config = _translate(keras3.saving.serialize_keras_object(original), keras3, keras, path)
    try:
        model = keras.models.model_from_json(json.dumps(config), custom_objects=custom_objects)
        model.set_weights(original.get_weights())
    except Exception as e:
        raise EdgeaeError(f"{path}: a Keras 3 model tf-keras cannot rebuild ({cause(e)})") from None
    x = np.random.default_rng(0).standard_normal((8, *original.input_shape[1:])).astype(np.float32)
    want, got = np.asarray(original(x, training=False)), model(x, training=False).numpy()
    if want.shape != got.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-4 * (np.abs(want).max() + 1e-12)):
        raise EdgeaeError(f"{path}: rebuilt in tf-keras, the Keras 3 model gives other outputs (largest difference "
                          f"{np.abs(got - want).max() if want.shape == got.shape else 'in shape'}); export it from tf-keras")  # fmt: skip
    return model


def _register_activations(keras) -> None:
    """Keras 3's hard_sigmoid and hard_silu as tf-keras serializable functions (`_ACTIVATIONS`);
    registered, they survive export's clone of the model."""
    from ._tf import tf

    if _ACTIVATIONS["hard_silu"] in keras.utils.get_custom_objects():
        return

    @keras.utils.register_keras_serializable(package="edgeae", name="hard_sigmoid")
    def hard_sigmoid(x):
        return tf.nn.relu6(x + 3.0) / 6.0

    @keras.utils.register_keras_serializable(package="edgeae", name="hard_silu")
    def hard_silu(x):
        return x * hard_sigmoid(x)


def _translate(obj, keras3, keras, path):
    """A Keras 3 serialized object, rewritten for tf-keras's deserializer."""
    if isinstance(obj, (list, tuple)):
        return [_translate(o, keras3, keras, path) for o in obj]
    if not isinstance(obj, dict):
        return obj
    if obj.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
        return obj["config"]["name"]
    out = {k: _translate(v, keras3, keras, path) for k, v in obj.items()}
    name, module, config = out.get("class_name"), out.get("module") or "", out.get("config")
    if name in _MODELS and isinstance(config, dict):
        # A nested model's first node is its own (input to output): tf-keras counts the calls
        # from 1, Keras 3's nodes from 0 (its input and output lists already count from 1).
        layers = config.get("layers", [])
        models = {layer["config"]["name"] for layer in layers if layer["class_name"] in _MODELS}
        for layer in layers:
            if "inbound_nodes" in layer:
                layer["inbound_nodes"] = [_node(node, models, path) for node in layer["inbound_nodes"]]
        nodes = {layer["config"]["name"]: max(1, len(layer.get("inbound_nodes", [])) + (layer["config"]["name"] in models))
                 for layer in layers}  # fmt: skip
        for layer in layers:  # a reference to a node that does not exist would send tf-keras's rebuild round forever
            for source, index, *_ in (t for node in layer.get("inbound_nodes", []) for t in node):
                if index >= nodes.get(source, 0):
                    raise EdgeaeError(f"{path}: layer '{layer['config']['name']}' takes node {index} of '{source}', "
                                      "which the model does not have; export it from tf-keras")  # fmt: skip
        for key in ("input_layers", "output_layers"):
            if config.get(key) and isinstance(config[key][0], str):  # one tensor: [name, node, index]
                config[key] = [config[key]]
    elif isinstance(config, dict) and module.startswith("keras.") and name != "__keras_tensor__":
        kind = module.split(".")[1]
        target = getattr(getattr(keras, kind, None), name, None)
        if target is None:
            raise EdgeaeError(f"{path}: {name} ({module}) has no tf-keras counterpart; export it from tf-keras")
        if name == "InputLayer" and "batch_shape" in config:
            config["batch_input_shape"] = config.pop("batch_shape")
        for key in ("activation", "recurrent_activation"):
            if config.get(key) in _ACTIVATIONS:
                config[key] = _ACTIVATIONS[config[key]]
        for new, old in _RENAMED.get(name, {}).items():
            if new in config:
                config[old] = config.pop(new)
        # a subclass hands some arguments to its base through **kwargs (GlobalAveragePooling1D's keepdims)
        takes = {p for c in target.__mro__ if "__init__" in vars(c) for p in inspect.signature(c.__init__).parameters}
        defaults = inspect.signature(getattr(getattr(keras3, kind), name).__init__).parameters
        for key in [k for k in config if k not in takes and k not in _LAYER_BASE]:
            value = config.pop(key)
            default = defaults[key].default if key in defaults else inspect.Parameter.empty
            if key in _IMPLIED and _IMPLIED[key] in (None, value):
                continue
            if value != default:
                raise EdgeaeError(f"{path}: {name} '{config.get('name', '')}' sets {key}={value!r}, which tf-keras "
                                  "does not have; export it from tf-keras")  # fmt: skip
    return out


def _node(node, models: set[str], path) -> list:
    """A Keras 3 functional node ({"args", "kwargs"}) as tf-keras's list of [layer, node, tensor, kwargs]."""
    kwargs = {k: v for k, v in node.get("kwargs", {}).items() if v is not None}
    tensors = []

    def collect(arg):
        if isinstance(arg, (list, tuple)):
            for a in arg:
                collect(a)
        elif isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
            layer, index, tensor = arg["config"]["keras_history"]
            tensors.append([layer, index + (layer in models), tensor, kwargs])
        else:
            raise EdgeaeError(f"{path}: a layer called with a constant argument ({str(arg)[:40]}); export it from tf-keras")

    collect(node.get("args", []))
    return tensors

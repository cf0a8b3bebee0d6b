"""Model recipes: TOML files in `models/` that say what to build and how to train it.

A recipe has five tables; every key is optional (what it leaves out is the default recipe's,
`Recipe()`: a dense autoencoder), and an unknown key is an error (a typo must not silently fall
back to a default). See `models/*.toml` for examples.

    [model]   kind = "dense" | "conv1d", hidden / filters, kernel_size, code_size,
              activation, code_activation (names in ACTIVATIONS), tied
    [model.sparse]   kind = "l1" | "kl", weight, target          (activity penalty on the code)
    [model.denoise]  kind = "gaussian" | "mask", stddev, rate   (corruption while training)
    [data]    channels, label, time, window, hop, train_rows, highpass
    [train]   epochs, batch_size, learning_rate, validation_split, patience, seed, qat, qat_epochs
    [prune]   sparsity, epochs, frequency
    [export]  calibration_windows, input_margin, calibration, residual_power
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .data import FLOAT32_MAX
from .errors import EdgeaeError, existing_file
from .fsutil import parse_toml
from .wire import MAX_CODE

MAX_SEED = 2**32 - 1  # numpy's and TensorFlow's seeds
MAX_INT = MAX_SEED  # of any integer in a recipe: beyond it TensorFlow overflows (C long, int32 shapes) in a traceback

# The element-wise activations tf_keras knows by name (an unknown one was a Keras traceback). All
# convert to int8 and run on LiteRT; TFLite Micro has no int8 kernel for gelu, selu, softplus,
# exponential and mish, which `export --target mcu` and `verify` say (measured with both runtimes).
ACTIVATIONS = ("linear", "relu", "relu6", "leaky_relu", "elu", "selu", "tanh", "sigmoid", "hard_sigmoid", "swish", "silu",
               "gelu", "softplus", "softsign", "exponential", "mish")  # fmt: skip


@dataclass
class Sparse:
    kind: str = "l1"  # l1 | kl
    weight: float = 1e-3
    target: float = 0.05  # KL only: the desired mean activation of each code unit


@dataclass
class Denoise:
    kind: str = "gaussian"  # gaussian | mask
    stddev: float = 0.1  # gaussian: noise std in normalized units
    rate: float = 0.1  # mask: fraction of inputs set to zero


@dataclass
class Model:
    kind: str = "dense"  # dense | conv1d
    hidden: list[int] = field(default_factory=lambda: [64, 32])  # dense: units per encoder layer
    filters: list[int] = field(default_factory=lambda: [16, 32])  # conv1d: filters per stride-2 layer
    kernel_size: int = 5
    code_size: int = 8
    activation: str = "relu"
    code_activation: str = "linear"
    tied: bool = False
    sparse: Sparse | None = None
    denoise: Denoise | None = None


@dataclass
class Data:
    channels: list[str] | None = None  # None: every numeric column but time and label
    label: str | None = None
    time: str | None = None
    window: int = 64
    hop: int = 16
    train_rows: list[int] | None = None  # [start, stop): train on these rows, else on normal rows
    # {channel = time constant in rows}: remove drift slower than that from those channels before
    # windowing (data.highpass_rows; the device runs the same filter). For slow channels such as
    # temperatures, whose level after training says more about the weather than about the machine.
    highpass: dict[str, float] | None = None


@dataclass
class Train:
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    validation_split: float = 0.1
    patience: int = 5
    seed: int = 0
    qat: bool = False  # quantization-aware fine-tuning of the encoder after training / pruning
    qat_epochs: int = 5


@dataclass
class Prune:
    sparsity: float = 0.0  # 0: no pruning
    epochs: int = 8  # fine-tuning epochs while sparsity ramps up
    frequency: int = 10  # steps between mask updates


@dataclass
class Export:
    calibration_windows: int = 256
    # The int8 input range is calibrated on the calibration windows and on copies scaled by this
    # factor, so data drifting past the training range is not clipped at the encoder's input.
    # On SKAB a margin of 3 closed a 0.06 ROC-AUC gap between int8 and float for ~9 dB of SQNR.
    input_margin: float = 3.0
    calibration: str | None = None  # a file in calibration/ (CSV or .npz); default: training windows
    # The window's anomaly score, which the device sends as the residual byte: the power mean, with
    # this exponent, of each channel's mean squared reconstruction error. 1 is the window's mean
    # squared error; larger powers weigh the worst channels more, so a fault in one channel of many
    # is not averaged away (metrics.reconstruction_error).
    residual_power: int = 1


@dataclass
class Recipe:
    name: str = "model"
    model: Model = field(default_factory=Model)
    data: Data = field(default_factory=Data)
    train: Train = field(default_factory=Train)
    prune: Prune = field(default_factory=Prune)
    export: Export = field(default_factory=Export)

    def to_dict(self) -> dict:
        return _drop_none(dataclasses.asdict(self))

    def validate(self) -> "Recipe":
        m, d = self.model, self.data
        _one_of("model.kind", m.kind, ("dense", "conv1d"))
        _one_of("model.activation", m.activation, ACTIVATIONS)
        _one_of("model.code_activation", m.code_activation, ACTIVATIONS)
        if not 1 <= m.code_size <= MAX_CODE:
            raise EdgeaeError(f"recipe: model.code_size must be 1..{MAX_CODE} (what a packet carries), got {m.code_size}")
        t, p, e = self.train, self.prune, self.export
        for key, v in (("model.kernel_size", m.kernel_size), ("train.epochs", t.epochs), ("train.batch_size", t.batch_size),
                       ("train.qat_epochs", t.qat_epochs), ("prune.epochs", p.epochs), ("prune.frequency", p.frequency),
                       ("export.calibration_windows", e.calibration_windows)):  # fmt: skip
            if v < 1:
                raise EdgeaeError(f"recipe: {key} must be >= 1, got {v}")
        for key, units in (("model.hidden", m.hidden), ("model.filters", m.filters)):
            if not all(isinstance(u, int) and not isinstance(u, bool) and 1 <= u <= MAX_INT for u in units):
                raise EdgeaeError(f"recipe: {key} must be a list of positive integers (at most 2^32-1), got {units}")
        if t.learning_rate <= 0 or t.patience < 0:
            raise EdgeaeError(f"recipe: train.learning_rate must be > 0 and train.patience >= 0, got {t.learning_rate}, {t.patience}")
        if not 0 <= t.seed <= MAX_SEED:
            raise EdgeaeError(f"recipe: train.seed must be 0..2^32-1, got {t.seed}")
        if m.sparse is not None:
            _one_of("model.sparse.kind", m.sparse.kind, ("l1", "kl"))
            if m.sparse.kind == "kl" and m.code_activation != "sigmoid":
                raise EdgeaeError('recipe: the KL sparsity penalty needs model.code_activation = "sigmoid"')
            if m.sparse.weight <= 0 or not 0 < m.sparse.target < 1:  # a negative weight rewards activity; KL's target is a rate
                raise EdgeaeError(f"recipe: model.sparse.weight must be > 0 and target in (0, 1), got {m.sparse.weight}, {m.sparse.target}")
        if m.denoise is not None:
            _one_of("model.denoise.kind", m.denoise.kind, ("gaussian", "mask"))
            if m.denoise.stddev <= 0 or not 0 < m.denoise.rate < 1:
                raise EdgeaeError(f"recipe: model.denoise.stddev must be > 0 and rate in (0, 1), got {m.denoise.stddev}, {m.denoise.rate}")
        if m.kind == "conv1d" and not m.filters:
            raise EdgeaeError("recipe: model.filters must name at least one conv layer for a conv1d model, got []")
        if m.kind == "conv1d" and m.kernel_size > d.window:
            raise EdgeaeError(f"recipe: model.kernel_size ({m.kernel_size}) must be at most data.window ({d.window}): "
                              f"the kernel slides along the window")  # fmt: skip
        if m.kind == "conv1d" and d.window % (2 ** len(m.filters)) != 0:
            raise EdgeaeError(
                f"recipe: data.window ({d.window}) must be divisible by 2^{len(m.filters)} "
                f"for {len(m.filters)} stride-2 conv layers"
            )
        if d.window < 2 or d.hop < 1:
            raise EdgeaeError("recipe: data.window must be >= 2 and data.hop >= 1")
        rows = d.train_rows
        if rows is not None and not (len(rows) == 2 and all(isinstance(r, int) and not isinstance(r, bool) for r in rows)
                                     and 0 <= rows[0] < rows[1]):  # fmt: skip
            raise EdgeaeError(f"recipe: data.train_rows must be [start, stop) with 0 <= start < stop, got {rows}")
        if d.channels is not None and not (d.channels and all(isinstance(c, str) for c in d.channels)
                                           and len(set(d.channels)) == len(d.channels)):  # fmt: skip
            raise EdgeaeError(f"recipe: data.channels must be distinct column names, got {d.channels}")
        if d.highpass is not None:
            bad = {k: v for k, v in d.highpass.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or not 1 <= v < math.inf}
            if bad:
                raise EdgeaeError(f"recipe: data.highpass time constants must be numbers of rows >= 1, got {bad}")
            unknown = sorted(set(d.highpass) - set(d.channels or d.highpass))
            if unknown:
                raise EdgeaeError(f"recipe: data.highpass names channel(s) not in data.channels: {', '.join(unknown)}")
            d.highpass = {k: float(v) for k, v in d.highpass.items()}
        if not 0.0 <= self.prune.sparsity < 1.0:
            raise EdgeaeError(f"recipe: prune.sparsity must be in [0, 1), got {self.prune.sparsity}")
        if not 1 <= e.residual_power <= 8:
            raise EdgeaeError(f"recipe: export.residual_power must be an integer in 1..8, got {e.residual_power}")
        if not 1.0 <= self.export.input_margin <= 100.0:  # at 100 the calibration range spans 2-3 of int8's 256 steps
            raise EdgeaeError(f"recipe: export.input_margin must be in 1..100 (the int8 input spans that many times the "
                              f"calibration range), got {self.export.input_margin}")  # fmt: skip
        if not 0.0 <= self.train.validation_split < 0.9:
            raise EdgeaeError("recipe: train.validation_split must be in [0, 0.9)")
        return self


def summary(r: Recipe) -> str:
    """What a recipe builds, in one line (the CLI names the default recipe by it)."""
    m, d = r.model, r.data
    layers = f"{'-'.join(map(str, m.hidden))} units" if m.kind == "dense" else f"{'-'.join(map(str, m.filters))} filters, kernel {m.kernel_size}"
    channels = "every numeric column" if d.channels is None else f"{len(d.channels)} channels"
    return f"a {m.kind} autoencoder ({layers}, code {m.code_size}) on windows of {d.window} rows every {d.hop} of {channels}"


def _one_of(key, value, allowed):
    if value not in allowed:
        raise EdgeaeError(f"recipe: {key} must be one of {', '.join(allowed)}; got {value!r}")


def _drop_none(d):
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    return d


def _build(cls, table: dict, where: str):
    """Instantiate dataclass `cls` from a TOML table, rejecting unknown keys and wrong types."""
    if not isinstance(table, dict):
        raise EdgeaeError(f"recipe: [{where}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise EdgeaeError(
            f"recipe: unknown key(s) {', '.join(f'{where}.{k}' if where else k for k in unknown)} "
            f"(known: {', '.join(fields)})"
        )
    kwargs = {}
    for key, value in table.items():
        nested = _NESTED.get((cls, key))
        if nested is not None:
            kwargs[key] = _build(nested, value, f"{where}.{key}" if where else key)
            continue
        expected = _expected_type(cls, key)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            raise EdgeaeError(f"recipe: {where + '.' if where else ''}{key} must be {expected.__name__}, got {value!r}")
        if expected is int and value > MAX_INT:
            raise EdgeaeError(f"recipe: {where + '.' if where else ''}{key} must be at most 2^32-1, got {value!r}")
        if expected is float and not abs(value) <= FLOAT32_MAX:  # TOML has nan and inf, which every range check lets by
            raise EdgeaeError(f"recipe: {where + '.' if where else ''}{key} must be a finite number within float32's range (3.4e38), "
                              f"got {value!r}")  # fmt: skip
        kwargs[key] = value
    return cls(**kwargs)


#: Types of the keys whose default is None.
_OPTIONAL_TYPES = {"channels": list, "label": str, "time": str, "train_rows": list, "highpass": dict,
                   "calibration": str}  # fmt: skip


def _expected_type(cls, key):
    default = getattr(cls(), key)
    return _OPTIONAL_TYPES[key] if default is None else type(default)


_NESTED = {
    (Recipe, "model"): Model,
    (Recipe, "data"): Data,
    (Recipe, "train"): Train,
    (Recipe, "prune"): Prune,
    (Recipe, "export"): Export,
    (Model, "sparse"): Sparse,
    (Model, "denoise"): Denoise,
}


def from_dict(d: dict, name: str = "model") -> Recipe:
    d = dict(d)
    d.setdefault("name", name)
    return _build(Recipe, d, "").validate()


def load(path: str | Path) -> Recipe:
    """Read and validate a recipe file."""
    path = existing_file(path, "recipe file")
    try:
        d = parse_toml(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise EdgeaeError(f"{path}: not valid TOML ({e})") from None
    try:
        return from_dict(d, name=path.stem)
    except EdgeaeError as e:
        raise EdgeaeError(f"{path}: {e}") from None

import re
from pathlib import Path

import pytest

from edgeae import recipe
from edgeae.errors import EdgeaeError

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.mark.parametrize("path", sorted(MODELS.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_recipes_are_valid(path):
    r = recipe.load(path)
    assert r.name == path.stem


def test_the_activations_a_recipe_accepts_are_keras_own():
    keras = pytest.importorskip("tf_keras")
    for name in recipe.ACTIVATIONS:
        assert keras.activations.get(name) is not None, name


def test_mlperf_recipe_shape():
    r = recipe.load(MODELS / "mlperf-ad.toml")
    assert r.data.window * len(r.data.channels) == 640
    assert r.model.hidden == [128] * 4 and r.model.code_size == 8


def test_sim_sweep_recipe_is_the_demo_model():
    """models/sim-rd.toml is the demo's model trained longer: the sweep's figures speak for the demo."""
    from edgeae.demo import RECIPE

    r, demo = recipe.load(MODELS / "sim-rd.toml"), recipe.from_dict(RECIPE)
    assert (r.model.kind, r.model.hidden, r.model.code_size) == (demo.model.kind, demo.model.hidden, demo.model.code_size)
    assert (r.data.window, r.data.hop) == (demo.data.window, demo.data.hop) and r.train.epochs > demo.train.epochs


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('[model]\nkind = "dense"\ncode_sise = 8\n')
    with pytest.raises(EdgeaeError, match=r"unknown key\(s\) model.code_sise"):
        recipe.load(p)


def test_unknown_table_and_nested_key():
    with pytest.raises(EdgeaeError, match="unknown key"):
        recipe.from_dict({"modle": {}})
    with pytest.raises(EdgeaeError, match="model.sparse.wieght"):
        recipe.from_dict({"model": {"sparse": {"wieght": 1}}})


def test_missing_recipe_file(tmp_path):
    with pytest.raises(EdgeaeError, match="nope.toml: no such recipe file"):
        recipe.load(tmp_path / "nope.toml")


def test_wrong_types_and_values():
    with pytest.raises(EdgeaeError, match="code_size must be int"):
        recipe.from_dict({"model": {"code_size": "8"}})
    for size in (0, 65):  # 65: trained and exported, then every packet failed (a traceback in encode)
        with pytest.raises(EdgeaeError, match=rf"code_size must be 1..64 \(what a packet carries\), got {size}"):
            recipe.from_dict({"model": {"code_size": size}})
    with pytest.raises(EdgeaeError, match="tied must be bool"):
        recipe.from_dict({"model": {"tied": 1}})
    with pytest.raises(EdgeaeError, match="must be one of dense, conv1d"):
        recipe.from_dict({"model": {"kind": "lstm"}})
    with pytest.raises(EdgeaeError, match="model.activation must be one of linear, relu, .*; got 'swish2'"):
        recipe.from_dict({"model": {"activation": "swish2"}})  # was a Keras traceback in train
    with pytest.raises(EdgeaeError, match="model.code_activation must be one of"):
        recipe.from_dict({"model": {"code_activation": "Linear"}})
    with pytest.raises(EdgeaeError, match="needs model.code_activation"):
        recipe.from_dict({"model": {"sparse": {"kind": "kl"}}})
    with pytest.raises(EdgeaeError, match="divisible"):
        recipe.from_dict({"model": {"kind": "conv1d", "filters": [4, 4]}, "data": {"window": 30}})
    with pytest.raises(EdgeaeError, match="sparsity"):
        recipe.from_dict({"prune": {"sparsity": 1.5}})


@pytest.mark.parametrize("table, message", [
    ({"train": {"epochs": 0}}, "train.epochs must be >= 1, got 0"),
    ({"train": {"seed": -1}}, "train.seed must be 0..2^32-1, got -1"),  # was numpy's traceback in train
    ({"train": {"learning_rate": float("nan")}}, "train.learning_rate must be a finite number within float32's range (3.4e38), got nan"),  # TOML's nan: trained on NaN
    ({"export": {"input_margin": float("inf")}}, "export.input_margin must be a finite number within float32's range (3.4e38), got inf"),
    ({"model": {"sparse": {"weight": 1e300}}}, "model.sparse.weight must be a finite number within float32's range"),  # was a NaN loss, blamed on the learning rate
    ({"model": {"denoise": {"stddev": 1e39}}}, "model.denoise.stddev must be a finite number within float32's range"),
    ({"data": {"highpass": {"a": float("inf")}}}, "data.highpass time constants must be numbers of rows >= 1, got {'a': inf}"),
    ({"model": {"sparse": {"weight": -1e-3}}}, "model.sparse.weight must be > 0 and target in (0, 1), got -0.001, 0.05"),
    ({"model": {"code_activation": "sigmoid", "sparse": {"kind": "kl", "target": 2}}}, "target in (0, 1), got 0.001, 2.0"),  # was a NaN loss
    ({"model": {"denoise": {"stddev": -0.1}}}, "model.denoise.stddev must be > 0 and rate in (0, 1), got -0.1, 0.1"),
    ({"model": {"denoise": {"kind": "mask", "rate": 1.5}}}, "rate in (0, 1), got 0.1, 1.5"),
    ({"export": {"residual_power": 0}}, "export.residual_power must be an integer in 1..8, got 0"),
    ({"export": {"residual_power": 2.5}}, "export.residual_power must be int"),
    ({"train": {"batch_size": -4}}, "train.batch_size must be >= 1"),
    ({"export": {"calibration_windows": 0}}, "export.calibration_windows must be >= 1"),
    ({"model": {"hidden": [64, -2]}}, "model.hidden must be a list of positive integers"),
    ({"model": {"filters": [16, "32"]}}, "model.filters must be a list of positive integers"),
    ({"model": {"kind": "conv1d", "filters": []}}, "model.filters must name at least one conv layer"),  # an IndexError in the model zoo
    ({"train": {"learning_rate": 0}}, "train.learning_rate must be > 0"),
    ({"data": {"train_rows": [-5, 10]}}, "data.train_rows must be"),  # was sliced from the end, silently
    ({"data": {"train_rows": ["a", "b"]}}, "data.train_rows must be"),
    ({"data": {"channels": ["a", "a"]}}, "data.channels must be distinct column names"),
    ({"data": {"channels": []}}, "data.channels must be distinct column names"),
    ({"data": {"channels": [1, 2]}}, "data.channels must be distinct column names"),
    # found by fuzzing the recipes: tracebacks in train (TensorFlow's OverflowError / ValueError) or
    # export (every calibration window scaled to inf)
    ({"train": {"batch_size": 2**70}}, "train.batch_size must be at most 2^32-1, got 1180591620717411303424"),
    ({"model": {"filters": [16, 2**40]}}, "model.filters must be a list of positive integers (at most 2^32-1)"),
    ({"model": {"kind": "conv1d", "kernel_size": 65}}, "model.kernel_size (65) must be at most data.window (64)"),
    ({"export": {"input_margin": 1e6}}, "export.input_margin must be in 1..100"),
    ({"export": {"input_margin": 0.5}}, "export.input_margin must be in 1..100"),
])  # fmt: skip
def test_values_caught_when_the_recipe_is_read(table, message):
    """Caught here with the key named, not as a Keras traceback (or wrong rows) after the data is read."""
    with pytest.raises(EdgeaeError, match=re.escape(message)):
        recipe.from_dict(table)


def test_highpass_key():
    r = recipe.from_dict({"data": {"channels": ["a", "t"], "highpass": {"t": 60}}})
    assert r.data.highpass == {"t": 60.0}
    with pytest.raises(EdgeaeError, match="time constants must be numbers of rows >= 1"):
        recipe.from_dict({"data": {"highpass": {"t": 0.5}}})
    with pytest.raises(EdgeaeError, match="time constants must be numbers of rows >= 1"):
        recipe.from_dict({"data": {"highpass": {"t": "slow"}}})
    with pytest.raises(EdgeaeError, match="not in data.channels: x"):
        recipe.from_dict({"data": {"channels": ["a", "t"], "highpass": {"x": 60}}})
    with pytest.raises(EdgeaeError, match="highpass must be dict"):
        recipe.from_dict({"data": {"highpass": 60}})


def test_int_accepted_for_float():
    assert recipe.from_dict({"train": {"learning_rate": 1}}).train.learning_rate == 1.0


def test_invalid_toml(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text("[model\n")
    with pytest.raises(EdgeaeError, match="not valid TOML"):
        recipe.load(p)
    p.write_text("a = " + "[" * 100_000)  # tomllib recursed into a RecursionError
    with pytest.raises(EdgeaeError, match="r.toml: not valid TOML \\(nested too deeply\\)"):
        recipe.load(p)
    p.write_text("[train]\nepochs = " + "1" * 5000)  # int() refuses: a ValueError traceback
    with pytest.raises(EdgeaeError, match="r.toml: not valid TOML \\(Exceeds the limit \\(4300 digits\\) for integer string conversion: value has 5000 digits\\)$"):
        recipe.load(p)

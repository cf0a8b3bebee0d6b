"""Bring your own model: split a user's Keras autoencoder at its bottleneck and export it."""

import numpy as np
import pytest

from conftest import save_npz
from edgeae import simulate
from edgeae.errors import EdgeaeError


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    return save_npz(tmp_path_factory.mktemp("byo") / "calib.npz", simulate.machine(seconds=10, seed=3))


def _sequential_ae():
    from edgeae._tf import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(16, activation="relu", name="e1"),
        keras.layers.Dense(4, name="bottleneck"),
        keras.layers.Dense(16, activation="relu", name="d1"),
        keras.layers.Dense(64, name="out"),
    ])  # fmt: skip


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_split_and_export_own_model(tmp_path, calib, suffix):
    from edgeae.export import export
    from edgeae.verify import verify

    model = _sequential_ae()
    path = tmp_path / f"ae{suffix}"
    model.save(path)
    out = export(path, tmp_path / "dist", code_layer="bottleneck", calibration=calib)
    rep = verify(out)
    assert rep.windows > 0 and rep.passed, rep.table()
    from edgeae.manifest import Export

    ex = Export.open(out)
    assert ex.window == 16 and ex.channels == simulate.CHANNELS  # 64 inputs / 4 channels
    assert ex.manifest["code_size"] == 4 and ex.manifest["recipe"] is None


def test_cli_export_of_own_model_says_what_window_it_took(tmp_path, calib):
    """The window length comes from the model's input size over the calibration data's channels,
    and without --normalization the model gets unscaled values: the CLI says both."""
    from test_cli import edgeae

    _sequential_ae().save(tmp_path / "ae.keras")
    proc = edgeae("export", "--int8", tmp_path / "ae.keras", "--code-layer", "bottleneck", "--calibration", calib, "--out", tmp_path / "dist")
    assert proc.returncode == 0, proc.stderr
    assert f"window: 16 rows x 4 channels ({', '.join(simulate.CHANNELS)}), unscaled: give --normalization" in proc.stdout


def test_split_matches_the_original(tmp_path):
    from edgeae.export import split

    model = _sequential_ae()
    enc, dec = split(model, "bottleneck")
    x = np.random.default_rng(0).normal(size=(8, 64)).astype(np.float32)
    np.testing.assert_allclose(dec(enc(x)).numpy(), model(x).numpy(), rtol=1e-6)
    assert enc.output_shape == (None, 4)


def _nested_ae(kind: str):
    """The Keras tutorials' pattern: encoder and decoder built as models of their own, then joined."""
    from edgeae._tf import keras

    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(4)], name="encoder")
    decoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(64)], name="decoder")
    if kind == "sequential":
        model = keras.Sequential([encoder, decoder])
        model.build((None, 64))  # as fit() does
        return model
    inp = keras.Input((64,))
    return keras.Model(inp, decoder(encoder(inp)))


@pytest.mark.parametrize("kind", ["functional", "sequential"])
def test_split_at_a_nested_encoder_model(tmp_path, kind):
    """Split at a sub-model: its own `.output` is a tensor of its inner graph, which made the
    encoder a disconnected graph (a traceback) before the split took the outer model's tensor."""
    from edgeae._tf import keras
    from edgeae.export import split

    path = tmp_path / "ae.keras"
    _nested_ae(kind).save(path)
    model = keras.models.load_model(path, compile=False)
    enc, dec = split(model, "encoder")
    x = np.random.default_rng(0).normal(size=(8, 64)).astype(np.float32)
    np.testing.assert_allclose(dec(enc(x)).numpy(), model(x).numpy(), rtol=1e-6)
    assert enc.output_shape == (None, 4)


def test_missing_code_layer(tmp_path):
    from edgeae.export import split

    with pytest.raises(EdgeaeError, match="no layer named 'code'.*bottleneck"):
        split(_sequential_ae(), "code")


@pytest.mark.parametrize("end", ["input", "output"])
def test_split_at_the_input_or_output_is_named(end):
    """At the input the encoder had no layer (an IndexError traceback in export); at the output the
    'code' was the whole reconstruction and the decoder an identity, exported without a word."""
    from edgeae.export import split

    model = _nested_ae("functional")
    layer = model.layers[0 if end == "input" else -1].name
    with pytest.raises(EdgeaeError, match=f"cannot split at '{layer}': it is the model's {end}"):
        split(model, layer)


def test_unbuilt_sequential_is_named():
    from edgeae._tf import keras
    from edgeae.export import split

    unbuilt = keras.Sequential([keras.layers.Dense(4, name="bottleneck"), keras.layers.Dense(64)])
    with pytest.raises(EdgeaeError, match="no input shape yet"):
        split(unbuilt, "bottleneck")


def test_skip_connection_cannot_be_split():
    from edgeae._tf import keras
    from edgeae.export import split

    inp = keras.Input((64,))
    h = keras.layers.Dense(16, name="e1")(inp)
    code = keras.layers.Dense(4, name="bottleneck")(h)
    d = keras.layers.Dense(16, name="d1")(code)
    out = keras.layers.Dense(64, name="out")(keras.layers.Concatenate(name="skip")([d, h]))
    with pytest.raises(EdgeaeError, match="layer 'skip' also reads from upstream of the code"):
        split(keras.Model(inp, out), "bottleneck")


def test_byo_needs_code_layer_and_calibration(tmp_path, calib):
    from edgeae.export import export

    path = tmp_path / "ae.keras"
    _sequential_ae().save(path)
    with pytest.raises(EdgeaeError, match="needs --code-layer and --calibration"):
        export(path, tmp_path / "dist", calibration=calib)
    with pytest.raises(EdgeaeError, match="channels do not divide"):
        export(path, tmp_path / "dist", code_layer="bottleneck",
               calibration=save_npz(tmp_path / "c3.npz", simulate.machine(seconds=2).select(["vib_x", "vib_y", "current"])))  # fmt: skip
    from edgeae._tf import keras

    inp = keras.Input((None, 4))  # a convolutional model taking any length
    code = keras.layers.Conv1D(2, 5, padding="same", name="bottleneck")(inp)
    keras.Model(inp, keras.layers.Conv1D(4, 5, padding="same")(code)).save(tmp_path / "any_length.keras")
    with pytest.raises(EdgeaeError, match=r"input shape \(None, 4\) has a free size"):
        export(tmp_path / "any_length.keras", tmp_path / "dist", code_layer="bottleneck", calibration=calib)
    inp = keras.Input((64,))
    wide = keras.layers.Dense(65, name="bottleneck")(inp)
    keras.Model(inp, keras.layers.Dense(64)(wide)).save(tmp_path / "wide.keras")
    with pytest.raises(EdgeaeError, match="a code of 65 values at 'bottleneck'; a packet carries at most 64"):
        export(tmp_path / "wide.keras", tmp_path / "dist", code_layer="bottleneck", calibration=calib)
    inp = keras.Input((16, 4))  # (window, channels): 2 channels would divide its 64 inputs, as 32 rows
    code = keras.layers.Conv1D(2, 5, padding="same", name="bottleneck")(inp)
    keras.Model(inp, keras.layers.Conv1D(4, 5, padding="same")(code)).save(tmp_path / "conv.keras")
    with pytest.raises(EdgeaeError, match=r"2 channels, the model's input \(16, 4\) takes 4"):
        export(tmp_path / "conv.keras", tmp_path / "dist", code_layer="bottleneck",
               calibration=save_npz(tmp_path / "c2.npz", simulate.machine(seconds=2).select(["vib_x", "vib_y"])))  # fmt: skip
    with pytest.raises(EdgeaeError, match="nope.keras: no such model file"):
        export(tmp_path / "nope.keras", tmp_path / "dist", code_layer="bottleneck", calibration=calib)
    with pytest.raises(EdgeaeError, match="nope.json: no such normalization file"):
        export(path, tmp_path / "dist", code_layer="bottleneck", calibration=calib, normalization=tmp_path / "nope.json")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a model")
    with pytest.raises(EdgeaeError, match="cannot load as a tf-keras model"):
        export(bad, tmp_path / "dist", code_layer="bottleneck", calibration=calib)
    assert not (tmp_path / "dist").exists()

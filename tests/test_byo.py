"""Bring your own model: split a user's Keras autoencoder at its bottleneck and export it."""

import json

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


def test_own_model_is_calibrated_on_the_windows_labelled_normal(tmp_path):
    """As for a run's export: a labelled calibration file's faults do not set the int8 ranges."""
    from edgeae.export import export

    _sequential_ae().save(tmp_path / "ae.keras")
    s = simulate.machine(seconds=10, seed=3)
    first = int(np.argmax(s.labels))
    outs = [export(tmp_path / "ae.keras", tmp_path / name, code_layer="bottleneck",
                   calibration=save_npz(tmp_path / f"{name}.npz", s.rows(0, stop))) for name, stop in (("h", first), ("f", first + 600))]  # fmt: skip
    assert (outs[0] / "encoder_int8.tflite").read_bytes() == (outs[1] / "encoder_int8.tflite").read_bytes()


def test_own_model_calibrated_on_several_files(tmp_path):
    """--calibration again for more (it took one file): the first file's channels and rate are the
    export's, a later file's columns are taken in its order, one at another rate is refused, and
    the fingerprint is of all of them."""
    from edgeae import data as D
    from edgeae.export import export
    from edgeae.manifest import Export

    _sequential_ae().save(tmp_path / "ae.keras")
    s = simulate.machine(seconds=10, seed=3)
    a = tmp_path / "a.npz"
    simulate.save(s.rows(0, 3000), a, start=0)
    b = save_npz(tmp_path / "b.npz", s.rows(3000, 6000).select(simulate.CHANNELS[::-1]))
    ex = Export.open(export(tmp_path / "ae.keras", tmp_path / "dist", code_layer="bottleneck", calibration=[a, b]))
    assert ex.channels == simulate.CHANNELS and ex.row_period == 0.001
    assert ex.manifest["training_data_fingerprint"] == D.fingerprint([D.read_series(a), D.read_series(b).select(simulate.CHANNELS)])
    c = tmp_path / "c.npz"
    simulate.save(s.rows(6000, 9000), c, start=0, fs=500.0)
    with pytest.raises(EdgeaeError, match=r"c.npz: rows 0.002 s apart \(500 Hz\), the export's were 0.001 s apart"):
        export(tmp_path / "ae.keras", tmp_path / "x", code_layer="bottleneck", calibration=[a, c])


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


def _keras3_conv_ae(keras):
    """A Keras 3 (or tf-keras: `keras` is either module) tutorial-style autoencoder: encoder and
    decoder models of their own, Conv1D, BatchNormalization, Dropout, Conv1DTranspose,
    UpSampling1D; fitted briefly on standardized windows of the simulated machine. Returns the
    model and its normalization (unscaled, its int8 input step would blur the vibration)."""
    from edgeae import data as D

    L = keras.layers
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 4))
    x = L.Conv1D(8, 5, padding="same", activation="relu")(inp)
    x = L.BatchNormalization()(x)
    code = L.Dense(4)(L.Flatten()(L.Conv1D(4, 3, strides=2, padding="same", activation="relu")(x)))
    encoder = keras.Model(inp, code, name="encoder")
    code_in = keras.Input((4,))
    y = L.Dropout(0.2)(L.Reshape((4, 8))(L.Dense(32, activation="relu")(code_in)))
    y = L.UpSampling1D(2)(L.Conv1DTranspose(8, 3, strides=2, padding="same", activation="relu")(y))
    y = L.Conv1D(4, 5, padding="same")(y)
    decoder = keras.Model(code_in, y, name="decoder")
    ae_in = keras.Input((16, 4))
    model = keras.Model(ae_in, decoder(encoder(ae_in)), name="ae")
    model.compile("adam", "mse")
    series = simulate.machine(seconds=10, seed=3)
    raw = D.windows(series, 16, 4)
    norm = D.Normalizer.fit(raw, series.channels)
    model.fit(norm(raw), norm(raw), epochs=3, verbose=0)
    return model, norm


@pytest.mark.slow
@pytest.mark.parametrize("saved_by", ["keras3", "tf_keras"])
def test_export_of_a_keras3_model_or_one_with_dropout(tmp_path, calib, saved_by):
    """TensorFlow 2.16+ saves tf.keras models with Keras 3, which tf-keras could not read ("Error
    when deserializing class 'InputLayer'"); and a Dropout in the decoder failed the device
    model's conversion ("Binding inputs to tf.function failed"), whichever Keras saved it. (Only
    in a process with no global seed set, as a user's is: hence the CLI, not the API.) Keras'
    UpSampling1D made a device model TFLite Micro could not allocate; verify runs it there."""
    import importlib

    from test_cli import edgeae

    keras = importlib.import_module("keras" if saved_by == "keras3" else "tf_keras")
    path = tmp_path / "ae.keras"
    model, norm = _keras3_conv_ae(keras)
    model.save(path)
    (tmp_path / "norm.json").write_text(json.dumps(norm.to_dict()))
    proc = edgeae("export", "--int8", path, "--code-layer", "encoder", "--calibration", calib,
                  "--normalization", tmp_path / "norm.json", "--out", tmp_path / "dist")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = edgeae("verify", tmp_path / "dist")
    assert proc.returncode == 0 and proc.stdout.strip().endswith("PASS"), proc.stdout + proc.stderr


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras3_model_is_rebuilt_in_tf_keras_with_the_same_outputs(tmp_path, suffix):
    import keras

    from edgeae import keras3

    model, _ = _keras3_conv_ae(keras)
    model.save(tmp_path / f"ae{suffix}")
    assert keras3.is_keras3_file(tmp_path / f"ae{suffix}")
    rebuilt = keras3.load(tmp_path / f"ae{suffix}", {})
    assert rebuilt.__class__.__module__.startswith("tf_keras")
    x = np.random.default_rng(2).normal(size=(8, 16, 4)).astype(np.float32)
    np.testing.assert_allclose(rebuilt(x).numpy(), np.asarray(model(x)), rtol=1e-5, atol=1e-6)


def test_keras3_arguments_tf_keras_names_otherwise_or_implies(tmp_path):
    """Keras 3 renamed LeakyReLU's alpha, writes ZeroPadding1D's data_format (tf-keras's is channels
    last), seeds SpatialDropout1D (training only), and GlobalAveragePooling1D's keepdims goes to its
    tf-keras base class: each was refused as an argument tf-keras does not have."""
    import keras

    from edgeae import keras3

    L = keras.layers
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 4))
    h = L.LeakyReLU(negative_slope=0.1)(L.Conv1D(8, 3, padding="same")(inp))
    h = L.SpatialDropout1D(0.1, seed=3)(L.Cropping1D(1)(L.ZeroPadding1D(1)(h)))
    model = keras.Model(inp, L.Dense(4)(L.Flatten()(L.GlobalAveragePooling1D(keepdims=True)(h))))
    model.save(tmp_path / "ae.keras")
    x = np.random.default_rng(2).normal(size=(8, 16, 4)).astype(np.float32)
    rebuilt = keras3.load(tmp_path / "ae.keras", {})
    assert rebuilt.get_layer(model.layers[2].name).alpha == pytest.approx(0.1)
    np.testing.assert_allclose(rebuilt(x).numpy(), np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    first = keras.Model(inp, L.Flatten()(L.ZeroPadding1D(1, data_format="channels_first")(inp)))
    first.save(tmp_path / "first.keras")
    with pytest.raises(EdgeaeError, match="ZeroPadding1D '.*' sets data_format='channels_first', which tf-keras does not have"):
        keras3.load(tmp_path / "first.keras", {})


def test_keras3_hard_swish_and_hard_sigmoid_are_keras3s_own(tmp_path, calib):
    """tf-keras has no hard_silu (what Keras 3 saves for hard_swish), and its hard_sigmoid is
    clip(0.2 x + 0.5, 0, 1), not Keras 3's relu6(x + 3) / 6: such a model was refused, as one
    tf-keras cannot rebuild or as giving other outputs. The rebuilt model also survives export's
    clone of it, and TFLite fuses the hard swish into its int8 HARD_SWISH."""
    import keras

    from edgeae import graph, keras3
    from edgeae.export import export

    keras.utils.set_random_seed(0)
    inp = keras.Input((64,))
    h = keras.layers.Dense(16, activation="hard_swish")(inp)
    code = keras.layers.Dense(4, activation="hard_sigmoid", name="bottleneck")(h)
    model = keras.Model(inp, keras.layers.Dense(64)(keras.layers.Dense(16, activation="hard_silu")(code)))
    model.save(tmp_path / "ae.keras")
    x = np.random.default_rng(2).normal(scale=3, size=(8, 64)).astype(np.float32)
    np.testing.assert_allclose(keras3.load(tmp_path / "ae.keras", {})(x).numpy(), np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    out = export(tmp_path / "ae.keras", tmp_path / "dist", code_layer="bottleneck", calibration=calib)
    assert "HARD_SWISH" in graph.read(out / "encoder_int8.tflite").op_names


def test_keras3_setting_tf_keras_does_not_have_is_one_line(tmp_path, calib):
    import keras

    from test_cli import assert_one_line_error, edgeae

    keras.Sequential([keras.Input((64,)), keras.layers.Dense(4, lora_rank=2, name="bottleneck"), keras.layers.Dense(64)]).save(tmp_path / "ae.keras")
    proc = edgeae("export", "--int8", tmp_path / "ae.keras", "--code-layer", "bottleneck", "--calibration", calib, "--out", tmp_path / "dist")
    assert_one_line_error(proc, "Dense 'bottleneck' sets lora_rank=2, which tf-keras does not have; export it from tf-keras")
    assert not (tmp_path / "dist").exists()


def _recurrent_ae(rnn: str, window: int = 16):
    """The usual Keras LSTM autoencoder: a recurrent encoder, RepeatVector, a recurrent decoder."""
    from edgeae._tf import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((window, len(simulate.CHANNELS)))
    code = keras.layers.Dense(4, name="bottleneck")(getattr(keras.layers, rnn)(8)(inp))
    h = keras.layers.LSTM(8, return_sequences=True)(keras.layers.RepeatVector(window)(code))
    return keras.Model(inp, keras.layers.TimeDistributed(keras.layers.Dense(len(simulate.CHANNELS)))(h))


def test_lstm_autoencoder_exports_and_runs_stateless_on_both_runtimes(tmp_path, calib):
    """An LSTM autoencoder did not convert ("'tf.TensorListReserve' op requires element_shape to be
    static"); with a batch of 1 it did, but TFLite's fused LSTM keeps its state between
    invocations, so each code depended on the windows before it (code SQNR 13 dB instead of 42 in
    a trial), and its decoder's RepeatVector became a TILE, which TFLite Micro has no kernel for."""
    from edgeae import graph
    from edgeae.export import export
    from edgeae.manifest import Export
    from edgeae.runtime import Model, quantize, tflm_run
    from edgeae.verify import verify

    data = np.load(calib)["data"].astype(np.float32)
    windows = np.stack([data[i : i + 16] for i in range(0, len(data) - 16, 4)])
    model = _recurrent_ae("LSTM")
    model.compile("adam", "mse")
    model.fit(windows, windows, epochs=3, verbose=0)
    model.save(tmp_path / "lstm.keras")
    out = export(tmp_path / "lstm.keras", tmp_path / "dist", code_layer="bottleneck", calibration=calib, target="mcu")
    rep = verify(out)
    assert rep.passed and rep.code_sqnr_db > 30, rep.table()

    ex = Export.open(out)
    enc = Model(ex.encoder_int8)
    assert enc.stateful and not enc.batchable
    a, b = (quantize(w, *enc.input_quant) for w in windows[[3, 40]])
    for codes in (enc.run_raw(np.stack([a, b, a])), tflm_run(ex.encoder_int8, np.stack([a, b, a]))[0]):
        assert np.array_equal(codes[0], codes[2]) and not np.array_equal(codes[0], codes[1])
    lstm = graph.read(ex.encoder_int8).ops[0]
    assert lstm.name == "UNIDIRECTIONAL_SEQUENCE_LSTM" and lstm.parameters == 4 * 8 * (4 + 8 + 1) and lstm.macs == 16 * 4 * 8 * (4 + 8)
    assert "BROADCAST_TO" in graph.read(ex.device).op_names and "TILE" not in graph.read(ex.device).op_names
    resolver = next(out.glob("*_device_op_resolver.h")).read_text()
    assert "AddUnidirectionalSequenceLSTM" in resolver and "AddBroadcastTo" in resolver
    assert "interpreter.Reset()" in (out / "README.md").read_text()


def test_other_recurrent_layers_are_refused_for_int8(tmp_path, calib):
    """A GRU or SimpleRNN converts to a WHILE loop, on which the int8 quantizer crashed the
    process (a segmentation fault) once the batch was fixed; it is refused, naming the layer."""
    from edgeae.export import export

    _recurrent_ae("GRU").save(tmp_path / "gru.keras")
    with pytest.raises(EdgeaeError, match=r"layer 'gru\w*' \(GRU\) cannot be quantized to int8: .* only for LSTM"):
        export(tmp_path / "gru.keras", tmp_path / "dist", code_layer="bottleneck", calibration=calib)
    assert not (tmp_path / "dist").exists()


def test_repeat_vector_becomes_broadcast_only_where_the_batch_is_fixed(tmp_path):
    """A TILE that repeats size-1 dimensions is the BROADCAST_TO TFLite Micro has (it has no
    TILE); with a free batch it stays a TILE, which batches on the host. TFLite Micro's refusal
    of an op names it (its last log line said only "TFLM failed to allocate tensors")."""
    from edgeae import graph
    from edgeae._tf import keras
    from edgeae.quantize import to_tflite
    from edgeae.runtime import Model, tflm_run

    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Conv1D(2, 3, padding="same")(keras.layers.RepeatVector(8)(inp)))
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    for static, op in ((False, "TILE"), (True, "BROADCAST_TO")):
        tfl = to_tflite(model, static_batch=static)
        assert op in graph.read(tfl).op_names
        np.testing.assert_allclose(Model(tfl)(x), model(x).numpy(), atol=1e-5)
        (tmp_path / "m.tflite").write_bytes(tfl)
        if static:
            np.testing.assert_allclose(tflm_run(tmp_path / "m.tflite", x[:1])[0], model(x[:1]).numpy(), atol=1e-5)
        else:
            with pytest.raises(EdgeaeError, match=r"m.tflite: TFLite Micro failed: no kernel for TILE$"):
                tflm_run(tmp_path / "m.tflite", x[:1])


def test_keras3_lstm_autoencoder_is_rebuilt_in_tf_keras(tmp_path):
    """Keras 3 writes zero_output_for_mask=False into each LSTM's config, an argument tf-keras's
    recurrent layers take through **kwargs: the rebuild refused it as one tf-keras does not have."""
    import keras

    from edgeae import keras3

    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 3))
    code = keras.layers.Dense(4, name="bottleneck")(keras.layers.LSTM(8)(inp))
    out = keras.layers.TimeDistributed(keras.layers.Dense(3))(keras.layers.LSTM(8, return_sequences=True)(keras.layers.RepeatVector(12)(code)))
    model = keras.Model(inp, out)
    path = tmp_path / "lstm.keras"
    model.save(path)
    rebuilt = keras3.load(path, {})
    x = np.random.default_rng(2).normal(size=(8, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(rebuilt(x).numpy(), np.asarray(model(x)), rtol=1e-5, atol=1e-6)


def test_bidirectional_lstm_reads_its_hidden_state_at_the_scale_it_was_written(tmp_path, calib):
    """A Bidirectional's CONCATENATION gave both LSTMs' outputs its own scale while each LSTM wrote
    its hidden state at another, so the int8 code read h at the wrong scale: SQNR 11 dB on both
    runtimes for this untrained encoder, 14 dB for a trained one (quantize._lstm_hidden_as_output)."""
    from edgeae._tf import keras
    from edgeae.quantize import to_tflite
    from edgeae.metrics import sqnr_db
    from edgeae.runtime import Model, dequantize, quantize, steps_apart, tflm_run

    data = np.load(calib)["data"].astype(np.float32)
    windows = np.stack([data[i : i + 32] for i in range(0, len(data) - 32, 4)])
    keras.utils.set_random_seed(0)
    inp = keras.Input(windows.shape[1:])
    encoder = keras.Model(inp, keras.layers.Dense(4)(keras.layers.Bidirectional(keras.layers.LSTM(8))(inp)))
    (tmp_path / "enc.tflite").write_bytes(to_tflite(encoder, windows[:128]))
    enc = Model(tmp_path / "enc.tflite")
    raw = quantize(windows, *enc.input_quant)
    litert, tflm = enc.run_raw(raw), tflm_run(tmp_path / "enc.tflite", raw)[0]
    assert steps_apart(litert, tflm).max() <= 1
    expected = encoder.predict(windows, verbose=0)
    for codes in (litert, tflm):
        assert sqnr_db(expected, dequantize(codes, *enc.output_quant)) > 30


@pytest.mark.parametrize("block", ["layer_norm", "dilated_causal"])
def test_batch_bound_encoder_runs_in_tflite_micro_at_batch_1(tmp_path, block):
    """Two encoders whose int8 graph with a free batch TFLite Micro could not run right
    (quantize.BATCH_BOUND): tf-keras' LayerNormalization held a REDUCE_PROD, which it has no
    kernel for, so `verify` failed and `--target mcu` refused the export; a dilated causal Conv1D
    became SPACE_TO_BATCH_ND, which it ran at the stored batch of 1, and its codes came out wrong
    (98 % of values off LiteRT's). Converted with a batch of 1, both graphs lose those ops."""
    from edgeae import graph, targets
    from edgeae._tf import keras
    from edgeae.quantize import to_tflite
    from edgeae.runtime import Model, quantize, steps_apart, tflm_run

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 32, 4)).astype(np.float32)
    inp = keras.Input(x.shape[1:])
    if block == "layer_norm":
        h = keras.layers.LayerNormalization()(keras.layers.Conv1D(8, 3, padding="same")(inp))
    else:
        h = keras.layers.Conv1D(8, 3, dilation_rate=4, padding="causal")(keras.layers.Conv1D(8, 3, padding="causal")(inp))
    encoder = keras.Model(inp, keras.layers.Dense(4)(keras.layers.Flatten()(h)))
    tfl = to_tflite(encoder, x)
    ops = set(graph.read(tfl).op_names)
    assert not ops & {"SHAPE", "REDUCE_PROD", "SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"}
    assert len(targets.resolver_methods(graph.read(tfl))) == len(ops)
    (tmp_path / "enc.tflite").write_bytes(tfl)
    enc = Model(tmp_path / "enc.tflite")
    raw = quantize(x[:8], *enc.input_quant)
    assert not enc.batchable
    assert steps_apart(enc.run_raw(raw), tflm_run(tmp_path / "enc.tflite", raw)[0]).max() <= 1  # one rounding


def test_device_code_equals_the_encoders_where_the_converter_fuses_a_residual_add(tmp_path):
    """A residual block before the code: the encoder, converted with a free batch, and the device
    model, at batch 1, were optimized differently around its ADD, so the packets' codes came out up
    to 12 steps from the encoder's and `verify` failed the export. The encoder is then converted at
    batch 1 as well."""
    from edgeae._tf import keras
    from edgeae.export import export
    from edgeae.runtime import Model
    from edgeae.verify import verify

    x = simulate.machine(seconds=30, seed=3).values.astype(np.float32)
    x = (x - x.mean(0)) / x.std(0)
    np.savez(tmp_path / "calib.npz", data=x, channels=np.array(simulate.CHANNELS))
    windows = np.stack([x[i : i + 32] for i in range(0, len(x) - 32, 8)])
    keras.utils.set_random_seed(0)
    inp = keras.Input(windows.shape[1:])
    h = keras.layers.Conv1D(8, 3, padding="same", activation="relu")(inp)
    h = keras.layers.Activation("relu")(keras.layers.Add()([h, keras.layers.Conv1D(8, 3, padding="same")(h)]))
    code = keras.layers.Dense(4, activation="sigmoid", name="code")(keras.layers.Flatten()(keras.layers.AveragePooling1D(4)(h)))
    h = keras.layers.UpSampling1D(4)(keras.layers.Reshape((8, 4))(keras.layers.Dense(32, activation="relu")(code)))
    model = keras.Model(inp, keras.layers.Conv1D(4, 3, padding="same")(h))
    model.compile("adam", "mse")
    model.fit(windows, windows, epochs=5, verbose=0)
    model.save(tmp_path / "res.keras")
    out = export(tmp_path / "res.keras", tmp_path / "dist", code_layer="code", calibration=tmp_path / "calib.npz")
    rep = verify(out)
    assert rep.device_code_max_diff <= 1 and rep.passed, rep.table()
    assert not Model(out / "encoder_int8.tflite").batchable


def test_op_resolver_knows_ops_tflite_micro_registers(tmp_path):
    """`--target mcu` refused a global max pooling (REDUCE_MAX) and attention (BATCH_MATMUL):
    edgeae's resolver table listed 38 of the builtin ops TFLite Micro registers. It now lists them
    all, and TFLite Micro runs such an encoder."""
    from edgeae import graph, targets
    from edgeae._tf import keras
    from edgeae.quantize import to_tflite
    from edgeae.runtime import Model, quantize, steps_apart, tflm_run

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 16, 4)).astype(np.float32)
    inp = keras.Input(x.shape[1:])
    h = keras.layers.Dense(8)(inp)
    h = keras.layers.Add()([h, keras.layers.MultiHeadAttention(2, 4)(h, h)])
    encoder = keras.Model(inp, keras.layers.Dense(4)(keras.layers.GlobalMaxPooling1D()(h)))
    (tmp_path / "enc.tflite").write_bytes(to_tflite(encoder, x))
    g = graph.read((tmp_path / "enc.tflite").read_bytes())
    methods = targets.resolver_methods(g)
    assert {"AddReduceMax", "AddBatchMatMul"} <= set(methods) and len(methods) == len(g.op_names)
    enc = Model(tmp_path / "enc.tflite")
    raw = quantize(x[:4], *enc.input_quant)
    assert steps_apart(enc.run_raw(raw), tflm_run(tmp_path / "enc.tflite", raw)[0]).max() <= 2


def test_a_model_keras_will_not_load_is_named_by_keras_whole_first_sentence(tmp_path, calib):
    """The cause was cut at 120 characters ("...a potential risk of arbit"), and Keras 3 put the
    class it could not find after a paragraph about `from_config`."""
    import keras

    from edgeae._tf import keras as tf_keras
    from test_cli import assert_one_line_error, edgeae

    inp = tf_keras.Input((64,))
    code = tf_keras.layers.Dense(4, name="bottleneck")(tf_keras.layers.Lambda(lambda t: t * 2.0)(inp))
    tf_keras.Model(inp, tf_keras.layers.Dense(64)(code)).save(tmp_path / "lambda.keras")

    @keras.saving.register_keras_serializable(package="test")
    class Twice(keras.layers.Layer):
        def call(self, x):
            return x * 2

    inp = keras.Input((64,))
    code = keras.layers.Dense(4, name="bottleneck")(Twice()(inp))
    keras.Model(inp, keras.layers.Dense(64)(code)).save(tmp_path / "custom.keras")
    for name, cause in [("lambda", "(ValueError: Requested the deserialization of a Lambda layer with a Python `lambda` inside it.)"),
                        ("custom", "(TypeError: Could not locate class 'Twice'.)")]:  # fmt: skip
        proc = edgeae("export", "--int8", tmp_path / f"{name}.keras", "--code-layer", "bottleneck", "--calibration", calib, "--out", tmp_path / "dist")
        assert_one_line_error(proc, cause)
        assert proc.stderr.strip().endswith(cause)
    assert not (tmp_path / "dist").exists()


def _softplus_ae(bounded: bool):
    """A dense autoencoder whose decoder has a softplus, which TFLite makes EXP, ADD and LOG; on
    a tanh (`bounded`) its input stays within (-1, 1), else it grows with the model's input."""
    from edgeae._tf import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((64,))
    code = keras.layers.Dense(4, name="bottleneck")(keras.layers.Dense(16, activation="relu")(inp))
    h = keras.layers.Dense(16, activation="tanh")(code) if bounded else code
    return keras.Model(inp, keras.layers.Dense(64)(keras.layers.Dense(16, activation="softplus")(h)))


def test_calibration_that_overflows_a_tflite_tensor_is_named_not_a_crash(tmp_path, calib):
    """On unscaled windows (up to 45 here) the softplus' EXP overflows to inf in TFLite's float
    calibration, and TFLite's quantizer died of a segmentation fault: no message, exit -11."""
    from test_cli import assert_one_line_error, edgeae

    _softplus_ae(bounded=False).save(tmp_path / "ae.keras")
    out = tmp_path / "dist"
    proc = edgeae("export", "--int8", tmp_path / "ae.keras", "--code-layer", "bottleneck", "--calibration", calib, "--out", out)
    assert_one_line_error(proc, "the calibration windows drive the decoder's tensor '")
    assert "Softplus" in proc.stderr and "to inf or NaN in TFLite" in proc.stderr and "are they scaled as the model was trained?" in proc.stderr
    assert not out.exists()


def test_mcu_export_names_the_op_whose_tflite_micro_kernel_refuses_it(tmp_path, calib):
    """A softplus decoder becomes int8 EXP and LOG, whose TFLite Micro kernels take float only.
    The error said "TFLM failed to allocate tensors" about a file in export's temporary folder."""
    from test_cli import assert_one_line_error, edgeae

    _softplus_ae(bounded=True).save(tmp_path / "ae.keras")
    out = tmp_path / "dist"
    proc = edgeae("export", "--int8", tmp_path / "ae.keras", "--code-layer", "bottleneck", "--calibration", calib, "--out", out, "--target", "mcu")
    assert_one_line_error(proc, f"{out / 'device_int8.tflite'}: TFLite Micro cannot run this model (its EXP kernel refused op ")
    assert "INT8 != FLOAT32" in proc.stderr and ".tmp" not in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".dist.*"))


def test_elu_is_int8_in_the_int8_graph(tmp_path, monkeypatch):
    """TFLite's quantizer left each ELU in float between a DEQUANTIZE and a QUANTIZE; LiteRT and
    TFLite Micro have int8 ELU kernels (quantize._elu_in_int8), which give the float ELU's codes."""
    from edgeae import graph, quantize as Q
    from edgeae._tf import keras
    from edgeae.metrics import sqnr_db
    from edgeae.runtime import Model, dequantize, quantize, steps_apart, tflm_run

    x = np.random.default_rng(0).normal(size=(128, 16, 4)).astype(np.float32)
    keras.utils.set_random_seed(0)
    inp = keras.Input(x.shape[1:])
    h = keras.layers.Dense(16, activation="elu")(keras.layers.Flatten()(inp))
    encoder = keras.Model(inp, keras.layers.Dense(4)(keras.layers.ELU(alpha=1.0)(keras.layers.Dense(8)(h))))
    (tmp_path / "enc.tflite").write_bytes(Q.to_tflite(encoder, x))
    g = graph.read(tmp_path / "enc.tflite")
    assert [op.name for op in g.ops].count("ELU") == 2 and g.float_ops == [] and "DEQUANTIZE" not in g.op_names
    enc = Model(tmp_path / "enc.tflite")
    raw = quantize(x, *enc.input_quant)
    codes = enc.run_raw(raw)
    assert steps_apart(codes, tflm_run(tmp_path / "enc.tflite", raw)[0]).max() <= 2  # as with float ELUs
    assert sqnr_db(encoder.predict(x, verbose=0), dequantize(codes, *enc.output_quant)) > 30
    monkeypatch.setattr(Q, "_elu_in_int8", lambda m: False)
    float_elu = Q.to_tflite(encoder, x)
    assert graph.read(float_elu).float_ops == ["ELU"]
    assert steps_apart(codes, Model(float_elu).run_raw(raw)).max() <= 1


def test_ops_left_in_float_are_named_by_export_and_inspect(tmp_path, calib):
    """TFLite's quantizer leaves some ops in float32 between a DEQUANTIZE and a QUANTIZE (SIN here,
    from a Lambda that an .h5 file keeps); the "int8" encoder then needs float on the device."""
    from edgeae._tf import keras
    from test_cli import edgeae

    keras.utils.set_random_seed(0)
    inp = keras.Input((64,))
    sin = keras.layers.Lambda(lambda t: __import__("tensorflow").math.sin(t))  # no closure: .h5 marshals the code alone
    code = keras.layers.Dense(4, name="bottleneck")(sin(keras.layers.Dense(8)(inp)))
    keras.Model(inp, keras.layers.Dense(64)(code)).save(tmp_path / "ae.h5")
    out = tmp_path / "dist"
    proc = edgeae("export", "--int8", tmp_path / "ae.h5", "--code-layer", "bottleneck", "--calibration", calib, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "note: SIN runs in float32 in the int8 encoder and device model" in proc.stdout
    assert json.loads((out / "manifest.json").read_text())["quantization"]["float_ops"] == {"encoder": ["SIN"], "device": ["SIN"]}
    assert "in float32: SIN (the rest integer)" in edgeae("inspect", out).stdout

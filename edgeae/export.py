"""`edgeae export --int8`: a run directory (or a user's own Keras autoencoder) -> an export.

The encoder becomes a full-int8 .tflite for the device, calibrated on training windows (or a
set from `calibration/`); the decoder a float32 .tflite for the host (int8 on request,
calibrated on the encoder's codes). The float encoder's outputs on the reference windows are
recorded so `verify` can measure what quantization changed. The directory is written
atomically, and exporting the same run twice gives byte-identical files.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from . import data as D
from . import graph as G
from . import manifest as M
from .errors import EdgeaeError, cause, existing_file
from .fsutil import atomic_dir, check_replaceable, parse_json, write_json
from .recipe import Recipe, from_dict
from .wire import MAX_CODE

REFERENCE_WINDOWS = 256


def export(
    source: str | Path,
    out: str | Path,
    decoder_int8: bool = False,
    calibration: str | Path | None = None,
    code_layer: str | None = None,
    normalization: str | Path | None = None,
    target: str | None = None,
    io_type: str = "int8",
) -> Path:
    """Export a run directory, or a Keras autoencoder file split at `code_layer`.

    `target`: None (the .tflite files and manifest), "mcu" (+ TFLite Micro C sources with the
    measured arena) or "edgetpu" (per-tensor weights + an Edge TPU compatibility report).
    `io_type`: the int8 encoder's input / output type, "int8" or "uint8".
    """
    if target not in (None, "mcu", "edgetpu"):
        raise EdgeaeError(f"unknown target {target!r}; choose mcu or edgetpu")
    if io_type not in ("int8", "uint8"):
        raise EdgeaeError(f"--io-type must be int8 or uint8, got {io_type!r}")
    check_replaceable(out, M.MANIFEST)
    source = Path(source)
    if source.is_dir():
        if code_layer is not None:
            raise EdgeaeError("--code-layer is for a Keras model file, not a run directory")
        parts = _from_run(source, calibration)
    elif source.suffix in (".keras", ".h5"):
        existing_file(source, "model file")
        if code_layer is None or calibration is None:
            raise EdgeaeError(f"{source}: exporting your own model needs --code-layer and --calibration")
        parts = _from_keras_file(source, code_layer, calibration, normalization)
    else:
        raise EdgeaeError(f"{source}: not a run directory or a .keras / .h5 model")
    return _write(out, decoder_int8=decoder_int8, target=target, io_type=io_type, **parts)


def _from_run(run: Path, calibration) -> dict:
    from ._tf import keras

    encoder_file = next((run / n for n in ("encoder.keras", "encoder.h5") if (run / n).is_file()), run / "encoder.keras")
    needed = [encoder_file.name, "decoder.keras", M.RUN_MARKER, "normalization.json", "data.json", "calibration.npy"]
    missing = [n for n in needed if not (run / n).is_file()]
    if missing and (run / M.MANIFEST).is_file():  # an export given where its run goes
        raise EdgeaeError(f"{run}: an export, not a training run: export takes the run it came from, or your own .keras model")
    if missing:
        raise EdgeaeError(f"{run}: not a complete edgeae run (missing {', '.join(missing)})")
    try:
        recipe = from_dict(parse_json((run / M.RUN_MARKER).read_text()))
        norm = D.Normalizer.from_dict(parse_json((run / "normalization.json").read_text()))
        info = parse_json((run / "data.json").read_text())
        pruning = parse_json((run / "pruning.json").read_text()) if (run / "pruning.json").is_file() else None
    except (ValueError, KeyError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise EdgeaeError(f"{run}: a damaged or hand-edited run file ({e.__class__.__name__}: {e})") from None
    from .qat import load_scope

    try:
        with load_scope():  # a QAT encoder holds TFMOT quantize wrappers
            encoder = keras.models.load_model(encoder_file, compile=False)
        decoder = keras.models.load_model(run / "decoder.keras", compile=False)
    except Exception as e:
        raise EdgeaeError(f"{run}: cannot load the Keras models ({cause(e)})") from None
    calibration = calibration or recipe.export.calibration
    if calibration is not None:
        rep = _calibration_windows(calibration, norm, recipe.data.window, recipe.data.hop, encoder.input_shape[1:],
                                   recipe.export.calibration_windows, recipe.train.seed, info.get("row_period_s"))  # fmt: skip
    else:
        rep = np.load(run / "calibration.npy")
    rep = with_margin(rep, recipe.export.input_margin)
    reference = np.load(run / "validation.npy")
    return dict(
        name=recipe.name, encoder=encoder, decoder=decoder, normalizer=norm, window=recipe.data.window, hop=recipe.data.hop,
        representative=rep, reference=reference, recipe=recipe, fingerprint=info["fingerprint"], pruning=pruning,
        row_period=info.get("row_period_s"),
    )  # fmt: skip


def _device_model(encoder, decoder, window: int, channels: int, power: int, near: float):
    """window -> (code, residual): the encoder plus the decoder and the window's mean squared
    reconstruction error, so the device can send its own anomaly evidence in one byte. With a
    residual power above 1 the residual is each channel's mean squared error (channels values); the
    firmware takes their power mean into the byte (an int8 graph cannot: the powers overflow its range).

    Each error e is squared in two parts that add up to e^2, so int8 holds both: e clipped to
    +-`near` (the largest error of the normal reference windows), squared, and what lies beyond,
    (|e| - near)(|e| + near), zero on normal windows. One int8 tensor of the squares took its range
    from the calibration's largest error (its x3 margin copies): a step larger than a normal
    window's mean squared error, and a residual byte 13-16 % below the float error on briefly
    trained models (the demo's: 3 %)."""
    from ._tf import keras, tf

    inp = keras.Input(encoder.input_shape[1:], name="window")
    code = encoder(inp)
    # A linear code layer: the decoder reads the code through a MAXIMUM that changes nothing. Else the
    # converter folds the code's bias into the decoder and adds it to the code output by a separate
    # ADD, whose extra rounding put the packet's code up to 2 steps from the encoder's (SKAB valve1/0;
    # with it: identical). Not after a sigmoid code: there it would move the code's fixed quantization.
    last = next((layer.get_config()["activation"] for layer in reversed(encoder.layers) if "activation" in layer.get_config()), None)
    seen_code = keras.layers.Lambda(lambda t: tf.maximum(t, -1e30), name="code_barrier")(code) if last == "linear" else code
    recon = keras.layers.Reshape((-1,), name="flat_reconstruction")(decoder(seen_code))
    # Compare with the input as the encoder sees it: a QAT encoder's QuantizeLayer must stay the
    # raw input's only consumer, or the converter calibrates the input differently from the encoder.
    first = encoder.layers[1]
    seen = first(inp) if first.__class__.__name__ == "QuantizeLayer" else inp
    flat = keras.layers.Reshape((-1,), name="flat_window")(seen)

    def mean(t):
        if power == 1:
            return tf.reduce_mean(t, axis=-1, keepdims=True)
        return tf.reduce_mean(tf.reshape(t, (-1, window, channels)), axis=1)

    def per_window(t):
        # The difference is written in each part, not shared: each SUB then gets its own int8 range (the
        # clipped one only +-near), where one shared difference would take the widest and coarsen the
        # step of normal windows' errors.
        within = tf.clip_by_value(t[0] - t[1], -near, near)
        beyond = tf.nn.relu(t[0] - t[1] - near) + tf.nn.relu(t[1] - t[0] - near)
        return mean(within * within) + mean(beyond * (beyond + 2 * near))

    residual = keras.layers.Lambda(per_window, name="residual")([recon, flat])
    return keras.Model(inp, [code, residual], name="device")


def _refuse_non_finite(part: str, tensor: str | None, representative: np.ndarray) -> None:
    """The error for calibration windows that drive `part`'s `tensor` to inf or NaN (None: none do)."""
    if tensor is not None:
        raise EdgeaeError(f"the calibration windows drive the {part}'s tensor '{tensor}' to inf or NaN in TFLite, "
                          f"which int8 cannot quantize (the windows span {representative.min():.4g} to "
                          f"{representative.max():.4g}: are they scaled as the model was trained?)")  # fmt: skip


def with_margin(representative: np.ndarray, margin: float) -> np.ndarray:
    """The representative set plus copies scaled by `margin` (see recipe.Export.input_margin)."""
    return representative if margin == 1.0 else np.concatenate([representative, representative * margin])


def _calibration_windows(paths, norm: D.Normalizer, window: int, hop: int, input_shape, limit: int, seed: int, row_period):
    """Normalized windows from calibration files (a file, a folder of them, or a list of those);
    their channels must be the model's, their rows at the training data's rate (`row_period`,
    when known)."""
    w = _normal_windows(paths, D.read_recordings(paths, norm.channels, row_period), norm, window, hop)
    w = w[np.sort(np.random.default_rng(seed).permutation(len(w))[:limit])]
    return D.to_input(w, input_shape)


def _normal_windows(paths, parts: list[D.Series], norm: D.Normalizer, window: int, hop: int) -> np.ndarray:
    """The normalized windows of calibration files whose rows are all labelled normal (all of them
    in a file without labels; no window spans two files): the int8 ranges are set on normal
    operation, as the model was trained. A labelled fault among them widened the simulated
    machine's input range fourfold and cost the residual byte its resolution (100 % off the float
    error; verify failed)."""
    w = np.concatenate([norm.windows(s, window, hop)[D.normal_windows_mask(s, window, hop)] for s in parts])
    if not len(w):
        raise EdgeaeError(f"{D.names(paths)}: no window of {window} rows labelled normal to calibrate with")
    return w


def _from_keras_file(path: Path, code_layer: str, calibration, normalization) -> dict:
    from . import keras3, zoo
    from ._tf import keras

    custom = {c.__name__: c for c in (zoo.DenseTied, zoo.Conv1DTransposeTied, zoo.RandomMask, zoo.CodePenalty)}
    if keras3.is_keras3_file(path):
        model = keras3.load(path, custom)
    else:
        with warnings.catch_warnings(record=True) as said:  # said again if it loads; a refusal's error says it all
            warnings.simplefilter("always")
            try:
                model = keras.models.load_model(path, compile=False, custom_objects=custom)
            except Exception as e:
                raise EdgeaeError(f"{path}: cannot load as a tf-keras model ({cause(e)})") from None
        for w in said:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    encoder, decoder = split(_for_inference(model), code_layer)
    parts = D.in_first_channels(D.read_files(calibration))  # the first file's channels and rate are the export's
    series = parts[0]
    for s in parts[1:]:
        D.check_row_period(s.row_period(), series.row_period(), s.source)
    shape = encoder.input_shape[1:]
    if None in shape:
        raise EdgeaeError(f"{path}: input shape {shape} has a free size; the device needs a fixed window "
                          "(rebuild the model on keras.Input with every size given)")  # fmt: skip
    code_size = int(np.prod(encoder.output_shape[1:]))
    if code_size > MAX_CODE:
        raise EdgeaeError(f"{path}: a code of {code_size} values at '{code_layer}'; a packet carries at most {MAX_CODE}")
    n_in = int(np.prod(shape))
    if len(shape) > 1 and shape[-1] != len(series.channels):
        raise EdgeaeError(f"{series.source}: {len(series.channels)} channels, the model's input {shape} takes {shape[-1]}")
    if n_in % len(series.channels):
        raise EdgeaeError(f"{series.source}: {len(series.channels)} channels do not divide the model's {n_in} inputs")
    window = n_in // len(series.channels)
    if normalization is not None:
        try:
            norm = D.Normalizer.from_dict(parse_json(existing_file(normalization, "normalization file").read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise EdgeaeError(f"{normalization}: not a normalization file ({e.__class__.__name__}: {e})") from None
        norm.check_channels(series.channels, series.source)
    else:
        norm = D.Normalizer.identity(series.channels)
    hop = max(1, window // 4)
    rep = D.to_input(_normal_windows(calibration, parts, norm, window, hop), shape)
    sample = np.random.default_rng(0).permutation(len(rep))
    margin = Recipe().export.input_margin
    return dict(
        name=path.stem, encoder=encoder, decoder=decoder, normalizer=norm, window=window, hop=hop,
        representative=with_margin(rep[np.sort(sample[:256])], margin), reference=rep[np.sort(sample[:REFERENCE_WINDOWS])],
        recipe=None, fingerprint=D.fingerprint(parts), pruning=None, row_period=series.row_period(),
    )  # fmt: skip


def _for_inference(model):
    """`model` as the device should run it. Its training-only layers (dropout, noise, activity
    penalties), the identity at inference, become the identity: converting a model holding a
    Dropout left that layer broken for the next conversion, and the decoder is converted alone and
    again inside the device model, so the export of a Keras-tutorial autoencoder failed. Its
    UpSampling1D layers become the zoo's reshape / concatenate form, which TFLite Micro runs."""
    from . import zoo
    from ._tf import keras

    training_only = (keras.layers.Dropout, keras.layers.GaussianNoise, keras.layers.GaussianDropout, keras.layers.AlphaDropout,
                     keras.layers.ActivityRegularization, zoo.RandomMask, zoo.CodePenalty)  # fmt: skip

    def upsampling(layer) -> bool:
        return isinstance(layer, keras.layers.UpSampling1D) and layer.size <= 10

    def clone(layer):
        if isinstance(layer, training_only):
            return keras.layers.Activation("linear", name=layer.name)
        if upsampling(layer):
            return zoo.RepeatSteps(layer.size, name=layer.name)
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=clone)
        return layer.__class__.from_config(layer.get_config())

    if not any(isinstance(layer, training_only) or upsampling(layer) for layer in model.submodules):
        return model
    plain = keras.models.clone_model(model, clone_function=clone)
    plain.set_weights(model.get_weights())
    return plain


def split(model, code_layer: str):
    """Split an autoencoder at its bottleneck layer into (encoder, decoder) Keras models.

    The decoder replays every layer downstream of `code_layer` on a new input; a layer that
    also reads from upstream of the code (a skip connection) makes the split impossible.
    """
    from ._tf import keras, tf

    names = [l.name for l in model.layers]
    if code_layer not in names:
        raise EdgeaeError(f"no layer named '{code_layer}' in the model (layers: {', '.join(names)})")
    if model.inputs is None:
        raise EdgeaeError("the model has no input shape yet (a Sequential never built or fitted): "
                          "start it with keras.Input, or build it, and save it again")  # fmt: skip
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise EdgeaeError("only autoencoders with one input and one output can be split")
    bottleneck = model.get_layer(code_layer)
    if len(bottleneck._inbound_nodes) != 1:
        raise EdgeaeError(f"layer '{code_layer}' is used more than once; cannot split there")
    # the code as this model's graph sees it (a nested model's own `.output` is its inner tensor)
    code = tf.nest.flatten(bottleneck._inbound_nodes[0].output_tensors)
    if len(code) != 1:
        raise EdgeaeError(f"layer '{code_layer}' has {len(code)} outputs; the code must be one tensor")
    for end, tensor in (("input", model.inputs[0]), ("output", model.outputs[0])):
        if code[0] is tensor:
            raise EdgeaeError(f"cannot split at '{code_layer}': it is the model's {end}; give the bottleneck layer")
    encoder = keras.Model(model.inputs[0], code[0], name="encoder")

    code_in = keras.Input(code[0].shape[1:], name="code_in")
    produced = {id(code[0]): code_in}
    for layer in model.layers[names.index(code_layer) + 1 :]:
        for node in list(layer._inbound_nodes):  # calling the layer below adds nodes
            inputs = tf.nest.flatten(node.input_tensors)
            known = [id(t) in produced for t in inputs]
            if not any(known):
                continue  # a layer of the encoder side
            if not all(known):
                raise EdgeaeError(
                    f"cannot split at '{code_layer}': layer '{layer.name}' also reads from upstream of the code "
                    "(a skip connection)"
                )
            args = [produced[id(t)] for t in inputs]
            produced[id(tf.nest.flatten(node.output_tensors)[0])] = layer(args if len(args) > 1 else args[0])
    final = model.outputs[0]
    if id(final) not in produced:
        raise EdgeaeError(f"cannot split at '{code_layer}': the model's output does not depend on it")
    return encoder, keras.Model(code_in, produced[id(final)], name="decoder")


def _write(out, *, name, encoder, decoder, normalizer, window, hop, representative, reference, recipe: Recipe | None,
           fingerprint, pruning, row_period, decoder_int8, target, io_type) -> Path:  # fmt: skip
    from . import targets
    from .metrics import power_mean, reconstruction_error
    from .quantize import to_tflite
    from .runtime import Model, dequantize, device_matches, quantize, steps_apart

    if len(representative) == 0:
        raise EdgeaeError("no calibration windows to quantize with")
    edgetpu = target == "edgetpu"
    power = recipe.export.residual_power if recipe is not None else 1
    channels = normalizer.channels
    ref_codes = encoder.predict(reference, verbose=0, batch_size=256)
    recon = decoder.predict(ref_codes, verbose=0, batch_size=256)
    ref_errors = reconstruction_error(reference.reshape(len(reference), window, len(channels)), recon, power)
    near = max(float(np.abs(recon.reshape(len(reference), -1) - reference.reshape(len(reference), -1)).max()), 1e-6)
    device = _device_model(encoder, decoder, window, len(channels), power, near)
    enc_f32 = to_tflite(encoder)
    codes_rep = encoder.predict(representative, verbose=0, batch_size=256)
    dec_f32 = to_tflite(decoder)
    for part, f32, x in (("encoder", enc_f32, representative), ("decoder", dec_f32, codes_rep)):
        # TFLite's quantizer calibrates on these float graphs, and crashes the process (a segmentation
        # fault) on a range that is inf or NaN: a softplus becomes EXP, which overflows on inputs over 88.
        _refuse_non_finite(part, Model(f32, keep_tensors=True).non_finite_tensor(x), representative)
    # The device model adds to them its residual, whose squared errors overflow float32 (3.4e38) on
    # windows beyond 1.8e19: Keras computes it as TFLite would, without a float conversion (2 s).
    if not np.isfinite(device.predict(representative, verbose=0, batch_size=256)[1]).all():
        _refuse_non_finite("device model", "residual", representative)
    enc_int8 = to_tflite(encoder, representative, io_type=io_type, per_tensor=edgetpu, static_batch=edgetpu)
    dec_name = "decoder_int8.tflite" if decoder_int8 else "decoder_float32.tflite"
    dec = to_tflite(decoder, codes_rep) if decoder_int8 else dec_f32

    # A fixed batch of 1: with a dynamic batch the flattening reshapes become SHAPE / STRIDED_SLICE /
    # PACK ops on a dynamic shape, which TFLite Micro cannot allocate; the device runs one window anyway.
    dev_int8 = to_tflite(device, representative, io_type=io_type, per_tensor=edgetpu, static_batch=True)

    enc_rt, dev_rt = Model(enc_int8), Model(dev_int8)
    code_size = int(np.prod(enc_rt.output_shape))
    code_out, residual_out = dev_rt.output_index(code_size, 1 if power == 1 else len(channels), enc_rt.output_quant)
    x = quantize(representative, *dev_rt.input_quant, dtype=dev_rt.input["dtype"])
    device_outs = dev_rt.run_outputs_raw(x)
    if enc_rt.batchable and steps_apart(enc_rt.run_raw(x), device_outs[code_out]).max() > 1:
        # The converter optimized the encoder with a free batch otherwise than the device model at batch 1
        # (a residual Add fused into the convolution before it in one, not the other), and packets would
        # carry codes up to 12 steps from the encoder's. At batch 1 it converts the encoder alike.
        enc_rt = Model(enc_int8 := to_tflite(encoder, representative, io_type=io_type, per_tensor=edgetpu, static_batch=True))
    if not device_matches(dev_rt, code_out, enc_rt):
        raise EdgeaeError("the device model's input / code quantization differs from the encoder's; cannot export")
    in_scale, in_zp = enc_rt.input_quant
    code_scale, code_zp = enc_rt.output_quant
    residual_quant = dev_rt.output_quant_of(residual_out)
    device_entry = {
        "file": M.DEVICE_INT8,
        "outputs": {"code": code_out, "residual": residual_out},
        "residual": dict(zip(("scale", "zero_point"), residual_quant), dtype=io_type),
        "residual_byte": "uint8 byte = the residual output as uint8 (an int8 output + 128)",
    }
    if power > 1:
        per_channel = dequantize(device_outs[residual_out].reshape(len(x), -1), *residual_quant)
        device_entry.update(residual_power=power, residual_byte_scale=max(float(power_mean(per_channel, power).max()), 1e-12) / 255,
                            residual_byte=f"uint8 byte = the power mean (power {power}) of the dequantized per-channel residual "
                                          "outputs in steps of residual_byte_scale, rounded half up, at most 255")  # fmt: skip
    manifest = {
        "format_version": M.FORMAT_VERSION,
        "name": name,
        "window": {"length": window, "hop": hop, "channels": channels, "input_shape": list(enc_rt.input_shape),
                   **({} if row_period is None else {"row_period_s": row_period})},
        "normalization": normalizer.to_dict(),
        "quantization": {
            "input": {"scale": in_scale, "zero_point": in_zp, "dtype": io_type},
            "code": {"scale": code_scale, "zero_point": code_zp, "dtype": io_type},
            "weights": "per-tensor" if target == "edgetpu" else "per-channel",
            # ops the quantizer left in float32, between a DEQUANTIZE and a QUANTIZE (SIN, SQUARE, CUMSUM, ...)
            "float_ops": {"encoder": G.read(enc_int8).float_ops, "device": G.read(dev_int8).float_ops},
        },
        "code_size": code_size,
        "code_bytes": code_size,
        "raw_bytes_per_window": {"int16": window * len(channels) * 2, "float32": window * len(channels) * 4},
        "decoder": {"file": dec_name, "dtype": "int8" if decoder_int8 else "float32"},
        "device": device_entry,
        "score": "mean squared reconstruction error per window, in normalized units" if power == 1 else
                 f"power mean (power {power}) over channels of each channel's mean squared reconstruction error "
                 "per window, in normalized units",
        "recipe": recipe.to_dict() if recipe is not None else None,
        "training_data_fingerprint": fingerprint,
        "pruning": pruning,
        "target": target,
    }

    with atomic_dir(out, M.MANIFEST) as tmp:
        (tmp / M.ENCODER_INT8).write_bytes(enc_int8)
        (tmp / M.ENCODER_FLOAT).write_bytes(enc_f32)
        (tmp / M.DEVICE_INT8).write_bytes(dev_int8)
        (tmp / dec_name).write_bytes(dec)
        for fname, arr in zip(M.REFERENCE, (reference, ref_codes, ref_errors)):
            np.save(tmp / fname, np.asarray(arr, dtype=np.float32))
        if target == "mcu":
            manifest["mcu"] = {"arena": targets.measure_arena(tmp / M.ENCODER_INT8, Path(out) / M.ENCODER_INT8),
                               "device_arena": targets.measure_arena(tmp / M.DEVICE_INT8, Path(out) / M.DEVICE_INT8),
                               "sources": targets.c_identifier(name)}  # fmt: skip
            targets.mcu_sources(tmp, targets.c_identifier(name), enc_int8, dev_int8, manifest)
        elif target == "edgetpu":
            report = targets.edgetpu_report(tmp / M.ENCODER_INT8)
            write_json(tmp / "edgetpu_report.json", report)
            manifest["edgetpu"] = {"all_supported": report["all_supported"], "split": report["split"]}
        manifest["artifacts"] = {f.name: M.artifact_entry(f) for f in sorted(tmp.iterdir())}
        write_json(tmp / M.MANIFEST, manifest)
        if target == "mcu":
            targets.mcu_model_id_h(tmp, targets.c_identifier(name), M.Export(tmp, manifest).model_id)
    return Path(out)

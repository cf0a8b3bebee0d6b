"""Training: recipe + data -> a run directory holding everything export needs.

A run directory (written atomically) holds:

    recipe.json          the recipe used, with every default filled in
    encoder.keras        the trained (and, with sparsity, pruned) encoder; encoder.h5 after QAT,
                         because TFMOT's quantize wrappers do not round-trip through .keras
    decoder.keras        the decoder, with tied layers made plain (see zoo.untie)
    normalization.json   per-channel mean / std fitted on the training windows only, and the
                         recipe's high-pass time constants (data.Normalizer)
    data.json            source (the files, in order), fingerprint, channels (and those constant in
                         the training windows), rows, the rows' time step (and where it jumps) and
                         window counts used
    history.json         loss and val_loss per epoch (training, then pruning fine-tuning)
    pruning.json         sparsity per layer and gzip sizes before / after (when pruned)
    calibration.npy      normalized training windows for the int8 representative set
    validation.npy       normalized validation windows, the reference set of export / verify
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import data as D
from .errors import EdgeaeError
from .fsutil import atomic_dir, check_replaceable, write_json
from .manifest import RUN_MARKER
from .recipe import Recipe

MIN_TRAIN_WINDOWS = 16
REFERENCE_WINDOWS = 256


def load_data(recipe: Recipe, data: str | Path | D.Series) -> D.Series:
    """The recipe's channels of a file (or an in-memory series)."""
    if isinstance(data, D.Series):
        return data.select(recipe.data.channels)
    return D.read_series(data, recipe.data.channels, recipe.data.label, recipe.data.time)


def load_files(recipe: Recipe, data, progress: bool = False) -> list[D.Series]:
    """The recipe's channels of each file `data` names (a file or a folder of them, or a list of
    those; or in-memory series, one or a list), each file with the first one's channels, in its order."""
    if isinstance(data, D.Series):
        data = [data]
    if isinstance(data, list) and all(isinstance(s, D.Series) for s in data):
        return D.in_first_channels([load_data(recipe, s) for s in data])
    return D.in_first_channels(D.read_files(data, lambda f: load_data(recipe, f), progress))


def training_windows(recipe: Recipe, parts: list[D.Series], train_rows: tuple[int, int] | None = None) -> list[np.ndarray]:
    """Raw windows to train on, per series (no window spans two): the given row range of each,
    else its windows of rows labelled normal."""
    d = recipe.data
    rows = train_rows or d.train_rows
    if rows is not None:
        start, stop = rows
        if not 0 <= start < stop:
            raise EdgeaeError(f"train rows must be [start, stop) with 0 <= start < stop, got [{start}, {stop})")
    out = []
    for series in parts:
        if rows is not None:
            if stop > len(series):
                raise EdgeaeError(f"{series.source}: train rows [{start}, {stop}) beyond the {len(series)} rows")
            series = series.rows(start, stop)
        w = D.windows(series, d.window, d.hop)
        out.append(w if rows is not None else w[D.normal_windows_mask(series, d.window, d.hop)])
    if (total := sum(map(len, out))) < MIN_TRAIN_WINDOWS:
        raise EdgeaeError(f"{D.names(p.source for p in parts)}: only {total} normal training windows of {d.window} rows; need at least {MIN_TRAIN_WINDOWS}")
    return out


def _time_info(parts: list[D.Series]) -> tuple[dict | None, str | None]:
    """The files' time jumps (`data.time_jumps`; of several files summed, with the file of the
    largest), and why a time column cannot be read. Files whose rows come at other rates are refused:
    one model would learn two signals."""
    jumps = [D.time_jumps(p) for p in parts]
    unreadable = None
    for p, j in zip(parts, jumps):
        if j is None and p.times is not None and unreadable is None:  # say why (the read stops at the first cell that is no time)
            try:
                p.unix_times()
            except EdgeaeError as e:
                unreadable = str(e)
    if len(parts) == 1:
        return jumps[0], unreadable
    if not (known := [(p, j) for p, j in zip(parts, jumps) if j]):
        return None, unreadable
    first, step = known[0][0], known[0][1]["step_s"]
    for p, j in known[1:]:
        if abs(j["step_s"] / step - 1) > D.PERIOD_TOLERANCE:
            raise EdgeaeError(f"{p.source}: rows {j['step_s']:g} s apart, {first.source}'s {step:g} s: one model learns the signal at "
                              "one rate; resample the files to one rate, or train a model per rate")  # fmt: skip
    merged = {"count": sum(j["count"] for _, j in known), "step_s": step}
    if jumped := [(p, j) for p, j in known if j["count"]]:
        p, j = max(jumped, key=lambda pj: abs(pj[1]["largest_s"]))
        merged.update(largest_s=j["largest_s"], row=j["row"], source=p.source)
    return merged, unreadable


def train(
    recipe: Recipe,
    data: str | Path | D.Series | list,
    out: str | Path,
    sparsity: float | None = None,
    train_rows: tuple[int, int] | None = None,
    progress: bool = True,
    qat: bool | None = None,
) -> Path:
    """Train the recipe's autoencoder on `data` (a file, a folder of them, a list of those, or series: no
    window spans two files, and each file's last windows validate), prune it and fine-tune it
    quantization-aware when asked, and write the run to `out`. Where QAT cannot apply,
    history.json says why."""
    check_replaceable(out, RUN_MARKER)
    if qat is not None:
        recipe.train.qat = qat
    if sparsity is not None:
        if not 0.0 <= sparsity < 1.0:
            raise EdgeaeError(f"--sparsity must be in [0, 1), got {sparsity}")
        recipe.prune.sparsity = sparsity
    parts = load_files(recipe, data, progress)
    channels = parts[0].channels
    highpass = recipe.data.highpass or {}
    rows = train_rows or recipe.data.train_rows
    raw_parts = training_windows(recipe, [D.highpass(p, highpass) for p in parts], rows)
    # the training rows' step and jumps (a jump outside them joins no training window), from one
    # read of each time column; before training, as it may refuse
    jumps, unreadable = _time_info([replace(p.rows(*rows), source=p.source) if rows else p for p in parts])
    if rows and jumps and "row" in jumps:
        jumps["row"] += rows[0]  # counted from the file's first row
    raw = np.concatenate(raw_parts)
    norm = D.Normalizer.fit(raw, channels, highpass)

    from . import pruning, zoo
    from ._tf import keras

    encoder, decoder = zoo.build(recipe, len(channels))
    xs = [D.to_input(norm(w), encoder.input_shape[1:]) for w in raw_parts]
    ends = [len(x) - int(len(x) * recipe.train.validation_split) for x in xs]  # each file's last windows validate
    x_train = np.concatenate([x[:end] for x, end in zip(xs, ends)])
    x_val = np.concatenate([x[end:] for x, end in zip(xs, ends)])

    model = zoo.training_model(encoder, decoder, recipe)
    monitor = "val_loss" if len(x_val) else "loss"
    stop = keras.callbacks.EarlyStopping(monitor, patience=recipe.train.patience, restore_best_weights=True)
    history = {"train": fit(model, "train", recipe, x_train, x_val, recipe.train.epochs, [stop], progress)}

    prune_report = None
    if recipe.prune.sparsity > 0:
        encoder, decoder, prune_hist, prune_report = pruning.prune(encoder, decoder, recipe, x_train, x_val, progress)
        history["prune"] = prune_hist
    if recipe.train.qat:
        from . import qat as Q

        reason = Q.unavailable(recipe, encoder)
        if reason is None:
            encoder, qat_hist = Q.qat(encoder, decoder, recipe, x_train, x_val, progress)
            history["qat"] = {"applied": True, "history": qat_hist}
        else:
            history["qat"] = {"applied": False, "reason": f"{reason}; post-training quantization is used instead"}
    decoder = zoo.untie(decoder)

    rng = np.random.default_rng(recipe.train.seed)
    calib = x_train[np.sort(rng.permutation(len(x_train))[: recipe.export.calibration_windows])]
    reference = x_val if len(x_val) else x_train
    reference = reference[np.sort(rng.permutation(len(reference))[:REFERENCE_WINDOWS])]

    with atomic_dir(out, RUN_MARKER) as tmp:
        encoder.save(tmp / ("encoder.h5" if history.get("qat", {}).get("applied") else "encoder.keras"))
        decoder.save(tmp / "decoder.keras")
        write_json(tmp / RUN_MARKER, recipe.to_dict())
        write_json(tmp / "normalization.json", norm.to_dict())
        write_json(tmp / "history.json", history)
        labelled = [p.labels for p in parts if p.labels is not None]
        write_json(tmp / "data.json", {
            "source": D.names(p.source for p in parts), "files": len(parts), "rows": sum(map(len, parts)),
            "fingerprint": D.fingerprint(parts),
            "row_period_s": jumps and jumps["step_s"], "time_jumps": jumps, "unreadable_times": unreadable, "constant_channels": D.constant_channels(raw, channels),
            "channels": channels, "train_rows": list(rows) if rows else None,
            "anomalous_train_rows": sum(int(lab[slice(*rows)].sum()) for lab in labelled) if rows and labelled else None,
            "label": recipe.data.label, "unlabelled": [p.source for p in parts if p.labels is None],
            "train_windows": len(x_train), "validation_windows": len(x_val),
        })  # fmt: skip
        if prune_report is not None:
            write_json(tmp / "pruning.json", prune_report)
        np.save(tmp / "calibration.npy", calib)
        np.save(tmp / "validation.npy", reference)
    return Path(out)


def kept_epoch(phase: dict) -> int:
    """The epoch (from 1) whose weights training kept, of a history.json phase: early stopping
    restores the one with the lowest monitored loss (validation loss with a validation split)."""
    return int(np.argmin(phase.get("val_loss") or phase["loss"])) + 1


def data_notes(info: dict) -> list[str]:
    """What training noticed in its data (a run's data.json), in words: times that jump, channels
    that do not move, training rows labelled anomalous, files without the recipe's label column, a
    time column it cannot read. A run from before these were kept has none."""
    notes, jumps, constant = [], info.get("time_jumps"), info.get("constant_channels")
    if info.get("unreadable_times"):
        notes.append(f"the time column cannot be read ({info['unreadable_times']}): " + (
            "the export will not know its rows' rate, and nothing can check that the rows it meets come at it" if not info.get("row_period_s")
            else "its rows' rate is not checked against the other files'"))  # fmt: skip
    if info.get("anomalous_train_rows"):
        start, stop = info["train_rows"]
        notes.append(f"{info['anomalous_train_rows']} of the training rows {start}:{stop} are labelled anomalous: the model learns "
                     "them as normal, and will not flag their like; pick rows without faults, or leave the train rows out "
                     "(--train-rows, [data] train_rows) to train on the rows labelled normal")  # fmt: skip
    if info.get("label") and info.get("unlabelled"):
        one = len(info["unlabelled"]) == 1
        notes.append(f"no label column '{info['label']}' in {D.names(info['unlabelled'])}: {'its' if one else 'their'} rows "
                     "all count as normal (right for a recording without faults; if faults are labelled under another name, "
                     "give that as the recipe's [data] label)")  # fmt: skip
    if jumps and jumps["count"]:
        largest = jumps["largest_s"]
        notes.append(f"the rows' times jump {jumps['count']} time{'s' * (jumps['count'] > 1)} (the largest {'back ' * (largest < 0)}by "
                     f"{abs(largest):g} s, before row {jumps['row']}{' of ' + jumps['source'] if 'source' in jumps else ''}; the rows are {jumps['step_s']:g} s apart elsewhere): a window "
                     "across a jump joins two stretches of signal, and may score as a fault; recordings joined end to end "
                     "train without such windows given as separate files (--data again, or a folder; `edgeae cut` writes them)")  # fmt: skip
    if constant:
        one = len(constant) == 1
        notes.append(f"{', '.join(constant)} {'is' if one else 'are'} constant in the training windows (a stuck or "
                     f"disconnected sensor?): the model learns nothing of {'it' if one else 'them'}, and once "
                     f"{'it moves' if one else 'they move'} every window looks anomalous; train on data where "
                     f"{'it works' if one else 'they work'}, or leave {'it' if one else 'them'} out of the recipe's channels")  # fmt: skip
    return notes


def model_notes(recipe: Recipe, channels: int) -> list[str]:
    """What the recipe's model is likely to get wrong on windows of `channels` channels: a plain
    autoencoder whose code holds as many values as its window has no bottleneck; it can learn to
    copy its input and then reconstructs a fault as well as normal operation (the default code of 8
    over one channel's window of 8 does). Sparse and denoising variants may be overcomplete by design.
    And a hop longer than the window: rows between windows are never encoded (a device sampling in
    bursts may want that, so it is said, not refused)."""
    m, d, notes = recipe.model, recipe.data, []
    values = d.window * channels
    if m.code_size >= values and m.sparse is None and m.denoise is None:
        notes.append(f"the code holds {m.code_size} values for windows of {d.window} rows x {channels} channel{'s' * (channels > 1)} "
                     f"= {values} values: no bottleneck, so the model can learn to copy its input and reconstruct a fault as well as "
                     f"normal operation; give [model] code_size below {values}, or a longer [data] window")  # fmt: skip
    if d.hop > d.window:
        notes.append(f"the hop ({d.hop} rows) is longer than the window ({d.window} rows): {d.hop - d.window} rows of every {d.hop} "
                     "are in no window, neither learnt nor encoded, and a fault that fits between two windows goes unseen; "
                     "a [data] hop of at most the window puts every row in one")  # fmt: skip
    return notes


def fit(model, phase: str, recipe: Recipe, x_train, x_val, epochs: int, callbacks: list, progress: bool = True) -> dict:
    """Fit the autoencoder `model` to reproduce its windows, one of training's phases (train,
    prune, qat), with a progress bar; returns its losses per epoch. A loss that turns NaN or inf
    stops it and refuses the run (`Diverged`): its weights are no model, and export then blamed
    the calibration windows."""
    diverged = Diverged(phase, recipe.train.learning_rate)
    hist = model.fit(
        x_train, x_train,
        validation_data=(x_val, x_val) if len(x_val) else None,
        epochs=epochs, batch_size=recipe.train.batch_size, shuffle=True, verbose=0,
        callbacks=[*callbacks, diverged, ProgressBar(phase, epochs, progress)],
    )  # fmt: skip
    if diverged.error is not None:
        raise diverged.error
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}


def Diverged(phase: str, learning_rate: float):
    """A Keras callback that stops training after the first epoch whose loss is NaN or inf (once
    NaN, the weights stay so), keeping the error that says so in `error`. At epoch ends only: a
    batch hook makes Keras fetch the losses from TensorFlow after every batch."""
    from ._tf import keras

    class _Diverged(keras.callbacks.Callback):
        error = None

        def on_epoch_end(self, epoch, logs=None):
            bad = next(((k, v) for k, v in (logs or {}).items() if k.endswith("loss") and not np.isfinite(v)), None)
            if bad is not None:
                self.model.stop_training = True
                self.error = EdgeaeError(f"{phase}: the {bad[0].replace('_', ' ')} turned {bad[1]} in epoch {epoch + 1}: training "
                                         f"diverged; lower train.learning_rate in the recipe (now {learning_rate:g}), or look for "
                                         "outliers in the data")  # fmt: skip

    return _Diverged()


def ProgressBar(label: str, epochs: int, enabled: bool = True):
    """A Keras callback showing one tqdm bar over the epochs, with the current losses."""
    from tqdm.auto import tqdm

    from ._tf import keras

    class _Bar(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = tqdm(total=epochs, desc=label, unit="epoch", disable=None if enabled else True, leave=False)

        def on_epoch_end(self, epoch, logs=None):
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in (logs or {}).items()})
            self.bar.update(1)

        def on_train_end(self, logs=None):
            self.bar.close()

    return _Bar()


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))

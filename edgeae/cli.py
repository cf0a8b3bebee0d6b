"""The `edgeae` command: a thin click layer over the Python API.

Nothing heavy is imported at module level, so `edgeae --help` answers at once; each command
imports what it needs. An `EdgeaeError` (or an `OSError` from reading or writing files, or a
`MemoryError`, or TensorFlow's out-of-memory error) becomes one line on stderr and exit code 2. SIGTERM and Ctrl-C remove the command's temporary files and
exit with 143 / 130.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path
from typing import NoReturn

import click

from .errors import EdgeaeError, require
from .fsutil import atomic_file, check_writable, command_scope
from .lorawan import ENVELOPES
from .recipe import MAX_SEED, Recipe, load as load_recipe, summary
from .wire import SENSOR_IDS


DEFAULT_RECIPE = "the default recipe, " + summary(Recipe())
BROKER_HELP = "[mqtt://|mqtts://][USER@]HOST[:PORT] (mqtts: TLS; a user's password in $EDGEAE_MQTT_PASSWORD)."  # mqtt.parse_broker
seed_option = click.option("--seed", type=click.IntRange(0, MAX_SEED), help="Training seed (overrides the recipe's [train] seed; eval also seeds Isolation Forest with it): "
                           "to see how much a figure moves with it.")  # fmt: skip
quiet_option = click.option("--quiet", is_flag=True, help="No progress bars.")


class Number(click.FloatRange):
    """A float option (within a range, if given) that refuses NaN and infinities: click's float
    takes 'nan', and no bound refuses it (`--every nan` sent every window, `--q nan` was numpy's
    traceback, `verify --min-sqnr nan` failed every export)."""

    name = "float"  # the help's metavar, FLOAT

    def _describe_range(self) -> str:  # click's help says "[x<=None]" of no range
        return "" if self.min is None and self.max is None else super()._describe_range()

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        if not math.isfinite(value):
            self.fail(f"{value} is not a finite number", param, ctx)
        return value


class NonEmptyPath(click.Path):
    """A path option that refuses "": an unset variable in `--db "$DB"` or `--keys "$KEYS"` is not the
    current folder, an in-memory database that keeps nothing, or no keys at all."""

    def convert(self, value, param, ctx):
        if value == "":
            self.fail("is empty (an unset variable?)", param, ctx)
        return super().convert(value, param, ctx)


def _rows(ctx, param, value: str | None) -> tuple[int, int] | None:
    """--train-rows START:STOP as (start, stop). "" (an unset variable) is refused, not taken for
    the default rows."""
    if value is None:
        return None
    try:
        start, stop = (int(p) for p in value.split(":"))
    except ValueError:
        raise click.BadParameter(f"must be START:STOP, got {value!r}") from None
    if not 0 <= start < stop:
        raise click.BadParameter(f"must have 0 <= START < STOP, got {value!r}")
    return start, stop


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            with command_scope("edgeae"):
                return super().invoke(ctx)
        except EdgeaeError as e:
            _fail(str(e))
        except OSError as e:  # what no check can foresee: a missing folder, permissions, a full disk
            _fail(f"{e.filename}: {e.strerror}" if e.filename else str(e))
        except MemoryError as e:  # numpy's says how much: "Unable to allocate 7.28 TiB for an array with shape ..."
            _fail(f"not enough memory{f' ({e})' if str(e) else ''}: less data at a time, or a larger machine")
        except Exception as e:  # TensorFlow's own out-of-memory error, from a command that loaded it (a recipe's model too large)
            tf = sys.modules.get("tensorflow")
            if tf is None or not isinstance(e, tf.errors.ResourceExhaustedError):
                raise
            what = re.search(r"OOM when allocating tensor with shape\[[^\]]*\]", e.message)
            _fail(f"not enough memory for the model ({what[0] if what else e.message.splitlines()[0]}): fewer units, "
                  f"filters or a smaller batch (model.hidden, model.filters, train.batch_size in the recipe), or a larger machine")  # fmt: skip


def _fail(message: str) -> NoReturn:
    """Print the error on one line, whatever it quotes (a CSV cell or a file name may hold a line
    break: shown as \\n), and exit 2."""
    click.echo("edgeae: error: " + message.replace("\r", "\\r").replace("\n", "\\n"), err=True)
    sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgeae")
def main():
    """Autoencoders from training to a microcontroller and back.

    \b
    edgeae demo                                     the whole chain on simulated data
    edgeae cut F --out D                            a recording with gaps -> a file per stretch
    edgeae train [--recipe models/X.toml] --data F  train (and prune) -> runs/X
    edgeae export --int8 runs/X [--out dist/X]       full-int8 encoder + decoder + manifest
    edgeae verify dist/X [--data F]                  LiteRT = TFLite Micro, fidelity vs float
    edgeae encode dist/X --data F --sensor 1 --out p.bin | --mqtt HOST:PORT   device loop -> packets
    edgeae calibrate dist/X --data F                 fit the host's anomaly scorer
    edgeae calibrate dist/X --db r.sqlite --sensor 7 --since T --until T   a sensor's own threshold
    edgeae serve dist/X --mqtt HOST:PORT --db r.sqlite   decode, score, store every packet
    edgeae archive r.sqlite --before 90d --out archive/X   what came in before to Parquet
    edgeae eval dist/X --data F [--out reports/X]    detection and compression vs baselines
    edgeae eval --protocol skab --recipe models/skab.toml --data ../shared/data/skab --out reports/skab
    edgeae sweep --recipe R --data F --code-sizes 2,4,8,16,32 --out reports/rd
    edgeae report reports/X                          one HTML page with the plots (eval, sweep or a run)

    Data files are CSV (any delimiter, decimal commas in files not delimited by commas, header
    row, optional time and 0/1 label columns) or .npz (data, channels, labels). --data takes a
    folder of them, or is given again: each file is windowed on its own.
    """


@main.command()
@click.option("--out", default="edgeae-demo", show_default=True, type=NonEmptyPath(file_okay=False), help="Output folder.")
@click.option("--seconds", type=Number(), default=120.0, show_default=True, help="Length of each simulated recording.")
def demo(out, seconds):
    """Simulate a machine, train, prune, export to int8 and verify; print a summary."""
    from . import demo as demo_

    click.echo(demo_.summary(demo_.run(out, seconds=seconds)))


@main.command()
@click.option("--recipe", "recipe_path", type=NonEmptyPath(), help="Model recipe (TOML), e.g. models/mlperf-ad.toml [default: " + DEFAULT_RECIPE + "].")
@click.option("--data", required=True, multiple=True, type=NonEmptyPath(),
              help="Training data: a CSV or .npz file, or a folder of them; again for more (no window spans two files).")
@click.option("--out", type=NonEmptyPath(file_okay=False), help="Run directory [default: runs/<recipe name>].")
@click.option("--sparsity", type=Number(), help="Prune to this fraction of zero weights (overrides the recipe).")
@click.option("--epochs", type=click.IntRange(1), help="At most this many training epochs, early stopping aside (overrides the recipe).")
@click.option("--train-rows", callback=_rows, help="Train on rows START:STOP (of each file) instead of the rows labelled normal.")
@click.option("--qat", is_flag=True, default=None, help="Quantization-aware fine-tuning of the encoder (pruning-preserving with --sparsity).")
@seed_option
@quiet_option
def train(recipe_path, data, out, sparsity, epochs, train_rows, qat, seed, quiet):
    """Train an autoencoder (and prune it with --sparsity) into a run directory."""
    from .train import data_notes, kept_epoch, model_notes, train as train_

    recipe = _load_recipe(recipe_path, seed, data)
    recipe.train.epochs = epochs or recipe.train.epochs
    run = train_(recipe, data, out or Path("runs") / recipe.name, sparsity=sparsity, train_rows=train_rows,
                 progress=not quiet, qat=qat)  # fmt: skip
    history = json.loads((run / "history.json").read_text())
    last = {k: v[-1] for k, v in history["train"].items()}
    epochs = len(history["train"]["loss"])
    info = json.loads((run / "data.json").read_text())
    click.echo(f"trained {recipe.name} on {info['train_windows']} windows" + (f" from {info['files']} files" if info["files"] > 1 else "")
               + f": {epochs} epoch{'s' * (epochs != 1)}, " + ", ".join(f"{k} {v:.4g}" for k, v in last.items()))  # fmt: skip
    if epochs == recipe.train.epochs and kept_epoch(history["train"]) == epochs:
        click.echo(f"note: the {'validation ' if 'val_loss' in last else ''}loss was still falling at the last epoch: "
                   "more epochs (--epochs, or [train] epochs in the recipe) may fit better")  # fmt: skip
    _recipe_note(recipe_path)
    for note in model_notes(recipe, len(info["channels"])) + data_notes(info):
        click.echo(f"note: {note}")
    if (run / "pruning.json").is_file():
        p = json.loads((run / "pruning.json").read_text())
        click.echo(f"pruned to {p['target_sparsity']:.0%}: gzip weights {p['gzip_bytes_before']} -> {p['gzip_bytes_after']} bytes")
        for row in p["layers"]:
            click.echo(f"  {row['model']:<8} {row['layer']:<14} {row['weights']:>7} weights  {row['sparsity']:6.1%} zero" + ("  (tied)" if row.get("tied") else ""))
    if "qat" in history:
        q = history["qat"]
        click.echo("quantization-aware fine-tuning: " + ("applied" if q["applied"] else f"not applied: {q['reason']}"))
    click.echo(f"run written to {run} (edgeae report {run} draws its losses per epoch)")


def _load_recipe(path, seed: int | None, data: tuple):
    """The recipe at `path` (without one, the default recipe, named after the first `--data`), with
    `--seed` (when given) in place of its [train] seed."""
    if path is None:
        recipe = Recipe(name=Path(data[0]).resolve().stem or "model")
    else:
        recipe = load_recipe(path)
    if seed is not None:
        recipe.train.seed = seed
    return recipe


def _recipe_note(path) -> None:
    """Which recipe ran when none was given: said with the results, so that a refused command's
    error stays its one line."""
    if path is None:
        click.echo(f"note: no --recipe: {DEFAULT_RECIPE} (a recipe file changes any of it: models/*.toml)")


def _positive_ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise EdgeaeError(f"{option} must be comma-separated positive integers, got {text!r}")
    return values


@main.command()
@click.argument("source", type=NonEmptyPath())
@click.option("--int8", "int8", is_flag=True, help="Full-integer quantization of the encoder (int8 in and out).")
@click.option("--out", type=NonEmptyPath(file_okay=False), help="Export directory [default: dist/<the run's or model file's name>].")
@click.option("--decoder-int8", is_flag=True, help="Also quantize the decoder to int8 (default float32).")
@click.option("--calibration", multiple=True, type=NonEmptyPath(),
              help="Representative data (CSV / .npz, or a folder of them; again for more) instead of the training windows.")
@click.option("--code-layer", help="For your own .keras / .h5 autoencoder: the bottleneck layer to split at.")
@click.option("--normalization", type=NonEmptyPath(), help="For your own model: normalization JSON (channels, mean, std).")
@click.option("--target", type=click.Choice(["mcu", "edgetpu"]), help="mcu: + TFLite Micro C sources with the measured arena; edgetpu: per-tensor weights + compatibility report.")
@click.option("--io-type", type=click.Choice(["int8", "uint8"]), default="int8", show_default=True, help="The int8 encoder's input/output type.")
def export(source, int8, out, decoder_int8, calibration, code_layer, normalization, target, io_type):
    """Export a run directory (or your own Keras autoencoder) for the device and the host."""
    if not int8:
        raise EdgeaeError("only full-int8 export is supported: pass --int8")
    from . import wire
    from .export import export as export_

    path = export_(source, out or Path("dist") / Path(source).resolve().stem, decoder_int8=decoder_int8, calibration=calibration or None, code_layer=code_layer,
                   normalization=normalization, target=target, io_type=io_type)  # fmt: skip
    man = json.loads((path / "manifest.json").read_text())
    for name, meta in man["artifacts"].items():
        click.echo(f"  {name:<26} {meta['bytes']:>9} bytes  sha256 {meta['sha256'][:16]}")
    q = man["quantization"]
    click.echo(f"code: {man['code_size']} {q['code']['dtype']} values (scale {q['code']['scale']:.4g}, zero point {q['code']['zero_point']})"
               f" per window of {man['raw_bytes_per_window']['int16']} raw int16 bytes")  # fmt: skip
    if code_layer is not None:
        scaled = "scaled by the --normalization file" if normalization else "unscaled: give --normalization if it was trained on scaled values"
        w = man["window"]
        click.echo(f"window: {w['length']} rows x {len(w['channels'])} channels ({', '.join(w['channels'])}), {scaled}")
    if floats := [(part, q["float_ops"][key]) for part, key in (("encoder", "encoder"), ("device model", "device")) if q["float_ops"][key]]:
        ops = ", ".join(dict.fromkeys(op for _, f in floats for op in f))
        click.echo(f"note: {ops} runs in float32 in the int8 {' and '.join(p for p, _ in floats)} (the quantizer left it between "
                   "a DEQUANTIZE and a QUANTIZE): not full integer; a microcontroller without an FPU runs it in software")  # fmt: skip
    size = wire.packet_size(man["code_size"])
    click.echo(f"packet: {size} bytes with the residual byte and tag, {size - wire.TAG_BYTES} without the tag ({wire.radio_note(size)})")
    if period := man["window"].get("row_period_s"):
        from .lorawan import budget

        click.echo(f"radio: a window every {man['window']['hop']} rows of {period:g} s; {budget(size, man['window']['hop'] * period)} "
                   "(edgeae encode --every sends one window every so often)")  # fmt: skip
    if "mcu" in man:
        a, d = man["mcu"]["arena"], man["mcu"]["device_arena"]
        click.echo(f"mcu: C sources {man['mcu']['sources']}_* and the packet's edgeae_packet.c; tensor arena {a['stated_bytes']} bytes for the encoder, "
                   f"{d['stated_bytes']} for the device model (smallest that ran {a['minimum_bytes']} / {d['minimum_bytes']}, +{a['margin']:.0%})")  # fmt: skip
    if "edgetpu" in man:
        from .targets import edgetpu_table

        click.echo(edgetpu_table(json.loads((path / "edgetpu_report.json").read_text())))
    click.echo(f"export written to {path}")


@main.command()
@click.argument("export_dir", type=NonEmptyPath())
@click.option("--data", multiple=True, type=NonEmptyPath(),
              help="Your own recording (CSV / .npz, or a folder of them; again for more): the same fidelity on its windows (its normal "
                   "ones, if labelled), how many the int8 input clips, and, with labels, ROC-AUC float vs int8.")  # fmt: skip
@click.option("--min-sqnr", type=Number(), default=20.0, show_default=True, help="Floor on the code SQNR, dB.")
@click.option("--max-error-increase", type=Number(min=0), default=0.10, show_default=True, help="Ceiling on the relative reconstruction-error increase.")
@click.option("--max-auc-drop", type=Number(min=0), default=0.01, show_default=True, help="Ceiling on ROC-AUC float minus int8.")
@click.option("--max-runtime-noise", type=Number(min=0, max=255**2), default=round(1 / 12, 4), show_default=True, help="Noise (code steps squared) TFLite Micro's codes may add over LiteRT's ...")
@click.option("--max-runtime-gap", type=Number(min=0, max=100), default=1.0, show_default=True, help="... or how much lower their SQNR may be (dB), whichever allows more.")
@click.option("--max-residual-error", type=Number(min=0), default=0.10, show_default=True, help="Ceiling on the device's residual byte vs the float reconstruction error (mean absolute difference, relative).")
@click.option("--arena", type=click.IntRange(min=1, max=2**30), default=256 * 1024, show_default=True, help="TFLite Micro arena, bytes.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(export_dir, data, min_sqnr, max_error_increase, max_auc_drop, max_runtime_noise, max_runtime_gap, max_residual_error, arena, as_json):
    """Check an export without TensorFlow: hashes, LiteRT vs TFLite Micro, the device model, fidelity vs float."""
    from .verify import Floors, verify as verify_

    report = verify_(export_dir, data=data or None, floors=Floors(min_sqnr, max_runtime_excess_noise=max_runtime_noise, max_runtime_sqnr_gap_db=max_runtime_gap, max_error_increase=max_error_increase, max_residual_error=max_residual_error, max_auc_drop=max_auc_drop), arena_bytes=arena)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.table())
    sys.exit(0 if report.passed else 1)


def _fault_kinds(ctx, param, value: str) -> tuple[str, ...]:
    """--faults as fault names in order; () for 'none'. An empty one ('' from an unset variable, or
    ',,') is refused, not taken for a healthy recording; so is 'none' beside faults."""
    from .simulate import FAULTS

    kinds = tuple(k.strip() for k in value.split(","))
    if kinds == ("none",):
        return ()
    if "" in kinds or "none" in kinds:
        raise click.BadParameter(f"must be fault names separated by commas, or 'none' alone, got {value!r}")
    unknown = [k for k in kinds if k not in FAULTS]
    if unknown:
        raise click.BadParameter(f"unknown fault {', '.join(unknown)}; known: {', '.join(FAULTS)}, or none")
    return kinds


def _moment(ctx, param, value: str | None) -> float | None:
    """A time option as Unix seconds: ISO 8601, Unix seconds, 'now', or N days ago ('30d')."""
    import time

    from .data import unix_seconds

    if value is None:
        return None
    try:
        if value == "now" or re.fullmatch(r"\d+(\.\d+)?d", value):
            return time.time() - (0 if value == "now" else float(value[:-1]) * 86400)
        return unix_seconds(value)
    except ValueError as e:
        raise click.BadParameter(f"{e}, 'now' or a number of days ago ('30d')") from None


@main.command()
@click.option("--out", required=True, type=NonEmptyPath(dir_okay=False), help="Output file (.csv or .npz).")
@click.option("--seconds", type=Number(), default=120.0, show_default=True, help="Length of the recording.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True, help="Noise and drift seed: the same options give the same file.")
@click.option("--faults", default="outer_race,inner_race,imbalance,looseness", show_default=True, callback=_fault_kinds,
              help="Faults in the second half, in this order, with healthy gaps between; 'none' for a healthy recording.")  # fmt: skip
@click.option("--severity", type=Number(), default=1.0, show_default=True,
              help="Scale of each fault's extra vibration. The demo's export, at its UCL, still catches the bearing spalls at 0.2 and misses imbalance and looseness at 0.5.")  # fmt: skip
@click.option("--start", default="2026-01-01T00:00:00Z", show_default=True, callback=_moment,
              help="The CSV's first time: ISO 8601 (UTC unless it gives its offset), Unix seconds, 'now', or days ago ('30d'). "
                   "`edgeae encode` stamps each packet with its window's time.")  # fmt: skip
def simulate(out, seconds, seed, faults, severity, start):
    """Write a simulated labelled recording of the demo machine (see edgeae.simulate).

    A motor drives a shaft on a 6205 ball bearing, sampled at 1 kHz: vib_x and vib_y (g) on the
    bearing housing, one motor phase's current (A), the housing's temperature (degC), with slow
    speed and load drift. The first half is healthy; the faults follow, each in a segment whose
    rows have label 1: outer_race and inner_race (spall impacts ringing the housing's
    resonance), imbalance, looseness.
    """
    from . import simulate as sim

    check_writable(out)
    s = sim.machine(seconds=seconds, seed=seed, severity=severity, schedule=sim.default_schedule(seconds, faults))
    sim.save(s, out, start)
    click.echo(f"{len(s)} rows x {len(s.channels)} channels written to {out}")


@main.command()
@click.argument("recording", type=NonEmptyPath())
@click.option("--out", required=True, type=NonEmptyPath(file_okay=False), help="A folder for the stretches (.npz each) and cut.json.")
@click.option("--min-rows", type=click.IntRange(1), default=1, show_default=True,
              help="Leave out stretches shorter than this (a model's window: they give it none); counted, and listed in cut.json.")
def cut(recording, out, min_rows):
    """Cut a recording where its times jump into one file per stretch.

    A logger that stops overnight, or recordings joined end to end, leave gaps in one file: a
    window across a gap joins two stretches of signal, which train learns as normal and eval may
    score as a fault. A jump is a step more than twice the median step between rows, or one that
    does not advance. Give the folder to train, verify, calibrate or eval as --data: each file is
    windowed on its own. cut.json names each file's rows and times."""
    from .data import cut as cut_

    m = cut_(recording, out, min_rows)
    sizes = [b - a for a, b in (f["rows"] for f in m["files"])]
    n, jumps = len(sizes), m["jumps"]
    click.echo(f"{recording}: {m['rows']} rows, " + (f"{jumps} time jump{'s' * (jumps > 1)}" if jumps else "no time jump")
               + f": {n} file{'s' * (n > 1)} of {min(sizes)}" + (f"-{max(sizes)}" if max(sizes) > min(sizes) else "") + f" rows written to {out}"
               + (f"; {len(m['left_out'])} stretch(es) shorter than {min_rows} rows left out "
                  f"({sum(b - a for a, b in (f['rows'] for f in m['left_out']))} rows, listed in cut.json)" if m["left_out"] else ""))  # fmt: skip


@main.command()
@click.argument("path", type=NonEmptyPath())
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--edgetpu", is_flag=True, help="Also check each op against the Edge TPU's supported ops.")
def inspect(path, as_json, edgetpu):
    """Per-op table and totals of an export's int8 encoder, or of any .tflite (no TensorFlow)."""
    from . import graph, targets
    from .manifest import Export

    p = Path(path)
    if p.is_dir():
        ex = Export.open(p)
        model = ex.encoder_int8
        arena = ex.manifest.get("mcu", {}).get("arena") or targets.measure_arena(model)
    else:
        model, arena = p, None
        graph.read(model)  # a clear error for a file that is not a flatbuffer, before measuring
        arena = targets.measure_arena(model)
    d = graph.describe(model, arena)
    if edgetpu:
        d["edgetpu"] = targets.edgetpu_report(model)
    if as_json:
        click.echo(json.dumps(d, indent=2))
    else:
        click.echo(graph.table(d))
        if edgetpu:
            click.echo(targets.edgetpu_table(d["edgetpu"]))


@main.command()
@click.argument("export_dir", type=NonEmptyPath())
@click.option("--threads", type=click.IntRange(min=1, max=256), help="LiteRT threads (default: LiteRT's choice).")
@click.option("--batches", default="1,64", show_default=True, help="Comma-separated batch sizes.")
@click.option("--repeats", type=click.IntRange(min=1), default=200, show_default=True, help="Timed invocations at batch 1 (fewer for larger batches).")
@click.option("--edgetpu", is_flag=True, help="Also run the int8 encoder through the Edge TPU delegate.")
@click.option("--out", type=NonEmptyPath(dir_okay=False), help="Write the JSON here too.")
def bench(export_dir, threads, batches, repeats, edgetpu, out):
    """Encoder latency on this CPU through LiteRT: int8 vs float32, p50 / p99, windows per second."""
    from . import bench as bench_

    sizes = _positive_ints(batches, "--batches")
    if out:
        check_writable(out)
    result = bench_.bench(export_dir, threads=threads, batches=sizes, repeats=repeats, edgetpu=edgetpu)
    if out:  # before the table: a full disk is an error alone, not after the printed figures
        with atomic_file(out) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(bench_.table(result))


@main.command()
@click.argument("export_dir", type=NonEmptyPath())
@click.option("--data", required=True, multiple=True, type=NonEmptyPath(),
              help="Sensor rows: a CSV / .npz file, or - for CSV lines on stdin. A folder of files, or --data again: replayed one after "
                   "another, each windowed on its own (as a device restarted at each: `edgeae cut` makes them of a recording with gaps).")  # fmt: skip
@click.option("--sensor", type=int, required=True, help="Sensor id (0..65535).")
@click.option("--out", type=NonEmptyPath(dir_okay=False), help="Packet file (2-byte length + packet per record); - for stdout.")
@click.option("--mqtt", "broker", help=f"Publish to this MQTT broker: {BROKER_HELP}")
@click.option("--topic", default="edgeae/{sensor}/up", show_default=True, help="MQTT topic ({sensor} is replaced).")
@click.option("--key", envvar="EDGEAE_KEY", show_envvar=True,
              help="Hex HMAC key: tag every packet (serve must have the same key). Better from $EDGEAE_KEY: ps shows a command's arguments to every user.")  # fmt: skip
@click.option("--t0", type=Number(), default=None,
              help="Timestamp of row 0, Unix seconds, and stamp rows t0 + period x row "
                   "[default: each row's own time, from the data's time column; without one, now].")
@click.option("--period", type=Number(),
              help="Seconds between rows, when stamping by row [default: the step of the rows the export was trained on, else 1].")
@click.option("--every", type=Number(0, min_open=True), metavar="SECONDS",
              help="Send one window every SECONDS (by its rows' times), skipping the others before the model runs: over LoRaWAN "
                   "a device sends a packet every few minutes, not one a hop (the summary says what the radio allows).")  # fmt: skip
@click.option("--start-seq", type=int, help="First sequence number [default: 0, or the one --seq-file kept].")
@click.option("--seq-file", type=NonEmptyPath(dir_okay=False),
              help="Keep the next sequence number in this file and start from it: serve rejects a number it has "
                   "stored as a replay, so a device loop that restarts at 0 has every packet rejected.")  # fmt: skip
@click.option("--unsent", type=NonEmptyPath(dir_okay=False),
              help="With --mqtt: packet file for the packets the broker never acknowledged, kept when it stays away "
                   "[default: edgeae-unsent-<sensor>-<start time>.bin here].")  # fmt: skip
def encode(export_dir, data, sensor, out, broker, topic, key, t0, period, every, start_seq, seq_file, unsent):
    """Device loop: window a sensor stream, run the int8 device model, emit packets.

    SIGTERM or Ctrl-C ends the stream: the packets made so far are still written or published."""
    import time

    from . import device, wire

    if (out is None) == (broker is None):
        raise EdgeaeError("give exactly one of --out and --mqtt")
    stdin = data == ("-",)
    if "-" in data and not stdin:
        raise EdgeaeError("--data -: stdin is the one stream, without other --data")
    if broker is not None:  # "" too: an unset variable in --mqtt "$BROKER" is refused, not taken for another broker
        from .mqtt import parse_broker, sensor_topic

        broker_at = parse_broker(broker).address
        topic = sensor_topic(topic, sensor)
        unsent = check_writable(unsent or f"edgeae-unsent-{sensor}-{time.strftime('%Y%m%dT%H%M%S')}.bin")
    elif unsent:
        raise EdgeaeError("--unsent goes with --mqtt")
    try:
        key_bytes = None if key is None else bytes.fromhex(key)
    except ValueError:
        raise EdgeaeError("--key must be hexadecimal") from None
    if key_bytes == b"":  # an unset variable in --key "$KEY" would otherwise send untagged packets without a word
        raise EdgeaeError("--key is empty: give the sensor's hex key, or leave --key out to send untagged packets")
    if start_seq is not None and seq_file and Path(seq_file).exists():
        raise EdgeaeError(f"give --start-seq or --seq-file, not both: {seq_file} holds the next sequence number")
    if out not in (None, "-"):
        check_writable(out)  # before the stream starts, not after its last row
    enc = device.Encoder(export_dir, sensor, key_bytes, time.time() if t0 is None else t0, period, start_seq or 0, seq_file)
    source = device.Source("-" if stdin else data, enc.ex, times=t0 is None)
    packets = device.Stoppable(enc.packets(source, source.batch, source.time_of, every))
    if stdin:
        click.echo(f"sensor {sensor}: reading CSV rows from stdin, a packet every {enc.ex.hop} rows once {enc.ex.window} are in "
                   "(SIGTERM or Ctrl-C ends the stream)", err=True)  # fmt: skip
    n = 0
    if broker:
        n = device.publish(packets, broker, topic, unsent, notify=lambda m: click.echo(m, err=True))
    elif out == "-":
        try:
            for n, pkt in enumerate(packets, start=1):
                sys.stdout.buffer.write(wire.frame(pkt))
                sys.stdout.buffer.flush()  # each packet as it is made, for a reader downstream of a live stream
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left for the exit's flush to fail on
            raise EdgeaeError(f"stdout: its reader went away; {n - 1} packet(s) were written to it, packet {n} and the rest not") from None
    else:
        with atomic_file(out) as tmp, open(tmp, "wb") as f:
            for n, pkt in enumerate(packets, start=1):
                f.write(wire.frame(pkt))
    size = wire.packet_size(enc.ex.manifest["code_size"], True, key_bytes is not None)
    left = source.unsent(enc.sent_rows if packets.signal else source.windowed)
    rows = f"{'the last ' * (source.files == 1)}{left} row{'s' * (left > 1)}"
    if packets.signal:
        tail = f"; stopped by {packets.signal}" + (f": {rows} read went unsent" if left else "")
    else:
        tail = f"; {rows} filled no window of {enc.ex.window} and went unsent" + (" (the ends of the files)" * (source.files > 1)) if left else ""
    click.echo(f"sensor {sensor}: {n} packets of {size} bytes"
               + (f" to {out}" if out not in (None, "-") else f" to {broker_at}" if broker else "") + f" ({wire.radio_note(size)})"
               + (", stamped with the data's times" if source.timed else "") + tail, err=True)  # fmt: skip
    if every or period or enc.ex.row_period:  # how often packets go, known
        from .lorawan import budget

        click.echo(f"radio: {budget(size, every or enc.ex.hop * enc.period)}", err=True)


RESTART_SERVE = "a serve running with this export judges by it once reloaded (SIGHUP, systemctl reload) or restarted"


@main.command()
@click.argument("export_dir", type=NonEmptyPath())
@click.option("--data", multiple=True, type=NonEmptyPath(),
              help="Recording (CSV / .npz, or a folder of them; again for more) with normal operation, ideally labelled: fit the export's scorer.")
@click.option("--db", type=NonEmptyPath(dir_okay=False),
              help="Or serve's results database: give --sensor a threshold of its own from its stored packets.")
@click.option("--sensor", type=int, multiple=True, help="With --db: the sensor (repeat for several), each set by its own packets.")
@click.option("--since", callback=_moment, help="With --db: packets whose window time is from then (ISO 8601, Unix seconds, 'now', '30d').")
@click.option("--until", callback=_moment, help="With --db: ... and before then. Take a time the machine ran normally.")
@click.option("--mode", type=click.Choice(["residual", "code", "combined"]),
              help="With --data: what the score reads from each packet: the residual byte (default), the code (Mahalanobis distance), "
                   "or whichever is further over its limit.")  # fmt: skip
@click.option("--rule", type=click.Choice(["ucl", "percentile", "far"]), default="ucl", show_default=True,
              help="ucl: quantile 0.999 x 4/3 of normal scores; percentile: quantile --q; far: target false-alarm rate --q.")
@click.option("--q", type=Number(0, 1, min_open=True, max_open=True),
              help="The quantile (percentile, default 0.99) or the target false-alarm rate (far, default 0.01).")
@click.option("--train-rows", callback=_rows, help="With --data: fit on rows START:STOP (of each file) instead of the rows labelled normal.")
@click.option("--f1", is_flag=True, help="With --data: move the threshold to the F1-optimal one on the labelled windows.")
@click.option("--remove", is_flag=True, help="With --sensor alone: remove the sensors' own thresholds (the export's judges them again).")
def calibrate(export_dir, data, db, sensor, since, until, mode, rule, q, train_rows, f1, remove):
    """Fit the host's anomaly scorer and store it in the export (scorer.json).

    \b
    edgeae calibrate dist/X --data normal.csv            the export's scorer, from a recording
    edgeae calibrate dist/X --db r.sqlite --sensor 7 --since 2026-11-01 --until 2026-11-08
                                                         sensor 7's own threshold, from its packets
    edgeae calibrate dist/X --sensor 7 --remove          sensor 7 judged by the export's again

    One export serves many machines, and a machine noisier than the one the export was trained on
    is flagged all the time: --db sets its sensor's threshold by the rule from the scores of its
    packets in a time it ran normally (the gateway's packets alone: no recording, no TensorFlow).
    serve reads the thresholds when it starts, and again on SIGHUP (systemctl reload). Fitting
    the export's scorer again with --data drops them (they are on the old scorer's scale)."""
    if remove:
        if data or db or since is not None or until is not None or not sensor:
            raise EdgeaeError("--remove takes --sensor and nothing else")
        from .score import remove_sensor_thresholds

        click.echo(json.dumps(remove_sensor_thresholds(export_dir, list(dict.fromkeys(sensor))), indent=2))
        click.echo(RESTART_SERVE, err=True)
        return
    if bool(data) == (db is not None):
        raise EdgeaeError("give exactly one of --data (fit the export's scorer) and --db (a sensor's own threshold)")
    if db is None:
        if sensor or since is not None or until is not None:
            raise EdgeaeError("--sensor, --since and --until go with --db")
        from .score import calibrate as calibrate_

        _, report = calibrate_(export_dir, data, mode or "residual", rule, q, train_rows, f1)
        click.echo(json.dumps(report, indent=2))
        if report.get("windows_with_anomalous_rows"):
            click.echo(f"note: {report['windows_with_anomalous_rows']} of the {report['normal_windows']} windows fitted hold rows labelled "
                       "anomalous: the threshold rises to their scores, and faults like them go unflagged", err=True)  # fmt: skip
        auc = report.get("auc_by_mode", {})
        if auc and (best := max(auc, key=auc.get)) != report["mode"] and auc[best] >= auc[report["mode"]] + 0.02:
            click.echo(f"note: on these labelled windows mode {best} tells the faults apart better (ROC-AUC {auc[best]:.3f}, "
                       f"{report['mode']}'s {auc[report['mode']]:.3f}): calibrate --mode {best} (edgeae eval compares them on test rows)",
                       err=True)  # fmt: skip
        return
    if mode or train_rows or f1:
        raise EdgeaeError("--mode, --train-rows and --f1 go with --data: --db keeps the export's scorer and sets a sensor's threshold")
    if not sensor:
        raise EdgeaeError("--db needs --sensor: the sensor whose threshold its packets set")
    from .results import damage_named
    from .score import calibrate_sensor

    with damage_named(db):
        report = calibrate_sensor(export_dir, db, list(dict.fromkeys(sensor)), since, until, rule, q)[1]
    click.echo(json.dumps(report, indent=2))
    click.echo(RESTART_SERVE, err=True)


@main.command()
@click.argument("export_dirs", metavar="EXPORT_DIR...", nargs=-1, required=True, type=NonEmptyPath())
@click.option("--db", required=True, type=NonEmptyPath(dir_okay=False), help="SQLite database for results.")
@click.option("--mqtt", "broker", help=f"Subscribe on this MQTT broker: {BROKER_HELP}")
@click.option("--topic", default="edgeae/+/up", show_default=True, help="MQTT topic pattern.")
@click.option("--packets", type=NonEmptyPath(dir_okay=False), help="Read a packet file instead of MQTT.")
@click.option("--keys", type=NonEmptyPath(dir_okay=False), help="JSON {sensor: hex key}: require valid tags.")
@click.option("--envelope", type=click.Choice(ENVELOPES),
              help="With --mqtt: messages are a LoRaWAN network server's uplinks (JSON, the packet in base64): The Things Stack "
                   "(--topic 'v3/+/devices/+/up') or ChirpStack (--topic 'application/+/device/+/event/up').")  # fmt: skip
@click.option("--client-id", help="With --mqtt: the MQTT client id, whose session the broker keeps while serve is stopped, "
                                  "holding the packets published meanwhile [default: edgeaeserve<hash of --db and --topic>].")
@click.option("--clean-session", is_flag=True,
              help="With --mqtt: ask the broker to keep no session (for one that refuses to); what is published while serve is stopped is lost.")
@click.option("--state-topic", help="With --mqtt: publish each sensor's state (anomalous or not, since which packet), retained, "
                                    "on this topic whenever it changes, for a dashboard or an alarm ({sensor} is replaced), "
                                    "e.g. 'edgeae/{sensor}/state'.")  # fmt: skip
@click.option("--status-topic", help="With --mqtt: keep serve's availability on this topic, retained: 'online' while it runs, "
                                     "'offline' once it stops or (from the broker) dies, e.g. 'edgeae/serve/status'.")  # fmt: skip
@click.option("--silent-after", type=Number(0, min_open=True), metavar="SECONDS",
              help="With --mqtt: a sensor from which no packet came for this long is silent (a flat battery, a broken link): "
                   "said on stderr and, with --state-topic, published in its state until a packet comes again; "
                   "e.g. three times its packet interval.")  # fmt: skip
def serve(export_dirs, db, broker, topic, packets, keys, envelope, client_id, clean_session, state_topic, status_topic, silent_after):
    """Validate, decode, score and store packets; reject bad ones with a reason. Stops on SIGTERM;
    SIGHUP reads the exports (a sensor's threshold set by calibrate) and the keys file again.

    Several exports: each packet goes to the one whose model id it carries (a fleet moving to a
    new model sends packets of both; with one export, the others' are rejected as wrong_model)."""
    from . import serve as serve_

    if (broker is None) == (packets is None):
        raise EdgeaeError("give exactly one of --mqtt and --packets")
    if envelope and packets:
        raise EdgeaeError("--envelope goes with --mqtt (a packet file holds packets)")
    if (client_id is not None or clean_session or state_topic is not None or status_topic is not None or silent_after) and packets:
        raise EdgeaeError("--client-id, --clean-session, --state-topic, --status-topic and --silent-after go with --mqtt")
    if client_id == "":  # an unset $ID: another session than the one the broker kept, whose packets serve would never fetch
        raise EdgeaeError("--client-id is empty: give the session's id, or leave --client-id out for one made from --db and --topic")
    from . import wire

    records = wire.read_packet_file(packets) if packets else None
    if broker is not None:
        from .mqtt import check_topic, parse_broker, sensor_topic

        broker_at = parse_broker(broker).address
        check_topic(topic, wildcards=True)
        if state_topic is not None:
            sensor_topic(state_topic, 0, "--state-topic")
        if status_topic is not None:
            check_topic(status_topic, wildcards=False, option="--status-topic")
        require("paho.mqtt.client", "serve")  # before the database is made
    made = not Path(db).exists()
    server = serve_.Server(export_dirs, db, serve_.load_keys(keys) if keys else None, notify=lambda m: click.echo(m, err=True),
                           envelope=envelope, state_topic=state_topic, silent_after=silent_after)  # fmt: skip
    subscribed = False
    try:
        if packets:
            server.run_packets(records)
        else:
            stop = serve_.stop_on_signals()
            client_id = client_id or ("" if clean_session else serve_.session_id(db, topic))
            who = "keeping no session" if clean_session else f"as {client_id}, its session kept"
            from .host import Hosts

            def ready():
                nonlocal subscribed
                subscribed = True
                click.echo(f"serving {topic} on {broker_at} into {db}, {who} (SIGTERM to stop, SIGHUP to read the exports' scorers "
                           "and the keys again)", err=True)  # fmt: skip

            load = lambda: Hosts(export_dirs, serve_.load_keys(keys) if keys else None)  # noqa: E731
            server.run_mqtt(broker, topic, stop, client_id=client_id, keep_session=not clean_session, status_topic=status_topic,
                            reload=serve_.reload_on_sighup(), load=load, ready=ready)  # fmt: skip
    finally:
        server.close()
        if broker and made and not subscribed:  # the broker never reached: no empty database left behind
            Path(db).unlink(missing_ok=True)
    reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(server.rejected.items()))
    click.echo(f"stored {server.stored}, rejected {server.rejected.total()}"
               + (f" ({reasons}; kept, raw, in the rejected table of {db})" if reasons else "")
               + (f"; {server.unscored} stored unscored, without the residual byte the scorer "
                  f"(mode {'/'.join(sorted({h.scorer.mode for h in server.hosts.by_id.values()}))}) needs "
                  "(edgeae calibrate --mode code scores codes alone)" if server.unscored else "")
               + (f"; {server.redelivered} sent again by the broker after a reconnect, kept once" if server.redelivered else ""), err=True)  # fmt: skip


@main.command()
@click.argument("db", type=NonEmptyPath(dir_okay=False))
@click.option("--parquet", type=NonEmptyPath(dir_okay=False), help="Also write the packets table as Parquet.")
@click.option("--plot", type=NonEmptyPath(dir_okay=False), help="Also draw each sensor's anomaly score over time, with the threshold that flagged it, "
                                                                  "into this PNG (needs the eval extra).")  # fmt: skip
@click.option("--since", callback=_moment, help="Only what came in since this time: ISO 8601, Unix seconds, or days ago ('7d', '0.5d').")
def results(db, parquet, plot, since):
    """Summarise a serve database: packets per sensor, gaps, reordering, rejections."""
    from . import results as results_

    plot, parquet = (check_writable(path) if path else None for path in (plot, parquet))
    for wanted, module, extra in ((parquet, "pyarrow", "serve"), (plot, "matplotlib", "eval")):  # before any output
        if wanted:
            require(module, extra)
    with results_.damage_named(db):
        summary = results_.summary(db, since)
        shown = json.dumps(summary, indent=2)  # before any file is written: one not written for a summary that cannot be shown
        # the files are written before the summary prints: a refusal (nothing to plot, a full disk) comes alone, not after a success
        if plot:
            from .report import RESULTS_SENSORS, results_plot

            series = results_.score_series(db, RESULTS_SENSORS, since)
            if not series and since is not None:
                raise EdgeaeError(f"{db}: no packet came in since {summary['since']}: nothing to plot")
            click.echo(f"scores plotted in {results_plot(series, plot, results_.thresholds(db, series), len(summary['per_sensor']))}", err=True)
        if parquet:
            click.echo(f"packets written to {results_.to_parquet(db, parquet, since=since)}", err=True)
        click.echo(shown)


@main.command()
@click.argument("db", type=NonEmptyPath(dir_okay=False))
@click.option("--before", required=True, callback=_moment,
              help="Archive what came in before this time: ISO 8601 (UTC unless it gives its offset), Unix seconds, or days ago ('30d').")
@click.option("--out", required=True, type=NonEmptyPath(file_okay=False), help="A new folder for the archive (one is never replaced).")
def archive(db, before, out):
    """Move what a serve database received before a time into Parquet files, so that it stops growing.

    The packets and rejected messages that came in before --before, and the gaps filled before it,
    go to --out (packets.parquet, rejected.parquet, missing.parquet, archive.json) and leave the
    database, whose freed space serve then reuses. Safe beside a running serve, which waits only
    while the rows are deleted (about a second a million): the folder is on the disk before. serve
    still rejects a replay of an archived packet; a late packet filling an open gap is still let
    in. From cron: --before 90d."""
    from . import results as results_

    report = results_.archive(db, before, out, notify=lambda m: click.echo(m, err=True))
    if report is None:
        click.echo(f"{db}: nothing came in before {results_.iso_utc(before)}; nothing archived", err=True)
    else:
        click.echo(json.dumps(report, indent=2))


def _need_recipe(protocol: str, recipe_path) -> None:
    """SKAB's and NAB's protocols fix the window and the channels: a recipe says them (models/)."""
    if recipe_path is None and protocol != "generic":
        raise EdgeaeError(f"--protocol {protocol} needs --recipe (models/{protocol}.toml: the protocol's window and channels)")


def _protocol_data(protocol: str, data: tuple, files: int | None):
    """`--data` as the protocol reads it: generic, every path given; SKAB's and NAB's, their folder."""
    if files is not None and protocol != "skab":
        raise EdgeaeError("--files is for --protocol skab (the first N of its files)")
    if protocol == "generic":
        return data
    if len(data) > 1:
        raise EdgeaeError(f"--protocol {protocol} reads one --data: the {protocol.upper()} folder")
    return data[0]


@main.command(name="eval")
@click.argument("export_dir", required=False, type=NonEmptyPath())
@click.option("--data", required=True, multiple=True, type=NonEmptyPath(),
              help="Labelled data: a CSV / .npz file or a folder of them (again for more), or the protocol's SKAB / NAB folder.")
@click.option("--out", type=NonEmptyPath(file_okay=False),
              help="Output folder (metrics.json, scores for the report) [default: reports/<the export's name>, with --protocol the recipe's].")
@click.option("--protocol", type=click.Choice(["skab", "nab", "generic"]), help="Train, prune and export as the protocol says (skab and nab need --recipe).")
@click.option("--recipe", "recipe_path", type=NonEmptyPath(), help="Recipe for --protocol [generic's default: " + DEFAULT_RECIPE + "].")
@click.option("--sparsity", type=Number(), default=0.5, show_default=True, help="Also evaluate an export pruned to this sparsity (protocols).")
@click.option("--files", type=click.IntRange(min=1), help="SKAB: only the first N files.")
@click.option("--train-rows", callback=_rows, help="Rows START:STOP (of each file) to fit thresholds and baselines on, and with --protocol generic the "
                                   "model too (default: the recipe's train_rows there, else the rows before each file's first anomaly).")
@click.option("--thresholds", type=click.Choice(["pooled", "per-file"]),
              help="Over several files (an export, or --protocol generic): one threshold per detector from all their training "
                   "windows, as one export is deployed [default: pooled]; or each file's own, as sensors each calibrated on "
                   "their own (calibrate --db --sensor), its baselines fitted on it too.")  # fmt: skip
@click.option("--sensor", type=click.IntRange(0, SENSOR_IDS[-1]),
              help="With an export: judge its scorer at this sensor's own threshold (calibrate --db --sensor), as serve judges "
                   "that sensor's packets [default: the export's threshold].")  # fmt: skip
@seed_option
@quiet_option
def eval_(export_dir, data, out, protocol, recipe_path, sparsity, files, train_rows, thresholds, sensor, seed, quiet):
    """Detection and compression quality on labelled data, beside baselines and published results."""
    from . import evaluate

    if protocol:
        if export_dir:
            raise EdgeaeError("--protocol trains its own models: give no export")
        if sensor is not None:
            raise EdgeaeError("--sensor goes with an export, whose scorer holds the sensors' thresholds; --protocol trains its own models")
        _need_recipe(protocol, recipe_path)
        for option, given in (("--train-rows", train_rows), ("--thresholds", thresholds)):
            if given and protocol != "generic":
                raise EdgeaeError(f"{option} is for an export or --protocol generic: {protocol}'s protocol sets its own")
        recipe = _load_recipe(recipe_path, seed, data)
        out = out or Path("reports") / recipe.name
        m = evaluate.evaluate_protocol(protocol, recipe, _protocol_data(protocol, data, files), out,
                                       sparsity=sparsity, files=files, progress=not quiet,
                                       train_rows=train_rows, per_file=thresholds == "per-file")  # fmt: skip
    elif export_dir:
        ctx = click.get_current_context()  # --sparsity has a default: whether it was given, not its value
        given = [option for option, param in (("--recipe", "recipe_path"), ("--sparsity", "sparsity"), ("--files", "files"), ("--seed", "seed"))
                 if ctx.get_parameter_source(param) not in (None, click.core.ParameterSource.DEFAULT)]  # fmt: skip
        if given:
            raise EdgeaeError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for --protocol, which trains; an export is already trained")
        out = out or Path("reports") / Path(export_dir).resolve().name
        m = evaluate.evaluate_export(export_dir, data, out, train_rows, progress=not quiet,
                                     per_file=thresholds == "per-file", sensor=sensor)  # fmt: skip
    else:
        raise EdgeaeError("give an export directory, or --protocol")
    click.echo(evaluate.summary_text(m, out))
    if protocol:
        _recipe_note(recipe_path)


@main.command()
@click.option("--recipe", "recipe_path", type=NonEmptyPath(), help="Model recipe (TOML) [default with --protocol generic: " + DEFAULT_RECIPE + "].")
@click.option("--data", required=True, multiple=True, type=NonEmptyPath(),
              help="Labelled data: a CSV / .npz file or a folder of them (again for more; one model over them), or the SKAB folder with --protocol skab.")
@click.option("--code-sizes", default="2,4,8,16,32", show_default=True, help="Code sizes to train, comma-separated (an int8 code: bytes per window).")
@click.option("--protocol", type=click.Choice(["generic", "skab"]), default="generic", show_default=True,
              help="generic: one model over the files' training rows; skab: SKAB's published protocol, one model per file.")
@click.option("--files", type=click.IntRange(min=1), help="SKAB: only the first N files.")
@click.option("--out", type=NonEmptyPath(file_okay=False), help="Output folder (rd.json) [default: reports/<the recipe's name>-rd].")
@seed_option
@quiet_option
def sweep(recipe_path, data, code_sizes, protocol, files, out, seed, quiet):
    """Rate-distortion: code size vs reconstruction SNR and ROC-AUC, autoencoder vs PCA (int8 codes)."""
    from . import evaluate, wire

    _need_recipe(protocol, recipe_path)
    sizes = _positive_ints(code_sizes, "--code-sizes")
    if max(sizes) > wire.MAX_CODE:
        raise EdgeaeError(f"--code-sizes: {max(sizes)} is more than the {wire.MAX_CODE} values a packet carries")
    recipe = _load_recipe(recipe_path, seed, data)
    out = out or Path("reports") / f"{recipe.name}-rd"
    rd = evaluate.sweep(recipe, _protocol_data(protocol, data, files), out, sizes, protocol, files, progress=not quiet)
    click.echo(f"{'bytes':>6}{'packet':>8}{'AE SNR dB':>11}{'PCA SNR dB':>12}{'AE AUC':>8}{'PCA AUC':>9}")
    for k, a, p, x, y in zip(sizes, rd["autoencoder_int8"]["snr_db"], rd["pca_int8"]["snr_db"],
                             rd["autoencoder_int8"]["roc_auc"], rd["pca_int8"]["roc_auc"]):  # fmt: skip
        click.echo(f"{k:>6}{wire.packet_size(k):>8}{a:>11.2f}{p:>12.2f}{x:>8.4f}{y:>9.4f}")
    click.echo(f"packet: with header, residual byte, CRC and tag; LoRaWAN carries {wire.LORAWAN_SLOW_PAYLOAD} bytes at EU868's slowest data rates\n"
               f"written to {out}/rd.json")
    _recipe_note(recipe_path)


@main.command()
@click.argument("folder", type=NonEmptyPath())
@click.option("--out", type=NonEmptyPath(file_okay=False), help="Write the page and PNGs here instead.")
@quiet_option
def report(folder, out, quiet):
    """One self-contained HTML page (plots embedded) from an eval or sweep folder, or a training
    run (its loss per epoch and per-layer sparsity)."""
    from .report import render

    click.echo(f"report written to {render(folder, out, progress=not quiet)}")

"""The CLI: one-line errors and non-zero exits, and the runtime half without TensorFlow."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, save_npz
from edgeae import simulate
from edgeae.errors import EdgeaeError

# Makes `import tensorflow` (and tf_keras, TFMOT) fail, as on a gateway without the train extra.
NO_TF = "import sys\nfor m in ('tensorflow', 'tf_keras', 'tensorflow_model_optimization'): sys.modules[m] = None\n"


def edgeae(*args, no_tf=False, hide=(), cwd=ROOT):
    """Run the CLI in a fresh interpreter; `no_tf` / `hide` make those modules fail to import."""
    hidden = "".join(f"sys.modules[{m!r}] = None\n" for m in hide)
    code = (NO_TF if no_tf else "") + ("import sys\n" + hidden if hidden else "") + "from edgeae.cli import main\nmain()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, cwd=cwd)


def assert_one_line_error(proc, pattern, stream=False):
    """The command failed with one line on stderr, its error, naming `pattern` (`stream`: after the
    status line `encode --data -` prints before it reads a row)."""
    assert proc.returncode != 0
    lines = [l for l in proc.stderr.splitlines() if not (stream and "reading CSV rows from stdin" in l)]
    assert len(lines) == 1 and lines[0].startswith("edgeae: error:"), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert pattern in lines[0], lines[0]


def assert_option_refused(proc, message):
    """The command refused an option's value before it ran (click's usage error, or edgeae's own):
    exit code 2, `message` on stderr, no traceback."""
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_help_does_not_import_tensorflow():
    code = "import sys\nfrom edgeae.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\nprint('tensorflow' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip().endswith("False"), proc.stdout
    assert "edgeae demo" in proc.stdout


def test_shell_completion_as_the_readme_says():
    """Click's completion (the README's `eval "$(_EDGEAE_COMPLETE=bash_source edgeae)"`) through
    edgeae's group, by the installed `edgeae` script, whose name the variable carries."""
    script = str(Path(sys.executable).parent / "edgeae")

    def complete(words):
        env = {**os.environ, "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1), "_EDGEAE_COMPLETE": "bash_complete"}
        return subprocess.run([script], env=env, capture_output=True, text=True).stdout.split()

    assert complete("edgeae ser") == ["plain,serve"] and complete("edgeae serve --ke") == ["plain,--keys"]
    assert "_edgeae_completion" in subprocess.run([script], env={**os.environ, "_EDGEAE_COMPLETE": "bash_source"}, capture_output=True, text=True).stdout


def test_python_api_functions_survive_their_modules_import(small_export):
    """edgeae.train / export / verify are functions in modules of the same name: importing a module
    replaced the function on the package, so the README's `edgeae.verify(...)` failed the second
    time ("'module' object is not callable")."""
    code = ("import types\nimport edgeae.train, edgeae.export, edgeae.verify\nimport edgeae\n"
            "assert all(isinstance(getattr(edgeae, n), types.FunctionType) for n in ('train', 'export', 'verify'))\n"
            f"print(edgeae.verify({str(small_export)!r}).passed, edgeae.verify({str(small_export)!r}).passed)")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.split() == ["True", "True"], proc.stderr


def test_dir_lists_the_public_api_before_it_is_loaded():
    code = "import edgeae\nprint(' '.join(dir(edgeae)))"
    names = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert {"train", "export", "verify", "Export", "simulate", "EdgeaeError", "__version__"} <= names
    assert not names & {"sys", "types", "import_module"}


def test_verify_runs_without_tensorflow(small_export, sim_test):
    proc = edgeae("verify", small_export, "--data", sim_test, "--json", no_tf=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["passed"] and report["auc_int8"] > 0.8


def test_verify_over_several_files(small_export, sim_test_files):
    """--data a folder, or again for more (it took one file): every file's windows, none across two."""
    from edgeae import data as D
    from edgeae.manifest import Export

    ex = Export.open(small_export)
    files = [D.read_series(sim_test_files / n) for n in ("a.npz", "b.npz")]
    for data in ([sim_test_files], [sim_test_files / "a.npz", "--data", sim_test_files / "b.npz"]):
        proc = edgeae("verify", small_export, "--data", *data, "--json", no_tf=True)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["data_windows"] == sum(len(D.windows(s, ex.window, ex.hop)) for s in files)
        assert report["anomalous_windows"] == sum(D.window_labels(s, ex.window, ex.hop).sum() for s in files)
        assert report["passed"] and report["auc_int8"] > 0.8


def test_train_without_tensorflow_says_what_to_install(tmp_path, sim_train):
    proc = edgeae("train", "--recipe", ROOT / "models" / "mlperf-ad.toml", "--data", sim_train, "--out", tmp_path / "r", no_tf=True)
    assert_one_line_error(proc, "needs the training extra")


def test_verify_exit_code_on_floor(small_export):
    proc = edgeae("verify", small_export, "--min-sqnr", "200")
    assert proc.returncode == 1 and "FAIL" in proc.stdout


@pytest.mark.parametrize(
    "csv, pattern",
    [
        ("vib_x,vib_y,current\n1,2,3\n", "missing channel column(s) 'temperature'"),
        ("vib_x,vib_y,current,temperature\n1,2,3,4\n1,,3,4\n", "row(s) with NaN, inf or values beyond"),
        ("vib_x,vib_y,current,temperature\n" + "1,2,3,4\n" * 20, "fewer than one window of 160"),
    ],
    ids=["missing-column", "nan-row", "window-longer-than-data"],
)
def test_train_bad_data(tmp_path, csv, pattern):
    data = tmp_path / "d.csv"
    data.write_text(csv)
    proc = edgeae("train", "--recipe", ROOT / "models" / "mlperf-ad.toml", "--data", data, "--out", tmp_path / "run")
    assert_one_line_error(proc, pattern)
    assert not (tmp_path / "run").exists()
    assert not list(tmp_path.glob(".run*"))  # no temporary leftovers


def test_without_a_recipe_or_an_out_folder_the_defaults_run(tmp_path, sim_train):
    """`edgeae train --data F` works as it stands: the default recipe (every numeric column),
    named after the data, its run in runs/<name>; then export, eval and sweep without --out write
    dist/<name>, reports/<name> and reports/<name>-rd. SKAB's and NAB's protocols still need recipes."""
    proc = edgeae("train", "--data", sim_train, "--epochs", "1", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "note: no --recipe: the default recipe, a dense autoencoder (64-32 units, code 8) on windows of 64 rows every 16 of " \
           "every numeric column" in proc.stdout  # fmt: skip
    assert re.search(r"^trained train on \d+ windows: 1 epoch, loss", proc.stdout, re.M), proc.stdout
    used = json.loads((tmp_path / "runs" / "train" / "recipe.json").read_text())
    assert used["name"] == "train" and used["model"]["hidden"] == [64, 32] and "channels" not in used["data"]
    assert json.loads((tmp_path / "runs" / "train" / "data.json").read_text())["channels"] == ["vib_x", "vib_y", "current", "temperature"]
    proc = edgeae("export", "--int8", Path("runs") / "train", cwd=tmp_path)  # and export's folder named after the run's
    assert proc.returncode == 0 and f"export written to {Path('dist') / 'train'}" in proc.stdout, proc.stderr
    assert (tmp_path / "dist" / "train" / "manifest.json").is_file()
    proc = edgeae("eval", Path("dist") / "train", "--data", sim_train, "--quiet", cwd=tmp_path)  # eval's, the export's
    assert proc.returncode == 0 and (tmp_path / "reports" / "train" / "metrics.json").is_file(), proc.stderr
    proc = edgeae("sweep", "--data", sim_train, "--code-sizes", "2", "--quiet", cwd=tmp_path)  # sweep's, the recipe's
    assert proc.returncode == 0 and (tmp_path / "reports" / "train-rd" / "rd.json").is_file(), proc.stderr
    for command in ("eval", "sweep"):
        assert_one_line_error(edgeae(command, "--protocol", "skab", "--data", tmp_path, "--out", tmp_path / "o"),
                              "--protocol skab needs --recipe (models/skab.toml")  # fmt: skip
    assert_one_line_error(edgeae("eval", "--protocol", "nab", "--data", tmp_path, "--out", tmp_path / "o"), "--protocol nab needs --recipe")
    # refused without a recipe: the error alone, not the default recipe's note above it
    for command in (["train"], ["eval", "--protocol", "generic"], ["sweep"]):
        assert_one_line_error(edgeae(*command, "--data", tmp_path / "none.csv", cwd=tmp_path), "none.csv: no such CSV or .npz file")
    proc = edgeae("train", "--data", sim_train, "--train-rows", "5:3", cwd=tmp_path)
    assert_option_refused(proc, "Invalid value for '--train-rows': must have 0 <= START < STOP, got '5:3'")
    assert "note" not in proc.stdout + proc.stderr


def test_train_unknown_recipe_key(tmp_path, sim_train):
    r = tmp_path / "r.toml"
    r.write_text('[model]\nkind = "dense"\n[train]\nepoch = 3\n')
    assert_one_line_error(edgeae("train", "--recipe", r, "--data", sim_train), "unknown key(s) train.epoch")


def test_export_and_verify_bad_inputs(tmp_path, small_run, small_export):
    assert_one_line_error(edgeae("export", small_run, "--out", tmp_path / "x"), "pass --int8")
    assert_one_line_error(edgeae("export", "--int8", tmp_path / "nothing", "--out", tmp_path / "x"), "not a run directory")
    other = save_npz(tmp_path / "o.npz", simulate.machine(seconds=5, seed=2).select(["vib_x", "vib_y"]))
    assert_one_line_error(edgeae("export", "--int8", small_run, "--out", tmp_path / "x", "--calibration", other), "missing channel column")
    assert_one_line_error(edgeae("verify", small_export, "--data", other), "missing channel column")
    assert_one_line_error(edgeae("verify", tmp_path), "not an edgeae export")
    # one given where the other goes: said so, with what to do (was: no manifest.json / six files missing)
    assert_one_line_error(edgeae("verify", small_run), f"not an edgeae export (no manifest.json); it is a training run: "
                                                       f"`edgeae export --int8 {small_run} --out dist/NAME` makes its export")  # fmt: skip
    assert_one_line_error(edgeae("export", "--int8", small_export, "--out", tmp_path / "x"),
                          f"{small_export}: an export, not a training run: export takes the run it came from")  # fmt: skip
    assert not (tmp_path / "x").exists()
    s = simulate.machine(seconds=5, seed=2)
    faulty = save_npz(tmp_path / "f.npz", type(s)(s.values, s.channels, np.ones(len(s), np.int8), s.source))
    assert_one_line_error(edgeae("verify", small_export, "--data", faulty), "every window is labelled anomalous")


def test_an_error_quoting_a_line_break_stays_on_one_line(tmp_path, small_export):
    """A quoted CSV cell, or a file's name, may hold a line break; the error quoting it went over
    two lines, so a log or a script reading the last line got half of it."""
    data = tmp_path / "d.csv"
    data.write_text('vib_x,vib_y,current,temperature\n1,2,3,4\n1,"2\n3",3,4\n')
    assert_one_line_error(edgeae("verify", small_export, "--data", data, no_tf=True), "row 2, column 'vib_y': '2\\n3' is not a number")
    assert_one_line_error(edgeae("verify", tmp_path / "a\nb", no_tf=True), "a\\nb: no such")


@pytest.mark.parametrize("args, message", [
    (["verify", "{x}", "--max-runtime-gap", "1e300"], "'--max-runtime-gap': 1e+300 is not in the range 0<=x<=100"),  # was an OverflowError
    (["verify", "{x}", "--max-runtime-noise", "1e300"], "'--max-runtime-noise': 1e+300 is not in the range 0<=x<=65025"),  # was numpy's warning
    (["verify", "{x}", "--arena", str(2**64)], "'--arena': 18446744073709551616 is not in the range 1<=x<=1073741824"),  # was the model's bytes in an error
    (["bench", "{x}", "--threads", str(2**64)], "'--threads': 18446744073709551616 is not in the range 1<=x<=256"),  # was LiteRT's traceback
    (["eval", "--protocol", "skab", "--recipe", "models/skab.toml", "--data", "{x}", "--files", "-1"], "'--files': -1 is not in the range x>=1"),  # as the option says it, not later
    (["eval", "{x}", "--data", "{d}", "--files", "2", "--sparsity", "0.5"], "--sparsity, --files are for --protocol, which trains"),  # were ignored
    (["eval", "{x}", "--data", "{d}", "--recipe", "models/skab.toml"], "--recipe is for --protocol, which trains; an export is already trained"),
])  # fmt: skip
def test_an_option_out_of_its_range_is_refused_before_the_command_runs(tmp_path, small_export, sim_test, args, message):
    """A scratch fuzz of the TensorFlow-free commands' options (nan, inf, -1, 0, 1e300, 2^64, '', ...)
    found these let by; an option that only --protocol uses was ignored beside an export."""
    proc = edgeae(*[a.format(x=small_export, d=sim_test) for a in args], no_tf=True)
    assert_option_refused(proc, message)


@pytest.mark.parametrize("args, option", [
    (["serve", "{x}", "--packets", "{p}", "--db", ""], "--db"),  # was an in-memory database: every packet stored, then lost
    (["serve", "{x}", "--packets", "{p}", "--db", "{d}", "--keys", ""], "--keys"),  # was no keys: untagged packets accepted
    (["train", "--data", ""], "--data"),  # was the current folder's files
    (["encode", "{x}", "--data", "", "--sensor", "1", "--out", "p.bin"], "--data"),
    (["verify", ""], "EXPORT_DIR"),
])  # fmt: skip
def test_an_empty_path_is_refused(tmp_path, small_export, args, option):
    """`--db "$DB"` with the variable unset is an empty path, which Python takes for the current
    folder and sqlite for a temporary database: refused, naming the option."""
    packets = tmp_path / "p.bin"
    packets.write_bytes(b"")
    proc = edgeae(*[a.format(x=small_export, p=packets, d=tmp_path / "r.sqlite") for a in args], cwd=tmp_path)
    assert_option_refused(proc, f"Invalid value for '{option}': is empty (an unset variable?)")
    assert not (tmp_path / "r.sqlite").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, message", [
    (["bench", "{x}", "--batches", "1,0"], "edgeae: error: --batches must be comma-separated positive integers"),
    (["bench", "{x}", "--repeats", "0"], "Invalid value for '--repeats'"),
    (["bench", "{x}", "--threads", "0"], "Invalid value for '--threads'"),
    (["bench", "{x}", "--out", "/nonexistent/b.json"], "edgeae: error: /nonexistent/b.json: folder /nonexistent does not exist"),
    (["verify", "{x}", "--max-residual-error", "-1"], "Invalid value for '--max-residual-error'"),
    (["calibrate", "{x}", "--data", "{x}", "--rule", "percentile", "--q", "2"], "Invalid value for '--q'"),
    (["train", "--data", "{x}", "--seed", "-1"], "Invalid value for '--seed'"),  # was numpy's traceback after the data was read
    (["simulate", "--out", "{x}/s.csv", "--seed", "-1"], "Invalid value for '--seed'"),  # numpy's traceback too
    # NaN passes click's float and its ranges: sent every window, numpy's traceback, every export failed
    (["encode", "{x}", "--data", "{x}", "--sensor", "1", "--out", "-", "--every", "nan"], "Invalid value for '--every': nan is not a finite number"),
    (["calibrate", "{x}", "--data", "{x}", "--rule", "percentile", "--q", "nan"], "Invalid value for '--q': nan is not a finite number"),
    (["verify", "{x}", "--min-sqnr", "nan"], "Invalid value for '--min-sqnr': nan is not a finite number"),
    (["verify", "{x}", "--max-residual-error", "inf"], "Invalid value for '--max-residual-error': inf is not a finite number"),
])  # fmt: skip
def test_numeric_options_out_of_range(small_export, args, message):
    """Refused before anything runs (they ended in numpy / LiteRT tracebacks or in a nonsense ceiling)."""
    proc = edgeae(*[a.format(x=small_export) for a in args])
    assert_option_refused(proc, message)


def test_calibrate_rows_without_two_windows_name_the_rows(small_export, sim_test):
    scorer = small_export / "scorer.json"
    before = scorer.read_bytes() if scorer.exists() else None
    proc = edgeae("calibrate", small_export, "--data", sim_test, "--train-rows", "100000:200000")
    assert_one_line_error(proc, "0 windows of 32 rows in rows 100000:200000 (")
    assert (scorer.read_bytes() if scorer.exists() else None) == before


def test_demo_never_overwrites_a_folder_of_yours(tmp_path):
    """`demo --out project` wrote project/data/train.npz over whatever was there."""
    from edgeae import demo

    (tmp_path / "data").mkdir()
    for name in ("train.npz", "test.npz"):
        (tmp_path / "data" / name).write_text("mine")
    with pytest.raises(EdgeaeError, match="data: exists and is not an earlier output of this command"):
        demo.run(tmp_path, seconds=1, progress=False)
    shutil.rmtree(tmp_path / "data")
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "notes.txt").write_text("mine")
    with pytest.raises(EdgeaeError, match="export: exists and is not an earlier output"):
        demo.run(tmp_path, seconds=1, progress=False)  # refused before anything is written
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["export", "notes.txt"]


@pytest.mark.slow
def test_demo_replaces_its_own_earlier_output(tmp_path):
    from edgeae import demo

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / demo.DATA_MARKER).write_text("{}")
    (tmp_path / "data" / "old.npz").write_text("from an earlier run")
    summary = demo.run(tmp_path, seconds=1, progress=False)
    assert summary["report"].passed
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [demo.DATA_MARKER, "test.npz", "train.npz"]
    suggested = demo.summary(summary).splitlines()[-1]  # the commands the summary ends with, for the plots, run as given
    assert suggested.startswith("the plots: edgeae eval ")
    for command in suggested.removeprefix("the plots: ").split(" && "):
        proc = edgeae(*command.split()[1:])
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "report" / "report.html").is_file()


@pytest.mark.parametrize("edit, named", [
    (lambda m: m.pop("window"), "window"),
    (lambda m: m.update(code_size="eight"), "code_size"),
    (lambda m: m["device"]["residual"].update(scale=None), "device.residual.scale"),
    (lambda m: m["artifacts"].update({"encoder_int8.tflite": {}}), "artifacts.encoder_int8.tflite"),
])  # fmt: skip
def test_hand_edited_manifest_is_named(tmp_path, small_export, edit, named):
    """A manifest with a key removed or of the wrong type was read until something raised a
    KeyError or TypeError (a traceback) wherever that key was first used."""
    bad = tmp_path / "bad"
    shutil.copytree(small_export, bad)
    m = json.loads((bad / "manifest.json").read_text())
    edit(m)
    (bad / "manifest.json").write_text(json.dumps(m))
    for command in ("verify", "inspect"):
        assert_one_line_error(edgeae(command, bad), f"missing or malformed {named} (damaged or hand-edited)")


def test_manifest_window_that_does_not_fit_the_encoder_is_named(tmp_path, small_export):
    """A hand-edited window length passed verify (its reference windows come from the export
    itself); only encode found out, one window later."""
    bad = tmp_path / "bad"
    shutil.copytree(small_export, bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["window"]["length"] += 1
    (bad / "manifest.json").write_text(json.dumps(m))
    assert_one_line_error(edgeae("verify", bad), f"a window of {m['window']['length']} rows x {len(m['window']['channels'])} channels "
                                                 f"does not match the encoder's input shape {m['window']['input_shape']}")  # fmt: skip


def _halve_window(m):
    m["window"]["length"] //= 2
    m["window"]["input_shape"] = [n // 2 for n in m["window"]["input_shape"][:1]] + m["window"]["input_shape"][1:]


@pytest.mark.parametrize("edit, message", [
    (_halve_window, "encoder_int8.tflite: its window shape is"),
    (lambda m: m.update(code_size=m["code_size"] - 1, code_bytes=m["code_bytes"] - 1), "encoder_int8.tflite: its code size is"),
    (lambda m: m["quantization"]["code"].update(scale=m["quantization"]["code"]["scale"] * 2), "its code quantization is"),
    (lambda m: m["quantization"]["input"].update(zero_point=m["quantization"]["input"]["zero_point"] + 1), "its input quantization is"),
    (lambda m: m["quantization"]["input"].update(dtype="uint8"), "encoder_int8.tflite: its input type is int8, the manifest says uint8"),
    (lambda m: m["quantization"]["code"].update(dtype="uint8"), "encoder_int8.tflite: its code type is int8, the manifest says uint8"),
    (lambda m: m["device"]["residual"].update(dtype="uint8"), "device_int8.tflite: its outputs, window shape, input, code or residual quantization"),
])  # fmt: skip
def test_manifest_that_does_not_describe_its_models_is_named(tmp_path, small_export, sim_test, edit, message):
    """A manifest edited consistently with itself (window and input shape together, a code size, a
    code scale) passed verify: only encode found a wrong shape out, and a wrong code size or scale
    would have had serve reject every packet as the wrong length, or decode codes with the wrong scale.
    Found by fuzzing: a residual type of uint8 over an int8 output passed all but verify's residual
    check, and serve would have read every residual byte 128 steps off."""
    bad = tmp_path / "bad"
    shutil.copytree(small_export, bad)
    m = json.loads((bad / "manifest.json").read_text())
    edit(m)
    (bad / "manifest.json").write_text(json.dumps(m))
    for args in (("verify", bad), ("encode", bad, "--data", sim_test, "--sensor", "1", "--out", tmp_path / "p.bin")):
        proc = edgeae(*args)
        assert_one_line_error(proc, message)
        assert "(a hand-edited manifest or a model from another export)" in proc.stderr
    assert not (tmp_path / "p.bin").exists()


def test_device_model_from_another_export_is_named(tmp_path, small_run, small_export, sim_test):
    """Another export of the same run, calibrated on other data: its device model fits the window and
    the code size, but its input and code scales are not the manifest's, so the host would have
    decoded its packets with the wrong constants. With its hash put in the manifest, verify passed."""
    from edgeae.export import export

    other = export(small_run, tmp_path / "other", calibration=sim_test)
    bad = tmp_path / "bad"
    shutil.copytree(small_export, bad)
    shutil.copy(other / "device_int8.tflite", bad / "device_int8.tflite")
    m = json.loads((bad / "manifest.json").read_text())
    data = (bad / "device_int8.tflite").read_bytes()
    m["artifacts"]["device_int8.tflite"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (bad / "manifest.json").write_text(json.dumps(m))
    assert_one_line_error(edgeae("verify", bad), "device_int8.tflite: its outputs, window shape, input, code or residual "
                                                 "quantization are not the manifest's (a hand-edited manifest or a model from another export)")  # fmt: skip


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["device"]["residual"].update(scale=float("nan")), "residual quantization are not the manifest's"),
    (lambda m: m["device"]["residual"].update(scale=-1.0), "residual quantization are not the manifest's"),
    (lambda m: m["window"].update(hop=0), "window.hop must be >= 1"),
    (lambda m: m["device"]["residual"].update(dtype="x"), "device.residual.dtype must be int8 or uint8, got 'x'"),
    (lambda m: m["quantization"]["code"].update(dtype="int16"), "quantization.code.dtype must be int8 or uint8, got 'int16'"),
    (lambda m: m.update(code_bytes=0), "code_bytes 0 is not code_size"),
    (lambda m: m.update(recipe="x"), "malformed recipe: its data's label and time must be column names"),
    (lambda m: m["recipe"].update(data=[]), "malformed recipe: its data's label and time must be column names"),
    (lambda m: m["recipe"]["data"].update(label=1), "malformed recipe: its data's label and time must be column names"),
    (lambda m: m["device"].update(residual_power=4, residual_byte_scale=float("nan")), "device.residual_byte_scale must be a positive number"),
    (lambda m: m["window"].update(row_period_s=0), "window.row_period_s must be a positive number, got 0"),
    (lambda m: m["window"].update(row_period_s="1ms"), "window.row_period_s must be a positive number, got '1ms'"),
    (lambda m: m["normalization"].update(std=[0.0] * len(m["normalization"]["std"])), "malformed normalization (ValueError: mean and std"),
    (lambda m: m["normalization"].update(mean="uint8"), "malformed normalization (ValueError"),
    (lambda m: m["normalization"]["mean"].__setitem__(0, 1e300), "malformed normalization (ValueError: mean and std"),
    (lambda m: m.update(artifacts="x"), "missing or malformed artifacts (damaged"),
    (lambda m: m.update(artifacts=True), "missing or malformed artifacts (damaged"),
    (lambda m: m["normalization"].update(channels=7), "malformed normalization (TypeError"),
    (lambda m: m["normalization"].update(highpass={"nope": 5}), "malformed normalization (ValueError: highpass"),
    (lambda m: m["normalization"].update(channels=m["normalization"]["channels"][::-1]), "the normalization's channels"),
])  # fmt: skip
def test_manifest_values_that_cannot_be_right_are_named(tmp_path, small_export, edit, message):
    """Found by fuzzing the manifest: a residual scale of NaN passed verify (NaN fails no floor) and
    would have left every packet unscored; a hop of 0 passed verify; a normalization of strings or
    of the wrong length was a traceback (ValueError, TypeError) wherever it was first used; artifacts
    that were not a table, a traceback (AttributeError); a mean beyond float32, numpy's overflow
    warning above the error; a code_bytes of 0, a ZeroDivisionError in eval."""
    bad = tmp_path / "bad"
    shutil.copytree(small_export, bad)
    m = json.loads((bad / "manifest.json").read_text())
    edit(m)
    (bad / "manifest.json").write_text(json.dumps(m))
    assert_one_line_error(edgeae("verify", bad), message)


def test_eval_reads_no_figure_the_manifest_merely_repeats(tmp_path, small_export, sim_test):
    """Found by fuzzing the manifest: eval took the raw window's bytes from raw_bytes_per_window,
    which nothing checks; a hand-edited one was a TypeError traceback. It is the window's rows x
    channels x 2."""
    bad = tmp_path / "bad"
    shutil.copytree(small_export, bad)
    m = json.loads((bad / "manifest.json").read_text())
    raw = m.pop("raw_bytes_per_window")["int16"]
    (bad / "manifest.json").write_text(json.dumps(m))
    proc = edgeae("eval", bad, "--data", sim_test, "--out", tmp_path / "e", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["bytes_per_window"]["raw_int16"] == raw


def test_a_stray_residual_byte_scale_is_left_alone(tmp_path, small_export):
    """Without a residual power the byte scale is unused and unchecked by type: comparing it was a TypeError."""
    bad = tmp_path / "bad"
    shutil.copytree(small_export, bad)
    m = json.loads((bad / "manifest.json").read_text())
    assert "residual_power" not in m["device"]
    m["device"]["residual_byte_scale"] = "x"
    (bad / "manifest.json").write_text(json.dumps(m))
    proc = edgeae("verify", bad)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("PASS"), proc.stderr


@pytest.mark.parametrize("outputs", [{"code": 5, "residual": 0}, {"code": 0, "residual": 1}])
def test_manifest_device_outputs_that_are_not_the_models_are_named(tmp_path, small_export, outputs):
    """An output index beyond the device model's two was an IndexError traceback; the two swapped
    would have read the residual as the code."""
    bad = tmp_path / "bad"
    shutil.copytree(small_export, bad)
    m = json.loads((bad / "manifest.json").read_text())
    assert m["device"]["outputs"] == {"code": 1, "residual": 0}
    m["device"]["outputs"] = outputs
    (bad / "manifest.json").write_text(json.dumps(m))
    assert_one_line_error(edgeae("verify", bad), "device_int8.tflite: its outputs, window shape, input, code or residual quantization")


def test_verify_truncated_tflite(tmp_path, small_export):
    bad = tmp_path / "bad"
    shutil.copytree(small_export, bad)
    f = bad / "encoder_int8.tflite"
    f.write_bytes(f.read_bytes()[:100])
    assert_one_line_error(edgeae("verify", bad), "truncated or altered")


TINY_RECIPE = textwrap.dedent("""
    [model]
    kind = "dense"
    hidden = [16]
    code_size = 4
    [data]
    window = 16
    hop = 8
    [train]
    epochs = 3
    [prune]
    epochs = 3
""")


def test_train_export_verify_through_the_cli(tmp_path, sim_train, sim_test):
    r = tmp_path / "tiny.toml"
    r.write_text(TINY_RECIPE)
    proc = edgeae("train", "--recipe", r, "--data", sim_train, "--out", tmp_path / "run", "--sparsity", "0.5", "--quiet", "--epochs", "2")
    assert proc.returncode == 0, proc.stderr
    assert "pruned to 50%" in proc.stdout and "enc_dense_0" in proc.stdout
    assert re.search(r"trained tiny on \d+ windows: 2 epochs", proc.stdout)  # --epochs over the recipe's 3
    assert "constant in the training windows" not in proc.stdout
    assert "note: the validation loss was still falling at the last epoch: more epochs" in proc.stdout
    assert f"(edgeae report {tmp_path / 'run'} draws its losses per epoch)" in proc.stdout
    proc = edgeae("export", "--int8", tmp_path / "run", "--out", tmp_path / "dist")
    assert proc.returncode == 0, proc.stderr
    assert "encoder_int8.tflite" in proc.stdout
    assert "packet: 28 bytes with the residual byte and tag, 24 without the tag (fits LoRaWAN's 51-byte" in proc.stdout
    proc = edgeae("verify", tmp_path / "dist", "--data", sim_test)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout


def test_the_note_on_constant_channels_counts_them():
    from edgeae.train import data_notes

    (one,), (two,) = data_notes({"constant_channels": ["current"]}), data_notes({"constant_channels": ["current", "temperature"]})
    assert "current is constant in the training windows" in one and "learns nothing of it, and once it moves" in one
    assert "current, temperature are constant" in two and "learns nothing of them, and once they move" in two  # was "of it"


def test_training_says_when_the_code_is_no_bottleneck(tmp_path):
    """A code as large as the window (the default code of 8 over one channel's window of 8) trained
    without a word; a plain autoencoder can then copy its input and flag nothing."""
    from conftest import small_recipe
    from edgeae.recipe import Denoise
    from edgeae.train import model_notes

    r = small_recipe(code_size=8)
    r.data.window = 8
    (note,) = model_notes(r, 1)
    assert "the code holds 8 values for windows of 8 rows x 1 channel = 8 values: no bottleneck" in note
    assert model_notes(r, 2) == []
    r.model.denoise = Denoise()
    assert model_notes(r, 1) == []  # overcomplete by design
    r.data.hop = 12  # 4 rows of every 12 in no window
    (note,) = model_notes(r, 1)
    assert note.startswith("the hop (12 rows) is longer than the window (8 rows): 4 rows of every 12 are in no window")
    s = simulate.machine(seconds=3, seed=0).select(["temperature"])
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "t"\n[model]\nkind = "dense"\nhidden = [8]\n[data]\nwindow = 8\nhop = 4\n[train]\nepochs = 1\n')
    proc = edgeae("train", "--recipe", recipe, "--data", save_npz(tmp_path / "t.npz", s), "--out", tmp_path / "run", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "note: the code holds 8 values for windows of 8 rows x 1 channel = 8 values: no bottleneck" in proc.stdout
    assert edgeae("report", tmp_path / "run").returncode == 0  # the run's page says it too
    assert "<b>Note:</b> the code holds 8 values" in (tmp_path / "run" / "report.html").read_text()


def test_training_says_when_it_cannot_read_the_time_column(tmp_path):
    """US-style dates: the run kept no rate, and nothing said so (rates are checked against it)."""
    s = simulate.machine(seconds=3, seed=0)
    rows = "".join(f"03/01/2026 00:00:{i / 1000:06.3f}," + ",".join(f"{v:.5f}" for v in r) + "\n" for i, r in enumerate(s.values))
    (tmp_path / "us.csv").write_text("time," + ",".join(s.channels) + "\n" + rows)
    (tmp_path / "tiny.toml").write_text(TINY_RECIPE)
    proc = edgeae("train", "--recipe", tmp_path / "tiny.toml", "--data", tmp_path / "us.csv", "--out", tmp_path / "run", "--quiet", "--epochs", "1")
    assert proc.returncode == 0, proc.stderr
    assert ("note: the time column cannot be read (" in proc.stdout and "row 1: time '03/01/2026 00:00:00.000' is neither Unix seconds "
            "nor an ISO 8601 date and time): the export will not know its rows' rate" in proc.stdout), proc.stdout  # fmt: skip
    assert json.loads((tmp_path / "run" / "data.json").read_text())["row_period_s"] is None


def test_a_file_without_the_recipes_label_column_trains_as_unlabelled(tmp_path):
    """A recipe naming its label column refused a CSV without it ("missing label column"), while an
    .npz without it was read as unlabelled: SKAB's anomaly-free.csv could not train with
    models/skab.toml. Now a CSV is read as an .npz is, and train says the file's rows all count as normal."""
    from edgeae import data as D

    s = simulate.machine(seconds=3, seed=0, schedule=[])
    (tmp_path / "healthy.csv").write_text(",".join(s.channels) + "\n" + "".join(",".join(f"{v:.5f}" for v in r) + "\n" for r in s.values))
    (tmp_path / "tiny.toml").write_text(TINY_RECIPE.replace("[data]\n", '[data]\nlabel = "fault"\n'))
    proc = edgeae("train", "--recipe", tmp_path / "tiny.toml", "--data", tmp_path / "healthy.csv", "--out", tmp_path / "run", "--quiet", "--epochs", "1")
    assert proc.returncode == 0, proc.stderr
    assert f"note: no label column 'fault' in {tmp_path / 'healthy.csv'}: its rows all count as normal" in proc.stdout, proc.stdout
    assert json.loads((tmp_path / "run" / "data.json").read_text())["unlabelled"] == [str(tmp_path / "healthy.csv")]
    (tmp_path / "other.csv").write_text("a,Anomaly\n1,0\n2,1\n")  # the recipe's name absent, a usual one there: taken, as from an .npz
    assert D.read_series(tmp_path / "other.csv", label="fault").labels.tolist() == [0, 1]


def test_only_jumps_in_the_training_rows_are_noted(tmp_path):
    """models/skab.toml trains on rows 0:400 of each file, and train noted the jumps further on in
    SKAB's files ("give them as separate files"), which joined no training window. A jump is now
    noted only within the training rows, its row counted from the file's first."""
    from dataclasses import replace

    from edgeae import recipe as R
    from edgeae.train import train

    s = simulate.machine(seconds=10, seed=0, schedule=[])
    times = simulate.START + 0.001 * np.arange(len(s)) + 600.0 * (np.arange(len(s)) >= 6000)
    data = save_npz(tmp_path / "joined.npz", replace(s, times=times))
    (tmp_path / "tiny.toml").write_text(TINY_RECIPE)
    r = R.load(tmp_path / "tiny.toml")
    r.train.epochs = r.prune.epochs = 1
    before = json.loads((train(r, data, tmp_path / "a", train_rows=(0, 4000), progress=False) / "data.json").read_text())
    assert before["time_jumps"] == {"count": 0, "step_s": 0.001}
    across = json.loads((train(r, data, tmp_path / "b", train_rows=(2000, 8000), progress=False) / "data.json").read_text())
    assert across["time_jumps"] == {"count": 1, "step_s": 0.001, "largest_s": pytest.approx(600.001), "row": 6001}


def test_training_that_diverges_is_refused(tmp_path, sim_train):
    """A learning rate far too high turned the loss NaN, and train wrote the run as if it were
    fine ('loss nan'); export then blamed its calibration windows for the NaN weights."""
    (tmp_path / "hot.toml").write_text(TINY_RECIPE.replace("epochs = 3\n[prune]", "epochs = 3\nlearning_rate = 1e6\n[prune]"))
    proc = edgeae("train", "--recipe", tmp_path / "hot.toml", "--data", sim_train, "--out", tmp_path / "run", "--quiet")
    assert_one_line_error(proc, "in epoch 1: training diverged; lower train.learning_rate in the recipe (now 1e+06)")
    assert re.search(r"error: train: the loss turned (nan|inf) in epoch 1", proc.stderr), proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_model_too_large_for_memory_is_refused_in_one_line(tmp_path, sim_train):
    """Found by fuzzing the recipes: TensorFlow's ResourceExhaustedError ('OOM when allocating
    tensor ...', a 1 TB weight matrix here) came out as a traceback; numpy's MemoryError did not."""
    (tmp_path / "big.toml").write_text(TINY_RECIPE.replace("hidden = [16]", "hidden = [4000000000]"))
    proc = edgeae("train", "--recipe", tmp_path / "big.toml", "--data", sim_train, "--out", tmp_path / "run", "--quiet")
    assert_one_line_error(proc, "not enough memory for the model (OOM when allocating tensor with shape[64,4000000000]): "
                                "fewer units, filters or a smaller batch")  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_training_says_what_it_notices_in_the_data(tmp_path):
    """Two things in training data were taken without a word. A constant channel (a disconnected
    sensor) was standardized with a std of 1: the model learned nothing of it, and in service,
    once the sensor works, every window looks anomalous. Recordings joined end to end (times that
    jump) make windows that join two stretches of signal. Training rows labelled anomalous (train
    rows given, over a fault) are learnt as normal."""
    from dataclasses import replace

    s = simulate.machine(seconds=10, seed=0)
    values = s.values.copy()
    values[:, simulate.CHANNELS.index("current")] = 0.0
    times = simulate.START + 0.001 * np.arange(len(s)) + 600.0 * (np.arange(len(s)) >= 4000)  # a second recording, 10 min on
    (tmp_path / "tiny.toml").write_text(TINY_RECIPE)
    data = save_npz(tmp_path / "stuck.npz", replace(s, values=values, times=times))
    proc = edgeae("train", "--recipe", tmp_path / "tiny.toml", "--data", data, "--out", tmp_path / "run", "--quiet", "--epochs", "1",
                  "--train-rows", "0:8000")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    faulty = int(s.labels[:8000].sum())
    assert faulty and f"note: {faulty} of the training rows 0:8000 are labelled anomalous: the model learns them as normal" in proc.stdout
    assert "note: current is constant in the training windows (a stuck or disconnected sensor?)" in proc.stdout, proc.stdout
    assert ("note: the rows' times jump 1 time (the largest by 600.001 s, before row 4001; the rows are 0.001 s apart elsewhere): "
            "a window across a jump joins two stretches of signal") in proc.stdout, proc.stdout  # fmt: skip
    assert "given as separate files (--data again, or a folder; `edgeae cut` writes them)" in proc.stdout  # the way out
    info = json.loads((tmp_path / "run" / "data.json").read_text())
    assert info["constant_channels"] == ["current"] and info["time_jumps"]["count"] == 1 and info["row_period_s"] == 0.001
    assert info["anomalous_train_rows"] == faulty
    assert edgeae("report", tmp_path / "run").returncode == 0  # the run's page says it too
    page = (tmp_path / "run" / "report.html").read_text()
    assert "validation windows, rows 0.001 s apart." in page and page.count("<b>Note:</b>") == 3
    assert "<b>Note:</b> current is constant in the training windows" in page


def test_rows_at_another_rate_than_the_exports_are_refused(tmp_path):
    """An encoder trained on rows 1 ms apart took rows 2 ms apart (a device sampling at 500 Hz)
    in every command without a word: it saw the machine's frequencies doubled. The export keeps
    its training rows' step; a recording, a calibration file or --period at another rate is
    refused, and encode stamps rows by that step unless told otherwise."""
    from conftest import small_recipe
    from edgeae import wire
    from edgeae.export import export
    from edgeae.train import train
    from test_device import _text

    assert edgeae("simulate", "--out", tmp_path / "m.csv", "--seconds", "20").returncode == 0  # rows 1 ms apart
    dist = export(train(small_recipe(), tmp_path / "m.csv", tmp_path / "run", progress=False), tmp_path / "dist")
    assert json.loads((dist / "manifest.json").read_text())["window"]["row_period_s"] == 0.001
    header, *rows = (tmp_path / "m.csv").read_text().splitlines()
    slow = tmp_path / "slow.csv"  # the same rows, 2 ms apart
    slow.write_text("\n".join([header] + [f"{1_767_225_600 + 0.002 * i:.3f},{r.split(',', 1)[1]}" for i, r in enumerate(rows)]) + "\n")

    said = "rows 0.002 s apart (500 Hz), the export's were 0.001 s apart (1000 Hz): at another rate the encoder sees another signal"
    for args in (("verify", dist, "--data", slow), ("calibrate", dist, "--data", slow), ("eval", dist, "--data", slow, "--out", tmp_path / "e"),
                 ("encode", dist, "--data", slow, "--sensor", 1, "--out", tmp_path / "p.bin")):  # fmt: skip
        assert_one_line_error(edgeae(*args), f"{slow}: {said}")
    with pytest.raises(EdgeaeError, match=re.escape(f"slow.csv: {said}")):
        export(tmp_path / "run", tmp_path / "d2", calibration=slow)
    assert not any((tmp_path / n).exists() for n in ("e", "p.bin", "d2", "dist/scorer.json"))
    assert edgeae("verify", dist, "--data", tmp_path / "m.csv").returncode == 0

    stream = "\n".join([header.split(",", 1)[1]] + [r.split(",", 1)[1] for r in rows]) + "\n"  # no times: stamped by row
    encode = [sys.executable, "-m", "edgeae", "encode", str(dist), "--data", "-", "--sensor", "1", "--out", "-", "--t0", "1700000000"]
    proc = subprocess.run([*encode, "--period", "0.002"], input=stream, capture_output=True, text=True, cwd=ROOT)
    assert_one_line_error(proc, f"--period 0.002: {said}")
    live = subprocess.run(encode[:-2], input=slow.read_bytes(), capture_output=True, cwd=ROOT)  # a live stream with its times
    assert_one_line_error(_text(live), f"<stdin>: {said}", stream=True)
    assert live.stdout == b""  # refused before the first packet left
    proc = subprocess.run(encode, input=stream.encode(), capture_output=True, cwd=ROOT)
    last = wire.decode(list(wire.unframe(proc.stdout))[-1])
    assert last.timestamp == 1_700_000_019  # its last window ends at row 19,999: 1 ms a row, not 1 s


def test_training_windows_of_several_files_never_span_two(tmp_path):
    """Recordings of a machine come as one file a day (or a load): training on them meant joining
    them by hand, and every window across a join learnt a seam as normal. Each file is windowed on
    its own; a file named twice, or at another rate, is refused."""
    from dataclasses import replace

    from conftest import small_recipe
    from edgeae.train import _time_info, data_notes, load_files, training_windows

    r = small_recipe()  # window 32, hop 8
    a, b = simulate.machine(seconds=1, seed=0, schedule=[]), simulate.machine(seconds=2, seed=1, schedule=[])
    (tmp_path / "days").mkdir()
    simulate.save(a, tmp_path / "days" / "1.npz", simulate.START), simulate.save(b, tmp_path / "days" / "2.npz", simulate.START)  # fmt: skip
    (tmp_path / "days" / "notes.txt").write_text("not data")
    parts = load_files(r, tmp_path / "days")
    assert [p.source for p in parts] == [str(tmp_path / "days" / n) for n in ("1.npz", "2.npz")]
    wa, wb = training_windows(r, parts, train_rows=(0, 1000))
    assert len(wa) == len(wb) == (1000 - 32) // 8 + 1  # the row range of each file
    np.testing.assert_array_equal(wb[0], b.values[:32])
    assert sum(map(len, training_windows(r, parts))) == (1000 - 32) // 8 + 1 + (2000 - 32) // 8 + 1  # none across the join
    assert _time_info(parts) == ({"count": 0, "step_s": 0.001}, None)
    with pytest.raises(EdgeaeError, match="given twice"):
        load_files(r, [tmp_path / "days", tmp_path / "days" / "2.npz"])
    slow = replace(b, times=np.array([f"{1e9 + 0.002 * i:.3f}" for i in range(len(b))]))
    with pytest.raises(EdgeaeError, match=r"rows 0.002 s apart, .*1.npz's 0.001 s: one model learns the signal at one rate"):
        _time_info([parts[0], slow])
    joined = replace(b, times=np.array([f"{1e9 + 0.001 * i + 5 * (i >= 500):.3f}" for i in range(len(b))]), source="2b.csv")
    jumps, _ = _time_info([parts[0], joined])
    assert jumps == {"count": 1, "step_s": 0.001, "largest_s": pytest.approx(5.001), "row": 501, "source": "2b.csv"}
    assert "jump 1 time (the largest by 5.001 s, before row 501 of 2b.csv; the rows are 0.001 s apart" in data_notes({"time_jumps": jumps})[0]
    us = replace(b, times=np.array(["03/01/2026"] * len(b)), source="us.csv")  # a time column train cannot read, beside ones it can
    jumps, unreadable = _time_info([parts[0], us])
    assert jumps == {"count": 0, "step_s": 0.001} and unreadable.startswith("us.csv: row 1: time '03/01/2026' is neither")
    (note,) = data_notes({"unreadable_times": unreadable, "row_period_s": 0.001})
    assert note.endswith("its rows' rate is not checked against the other files'")  # the export still knows the rate
    (tmp_path / "empty").mkdir()
    proc = edgeae("train", "--recipe", ROOT / "models" / "mlperf-ad.toml", "--data", tmp_path / "empty")
    assert_one_line_error(proc, "empty: a folder without CSV or .npz files")


def test_train_on_a_file_and_a_folder_through_the_cli(tmp_path):
    """Each file's last windows validate (with the last 10 % of all windows, the last file's
    conditions would never be trained on)."""
    (tmp_path / "tiny.toml").write_text(TINY_RECIPE)  # window 16, hop 8
    (tmp_path / "more").mkdir()
    for name, seconds, seed in (("a.npz", 3, 1), ("more/b.csv", 2, 2), ("more/c.csv", 1, 3)):
        simulate.save(simulate.machine(seconds=seconds, seed=seed, schedule=[]), tmp_path / name, simulate.START)
    proc = edgeae("train", "--recipe", tmp_path / "tiny.toml", "--data", tmp_path / "a.npz", "--data", tmp_path / "more",
                  "--out", tmp_path / "run", "--quiet", "--epochs", "1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    info = json.loads((tmp_path / "run" / "data.json").read_text())
    per_file = [(rows - 16) // 8 + 1 for rows in (3000, 2000, 1000)]
    assert info["files"] == 3 and info["source"] == ", ".join(str(tmp_path / n) for n in ("a.npz", "more/b.csv", "more/c.csv"))
    assert info["validation_windows"] == sum(int(n * 0.1) for n in per_file) == 73  # 74 were the last 10 % of all
    assert info["train_windows"] == sum(per_file) - 73 and info["row_period_s"] == 0.001
    assert f"trained tiny on {info['train_windows']} windows from 3 files" in proc.stdout


def test_train_rows_flag(tmp_path, sim_train):
    from conftest import small_recipe
    from edgeae.train import training_windows, load_files

    r = small_recipe()
    (w,) = training_windows(r, load_files(r, sim_train), train_rows=(0, 1000))
    assert len(w) == (1000 - 32) // 8 + 1
    with pytest.raises(EdgeaeError, match="0 <= start < stop"):  # the Python API: not sliced from the end
        training_windows(r, load_files(r, sim_train), train_rows=(-500, 1000))
    for rows in ("5", ""):  # "" (an unset variable) was the default rows
        proc = edgeae("train", "--recipe", ROOT / "models" / "skab.toml", "--data", sim_train, "--train-rows", rows)
        assert_option_refused(proc, f"Invalid value for '--train-rows': must be START:STOP, got {rows!r}")


def test_simulate_command(tmp_path):
    proc = edgeae("simulate", "--out", tmp_path / "m.csv", "--seconds", "2")
    assert proc.returncode == 0, proc.stderr
    huge = edgeae("simulate", "--out", tmp_path / "h.csv", "--seconds", "1e9")  # was a MemoryError's traceback
    assert_one_line_error(huge, "not enough memory (Unable to allocate")
    assert not (tmp_path / "h.csv").exists()
    from edgeae.data import read_series

    s = read_series(tmp_path / "m.csv")
    assert s.channels == simulate.CHANNELS and len(s) == 2000 and s.labels is not None
    np.testing.assert_allclose(s.values, simulate.machine(seconds=2).values, rtol=1e-4, atol=1e-4)


def test_simulate_stamps_its_recording_with_dates(tmp_path, small_export):
    """The time column counted seconds from 0, so a recording replayed through `encode` sent
    packets dated 1970, and serve's states and the results plot said so."""
    from datetime import datetime

    from edgeae import wire
    from edgeae.data import read_series

    assert edgeae("simulate", "--out", tmp_path / "m.csv", "--seconds", "2").returncode == 0
    s = read_series(tmp_path / "m.csv")
    assert s.times[0] == "2026-01-01T00:00:00.000Z" and s.times[-1] == "2026-01-01T00:00:01.999Z"
    np.testing.assert_allclose(np.diff(s.unix_times()), 0.001, atol=1e-6)
    proc = edgeae("encode", small_export, "--data", tmp_path / "m.csv", "--sensor", "1", "--out", tmp_path / "p.bin")
    assert proc.returncode == 0, proc.stderr
    stamps = [wire.decode(raw).timestamp for raw in wire.read_packet_file(tmp_path / "p.bin")]
    assert stamps and all(datetime.fromisoformat("2026-01-01T00:00:00Z").timestamp() <= t < s.unix_times()[-1] + 1 for t in stamps)

    assert edgeae("simulate", "--out", tmp_path / "m.npz", "--seconds", "2").returncode == 0  # an .npz keeps its times too
    npz = read_series(tmp_path / "m.npz")
    assert npz.unix_times()[0] == simulate.START == s.unix_times()[0] and npz.row_period() == 0.001
    assert edgeae("simulate", "--out", tmp_path / "b.csv", "--seconds", "1", "--start", "2024-05-01T12:00:00+02:00").returncode == 0
    assert read_series(tmp_path / "b.csv").unix_times()[0] == datetime.fromisoformat("2024-05-01T10:00:00Z").timestamp()
    before = time.time()
    assert edgeae("simulate", "--out", tmp_path / "n.csv", "--seconds", "1", "--start", "now").returncode == 0
    assert before - 1 < read_series(tmp_path / "n.csv").unix_times()[0] < time.time()
    proc = edgeae("simulate", "--out", tmp_path / "x.csv", "--start", "yesterday")
    assert proc.returncode == 2 and "neither Unix seconds nor an ISO 8601 date and time" in proc.stderr
    assert not (tmp_path / "x.csv").exists()


def test_simulate_chooses_faults_and_severity(tmp_path):
    """A user probing how small a fault the export still catches, or wanting a healthy
    recording to train on, had only the demo's four faults at full strength."""
    from edgeae.data import read_series

    assert edgeae("simulate", "--out", tmp_path / "h.npz", "--seconds", "4", "--faults", "none").returncode == 0
    assert read_series(tmp_path / "h.npz").labels.sum() == 0
    assert edgeae("simulate", "--out", tmp_path / "i.npz", "--seconds", "4", "--faults", "imbalance",
                  "--severity", "0.25").returncode == 0  # fmt: skip
    s = read_series(tmp_path / "i.npz")
    want = simulate.machine(seconds=4, severity=0.25, schedule=[("imbalance", 2.5, 3.5)])
    np.testing.assert_array_equal(s.labels, want.labels)
    np.testing.assert_allclose(s.values, want.values)
    proc = edgeae("simulate", "--out", tmp_path / "b.csv", "--faults", "imbalance,spall")
    assert proc.returncode == 2 and "unknown fault spall" in proc.stderr
    for faults in ("", ",,", "imbalance,", "none,imbalance"):  # was a healthy recording, or the faults without a word
        assert_option_refused(edgeae("simulate", "--out", tmp_path / "b.csv", "--faults", faults),
                              f"Invalid value for '--faults': must be fault names separated by commas, or 'none' alone, got {faults!r}")  # fmt: skip
    assert_one_line_error(edgeae("simulate", "--out", tmp_path / "b.csv", "--severity", "-1"), "fault severity")
    proc = edgeae("simulate", "--out", tmp_path / "b.csv", "--severity", "nan")  # refused by the option's type, as every float's NaN
    assert_option_refused(proc, "Invalid value for '--severity': nan is not a finite number")
    assert not list(tmp_path.glob("b*"))


def test_sigterm_mid_command_leaves_no_temporary_folders(tmp_path, sim_train):
    """SIGTERM killed at once, leaving the eval's per-run folders (megabytes per SKAB file) and
    TensorFlow's SavedModel folders in the temporary directory. Now: one line, exit 143, nothing left."""
    import os
    import signal
    import time

    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    code = "from edgeae.cli import main\nmain()"
    args = ["eval", "--protocol", "generic", "--recipe", ROOT / "models" / "mlperf-ad.toml", "--data", sim_train, "--out", tmp_path / "ev", "--quiet"]
    for _ in range(3):  # the signal lands at a different point of the work each time
        proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "TMPDIR": str(tmpdir)})  # fmt: skip
        deadline = time.monotonic() + 120
        while not any(p.is_file() for p in tmpdir.glob("edgeae-*/tmp*/*/**/*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # until the eval has written a run into its temporary folder
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=120)[1]
        assert proc.returncode == 143, err
        assert err.strip().splitlines() == ["edgeae: interrupted (SIGTERM); temporary files removed, no output half-written"], err
        assert not list(tmpdir.rglob("*")) and not (tmp_path / "ev").exists()
        assert not list(tmp_path.glob(".ev.*"))


def test_a_signal_during_the_output_swap_waits_for_it(tmp_path, monkeypatch):
    """A SIGTERM arriving while atomic_dir moves a finished output into place (old one aside, new one
    in) is handled once the swap is done, so the CLI's handler never finds the output missing."""
    import os
    import signal

    from edgeae import fsutil

    out = tmp_path / "out"
    out.mkdir()
    (out / "m.json").write_text("old")
    real_replace, seen = os.replace, []

    def replace_with_a_signal(src, dst):
        os.kill(os.getpid(), signal.SIGTERM)
        real_replace(src, dst)

    monkeypatch.setattr(fsutil.os, "replace", replace_with_a_signal)
    handler = fsutil.after_swap(lambda *_: seen.append((out / "m.json").read_text() if out.is_dir() else None))
    old = signal.signal(signal.SIGTERM, handler)
    try:
        with fsutil.atomic_dir(out, "m.json") as tmp:
            assert tmp in fsutil.PENDING
            (tmp / "m.json").write_text("new")
    finally:
        signal.signal(signal.SIGTERM, old)
    assert seen == ["new", "new"] and not fsutil.PENDING  # one signal per rename, both after the swap


def test_seed_option_replaces_the_recipes_training_seed(monkeypatch, tmp_path, sim_train):
    """train, eval --protocol and sweep take --seed, so a figure's spread over seeds needs no recipe edits."""
    import importlib

    from click.testing import CliRunner

    from edgeae import cli, evaluate

    T = importlib.import_module("edgeae.train")  # the module; edgeae.train is also the function

    seen = {}

    def stop(name):
        def record(recipe, *args, **kwargs):
            seen[name] = recipe.train.seed
            raise EdgeaeError("stopped before training")
        return record

    monkeypatch.setattr(T, "train", stop("train"))
    monkeypatch.setattr(evaluate, "evaluate_protocol", lambda protocol, recipe, *a, **k: stop("eval")(recipe))
    monkeypatch.setattr(evaluate, "sweep", stop("sweep"))
    recipe = ["--recipe", ROOT / "models" / "skab.toml", "--data", sim_train, "--out", tmp_path / "o"]
    for args in (["train", *recipe, "--seed", "3"], ["eval", "--protocol", "skab", *recipe, "--seed", "4"],
                 ["sweep", *recipe, "--seed", "5"], ["train", *recipe]):  # fmt: skip
        result = CliRunner().invoke(cli.main, list(map(str, args)))
        assert result.exit_code == 2 and "stopped before training" in result.output, result.output
    assert seen == {"train": 0, "eval": 4, "sweep": 5}  # the last train (no --seed) kept the recipe's 0
    result = CliRunner().invoke(cli.main, ["eval", str(tmp_path), "--data", str(sim_train), "--out", str(tmp_path / "o"), "--seed", "1"])
    assert result.exit_code == 2 and "--seed is for --protocol" in result.output

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, save_npz
from edgeae import simulate
from edgeae.errors import EdgeaeError
from edgeae.manifest import Export


def test_manifest_contents(small_export, small_run):
    m = json.loads((small_export / "manifest.json").read_text())
    assert m["format_version"] == 1
    assert set(m["artifacts"]) == {
        "encoder_int8.tflite", "encoder_float32.tflite", "decoder_float32.tflite", "device_int8.tflite",
        "reference_windows.npy", "reference_codes.npy", "reference_errors.npy",
    }  # fmt: skip
    assert m["window"] == {"length": 32, "hop": 8, "channels": simulate.CHANNELS, "input_shape": [128]}
    assert m["code_size"] == m["code_bytes"] == 4
    assert m["quantization"]["code"]["dtype"] == "int8" and m["quantization"]["input"]["scale"] > 0
    assert m["training_data_fingerprint"] == json.loads((small_run / "data.json").read_text())["fingerprint"]
    assert m["recipe"]["model"]["code_size"] == 4
    assert m["normalization"]["channels"] == simulate.CHANNELS


def test_encoder_is_full_int8(small_export):
    from edgeae.runtime import Model

    enc = Model(small_export / "encoder_int8.tflite")
    assert enc.input["dtype"] == np.int8 and enc.output["dtype"] == np.int8
    assert Model(small_export / "decoder_float32.tflite").input["dtype"] == np.float32


def test_export_is_byte_identical(small_run, small_export, tmp_path):
    from edgeae.export import export

    again = export(small_run, tmp_path / "again")
    for f in sorted(small_export.iterdir()):
        assert f.read_bytes() == (again / f.name).read_bytes(), f.name


def test_decoder_int8_on_request(small_run, tmp_path):
    from edgeae.export import export
    from edgeae.verify import verify

    out = export(small_run, tmp_path / "d8", decoder_int8=True)
    assert (out / "decoder_int8.tflite").is_file()
    assert verify(out).windows > 0


def test_calibration_file_with_other_channels_is_rejected(small_run, tmp_path):
    from edgeae.export import export

    s = simulate.machine(seconds=5, seed=2).select(["vib_x", "vib_y"])
    calib = save_npz(tmp_path / "calib.npz", s)
    with pytest.raises(EdgeaeError, match=r"missing channel column\(s\) 'current', 'temperature'"):
        export(small_run, tmp_path / "out", calibration=calib)
    assert not (tmp_path / "out").exists()


def test_calibration_file_is_used(small_run, small_export, tmp_path):
    from edgeae.export import export

    calib = save_npz(tmp_path / "calib.npz", simulate.machine(seconds=10, seed=5))
    out = export(small_run, tmp_path / "out", calibration=calib)
    assert (out / "encoder_int8.tflite").read_bytes() != (small_export / "encoder_int8.tflite").read_bytes()


def test_calibration_takes_only_the_windows_labelled_normal(small_run, tmp_path):
    """A labelled calibration file's faults were calibrated on too (calibration/README.md suggests
    a simulated recording, faults and all): the int8 input range grew fourfold and the residual byte
    came out 100 % off the float error. Now its windows over a fault are left out, as in training;
    the same file cut before its first fault gives the same encoder."""
    from edgeae.export import export

    s = simulate.machine(seconds=10, seed=5)
    first = int(np.argmax(s.labels))
    healthy = export(small_run, tmp_path / "h", calibration=save_npz(tmp_path / "h.npz", s.rows(0, first)))
    faulty = export(small_run, tmp_path / "f", calibration=save_npz(tmp_path / "f.npz", s.rows(0, first + 600)))
    assert (faulty / "encoder_int8.tflite").read_bytes() == (healthy / "encoder_int8.tflite").read_bytes()
    with pytest.raises(EdgeaeError, match="no window of 32 rows labelled normal to calibrate with"):
        export(small_run, tmp_path / "x", calibration=save_npz(tmp_path / "x.npz", s.rows(first, first + 600)))


def test_calibration_from_several_files(small_run, tmp_path):
    """--calibration a folder, or again for more (it took one file): the normal windows of each
    file, none across two; a file unlike the others is named."""
    from edgeae import data as D
    from edgeae.export import _calibration_windows, export

    s = simulate.machine(seconds=10, seed=5)
    first = int(np.argmax(s.labels))
    folder = tmp_path / "calib"
    folder.mkdir()
    parts = [s.rows(0, first // 2), s.rows(first // 2, None)]
    for name, part in zip("ab", parts):
        save_npz(folder / f"{name}.npz", part)
    norm = D.Normalizer.from_dict(json.loads((small_run / "normalization.json").read_text()))
    w = _calibration_windows(folder, norm, 32, 8, (32, 4), limit=10**6, seed=0, row_period=None)
    assert len(w) == sum(D.normal_windows_mask(p, 32, 8).sum() for p in parts)
    out = export(small_run, tmp_path / "out", calibration=folder)
    again = export(small_run, tmp_path / "again", calibration=[folder / "a.npz", folder / "b.npz"])
    assert (out / "encoder_int8.tflite").read_bytes() == (again / "encoder_int8.tflite").read_bytes()
    save_npz(folder / "c.npz", s.select(["vib_x", "vib_y"]))
    with pytest.raises(EdgeaeError, match=r"c.npz: missing channel column\(s\) 'current', 'temperature'"):
        export(small_run, tmp_path / "x", calibration=folder)


def test_incomplete_run(tmp_path):
    from edgeae.export import export

    (tmp_path / "run").mkdir()
    with pytest.raises(EdgeaeError, match="not a complete edgeae run"):
        export(tmp_path / "run", tmp_path / "out")


@pytest.mark.parametrize("name, text, message", [
    ("normalization.json", '{"channels": ["a"], "mean": [0], "std": [0]}', "ValueError: mean and std"),
    ("normalization.json", '{"channels": [', "JSONDecodeError"),
    ("data.json", "", "JSONDecodeError"),
    ("data.json", "[" * 100_000, "JSONDecodeError: nested too deeply"),  # a RecursionError traceback
    ("pruning.json", "{", "JSONDecodeError"),  # read outside the check: a traceback
])  # fmt: skip
def test_damaged_run_file_is_named(small_run, tmp_path, name, text, message):
    """A run's JSON files, damaged or hand-edited, were a traceback when exported."""
    import shutil

    from edgeae.export import export

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    (run / name).write_text(text)
    with pytest.raises(EdgeaeError, match=f"a damaged or hand-edited run file \\({message}"):
        export(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_calibration_that_overflows_the_device_model_is_named_not_a_crash(tmp_path, small_run):
    """Calibration rows of 1e19 (a file of uint64 maxima, say: still within float32) square to inf
    in the device model's residual, and TFLite's quantizer died of a segmentation fault (exit -11)
    calibrating it: the encoder and decoder were checked for that, the device model was not."""
    from test_cli import assert_one_line_error, edgeae

    s = simulate.machine(seconds=2, seed=3)
    s.values = np.full_like(s.values, 1.8e19)
    calib, out = save_npz(tmp_path / "huge.npz", s), tmp_path / "dist"
    proc = edgeae("export", "--int8", small_run, "--calibration", calib, "--out", out)
    assert_one_line_error(proc, "the calibration windows drive the device model's tensor '")
    assert "are they scaled as the model was trained?" in proc.stderr and not out.exists()


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_artifact_is_caught(small_export, tmp_path, damage):
    bad = tmp_path / "bad"
    shutil.copytree(small_export, bad)
    f = bad / "encoder_int8.tflite"
    data = bytearray(f.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(EdgeaeError, match="truncated or altered" if damage == "truncate" else "sha256 does not match"):
        Export.open(bad)


def test_not_an_export(tmp_path):
    with pytest.raises(EdgeaeError, match="no manifest.json"):
        Export.open(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(EdgeaeError, match="not valid JSON"):
        Export.open(tmp_path)
    (tmp_path / "manifest.json").write_text('{"a": ' * 100_000)  # Python's parser recursed into a RecursionError
    with pytest.raises(EdgeaeError, match="not valid JSON \\(nested too deeply"):
        Export.open(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format_version": ' + "1" * 5000 + "}")  # int() refuses: a ValueError traceback
    with pytest.raises(EdgeaeError, match="not valid JSON \\(Exceeds the limit \\(4300 digits\\) for integer string conversion"):
        Export.open(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format_version": 99}')
    with pytest.raises(EdgeaeError, match="format version 99"):
        Export.open(tmp_path)


def test_verify_reports_fidelity(small_export, sim_test):
    from edgeae.verify import verify

    rep = verify(small_export, data=sim_test)
    assert rep.passed, rep.table()
    assert rep.tflm_excess_noise <= rep.allowed_excess_noise
    assert rep.code_sqnr_db > 20 and rep.tflm_code_sqnr_db > 20
    assert rep.auc_float - rep.auc_int8 <= 0.01
    assert "ROC-AUC int8" in rep.table()
    assert rep.device_code_max_diff <= 1
    assert rep.residual_error_litert < 0.1 and rep.residual_error_tflm < 0.1, rep.table()
    from edgeae import data as D
    from edgeae.pipeline import Pipeline

    pipe, s = Pipeline(Export.open(small_export)), D.read_series(sim_test)
    w, normal = pipe.norm.windows(s, pipe.export.window, pipe.export.hop), D.window_labels(s, pipe.export.window, pipe.export.hop) == 0
    assert rep.data_windows == len(w) and rep.anomalous_windows == (~normal).sum()
    assert rep.data_error_float == pytest.approx(pipe.float_scores(w[normal]).mean())  # on the normal windows, each once


def test_verify_measures_fidelity_on_unlabelled_data_and_names_data_the_export_does_not_fit(small_export, tmp_path):
    """verify --data refused a recording without labels, though fidelity needs none: a user's own
    recording is what tells whether the int8 export holds up on their machine. It now measures it,
    under the same floors, and a recording far outside the calibrated range fails, saying why."""
    from edgeae.verify import verify

    def unlabelled(name, values):
        np.savez(tmp_path / name, data=values, channels=np.array(s.channels))
        return tmp_path / name

    s = simulate.machine(seconds=5, seed=2)
    rep = verify(small_export, data=unlabelled("u.npz", s.values))
    assert rep.passed, rep.table()
    assert rep.anomalous_windows is None and rep.auc_float is None and rep.data_windows > 0
    assert rep.data_code_sqnr_db > 20 and rep.data_input_clipped < 0.1 and abs(rep.data_error_increase) < 0.1  # faults included
    assert "no labels: all taken as normal" in rep.table()
    rep = verify(small_export, data=unlabelled("l.npz", s.values * 3))  # the same machine, three times the amplitude
    assert not rep.passed and rep.data_input_clipped > 0.5
    assert rep.failures == [f"on the data, code SQNR {rep.data_code_sqnr_db:.1f} dB < 20 dB and reconstruction error "
                            f"+{rep.data_error_increase:.1%} > +10% ({rep.data_input_clipped:.0%} of its windows lie beyond the int8 "
                            "input's range, which the calibration data set: export --calibration with data like these, or train on them)"]  # fmt: skip


def test_verify_channel_mismatch(small_export, tmp_path):
    from edgeae.verify import verify

    other = save_npz(tmp_path / "o.npz", simulate.machine(seconds=5, seed=2).select(["vib_x", "current"]))
    with pytest.raises(EdgeaeError, match="missing channel column"):
        verify(small_export, data=other)


def test_verify_fails_a_floor(small_export):
    from edgeae.verify import Floors, verify

    rep = verify(small_export, floors=Floors(min_code_sqnr_db=200))
    assert not rep.passed and "LiteRT code SQNR" in rep.failures[0]


def test_tflm_too_small_arena_is_an_error_not_a_crash(small_export):
    from edgeae.verify import verify

    with pytest.raises(EdgeaeError, match="TFLite Micro failed"):
        verify(small_export, arena_bytes=512)


def test_verify_runtime_agreement_gate(small_export):
    from edgeae.verify import Floors, verify

    rep = verify(small_export, floors=Floors(max_runtime_excess_noise=-100.0, max_runtime_sqnr_gap_db=-100.0))
    assert not rep.passed and "TFLite Micro codes add" in rep.failures[0]


def test_verify_fails_a_figure_that_is_nan(small_export, monkeypatch):
    """A figure that came out NaN (a residual constant or a model gone wrong) missed no floor:
    every check compared with > or <, which NaN never satisfies, so verify said PASS."""
    from edgeae.pipeline import Pipeline
    from edgeae.verify import verify

    monkeypatch.setattr(Pipeline, "residual", lambda self, residual_bytes: np.full(len(residual_bytes), np.nan))
    rep = verify(small_export)
    assert not rep.passed and [f.split(" ")[:3] for f in rep.failures] == [
        ["LiteRT", "residual", "byte"], ["TFLite", "Micro", "residual"]], rep.failures  # fmt: skip


def test_verify_device_model_gates(small_export):
    from edgeae.verify import Floors, verify

    rep = verify(small_export, floors=Floors(max_device_code_diff=-1, max_residual_error=0.0))
    assert [f.split(" ")[:3] for f in rep.failures] == [
        ["the", "device", "model's"], ["LiteRT", "residual", "byte"], ["TFLite", "Micro", "residual"]
    ], rep.failures


def test_same_quant_tolerates_float32_rounding_only():
    from edgeae.runtime import same_quant

    assert same_quant((0.2567908465862274, 36), (0.25679081678390503, 36))
    assert not same_quant((0.2567908465862274, 36), (0.2567908465862274, 35))
    assert not same_quant((0.2568, 36), (0.2567, 36))


def test_xnnpack_check_tool(small_export, tmp_path):
    """tools/xnnpack_check.py (run after a LiteRT upgrade, to see whether edgeae still needs to run
    without XNNPACK) compares every model of an export, batch after batch, and writes JSON."""
    tool = [sys.executable, str(ROOT / "tools" / "xnnpack_check.py")]
    out = tmp_path / "xnnpack.json"
    done = subprocess.run([*tool, str(small_export), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert set(report["models"]) == {p.name for p in small_export.glob("*.tflite")}
    for r in report["models"].values():
        assert len(r["max_abs_diff"]) == len(r["batches"]) and all(np.isfinite(r["max_abs_diff"]))
    assert max(report["models"]["encoder_int8.tflite"]["max_abs_diff"]) <= 1  # int8: rounding may differ by one step
    empty = subprocess.run([*tool, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert empty.returncode != 0 and "no .tflite models" in empty.stderr


def test_device_residual_counts_an_error_beyond_the_normal_ones_in_full(small_export):
    """The device squares each error in two int8 parts, within the normal windows' largest error
    and beyond it (export._device_model): errors beyond every normal one still count in full, as
    in the float error, and normal windows keep a fine step."""
    from edgeae.pipeline import Pipeline

    pipe = Pipeline(Export.open(small_export))
    windows, _, errors = pipe.export.reference()
    near = np.abs(pipe.reconstruct(pipe.float_codes(windows)) - windows.reshape(len(windows), pipe.export.window, -1)).max()
    spiked = windows[:8].reshape(8, -1).copy()
    spiked[:, 4:12] += 1.5 * near
    spiked = spiked.reshape(windows[:8].shape)
    float_error = pipe.float_scores(spiked)
    assert np.all(float_error > 1.5 * errors[:8]), float_error / errors[:8]
    np.testing.assert_allclose(pipe.residual(pipe.device_outputs(spiked)[1]), float_error, rtol=0.1)
    normal = pipe.residual(pipe.device_outputs(windows)[1])
    assert np.mean(np.abs(normal - errors)) / errors.mean() < 0.05

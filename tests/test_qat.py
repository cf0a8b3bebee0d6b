"""--qat: quantization-aware fine-tuning of the encoder, and the clear fallback where TFMOT cannot."""

import json

import pytest

from conftest import small_recipe
from edgeae import graph
from test_cli import edgeae

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("power", [1, 4], ids=["mean", "residual_power-4"])
def test_pruning_preserving_qat_exports_and_verifies(tmp_path, sim_train, sim_test, power):
    """With residual_power the device model also carries the QAT encoder (per-channel residuals); it
    stays integer-only."""
    from edgeae.export import export
    from edgeae.train import train
    from edgeae.verify import verify

    r = small_recipe()
    r.export.residual_power = power
    run = train(r, sim_train, tmp_path / "run", sparsity=0.5, qat=True, progress=False)
    assert json.loads((run / "history.json").read_text())["qat"]["applied"]
    assert (run / "encoder.h5").is_file()
    out = export(run, tmp_path / "dist")
    rep = verify(out, data=sim_test)
    assert rep.passed and rep.device_code_max_diff == 0, rep.table()
    assert rep.code_sqnr_db > 40  # the int8 encoder reproduces the fake-quantized one closely
    sparsities = [op.zero_weight_fraction for op in graph.read(out / "encoder_int8.tflite").ops if op.weights is not None]
    assert all(abs(s - 0.5) < 0.02 for s in sparsities), sparsities  # QAT kept the pruning
    device_ops = {op.name for op in graph.read(out / "device_int8.tflite").ops}
    assert not device_ops & {"DEQUANTIZE", "QUANTIZE"}, device_ops  # no float requantize pair at the input


@pytest.mark.parametrize(
    "kind, model, reason",
    [("dense", {"tied": True}, "breaks the tie"), ("conv1d", {}, "no QAT support for Conv1D")],
    ids=["tied", "conv1d"],
)
def test_qat_unavailable_says_why_and_falls_back(tmp_path, sim_train, kind, model, reason):
    from edgeae.train import train

    run = train(small_recipe(kind, **model), sim_train, tmp_path / "run", qat=True, progress=False)
    q = json.loads((run / "history.json").read_text())["qat"]
    assert not q["applied"] and reason in q["reason"] and "post-training quantization" in q["reason"]
    assert (run / "encoder.keras").is_file()


def test_qat_flag_in_the_cli(tmp_path, sim_train):
    r = tmp_path / "tied.toml"
    r.write_text('[model]\nkind = "dense"\nhidden = [16]\ncode_size = 4\ntied = true\n[data]\nwindow = 16\nhop = 8\n[train]\nepochs = 2\n')
    proc = edgeae("train", "--recipe", r, "--data", sim_train, "--out", tmp_path / "run", "--qat", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "quantization-aware fine-tuning: not applied: tied weights" in proc.stdout

"""Every variant trains, prunes to 50 % sparsity, exports to int8 and verifies."""

import json

import numpy as np
import pytest

from conftest import small_recipe

VARIANTS = {
    "plain": {},
    "tied": {"tied": True},
    "sparse-l1": {"sparse": {"kind": "l1", "weight": 1e-3}},
    "sparse-kl": {"sparse": {"kind": "kl", "weight": 1e-2, "target": 0.1}, "code_activation": "sigmoid"},
    "denoising-gaussian": {"denoise": {"kind": "gaussian", "stddev": 0.2}},
    "denoising-mask": {"denoise": {"kind": "mask", "rate": 0.2}},
    "tied+sparse+denoising": {"tied": True, "sparse": {"kind": "l1", "weight": 1e-3}, "denoise": {"kind": "gaussian", "stddev": 0.2}},
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dense", "conv1d"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_trains_prunes_exports_verifies(tmp_path, sim_train, sim_test, kind, variant):
    from edgeae.export import export
    from edgeae.train import train
    from edgeae.verify import verify

    r = small_recipe(kind, **VARIANTS[variant])
    run = train(r, sim_train, tmp_path / "run", sparsity=0.5, progress=False)

    report = json.loads((run / "pruning.json").read_text())
    encoder_layers = [l for l in report["layers"] if l["model"] == "encoder"]
    assert encoder_layers and all(abs(l["sparsity"] - 0.5) < 0.02 for l in encoder_layers)
    assert report["gzip_bytes_after"] < report["gzip_bytes_before"]
    if "tied" in variant:
        assert any(l.get("tied") for l in report["layers"])

    out = export(run, tmp_path / "dist")
    rep = verify(out, data=sim_test)
    assert rep.passed, rep.table()
    assert rep.auc_int8 > 0.8, rep.table()  # the simulated faults are plain to see


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dense", "conv1d"])
def test_tied_decoder_shares_the_pruned_kernel_and_unties_exactly(sim_train, kind):
    from edgeae import zoo
    from edgeae.train import load_files, training_windows

    r = small_recipe(kind, tied=True)
    enc, dec = zoo.build(r, 4)
    tied = [l for l in dec.layers if isinstance(l, (zoo.DenseTied, zoo.Conv1DTransposeTied))]
    assert tied and all(l.tied_to in enc.layers for l in tied)
    x = training_windows(r, load_files(r, sim_train))[0][:16].astype(np.float32)
    x = x.reshape((len(x),) + enc.input_shape[1:])
    code = enc(x)
    np.testing.assert_allclose(zoo.untie(dec)(code).numpy(), dec(code).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_training_is_repeatable(tmp_path, sim_train):
    from edgeae._tf import keras
    from edgeae.train import train

    runs = [train(small_recipe(), sim_train, tmp_path / f"r{i}", sparsity=0.5, progress=False) for i in range(2)]
    a, b = (keras.models.load_model(r / "encoder.keras").get_weights() for r in runs)
    for wa, wb in zip(a, b):
        np.testing.assert_array_equal(wa, wb)
    assert (runs[0] / "history.json").read_text() == (runs[1] / "history.json").read_text()

"""The shipped SKAB and NAB recipes on the real data in ../shared/data (read in place)."""

import pytest

from conftest import ROOT, SHARED
from edgeae import recipe

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")


@needs_shared
def test_skab_file_through_the_published_split(tmp_path):
    from edgeae.export import export
    from edgeae.train import train
    from edgeae.verify import verify

    r = recipe.load(ROOT / "models" / "skab.toml")
    data = SHARED / "skab" / "valve1" / "0.csv"
    run = train(r, data, tmp_path / "run", progress=False)
    assert (run / "data.json").read_text().count('"train_rows": [\n    0,\n    400\n  ]') == 1
    rep = verify(export(run, tmp_path / "dist"), data=data)
    assert rep.passed, rep.table()
    assert rep.device_code_max_diff == 0, rep.table()  # linear layers: see export._device_model
    assert rep.data_windows == 1147 - 60 + 1
    assert abs(rep.auc_int8 - rep.auc_float) <= 0.01, rep.table()


@needs_shared
def test_nab_recipe_trains_and_exports(tmp_path):
    from edgeae.export import export
    from edgeae.manifest import Export
    from edgeae.train import train
    from edgeae.verify import verify

    r = recipe.load(ROOT / "models" / "nab.toml")
    r.train.epochs = 10
    run = train(r, SHARED / "nab" / "machine_temperature_system_failure.csv", tmp_path / "run", progress=False)
    out = export(run, tmp_path / "dist")
    assert Export.open(out).channels == ["value"]
    assert verify(out).passed


@needs_shared
def test_linear_skab_model_exports(tmp_path):
    """A linear autoencoder on SKAB valve1/2: the converter gives the device model's code a scale one
    float32 ulp from the encoder's, which export once refused as a quantization mismatch."""
    from edgeae.export import export
    from edgeae.manifest import Export
    from edgeae.train import train

    r = recipe.load(ROOT / "models" / "skab.toml")
    assert r.model.activation == "linear"
    run = train(r, SHARED / "skab" / "valve1" / "2.csv", tmp_path / "run", progress=False)
    assert Export.open(export(run, tmp_path / "dist")).manifest["code_size"] == 8

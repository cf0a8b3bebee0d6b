"""A recipe with data.highpass, end to end: the filter is applied in training, carried in the export,
run by the device loop on files and on streams, and the firmware's C filter equals edgeae's."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, small_recipe
from edgeae import data as D
from edgeae import device, simulate, wire
from edgeae.manifest import Export
from edgeae.pipeline import Pipeline
from test_cli import edgeae
from test_device import _csv
from test_targets import CC

pytestmark = pytest.mark.slow
TAUS = {"temperature": 50.0}


@pytest.fixture(scope="module")
def hp_export(tmp_path_factory, sim_train):
    from edgeae.export import export
    from edgeae.train import train

    r = small_recipe()
    r.data.highpass = dict(TAUS)
    tmp = tmp_path_factory.mktemp("highpass")
    return export(train(r, sim_train, tmp / "run", progress=False), tmp / "dist", target="mcu")


def test_training_saw_the_filtered_channel(hp_export):
    norm = Export.open(hp_export).normalizer
    assert norm.highpass == TAUS
    t = norm.channels.index("temperature")
    assert abs(norm.mean[t]) < 0.1  # the raw temperature sits at ~45 degC; its high-pass near 0


def test_device_loop_filters_files_and_streams_alike(tmp_path, hp_export):
    ex = Export.open(hp_export)
    s = simulate.machine(seconds=2, seed=4)
    packets = [wire.decode(p) for p in device.Encoder(hp_export, 1).packets(device.windows_from_series(s, ex))]
    pipe = Pipeline(ex)
    codes = pipe.codes_int8(pipe.norm.windows(s, ex.window, ex.hop))
    assert [p.code for p in packets] == [tuple(int(v) for v in c) for c in codes]
    unfiltered = pipe.codes_int8(pipe.norm(D.windows(s, ex.window, ex.hop)))
    assert not np.array_equal(codes, unfiltered)

    csv = _csv(s, tmp_path / "s.csv")
    args = [sys.executable, "-m", "edgeae", "encode", str(hp_export), "--sensor", "5", "--t0", "0", "--period", "1", "--out", "-"]
    from_file = subprocess.run(args + ["--data", str(csv)], capture_output=True, cwd=ROOT)
    from_stdin = subprocess.run(args + ["--data", "-"], input=csv.read_bytes(), capture_output=True, cwd=ROOT)
    assert from_file.returncode == 0 and from_stdin.returncode == 0, from_stdin.stderr
    assert from_file.stdout == from_stdin.stdout and len(from_file.stdout) > 0


def test_verify_passes_on_labelled_data(hp_export, sim_test):
    proc = edgeae("verify", hp_export, "--data", sim_test, "--json", no_tf=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["passed"] and report["auc_int8"] > 0.9


@pytest.mark.skipif(CC is None, reason="no system C compiler")
def test_firmware_filter_equals_edgeaes(hp_export, tmp_path):
    ident = json.loads((hp_export / "manifest.json").read_text())["mcu"]["sources"]
    channels = Export.open(hp_export).channels
    rows = simulate.machine(seconds=1, seed=7).values[:500]
    rows.astype(np.float32).tofile(tmp_path / "in.bin")
    n = len(channels)
    (tmp_path / "f.c").write_text(f"""
#include <stdio.h>
#include "{ident}_config.h"
int main(int argc, char** argv) {{
  FILE* in = fopen(argv[1], "rb");
  FILE* out = fopen(argv[2], "wb");
  float row[{n}], level[{n}];
  for (int r = 0; fread(row, sizeof(float), {n}, in) == {n}; ++r)
    for (int c = 0; c < {n}; ++c) {{
      float y = edgeae_{ident}_highpass(row[c], c, level, r == 0);
      fwrite(&y, sizeof(float), 1, out);
    }}
  fclose(in);
  fclose(out);
  return 0;
}}
""")
    exe = tmp_path / "f"
    subprocess.run([CC, "-std=c99", "-Wall", "-Werror", f"-I{hp_export}", str(tmp_path / "f.c"), "-lm", "-o", str(exe)], check=True)
    subprocess.run([str(exe), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], check=True)
    firmware = np.fromfile(tmp_path / "out.bin", np.float32).reshape(rows.shape)
    expected = np.array(list(D.highpass_rows(rows, channels, TAUS)))
    np.testing.assert_array_equal(firmware, expected)

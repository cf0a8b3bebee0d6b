"""Device targets: MCU C sources, arena measurement, Edge TPU checker, inspect, bench."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, save_npz
from edgeae import graph, recipe, simulate, targets
from edgeae.errors import EdgeaeError
from test_cli import assert_one_line_error, edgeae

pytestmark = pytest.mark.slow
CXX, CC = shutil.which("g++"), shutil.which("gcc")


@pytest.fixture(scope="module", params=["mlperf-ad", "conv1d-vibration"])
def mcu_export(request, tmp_path_factory):
    """The shipped recipe's shape, trained briefly on rows 1 ms apart, exported with --target mcu."""
    from dataclasses import replace

    from edgeae.export import export
    from edgeae.train import train

    r = recipe.load(ROOT / "models" / f"{request.param}.toml")
    r.train.epochs, r.prune.epochs = 2, 2
    tmp = tmp_path_factory.mktemp(request.param)
    s = simulate.machine(seconds=40, seed=0)
    data = save_npz(tmp / "train.npz", replace(s, times=1_767_225_600 + 0.001 * np.arange(len(s))))
    run = train(r, data, tmp / "run", progress=False)
    return export(run, tmp / "dist", target="mcu")


def _ident(out):
    return json.loads((out / "manifest.json").read_text())["mcu"]["sources"]


@pytest.mark.skipif(CXX is None or CC is None, reason="no system C/C++ compiler")
def test_c_sources_compile_and_hold_the_model(mcu_export, tmp_path):
    ident = _ident(mcu_export)
    man = json.loads((mcu_export / "manifest.json").read_text())
    n = man["window"]["length"] * len(man["window"]["channels"])
    (tmp_path / "dump.cc").write_text(f"""
#include <cstdio>
#include <cstdint>
#include "{ident}_model_data.h"
#include "{ident}_device_model_data.h"
#include "{ident}_config.h"
static bool dump(const unsigned char* data, unsigned int len, const char* path) {{
  if ((reinterpret_cast<uintptr_t>(data) % 16) != 0) return false;
  std::FILE* f = std::fopen(path, "wb");
  std::fwrite(data, 1, len, f);
  std::fclose(f);
  return true;
}}
int main(int argc, char** argv) {{
  if (!dump(g_{ident}_model_data, g_{ident}_model_data_len, argv[1])) return 3;
  if (!dump(g_{ident}_device_model_data, g_{ident}_device_model_data_len, argv[2])) return 3;
  // quantize a fixed ramp of raw samples, as the firmware would
  std::FILE* q = std::fopen(argv[3], "wb");
  for (int i = 0; i < EDGEAE_{ident.upper()}_INPUT_SIZE; ++i) {{
    int c = i % EDGEAE_{ident.upper()}_NUM_CHANNELS;
    float raw = k_{ident}_mean[c] + k_{ident}_std[c] * (-4.0f + 8.0f * i / EDGEAE_{ident.upper()}_INPUT_SIZE);
    int8_t v = edgeae_{ident}_quantize_input(raw, c);
    std::fwrite(&v, 1, 1, q);
  }}
  std::fclose(q);
  return EDGEAE_{ident.upper()}_SAMPLE_RATE_HZ == 1000.0f ? 0 : 4;  // the rate of the rows it was trained on
}}
""")
    objects = []
    for data in (ident, f"{ident}_device"):
        objects.append(str(tmp_path / f"{data}.o"))
        subprocess.run([CXX, "-std=c++17", "-Wall", "-Werror", "-c", str(mcu_export / f"{data}_model_data.cc"),
                        "-o", objects[-1]], check=True)  # fmt: skip
    subprocess.run([CXX, "-std=c++17", "-Wall", "-Werror", f"-I{mcu_export}", str(tmp_path / "dump.cc"), *objects,
                    "-o", str(tmp_path / "dump")], check=True)  # fmt: skip
    subprocess.run([str(tmp_path / "dump"), str(tmp_path / "model.bin"), str(tmp_path / "device.bin"), str(tmp_path / "q.bin")], check=True)
    assert (tmp_path / "model.bin").read_bytes() == (mcu_export / "encoder_int8.tflite").read_bytes()
    assert (tmp_path / "device.bin").read_bytes() == (mcu_export / "device_int8.tflite").read_bytes()

    # The config header is valid C99 too, and the firmware's quantizer equals edgeae's.
    (tmp_path / "c.c").write_text(f'#include "{ident}_config.h"\nint f(void) {{ return edgeae_{ident}_quantize_input(1.0f, 0); }}\n'
                                  f'int g(void) {{ return edgeae_{ident}_residual_byte((const int8_t[]){{-128}}); }}\n')  # fmt: skip
    subprocess.run([CC, "-std=c99", "-Wall", "-Werror", f"-I{mcu_export}", "-c", str(tmp_path / "c.c"), "-o", str(tmp_path / "c.o")], check=True)
    from edgeae.data import Normalizer
    from edgeae.runtime import quantize

    norm = Normalizer.from_dict(man["normalization"])
    ch = np.arange(n) % len(norm.channels)
    raw = norm.mean[ch] + norm.std[ch] * (np.float32(-4.0) + np.float32(8.0) * np.arange(n, dtype=np.float32) / np.float32(n))
    z = ((raw.astype(np.float32) - norm.mean[ch]) / norm.std[ch]).astype(np.float32)
    expected = quantize(z, man["quantization"]["input"]["scale"], man["quantization"]["input"]["zero_point"])
    np.testing.assert_array_equal(np.frombuffer((tmp_path / "q.bin").read_bytes(), np.int8), expected)


    # The packet the firmware sends (edgeae_packet.c and the model id header, as the README shows)
    # is one the host takes for this export.
    from edgeae import wire
    from edgeae.manifest import Export

    (tmp_path / "p.c").write_text(f"""#include <stdio.h>
#include "edgeae_packet.h"
#include "{ident}_model_id.h"
#include "{ident}_config.h"
int main(void) {{
  int8_t code[EDGEAE_{ident.upper()}_CODE_SIZE] = {{-3, 5}};
  uint8_t packet[EDGEAE_PACKET_MAX_SIZE], key[16] = {{1, 2, 3}};
  size_t n = edgeae_packet(packet, sizeof(packet), EDGEAE_{ident.upper()}_MODEL_ID, 7, 41, 1700000000u, code,
                           EDGEAE_{ident.upper()}_CODE_SIZE, 200, key, sizeof(key));
  fwrite(packet, 1, n, stdout);
  return n == 0;
}}
""")
    subprocess.run([CC, "-std=c99", "-Wall", "-Werror", f"-I{mcu_export}", str(tmp_path / "p.c"), str(mcu_export / "edgeae_packet.c"),
                    "-o", str(tmp_path / "p")], check=True)  # fmt: skip
    raw = subprocess.run([str(tmp_path / "p")], capture_output=True, check=True).stdout
    readme = (mcu_export / "README.md").read_text()
    assert "sampled at 1000 Hz as the training data was" in readme
    assert re.search(r"A packet a window is a \d+-byte packet every \d+ ms, .* Over LoRaWAN, capture", readme)
    readme_packet = re.findall(r"```cpp\n(.*?)```", readme, re.S)[1]  # the README's packet code
    (tmp_path / "readme.cc").write_text(f'#include "{ident}_config.h"\n' + readme_packet)
    subprocess.run([CXX, "-std=c++17", "-Wall", "-Werror", f"-I{mcu_export}", "-c", str(tmp_path / "readme.cc"), "-o", str(tmp_path / "readme.o")],
                   check=True)  # fmt: skip
    ex = Export.open(mcu_export)
    p = wire.decode(raw, {7: bytes([1, 2, 3] + [0] * 13)}, {ex.model_id})
    assert (p.sensor, p.seq, p.timestamp, p.code[:3], p.residual, len(p.code)) == (7, 41, 1_700_000_000, (-3, 5, 0), 200, ex.manifest["code_size"])


def test_c_identifiers_are_ascii():
    """A recipe named 'pompe-été' gave symbols with an 'é', which older GCCs (many Arduino cores) refuse."""
    assert [targets.c_identifier(n) for n in ("pompe-été", "2x", "ok_1")] == ["pompe__t_", "m_2x", "ok_1"]


@pytest.mark.parametrize("model", ["encoder", "device"])
def test_op_resolver_lists_exactly_the_models_ops(mcu_export, model):
    ident = _ident(mcu_export) + ("_device" if model == "device" else "")
    text = (mcu_export / f"{ident}_op_resolver.h").read_text()
    registered = re.findall(r"resolver\.(Add\w+)\(\)", text)
    ops = graph.read(mcu_export / f"{model}_int8.tflite").op_names
    assert registered == [targets.MICRO_RESOLVER[op] for op in ops]
    assert len(set(registered)) == len(registered)
    count = int(re.search(r"OpCount = (\d+);", text).group(1))
    assert count == len(ops)


@pytest.mark.parametrize("model, key, define", [("encoder", "arena", "TENSOR_ARENA_SIZE"),
                                                ("device", "device_arena", "DEVICE_TENSOR_ARENA_SIZE")])  # fmt: skip
def test_stated_arena_runs_and_ten_percent_below_minimum_does_not(mcu_export, model, key, define):
    arena = json.loads((mcu_export / "manifest.json").read_text())["mcu"][key]
    path = mcu_export / f"{model}_int8.tflite"
    assert arena["stated_bytes"] >= arena["minimum_bytes"] >= 16
    assert targets._arena_runs(path, arena["stated_bytes"])
    assert targets._arena_runs(path, arena["minimum_bytes"])
    assert not targets._arena_runs(path, int(arena["minimum_bytes"] * 0.9))
    ident = _ident(mcu_export)
    assert f"_{define} {arena['stated_bytes']}\n" in (mcu_export / f"{ident}_config.h").read_text()


def test_device_model_runs_in_tflite_micro_as_the_encode_loop_runs_it(mcu_export):
    """What the firmware computes from the MCU export (TFLite Micro, the stated arena) is what
    `edgeae encode` puts in packets (LiteRT), to within one quantization step: the two
    runtimes' kernels round differently in a few values (see edgeae.verify)."""
    from edgeae.manifest import Export
    from edgeae.pipeline import Pipeline
    from edgeae.runtime import tflm_run

    ex = Export.open(mcu_export)
    pipe = Pipeline(ex)
    windows = ex.reference()[0][:64].reshape(-1, ex.window, len(ex.channels))
    code, residual = pipe.device_outputs(windows)
    outs = tflm_run(ex.device, pipe.device_input(windows), ex.manifest["mcu"]["device_arena"]["stated_bytes"])
    tflm_code, tflm_residual = (o.astype(int) for o in pipe.wire_outputs(outs))
    assert np.abs(tflm_code - code).max() <= 1 and np.mean(tflm_code != code) < 0.1
    assert np.abs(tflm_residual - residual.astype(int)).max() <= 1


def test_zoo_encoders_pass_the_edgetpu_checker(mcu_export, tmp_path):
    from edgeae.export import export

    run = mcu_export.parent / "run"
    out = export(run, tmp_path / "tpu", target="edgetpu", io_type="uint8")
    report = json.loads((out / "edgetpu_report.json").read_text())
    assert report["all_supported"], targets.edgetpu_table(report)
    assert report["split_at"] is None
    assert all(w is None or len(w.scale) == 1 for w in (op.weights for op in graph.read(out / "encoder_int8.tflite").ops))


def _int8_tflite(model, n_in, path):
    from edgeae.quantize import to_tflite

    rep = np.random.default_rng(0).normal(size=(64, *n_in)).astype(np.float32)
    path.write_bytes(to_tflite(model, rep, static_batch=True))
    return path


def test_edgetpu_checker_flags_an_unsupported_op_and_the_split(tmp_path):
    from edgeae._tf import keras

    inp = keras.Input((32,))
    x = keras.layers.Dense(16, name="d0")(inp)
    x = keras.layers.LeakyReLU(0.1, name="leaky")(x)
    x = keras.layers.Dense(4, name="d1")(x)
    path = _int8_tflite(keras.Model(inp, x), (32,), tmp_path / "m.tflite")
    report = targets.edgetpu_report(path)
    bad = [r for r in report["ops"] if not r["supported"]]
    assert [r["op"] for r in bad] == ["LEAKY_RELU"]
    assert report["split_at"] == bad[0]["index"] == 1
    assert report["ops"][0]["runs_on"] == "edgetpu" and report["ops"][-1]["runs_on"] == "cpu"
    assert "at op 1 (LEAKY_RELU)" in report["split"]
    assert "edgetpu_compiler" in targets.edgetpu_table(report)


def test_inspect_totals_match_a_hand_count(tmp_path):
    from edgeae._tf import keras

    inp = keras.Input((32, 2))
    ones = {"bias_initializer": "ones"}  # the converter drops all-zero biases
    x = keras.layers.Conv1D(4, 3, strides=2, padding="same", name="conv", **ones)(inp)  # out (16, 4)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, name="d0", **ones)(x)  # 64 -> 16
    x = keras.layers.Dense(4, name="d1", **ones)(x)  # 16 -> 4
    path = _int8_tflite(keras.Model(inp, x), (32, 2), tmp_path / "m.tflite")
    proc = edgeae("inspect", path, "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    conv_p, d0_p, d1_p = 3 * 2 * 4 + 4, 64 * 16 + 16, 16 * 4 + 4
    conv_m, d0_m, d1_m = 16 * 4 * (3 * 2), 64 * 16, 16 * 4
    assert d["totals"]["parameters"] == conv_p + d0_p + d1_p == 1136
    assert d["totals"]["macs_per_window"] == conv_m + d0_m + d1_m == 1472
    assert d["totals"]["flash_bytes"] == path.stat().st_size
    assert d["totals"]["output_bytes_per_window"] == 4
    assert d["totals"]["arena_bytes"]["stated_bytes"] > 0
    by_op = {r["op"]: r for r in d["ops"]}
    assert by_op["CONV_2D"]["macs"] == conv_m and by_op["CONV_2D"]["parameters"] == conv_p


def test_inspect_export_table(mcu_export):
    proc = edgeae("inspect", mcu_export, "--edgetpu")
    assert proc.returncode == 0, proc.stderr
    assert "MACs per window" in proc.stdout and "arena:" in proc.stdout
    # the MCU export keeps a dynamic batch dimension, which the Edge TPU compiler rejects
    assert "split: at op 0" in proc.stdout and "export --target edgetpu fixes the batch" in proc.stdout


def test_bench_writes_json(mcu_export, tmp_path):
    proc = edgeae("bench", mcu_export, "--repeats", "5", "--batches", "1,8", "--threads", "1", "--out", tmp_path / "b.json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads((tmp_path / "b.json").read_text())
    assert set(d["models"]) == {"int8", "float32"}
    for rows in d["models"].values():
        assert [r["batch"] for r in rows] == [1, 8]
        assert all(r["windows_per_s"] > 0 and r["p99_us_per_window"] >= r["p50_us_per_window"] for r in rows)
    import resource  # a full disk (a file size limit, as the process sees one): the error alone, not after the table

    proc = subprocess.run([sys.executable, "-m", "edgeae", "bench", mcu_export, "--repeats", "1", "--batches", "1", "--out", tmp_path / "c.json"],
                          capture_output=True, text=True, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64)))  # fmt: skip
    assert_one_line_error(proc, "c.json")
    assert proc.stdout == "" and not (tmp_path / "c.json").exists()


def test_bad_inputs(tmp_path, small_export):
    from edgeae._tf import keras
    from edgeae.quantize import to_tflite

    inp = keras.Input((8,))
    float_model = tmp_path / "float.tflite"
    float_model.write_bytes(to_tflite(keras.Model(inp, keras.layers.Dense(2)(inp))))
    assert_one_line_error(edgeae("inspect", float_model, "--edgetpu"), "not fully int8")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    assert_one_line_error(edgeae("inspect", junk), "not a TFLite flatbuffer")
    cut = tmp_path / "cut.tflite"
    cut.write_bytes((small_export / "encoder_int8.tflite").read_bytes()[:3000])
    assert_one_line_error(edgeae("inspect", cut), "damaged TFLite flatbuffer, truncated or corrupted (3000 bytes")
    assert_one_line_error(edgeae("verify", small_export, "--arena", "256"), "TFLite Micro failed")
    assert_one_line_error(edgeae("bench", small_export, "--edgetpu"), "no Edge TPU delegate")
    with pytest.raises(EdgeaeError, match="TFLite Micro cannot run this model"):
        targets.measure_arena(junk)


def _edited(model: bytes, edit) -> bytes:
    """The flatbuffer unpacked, changed by `edit` and packed again: damage the parser cannot see."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as S

    m = S.ModelT.InitFromPackedBuf(model, 0)
    edit(m)
    b = flatbuffers.Builder(0)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


@pytest.mark.parametrize("edit", [
    lambda m: setattr(m.subgraphs[0].operators[0], "inputs", [99, *m.subgraphs[0].operators[0].inputs[1:]]),  # no tensor 99
    lambda m: setattr(m.subgraphs[0].operators[0], "outputs", [-2]),  # Python would take the last but one
    lambda m: setattr(m.subgraphs[0].operators[0], "opcodeIndex", 99),
    lambda m: setattr(m.subgraphs[0], "outputs", [99]),
    lambda m: setattr(m.subgraphs[0], "inputs", []),
], ids=["op-input", "negative-output", "opcode", "subgraph-output", "no-input"])  # fmt: skip
def test_inspect_damaged_indices(tmp_path, small_export, edit):
    """A flatbuffer the parser reads but whose indices point past its own lists was an IndexError
    traceback (a bit flip in a byte fuzz of `inspect`, 4 runs of 500), or a wrong tensor read silently."""
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(_edited((small_export / "encoder_int8.tflite").read_bytes(), edit))
    assert_one_line_error(edgeae("inspect", bad), "damaged TFLite flatbuffer")


def test_inspect_shows_a_damaged_tensor_name(tmp_path, small_export):
    """A name that is not UTF-8 (one flipped byte) was a UnicodeDecodeError traceback; a name is only shown."""

    def edit(m):
        m.subgraphs[0].tensors[0].name = b"window\xff"

    bad = tmp_path / "name.tflite"
    bad.write_bytes(_edited((small_export / "encoder_int8.tflite").read_bytes(), edit))
    assert graph.read(bad).inputs[0].name == "window\ufffd"
    proc = edgeae("inspect", bad, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["totals"]["parameters"] == graph.read(small_export / "encoder_int8.tflite").parameters


@pytest.mark.skipif(CC is None, reason="no system C compiler")
@pytest.mark.parametrize("io_type", ["int8", "uint8"])
def test_config_helpers_map_model_outputs_to_packet_bytes(small_run, tmp_path, io_type):
    """The firmware's code / residual byte helpers give what `edgeae encode` packs, and the
    header's dequantization of a packet code gives the host's value, for int8 and uint8 I/O."""
    from edgeae.export import export
    from edgeae.pipeline import Pipeline
    from edgeae.manifest import Export

    out = export(small_run, tmp_path / "dist", target="mcu", io_type=io_type)
    ident, ctype = _ident(out), ("uint8_t" if io_type == "uint8" else "int8_t")
    (tmp_path / "h.c").write_text(f"""#include <stdio.h>
#include "{ident}_config.h"
int main(void) {{
  for (int v = 0; v < 256; ++v) {{
    {ctype} q = ({ctype})({"v" if io_type == "uint8" else "v - 128"});
    int8_t code = edgeae_{ident}_code_byte(q);
    printf("%d %d %d %.9g\\n", (int)q, (int)code, (int)edgeae_{ident}_residual_byte(&q), edgeae_{ident}_dequantize_code(code));
  }}
  return 0;
}}
""")
    subprocess.run([CC, "-std=c99", "-Wall", "-Werror", f"-I{out}", str(tmp_path / "h.c"), "-o", str(tmp_path / "h"), "-lm"], check=True)
    rows = np.array([line.split() for line in subprocess.run([str(tmp_path / "h")], capture_output=True, text=True, check=True).stdout.splitlines()], float)
    q, code, residual, real = rows.T
    offset = 128 if io_type == "uint8" else 0
    np.testing.assert_array_equal(code, q - offset)  # the int8 value on the wire
    np.testing.assert_array_equal(residual, q + 128 - offset)  # the uint8 residual byte
    pipe = Pipeline(Export.open(out))
    np.testing.assert_allclose(real, pipe.packet_features(code.astype(np.int8)[:, None], None).code[:, 0], rtol=1e-6)


@pytest.mark.skipif(CC is None, reason="no system C compiler")
def test_residual_power_byte_is_the_firmwares(tmp_path, sim_train, sim_test):
    """With export.residual_power the device model outputs each channel's error and the firmware
    takes their power mean into the byte: the header's helper must give edgeae's bytes. Code size 4 =
    4 channels, so the two outputs are told apart by quantization, not size."""
    from conftest import small_recipe
    from edgeae.export import export
    from edgeae.manifest import Export
    from edgeae.pipeline import Pipeline, residual_bytes
    from edgeae.runtime import dequantize
    from edgeae.train import train
    from edgeae.verify import verify

    r = small_recipe("conv1d", code_size=4, activation="linear")
    r.export.residual_power = 4
    run = train(r, sim_train, tmp_path / "run", progress=False)
    out = export(run, tmp_path / "dist", target="mcu")
    rep = verify(out, data=sim_test)
    assert rep.passed and rep.device_code_max_diff == 0, rep.table()
    tpu = export(run, tmp_path / "tpu", target="edgetpu", io_type="uint8")  # Coral: uint8 I/O, per-tensor weights
    assert Export.open(tpu).manifest["edgetpu"]["all_supported"] and verify(tpu, data=sim_test).passed
    ex = Export.open(out)
    pipe, dev = Pipeline(ex), ex.manifest["device"]
    assert dev["residual_power"] == 4 and pipe.power == 4
    raw = pipe.device.run_outputs_raw(pipe.device_input(ex.reference()[0]))[dev["outputs"]["residual"]].reshape(-1, 4)
    raw = np.concatenate([raw, np.random.default_rng(0).integers(-128, 128, (500, 4))]).astype(np.int8)
    expected = residual_bytes(dequantize(raw, *pipe.residual_quant), 4, dev["residual_byte_scale"])
    (tmp_path / "q.bin").write_bytes(raw.tobytes())
    ident = _ident(out)
    (tmp_path / "p.c").write_text(f"""#include <stdio.h>
#include "{ident}_config.h"
int main(int argc, char** argv) {{
  FILE* f = fopen(argv[1], "rb");
  int8_t q[EDGEAE_{ident.upper()}_NUM_CHANNELS];
  while (fread(q, 1, sizeof q, f) == sizeof q) printf("%d\\n", (int)edgeae_{ident}_residual_byte(q));
  return 0;
}}
""")
    subprocess.run([CC, "-std=c99", "-Wall", "-Werror", f"-I{out}", str(tmp_path / "p.c"), "-o", str(tmp_path / "p"), "-lm"], check=True)
    got = subprocess.run([str(tmp_path / "p"), str(tmp_path / "q.bin")], capture_output=True, text=True, check=True).stdout.split()
    np.testing.assert_array_equal(np.array(got, int), expected)
    assert 0 < expected.min() and expected.max() == 255  # the random vectors reach the byte's ceiling
    m = json.loads((out / "manifest.json").read_text())
    del m["device"]["residual_byte_scale"]
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(EdgeaeError, match="missing or malformed device.residual_byte_scale"):
        Export.open(out)


def test_inspect_table_columns_fit_long_op_names():
    """An op name longer than the column (UNIDIRECTIONAL_SEQUENCE_LSTM) pushed its row's columns
    out of line with the header's."""
    t = {"dtype": "int8", "shape": [1, 32, 3]}
    ops = [{"index": i, "op": op, "inputs": [t] * n, "outputs": [t], "parameters": 0, "macs": 0, "zero_weight_fraction": None}
           for i, (op, n) in enumerate((("UNIDIRECTIONAL_SEQUENCE_LSTM", 3), ("RESHAPE", 1)))]  # fmt: skip
    totals = {"parameters": 0, "macs_per_window": 0, "flash_bytes": 0, "output_bytes_per_window": 3, "arena_bytes": None}
    header, *rows = graph.table({"model": "m", "ops": ops, "totals": totals}).splitlines()[1:4]
    for column in ("inputs", "outputs"):
        assert all(r[header.index(column) - 1] == " " and r[header.index(column)] != " " for r in rows), column

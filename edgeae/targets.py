"""Export targets: what a device needs beyond the .tflite files. No TensorFlow.

`mcu`: C sources for a TensorFlow Lite Micro project — for the encoder (window -> code) and for
the device model (window -> code and residual byte), each flatbuffer as an aligned const array
with an op resolver registering exactly its ops; a config header with every constant the
firmware needs (window shape, channel order, high-pass filter, normalization, input, code and residual
quantization, the measured tensor arenas); the packet encoder (`edgeae/c/edgeae_packet.c`: the wire
format, CRC-16 and HMAC-SHA256 in C99); the model id packets carry (`<name>_model_id.h`, written
once the manifest is, being its hash); and a README. The arena is measured in the TFLite Micro
interpreter (its recording allocator, and the smallest arena that runs, found by bisection in
child processes because a too-small arena can abort the process).

`edgetpu`: a compatibility report from the flatbuffer alone: each op checked against the Edge
TPU's documented support table and constraints (coral.ai/docs/edgetpu/models-intro), and where
the first unsupported op would split the graph (the compiler maps ops in order up to it; that
op and everything after run on the CPU). If `edgetpu_compiler` is on PATH it is run too.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

from . import graph as G
from .data import highpass_alphas
from .errors import EdgeaeError
from .runtime import tflm_failure

ARENA_MARGIN = 0.20  # over the smallest arena that ran here (64-bit host, reference kernels)

# TFLite op name -> MicroMutableOpResolver method: every builtin op the resolver registers
# (tensorflow/lite/micro/micro_mutable_op_resolver.h). Whether the pinned TFLite Micro has a kernel
# for an op's types is for the interpreter to say: export measures the arena there, verify runs it.
MICRO_RESOLVER = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax", "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable", "AVERAGE_POOL_2D": "AddAveragePool2D", "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd", "BROADCAST_ARGS": "AddBroadcastArgs", "BROADCAST_TO": "AddBroadcastTo",
    "CALL_ONCE": "AddCallOnce", "CAST": "AddCast", "CEIL": "AddCeil", "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D", "COS": "AddCos", "CUMSUM": "AddCumSum", "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize", "DIV": "AddDiv",
    "EMBEDDING_LOOKUP": "AddEmbeddingLookup", "ELU": "AddElu", "EQUAL": "AddEqual", "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims", "FILL": "AddFill", "FLOOR": "AddFloor", "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod", "FULLY_CONNECTED": "AddFullyConnected", "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd", "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish", "IF": "AddIf", "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D", "LEAKY_RELU": "AddLeakyRelu", "LESS": "AddLess", "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog", "LOGICAL_AND": "AddLogicalAnd", "LOGICAL_NOT": "AddLogicalNot", "LOGICAL_OR": "AddLogicalOr",
    "LOGISTIC": "AddLogistic", "LOG_SOFTMAX": "AddLogSoftmax", "MAXIMUM": "AddMaximum", "MAX_POOL_2D": "AddMaxPool2D",
    "MEAN": "AddMean", "MINIMUM": "AddMinimum", "MIRROR_PAD": "AddMirrorPad", "MUL": "AddMul", "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual", "PACK": "AddPack", "PAD": "AddPad", "PADV2": "AddPadV2", "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize", "READ_VARIABLE": "AddReadVariable", "REDUCE_MAX": "AddReduceMax",
    "REDUCE_MIN": "AddReduceMin", "RELU": "AddRelu", "RELU6": "AddRelu6", "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear", "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "REVERSE_V2": "AddReverseV2", "ROUND": "AddRound", "RSQRT": "AddRsqrt", "SELECT_V2": "AddSelectV2",
    "SHAPE": "AddShape", "SIN": "AddSin", "SLICE": "AddSlice", "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd", "SPACE_TO_DEPTH": "AddSpaceToDepth", "SPLIT": "AddSplit",
    "SPLIT_V": "AddSplitV", "SQRT": "AddSqrt", "SQUARE": "AddSquare", "SQUARED_DIFFERENCE": "AddSquaredDifference",
    "SQUEEZE": "AddSqueeze", "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub", "SUM": "AddSum", "SVDF": "AddSvdf",
    "TANH": "AddTanh", "TRANSPOSE": "AddTranspose", "TRANSPOSE_CONV": "AddTransposeConv",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM", "UNPACK": "AddUnpack",
    "VAR_HANDLE": "AddVarHandle", "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
}  # fmt: skip

# Edge TPU supported ops and their documented constraints (coral.ai/docs/edgetpu/models-intro).
EDGETPU_OPS = {
    "ADD": "", "AVERAGE_POOL_2D": "no fused activation", "CONCATENATION": "no fused activation",
    "CONV_2D": "same dilation in x and y", "DEPTHWISE_CONV_2D": "same dilation in x and y",
    "EXPAND_DIMS": "", "FULLY_CONNECTED": "default weights format only; one-dimensional output",
    "L2_NORMALIZATION": "", "LOGISTIC": "", "LSTM": "unidirectional only", "MAXIMUM": "",
    "MAX_POOL_2D": "no fused activation", "MEAN": "no reduction over the batch dimension", "MINIMUM": "",
    "MUL": "", "PACK": "not in the batch dimension", "PAD": "not in the batch dimension", "PRELU": "",
    "QUANTIZE": "", "REDUCE_MAX": "not over the batch dimension", "REDUCE_MIN": "not over the batch dimension",
    "RELU": "", "RELU6": "", "RELU_N1_TO_1": "", "RESHAPE": "large reshapes may not map",
    "RESIZE_BILINEAR": "3-D input/output", "RESIZE_NEAREST_NEIGHBOR": "3-D input/output", "RSQRT": "",
    "SLICE": "", "SOFTMAX": "1-D input, at most 16,000 elements", "SPACE_TO_DEPTH": "", "SPLIT": "",
    "SQUEEZE": "", "STRIDED_SLICE": "", "SUB": "", "SUM": "", "SQUARED_DIFFERENCE": "", "TANH": "",
    "TRANSPOSE": "", "TRANSPOSE_CONV": "",
    # the table's "LSTM" is what TFLite makes of a Keras LSTM (google-coral/edgetpu#156: compiler 16)
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "unidirectional only",
}  # fmt: skip
_NO_FUSED_ACTIVATION = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"}


# ---------------------------------------------------------------- MCU


def measure_arena(model_path: str | Path, shown_as: str | Path | None = None) -> dict:
    """The tensor arena the model needs in TFLite Micro: the recording allocator's total, the
    smallest arena that allocates and invokes (bisection, 16-byte steps), and the stated size
    (smallest + ARENA_MARGIN, rounded up to 16 bytes). Errors name the model `shown_as` (export
    measures in its temporary folder, which the user never sees), else its path."""
    recorded = _recorded_arena(model_path, shown_as or model_path)
    lo, hi = 0, max(recorded, 1024)
    while not _arena_runs(model_path, hi):
        lo, hi = hi, hi * 2
        if hi > 64 * 1024 * 1024:
            raise EdgeaeError(f"{model_path}: does not run in TFLite Micro even with a 64 MiB arena")
    while hi - lo > 16:  # invariant: lo fails (or is 0), hi runs
        mid = (lo + hi) // 2 // 16 * 16
        if mid <= lo:
            break
        lo, hi = (lo, mid) if _arena_runs(model_path, mid) else (mid, hi)
    return {
        "recorded_bytes": recorded,
        "minimum_bytes": hi,
        "stated_bytes": int(math.ceil(hi * (1 + ARENA_MARGIN) / 16) * 16),
        "margin": ARENA_MARGIN,
    }


def _worker(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeae._tflm_worker", *map(str, args)], capture_output=True, text=True)


def _arena_runs(model_path, arena: int) -> bool:
    return _worker("probe", model_path, arena).returncode == 0


def _recorded_arena(model_path, shown_as) -> int:
    proc = _worker("allocations", model_path, 16 * 1024 * 1024)
    m = re.search(r"Arena allocation total (\d+) bytes", proc.stderr)
    if proc.returncode != 0 or m is None:
        reason = tflm_failure(proc.stderr) or f"exit code {proc.returncode}"
        raise EdgeaeError(f"{shown_as}: TFLite Micro cannot run this model ({reason})")
    return int(m.group(1))


def c_identifier(name: str) -> str:
    """`name` as a C identifier, in ASCII (an 'é' passed Python's \\w, and older GCCs, as in many
    Arduino cores, refuse it in an identifier)."""
    ident = re.sub(r"\W", "_", name, flags=re.ASCII)
    return ident if not ident[:1].isdigit() else f"m_{ident}"


def resolver_methods(g: G.Graph) -> list[str]:
    if g.sparse_tensors:
        raise EdgeaeError("the model has sparse-encoded tensors; TFLite Micro has no DENSIFY op")
    missing = [op for op in g.op_names if op not in MICRO_RESOLVER]
    if missing:
        raise EdgeaeError(f"op(s) {', '.join(missing)} have no TFLite Micro resolver entry known to edgeae")
    return [MICRO_RESOLVER[op] for op in g.op_names]


#: The packet encoder for firmware, copied into every MCU export (tests/test_wire.py checks it against `wire.encode`).
C_SOURCES = Path(__file__).parent / "c"
PACKET_SOURCES = ("edgeae_packet.h", "edgeae_packet.c")


def mcu_sources(out: Path, name: str, encoder: bytes, device: bytes, manifest: dict) -> list[Path]:
    """Write the TFLite Micro C sources into `out`; returns their paths. Two models, each with its
    flatbuffer array and op resolver: the int8 encoder (window -> code) and the device model
    (window -> code and residual, what a packet with the residual byte carries). `name` must be a
    C identifier (see `c_identifier`); it prefixes files and symbols."""
    models = {name: (encoder, "encoder_int8.tflite", "the int8 encoder: window -> code"),
              f"{name}_device": (device, "device_int8.tflite", "the device model: window -> code and residual")}  # fmt: skip
    files, ops, stateful = {}, {}, False
    for ident, (data, source, what) in models.items():
        g = G.read(data)
        ops[ident], stateful = g.op_names, stateful or g.stateful
        files[f"{ident}_model_data.h"] = _model_data_h(ident, what)
        files[f"{ident}_model_data.cc"] = _model_data_cc(ident, source, data)
        files[f"{ident}_op_resolver.h"] = _resolver_h(ident, what, g.op_names, resolver_methods(g))
    files[f"{name}_config.h"] = _config_h(name, manifest)
    for fname in PACKET_SOURCES:
        files[fname] = (C_SOURCES / fname).read_text()
    files["README.md"] = _mcu_readme(name, manifest, ops, len(encoder), len(device), stateful)
    paths = []
    for fname, text in files.items():
        (out / fname).write_text(text)
        paths.append(out / fname)
    return paths


def mcu_model_id_h(out: Path, name: str, model_id: int) -> Path:
    """Write `<name>_model_id.h`: the model id that the export's packets carry. It is the hash of
    manifest.json, which lists every other file, so this one is written after it and not in it."""
    path = out / f"{name}_model_id.h"
    path.write_text(f"""// Generated by edgeae: the model id this export's packets carry (edgeae_packet's model_id), the
// first 4 bytes of the sha256 of manifest.json; a packet with another is rejected as wrong_model.
#ifndef EDGEAE_{name.upper()}_MODEL_ID_H_
#define EDGEAE_{name.upper()}_MODEL_ID_H_

#define EDGEAE_{name.upper()}_MODEL_ID 0x{model_id:08x}u

#endif  // EDGEAE_{name.upper()}_MODEL_ID_H_
""")
    return path


def _model_data_h(ident, what):
    upper = ident.upper()
    return f"""// Generated by edgeae. The flatbuffer of {what}, kept in flash.
#ifndef EDGEAE_{upper}_MODEL_DATA_H_
#define EDGEAE_{upper}_MODEL_DATA_H_

extern const unsigned char g_{ident}_model_data[];
extern const unsigned int g_{ident}_model_data_len;

#endif  // EDGEAE_{upper}_MODEL_DATA_H_
"""


def _model_data_cc(ident, source, data: bytes):
    rows = [", ".join(f"0x{b:02x}" for b in data[i : i + 12]) for i in range(0, len(data), 12)]
    body = ",\n    ".join(rows)
    return f"""// Generated by edgeae: the bytes of {source} ({len(data)} bytes).
#include "{ident}_model_data.h"

// 16-byte alignment as TFLite Micro requires; const so it stays in flash.
alignas(16) const unsigned char g_{ident}_model_data[] = {{
    {body}}};
const unsigned int g_{ident}_model_data_len = {len(data)};
"""


def _c_float(x: float) -> str:
    """A C float literal: "0.0f", "1.0f", "1.5e-05f" (an integral value needs its ".0": "1f" is not C)."""
    if not math.isfinite(x):
        return "0.0f"
    text = f"{float(x):.9g}"
    return f"{text if any(c in text for c in '.e') else text + '.0'}f"


def _config_h(ident, m: dict) -> str:
    upper = ident.upper()
    w, q, norm, dev = m["window"], m["quantization"], m["normalization"], m["device"]
    arena, device_arena = m["mcu"]["arena"], m["mcu"]["device_arena"]
    channels = w["channels"]
    chan_list = ", ".join(f'"{c}"' for c in channels)
    means = ", ".join(_c_float(v) for v in norm["mean"])
    stds = ", ".join(_c_float(v) for v in norm["std"])
    alphas = ", ".join(_c_float(a) for a in highpass_alphas(channels, norm.get("highpass", {})))
    in_type, _ = _io_ctype(m)
    uint8 = in_type == "uint8_t"
    lo, hi = (0, 255) if uint8 else (-128, 127)
    # The wire carries the code as int8 and the residual as uint8 (docs/wire-format.md).
    code_wire, code_model = ("(int8_t)(q - 128)", "q + 128") if uint8 else ("q", "q")
    power = dev.get("residual_power", 1)
    if power == 1:
        residual_doc = "the window's reconstruction error (mean square), sent as the packet's residual byte"
        residual_byte = f"return {'q[0]' if uint8 else '(uint8_t)(q[0] + 128)'};"
        residual_defines = ""
    else:
        residual_doc = (f"each channel's reconstruction error (mean square; NUM_CHANNELS values),\n// whose power mean "
                        f"(power {power}) edgeae_{ident}_residual_byte sends as the packet's residual byte")
        residual_byte = f"""double sum = 0.0;
  for (int c = 0; c < EDGEAE_{upper}_NUM_CHANNELS; ++c) {{
    float e = (float)(q[c] - EDGEAE_{upper}_RESIDUAL_ZERO_POINT) * EDGEAE_{upper}_RESIDUAL_SCALE;
    sum += pow((double)e, EDGEAE_{upper}_RESIDUAL_POWER);
  }}
  double b = floor(pow(sum / EDGEAE_{upper}_NUM_CHANNELS, 1.0 / EDGEAE_{upper}_RESIDUAL_POWER) / EDGEAE_{upper}_RESIDUAL_BYTE_SCALE + 0.5);
  return b > 255.0 ? 255 : (uint8_t)b;"""
        residual_defines = (f"#define EDGEAE_{upper}_RESIDUAL_POWER {power}\n"
                            f"#define EDGEAE_{upper}_RESIDUAL_BYTE_SCALE {float(dev['residual_byte_scale'])!r}  // a double\n")
    rate = "" if "row_period_s" not in w else (
        f"// Sample each channel at the rate of the rows the encoder was trained on ({w['row_period_s']:g} s apart):\n"
        f"// at another, it sees another signal.\n#define EDGEAE_{upper}_SAMPLE_RATE_HZ {_c_float(1 / w['row_period_s'])}\n")
    return f"""// Generated by edgeae: everything the firmware needs to feed the encoder and send its code.
// C99 / C++; include it from exactly the files that need it.
#ifndef EDGEAE_{upper}_CONFIG_H_
#define EDGEAE_{upper}_CONFIG_H_

#include <math.h>
#include <stdint.h>

// One window: WINDOW_LENGTH samples of each of NUM_CHANNELS channels, hop HOP samples.
// The encoder's input is time-major: element [t * NUM_CHANNELS + c] is sample t of channel c.
#define EDGEAE_{upper}_WINDOW_LENGTH {w["length"]}
#define EDGEAE_{upper}_HOP {w["hop"]}
#define EDGEAE_{upper}_NUM_CHANNELS {len(channels)}
#define EDGEAE_{upper}_INPUT_SIZE {w["length"] * len(channels)}
{rate}
// Input quantization: q = round(z / INPUT_SCALE) + INPUT_ZERO_POINT, z the normalized sample.
#define EDGEAE_{upper}_INPUT_SCALE {_c_float(q["input"]["scale"])}
#define EDGEAE_{upper}_INPUT_ZERO_POINT {q["input"]["zero_point"]}

// The code: CODE_SIZE int8 values per window, sent as CODE_BYTES bytes.
// Real value = (q - CODE_ZERO_POINT) * CODE_SCALE.
#define EDGEAE_{upper}_CODE_SIZE {m["code_size"]}
#define EDGEAE_{upper}_CODE_BYTES {m["code_bytes"]}
#define EDGEAE_{upper}_CODE_SCALE {_c_float(q["code"]["scale"])}
#define EDGEAE_{upper}_CODE_ZERO_POINT {q["code"]["zero_point"]}

// Tensor arena, measured in the TFLite Micro interpreter: the smallest arena that ran was
// {arena["minimum_bytes"]} bytes (recording allocator: {arena["recorded_bytes"]} bytes); stated with a
// {arena["margin"]:.0%} margin for other kernels (e.g. CMSIS-NN scratch buffers) and platforms.
#define EDGEAE_{upper}_TENSOR_ARENA_SIZE {arena["stated_bytes"]}

// The device model ({ident}_device_model_data): same input, two outputs, the code (quantized as
// above) and {residual_doc}.
// Its arena, measured the same way: smallest that ran {device_arena["minimum_bytes"]} bytes.
#define EDGEAE_{upper}_DEVICE_TENSOR_ARENA_SIZE {device_arena["stated_bytes"]}
#define EDGEAE_{upper}_DEVICE_CODE_OUTPUT {dev["outputs"]["code"]}
#define EDGEAE_{upper}_DEVICE_RESIDUAL_OUTPUT {dev["outputs"]["residual"]}
#define EDGEAE_{upper}_RESIDUAL_SCALE {_c_float(dev["residual"]["scale"])}
#define EDGEAE_{upper}_RESIDUAL_ZERO_POINT {dev["residual"]["zero_point"]}
{residual_defines}
static const char* const k_{ident}_channel_names[EDGEAE_{upper}_NUM_CHANNELS] = {{{chan_list}}};
// Per-channel normalization fitted on the training windows: z = (x - mean) / std.
static const float k_{ident}_mean[EDGEAE_{upper}_NUM_CHANNELS] = {{{means}}};
static const float k_{ident}_std[EDGEAE_{upper}_NUM_CHANNELS] = {{{stds}}};

// High-pass of slow channels, applied to every raw row as it arrives, before windows are cut:
// y = x - level, then level += alpha * (x - level); the level starts at the first row. alpha is
// 1 / (time constant in rows); 0: the channel passes unchanged. Keep a level per channel.
static const float k_{ident}_highpass_alpha[EDGEAE_{upper}_NUM_CHANNELS] = {{{alphas}}};

static inline float edgeae_{ident}_highpass(float raw, int channel, float* level, int first_row) {{
  if (first_row) level[channel] = k_{ident}_highpass_alpha[channel] > 0.0f ? raw : 0.0f;
  float y = raw - level[channel];
  level[channel] += k_{ident}_highpass_alpha[channel] * (raw - level[channel]);
  return y;
}}

// High-passed sample of `channel` -> the encoder's input value (rounding half to even, as edgeae does).
static inline {in_type} edgeae_{ident}_quantize_input(float raw, int channel) {{
  float z = (raw - k_{ident}_mean[channel]) / k_{ident}_std[channel];
  long q = lrintf(z / EDGEAE_{upper}_INPUT_SCALE) + EDGEAE_{upper}_INPUT_ZERO_POINT;
  return ({in_type})(q < {lo} ? {lo} : (q > {hi} ? {hi} : q));
}}

// The model's code output -> the packet's int8 code value (docs/wire-format.md).
static inline int8_t edgeae_{ident}_code_byte({in_type} q) {{
  return {code_wire};
}}

// A packet's int8 code value -> its real value (what the host's decoder takes).
static inline float edgeae_{ident}_dequantize_code(int8_t q) {{
  return (float)({code_model} - EDGEAE_{upper}_CODE_ZERO_POINT) * EDGEAE_{upper}_CODE_SCALE;
}}

// The device model's residual output -> the packet's residual byte (docs/wire-format.md;
// edgeae.pipeline.Pipeline.wire_outputs computes the same).
static inline uint8_t edgeae_{ident}_residual_byte(const {in_type}* q) {{
  {residual_byte}
}}

#endif  // EDGEAE_{upper}_CONFIG_H_
"""


def _resolver_h(ident, what, ops, methods) -> str:
    upper = ident.upper()
    adds = "\n".join(f"  TF_LITE_ENSURE_STATUS(resolver.{m}());  // {op}" for op, m in zip(ops, methods))
    camel = _camel(ident)
    return f"""// Generated by edgeae: an op resolver with exactly the {len(ops)} op(s) of {what}.
#ifndef EDGEAE_{upper}_OP_RESOLVER_H_
#define EDGEAE_{upper}_OP_RESOLVER_H_

#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

constexpr int kEdgeae{camel}OpCount = {len(ops)};
using Edgeae{camel}OpResolver = tflite::MicroMutableOpResolver<kEdgeae{camel}OpCount>;

inline TfLiteStatus RegisterEdgeae{camel}Ops(Edgeae{camel}OpResolver& resolver) {{
{adds}
  return kTfLiteOk;
}}

#endif  // EDGEAE_{upper}_OP_RESOLVER_H_
"""


def _io_ctype(m: dict) -> tuple[str, str]:
    """The models' input / output C type and TfLiteTensor data member: int8 or uint8 I/O."""
    return ("uint8_t", "uint8") if m["quantization"]["input"]["dtype"] == "uint8" else ("int8_t", "int8")


def _camel(ident: str) -> str:
    return "".join(p.capitalize() for p in ident.split("_"))


_RESET = """
  // The LSTM keeps its state between invocations; each window starts from zero, as in training
  // (without this, every code depends on the windows before it).
  if (interpreter.Reset() != kTfLiteOk) return false;"""


def _radio_paragraph(m: dict) -> str:
    """For a README: what a packet a window asks of LoRaWAN (`lorawan.budget`), when the rows' rate is known."""
    w = m["window"]
    if "row_period_s" not in w:
        return ""
    from .lorawan import budget
    from .wire import packet_size

    return (f"\nA packet a window is {budget(packet_size(m['code_size']), w['hop'] * w['row_period_s'])}. Over LoRaWAN, "
            "capture and send one window every so often instead (as `edgeae encode --every` does).\n")


def _mcu_readme(name, m, ops, encoder_bytes, device_bytes, stateful: bool) -> str:
    upper = name.upper()
    camel, dcamel = _camel(name), _camel(f"{name}_device")
    w, mcu = m["window"], m["mcu"]
    in_type, member = _io_ctype(m)
    return f"""# {name}: edgeae models for TensorFlow Lite Micro

Two models, pick one: the **encoder** sends the code only; the **device model** also runs the
decoder and sends the window's reconstruction error as one residual byte, which the host's
default anomaly scorer (`edgeae serve`, mode `residual`) needs.

| file | what |
|---|---|
| `{name}_model_data.cc/.h` | the int8 encoder (`encoder_int8.tflite`, {encoder_bytes} bytes) as a 16-byte-aligned const array |
| `{name}_op_resolver.h` | `RegisterEdgeae{camel}Ops()`: the encoder's op(s) {", ".join(ops[name])} |
| `{name}_device_model_data.cc/.h` | the device model (`device_int8.tflite`, {device_bytes} bytes): code and residual |
| `{name}_device_op_resolver.h` | `RegisterEdgeae{dcamel}Ops()`: the device model's op(s) {", ".join(ops[f"{name}_device"])} |
| `{name}_config.h` | window shape, channel order, sample rate (when the training data had times), high-pass, normalization, input / code / residual quantization, arena sizes |
| `edgeae_packet.c/.h` | `edgeae_packet()`: a window's code and residual byte as the packet `edgeae serve` takes (C99, no dependencies: CRC-16 and HMAC-SHA256 included) |
| `{name}_model_id.h` | `EDGEAE_{upper}_MODEL_ID`, the model id packets carry (the hash of manifest.json, so not listed in it) |

The window is {w["length"]} samples of {len(w["channels"])} channel(s) ({", ".join(w["channels"])}), every {w["hop"]} samples{
f', sampled at {1 / w["row_period_s"]:g} Hz as the training data was (`EDGEAE_{upper}_SAMPLE_RATE_HZ`)' if "row_period_s" in w else ""};
the code is {m["code_size"]} int8 values. Tensor arena: {mcu["arena"]["stated_bytes"]} bytes for the encoder (smallest that ran:
{mcu["arena"]["minimum_bytes"]}), {mcu["device_arena"]["stated_bytes"]} bytes for the device model (smallest that ran: {mcu["device_arena"]["minimum_bytes"]}).
{_radio_paragraph(m)}
```cpp
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "{name}_device_model_data.h"
#include "{name}_config.h"
#include "{name}_device_op_resolver.h"

alignas(16) static uint8_t tensor_arena[EDGEAE_{upper}_DEVICE_TENSOR_ARENA_SIZE];

// One window of samples (each row through edgeae_{name}_highpass as it arrived) -> the code and
// the residual byte of its packet.
bool encode_window(const float samples[EDGEAE_{upper}_WINDOW_LENGTH][EDGEAE_{upper}_NUM_CHANNELS],
                   int8_t code[EDGEAE_{upper}_CODE_SIZE], uint8_t* residual) {{
  static Edgeae{dcamel}OpResolver resolver;
  static bool registered = RegisterEdgeae{dcamel}Ops(resolver) == kTfLiteOk;
  static tflite::MicroInterpreter interpreter(tflite::GetModel(g_{name}_device_model_data), resolver,
                                              tensor_arena, sizeof(tensor_arena));
  static bool allocated = registered && interpreter.AllocateTensors() == kTfLiteOk;
  if (!allocated) return false;
  {in_type}* in = interpreter.input(0)->data.{member};
  for (int t = 0; t < EDGEAE_{upper}_WINDOW_LENGTH; ++t)
    for (int c = 0; c < EDGEAE_{upper}_NUM_CHANNELS; ++c)
      in[t * EDGEAE_{upper}_NUM_CHANNELS + c] = edgeae_{name}_quantize_input(samples[t][c], c);{_RESET if stateful else ""}
  if (interpreter.Invoke() != kTfLiteOk) return false;
  const {in_type}* out = interpreter.output(EDGEAE_{upper}_DEVICE_CODE_OUTPUT)->data.{member};
  for (int i = 0; i < EDGEAE_{upper}_CODE_SIZE; ++i) code[i] = edgeae_{name}_code_byte(out[i]);
  *residual = edgeae_{name}_residual_byte(interpreter.output(EDGEAE_{upper}_DEVICE_RESIDUAL_OUTPUT)->data.{member});
  return true;
}}
```

Then the packet, for the radio:

```cpp
#include "edgeae_packet.h"
#include "{name}_model_id.h"

// unix_time: the window's last sample's, or 0 without a clock (the host stamps the packet on arrival)
// key: this sensor's key, as in the host's keys file (or NULL and 0: untagged packets)
size_t make_packet(uint8_t packet[EDGEAE_PACKET_MAX_SIZE], uint16_t sensor, uint32_t seq, uint32_t unix_time,
                   const int8_t code[EDGEAE_{upper}_CODE_SIZE], uint8_t residual, const uint8_t* key, size_t key_len) {{
  return edgeae_packet(packet, EDGEAE_PACKET_MAX_SIZE, EDGEAE_{upper}_MODEL_ID, sensor, seq, unix_time,
                       code, EDGEAE_{upper}_CODE_SIZE, residual, key, key_len);  // its length in bytes
}}
```

For the encoder alone, use `{name}_model_data.h`, `{name}_op_resolver.h` and
`EDGEAE_{upper}_TENSOR_ARENA_SIZE` the same way, read the code from output 0, and pass
`EDGEAE_PACKET_NO_RESIDUAL` (the host then scores the packets only with a scorer of codes:
`edgeae calibrate --mode code`). The packet is `docs/wire-format.md` of edgeae; the host decodes
the code with the export's decoder. Keep the sequence number in non-volatile memory across
resets, as LoRaWAN keeps its frame counter: the host rejects a number it has stored as a replay,
so a device that restarts its count at 0 has every packet rejected.
"""


# ---------------------------------------------------------------- Edge TPU


def edgetpu_report(model: str | Path | bytes) -> dict:
    """Op-by-op Edge TPU compatibility of a .tflite, and where the graph would split."""
    g = G.read(model)
    if any(t.dtype == "float32" for op in g.ops for t in op.inputs + op.outputs):
        raise EdgeaeError("the model is not fully int8 (float32 tensors); the Edge TPU needs full-integer quantization")
    rows = []
    for op in g.ops:
        problems = []
        if op.name not in EDGETPU_OPS:
            problems.append("op not supported by the Edge TPU")
        for t in op.inputs + op.outputs:
            if t.data is not None:
                continue  # weights, biases and shape constants: their own formats apply
            if t.dtype not in ("int8", "uint8"):
                problems.append(f"tensor '{t.name}' is {t.dtype}")
            if t.dynamic:
                problems.append(f"tensor '{t.name}' has a dynamic shape (export --target edgetpu fixes the batch to 1)")
            if len(t.shape) > 3 and any(d > 1 for d in t.shape[:-3]):
                problems.append(f"tensor '{t.name}' {list(t.shape)}: only the 3 innermost dimensions may exceed 1")
        if op.name in _NO_FUSED_ACTIVATION and op.options.get("fusedActivationFunction", 0):
            problems.append("fused activation not supported here")
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D") and op.options.get("dilationWFactor", 1) != op.options.get(
            "dilationHFactor", 1
        ):
            problems.append("different dilation in x and y")
        notes = []
        if op.weights is not None and op.weights.per_channel:
            notes.append("per-channel weights (export --target edgetpu quantizes per tensor)")
        rows.append({
            "index": op.index, "op": op.name, "supported": not problems, "problems": problems,
            "constraint": EDGETPU_OPS.get(op.name, ""), "notes": notes,
        })  # fmt: skip
    first_bad = next((r["index"] for r in rows if not r["supported"]), None)
    for r in rows:
        r["runs_on"] = "edgetpu" if first_bad is None or r["index"] < first_bad else "cpu"
    return {
        "ops": rows,
        "all_supported": first_bad is None,
        "split_at": first_bad,
        "split": _split_text(rows, first_bad),
        "compiler": edgetpu_compile(model) if isinstance(model, (str, Path)) else None,
    }


def _split_text(rows, first_bad) -> str:
    if first_bad is None:
        return "none: the whole graph maps to the Edge TPU"
    where = f"at op {first_bad} ({rows[first_bad]['op']})"
    if first_bad == 0:
        return f"{where}: nothing maps to the Edge TPU; all {len(rows)} ops run on the CPU"
    return f"{where}: ops 0..{first_bad - 1} on the Edge TPU, ops {first_bad}..{len(rows) - 1} on the CPU"


def edgetpu_compile(model_path: str | Path) -> dict:
    """Run `edgetpu_compiler` when it is installed; otherwise say so."""
    exe = shutil.which("edgetpu_compiler")
    if exe is None:
        return {"ran": False, "log": "edgetpu_compiler is not on PATH; the report above comes from edgeae's own checker"}
    out_dir = Path(model_path).parent
    proc = subprocess.run([exe, "-s", "-o", str(out_dir), str(model_path)], capture_output=True, text=True)
    return {"ran": True, "returncode": proc.returncode, "log": proc.stdout + proc.stderr}


def edgetpu_table(report: dict) -> str:
    lines = [f"{'#':>3}  {'op':<24} {'runs on':<8} problems / notes"]
    for r in report["ops"]:
        lines.append(f"{r['index']:>3}  {r['op']:<24} {r['runs_on']:<8} {'; '.join(r['problems'] + r['notes'])}")
    lines.append(f"split: {report['split']}")
    if report["compiler"] is not None:
        lines.append(("edgetpu_compiler log:\n" + report["compiler"]["log"]) if report["compiler"]["ran"] else report["compiler"]["log"])
    return "\n".join(lines)

"""Reading a .tflite flatbuffer without TensorFlow: its operators, tensors, parameters and MACs.

Uses the schema bindings that ship with LiteRT (`ai_edge_litert.schema_py_generated`).
`edgeae inspect`, the MCU op resolver and the Edge TPU checker all read models through here.

MACs count multiply-accumulates per inference (batch 1) of the ops that do them:
FULLY_CONNECTED (in x out), CONV_2D (out positions x kernel area x in channels x out channels),
DEPTHWISE_CONV_2D and TRANSPOSE_CONV likewise, UNIDIRECTIONAL_SEQUENCE_LSTM (time steps x its
input, recurrent and projection weights); element-wise and shape ops count 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import EdgeaeError, existing_file

_DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 9: "int8", 7: "int16", 6: "bool", 10: "float64"}
_NUMPY = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8, "int8": np.int8, "int16": np.int16, "int64": np.int64}
WEIGHTED_OPS = {"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"}
LSTM = "UNIDIRECTIONAL_SEQUENCE_LSTM"


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: list[float]
    zero_point: list[int]
    data: np.ndarray | None  # constant tensors only
    shape_signature: tuple[int, ...] = ()
    variable: bool = False  # state an op keeps between invocations (an LSTM's)

    @property
    def per_channel(self) -> bool:
        return len(self.scale) > 1

    @property
    def dynamic(self) -> bool:
        return any(d < 0 for d in self.shape_signature)


@dataclass
class Op:
    index: int
    name: str
    version: int
    inputs: list[Tensor]
    outputs: list[Tensor]
    options: dict = field(default_factory=dict)

    @property
    def weights(self) -> Tensor | None:
        return self.inputs[1] if self.name in WEIGHTED_OPS and len(self.inputs) > 1 else None

    @property
    def bias(self) -> Tensor | None:
        if self.name == "TRANSPOSE_CONV":
            return self.inputs[3] if len(self.inputs) > 3 else None
        return self.inputs[2] if self.name in WEIGHTED_OPS and len(self.inputs) > 2 else None

    @property
    def parameters(self) -> int:
        if self.name == LSTM:
            return sum(int(t.data.size) for t in self._lstm_constants)
        return sum(int(t.data.size) for t in (self.weights, self.bias) if t is not None and t.data is not None)

    @property
    def _lstm_constants(self) -> list[Tensor]:
        return [t for t in self.inputs[1:] if t.data is not None and not t.variable]

    @property
    def macs(self) -> int:
        if self.name == LSTM:  # input (batch, time, features): every step multiplies by each weight matrix
            return self.inputs[0].shape[1] * sum(int(t.data.size) for t in self._lstm_constants if t.data.ndim == 2)
        w = self.weights
        if w is None:
            return 0
        out = self.outputs[0].shape
        if self.name == "FULLY_CONNECTED":
            rows = int(np.prod(out[:-1])) if len(out) > 1 else 1
            return rows * int(np.prod(w.shape))  # weights are (out, in)
        if self.name == "CONV_2D":  # weights (out_c, kh, kw, in_c); output (1, h, w, out_c)
            return int(np.prod(out[:-1])) * int(np.prod(w.shape))
        if self.name == "DEPTHWISE_CONV_2D":  # weights (1, kh, kw, out_c)
            return int(np.prod(out[:-1])) * int(np.prod(w.shape))
        if self.name == "TRANSPOSE_CONV":  # each input position scatters a full kernel
            x = self.inputs[2].shape
            return int(np.prod(x[:-1])) * int(np.prod(w.shape))
        return 0

    @property
    def zero_weight_fraction(self) -> float | None:
        w = self.weights
        if w is None or w.data is None:
            return None
        zero = w.zero_point[0] if w.zero_point and len(set(w.zero_point)) == 1 else 0
        return float(np.mean(w.data == zero))


@dataclass
class Graph:
    ops: list[Op]
    inputs: list[Tensor]
    outputs: list[Tensor]
    size_bytes: int
    subgraphs: int
    sparse_tensors: int  # tensors stored in the TFLite sparse format (needs DENSIFY)

    @property
    def stateful(self) -> bool:
        """Whether invocations share state (an LSTM's, kept in variable tensors): each window must
        start from a reset interpreter, as each training window started from zero state."""
        return any(t.variable for op in self.ops for t in op.inputs)

    @property
    def op_names(self) -> list[str]:
        """Distinct operator names in first-use order (what an op resolver must register)."""
        return list(dict.fromkeys(op.name for op in self.ops))

    @property
    def float_ops(self) -> list[str]:
        """Distinct ops that compute in float32 (DEQUANTIZE and QUANTIZE aside): in a full-int8 graph,
        those the quantizer left in float between a DEQUANTIZE and a QUANTIZE (an ELU, say)."""
        return list(dict.fromkeys(op.name for op in self.ops
                                  if op.name not in ("DEQUANTIZE", "QUANTIZE") and any(t.dtype == "float32" for t in op.outputs)))  # fmt: skip

    @property
    def parameters(self) -> int:
        return sum(op.parameters for op in self.ops)

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops)


def read(model: str | Path | bytes) -> Graph:
    """Parse a .tflite flatbuffer; a file that is not one is an `EdgeaeError`."""
    from ai_edge_litert import schema_py_generated as S

    name = "<bytes>" if isinstance(model, bytes) else str(model)
    if not isinstance(model, bytes):
        model = existing_file(model).read_bytes()
    if len(model) < 8 or model[4:8] != b"TFL3":
        raise EdgeaeError(f"{name}: not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        m = S.ModelT.InitFromPackedBuf(model, 0)
    except Exception as e:  # a damaged flatbuffer fails in many ways
        raise EdgeaeError(f"{name}: damaged TFLite flatbuffer, truncated or corrupted ({len(model)} bytes; "
                          f"the parser stopped with {e.__class__.__name__})") from None  # fmt: skip
    if not m.subgraphs:
        raise EdgeaeError(f"{name}: the model has no subgraph")
    op_names = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
    g = m.subgraphs[0]
    try:  # what the parser cannot check: a damaged file's indices can point past its own lists, a buffer can misfit its type
        tensors = [_tensor(i, t, m.buffers) for i, t in enumerate(g.tensors)]

        def at(indices) -> list[Tensor]:
            indices = list(indices)
            if any(j < 0 for j in indices):  # Python would read them from the end
                raise IndexError("negative tensor index")
            return [tensors[j] for j in indices]

        ops = []
        for i, o in enumerate(g.operators):
            code = m.operatorCodes[o.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            ops.append(Op(
                index=i, name=op_names.get(builtin, f"UNKNOWN_{builtin}"), version=code.version,
                inputs=at(j for j in o.inputs if j != -1), outputs=at(o.outputs),  # -1: an optional input left out
                options=_options(o.builtinOptions),
            ))  # fmt: skip
        inputs, outputs = at(g.inputs), at(g.outputs)
    except (IndexError, TypeError, ValueError) as e:
        raise EdgeaeError(f"{name}: damaged TFLite flatbuffer: its tensors, buffers and operators do not fit together "
                          f"({e.__class__.__name__})") from None  # fmt: skip
    if not inputs or not outputs:
        raise EdgeaeError(f"{name}: damaged TFLite flatbuffer: the model has no {'input' if not inputs else 'output'}")
    return Graph(
        ops=ops, inputs=inputs, outputs=outputs,
        size_bytes=len(model), subgraphs=len(m.subgraphs), sparse_tensors=sum(t.sparsity is not None for t in g.tensors),
    )  # fmt: skip


def _tensor(index, t, buffers) -> Tensor:
    dtype = _DTYPES.get(t.type, f"type{t.type}")
    q = t.quantization
    scale = [float(s) for s in (q.scale if q is not None and q.scale is not None else [])]
    zp = [int(z) for z in (q.zeroPoint if q is not None and q.zeroPoint is not None else [])]
    shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
    data = None
    buf = buffers[t.buffer] if 0 < t.buffer < len(buffers) else None
    if buf is not None and buf.data is not None and len(buf.data) and dtype in _NUMPY:
        data = np.frombuffer(bytes(bytearray(buf.data)), dtype=_NUMPY[dtype])
        if shape and data.size == int(np.prod(shape)):
            data = data.reshape(shape)
    name = t.name.decode(errors="replace") if isinstance(t.name, bytes) else str(t.name)  # only shown; a damaged one is no reason to stop
    sig = tuple(int(d) for d in t.shapeSignature) if t.shapeSignature is not None else shape
    return Tensor(index, name, shape, dtype, scale, zp, data, sig, bool(t.isVariable))


def _options(opts) -> dict:
    if opts is None:
        return {}
    out = {}
    for k, v in vars(opts).items():
        if isinstance(v, (int, float, bool)):
            out[k] = v
    return out


def describe(path: str | Path, arena: dict | None = None) -> dict:
    """What `edgeae inspect` shows for one .tflite: per-op rows and totals (JSON-ready)."""
    g = read(path)
    out = g.outputs[0]
    ops = [
        {
            "index": op.index,
            "op": op.name,
            "inputs": [{"shape": list(t.shape), "dtype": t.dtype} for t in op.inputs if t.data is None],
            "outputs": [{"shape": list(t.shape), "dtype": t.dtype} for t in op.outputs],
            "options": op.options,
            "parameters": op.parameters,
            "macs": op.macs,
            "zero_weight_fraction": op.zero_weight_fraction,
        }
        for op in g.ops
    ]
    return {
        "model": str(path),
        "ops": ops,
        "totals": {
            "parameters": g.parameters,
            "macs_per_window": g.macs,
            "float_ops": g.float_ops if g.inputs[0].dtype in ("int8", "uint8") else None,  # an integer model's float islands
            "flash_bytes": g.size_bytes,
            "arena_bytes": arena,
            "output_bytes_per_window": int(np.prod(out.shape[1:] or (1,))) * np.dtype(_NUMPY.get(out.dtype, np.float32)).itemsize,
            "input": {"shape": list(g.inputs[0].shape), "dtype": g.inputs[0].dtype},
            "output": {"shape": list(out.shape), "dtype": out.dtype},
        },
    }


def table(d: dict) -> str:
    """A human-readable per-op table of `describe`'s result."""

    def shapes(ts):
        return ", ".join(f"{t['dtype']}{t['shape']}" for t in ts)

    cells = [(r["op"], shapes(r["inputs"]), shapes(r["outputs"])) for r in d["ops"]]
    wop, win, wout = (max([least, *(len(c[i]) for c in cells)]) for i, least in enumerate((18, 28, 20)))
    lines = [f"{d['model']}", f"{'#':>3}  {'op':<{wop}} {'inputs':<{win}} {'outputs':<{wout}} {'params':>8} {'MACs':>9} {'zero w':>7}"]
    for r, (op, ins, outs) in zip(d["ops"], cells):
        zero = "" if r["zero_weight_fraction"] is None else f"{r['zero_weight_fraction']:.1%}"
        lines.append(f"{r['index']:>3}  {op:<{wop}} {ins:<{win}} {outs:<{wout}} {r['parameters']:>8} {r['macs']:>9} {zero:>7}")
    t = d["totals"]
    arena = t["arena_bytes"]
    lines += [
        f"parameters {t['parameters']}, MACs per window {t['macs_per_window']}, flash {t['flash_bytes']} bytes, "
        f"output {t['output_bytes_per_window']} bytes per window",
        "arena: " + (f"{arena['stated_bytes']} bytes stated (smallest that ran {arena['minimum_bytes']}, recorded "
                     f"{arena['recorded_bytes']})" if arena else "not measured"),  # fmt: skip
    ]
    if t.get("float_ops"):
        lines.append(f"in float32: {', '.join(t['float_ops'])} (the rest integer)")
    return "\n".join(lines)

"""Running exported .tflite models without TensorFlow: LiteRT, and TFLite Micro in a subprocess.

`Model` wraps a LiteRT interpreter and takes / returns float arrays, applying the model's own
input and output quantization, so callers never handle scales and zero points by hand; `run_raw`
takes and returns the model's own dtypes (int8 for the device encoder).

TFLite Micro can abort the whole process (a too-small arena), so `tflm_run` runs it in a child
Python process and turns a crash into an `EdgeaeError`.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import graph as G
from .errors import EdgeaeError

DEFAULT_ARENA_BYTES = 256 * 1024


@contextlib.contextmanager
def native_stderr_captured():
    """Send C++ chatter on fd 2 (LiteRT's delegate banner, absl, the converter) to a buffer;
    yield a function that reads it, for error messages."""
    with tempfile.TemporaryFile(mode="w+") as buf:
        saved = os.dup(2)
        os.dup2(buf.fileno(), 2)
        try:
            yield lambda: (buf.seek(0), buf.read())[1]
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype=np.int8) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)


def representable(dtype, quant: tuple[float, int]) -> tuple[float, float]:
    """The lowest and highest value a quantized tensor of `dtype` with (scale, zero point) `quant` holds."""
    levels = np.iinfo(dtype)
    lo, hi = sorted(float(v) for v in dequantize(np.array([levels.min, levels.max]), *quant))
    return lo, hi


def steps_apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many quantization steps apart two int8 (or uint8) arrays of the same values are, value by
    value; `b` is read in `a`'s shape (a model's output, batched or window by window)."""
    return np.abs(a.astype(np.int16) - b.reshape(a.shape).astype(np.int16))


def same_quant(a: tuple[float, int], b: tuple[float, int]) -> bool:
    """Equal (scale, zero point) pairs, up to float32 rounding of the scale: the converter calibrates the
    device model's copy of the encoder in another graph, which can move a scale by an ulp (seen with
    linear activations); a relative 1e-6 changes no dequantized code by a visible amount."""
    return a[1] == b[1] and abs(a[0] - b[0]) <= 1e-6 * max(abs(a[0]), abs(b[0]))


def device_matches(device: "Model", code_output: int, encoder: "Model") -> bool:
    """Whether a (code, residual) device model takes the encoder's input and gives its code: the same
    window shape and the same input and code quantization, so the host decodes its packets with the
    encoder's constants."""
    return (device.input_shape == encoder.input_shape and same_quant(device.input_quant, encoder.input_quant)
            and same_quant(device.output_quant_of(code_output), encoder.output_quant))  # fmt: skip


class Model:
    """A .tflite model in LiteRT, run on batches of windows.

    By default on LiteRT's builtin kernels, without the XNNPACK delegate LiteRT applies by default:
    XNNPACK (ai-edge-litert 2.3.0) computed a float conv1d decoder wrongly from the second
    invocation after a batch resize (tests/test_real_data.py; `experimental_preserve_all_tensors`
    avoids it, so its arena planning is suspect; tools/xnnpack_check.py tells whether a newer
    LiteRT still does it), and its int8 rounding is further from TFLite Micro's.
    `xnnpack=True` is LiteRT's default, for `edgeae bench` to time what a LiteRT user gets.
    """

    def __init__(self, path_or_bytes: str | Path | bytes, threads: int | None = None, delegates=None,
                 xnnpack: bool = False, keep_tensors: bool = False):  # fmt: skip
        """`keep_tensors`: keep every intermediate tensor readable after a run (LiteRT's
        experimental_preserve_all_tensors), for `non_finite_tensor`."""
        Interpreter, _ = _litert()
        self.name = "<bytes>" if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
        content = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
        resolver = {} if xnnpack else {"experimental_op_resolver_type":
                                       sys.modules[Interpreter.__module__].OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}  # fmt: skip
        try:
            with native_stderr_captured():
                self._it = Interpreter(model_content=content, num_threads=threads, experimental_delegates=delegates,
                                       experimental_preserve_all_tensors=keep_tensors, **resolver)  # fmt: skip
                self._it.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise EdgeaeError(f"{self.name}: not a loadable TFLite model ({str(e).splitlines()[0]})") from None
        self.input = self._it.get_input_details()[0]
        self.output = self._it.get_output_details()[0]
        self._batch = 1
        #: False for a model with a fixed batch of 1 (the Edge TPU export, a recurrent model): it
        #: runs window by window.
        self.batchable = int(self.input["shape_signature"][0]) == -1
        #: An LSTM keeps its state between invocations: reset before each window (`graph.Graph.stateful`).
        self.stateful = G.read(content).stateful

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.input["shape"][1:])

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.output["shape"][1:])

    @property
    def input_quant(self) -> tuple[float, int]:
        return _quant(self.input)

    @property
    def output_quant(self) -> tuple[float, int]:
        return _quant(self.output)

    def output_index(self, code_size: int, residual_size: int, code_quant: tuple[float, int]) -> tuple[int, int]:
        """For a (code, residual) model: the positions of its code and residual outputs, told apart
        by size, or, when the sizes are equal, by the code's quantization (the encoder's)."""
        details = self._it.get_output_details()
        sizes = [int(np.prod(d["shape"][1:])) for d in details]
        if len(sizes) != 2 or sorted(sizes) != sorted([code_size, residual_size]):
            raise EdgeaeError(f"{self.name}: expected a code ({code_size}) and a residual ({residual_size}) output, got {sizes}")
        if code_size != residual_size:
            code = sizes.index(code_size)
        else:  # the output quantized nearest to the encoder's code
            code = int(np.argmin([abs(scale - code_quant[0]) + abs(zp - code_quant[1]) for scale, zp in map(_quant, details)]))
        return code, 1 - code

    def output_quant_of(self, index: int) -> tuple[float, int]:
        return _quant(self._it.get_output_details()[index])

    def output_dtype_of(self, index: int) -> str:
        """The output's element type by name ("int8", "uint8"), as a manifest writes it."""
        return np.dtype(self._it.get_output_details()[index]["dtype"]).name

    def run_outputs_raw(self, x: np.ndarray) -> list[np.ndarray]:
        """All outputs, in the model's own dtypes, window by window batched as `run_raw`."""
        details = self._it.get_output_details()
        outs = [[] for _ in details]
        for _ in self._invocations(x):
            for o, d in zip(outs, details):
                o.append(self._it.get_tensor(d["index"]).copy())
        return [np.concatenate(o) for o in outs]

    def non_finite_tensor(self, x: np.ndarray) -> str | None:
        """The name of a float tensor that holds inf or NaN while the model runs on `x` (a model
        opened with `keep_tensors`), else None."""
        for _ in self._invocations(x):
            for d in self._it.get_tensor_details():
                if d["dtype"] == np.float32 and d["name"]:
                    try:
                        v = self._it.get_tensor(d["index"])
                    except ValueError:  # a tensor without data (an unused optional input)
                        continue
                    if not np.isfinite(v).all():
                        return d["name"]
        return None

    def run_raw(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        """Run on inputs already in the model's input dtype; outputs in its output dtype."""
        outs = [self._it.get_tensor(self.output["index"]).copy() for _ in self._invocations(x, batch)]
        return np.concatenate(outs) if outs else np.zeros((0,) + self.output_shape, self.output["dtype"])

    def __call__(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        """Float in, float out: quantizes the input and dequantizes the output when int8."""
        x = np.asarray(x, dtype=np.float32)
        if self.input["dtype"] != np.float32:
            x = quantize(x, *self.input_quant, dtype=self.input["dtype"])
        y = self.run_raw(x, batch)
        if self.output["dtype"] != np.float32:
            y = dequantize(y, *self.output_quant)
        return y

    def _invocations(self, x: np.ndarray, batch: int = 256):
        """Run on `x` (in the input's dtype) `batch` windows at a time, or window by window where the
        model is not batchable, yielding after each invocation for its tensors to be read."""
        x = np.asarray(x, dtype=self.input["dtype"]).reshape((-1,) + self.input_shape)
        batch = batch if self.batchable else 1
        for i in range(0, len(x), batch):
            self._prepare(len(x[i : i + batch]))
            self._it.set_tensor(self.input["index"], x[i : i + batch])
            self._fresh_invoke()
            yield

    def _prepare(self, n: int) -> None:
        if n != self._batch:
            self._it.resize_tensor_input(self.input["index"], (n,) + self.input_shape)
            self._it.allocate_tensors()
            self._batch = n

    def _fresh_invoke(self) -> None:
        if self.stateful:
            self._it.reset_all_variables()
        self._it.invoke()


def _litert():
    """(Interpreter, load_delegate) from LiteRT, or from the older tflite_runtime package that
    Coral's own board images ship."""
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter, load_delegate
        except ImportError:
            raise EdgeaeError("no TFLite runtime: pip install ai-edge-litert (or tflite-runtime)") from None
    return Interpreter, load_delegate


def edgetpu_delegate():
    """The Edge TPU delegate (libedgetpu), or a clear error where the device has none."""
    import ctypes

    _, load_delegate = _litert()
    try:
        ctypes.CDLL("libedgetpu.so.1")  # checked first: a failing load_delegate leaves a noisy __del__
        return load_delegate("libedgetpu.so.1")
    except (ValueError, OSError) as e:
        raise EdgeaeError(f"no Edge TPU delegate: libedgetpu.so.1 could not be loaded ({str(e).splitlines()[0]})") from None


def _quant(details) -> tuple[float, int]:
    scale, zero_point = details["quantization"]
    return float(scale), int(zero_point)


def tflm_run(model_path: str | Path, inputs: np.ndarray, arena_bytes: int = DEFAULT_ARENA_BYTES) -> list[np.ndarray]:
    """Run a model in the TFLite Micro interpreter, one input at a time (TFLM is batch 1);
    returns each of the model's outputs, stacked over the inputs, in the model's output order.

    Runs in a child process: TFLM aborts the process when the arena is too small.
    """
    with tempfile.TemporaryDirectory(prefix="edgeae-tflm-") as tmp:
        src, dst = Path(tmp) / "in.npy", Path(tmp) / "out.npz"
        np.save(src, np.asarray(inputs))
        proc = subprocess.run(
            [sys.executable, "-m", "edgeae._tflm_worker", "run", str(model_path), str(src), str(dst), str(arena_bytes)],
            capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )  # fmt: skip
        if proc.returncode != 0 or not dst.exists():
            reason = tflm_failure(proc.stderr) or f"exit code {proc.returncode}"
            if proc.returncode < 0:
                reason = f"the interpreter aborted (signal {-proc.returncode}); is the {arena_bytes}-byte arena too small?"
            raise EdgeaeError(f"{model_path}: TFLite Micro failed: {reason}")
        with np.load(dst) as outputs:
            return [outputs[f"arr_{i}"] for i in range(len(outputs.files))]


def tflm_failure(log: str) -> str:
    """Why TFLite Micro refused a model, from its log (its last line says only "TFLM failed to
    allocate tensors"): the ops it has no kernel for, else the op whose kernel refused it and the
    check that failed (an int8 EXP: "input->type != kTfLiteFloat32 (INT8 != FLOAT32)"), else that last line."""
    missing = sorted(set(re.findall(r"Didn't find op for builtin opcode '(\w+)'", log)))
    if missing:
        return f"no kernel for {', '.join(missing)}"
    refused = re.search(r"(?:^|\n)(?:\S+\.cc:\d+ )?(.*)\nNode (\w+) \(number (\d+)\) failed to prepare", log)
    if refused:
        check, op, number = refused.groups()
        return f"its {op} kernel refused op {number}: {check.strip()}"
    lines = [l.strip() for l in log.splitlines() if l.strip()]
    return lines[-1] if lines else ""

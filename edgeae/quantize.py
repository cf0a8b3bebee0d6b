"""Conversion to TFLite: float32, or full-integer post-training quantization.

Full int8 means int8 weights and activations and int8 input and output tensors
(`TFLITE_BUILTINS_INT8`), calibrated on a representative set, so the model runs on integer-only
targets (TFLite Micro, the Edge TPU) and the code leaves the encoder as bytes.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from . import graph as G
from ._tf import keras, tf
from .runtime import native_stderr_captured, same_quant
from .errors import EdgeaeError

#: Ops that leave an int8 graph with a free batch unrunnable or wrong in TFLite Micro; converted with
#: batch 1, the graph holds none of them. SHAPE: the graph computes with its batch size (tf-keras'
#: LayerNormalization), and that arithmetic holds a REDUCE_PROD, which TFLite Micro has no kernel for.
#: SPACE_TO_BATCH_ND and BATCH_TO_SPACE_ND: a dilated Conv1D with causal padding, which TFLite Micro
#: ran at the flatbuffer's stored shapes (batch 1 where the op makes 2 or more): its int8 code had an
#: SQNR of 3 dB. At batch 1 the dilation is fused into the CONV_2D.
BATCH_BOUND = {"SHAPE", "SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"}


def to_tflite(
    model,
    representative: np.ndarray | None = None,
    io_type: str = "int8",
    per_tensor: bool = False,
    static_batch: bool = False,
) -> bytes:
    """The model as a .tflite flatbuffer.

    With `representative` inputs: full integer quantization with `io_type` (int8 or uint8)
    input and output; `per_tensor` quantizes weights per tensor instead of per output channel.
    Without: float32. The batch dimension stays dynamic (LiteRT can batch on the host; TFLite
    Micro runs batch 1 either way) unless `static_batch`, which fixes it to 1 as the Edge TPU
    compiler requires, or the model is recurrent: the converter lowers a recurrent layer only
    with a known batch (else "'tf.TensorListReserve' op requires element_shape to be static"). An
    LSTM becomes TFLite's fused UNIDIRECTIONAL_SEQUENCE_LSTM, which LiteRT and TFLite Micro run in
    int8; other recurrent layers stay a float WHILE loop, which the quantizer crashes on (a
    segmentation fault), so they are refused for int8 here. An int8 graph that is right only at
    a fixed batch (`BATCH_BOUND`) is converted again with a batch of 1.
    """
    recurrent = [m for m in model.submodules if isinstance(m, keras.layers.RNN)]
    unfused = [m for m in recurrent if not isinstance(m, keras.layers.LSTM)]
    if representative is not None and unfused:
        layer = unfused[0]
        raise EdgeaeError(f"layer '{layer.name}' ({type(layer).__name__}) cannot be quantized to int8: among recurrent "
                          "layers TFLite has an int8 kernel only for LSTM (use LSTM, or Conv1D)")  # fmt: skip
    if static_batch or recurrent:
        inp = keras.Input(model.input_shape[1:], batch_size=1, name="window")
        model = keras.Model(inp, model(inp), name=model.name)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        rep = np.asarray(representative, dtype=np.float32)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([rep[i : i + 1]] for i in range(len(rep)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = {"int8": tf.int8, "uint8": tf.uint8}[io_type]
        conv._experimental_disable_per_channel = per_tensor
    with native_stderr_captured() as log:
        try:
            converted = conv.convert()
        except Exception as e:
            lines = [l for l in (str(e) + "\n" + log()).splitlines() if l.strip()]
            raise EdgeaeError(f"TFLite conversion of '{model.name}' failed: {lines[0] if lines else e}") from None
    if representative is not None and not (static_batch or recurrent) and BATCH_BOUND & set(G.read(converted).op_names):
        return to_tflite(model, representative, io_type, per_tensor, static_batch=True)
    return _repaired(converted, quantized=representative is not None)


def _repaired(model: bytes, quantized: bool) -> bytes:
    """The converted flatbuffer with edgeae's repairs (each below says what it mends and why),
    parsed and written once; the same bytes when none applies."""
    from tensorflow.lite.tools import flatbuffer_utils as fb

    m = fb.convert_bytearray_to_object(bytearray(model))
    repairs = (_without_requantize_pairs, _elu_in_int8, _lstm_hidden_as_output, _tile_as_broadcast) if quantized else (_tile_as_broadcast,)
    changed = [repair(m) for repair in repairs]
    return bytes(fb.convert_object_to_bytearray(m)) if any(changed) else model


def _tile_as_broadcast(m) -> bool:
    """Each TILE of static shape that only repeats size-1 dimensions (Keras' RepeatVector, the usual
    bridge from an LSTM encoder's code to its decoder) as the BROADCAST_TO it equals: TFLite Micro
    has no TILE kernel, so a device model holding one did not run there. A TILE with a free batch
    stays: a broadcast to a fixed shape would not batch."""
    from tensorflow.lite.tools import flatbuffer_utils as fb
    from tensorflow.lite.python import schema_py_generated as S

    broadcast = None
    for g in m.subgraphs:
        for op in g.operators:
            if fb.opcode_to_name(m, op.opcodeIndex) != "TILE":
                continue
            x, out = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
            free = any(d < 0 for t in (x, out) if t.shapeSignature is not None for d in t.shapeSignature)
            if free or len(x.shape) != len(out.shape) or any(a not in (1, b) for a, b in zip(x.shape, out.shape)):
                continue
            if broadcast is None:
                code = S.OperatorCodeT()
                code.builtinCode, code.deprecatedBuiltinCode, code.version = S.BuiltinOperator.BROADCAST_TO, 127, 2
                m.operatorCodes.append(code)
                broadcast = len(m.operatorCodes) - 1
            shape = S.BufferT()
            shape.data = np.asarray(out.shape, dtype=np.int32).tobytes()
            m.buffers.append(shape)
            t = S.TensorT()
            t.name, t.shape, t.type, t.buffer = out.name + b"/shape", [len(out.shape)], S.TensorType.INT32, len(m.buffers) - 1
            g.tensors.append(t)
            op.opcodeIndex, op.inputs = broadcast, [op.inputs[0], len(g.tensors) - 1]
            op.builtinOptionsType, op.builtinOptions = S.BuiltinOptions.NONE, None
    return broadcast is not None


def _lstm_hidden_as_output(m) -> bool:
    """Each int8 LSTM's hidden state quantized as its output. The fused LSTM writes its hidden state
    h with the scale of its effective_hidden_scale intermediate (also its state input's) and copies
    those bytes to its output unchanged, but the converter can give the output other parameters: a
    Keras Bidirectional's CONCATENATION imposes its own on both directions. Downstream ops then read
    h at the wrong scale (an untrained bidirectional LSTM's int8 code: SQNR 11 dB; repaired: 40 dB).
    h = o * tanh(c) lies in (-1, 1), within the output's range, so nothing is clipped that the graph
    after it could hold."""
    from tensorflow.lite.tools import flatbuffer_utils as fb

    changed = False
    for g in m.subgraphs:
        for op in g.operators:
            lstm = fb.opcode_to_name(m, op.opcodeIndex) == "UNIDIRECTIONAL_SEQUENCE_LSTM"
            projected = lstm and op.inputs[16] >= 0  # h is projected before the output: not the case above
            if not lstm or projected or op.intermediates is None or len(op.intermediates) != 5:
                continue
            out = g.tensors[op.outputs[0]]
            for t in (g.tensors[op.intermediates[4]], g.tensors[op.inputs[18]]):  # effective hidden scale, output state
                if _tensor_quant(out) and _tensor_quant(t) not in (None, _tensor_quant(out)):
                    t.quantization.scale, t.quantization.zeroPoint = list(out.quantization.scale), list(out.quantization.zeroPoint)
                    changed = True
    return changed


def _without_requantize_pairs(m) -> bool:
    """No DEQUANTIZE -> QUANTIZE pairs that requantize a tensor to its own scale and zero point (up
    to float32 rounding). The converter leaves one where a QAT encoder's QuantizeLayer output also
    feeds the device model's residual: two float ops on the device that change no value. Consumers
    of the pair's output read its input instead."""
    from tensorflow.lite.tools import flatbuffer_utils as fb

    g = m.subgraphs[0]
    producer, readers = _wiring(g)
    dropped, source = [], {}
    for q in g.operators:
        dq = producer.get(q.inputs[0])
        if fb.opcode_to_name(m, q.opcodeIndex) != "QUANTIZE" or dq is None or fb.opcode_to_name(m, dq.opcodeIndex) != "DEQUANTIZE":
            continue
        between, src, dst = dq.outputs[0], dq.inputs[0], q.outputs[0]
        private = len(readers[between]) == 1 and between not in g.outputs and dst not in g.outputs
        a, b = _tensor_quant(g.tensors[src]), _tensor_quant(g.tensors[dst])
        if private and g.tensors[src].type == g.tensors[dst].type and a and b and same_quant(a, b):
            dropped += [dq, q]
            source[dst] = src
    if not dropped:
        return False
    g.operators = [op for op in g.operators if not any(op is d for d in dropped)]
    for op in g.operators:
        op.inputs = [source.get(i, i) for i in op.inputs]
    return True


def _elu_in_int8(m) -> bool:
    """Each ELU the quantizer left in float between a DEQUANTIZE and a QUANTIZE as one int8 ELU,
    from the DEQUANTIZE's input to the QUANTIZE's output. TFLite's quantizer has no int8 ELU, though
    LiteRT and TFLite Micro run one (a lookup table built from those two tensors' parameters); of the
    activations Keras offers, ELU was the one that left an int8 graph partly float."""
    from tensorflow.lite.tools import flatbuffer_utils as fb

    g = m.subgraphs[0]
    name = {id(op): fb.opcode_to_name(m, op.opcodeIndex) for op in g.operators}
    producer, readers = _wiring(g)
    dropped = []
    for elu in g.operators:
        if name[id(elu)] != "ELU":
            continue
        dq, after = producer.get(elu.inputs[0]), readers[elu.outputs[0]]
        if dq is None or name[id(dq)] != "DEQUANTIZE" or len(after) != 1 or name[id(after[0])] != "QUANTIZE":
            continue
        q = after[0]
        src, dst = g.tensors[dq.inputs[0]], g.tensors[q.outputs[0]]
        private = len(readers[elu.inputs[0]]) == 1 and not {elu.inputs[0], elu.outputs[0]} & set(g.outputs)
        if private and src.type == dst.type and _tensor_quant(src) and _tensor_quant(dst):
            elu.inputs, elu.outputs = [dq.inputs[0]], [q.outputs[0]]
            dropped += [dq, q]
    g.operators = [op for op in g.operators if not any(op is d for d in dropped)]
    return bool(dropped)


def _wiring(g) -> tuple[dict, defaultdict]:
    """A flatbuffer subgraph's (producer op of each tensor, reader ops of each tensor)."""
    readers = defaultdict(list)
    for op in g.operators:
        for i in op.inputs:
            readers[i].append(op)
    return {out: op for op in g.operators for out in op.outputs}, readers


def _tensor_quant(t) -> tuple[float, int] | None:
    """(scale, zero point) of a per-tensor quantized flatbuffer tensor, else None."""
    qp = t.quantization
    if qp is None or qp.scale is None or len(qp.scale) != 1:
        return None
    return float(qp.scale[0]), int(qp.zeroPoint[0])

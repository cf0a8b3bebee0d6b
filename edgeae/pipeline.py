"""The exported models on the host, end to end, without TensorFlow:
window -> device input -> (code, residual) -> reconstruction -> anomaly evidence.
"""

from __future__ import annotations

import numpy as np

from . import data as D
from .manifest import Export
from .metrics import power_mean, reconstruction_error
from .errors import EdgeaeError
from .runtime import Model, dequantize, device_matches, quantize, representable, same_quant
from .score import Features


class Pipeline:
    """An export's models: the int8 encoder and device model, the float encoder, the decoder."""

    def __init__(self, export: Export):
        self.export = export
        self.norm = export.normalizer
        self.encoder = Model(export.encoder_int8)
        self.encoder_float = Model(export.encoder_float)
        self.decoder = Model(export.decoder)
        self._device = None
        m = export.manifest
        self.code_quant = (m["quantization"]["code"]["scale"], m["quantization"]["code"]["zero_point"])
        self.residual_quant = (m["device"]["residual"]["scale"], m["device"]["residual"]["zero_point"])
        # Exports made before the residual power existed have neither key: power 1, the byte is the output.
        self.power = int(m["device"].get("residual_power", 1))
        self.residual_byte_scale = m["device"].get("residual_byte_scale")
        self._check_models()

    def _check_models(self) -> None:
        """The models take and give what the manifest describes (window shape, code size, input and
        code quantization and type): a hand-edited manifest or a model copied from another export fails here,
        in one line, rather than as packets of the wrong length or codes decoded with the wrong scale."""
        m = self.export.manifest
        shape, k = tuple(m["window"]["input_shape"]), m["code_size"]
        input_quant = (m["quantization"]["input"]["scale"], m["quantization"]["input"]["zero_point"])
        enc, flt, dec = self.encoder, self.encoder_float, self.decoder
        sizes = [(enc, "window shape", enc.input_shape, shape), (flt, "window shape", flt.input_shape, shape),
                 (enc, "code size", int(np.prod(enc.output_shape)), k), (dec, "code size", int(np.prod(dec.input_shape)), k),
                 (enc, "input type", np.dtype(enc.input["dtype"]).name, m["quantization"]["input"]["dtype"]),
                 (enc, "code type", np.dtype(enc.output["dtype"]).name, m["quantization"]["code"]["dtype"])]  # fmt: skip
        quants = [(enc, "code quantization", enc.output_quant, self.code_quant),
                  (enc, "input quantization", enc.input_quant, input_quant)]  # fmt: skip
        wrong = [c for c in sizes if c[2] != c[3]] + [c for c in quants if not same_quant(c[2], c[3])]
        if wrong:
            model, what, got, said = wrong[0]
            raise EdgeaeError(f"{model.name}: its {what} is {got}, the manifest says {said} "
                              f"(a hand-edited manifest or a model from another export)")  # fmt: skip

    @property
    def device(self) -> Model:
        if self._device is None:
            dev, m = Model(self.export.device), self.export.manifest
            outputs = dev.output_index(m["code_size"], 1 if self.power == 1 else len(self.export.channels), self.encoder.output_quant)
            if (outputs != (m["device"]["outputs"]["code"], m["device"]["outputs"]["residual"]) or not device_matches(dev, outputs[0], self.encoder)
                    or not same_quant(dev.output_quant_of(outputs[1]), self.residual_quant)
                    or dev.output_dtype_of(outputs[1]) != m["device"]["residual"]["dtype"]):  # fmt: skip
                raise EdgeaeError(f"{dev.name}: its outputs, window shape, input, code or residual quantization are not "
                                  f"the manifest's (a hand-edited manifest or a model from another export)")  # fmt: skip
            self._device = dev
        return self._device

    def device_input(self, normalized: np.ndarray) -> np.ndarray:
        """What the device feeds its models: normalized windows quantized to int8 (or uint8)."""
        x = D.to_input(normalized, self.encoder.input_shape)
        return quantize(x, *self.encoder.input_quant, dtype=self.encoder.input["dtype"])

    def codes_int8(self, normalized: np.ndarray) -> np.ndarray:
        return self.encoder.run_raw(self.device_input(normalized))

    def dequantized_codes(self, normalized: np.ndarray) -> np.ndarray:
        """The int8 encoder's codes, dequantized, (n, k)."""
        return dequantize(self.codes_int8(normalized), *self.encoder.output_quant).reshape(len(normalized), -1)

    def float_codes(self, normalized: np.ndarray) -> np.ndarray:
        """The float32 encoder's codes, (n, k): what the int8 codes approximate."""
        return self.encoder_float(D.to_input(normalized, self.encoder_float.input_shape)).reshape(len(normalized), -1)

    def code_in_range(self, float_codes: np.ndarray) -> np.ndarray:
        """Per window: whether the int8 code can hold its float code (beyond, the int8 code saturates)."""
        lo, hi = representable(self.encoder.output["dtype"], self.encoder.output_quant)
        return ((float_codes >= lo) & (float_codes <= hi)).all(axis=1)

    def input_clipped(self, normalized: np.ndarray) -> np.ndarray:
        """Per window: whether any of its values lies beyond what the int8 input can hold (the
        device clips it), i.e. outside the range the export was calibrated for."""
        lo, hi = representable(self.encoder.input["dtype"], self.encoder.input_quant)
        x = np.asarray(normalized).reshape(len(normalized), -1)
        return ((x < lo) | (x > hi)).any(axis=1)

    def device_outputs(self, normalized: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What a packet carries per window, from the device model run in LiteRT (see wire_outputs)."""
        return self.wire_outputs(self.device.run_outputs_raw(self.device_input(normalized)))

    def wire_outputs(self, outs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The device model's raw outputs, from LiteRT or TFLite Micro, as a packet carries them: the int8
        code (n, k) and the residual byte (n,). With uint8 I/O the code goes on the wire as q - 128
        (docs/wire-format.md)."""
        idx = self.export.manifest["device"]["outputs"]
        code, residual = outs[idx["code"]], outs[idx["residual"]]
        code = code.reshape(len(code), -1)
        if code.dtype == np.uint8:
            code = (code.astype(np.int16) - 128).astype(np.int8)
        if self.power > 1:
            per_channel = dequantize(residual.reshape(len(code), -1), *self.residual_quant)
            return code, residual_bytes(per_channel, self.power, self.residual_byte_scale)
        residual = residual.reshape(-1)
        if residual.dtype == np.int8:
            residual = (residual.astype(np.int16) + 128).astype(np.uint8)
        return code, residual

    def packet_features(self, codes_q: np.ndarray, residual_bytes: np.ndarray | None) -> Features:
        """Features from what packets carry (int8 code, residual byte)."""
        code_q = np.asarray(codes_q, dtype=np.int16)
        if self.encoder.output["dtype"] == np.uint8:
            code_q = code_q + 128  # back to the model's uint8 code (see wire_outputs)
        code = dequantize(code_q, *self.code_quant)
        return Features(code=code, residual=None if residual_bytes is None else self.residual(residual_bytes))

    def residual(self, residual_bytes: np.ndarray) -> np.ndarray:
        """Residual bytes -> the device's reconstruction error (normalized units; see `scores`)."""
        if self.power > 1:
            return np.asarray(residual_bytes, dtype=np.float64) * self.residual_byte_scale
        res = np.asarray(residual_bytes, dtype=np.int16)
        if self.export.manifest["device"]["residual"]["dtype"] == "int8":
            res = res - 128
        return dequantize(res, *self.residual_quant).astype(np.float64)

    @property
    def residual_ceiling(self) -> float:
        """The largest reconstruction error a residual byte carries (byte 255): a residual scorer's
        threshold at or above it flags nothing."""
        return float(self.residual(np.array([255]))[0])

    def offline_features(self, normalized: np.ndarray) -> Features:
        """Packet features plus the raw-window reconstruction error (when raw windows exist)."""
        codes_q, residual = self.device_outputs(normalized)
        f = self.packet_features(codes_q, residual)
        f.error = self.scores(normalized, f.code)
        return f

    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        """Dequantized codes -> reconstructed windows (normalized units), shape (n, length, channels)."""
        return self.decoder(codes).reshape(len(codes), self.export.window, len(self.export.channels))

    def scores(self, normalized: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """The export's window score (metrics.reconstruction_error with its residual power)."""
        return reconstruction_error(normalized, self.decoder(codes), self.power)

    def float_scores(self, normalized: np.ndarray) -> np.ndarray:
        return self.scores(normalized, self.float_codes(normalized))

    def int8_scores(self, normalized: np.ndarray) -> np.ndarray:
        return self.scores(normalized, self.dequantized_codes(normalized))


def residual_bytes(per_channel: np.ndarray, power: int, byte_scale: float) -> np.ndarray:
    """Per-channel residuals (dequantized device outputs, (n, channels)) -> residual bytes: their
    power mean in steps of `byte_scale`, rounded half up, at most 255. The MCU header's
    edgeae_<name>_residual_byte computes the same (targets.c_header)."""
    return np.minimum(np.floor(power_mean(per_channel, power) / byte_scale + 0.5), 255).astype(np.uint8)

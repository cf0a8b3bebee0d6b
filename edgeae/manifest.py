"""An export directory and its manifest.json: what the device and host halves read.

Numpy only. `Export.open` checks the manifest's format version and the sha256 of every
artifact before anything uses them, so a truncated or altered file is caught up front.

An export directory holds:

    encoder_int8.tflite     the device model: int8 window in, int8 code out
    encoder_float32.tflite  the same encoder in float32: reference for verify and bench
    device_int8.tflite      encoder + decoder on the device: window in, code and residual out
                            (the window's reconstruction error, sent as one byte)
    decoder_float32.tflite  (or decoder_int8.tflite) the host model: code in, window out
    reference_windows.npy   normalized windows recorded at export (validation windows)
    reference_codes.npy     the float encoder's codes for them
    reference_errors.npy    the float autoencoder's reconstruction error for them
    manifest.json           format version, sha256 of every file above, window shape, channel
                            names, the training rows' time step (when known), normalization,
                            input and code quantization, code size, recipe and training-data
                            fingerprint
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import Normalizer, Series, read_recordings
from .errors import EdgeaeError
from .fsutil import parse_json
from .runtime import representable

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
RUN_MARKER = "recipe.json"  # every training run directory holds it (atomic_dir replaces only such a folder)
ENCODER_INT8 = "encoder_int8.tflite"
ENCODER_FLOAT = "encoder_float32.tflite"
DEVICE_INT8 = "device_int8.tflite"
REFERENCE = ("reference_windows.npy", "reference_codes.npy", "reference_errors.npy")

_Q = {"dtype": str, "scale": float, "zero_point": int}
#: What the device and host halves read from a manifest, with its types (checked by `Export.open`).
REQUIRED = {
    "artifacts": dict, "code_size": int, "code_bytes": int, "normalization": dict,
    "window": {"length": int, "hop": int, "channels": list, "input_shape": list},
    "decoder": {"file": str},
    "quantization": {"input": _Q, "code": _Q},
    "device": {"outputs": {"code": int, "residual": int}, "residual": _Q},
}  # fmt: skip
#: Also required of an export whose residual byte is a power mean (recipe export.residual_power > 1).
RESIDUAL_POWER = {"residual_power": int, "residual_byte_scale": float}


def _missing(d, spec: dict, where: str = "") -> list[str]:
    """Keys of `spec` absent from `d` or of another type, as dotted paths."""
    out = []
    for key, kind in spec.items():
        v = d.get(key) if isinstance(d, dict) else None
        if isinstance(kind, dict):
            out += _missing(v, kind, f"{where}{key}.") if isinstance(v, dict) else [where + key]
        elif isinstance(v, bool) or not isinstance(v, (int, float) if kind is float else kind):
            out.append(where + key)
    return out


@dataclass
class Export:
    """An opened, hash-checked export directory."""

    path: Path
    manifest: dict

    @classmethod
    def open(cls, path: str | Path) -> "Export":
        path = Path(path)
        mpath = path / MANIFEST
        if not path.is_dir():
            raise EdgeaeError(f"{path}: no such export directory")
        if not mpath.is_file():
            run = (path / RUN_MARKER).is_file()  # a run given where its export goes
            raise EdgeaeError(f"{path}: not an edgeae export (no {MANIFEST})"
                              + (f"; it is a training run: `edgeae export --int8 {path} --out dist/NAME` makes its export" if run else ""))
        try:
            manifest = parse_json(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EdgeaeError(f"{mpath}: not valid JSON ({e})") from None
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        if version != FORMAT_VERSION:
            raise EdgeaeError(f"{mpath}: format version {version!r}, this edgeae reads {FORMAT_VERSION}")
        missing = _missing(manifest, REQUIRED)
        if isinstance(manifest.get("artifacts"), dict):
            missing += [f"artifacts.{n}" for n, meta in manifest["artifacts"].items() if _missing(meta, {"bytes": int, "sha256": str})]
        if isinstance(manifest.get("device"), dict) and "residual_power" in manifest["device"]:
            missing += _missing(manifest, {"device": RESIDUAL_POWER})
        if missing:
            raise EdgeaeError(f"{mpath}: missing or malformed {', '.join(missing)} (damaged or hand-edited)")
        if manifest["code_bytes"] != manifest["code_size"]:
            raise EdgeaeError(f"{mpath}: code_bytes {manifest['code_bytes']} is not code_size {manifest['code_size']} "
                              f"(one byte a code value; damaged or hand-edited)")  # fmt: skip
        recipe = manifest.get("recipe") or {}  # optional: a Keras model of the user's own has none
        columns = recipe.get("data", {}) if isinstance(recipe, dict) else None
        if not isinstance(columns, dict) or not all(isinstance(columns.get(k), (str, type(None))) for k in ("label", "time")):
            raise EdgeaeError(f"{mpath}: malformed recipe: its data's label and time must be column names (damaged or hand-edited)")
        quant = manifest["quantization"]
        for key, q in (("quantization.input", quant["input"]), ("quantization.code", quant["code"]), ("device.residual", manifest["device"]["residual"])):
            if q["dtype"] not in ("int8", "uint8"):
                raise EdgeaeError(f"{mpath}: {key}.dtype must be int8 or uint8, got {q['dtype']!r} (damaged or hand-edited)")
        w = manifest["window"]
        if not all(type(n) is int for n in w["input_shape"]) or np.prod(w["input_shape"]) != w["length"] * len(w["channels"]):
            raise EdgeaeError(f"{mpath}: a window of {w['length']} rows x {len(w['channels'])} channels does not match "
                              f"the encoder's input shape {w['input_shape']} (damaged or hand-edited)")  # fmt: skip
        if w["hop"] < 1:
            raise EdgeaeError(f"{mpath}: window.hop must be >= 1, got {w['hop']} (damaged or hand-edited)")
        # entries that may be absent (1.0 then): a power-mean residual byte's scale, the training rows' time step
        positive = {"device.residual_byte_scale": manifest["device"]["residual_byte_scale"] if "residual_power" in manifest["device"] else 1.0,
                    "window.row_period_s": w.get("row_period_s", 1.0)}  # fmt: skip
        for key, v in positive.items():
            if type(v) not in (int, float) or not 0 < v < np.inf:
                raise EdgeaeError(f"{mpath}: {key} must be a positive number, got {v!r} (damaged or hand-edited)")
        try:
            norm = Normalizer.from_dict(manifest["normalization"])
        except (KeyError, TypeError, ValueError) as e:
            raise EdgeaeError(f"{mpath}: malformed normalization ({e.__class__.__name__}: {e}) (damaged or hand-edited)") from None
        if norm.channels != w["channels"]:
            raise EdgeaeError(f"{mpath}: the normalization's channels {norm.channels} are not the window's {w['channels']} "
                              f"(damaged or hand-edited)")  # fmt: skip
        for name, meta in manifest["artifacts"].items():
            f = path / name
            if not f.is_file():
                raise EdgeaeError(f"{f}: missing from the export")
            data = f.read_bytes()
            if len(data) != meta["bytes"]:
                raise EdgeaeError(f"{f}: {len(data)} bytes, the manifest says {meta['bytes']} (truncated or altered)")
            if hashlib.sha256(data).hexdigest() != meta["sha256"]:
                raise EdgeaeError(f"{f}: sha256 does not match the manifest (file altered)")
        return cls(path, manifest)

    @property
    def model_id(self) -> int:
        """The 32-bit identifier packets carry: the first 4 bytes of the manifest's sha256."""
        return int.from_bytes(hashlib.sha256((self.path / MANIFEST).read_bytes()).digest()[:4], "big")

    @property
    def encoder_int8(self) -> Path:
        return self.path / ENCODER_INT8

    @property
    def encoder_float(self) -> Path:
        return self.path / ENCODER_FLOAT

    @property
    def device(self) -> Path:
        return self.path / DEVICE_INT8

    @property
    def decoder(self) -> Path:
        return self.path / self.manifest["decoder"]["file"]

    @property
    def normalizer(self) -> Normalizer:
        return Normalizer.from_dict(self.manifest["normalization"])

    @property
    def channels(self) -> list[str]:
        return list(self.manifest["window"]["channels"])

    @property
    def window(self) -> int:
        return int(self.manifest["window"]["length"])

    @property
    def hop(self) -> int:
        return int(self.manifest["window"]["hop"])

    @property
    def code_range(self) -> tuple[float, float]:
        """The lowest and highest value of the dequantized code: every code the device sends lies within."""
        q = self.manifest["quantization"]["code"]
        return representable(q["dtype"], (q["scale"], q["zero_point"]))

    @property
    def row_period(self) -> float | None:
        """Seconds between the rows of the training data (the median step of its time column);
        None when it had none."""
        return self.manifest["window"].get("row_period_s")

    def read_files(self, data, progress: bool = False) -> list[Series]:
        """The recordings `data` names (a file, a folder of them, or a list of those: `read_files`)
        for this export: each read with its recipe's label and time columns, its channels selected,
        its rows at the training data's rate (`check_row_period`)."""
        columns = (self.manifest.get("recipe") or {}).get("data", {})
        return read_recordings(data, self.channels, self.row_period, columns.get("label"), columns.get("time"), progress)

    def reference(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(windows, float codes, float reconstruction errors) recorded at export."""
        return tuple(np.load(self.path / name) for name in REFERENCE)


def artifact_entry(path: Path) -> dict:
    data = path.read_bytes()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


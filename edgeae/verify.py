"""`edgeae verify`: check an export without TensorFlow, and measure what int8 changed.

1. The manifest's hashes (done by `Export.open`), and the host's scorer when `calibrate` has
   stored one (`score.load`): a damaged one, or one calibrated for another export, stops serve.
2. The int8 encoder in LiteRT and in the TFLite Micro interpreter. The two cannot be required
   to agree bit for bit: TFLite Micro's reference kernels requantize with two roundings and
   LiteRT's with one (tflite-micro issue 3252), and some ops (LOGISTIC) use different int8
   algorithms, so a few code values land one or more steps apart. The float model is the
   reference both approximate: each runtime's codes must meet the SQNR floor against it, and
   TFLite Micro's may be no further from it than LiteRT's plus a tolerance that, as in
   numpy.allclose, is absolute or relative, whichever is larger: one rounding's worth of noise
   (1/12 code step squared, the variance of a uniform rounding) or 1 dB. How many values
   differ, and by how much, is reported.
3. Against the float outputs recorded at export: code SQNR and the change of reconstruction error.
4. The device model (code + residual byte, what a packet carries) in LiteRT and in TFLite Micro:
   its code must be the encoder's within one step (the host decodes packets with the encoder's
   constants), and its residual byte must stay close to the float model's reconstruction error.
5. With data of the user's own (`--data`: a recording, a folder of them, or several), the same
   fidelity on its windows (the normal ones, when it is labelled; every one, when not): the int8
   code's SQNR and the change of reconstruction error, under the same floors, and how many windows
   lie beyond the int8 input's range (the device clips them: the export was calibrated on other
   data). With labels, also the anomaly ROC-AUC of the float and the int8 path (score =
   per-window reconstruction error through the exported decoder).

Each figure has a floor; `Report.passed` is False when one is missed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import data as D, score
from .errors import EdgeaeError
from .manifest import Export
from .metrics import roc_auc, sqnr_db
from .pipeline import Pipeline
from .runtime import DEFAULT_ARENA_BYTES, dequantize, steps_apart, tflm_run


@dataclass
class Floors:
    """Fidelity floors; verify fails when any is missed."""

    min_code_sqnr_db: float = 20.0
    max_runtime_excess_noise: float = 1 / 12  # step^2 TFLite Micro's codes may add over LiteRT's ...
    max_runtime_sqnr_gap_db: float = 1.0  # ... or this much lower SQNR, whichever allows more
    max_error_increase: float = 0.10  # relative increase of the mean reconstruction error
    max_device_code_diff: int = 1  # steps between the device model's code and the encoder's (LiteRT)
    max_residual_error: float = 0.10  # mean |residual byte - float error|, relative to the mean float error
    max_auc_drop: float = 0.01


@dataclass
class Report:
    export: str
    windows: int
    litert_tflm_max_diff: int  # in code steps
    litert_tflm_mismatch: float  # fraction of code values that differ
    litert_tflm_rms_steps: float  # RMS difference, in code steps
    code_sqnr_db: float  # LiteRT's int8 codes vs the float codes
    tflm_code_sqnr_db: float  # TFLite Micro's int8 codes vs the float codes
    tflm_excess_noise: float  # mean squared error vs float, TFLite Micro minus LiteRT, in code steps^2
    allowed_excess_noise: float  # max(max_runtime_excess_noise, what max_runtime_sqnr_gap_db allows)
    error_float: float
    error_int8: float
    error_increase: float
    device_code_max_diff: int  # device model vs encoder, LiteRT, in code steps
    residual_error_litert: float  # residual byte (dequantized) vs float error, relative
    residual_error_tflm: float
    residual_tflm_mismatch: float  # fraction of residual bytes TFLite Micro gives differently from LiteRT
    data: str | None = None
    data_windows: int | None = None
    anomalous_windows: int | None = None  # None: the data has no labels
    data_code_sqnr_db: float | None = None  # on the data's normal windows (all, without labels)
    data_code_in_range: float | None = None  # share of those whose float code the int8 code can hold
    data_input_clipped: float | None = None  # share of those with a value beyond the int8 input's range
    data_error_float: float | None = None
    data_error_int8: float | None = None
    data_error_increase: float | None = None
    auc_float: float | None = None
    auc_int8: float | None = None
    floors: Floors = field(default_factory=Floors)
    failures: list[str] = field(default_factory=list)

    @property
    def litert_tflm_identical(self) -> bool:
        return self.litert_tflm_max_diff == 0

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def runtime_agreement(self) -> str:
        if self.litert_tflm_identical:
            return "identical codes"
        return (
            f"RMS {self.litert_tflm_rms_steps:.2f} step: {self.litert_tflm_mismatch:.2%} of values differ, "
            f"by <= {self.litert_tflm_max_diff}"
        )

    def table(self) -> str:
        f = self.floors
        rows = [
            ("windows checked", f"{self.windows}", ""),
            ("LiteRT vs TFLite Micro", self.runtime_agreement(), "reported"),
            ("code SQNR LiteRT", f"{self.code_sqnr_db:.1f} dB", f">= {f.min_code_sqnr_db:g} dB"),
            ("code SQNR TFLite Micro", f"{self.tflm_code_sqnr_db:.1f} dB", f">= {f.min_code_sqnr_db:g} dB"),
            ("TFLM noise over LiteRT", f"{self.tflm_excess_noise:+.3f} step^2",
             f"<= {self.allowed_excess_noise:.3f} (one rounding or {f.max_runtime_sqnr_gap_db:g} dB)"),
            ("recon. error float", f"{self.error_float:.4g}", ""),
            ("recon. error int8", f"{self.error_int8:.4g} ({self.error_increase:+.1%})", f"<= {f.max_error_increase:+.0%}"),
            ("device code vs encoder", "identical" if self.device_code_max_diff == 0 else f"<= {self.device_code_max_diff} step", f"<= {f.max_device_code_diff} step"),
            ("residual byte LiteRT", f"{self.residual_error_litert:.1%} off float error", f"<= {f.max_residual_error:.0%}"),
            ("residual byte TFLM", f"{self.residual_error_tflm:.1%} off float error "
             f"({self.residual_tflm_mismatch:.1%} of bytes differ from LiteRT)", f"<= {f.max_residual_error:.0%}"),
        ]  # fmt: skip
        if self.data is not None:
            normal = "no labels: all taken as normal" if self.anomalous_windows is None else f"{self.anomalous_windows} anomalous"
            rows += [
                ("data windows", f"{self.data_windows} ({normal})", ""),
                ("data code SQNR", f"{self.data_code_sqnr_db:.1f} dB ({self.data_code_in_range:.1%} of windows in the code's range)",
                 f">= {f.min_code_sqnr_db:g} dB"),
                ("data input clipped", f"{self.data_input_clipped:.1%} of windows beyond the int8 input's range", "reported"),
                ("data recon. error", f"{self.data_error_float:.4g} float, {self.data_error_int8:.4g} int8 ({self.data_error_increase:+.1%})",
                 f"<= {f.max_error_increase:+.0%}"),
            ]  # fmt: skip
        if self.auc_float is not None:
            rows += [
                ("ROC-AUC float", f"{self.auc_float:.4f}", ""),
                ("ROC-AUC int8", f"{self.auc_int8:.4f} ({self.auc_int8 - self.auc_float:+.4f})", f"drop <= {f.max_auc_drop:g}"),
            ]  # fmt: skip
        w = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
        lines = [f"{a:<{w[0]}}  {b:<{w[1]}}  {c}".rstrip() for a, b, c in rows]
        lines.append("PASS" if self.passed else "FAIL: " + "; ".join(self.failures))
        return "\n".join(lines)


def verify(
    export_dir: str | Path,
    data: str | Path | list | None = None,
    floors: Floors | None = None,
    arena_bytes: int = DEFAULT_ARENA_BYTES,
) -> Report:
    floors = floors or Floors()
    ex = Export.open(export_dir)
    score.load(ex)
    pipe = Pipeline(ex)
    ref_windows, ref_codes, ref_errors = ex.reference()

    device_in = pipe.device_input(ref_windows)
    q_litert = pipe.encoder.run_raw(device_in)
    q_tflm = tflm_run(ex.encoder_int8, device_in, arena_bytes)[0].reshape(q_litert.shape)
    diff = steps_apart(q_litert, q_tflm)
    codes = dequantize(q_litert, *pipe.encoder.output_quant)
    codes_tflm = dequantize(q_tflm, *pipe.encoder.output_quant)
    err_int8 = pipe.scores(ref_windows, codes)
    dev_outs = pipe.device.run_outputs_raw(device_in)
    dev_q = dev_outs[ex.manifest["device"]["outputs"]["code"]]
    res_litert = pipe.wire_outputs(dev_outs)[1]
    res_tflm = pipe.wire_outputs(tflm_run(ex.device, device_in, arena_bytes))[1]
    step2 = pipe.encoder.output_quant[0] ** 2
    noise_litert = np.mean((codes.reshape(ref_codes.shape) - ref_codes) ** 2) / step2
    noise_tflm = np.mean((codes_tflm.reshape(ref_codes.shape) - ref_codes) ** 2) / step2

    def rel_error(residual_bytes):
        return float(np.mean(np.abs(pipe.residual(residual_bytes) - ref_errors)) / ref_errors.mean())

    report = Report(
        export=str(export_dir), windows=len(ref_windows),
        litert_tflm_max_diff=int(diff.max(initial=0)), litert_tflm_mismatch=float(np.mean(diff > 0)),
        litert_tflm_rms_steps=float(np.sqrt(np.mean(diff.astype(np.float64) ** 2))),
        code_sqnr_db=sqnr_db(ref_codes, codes.reshape(ref_codes.shape)),
        tflm_code_sqnr_db=sqnr_db(ref_codes, codes_tflm.reshape(ref_codes.shape)),
        tflm_excess_noise=float(noise_tflm - noise_litert),
        allowed_excess_noise=float(max(floors.max_runtime_excess_noise,
                                       noise_litert * (10 ** (floors.max_runtime_sqnr_gap_db / 10) - 1))),  # fmt: skip
        error_float=float(ref_errors.mean()), error_int8=float(err_int8.mean()),
        error_increase=float(err_int8.mean() / ref_errors.mean() - 1),
        device_code_max_diff=int(steps_apart(q_litert, dev_q).max(initial=0)),
        residual_error_litert=rel_error(res_litert), residual_error_tflm=rel_error(res_tflm),
        residual_tflm_mismatch=float(np.mean(res_tflm != res_litert)), floors=floors,
    )  # fmt: skip

    if data is not None:
        _measure_data(report, pipe, data)

    if _over(report.tflm_excess_noise, report.allowed_excess_noise):
        report.failures.append(
            f"TFLite Micro codes add {report.tflm_excess_noise:.3f} step^2 of noise over LiteRT's "
            f"> {report.allowed_excess_noise:.3f}"
        )
    for runtime, sqnr in (("LiteRT", report.code_sqnr_db), ("TFLite Micro", report.tflm_code_sqnr_db)):
        if _under(sqnr, floors.min_code_sqnr_db):
            report.failures.append(f"{runtime} code SQNR {sqnr:.1f} dB < {floors.min_code_sqnr_db:g} dB")
    if _over(report.device_code_max_diff, floors.max_device_code_diff):
        report.failures.append(
            f"the device model's code is {report.device_code_max_diff} steps from the encoder's > {floors.max_device_code_diff}"
        )
    for runtime, err in (("LiteRT", report.residual_error_litert), ("TFLite Micro", report.residual_error_tflm)):
        if _over(err, floors.max_residual_error):
            report.failures.append(f"{runtime} residual byte {err:.1%} off the float error > {floors.max_residual_error:.0%}")
    if _over(report.error_increase, floors.max_error_increase):
        report.failures.append(f"reconstruction error +{report.error_increase:.1%} > +{floors.max_error_increase:.0%}")
    if report.data is not None:
        missed = []
        if _under(report.data_code_sqnr_db, floors.min_code_sqnr_db):
            missed.append(f"code SQNR {report.data_code_sqnr_db:.1f} dB < {floors.min_code_sqnr_db:g} dB")
        if _over(report.data_error_increase, floors.max_error_increase):
            missed.append(f"reconstruction error +{report.data_error_increase:.1%} > +{floors.max_error_increase:.0%}")
        if missed:
            why = (f" ({report.data_input_clipped:.0%} of its windows lie beyond the int8 input's range, which the calibration data "
                   "set: export --calibration with data like these, or train on them)" if report.data_input_clipped else "")  # fmt: skip
            report.failures.append(f"on the data, {' and '.join(missed)}{why}")
    if report.auc_float is not None and _over(report.auc_float - report.auc_int8, floors.max_auc_drop):
        report.failures.append(f"ROC-AUC drop {report.auc_float - report.auc_int8:.4f} > {floors.max_auc_drop:g}")
    return report


def _measure_data(report: Report, pipe: Pipeline, data) -> None:
    """Fidelity on the normal windows of `data` (a file, a folder of them, or a list of those;
    every window of a file without labels), and ROC-AUC when it has both kinds."""
    ex = pipe.export
    files = ex.read_files(data)
    per_file = [pipe.norm.windows(s, ex.window, ex.hop) for s in files]
    windows = np.concatenate(per_file)
    labels = np.concatenate([np.zeros(len(w), bool) if s.labels is None else D.window_labels(s, ex.window, ex.hop).astype(bool)
                             for s, w in zip(files, per_file)])  # fmt: skip
    if labels.all():
        raise EdgeaeError(f"{D.names(data)}: every window is labelled anomalous; verify --data measures fidelity on normal ones")
    float_codes, int8_codes = pipe.float_codes(windows), pipe.dequantized_codes(windows)
    error_float, error_int8 = pipe.scores(windows, float_codes), pipe.scores(windows, int8_codes)
    normal = ~labels
    report.data, report.data_windows = D.names(data), len(windows)
    report.anomalous_windows = None if all(s.labels is None for s in files) else int(labels.sum())
    report.data_code_sqnr_db = sqnr_db(float_codes[normal], int8_codes[normal])
    report.data_code_in_range = float(pipe.code_in_range(float_codes[normal]).mean())
    report.data_input_clipped = float(pipe.input_clipped(windows[normal]).mean())
    report.data_error_float, report.data_error_int8 = float(error_float[normal].mean()), float(error_int8[normal].mean())
    report.data_error_increase = report.data_error_int8 / report.data_error_float - 1
    if labels.any():
        report.auc_float, report.auc_int8 = roc_auc(labels, error_float), roc_auc(labels, error_int8)


def _over(value: float, limit: float) -> bool:
    """`value` beyond an upper limit; NaN (a model or constant gone wrong) counts as beyond."""
    return not value <= limit


def _under(value: float, floor: float) -> bool:
    """`value` below a floor; NaN counts as below."""
    return not value >= floor

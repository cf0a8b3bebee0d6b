"""`edgeae eval`: detection and compression quality on labelled data, beside baselines.

Every detector scores the same windows; each threshold is the UCL rule (quantile 0.999 x 4/3
of the detector's scores on the training windows), except Isolation Forest's (below):

    float         the float autoencoder's reconstruction error (raw window; the export's window
                  score: mean squared error, or the power mean over channels of per-channel
                  errors with the recipe's export.residual_power; PCA's Q is measured the same way)
    int8          reconstruction error through the int8 export (host decoder on the int8 code)
    int8_pruned   the same, for the export pruned to 50 % sparsity (protocol runs)
    residual      the device's residual byte (packet only)
    code          Mahalanobis distance of the code (packet only)
    pca_q         PCA with the same code size: reconstruction error (Q statistic)
    pca_t2q       PCA T^2 + Q, each divided by its own control limit
    iforest       Isolation Forest on the flattened windows, at its own threshold (where
                  scikit-learn's `predict` puts it: anomaly score 0.5, the boundary of the original
                  paper). Its score is bounded, normal windows near 0.45, so the UCL's x 4/3 lands
                  above nearly every window (on SKAB it flagged no row at all: F1 0)
    deployed      eval of an export: the export's own scorer at its own threshold (scorer.json from
                  `edgeae calibrate`, else the default residual one), as serve judges its packets;
                  with `sensor`, at that sensor's own threshold (`calibrate --db --sensor`) if it has one

Protocols: `skab` (../shared/data/README.md, edgeae.protocols: per file, first 400 rows,
windows of 60, the row rule, test rows of all files concatenated), `nab` (machine temperature,
its labelled anomaly windows, train on the recipe's rows), `generic` (one file or several: train
one model on the given rows of each, test on the rest, window labels = last row). `evaluate_export`
scores an existing export the same way. Over several files, one threshold per detector, fitted on
all their training windows (`score_together`), or each file's own (`score_files`, per_file).
`summary_text(metrics, out)` is the text `edgeae eval` prints.

Output folder: metrics.json (schema below), scores.npz and details.npz for the report.

metrics.json, schema "edgeae.metrics/1":
    protocol, data, recipe, channels, parts (the files' names), thresholds ("pooled": one per
        detector over all the files' training windows; "per-file": each file's own, from its own
        training windows, as SKAB's protocol and a single file; absent in older folders: pooled
        over several files of one export, per file for skab), windows {train, test, anomalous}
    bytes_per_window {raw_int16, code, packet, compression_ratio}
    detectors.<name> {threshold ("ucl", or "own": Isolation Forest's; absent in older folders, whose
        Isolation Forest may be at either: the UCL until it had its own),
        roc_auc, pr_auc, f1, far, mar, tp, fp, fn, tn, per_part {tp[], fp[], fn[], tn[]} (each
        part's counts at the threshold, in the order of `parts`), detection_delay {per_segment,
        mean, missed}, operating_curve {ucl_factor[], f1[], far[], mar[]},
        best_f1_within_far_budget {far_budget, f1, ucl_factor},
        bootstrap (from 10 files on) {resamples, level, f1 [lo, hi], far [lo, hi],
        int8_minus {f1 [lo, hi], far [lo, hi]} (int8's figure minus this detector's; not for int8)}}
        (F1 / FAR / MAR in rows for skab, in windows otherwise; FAR, MAR in %. The operating curve
        scales every threshold (the UCL; Isolation Forest's own) by each factor; its best F1 within
        the FAR budget picks the factor on the test data, so it bounds what a threshold could do, it
        is not a threshold one could ship. The bootstrap intervals resample the files, all detectors
        on the same resamples.)
    groups (null with one subset): <subset> {files, detectors.<name> {roc_auc, f1, far, mar,
        best_f1_within_far_budget}}   the same figures per subset of files (skab: valve1, valve2, other)
    reconstruction.<float|int8|int8_pruned|pca_int8|decimation> {nmse[], snr_db[]}   per channel,
        normalized units, on the normal test windows (how well normal operation is compressed)
    code_sqnr_db (int8 vs float code, normal test windows), code_in_range {windows (the share of
        normal test windows whose float code lies within the int8 code's range), sqnr_db (on those)},
        input_clipped (the share of normal test windows with a value beyond the int8 input's range,
        which the device clips: data unlike the calibration's, or scaled otherwise)
    pruning {layers, target_sparsity}, published (skab: the leaderboard)
    deployed (eval of an export; else null) {mode, rule, threshold, source ("scorer.json", or
        "default": a residual scorer fitted on the export's reference windows), sensor and
        sensor_threshold (eval --sensor: whose threshold; whether it is the sensor's own)}
    int8_all_rows (skab; else null) {f1, far, mar, tp, fp, fn, tn}: the int8 export counted over
        every row of each file, its 400 training rows included, as SKAB's reference notebook
        (notebooks/Conv_AE.ipynb) predicts and counts them; the figures above count the test rows
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import data as D
from . import metrics as MT
from . import protocols as P
from .errors import EdgeaeError, require
from .fsutil import atomic_dir, check_replaceable, parse_json, write_json
from .host import Host
from .manifest import Export
from .pipeline import Pipeline
from .score import AnomalyScorer

SCHEMA = "edgeae.metrics/1"
METRICS, RD = "metrics.json", "rd.json"  # what an eval / a sweep output folder holds
WORST_SHOWN = 4  # worst-reconstructed windows in the report
SKAB_LEADERBOARD = [
    ("Conv-AE", 0.78, 13.55, 28.02), ("MSET", 0.78, 39.73, 14.13), ("T-squared+Q (PCA-based)", 0.76, 26.62, 24.92),
    ("LSTM-AE", 0.74, 29.96, 25.92), ("T-squared", 0.66, 19.21, 42.6), ("LSTM-VAE", 0.56, 9.13, 55.03),
    ("Vanilla AE", 0.39, 2.59, 75.15), ("Isolation forest", 0.29, 2.56, 82.89),
]  # fmt: skip


@dataclass
class Part:
    """One dataset to score: all windows (normalized), which ones train, labels per window and row."""

    name: str
    windows: np.ndarray
    train_mask: np.ndarray
    window_labels: np.ndarray
    row_labels: np.ndarray
    window_hop: int
    scores: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)
    limits: dict = field(default_factory=dict)  # a detector's own threshold, or one fitted on several parts together
    window_times: np.ndarray | None = None  # Unix seconds of each window's last row, from the data's time column

    def limit(self, name: str) -> float:
        """The threshold of detector `name` on this part: the one set in `limits` if any, else the
        UCL of its scores on the training windows."""
        return self.limits[name] if name in self.limits else P.ucl(self.scores[name][self.train_mask])


class PCA:
    """PCA with k components on flattened windows; `q` is the reconstruction error, `t2` the
    Hotelling statistic of the component scores."""

    def __init__(self, k: int):
        self.k = k

    def fit(self, windows: np.ndarray) -> "PCA":
        x = windows.reshape(len(windows), -1).astype(np.float64)
        self.mean_ = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - self.mean_, full_matrices=False)
        self.components_ = vt[: self.k]
        self.var_ = np.maximum(s[: self.k] ** 2 / max(len(x) - 1, 1), 1e-12)
        return self

    def transform(self, windows):
        return (windows.reshape(len(windows), -1) - self.mean_) @ self.components_.T

    def inverse(self, t, shape):
        return (t @ self.components_ + self.mean_).reshape((len(t),) + shape)

    def q(self, windows, power: int = 1):
        """The reconstruction error as the autoencoder's is measured (metrics.reconstruction_error)."""
        return MT.reconstruction_error(windows, self.inverse(self.transform(windows), windows.shape[1:]), power)

    def t2(self, windows):
        return np.sum(self.transform(windows) ** 2 / self.var_, axis=1)


def isolation_forest(part: Part, seed: int = 0) -> None:
    """Isolation Forest on the flattened windows, fitted on the training ones, with the threshold
    scikit-learn's `predict` uses (anomaly score 0.5): its bounded score has no zero for the UCL's
    x 4/3 to scale from."""
    IsolationForest = require("sklearn.ensemble", "eval").IsolationForest
    w, tr = part.windows, part.train_mask
    forest = IsolationForest(n_estimators=200, random_state=seed).fit(w[tr].reshape(tr.sum(), -1))
    part.scores["iforest"] = -forest.score_samples(w.reshape(len(w), -1))
    part.limits["iforest"] = -forest.offset_


def score_part(part: Part, pipes: dict[str, Pipeline], code_size: int, seed: int = 0, deployed: AnomalyScorer | None = None) -> Part:
    """Fill `part.scores` with every detector's window scores, and `extras` for the report;
    `seed` is Isolation Forest's (the protocol run's training seed); `deployed`, an export's own
    scorer, is scored at its own threshold."""
    w, tr = part.windows, part.train_mask
    main = pipes["int8"]
    f = main.offline_features(w)
    part.scores["float"] = main.float_scores(w)
    part.scores["int8"] = f.error
    if "int8_pruned" in pipes:
        part.scores["int8_pruned"] = pipes["int8_pruned"].int8_scores(w)
    normal = f.subset(tr)
    part.scores["residual"] = AnomalyScorer("residual").fit(normal).score_samples(f)
    part.scores["code"] = AnomalyScorer("code").fit(normal).score_samples(f)
    if deployed is not None:
        part.scores["deployed"], part.limits["deployed"] = deployed.score_samples(f), deployed.threshold_
    pca = PCA(code_size).fit(w[tr])
    q, t2 = pca.q(w, main.power), pca.t2(w)
    part.scores["pca_q"] = q
    part.scores["pca_t2q"] = q / P.ucl(q[tr]) + t2 / P.ucl(t2[tr])
    isolation_forest(part, seed)

    test = ~tr
    recon = main.reconstruct(f.code)
    float_codes = main.float_codes(w)
    part.extras = {
        "test_windows": w[test],
        "recon_int8": recon[test],
        "recon_float": main.reconstruct(float_codes)[test],
        "codes": f.code[test],
        "code_error": (f.code - float_codes)[test],
        "code_in_range": main.code_in_range(float_codes)[test],
        "input_clipped": main.input_clipped(w[test]),
        "pca_int8": _pca_int8_recon(pca, w[tr], w[test]),
        "decimation": decimate(w[test], main.export.manifest["code_bytes"], w[tr]),
    }
    if "int8_pruned" in pipes:
        p = pipes["int8_pruned"]
        part.extras["recon_int8_pruned"] = p.reconstruct(p.dequantized_codes(w[test]))
    return part


def score_together(parts: list[Part], pipes: dict[str, Pipeline], code_size: int, seed: int = 0,
                   deployed: AnomalyScorer | None = None) -> list[Part]:  # fmt: skip
    """`score_part` of the parts' windows as one set, its scores and extras split back per part,
    each part given the thresholds fitted on all their training windows: one export over several
    recordings, as it is deployed (one threshold per detector, one PCA, one forest)."""
    if len(parts) == 1:
        return [score_part(parts[0], pipes, code_size, seed, deployed)]
    whole = score_part(_joined(parts), pipes, code_size, seed, deployed)
    limits = {name: whole.limit(name) for name in whole.scores}
    at = np.cumsum([len(p.windows) for p in parts])[:-1]
    at_test = np.cumsum([(~p.train_mask).sum() for p in parts])[:-1]
    for i, p in enumerate(parts):
        p.scores = {k: np.split(v, at)[i] for k, v in whole.scores.items()}
        p.extras = {k: np.split(v, at_test)[i] for k, v in whole.extras.items()}
        p.limits = dict(limits)
    return parts


def _joined(parts: list[Part]) -> Part:
    """The parts' windows, training masks and labels as one part, in order (no score yet)."""
    cat = lambda k: np.concatenate([getattr(p, k) for p in parts])  # noqa: E731
    return Part("", cat("windows"), cat("train_mask"), cat("window_labels"), cat("row_labels"), parts[0].window_hop)


def score_files(parts: list[Part], pipes: dict[str, Pipeline], code_size: int, seed: int = 0, per_file: bool = False,
                deployed: AnomalyScorer | None = None) -> list[Part]:  # fmt: skip
    """Every detector's scores of the files' parts: with `per_file`, each file judged by thresholds
    (and baselines) fitted on its own training windows, as sensors each calibrated on their own
    (`calibrate --db --sensor`); else by one threshold per detector over all (`score_together`)."""
    if per_file:
        return [score_part(p, pipes, code_size, seed, deployed) for p in parts]
    return score_together(parts, pipes, code_size, seed, deployed)


def _pca_int8_recon(pca: PCA, train, test):
    """PCA codes quantized to int8 (per component, symmetric range from the training codes)."""
    t_train = pca.transform(train)
    scale = np.maximum(np.abs(t_train).max(axis=0), 1e-12) / 127
    t = np.clip(np.round(pca.transform(test) / scale), -128, 127) * scale
    return pca.inverse(t, test.shape[1:])


def decimate(windows: np.ndarray, n_bytes: int, train: np.ndarray) -> np.ndarray:
    """The compression baseline: keep n_bytes int8 samples per window (evenly spaced, split over
    the channels, each quantized with its channel's training range), interpolate back linearly."""
    n, length, channels = windows.shape
    per = max(1, n_bytes // channels)
    idx = np.linspace(0, length - 1, per).round().astype(int)
    lo, hi = train.min(axis=(0, 1)), train.max(axis=(0, 1))
    scale = np.maximum(hi - lo, 1e-12) / 255
    kept = np.clip(np.round((windows[:, idx, :] - lo) / scale), 0, 255) * scale + lo
    out = np.empty_like(windows)
    for c in range(channels):
        for i in range(n):
            out[i, :, c] = np.interp(np.arange(length), idx, kept[i, :, c]) if per > 1 else kept[i, 0, c]
    return out


OWN_THRESHOLD = ("iforest", "deployed")  # detectors not at the UCL rule (`isolation_forest`, an export's scorer)
BOOTSTRAP_RESAMPLES, BOOTSTRAP_MIN_PARTS = 2000, 10  # 95 % intervals over files, from 10 files on
# The operating curve's thresholds, x the UCL (1.0 included), steps of 7 %. Wide: on NAB the best F1
# within the FAR budget lies near 0.15-0.25 x the UCL, below the 0.25 where the curve once stopped.
UCL_FACTORS = np.round(np.geomspace(1 / 16, 16.0, 81), 4)
FAR_BUDGET = 10.0  # %: the SKAB target's false-alarm rate


def count_unit(protocol: str) -> str:
    """What F1 / FAR / MAR and detection delays count under `protocol`: SKAB's rule counts rows,
    the others windows."""
    return "rows" if protocol == "skab" else "windows"


def deployed_text(deployed: dict | None) -> str:
    """How the CLI and the report name an export's own scorer and threshold (metrics' `deployed`);
    '' when there is none (a protocol's exports, older folders)."""
    if not deployed:
        return ""
    source = "its scorer.json, from edgeae calibrate" if deployed["source"] != "default" else "no scorer.json: the default one, fitted on its reference windows"
    sensor = deployed.get("sensor")
    whose = ("its own threshold" if sensor is None else f"sensor {sensor}'s own threshold, from its packets" if deployed["sensor_threshold"]
             else f"its own threshold (sensor {sensor} has none of its own)")  # fmt: skip
    return (f"deployed: the export's scorer at {whose}, as serve judges packets ({deployed['mode']} mode, "
            f"{deployed['rule']} rule, threshold {deployed['threshold']:.4g}; {source})")


def ucl_source_text(m: dict) -> str:
    """How the CLI and the report say whose training windows set the UCL over several files: all
    the files' together (one export deployed over them) or each file's own (SKAB's protocol, or
    --thresholds per-file); '' for one file. Folders from before `thresholds` was recorded get
    their protocol's rule."""
    if len(m["parts"]) < 2:
        return ""
    if m.get("thresholds", "per-file" if m["protocol"] == "skab" else "pooled") == "pooled":
        return f", one over all {len(m['parts'])} files' training windows"
    return ", each file's own, from its training windows"


def best_text(best: dict | None) -> str:
    """A detector's best F1 within the FAR budget as table text: "0.802 x1.41", or "-" when no
    factor stays within the budget (or the metrics predate operating curves)."""
    return "-" if not best or best["f1"] is None else f"{best['f1']:.3f} x{best['ucl_factor']:.2f}"


def summary_text(m: dict, out) -> str:
    """eval's printed summary of metrics `m` (written to the folder `out`): the detectors' table,
    how the thresholds were set, subsets, bootstrap intervals, the published leaderboard, code
    SQNR, input clipping and bytes per window."""
    lines = []
    say = lines.append
    unit = count_unit(m["protocol"])
    budget = f"F1@FAR<={FAR_BUDGET:g}"
    say(f"{'detector':<18}{'ROC-AUC':>8}{'PR-AUC':>8}{'F1':>7}{'FAR %':>8}{'MAR %':>8}{budget:>13}   ({unit})")
    for name, d in m["detectors"].items():
        best = best_text(d["best_f1_within_far_budget"])
        say(f"{name:<18}{d['roc_auc']:>8.4f}{d['pr_auc']:>8.4f}{d['f1']:>7.3f}{d['far']:>8.2f}{d['mar']:>8.2f}{best:>13}")
    deployed = deployed_text(m.get("deployed"))
    say(f"thresholds: the UCL{ucl_source_text(m)}; iforest's own (anomaly score 0.5, as scikit-learn's predict)" + (f"; {deployed}" if deployed else "") + "\n"
        f"{budget}: the best F1 with every threshold scaled by one factor (chosen on this test data) and FAR <= {FAR_BUDGET:g} %")
    if m.get("groups"):
        heads = (f"{k} ({g['files']})" for k, g in m["groups"].items())
        say(f"{'by subset, F1 / FAR %':<23}" + "".join(f"{h:>17}" for h in heads))
        for name in m["detectors"]:
            say(f"{name:<23}" + "".join(f"{d['f1']:>9.3f} / {d['far']:>5.2f}" for d in (g["detectors"][name] for g in m["groups"].values())))
    boot = {n: d["bootstrap"] for n, d in m["detectors"].items() if d.get("bootstrap")}
    if boot:
        span = lambda v, f: f"{v[0]:{f}} .. {v[1]:{f}}"  # noqa: E731
        say(f"95 % intervals, bootstrap over the {len(m['parts'])} files ({next(iter(boot.values()))['resamples']} "
            "resamples); 'int8 minus it' is int8's lead on the same resamples")  # fmt: skip
        say(f"{'detector':<18}{'F1':>16}{'FAR %':>16}{'int8 minus it: F1':>20}{'FAR points':>18}")
        for name, b in boot.items():
            lead = f"{span(b['int8_minus']['f1'], '+.3f'):>20}{span(b['int8_minus']['far'], '+.2f'):>18}" if "int8_minus" in b else ""
            say(f"{name:<18}{span(b['f1'], '.3f'):>16}{span(b['far'], '.2f'):>16}{lead}")
    d = m["detectors"].get("int8", {})
    if len(m["parts"]) > 1 and d.get("fp"):
        worst = sorted(zip(d["per_part"]["fp"], m["parts"]), key=lambda t: -t[0])[:3]
        say("int8's false alarms by file, most first: " + ", ".join(f"{name} {100 * fp / d['fp']:.0f} %" for fp, name in worst)
            + " of them (every file's counts: per_part in metrics.json; the report draws them)")
    if m.get("published"):
        say("published SKAB leaderboard: " + "; ".join(f"{r['algorithm']} F1 {r['f1']:.2f} FAR {r['far']:.2f}" for r in m["published"][:3]))
        a = m["int8_all_rows"]
        say(f"(its notebook counts every row, each file's 400 training rows included; int8 counted so: F1 {a['f1']:.3f} FAR {a['far']:.2f})")
    c = m["code_in_range"]
    say(f"code SQNR, int8 vs float, normal test windows: {m['code_sqnr_db']:.1f} dB; on the {100 * c['windows']:.1f} % whose "
        f"float code lies within the int8 range: " + ("-" if c["sqnr_db"] is None else f"{c['sqnr_db']:.1f} dB"))  # fmt: skip
    if "input_clipped" in m:  # absent in folders from before it
        say(f"int8 input: {100 * m['input_clipped']:.1f} % of the normal test windows hold a value beyond the range the "
            "export was calibrated for, which the device clips")  # fmt: skip
    b = m["bytes_per_window"]
    say(f"bytes per window: raw {b['raw_int16']} -> code {b['code']} ({b['compression_ratio']:.0f}x); metrics in {out}/metrics.json")
    return "\n".join(lines)


def detector_metrics(parts: list[Part], protocol: str, bootstrap: bool = True) -> dict:
    """ROC-AUC / PR-AUC on test windows (scores divided by each part's threshold, then pooled),
    and F1 / FAR / MAR and detection delays at that threshold (Part.limit: the UCL, or the
    detector's own): rows by the SKAB rule for skab, test windows otherwise. Also the operating
    curve: F1 / FAR / MAR with every part's threshold scaled by each of UCL_FACTORS, to compare
    detectors at equal false-alarm rates. From BOOTSTRAP_MIN_PARTS parts on, with `bootstrap`,
    intervals from resampling them."""

    def predict(name, limits):
        preds, truth = [], []
        for p, limit in zip(parts, limits):
            s, tr = p.scores[name], p.train_mask
            if protocol == "skab":
                preds.append(P.skab_rows(s, limit, len(p.row_labels))[P.SKAB_TRAIN_ROWS :])
                truth.append(p.row_labels[P.SKAB_TRAIN_ROWS :])
            else:
                preds.append((s[~tr] > limit).astype(np.int8))
                truth.append(p.window_labels[~tr])
        return truth, preds

    flat, factors = _flat_scores(parts), UCL_FACTORS.tolist()
    out, per_part = {}, {}
    for name in parts[0].scores:
        yw, sw = flat["labels"], flat[name]
        limits = [p.limit(name) for p in parts]
        runs = {f: predict(name, [limit * f for limit in limits]) for f in factors}
        y_pred, preds = runs[1.0]
        per_part[name] = [[MT.detection_rates(y, pr)[k] for k in MT.COUNTS] for y, pr in zip(y_pred, preds)]
        delays = [d for y, pr in zip(y_pred, preds) for d in MT.detection_delays(y, pr)]
        hit = [d for d in delays if d is not None]
        curve = [MT.detection_rates(*map(np.concatenate, runs[f])) for f in factors]
        within = [(c["f1"], f) for c, f in zip(curve, factors) if c["far"] <= FAR_BUDGET]
        out[name] = {
            "threshold": "own" if name in OWN_THRESHOLD else "ucl",
            "roc_auc": MT.roc_auc(yw, sw),
            "pr_auc": MT.pr_auc(yw, sw),
            **curve[factors.index(1.0)],
            "detection_delay": {"per_segment": delays, "mean": float(np.mean(hit)) if hit else None,
                                "missed": sum(d is None for d in delays),
                                "unit": count_unit(protocol)},  # fmt: skip
            "per_part": {k: [c[i] for c in per_part[name]] for i, k in enumerate(MT.COUNTS)},
            "operating_curve": {"ucl_factor": factors, **{k: [c[k] for c in curve] for k in ("f1", "far", "mar")}},
            "best_f1_within_far_budget": {"far_budget": FAR_BUDGET, **(
                dict(zip(("f1", "ucl_factor"), max(within))) if within else {"f1": None, "ucl_factor": None})},
        }  # fmt: skip
    if bootstrap and len(parts) >= BOOTSTRAP_MIN_PARTS:
        for name, b in bootstrap_intervals(per_part).items():
            out[name]["bootstrap"] = b
    return out


def all_rows_rates(parts: list[Part], name: str) -> dict:
    """A detector's F1 / FAR / MAR by the SKAB row rule over every row of each part, the training
    rows included: how SKAB's reference notebook counts, so the leaderboard's FAR has more normal
    rows below it than a count of the test rows."""
    truth = np.concatenate([p.row_labels for p in parts])
    pred = np.concatenate([P.skab_rows(p.scores[name], p.limit(name), len(p.row_labels)) for p in parts])
    return MT.detection_rates(truth, pred)


def bootstrap_intervals(per_part: dict[str, list]) -> dict[str, dict]:
    """95 % intervals of each detector's F1 and FAR from resampling the files (a cluster bootstrap:
    rows within a file are not independent), and of int8's lead over each other detector on the
    same resamples: how much of a difference between detectors the set of files can tell apart."""
    names = list(per_part)
    f1, far = MT.bootstrap_rates(np.array([per_part[n] for n in names]), BOOTSTRAP_RESAMPLES)
    interval = lambda x: [float(v) for v in np.percentile(x, [2.5, 97.5])]  # noqa: E731
    ref = names.index("int8") if "int8" in names else None
    out = {}
    for i, name in enumerate(names):
        out[name] = {"resamples": BOOTSTRAP_RESAMPLES, "level": 0.95, "f1": interval(f1[i]), "far": interval(far[i])}
        if ref is not None and i != ref:
            out[name]["int8_minus"] = {"f1": interval(f1[ref] - f1[i]), "far": interval(far[ref] - far[i])}
    return out


def group_metrics(parts: list[Part], protocol: str) -> dict | None:
    """The detectors' figures on each subset of the parts (the folder before the "/" in a part's
    name: SKAB's valve1, valve2, other), to tell a result that holds across kinds of fault from one
    carried by a subset. None for a single subset. Subsets in name order, as metrics.json keeps them;
    a part without test windows (a recording eval fitted on whole) in none."""
    groups: dict[str, list[Part]] = {}
    for p in (p for p in parts if not p.train_mask.all()):
        groups.setdefault(p.name.split("/")[0] if "/" in p.name else "", []).append(p)
    if len(groups) < 2:
        return None
    keep = ("roc_auc", "f1", "far", "mar", "best_f1_within_far_budget")
    return {g: {"files": len(ps), "detectors": {n: {k: d[k] for k in keep} for n, d in detector_metrics(ps, protocol, bootstrap=False).items()}}
            for g, ps in sorted(groups.items())}  # fmt: skip


def _normal_test(parts: list[Part]) -> np.ndarray:
    """Over the concatenated test windows: True where the window is labelled normal. Fidelity is
    measured there; an anomalous window can lie far outside the range the int8 input covers."""
    return _test_labels(parts) == 0


def _test_labels(parts: list[Part]) -> np.ndarray:
    """Each test window's label, over the parts' test windows concatenated (as scores.npz and
    details.npz hold them)."""
    return np.concatenate([p.window_labels[~p.train_mask] for p in parts])


def _test_part_index(parts: list[Part]) -> np.ndarray:
    """Each test window's part (its index in `parts`), over the same concatenation."""
    return np.concatenate([np.full((~p.train_mask).sum(), i) for i, p in enumerate(parts)])


def reconstruction_metrics(parts: list[Part]) -> dict:
    normal = _normal_test(parts)
    cat = lambda k: np.concatenate([p.extras[k] for p in parts if k in p.extras])[normal]  # noqa: E731
    x = cat("test_windows")
    out = {"float": MT.channel_fidelity(x, cat("recon_float")), "int8": MT.channel_fidelity(x, cat("recon_int8")),
           "pca_int8": MT.channel_fidelity(x, cat("pca_int8")), "decimation": MT.channel_fidelity(x, cat("decimation"))}  # fmt: skip
    if all("recon_int8_pruned" in p.extras for p in parts):
        out["int8_pruned"] = MT.channel_fidelity(x, cat("recon_int8_pruned"))
    return out


# ---------------------------------------------------------------- protocols


def _train_and_export(recipe, files: list[D.Series], work: Path, rows: list[tuple[int, int]], sparsity: float | None) -> Pipeline:
    """One model trained on rows [start, stop) of each file (each cut out, so no window spans
    two files, and every window in them trains), pruned to `sparsity`, exported."""
    import copy

    from .export import export
    from .train import train

    recipe = copy.deepcopy(recipe)
    recipe.data.train_rows = None  # the files are cut to their training rows below
    cut = [replace(s.rows(start, stop), labels=None) for s, (start, stop) in zip(files, rows)]
    run = train(recipe, cut, work / "run", sparsity=sparsity, progress=False)
    return Pipeline(Export.open(export(run, work / "dist")))


def _pipes(recipe, files, work, rows, sparsity) -> dict[str, Pipeline]:
    pipes = {"int8": _train_and_export(recipe, files, work / "dense", rows, 0.0)}
    if sparsity:
        pipes["int8_pruned"] = _train_and_export(recipe, files, work / "pruned", rows, sparsity)
    return pipes


def _part(name, series, pipe: Pipeline, hop: int, train_rows) -> Part:
    w = pipe.norm.windows(series, pipe.export.window, hop)
    train = D.rows_windows_mask(series, pipe.export.window, hop, train_rows)
    times = series.unix_times()
    return Part(name, w, train, D.window_labels(series, pipe.export.window, hop), series.labels, hop,
                window_times=None if times is None else times[pipe.export.window - 1 :: hop][: len(w)])


def _check_split(parts: list[Part], source: str, rows: list[tuple[int, int]], given: tuple[int, int] | None,
                 per_file: bool = False) -> None:  # fmt: skip
    """Refuse training rows (`rows`, each part's: `given`, else those before its first anomaly)
    that leave fewer than 2 windows to fit on (in each file, for thresholds `per_file`), or none to test,
    or whose training windows are all one window."""
    if per_file and (few := next((p for p in parts if p.train_mask.sum() < 2), None)):
        raise EdgeaeError(f"{few.name}: {int(few.train_mask.sum())} training window(s) in it; a threshold of its own needs at least 2")
    train, n = sum(int(p.train_mask.sum()) for p in parts), sum(len(p.windows) for p in parts)
    if train < 2 or train == n:
        shown = given or (rows[0] if len(rows) == 1 else None)
        what = f"train rows {shown[0]}:{shown[1]}" if shown else "the rows before each file's first anomaly"
        raise EdgeaeError(f"{source}: {what} leave {train} training and {n - train} test windows of {n}; need at least 2 and 1")
    for group, name in [([p], p.name) for p in parts] if per_file else [(parts, source)]:
        D.check_spread(np.concatenate([p.windows[p.train_mask] for p in group]), name)


def nab_series(root: str | Path) -> D.Series:
    """NAB machine temperature with labels from its anomaly windows (a row is anomalous when its
    timestamp lies inside a window)."""
    root = Path(root)
    path, wpath = root / "machine_temperature_system_failure.csv", root / "combined_windows.json"
    s = D.read_series(path, ["value"], time="timestamp")
    t = s.unix_times()
    try:
        windows = parse_json(wpath.read_text())
        windows = next(iter(windows.values())) if isinstance(windows, dict) else windows
        labels = np.zeros(len(t), np.int8)
        for start, end in windows:
            labels[(t >= D.unix_seconds(start[:19])) & (t <= D.unix_seconds(end[:19]))] = 1
    except (ValueError, TypeError, StopIteration) as e:  # JSONDecodeError is a ValueError
        raise EdgeaeError(f"{root}: NAB timestamps or {wpath.name} not as published ({e.__class__.__name__}: {e})") from None
    return D.Series(s.values, s.channels, labels, str(path), s.times)


def evaluate_protocol(protocol: str, recipe, data, out, sparsity: float = 0.5, files: int | None = None,
                      progress: bool = True, train_rows: tuple[int, int] | None = None, per_file: bool = False) -> dict:  # fmt: skip
    """Train (and prune), export and score as the protocol prescribes; write the output folder.
    `generic` reads a labelled file, a folder of them or a list of those: one model fitted on the
    training rows of each file (`train_rows`, else the recipe's, else those before its first
    anomaly), scored with one threshold per detector over all of them, or `per_file` (`score_files`)."""
    from tqdm.auto import tqdm

    from .train import load_data, load_files

    check_replaceable(out, METRICS)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if protocol == "skab":
            parts, rows = [], [(0, P.SKAB_TRAIN_ROWS)]
            for i, path in enumerate(tqdm(_skab_paths(Path(data), files), desc="SKAB files", unit="file", disable=None if progress else True)):
                series = load_data(recipe, path)
                pipes = _pipes(recipe, [series], tmp / str(i), rows, sparsity)
                part = _part(f"{path.parent.name}/{path.name}", series, pipes["int8"], 1, rows[0])
                _check_split([part], series.source, rows, rows[0])
                parts.append(score_part(part, pipes, recipe.model.code_size, recipe.train.seed))
        else:
            if protocol == "nab":
                series = [nab_series(Path(data) if Path(data).is_dir() else Path(data).parent)]
            else:
                series = _labelled(load_files(recipe, data, progress), "the generic protocol")
            given = train_rows or recipe.data.train_rows
            rows = _train_rows(series, given)
            pipes = _pipes(recipe, series, tmp, rows, sparsity)
            parts = [_part(name, s, pipes["int8"], recipe.data.hop, r) for name, s, r in zip(_part_names(series), series, rows)]
            _check_split(parts, D.names(data), rows, given, per_file)
            parts = score_files(parts, pipes, recipe.model.code_size, recipe.train.seed, per_file)
        return _write(out, protocol, D.names(data), recipe.to_dict(), parts, pipes, pooled=protocol != "skab" and not per_file)


def _labelled(files: list[D.Series], needs: str) -> list[D.Series]:
    """`files`, each with a label column; else one line naming the first without, and what needs it."""
    if unlabelled := next((s.source for s in files if s.labels is None), None):
        raise EdgeaeError(f"{unlabelled}: {needs} needs a label column")
    return files


def _part_names(files: list[D.Series]) -> list[str]:
    """Each file's name, with its folder when the files come from several: the report's subsets."""
    paths = [Path(s.source) for s in files]
    several_folders = len({p.parent for p in paths}) > 1
    return [f"{p.parent.name}/{p.name}" if several_folders else p.name for p in paths]


def _skab_paths(data: Path, files: int | None) -> list[Path]:
    """The SKAB files to run (the first `files` of them when given)."""
    if not data.is_dir():
        raise EdgeaeError(f"{data}: --protocol skab needs the SKAB folder (valve1/, valve2/, other/)")
    if files is not None and files < 1:
        raise EdgeaeError(f"the number of SKAB files must be at least 1, got {files}")
    paths = P.skab_files(data)[:files]
    if not paths:
        raise EdgeaeError(f"{data}: no SKAB files found")
    return paths


def _train_rows(parts: list[D.Series], rows) -> list[tuple[int, int]]:
    """Each labelled series' training rows: the given ones, else those before its first anomaly
    (all of a series without one), when the rows outside them hold both anomalous and normal rows
    to test against (without either, ROC-AUC is NaN and the false alarms or the misses say nothing)."""
    out = [rows or (0, int(np.argmax(s.labels)) if s.labels.any() else len(s)) for s in parts]
    outside = np.concatenate([np.concatenate([s.labels[:start], s.labels[stop:]]) for s, (start, stop) in zip(parts, out)])
    for label, what in ((1, "anomalous"), (0, "normal")):
        if not (outside == label).any():
            if len(parts) == 1:
                raise EdgeaeError(f"{parts[0].source}: no {what} rows outside the training rows {out[0][0]}:{out[0][1]} to test against")
            given = f"rows {rows[0]}:{rows[1]}" if rows else "the rows before its first anomaly"
            raise EdgeaeError(f"{D.names(s.source for s in parts)}: no {what} rows outside each file's training rows ({given}) "
                              "to test against")  # fmt: skip
    return out


def evaluate_export(export_dir, data, out, train_rows: tuple[int, int] | None = None, progress: bool = False,
                    per_file: bool = False, sensor: int | None = None) -> dict:  # fmt: skip
    """Score an existing export on labelled data (a file, a folder of them, or a list of those):
    baselines and thresholds are fitted on the `train_rows` of each file (default: the rows before
    its first anomaly; all of a file without one), the rest is the test. Over several files, one
    threshold per detector from all their training windows, or each file's own (`score_files`).
    The export's own scorer is judged as deployed: at the threshold of `sensor` (its own, set from
    its packets, else the export's), or the export's."""
    check_replaceable(out, METRICS)
    host = Host(export_dir)
    ex, pipe, scorer = host.export, host.pipe, host.scorer
    if sensor is not None:  # a copy at the sensor's threshold: the host's scorer stays the export's
        scorer = copy.copy(scorer)
        scorer.threshold_ = scorer.threshold_for(sensor)
    files = _labelled(ex.read_files(data, progress), "eval")
    rows = _train_rows(files, train_rows)
    parts = [_part(name, s, pipe, ex.hop, r) for name, s, r in zip(_part_names(files), files, rows)]
    _check_split(parts, D.names(data), rows, train_rows, per_file)
    parts = score_files(parts, {"int8": pipe}, ex.manifest["code_size"], per_file=per_file, deployed=scorer)
    deployed = {"mode": scorer.mode, "rule": scorer.rule, "threshold": scorer.threshold_, "source": host.scorer_source,
                **({} if sensor is None else {"sensor": sensor, "sensor_threshold": sensor in scorer.sensor_thresholds_})}  # fmt: skip
    return _write(out, "export", D.names(data), ex.manifest.get("recipe") or {}, parts, {"int8": pipe}, pooled=not per_file, deployed=deployed)


def _write(out, protocol, data, recipe, parts: list[Part], pipes, pooled: bool, deployed: dict | None = None) -> dict:
    main = pipes["int8"].export.manifest
    code_bytes, channels = main["code_bytes"], main["window"]["channels"]
    raw = main["window"]["length"] * len(channels) * 2  # the window as int16, not the unchecked raw_bytes_per_window
    from .wire import packet_size

    metrics = {
        "schema": SCHEMA,
        "protocol": protocol,
        "data": data,
        "recipe": recipe,
        "channels": channels,
        "parts": [p.name for p in parts],
        "thresholds": "pooled" if pooled and len(parts) > 1 else "per-file",
        "windows": {"train": int(sum(p.train_mask.sum() for p in parts)), "test": int(sum((~p.train_mask).sum() for p in parts)),
                    "anomalous": int(_test_labels(parts).sum())},  # fmt: skip
        "bytes_per_window": {"raw_int16": raw, "code": code_bytes, "packet": packet_size(code_bytes),
                             "compression_ratio": raw / code_bytes},  # fmt: skip
        "detectors": detector_metrics(parts, protocol),
        "groups": group_metrics(parts, protocol),
        "reconstruction": reconstruction_metrics(parts),
        **_code_fidelity(parts),
        "pruning": pipes["int8_pruned"].export.manifest["pruning"] if "int8_pruned" in pipes else main.get("pruning"),
        "published": [dict(zip(("algorithm", "f1", "far", "mar"), r)) for r in SKAB_LEADERBOARD] if protocol == "skab" else None,
        "int8_all_rows": all_rows_rates(parts, "int8") if protocol == "skab" else None,
        "deployed": deployed,
    }
    with atomic_dir(out, METRICS) as tmp:
        write_json(tmp / METRICS, metrics)
        np.savez_compressed(tmp / "scores.npz", **_flat_scores(parts))
        np.savez_compressed(tmp / "details.npz", **_details(parts))
    return metrics


def _code_fidelity(parts) -> dict:
    """SQNR of the int8 codes against the float codes (code_error = int8 - float) on the normal
    test windows: all of them, and those whose float code lies within the int8 output's range.
    Outside it the int8 code saturates (SKAB: normal rows that drift far from the 400 training
    rows), an error no finer quantization removes and one that dominates the pooled figure."""
    normal = _normal_test(parts)
    cat = lambda k: np.concatenate([p.extras[k] for p in parts])[normal]  # noqa: E731
    err, codes, inside = cat("code_error"), cat("codes"), cat("code_in_range")
    return {"code_sqnr_db": MT.sqnr_db(codes - err, codes),
            "code_in_range": {"windows": float(inside.mean()), "sqnr_db": MT.sqnr_db((codes - err)[inside], codes[inside]) if inside.any() else None},
            "input_clipped": float(cat("input_clipped").mean())}  # fmt: skip


def _flat_scores(parts: list[Part]) -> dict:
    """Per detector the test-window scores over time, divided by each part's threshold (= 1)."""
    out = {"labels": _test_labels(parts), "part_index": _test_part_index(parts)}
    if len(parts) == 1 and parts[0].window_times is not None:  # one recording: its own time axis
        out["window_time"] = parts[0].window_times[~parts[0].train_mask]
    for name in parts[0].scores:
        out[name] = np.concatenate([_relative(p.scores[name][~p.train_mask], p.limit(name)) for p in parts])
    return out


def _relative(scores: np.ndarray, limit: float) -> np.ndarray:
    """Scores on their threshold's scale (over 1: flagged), so that parts pool into one ROC curve.
    A threshold of 0 (most normal scores 0: a quantized residual, or a fitted scorer's) divides by
    half the smallest positive score instead, which keeps their order and which are flagged."""
    if limit > 0:
        return scores / limit
    positive = scores[scores > 0]
    return scores / (positive.min() / 2) if len(positive) else scores


def _worst(err: np.ndarray, clean: np.ndarray, part_index: np.ndarray, span: int, n: int = WORST_SHOWN) -> list[int]:
    """The `n` highest scores, no two of one part within `span` windows of each other (with hop 1,
    the worst windows are otherwise all shifts of one fault); one of them the worst `clean` window
    (labelled normal, and no row of it labelled anomalous), so the report shows a false alarm's
    cause beside the faults. A window labelled normal by its last row alone can hold the tail of
    a fault: the demo's worst "normal" window had 145 of its 160 rows in one."""
    order = np.argsort(-err, kind="stable")
    picks: list[int] = []

    def take(candidates, count):
        for i in candidates:
            if len(picks) == count:
                return
            if all(part_index[i] != part_index[j] or abs(i - j) >= span for j in picks):
                picks.append(int(i))

    take(order, n - 1)
    take(order[clean[order]], len(picks) + 1)
    take(order, n)
    return sorted(picks, key=lambda i: -err[i])


def _details(parts: list[Part]) -> dict:
    """What the report plots besides scores: worst reconstructions (by the int8 export's own window
    score, as scored; which part, which of its test windows), codes, code errors."""
    cat = lambda k: np.concatenate([p.extras[k] for p in parts])  # noqa: E731
    x, recon = cat("test_windows"), cat("recon_int8")
    err = np.concatenate([p.scores["int8"][~p.train_mask] for p in parts])
    labels, part_index = _test_labels(parts), _test_part_index(parts)
    first = np.searchsorted(part_index, part_index)  # each window's part's first test window
    clean = (labels == 0) & np.concatenate([D.rows_normal_mask(p.row_labels, len(p.row_labels), x.shape[1], p.window_hop)[~p.train_mask]
                                            for p in parts])  # fmt: skip
    worst = _worst(err, clean, part_index, span=-(-x.shape[1] // parts[0].window_hop))
    return {"worst_windows": x[worst], "worst_recon": recon[worst], "worst_error": err[worst], "worst_labels": labels[worst],
            "worst_part": np.array([parts[part_index[i]].name for i in worst]), "worst_index": (np.arange(len(x)) - first)[worst],
            "codes": cat("codes"), "code_labels": labels, "code_error": cat("code_error"), "code_in_range": cat("code_in_range")}  # fmt: skip


def sweep(recipe, data, out, code_sizes=(2, 4, 8, 16, 32), protocol: str = "generic", files: int | None = None,
          progress: bool = True) -> dict:  # fmt: skip
    """Rate-distortion: for each code size, bytes per window vs reconstruction SNR (normal test
    windows, all channels, normalized units) and vs ROC-AUC, for the int8 autoencoder and for PCA with
    int8 codes of the same size, fitted on the same training windows. `generic` reads a labelled
    file, a folder of them or a list of those, one model over them as `evaluate_protocol` fits it;
    `skab`, one model per file. Writes rd.json."""
    import copy

    from tqdm.auto import tqdm

    from .train import load_data, load_files

    check_replaceable(out, RD)
    recipes = [copy.deepcopy(recipe) for _ in code_sizes]
    for k, r in zip(code_sizes, recipes):  # every size checked before the first model trains
        r.model.code_size = k
        r.validate()
    if protocol == "skab":
        given = (0, P.SKAB_TRAIN_ROWS)
        datasets = [([load_data(recipe, p)], [given], 1) for p in _skab_paths(Path(data), files)]
    else:
        series = _labelled(load_files(recipe, data), "the sweep (for ROC-AUC)")
        given = recipe.data.train_rows
        datasets = [(series, _train_rows(series, given), recipe.data.hop)]
    result = {"code_sizes": list(code_sizes), "bytes_per_window": list(code_sizes), "protocol": protocol, "data": D.names(data),
              "autoencoder_int8": {"snr_db": [], "roc_auc": []}, "pca_int8": {"snr_db": [], "roc_auc": []}}  # fmt: skip
    steps = [(k, d) for k in code_sizes for d in datasets]
    bar = tqdm(total=len(steps), desc="sweep", unit="model", disable=None if progress else True)
    with tempfile.TemporaryDirectory() as tmp:
        for k, r in zip(code_sizes, recipes):
            x, ae, pca, y, ae_s, pca_s = [], [], [], [], [], []
            for i, (series, rows, hop) in enumerate(datasets):
                pipe = _train_and_export(r, series, Path(tmp) / f"{k}-{i}", rows, 0.0)
                parts = [_part(s.source, s, pipe, hop, rr) for s, rr in zip(series, rows)]
                _check_split(parts, D.names(s.source for s in series), rows, given)
                whole = _joined(parts)
                w, tr, labels = whole.windows, whole.train_mask, whole.window_labels
                f = pipe.offline_features(w)
                model = PCA(k).fit(w[tr])
                rec_pca = _pca_int8_recon(model, w[tr], w)
                e_pca = MT.reconstruction_error(w, rec_pca, pipe.power)
                normal = ~tr & (labels == 0)
                x.append(w[normal]), ae.append(pipe.reconstruct(f.code)[normal]), pca.append(rec_pca[normal])  # fmt: skip
                y.append(labels[~tr])
                ae_s.append(f.error[~tr] / P.ucl(f.error[tr]))
                pca_s.append(e_pca[~tr] / P.ucl(e_pca[tr]))
                bar.update(1)
            x, yy = np.concatenate(x), np.concatenate(y)
            for name, rec, s in (("autoencoder_int8", ae, ae_s), ("pca_int8", pca, pca_s)):
                result[name]["snr_db"].append(MT.sqnr_db(x, np.concatenate(rec)))
                result[name]["roc_auc"].append(MT.roc_auc(yy, np.concatenate(s)))
    bar.close()
    ae_snr, pca_snr = result["autoencoder_int8"]["snr_db"], result["pca_int8"]["snr_db"]
    result["autoencoder_above_pca_snr"] = {str(k): a > p for k, a, p in zip(code_sizes, ae_snr, pca_snr)}
    with atomic_dir(out, RD) as tmp:
        write_json(tmp / RD, result)
    return result

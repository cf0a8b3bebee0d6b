"""Quality figures, numpy only: ROC-AUC, SQNR, reconstruction error."""

from __future__ import annotations

import numpy as np


def reconstruction_error(windows: np.ndarray, reconstructed: np.ndarray, power: int = 1) -> np.ndarray:
    """Per-window anomaly score of a reconstruction-based detector: the power mean over channels of
    each channel's mean squared error. Power 1 is the window's mean squared error; a larger power
    weighs the worst channels more. `windows` are (n, length, channels) for a power above 1. In float64:
    a window far outside the training range (a stuck sensor, data in other units) squares past float32."""
    n = len(windows)
    error = reconstructed.reshape(windows.shape).astype(np.float64) - windows
    if power == 1:
        return np.mean(error.reshape(n, -1) ** 2, axis=1)
    return power_mean(np.mean(error**2, axis=1), power)


def power_mean(values: np.ndarray, power: int) -> np.ndarray:
    """(mean of values ** power) ** (1 / power) over the last axis, summed in order in float64 as the
    firmware's edgeae_<name>_residual_byte does (targets), so both give the same residual byte."""
    values = np.asarray(values, dtype=np.float64)
    total = np.zeros(values.shape[:-1])
    for c in range(values.shape[-1]):
        total = total + values[..., c] ** power
    return (total / values.shape[-1]) ** (1.0 / power)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); nan without both classes."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average rank within runs of tied scores
    starts = np.r_[0, np.nonzero(np.diff(sorted_scores))[0] + 1]
    ends = np.r_[starts[1:], len(scores)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(sum ref^2 / sum (ref - approx)^2)."""
    reference = np.asarray(reference, dtype=np.float64)
    noise = np.sum((reference - np.asarray(approx, dtype=np.float64)) ** 2)
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(np.sum(reference**2) / noise))


COUNTS = ("tp", "fp", "fn", "tn")  # `detection_rates`' counts, in the order `bootstrap_rates` takes them


def detection_rates(labels: np.ndarray, predicted: np.ndarray) -> dict:
    """F1 of the anomalous class, FAR = false alarms / true normals (%), MAR = missed / true anomalies (%)."""
    y = np.asarray(labels).astype(bool)
    p = np.asarray(predicted).astype(bool)
    tp, fp, fn, tn = int(np.sum(y & p)), int(np.sum(~y & p)), int(np.sum(y & ~p)), int(np.sum(~y & ~p))
    f1, far, mar = map(float, count_rates(tp, fp, fn, tn))
    return {"f1": f1, "far": far, "mar": mar, "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def count_rates(tp, fp, fn, tn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """F1, FAR (%) and MAR (%) from counts (numbers, or arrays of them), each 0 where it has no
    denominator (no anomaly flagged or labelled; no normal row)."""
    tp, fp, fn, tn = (np.asarray(c, dtype=np.float64) for c in (tp, fp, fn, tn))
    f1 = np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    far = np.where(fp + tn > 0, 100.0 * fp / np.maximum(fp + tn, 1), 0.0)
    mar = np.where(fn + tp > 0, 100.0 * fn / np.maximum(fn + tp, 1), 0.0)
    return f1, far, mar


def threshold_counts(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each distinct score, highest first, with the true and false positives when every window
    scoring at least it is flagged. Tied windows go together: no threshold flags part of a tie
    (residual bytes tie often)."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # the last index of each run of tied scores
    tp = np.cumsum(y)[last]
    return s[last], tp, last + 1 - tp


def pr_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve as average precision (scikit-learn's definition:
    sum over thresholds of (recall_n - recall_{n-1}) * precision_n); nan without positives."""
    y = np.asarray(labels).astype(bool)
    if not y.any():
        return float("nan")
    _, tp, fp = threshold_counts(y, scores)
    return float(np.sum(np.diff(np.r_[0.0, tp / y.sum()]) * tp / (tp + fp)))


def channel_fidelity(windows: np.ndarray, reconstructed: np.ndarray) -> dict:
    """Per channel: NMSE = sum (x - x_hat)^2 / sum x^2 and SNR = -10 log10 NMSE (dB), over
    (n, length, channels) windows in normalized units."""
    x = windows.reshape(-1, windows.shape[-1]).astype(np.float64)
    e = x - reconstructed.reshape(x.shape)
    nmse = np.sum(e**2, axis=0) / np.maximum(np.sum(x**2, axis=0), 1e-12)
    return {"nmse": nmse.tolist(), "snr_db": (-10 * np.log10(np.maximum(nmse, 1e-12))).tolist()}


def segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of 1s."""
    y = np.r_[0, np.asarray(labels).astype(np.int8), 0]
    edges = np.diff(y)
    return list(zip(np.nonzero(edges == 1)[0].tolist(), np.nonzero(edges == -1)[0].tolist()))


def detection_delays(labels: np.ndarray, predicted: np.ndarray) -> list[int | None]:
    """For each anomaly segment, steps from its start to the first flag inside it (None: missed)."""
    p = np.asarray(predicted).astype(bool)
    out = []
    for start, stop in segments(labels):
        hits = np.nonzero(p[start:stop])[0]
        out.append(int(hits[0]) if len(hits) else None)
    return out


def bootstrap_rates(counts: np.ndarray, resamples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """F1 and FAR (%) of each detector on bootstrap resamples of the files, each pooled over its
    resampled files' rows as the metrics are: counts[d, i] = detector d's (tp, fp, fn, tn) on
    file i. Every detector sees the same resamples, so differences between detectors are paired.
    Returns two arrays of shape (detectors, resamples)."""
    counts = np.asarray(counts, dtype=np.int64)
    idx = np.random.default_rng(seed).integers(0, counts.shape[1], size=(resamples, counts.shape[1]))
    f1, far, _ = count_rates(*np.moveaxis(counts[:, idx].sum(axis=2), -1, 0))
    return f1, far

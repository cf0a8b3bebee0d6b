"""Quality figures, numpy only: ROC-AUC, SQNR, reconstruction error."""

from __future__ import annotations

import numpy as np


def reconstruction_error(windows: np.ndarray, reconstructed: np.ndarray) -> np.ndarray:
    """Per-window mean squared error: the anomaly score of a reconstruction-based detector."""
    n = len(windows)
    return np.mean((reconstructed.reshape(n, -1) - windows.reshape(n, -1)) ** 2, axis=1)


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


def detection_rates(labels: np.ndarray, predicted: np.ndarray) -> dict:
    """F1 of the anomalous class, FAR = false alarms / true normals (%), MAR = missed / true anomalies (%)."""
    y = np.asarray(labels).astype(bool)
    p = np.asarray(predicted).astype(bool)
    tp, fp, fn, tn = int(np.sum(y & p)), int(np.sum(~y & p)), int(np.sum(y & ~p)), int(np.sum(~y & ~p))
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {
        "f1": f1,
        "far": 100.0 * fp / (fp + tn) if fp + tn else 0.0,
        "mar": 100.0 * fn / (fn + tp) if fn + tp else 0.0,
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }  # fmt: skip

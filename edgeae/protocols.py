"""Evaluation protocols on real data, numpy only.

SKAB (../shared/data/README.md), as its reference pipelines apply it: per file, train on the
first 400 rows (normal) with the scaler fitted on them; score every sliding window of 60 rows
over the file; the upper control limit is UCL = quantile(scores of the training windows, 0.999)
x 4/3; row i is flagged when every window starting in [i - 59, i - 1] scores above the UCL
(for i in [59, n_windows - 59]); the predictions for the rows after the first 400 of all files
are concatenated and scored as binary classification (F1, FAR, MAR).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SKAB_TRAIN_ROWS = 400
SKAB_WINDOW = 60
SKAB_QUANTILE = 0.999
SKAB_UCL_FACTOR = 4 / 3


def skab_files(root: str | Path) -> list[Path]:
    """The 34 labelled SKAB files in the order valve1, valve2, other (numeric within each)."""
    root = Path(root)
    files = [p for sub in ("valve1", "valve2", "other") for p in (root / sub).glob("*.csv")]
    return sorted(files, key=lambda p: (("valve1", "valve2", "other").index(p.parent.name), int(p.stem)))


def ucl(train_scores: np.ndarray) -> float:
    """The upper control limit of the SKAB reference pipelines: quantile 0.999 of the training
    scores x 4/3 (also the default threshold rule of the anomaly scorer)."""
    return float(np.quantile(np.asarray(train_scores, dtype=np.float64), SKAB_QUANTILE) * SKAB_UCL_FACTOR)


def skab_rows(window_scores: np.ndarray, limit: float, n_rows: int, window: int = SKAB_WINDOW) -> np.ndarray:
    """Row predictions (0/1) from per-window scores (window j starts at row j) by the SKAB rule."""
    above = np.asarray(window_scores) > limit
    pred = np.zeros(n_rows, dtype=np.int8)
    count = np.r_[0, np.cumsum(above)]  # count[i] = windows above among the first i
    rows = np.arange(window - 1, len(above) - window + 1)
    pred[rows] = count[rows] - count[rows - window + 1] == window - 1
    return pred


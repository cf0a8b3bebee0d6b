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
SKAB_CHANNELS = ["Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure",
                 "Temperature", "Thermocouple", "Voltage", "Volume Flow RateRMS"]  # fmt: skip


def skab_files(root: str | Path) -> list[Path]:
    """The 34 labelled SKAB files in the order valve1, valve2, other (numeric within each)."""
    root = Path(root)
    files = [p for sub in ("valve1", "valve2", "other") for p in (root / sub).glob("*.csv")]
    return sorted(files, key=lambda p: (("valve1", "valve2", "other").index(p.parent.name), int(p.stem)))


def ucl(train_scores: np.ndarray) -> float:
    return float(np.quantile(train_scores, SKAB_QUANTILE) * SKAB_UCL_FACTOR)


def skab_rows(window_scores: np.ndarray, limit: float, n_rows: int, window: int = SKAB_WINDOW) -> np.ndarray:
    """Row predictions (0/1) from per-window scores (window j starts at row j) by the SKAB rule."""
    above = np.asarray(window_scores) > limit
    pred = np.zeros(n_rows, dtype=np.int8)
    for i in range(window - 1, len(above) - window + 1):
        if above[i - window + 1 : i].all():
            pred[i] = 1
    return pred


class PCA:
    """PCA with k components fitted on flattened windows: the baseline of the same code size.
    `score_samples` is the reconstruction error (the Q statistic, per element)."""

    def __init__(self, k: int):
        self.k = k

    def fit(self, windows: np.ndarray) -> "PCA":
        x = windows.reshape(len(windows), -1).astype(np.float64)
        self.mean_ = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - self.mean_, full_matrices=False)
        self.components_ = vt[: self.k]
        return self

    def score_samples(self, windows: np.ndarray) -> np.ndarray:
        x = windows.reshape(len(windows), -1) - self.mean_
        return np.mean((x - x @ self.components_.T @ self.components_) ** 2, axis=1)


def skab_file_scores(path: Path, recipe, work: Path) -> dict:
    """Train, export and score one SKAB file by the protocol; every scoring mode's window scores.

    Returns the per-window scores of: the float autoencoder, the int8 export (host decoder on the
    int8 code), the packet modes (residual byte, code, combined, via `score.AnomalyScorer` fitted
    on the training windows), and PCA of the same code size; with the labels, the training-window
    mask and timings.
    """
    import time

    from . import data as D
    from .export import export
    from .manifest import Export
    from .pipeline import Pipeline
    from .score import AnomalyScorer
    from .train import load_data, train

    series = load_data(recipe, path)
    w = recipe.data.window
    t0 = time.perf_counter()
    run = train(recipe, series, work / "run", train_rows=(0, SKAB_TRAIN_ROWS), progress=False)
    t1 = time.perf_counter()
    pipe = Pipeline(Export.open(export(run, work / "dist")))
    t2 = time.perf_counter()

    windows = pipe.norm(D.windows(series, w, 1))
    train_mask = np.arange(len(windows)) + w - 1 < SKAB_TRAIN_ROWS
    f = pipe.offline_features(windows)
    normal = f.subset(train_mask)
    scores = {"float": pipe.float_scores(windows), "int8": f.error}
    for mode in ("residual", "code", "combined"):
        scores[mode] = AnomalyScorer(mode).fit(normal).score_samples(f)
    scores["pca"] = PCA(recipe.model.code_size).fit(windows[train_mask]).score_samples(windows)
    return {
        "file": f"{path.parent.name}/{path.name}",
        "rows": len(series),
        "labels": series.labels,
        "window_labels": D.window_labels(series, w, 1),
        "train_mask": train_mask,
        "scores": scores,
        "train_s": t1 - t0,
        "export_s": t2 - t1,
    }

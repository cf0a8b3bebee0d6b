"""SKAB benchmark: ROC-AUC of the reconstruction-error score, float vs int8 vs PCA.

The published per-file protocol (../shared/data/README.md): for each of the 34 labelled files,
train on the first 400 rows (normal) with the scaler fitted on them, test on the remaining
rows, windows of 60 steps. Each window is scored by its reconstruction error and labelled by
its last row. Scores are made comparable across files by dividing by the file's UCL
(quantile 0.999 of the training windows' scores x 4/3), then all test windows are pooled.

Reported: pooled ROC-AUC and mean per-file ROC-AUC for the float autoencoder, the exported
int8 encoder (through LiteRT, decoded by the exported float decoder), and PCA with the same
code size fitted on the same training windows.

    python tools/bench_skab.py [--recipe models/skab.toml] [--out tools/out/skab.json] [--files N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeae import data as D  # noqa: E402
from edgeae import recipe as R  # noqa: E402
from edgeae.metrics import reconstruction_error, roc_auc  # noqa: E402

SKAB = ROOT.parent / "shared" / "data" / "skab"
TRAIN_ROWS = 400


def skab_files() -> list[Path]:
    files = [p for sub in ("valve1", "valve2", "other") for p in (SKAB / sub).glob("*.csv")]
    return sorted(files, key=lambda p: (p.parent.name, int(p.stem)))


def ucl(train_scores: np.ndarray) -> float:
    return float(np.quantile(train_scores, 0.999) * 4 / 3)


class PCA:
    """PCA reconstruction with k components, fitted on flattened training windows."""

    def __init__(self, k: int):
        self.k = k

    def fit(self, x):
        x = x.reshape(len(x), -1)
        self.mean = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        self.components = vt[: self.k]
        return self

    def score_samples(self, x):
        flat = x.reshape(len(x), -1) - self.mean
        recon = flat @ self.components.T @ self.components
        return reconstruction_error(flat, recon)


def run_file(path: Path, recipe: R.Recipe, work: Path) -> dict:
    from edgeae.export import export
    from edgeae.manifest import Export
    from edgeae.train import load_data, train
    from edgeae.pipeline import Pipeline

    series = load_data(recipe, path)
    w = recipe.data.window
    t0 = time.perf_counter()
    run = train(recipe, series, work / "run", train_rows=(0, TRAIN_ROWS), progress=False)
    t1 = time.perf_counter()
    out = export(run, work / "dist")
    t2 = time.perf_counter()
    pipe = Pipeline(Export.open(out))

    windows = pipe.norm(D.windows(series, w, 1))
    labels = D.window_labels(series, w, 1)
    last_row = np.arange(len(windows)) + w - 1
    train_w, test = windows[last_row < TRAIN_ROWS], last_row >= TRAIN_ROWS
    scores = {
        "float": pipe.float_scores(windows),
        "int8": pipe.int8_scores(windows),
        "pca": PCA(recipe.model.code_size).fit(train_w).score_samples(windows),
    }
    train_mask = last_row < TRAIN_ROWS
    return {
        "file": f"{path.parent.name}/{path.name}",
        "test_windows": int(test.sum()),
        "anomalous": int(labels[test].sum()),
        "train_s": t1 - t0,
        "export_s": t2 - t1,
        "auc": {k: roc_auc(labels[test], s[test]) for k, s in scores.items()},
        "_scaled": {k: s[test] / ucl(s[train_mask]) for k, s in scores.items()},
        "_labels": labels[test],
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=str(ROOT / "models" / "skab.toml"))
    ap.add_argument("--out", default=str(ROOT / "tools" / "out" / "skab.json"))
    ap.add_argument("--files", type=int, help="only the first N files (a quick look)")
    args = ap.parse_args(argv)
    if not SKAB.is_dir():
        sys.exit(f"bench_skab: {SKAB} not found (the shared data sits beside the project)")
    recipe = R.load(args.recipe)
    files = skab_files()[: args.files]

    from tqdm import tqdm

    rows = []
    for path in tqdm(files, desc="SKAB files", unit="file"):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(run_file(path, recipe, Path(tmp)))

    labels = np.concatenate([r.pop("_labels") for r in rows])
    scaled = [r.pop("_scaled") for r in rows]
    pooled = {k: roc_auc(labels, np.concatenate([s[k] for s in scaled])) for k in ("float", "int8", "pca")}
    mean_file = {k: float(np.nanmean([r["auc"][k] for r in rows])) for k in ("float", "int8", "pca")}
    result = {
        "recipe": recipe.to_dict(),
        "files": len(rows),
        "code_size": recipe.model.code_size,
        "pooled_auc": pooled,
        "mean_file_auc": mean_file,
        "int8_minus_float": {"pooled": pooled["int8"] - pooled["float"], "mean_file": mean_file["int8"] - mean_file["float"]},
        "train_s_total": sum(r["train_s"] for r in rows),
        "export_s_total": sum(r["export_s"] for r in rows),
        "per_file": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"SKAB, {len(rows)} files, code size {recipe.model.code_size}, window {recipe.data.window}")
    print(f"{'':14}{'float AE':>10}{'int8 AE':>10}{'PCA':>10}")
    for name, d in (("pooled AUC", pooled), ("mean file AUC", mean_file)):
        print(f"{name:14}{d['float']:>10.4f}{d['int8']:>10.4f}{d['pca']:>10.4f}")
    print(f"int8 - float: pooled {result['int8_minus_float']['pooled']:+.4f}, mean file {result['int8_minus_float']['mean_file']:+.4f}")
    print(f"written to {args.out}")
    return result


if __name__ == "__main__":
    main()

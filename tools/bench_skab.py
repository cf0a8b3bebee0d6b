"""SKAB benchmark: detection quality of every scoring mode, float vs int8 vs PCA.

The published per-file protocol (../shared/data/README.md; edgeae.protocols): for each of the
34 labelled files, train on the first 400 rows, export to int8, score every 60-row window.

1. ROC-AUC of the reconstruction-error score (window labelled by its last row, test windows):
   float autoencoder vs the int8 export vs PCA with the same code size. Pooled over files after
   dividing each file's scores by its UCL, and the mean of the per-file AUCs.
2. F1 / FAR / MAR by the published rule (UCL = quantile 0.999 x 4/3 of the training windows'
   scores; row i flagged when all windows starting in [i-59, i-1] exceed it; test rows of all
   files concatenated), for each scoring mode: what the host can compute from the raw window
   (reconstruction, float and int8), from the packet alone (residual byte, code, combined), PCA.

    python tools/bench_skab.py [--recipe models/skab.toml] [--out tools/out/skab.json] [--files N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeae import protocols as P  # noqa: E402
from edgeae import recipe as R  # noqa: E402
from edgeae.metrics import detection_rates, roc_auc  # noqa: E402

SKAB = ROOT.parent / "shared" / "data" / "skab"
MODES = {
    "float": "reconstruction, float model (raw window)",
    "int8": "reconstruction, int8 code (raw window)",
    "residual": "residual byte (packet only)",
    "code": "code Mahalanobis (packet only)",
    "combined": "residual + code (packet only)",
    "pca": "PCA, same code size (raw window)",
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

    from tqdm import tqdm

    per_file = []
    for path in tqdm(P.skab_files(SKAB)[: args.files], desc="SKAB files", unit="file"):
        with tempfile.TemporaryDirectory() as tmp:
            per_file.append(P.skab_file_scores(path, recipe, Path(tmp)))

    auc, detection = {}, {}
    y_rows = np.concatenate([r["labels"][P.SKAB_TRAIN_ROWS :] for r in per_file])
    for mode in MODES:
        scaled, y_win, file_aucs, rows = [], [], [], []
        for r in per_file:
            s, test = r["scores"][mode], ~r["train_mask"]
            limit = P.ucl(s[r["train_mask"]])
            scaled.append(s[test] / limit)
            y_win.append(r["window_labels"][test])
            file_aucs.append(roc_auc(r["window_labels"][test], s[test]))
            rows.append(P.skab_rows(s, limit, r["rows"])[P.SKAB_TRAIN_ROWS :])
        auc[mode] = {"pooled": roc_auc(np.concatenate(y_win), np.concatenate(scaled)), "mean_file": float(np.nanmean(file_aucs))}
        detection[mode] = detection_rates(y_rows, np.concatenate(rows))

    result = {
        "recipe": recipe.to_dict(),
        "files": len(per_file),
        "auc": auc,
        "int8_minus_float_auc": {k: auc["int8"][k] - auc["float"][k] for k in ("pooled", "mean_file")},
        "detection": detection,
        "train_s_total": sum(r["train_s"] for r in per_file),
        "export_s_total": sum(r["export_s"] for r in per_file),
        "per_file_auc": {r["file"]: {m: roc_auc(r["window_labels"][~r["train_mask"]], r["scores"][m][~r["train_mask"]])
                                     for m in MODES} for r in per_file},  # fmt: skip
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    print(f"SKAB, {len(per_file)} files, code size {recipe.model.code_size}, window {recipe.data.window}")
    print(f"{'mode':<44}{'pooled AUC':>11}{'file AUC':>10}{'F1':>7}{'FAR %':>8}{'MAR %':>8}")
    for mode, label in MODES.items():
        a, d = auc[mode], detection[mode]
        print(f"{label:<44}{a['pooled']:>11.4f}{a['mean_file']:>10.4f}{d['f1']:>7.3f}{d['far']:>8.2f}{d['mar']:>8.2f}")
    diff = result["int8_minus_float_auc"]
    print(f"int8 - float ROC-AUC: pooled {diff['pooled']:+.4f}, mean file {diff['mean_file']:+.4f}")
    print(f"written to {args.out}")
    return result


if __name__ == "__main__":
    main()

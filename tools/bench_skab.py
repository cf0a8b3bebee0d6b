"""SKAB benchmark: detection quality of every scoring mode, float vs int8 vs baselines.

Runs `edgeae eval --protocol skab` without pruning (edgeae.evaluate): for each of the 34 files,
train on the first 400 rows, export to int8, score every 60-row window; ROC-AUC on the test
windows (each file's scores divided by its UCL, pooled), and F1 / FAR / MAR by the published
row rule over the test rows of all files. Prints the table, writes the metrics JSON.

    python tools/bench_skab.py [--recipe models/skab.toml] [--out tools/out/skab] [--files N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeae import recipe as R  # noqa: E402
from edgeae.evaluate import best_text, evaluate_protocol  # noqa: E402

SKAB = ROOT.parent / "shared" / "data" / "skab"
LABELS = {
    "float": "reconstruction, float model (raw window)",
    "int8": "reconstruction, int8 code (raw window)",
    "residual": "residual byte (packet only)",
    "code": "code Mahalanobis (packet only)",
    "pca_q": "PCA Q, same code size (raw window)",
    "pca_t2q": "PCA T^2 + Q (raw window)",
    "iforest": "Isolation Forest (raw window)",
}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=str(ROOT / "models" / "skab.toml"))
    ap.add_argument("--out", default=str(ROOT / "tools" / "out" / "skab"))
    ap.add_argument("--files", type=int, help="only the first N files (a quick look)")
    args = ap.parse_args(argv)
    if not SKAB.is_dir():
        sys.exit(f"bench_skab: {SKAB} not found (the shared data sits beside the project)")
    recipe = R.load(args.recipe)
    m = evaluate_protocol("skab", recipe, SKAB, args.out, sparsity=0.0, files=args.files)
    print(f"SKAB, {len(m['parts'])} files, code size {recipe.model.code_size}, window {recipe.data.window}")
    print(f"{'detector':<44}{'ROC-AUC':>9}{'PR-AUC':>8}{'F1':>7}{'FAR %':>8}{'MAR %':>8}{'F1@FAR<=10':>13}")
    for name, label in LABELS.items():
        d = m["detectors"][name]
        best = best_text(d["best_f1_within_far_budget"])
        print(f"{label:<44}{d['roc_auc']:>9.4f}{d['pr_auc']:>8.4f}{d['f1']:>7.3f}{d['far']:>8.2f}{d['mar']:>8.2f}{best:>13}")
    print("F1@FAR<=10: best F1 with every UCL scaled by one factor, chosen on the test rows, and FAR <= 10 %")
    print(f"int8 - float ROC-AUC: {m['detectors']['int8']['roc_auc'] - m['detectors']['float']['roc_auc']:+.4f}")
    print(f"written to {args.out}/metrics.json")
    return m


if __name__ == "__main__":
    main()

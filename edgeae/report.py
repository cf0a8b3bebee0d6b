"""`edgeae report`: one self-contained HTML page (plots embedded, opens offline) from an eval
folder (metrics.json, scores.npz, details.npz), a sweep folder (rd.json) or a training run
(history.json beside recipe.json). The PNGs are also saved beside it. Every figure has labelled
axes with units and a legend.
"""

from __future__ import annotations

import base64
import html
import io
import zipfile
from pathlib import Path

import numpy as np

from . import wire
from .errors import EdgeaeError, require
from .evaluate import FAR_BUDGET, METRICS, RD, best_text, count_unit, deployed_text, ucl_source_text
from .fsutil import atomic_file, parse_json
from .manifest import MANIFEST
from .metrics import COUNTS, count_rates, segments, threshold_counts
from .recipe import from_dict
from .train import data_notes, kept_epoch, model_notes

NAMES = {
    "float": "AE float", "int8": "AE int8", "int8_pruned": "AE int8, pruned", "residual": "residual byte (packet)",
    "code": "code Mahalanobis (packet)", "pca_q": "PCA Q", "pca_t2q": "PCA T²+Q", "iforest": "Isolation Forest",
    "deployed": "export's scorer (deployed)",
}  # fmt: skip
CODE_SPACE_PARTS = 4  # files drawn in the code-space figure when each has its own model (SKAB)
PER_FILE_SHOWN = 40  # files drawn in the per-file figure: those with the most int8 errors
WORST_CHANNELS = 3  # channels drawn per worst window: those it reconstructs worst
RESULTS_SENSORS = 8  # panels in `edgeae results --plot`
HISTORY = "history.json"  # a training run's losses per epoch (edgeae.train)
PHASES = {"train": "training", "prune": "pruning", "qat": "quantization-aware"}
CURVES = ("float", "int8", "int8_pruned", "residual", "code", "pca_q", "pca_t2q", "iforest", "deployed")
COLOURS = dict(zip(CURVES, ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C8", "C9")))  # one per detector in every figure; not C7, the grey of guides


def _roc(y, s):
    """(FPR, TPR) at every distinct threshold, from (0, 0): a run of tied scores is one straight
    segment, as the ROC-AUC counts it, not a staircase."""
    _, tp, fp = threshold_counts(y, s)
    return np.r_[0, fp / max(fp[-1], 1)], np.r_[0, tp / max(tp[-1], 1)]


def _pr(y, s):
    """(recall, precision) at every distinct threshold, as PR-AUC (average precision) counts them."""
    _, tp, fp = threshold_counts(y, s)
    return tp / max(tp[-1], 1), tp / (tp + fp)


def _read(folder: Path) -> dict:
    """What the folder holds: `m` (metrics.json) with `sc` and `det` (scores.npz, details.npz) from
    edgeae eval, `rd` (rd.json) from edgeae sweep, `run` (recipe, data, history and pruning JSON)
    from edgeae train; a missing or unreadable file is a one-line error."""

    def load(name, reader, together="edgeae eval writes metrics.json, scores.npz and details.npz together"):
        path = folder / name
        if not path.is_file():
            raise EdgeaeError(f"{path}: missing ({together})")
        try:
            return reader(path)
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise EdgeaeError(f"{path}: unreadable ({e.__class__.__name__}: {e})") from None

    def npz(path):
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def read_json(path):
        return parse_json(path.read_text())

    out = {}
    if (folder / METRICS).is_file():
        out.update(m=load(METRICS, read_json), sc=load("scores.npz", npz), det=load("details.npz", npz))
    if (folder / RD).is_file():
        out["rd"] = load(RD, read_json)
    if (folder / HISTORY).is_file():
        run = "edgeae train writes recipe.json, data.json and history.json together"
        out["run"] = {name: load(f"{name}.json", read_json, run) for name in ("recipe", "data", "history")}
        if (folder / "pruning.json").is_file():
            out["run"]["pruning"] = load("pruning.json", read_json)
    if not out:
        export = (folder / MANIFEST).is_file()  # an export given where its eval goes
        raise EdgeaeError(f"{folder}: nothing to report (no metrics.json from edgeae eval, no rd.json from edgeae sweep, "
                          "no history.json from edgeae train)"
                          + (f"; it is an export: `edgeae eval {folder} --data F` writes what report draws" if export else ""))  # fmt: skip
    return out


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or a one-line error naming the eval extra."""
    require("matplotlib", "eval").use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend_beside(ax) -> None:
    """The legend to the right of the axes, where it covers no curve or point (inside, it hid the
    operating curves, and the first windows of the score over time)."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))


def _figures(inputs: dict) -> list[tuple[str, str, object]]:
    """(file stem, caption, matplotlib figure) for everything the folder holds."""
    plt = _pyplot()
    figs = []
    if "m" in inputs:
        m, sc, det = inputs["m"], inputs["sc"], inputs["det"]
        y = sc["labels"].astype(bool)
        names = [n for n in CURVES if n in sc]

        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
        for n in names:
            fpr, tpr = _roc(y, sc[n])
            a.plot(fpr, tpr, color=COLOURS[n], label=f"{NAMES[n]} (AUC {m['detectors'][n]['roc_auc']:.3f})")
            rec, prec = _pr(y, sc[n])
            b.plot(rec, prec, color=COLOURS[n], label=f"{NAMES[n]} (AP {m['detectors'][n]['pr_auc']:.3f})")
        a.plot([0, 1], [0, 1], "k:", lw=0.8, label="chance")
        a.set(xlabel="false positive rate (fraction of normal windows)", ylabel="true positive rate (fraction of anomalous windows)", title="ROC, test windows")
        b.set(xlabel="recall (fraction of anomalous windows)", ylabel="precision (fraction of flagged windows)", title="Precision-recall, test windows")
        a.legend(fontsize=7), b.legend(fontsize=7)
        figs.append(("roc_pr", "ROC and precision-recall curves: float vs int8 vs baselines", fig))

        if all("operating_curve" in m["detectors"][n] for n in names):  # older eval folders lack it
            figs.append(_operating_figure(plt, m, names))

        fig, ax = plt.subplots(figsize=(11, 3.8))
        t, xlabel, spans = np.arange(len(y)), "test window (files / parts concatenated; grey lines separate them)", segments(y)
        if "window_time" in sc:  # one recording with a time column: its own clock
            t, xlabel = np.round(sc["window_time"] * 1000).astype(np.int64).astype("datetime64[ms]"), "time of the window's last row (UTC)"
            spans = [(t[start], t[min(stop, len(t) - 1)]) for start, stop in spans]
            import matplotlib.dates as mdates

            locator = mdates.AutoDateLocator()
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # the date once, then times
        for start, stop in spans:
            ax.axvspan(start, stop, color="tab:red", alpha=0.15, lw=0)
        ax.plot(t, sc["int8"], lw=0.7, color=COLOURS["int8"], label="AE int8 score")
        for n, label in (("residual", "residual byte score"), ("code", "code Mahalanobis score")):  # what serve can score packets by
            if n in sc:
                ax.plot(t, sc[n], lw=0.7, alpha=0.7, color=COLOURS[n], label=label)
        ax.axhline(1.0, color="k", ls="--", lw=1, label="threshold (UCL)")
        ax.fill_between([], [], color="tab:red", alpha=0.15, label="labelled anomaly")
        for b_ in np.nonzero(np.diff(sc["part_index"]))[0]:
            ax.axvline(b_ + 0.5, color="grey", lw=0.5)
        ax.set(yscale="log", xlabel=xlabel, ylabel="score / UCL (dimensionless)", title="Anomaly score over time")
        _legend_beside(ax)
        figs.append(("score_time", "Score over time with the threshold; labelled anomalies shaded", fig))

        if len(m["parts"]) > 1 and "per_part" in m["detectors"]["int8"]:  # older eval folders lack it
            figs.append(_per_file_figure(plt, m))
        figs += [_worst_figure(plt, m, det), _code_space_figure(plt, m, sc, det), _quant_error_figure(plt, m, det)]

        if (m.get("pruning") or {}).get("layers"):
            figs.append(_sparsity_figure(plt, m["pruning"]["layers"], m["pruning"]["target_sparsity"]))
    if "rd" in inputs:
        rd = inputs["rd"]
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
        for key, label, mk in (("autoencoder_int8", "autoencoder, int8 code", "o-"), ("pca_int8", "PCA, int8 code", "s--")):
            a.plot(rd["bytes_per_window"], rd[key]["snr_db"], mk, label=label)
            b.plot(rd["bytes_per_window"], rd[key]["roc_auc"], mk, label=label)
        for ax in (a, b):
            ax.set_xscale("log", base=2)
            ax.set_xticks(rd["bytes_per_window"], [str(k) for k in rd["bytes_per_window"]], minor=False)
            ax.minorticks_off()
            ax.set_xlabel("code bytes per window (bytes)")
            ax.legend(fontsize=8)
        a.set(ylabel="reconstruction SNR, normal test windows (dB)", title="Rate-distortion")
        b.set(ylabel="ROC-AUC (dimensionless)", title="Rate vs detection")
        fig.tight_layout()
        figs.append(("rate_distortion", "Bytes per window vs reconstruction SNR and ROC-AUC, autoencoder vs PCA", fig))
    if "run" in inputs:
        run = inputs["run"]
        figs.append(_training_figure(plt, run["history"]))
        if "pruning" in run:
            figs.append(_sparsity_figure(plt, run["pruning"]["layers"], run["pruning"]["target_sparsity"]))
    return figs


def _per_file_figure(plt, m: dict):
    """Each file's false alarm and miss rates at the threshold, the int8 export beside PCA Q (the
    closest baseline): whether the errors are spread over the files or come from a few recordings."""
    names = [n for n in ("int8", "pca_q") if "per_part" in m["detectors"].get(n, {})]
    counts = {n: {k: np.asarray(v) for k, v in m["detectors"][n]["per_part"].items()} for n in names}
    c = counts["int8"]
    tested = np.flatnonzero(c["tp"] + c["fp"] + c["fn"] + c["tn"])  # a file fitted on whole has no test rows
    shown = tested[np.argsort(-(c["fp"] + c["fn"])[tested], kind="stable")][:PER_FILE_SHOWN]
    unit = count_unit(m["protocol"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 1.5 + 0.22 * len(shown)), sharey=True)
    y, h = np.arange(len(shown)), 0.8 / len(names)
    for i, n in enumerate(names):
        _, far, mar = count_rates(*(counts[n][k][shown] for k in COUNTS))
        a.barh(y + i * h, far, height=h, color=COLOURS[n], label=NAMES[n])
        b.barh(y + i * h, mar, height=h, color=COLOURS[n], label=NAMES[n])
    for j in np.flatnonzero(c["fn"][shown] + c["tp"][shown] == 0):
        b.text(1, y[j] + h * (len(names) - 1) / 2, "no labelled fault", va="center", fontsize=6, color="grey")
    a.set_yticks(y + h * (len(names) - 1) / 2, [m["parts"][j] for j in shown], fontsize=7)
    a.invert_yaxis()
    a.set(xlabel=f"false alarm rate (% of the file's normal test {unit})", ylabel="file (most int8 errors first)", title="False alarms per file")
    b.set(xlabel=f"miss rate (% of the file's anomalous test {unit})", ylabel="file (same order)", title="Misses per file")
    a.legend(fontsize=7)
    fig.tight_layout()
    more = f"; the {len(shown)} of {len(tested)} files with the most int8 errors" if len(shown) < len(tested) else ""
    return ("per_file", f"False alarm and miss rates per file at the threshold, AE int8 beside PCA Q: where the errors come from{more}", fig)


def _sparsity_figure(plt, layers: list[dict], target: float):
    fig, ax = plt.subplots(figsize=(8, 3.5))
    labels = [f"{l['model'][:3]}/{l['layer']}" for l in layers]
    ax.bar(labels, [100 * l["sparsity"] for l in layers], label="zero weights")
    ax.axhline(100 * float(target), color="k", ls="--", lw=1, label="target")
    ax.set(xlabel="layer", ylabel="sparsity (% of kernel weights)", title="Per-layer sparsity of the pruned model")
    ax.tick_params(axis="x", rotation=60, labelsize=7)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return ("sparsity", "Per-layer sparsity after pruning", fig)


def _phases(history: dict) -> list[tuple[str, dict]]:
    """A run's training phases in order, each with its losses per epoch (QAT's only where it ran)."""
    qat = history.get("qat") or {}
    return [(p, h) for p, h in (("train", history.get("train")), ("prune", history.get("prune")), ("qat", qat.get("history"))) if h]


def _training_figure(plt, history: dict):
    """The losses per epoch, the phases one after another, and the epoch whose weights training kept."""
    fig, ax = plt.subplots(figsize=(10, 4))
    start = 0
    for i, (phase, h) in enumerate(_phases(history)):
        epochs = np.arange(start + 1, start + len(h["loss"]) + 1)
        ax.plot(epochs, h["loss"], color="C0", label=None if i else "training loss")
        if h.get("val_loss"):
            ax.plot(epochs, h["val_loss"], color="C1", ls="--", label=None if i else "validation loss")
        if i:
            ax.axvline(start + 0.5, color="grey", lw=0.8)
        ax.annotate(PHASES[phase], (start + 1, 1), xycoords=("data", "axes fraction"), xytext=(2, -12),
                    textcoords="offset points", fontsize=8, color="0.3")  # fmt: skip
        if phase == "train":
            best = kept_epoch(h)
            ax.plot(best, (h.get("val_loss") or h["loss"])[best - 1], "k*", ms=9, label=f"weights kept (epoch {best})")
        start += len(h["loss"])
    ax.set(yscale="log", xlabel="epoch (phases one after another)", ylabel="loss (MSE in normalized units, with any sparsity penalty)",
           title="Training history")  # fmt: skip
    _legend_beside(ax)
    fig.tight_layout()
    return ("training", "Loss per epoch: training, then pruning's fine-tuning and quantization-aware training where they ran", fig)


def _worst_figure(plt, m: dict, det: dict):
    """The worst-reconstructed windows over their int8 reconstructions, each with the channels it misses most."""
    ww, wr = det["worst_windows"], det["worst_recon"]
    chans = m["channels"]
    fig, axes = plt.subplots(1, len(ww), figsize=(3.4 * len(ww), 3.6), squeeze=False)
    for i, ax in enumerate(axes[0]):
        for c in np.argsort(-((ww[i] - wr[i]) ** 2).mean(axis=0))[:WORST_CHANNELS]:
            ax.plot(ww[i][:, c], lw=1, color=f"C{c % 10}", label=chans[c])
            ax.plot(wr[i][:, c], lw=1, ls="--", color=f"C{c % 10}")
        ax.plot([], [], "k--", lw=1, label="int8 reconstruction")
        where = f"{det['worst_part'][i]}, test window {det['worst_index'][i]}" if "worst_part" in det else ""
        ax.set(xlabel="sample in window", ylabel="value (std. units)",
               title=f"{where}\n{'anomalous' if det['worst_labels'][i] else 'normal'}, score {det['worst_error'][i]:.3g}")  # fmt: skip
        ax.title.set_fontsize(9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return ("worst", f"The worst-reconstructed test windows, no two overlapping, the worst normal window (no row of a fault) among them "
                     f"(solid), with their int8 reconstructions (dashed); in each, the {WORST_CHANNELS} channels it reconstructs worst", fig)  # fmt: skip


def _code_space_figure(plt, m: dict, sc: dict, det: dict):
    """The int8 codes on their first two principal components, per file where each file has its own
    model (SKAB's protocol), else of all files in one (one model over them)."""
    per_file = len(m["parts"]) > 1 and m["protocol"] == "skab"
    shown = np.unique(np.linspace(0, len(m["parts"]) - 1, CODE_SPACE_PARTS).round().astype(int)) if per_file else [None]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.6 * len(shown), 4.2), squeeze=False)
    for ax, k in zip(axes[0], shown):
        mine = sc["part_index"] == k if per_file else slice(None)
        codes, cl = det["codes"][mine], det["code_labels"][mine].astype(bool)
        centred = codes - codes.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        proj = centred @ vt[:2].T if vt.shape[0] >= 2 else np.c_[centred[:, 0], np.zeros(len(centred))]
        ax.scatter(*proj[~cl].T, s=4, alpha=0.5, label="normal")
        ax.scatter(*proj[cl].T, s=4, alpha=0.5, color="tab:red", label="anomalous")
        of = f" of {m['parts'][k]}" if per_file else ""
        ax.set(xlabel="code PC 1 (code units)", ylabel="code PC 2 (code units)", title=f"Code space, test windows{of}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return ("code_space", "The int8 codes projected on their first two principal components, coloured by label"
            + (f"; each file has its own model, so {len(shown)} of the {len(m['parts'])} files, each in its own projection"
               if per_file else ""), fig)  # fmt: skip


def _quant_error_figure(plt, m: dict, det: dict):
    """The code's quantization error on the normal test windows, within and beyond the int8 code's range."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    normal, err = ~det["code_labels"].astype(bool), det["code_error"]
    bins = np.histogram_bin_edges(err[normal], bins=60)
    known = "code_in_range" in m  # older eval folders lack it: one histogram, unsplit
    inside = det["code_in_range"] if known else np.ones(len(err), bool)
    share = m["code_in_range"]["windows"] if known else 1.0
    ax.hist(err[normal & inside].ravel(), bins=bins, alpha=0.8,
            label=f"float code within the int8 range: {100 * share:.1f} % of windows, SQNR {_db(m['code_in_range']['sqnr_db'])}"
            if known else "normal test windows")  # fmt: skip
    if share < 1:
        ax.hist(err[normal & ~inside].ravel(), bins=bins, alpha=0.6, color="tab:red",
                label=f"beyond it (the int8 code saturates): {100 * (1 - share):.1f} %")  # fmt: skip
    ax.set(yscale="log", xlabel="int8 − float code (code units)", ylabel="count (code values, log)",
           title=f"Quantization error of the code, normal test windows (SQNR {_db(m['code_sqnr_db'])})")  # fmt: skip
    ax.set_ylim(top=ax.get_ylim()[1] * 50)  # room for the legend above the bars
    ax.legend(fontsize=7, loc="upper left")
    return ("quant_error", "Histogram of the code's quantization error on the normal test windows: where the float code lies "
                           "within the range the int8 code covers (calibrated on the training windows), and where it lies beyond", fig)  # fmt: skip


def _iforest_threshold(detectors: dict) -> str:
    """How the summary's note ends on Isolation Forest's threshold; folders written before metrics
    recorded it may hold either (the UCL before it had its own)."""
    kind = detectors.get("iforest", {"threshold": "ucl"}).get("threshold")
    if kind == "own":
        return ("; for Isolation Forest, whose bounded score the UCL's × 4/3 would put out of reach, where "
                "scikit-learn's <code>predict</code> puts it")  # fmt: skip
    if kind == "ucl":
        return ", for every detector"
    return ("; this folder does not record whether Isolation Forest's was the UCL (as in older folders) or its own "
            "(scikit-learn's <code>predict</code>): re-run eval to know")  # fmt: skip


def _operating_figure(plt, m: dict, names: list[str]):
    """F1 against FAR along each detector's operating curve, the published points beside them."""
    fig, ax = plt.subplots(figsize=(9.5, 5))
    unit = count_unit(m["protocol"])
    for n in names:
        c, d = m["detectors"][n]["operating_curve"], m["detectors"][n]
        ax.plot(c["far"], c["f1"], lw=1.2, color=COLOURS[n], label=NAMES[n])
        ax.plot(d["far"], d["f1"], "o", color=COLOURS[n])
    ax.plot([], [], "o", color="grey", label="at the detector's threshold (× 1)")
    published = m.get("published") or []
    for rank, r in enumerate(published, 1):  # numbered, named in a legend of their own: the names overprinted
        ax.plot(r["far"], r["f1"], "k^", ms=5)  # each other where the leaderboard's points crowd
        ax.annotate(str(rank), (r["far"], r["f1"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if published:
        ax.plot([], [], "k^", ms=5, label="published SKAB leaderboard")
        ranked = [f"{rank}  {r['algorithm']}" for rank, r in enumerate(published, 1)]
        ax.add_artist(ax.legend([plt.Line2D([], [], ls="none")] * len(published), ranked, loc="upper left", fontsize=6,
                                handlelength=0, handletextpad=0, title="published (▲)", title_fontsize=6))  # fmt: skip
    budget = m["detectors"][names[0]]["best_f1_within_far_budget"]["far_budget"]
    ax.axvline(budget, color="grey", ls="--", lw=1, label=f"FAR budget {budget:g} %")
    ax.set(xscale="symlog", xlim=(0, 100), ylim=(0, 1), xlabel=f"false alarm rate (% of normal {unit})",
           ylabel=f"F1 (anomalous {unit})", title=f"Operating curves: every threshold scaled by {c['ucl_factor'][0]:g} ... {c['ucl_factor'][-1]:g}")  # fmt: skip
    _legend_beside(ax)
    return ("operating", "F1 against false alarm rate as the threshold moves, per detector: detectors compared at equal false-alarm rates", fig)


def _summary(inputs: dict) -> str:
    parts = []
    if "m" in inputs:
        m = inputs["m"]
        b = m["bytes_per_window"]
        parts.append(f"<p>Protocol <b>{html.escape(m['protocol'])}</b> on <code>{html.escape(m['data'])}</code>: "
                     f"{m['windows']['train']} training and {m['windows']['test']} test windows ({m['windows']['anomalous']} anomalous). "
                     f"Bytes per window: raw {b['raw_int16']} (int16) → code {b['code']} (packet {b['packet']}), "
                     f"compression {b['compression_ratio']:.0f}×. Code SQNR (int8 vs float, normal test windows) {_db(m['code_sqnr_db'])}"
                     + (f"; {_db(m['code_in_range']['sqnr_db'])} on the {100 * m['code_in_range']['windows']:.1f} % whose float code "
                        "lies within the int8 code's range (beyond it the int8 code saturates)" if "code_in_range" in m else "") + ".</p>")  # fmt: skip
        unit = count_unit(m["protocol"])
        rows = "".join(
            f"<tr><td>{NAMES.get(n, n)}</td><td>{d['roc_auc']:.4f}</td><td>{d['pr_auc']:.4f}</td><td>{d['f1']:.3f}</td>"
            f"<td>{d['far']:.2f}</td><td>{d['mar']:.2f}</td><td>{_delay(d['detection_delay'])}</td>"
            f"<td>{best_text(d.get('best_f1_within_far_budget'))}</td></tr>"
            for n, d in ((n, m["detectors"][n]) for n in NAMES if n in m["detectors"])  # the JSON's keys are sorted
        )
        budget = (next(iter(m["detectors"].values())).get("best_f1_within_far_budget") or {}).get("far_budget", FAR_BUDGET)
        parts.append(f"<table><tr><th>detector</th><th>ROC-AUC</th><th>PR-AUC</th><th>F1</th><th>FAR %</th><th>MAR %</th>"
                     f"<th>mean delay ({unit}), missed</th><th>best F1 at FAR ≤ {budget:g} % (× threshold)</th></tr>{rows}</table>"
                     "<p>F1 / FAR / MAR at each detector's threshold: the UCL (quantile 0.999 × 4/3 of its training scores"
                     + ucl_source_text(m) + ")" + _iforest_threshold(m["detectors"])
                     + (f"; {deployed}" if (deployed := deployed_text(m.get("deployed"))) else "") + ". The last column moves every threshold by one common factor "
                     "and keeps the best F1 within the false-alarm budget: the factor is chosen on the test data, so it "
                     "compares detectors at equal false-alarm rates; it is not a threshold one could ship.</p>")  # fmt: skip
        if m.get("groups"):
            groups = m["groups"]
            cells = "".join(f"<tr><td>{NAMES.get(n, n)}</td>" + "".join(
                f"<td>{g['detectors'][n]['f1']:.3f} / {g['detectors'][n]['far']:.2f}</td>" for g in groups.values()) + "</tr>"
                for n in NAMES if n in m["detectors"])  # fmt: skip
            parts.append("<h3>By subset: F1 / FAR % at the threshold</h3><table><tr><th>detector</th>"
                         + "".join(f"<th>{html.escape(k)} ({g['files']} files)</th>" for k, g in groups.items())
                         + f"</tr>{cells}</table><p>The same rule on each subset of files alone: does the result hold "
                         "across kinds of fault, or does one subset carry it?</p>")  # fmt: skip
        boot = [(n, m["detectors"][n]["bootstrap"]) for n in NAMES if m["detectors"].get(n, {}).get("bootstrap")]
        if boot:
            span = lambda v, f: f"{v[0]:{f}} … {v[1]:{f}}"  # noqa: E731
            cells = "".join(f"<tr><td>{NAMES[n]}</td><td>{span(b['f1'], '.3f')}</td><td>{span(b['far'], '.2f')}</td>"
                            + (f"<td>{span(b['int8_minus']['f1'], '+.3f')}</td><td>{span(b['int8_minus']['far'], '+.2f')}</td>"
                               if "int8_minus" in b else "<td></td><td></td>") + "</tr>" for n, b in boot)  # fmt: skip
            parts.append(f"<h3>How sure: 95 % intervals from resampling the {len(m['parts'])} files</h3><table><tr><th>detector</th>"
                         "<th>F1</th><th>FAR %</th><th>int8 minus it: F1</th><th>int8 minus it: FAR (points)</th></tr>"
                         f"{cells}</table><p>A bootstrap over files ({boot[0][1]['resamples']} resamples, every detector on "
                         "the same ones): where an interval of the difference spans zero, these files cannot tell the "
                         "two detectors apart.</p>")  # fmt: skip
        rec = "".join(f"<tr><td>{html.escape(k)}</td>" + "".join(f"<td>{v:.1f}</td>" for v in r["snr_db"]) + "</tr>"
                      for k, r in m["reconstruction"].items())  # fmt: skip
        parts.append("<h3>Reconstruction SNR per channel (dB), normal test windows</h3><table><tr><th></th>"
                     + "".join(f"<th>{html.escape(c)}</th>" for c in m["channels"]) + f"</tr>{rec}</table>")  # fmt: skip
        if m.get("published"):
            pub = "".join(f"<tr><td>{html.escape(r['algorithm'])}</td><td>{r['f1']:.2f}</td><td>{r['far']:.2f}</td><td>{r['mar']:.2f}</td></tr>"
                          for r in m["published"])  # fmt: skip
            row = lambda label, d: f"<tr class='ours'><td>{label}</td><td>{d['f1']:.3f}</td><td>{d['far']:.2f}</td><td>{d['mar']:.2f}</td></tr>"  # noqa: E731
            ours = row("edgeae AE int8 (this run, test rows)", m["detectors"]["int8"])
            if m.get("int8_all_rows"):  # older eval folders lack it
                ours += row("the same, every row counted as the leaderboard's notebook does", m["int8_all_rows"])
            parts.append(f"<h3>Beside the published SKAB leaderboard</h3><table><tr><th>algorithm</th><th>F1</th><th>FAR %</th><th>MAR %</th></tr>"
                         f"{ours}{pub}</table><p>This run counts the rows after each file's first 400, as the protocol in "
                         "<code>../shared/data/README.md</code> says. SKAB's reference notebook (<code>notebooks/Conv_AE.ipynb</code>) "
                         "predicts and counts every row, the 400 training rows of each file included: its false-alarm rate has more "
                         "normal rows below it, and the training rows' anomalies (SKAB's other/2 has some) count as missed.</p>")  # fmt: skip
    if "rd" in inputs:
        rd = inputs["rd"]
        cells = "".join(f"<tr><td>{k}</td><td>{_packet_cell(k)}</td><td>{a:.2f}</td><td>{p:.2f}</td><td>{x:.4f}</td><td>{y:.4f}</td></tr>"
                        for k, a, p, x, y in zip(rd["bytes_per_window"], rd["autoencoder_int8"]["snr_db"], rd["pca_int8"]["snr_db"],
                                                 rd["autoencoder_int8"]["roc_auc"], rd["pca_int8"]["roc_auc"]))  # fmt: skip
        parts.append("<h3>Rate-distortion sweep</h3><table><tr><th>bytes</th><th>packet bytes</th><th>AE SNR dB</th><th>PCA SNR dB</th>"
                     f"<th>AE ROC-AUC</th><th>PCA ROC-AUC</th></tr>{cells}</table>"
                     f"<p>Packet bytes: the code with the wire format's header, residual byte, CRC and tag; (over): more than "
                     f"LoRaWAN's {wire.LORAWAN_SLOW_PAYLOAD}-byte payload at EU868's slowest data rates.</p>{_rd_verdict(rd)}")  # fmt: skip
    if "run" in inputs:
        parts.append(_run_summary(inputs["run"]))
    return "\n".join(parts)


def _run_summary(run: dict) -> str:
    """What a training run trained, on what, and how each phase ended."""
    r, d, history = run["recipe"], run["data"], run["history"]
    rows = ""
    for phase, h in _phases(history):
        val = h.get("val_loss") or []
        kept = kept_epoch(h) if phase == "train" else "last"
        rows += (f"<tr><td>{PHASES[phase]}</td><td>{len(h['loss'])}</td><td>{h['loss'][-1]:.4g}</td>"
                 f"<td>{f'{val[-1]:.4g}' if val else '–'}</td><td>{f'{min(val):.4g}' if val else '–'}</td><td>{kept}</td></tr>")  # fmt: skip
    notes = []
    if "pruning" in run:
        pr = run["pruning"]
        notes.append(f"Pruned to {100 * pr['target_sparsity']:.0f} % zero weights: gzip-compressed weights "
                     f"{pr['gzip_bytes_before']:,} → {pr['gzip_bytes_after']:,} bytes.")  # fmt: skip
    qat = history.get("qat")
    if qat and not qat.get("applied"):
        notes.append(f"Quantization-aware training not applied: {html.escape(qat['reason'])}.")
    notes += [f"<b>Note:</b> {html.escape(n)}." for n in model_notes(from_dict(r), len(d["channels"])) + data_notes(d)]
    m, period = r["model"], d.get("row_period_s")
    return (f"<h3>Training run</h3><p>Recipe <b>{html.escape(r['name'])}</b>: a {html.escape(m['kind'])} autoencoder, "
            f"{m['code_size']}-value code, windows of {r['data']['window']} rows (hop {r['data']['hop']}) over "
            f"{len(d['channels'])} channels ({html.escape(', '.join(d['channels']))}), trained on <code>{html.escape(str(d['source']))}</code>: "
            f"{d['train_windows']} training and {d['validation_windows']} validation windows"
            f"{f', rows {period:g} s apart' if period else ''}.</p>"
            "<table><tr><th>phase</th><th>epochs</th><th>last loss</th><th>last validation loss</th><th>lowest validation loss</th>"
            f"<th>weights kept (epoch)</th></tr>{rows}</table><p>{' '.join(notes)}</p>")  # fmt: skip


def _packet_cell(code_size: int) -> str:
    """A code size's packet bytes (residual byte and tag included), marked when LoRaWAN's slowest
    EU868 data rates cannot carry it."""
    size = wire.packet_size(code_size)
    return f"{size}" if wire.fits_lorawan(size) else f"{size} (over)"


def _rd_verdict(rd: dict) -> str:
    """Says plainly at which code sizes the int8 autoencoder's SNR is above PCA's, and where not."""
    wins = rd["autoencoder_above_pca_snr"]  # keyed by code size as text (sorted as text in the JSON)
    above = [str(k) for k in rd["code_sizes"] if wins[str(k)]]
    below = [str(k) for k in rd["code_sizes"] if not wins[str(k)]]
    say = lambda ks: ", ".join(ks) + " bytes"  # noqa: E731
    text = (f"At equal bytes per window the int8 autoencoder reconstructs better than PCA with int8 codes at {say(above)}"
            if above else "The int8 autoencoder does not reconstruct better than PCA with int8 codes at any code size")
    return f"<p>{text}{f'; not at {say(below)}' if above and below else ''}.</p>"


def _db(v) -> str:
    """A SQNR for the page: none when no window had one."""
    return "–" if v is None else f"{v:.1f} dB"


def _delay(d) -> str:
    mean = "–" if d["mean"] is None else f"{d['mean']:.1f}"
    return f"{mean}, {d['missed']} of {len(d['per_segment'])}"


STYLE = """body{font-family:sans-serif;max-width:1180px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}tr.ours{background:#eef6ee;font-weight:bold}
figure{margin:1.5em 0}img{max-width:100%}figcaption{color:#555;font-size:0.9em}"""
# Records, for tests and people, that every embedded image decoded.
SCRIPT = """window.addEventListener('load',()=>{const i=[...document.images];
document.body.dataset.imagesLoaded=i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length;});"""


def results_plot(series: dict[int, dict[str, np.ndarray]], out: str | Path, thresholds: dict[int, list[float]] | None = None,
                 total: int | None = None, sensors: int = RESULTS_SENSORS) -> Path:  # fmt: skip
    """A PNG of a serve database's scores over time (`results.score_series`), one panel per sensor
    (the first `sensors` by id, of `total` in the database), the packets flagged as anomalous
    marked, those left unscored ticked along the bottom, and the sensor's thresholds
    (`results.thresholds`) drawn across."""
    plt = _pyplot()
    import matplotlib.dates as mdates

    if not series:
        raise EdgeaeError("the results database holds no packets: nothing to plot")
    shown = sorted(series)[:sensors]
    fig, axes = plt.subplots(len(shown), 1, figsize=(9, 1.9 * len(shown) + 1), sharex=True, squeeze=False)
    for ax, sensor in zip(axes[:, 0], shown):
        d = series[sensor]
        t = d["timestamp"].astype(np.int64).astype("datetime64[s]")
        flagged, scored = d["anomaly"] == 1, ~np.isnan(d["score"])
        ax.plot(t[scored], d["score"][scored], lw=0.8, label="anomaly score")
        ax.plot(t[flagged], d["score"][flagged], "r.", ms=4, label=f"flagged anomalous ({flagged.sum()} of {len(t)})")
        if not scored.all():  # along the bottom edge: packets without the residual byte the scorer needs
            ax.plot(t[~scored], np.zeros((~scored).sum()), "|", color="0.5", ms=6, transform=ax.get_xaxis_transform(),
                    label=f"unscored: no residual byte ({(~scored).sum()})")  # fmt: skip
        mine = (thresholds or {}).get(sensor, [])
        for i, th in enumerate(mine):
            label = "threshold" if len(mine) == 1 else f"the {len(mine)} thresholds serve used"
            ax.axhline(th, color="k", ls="--", lw=0.8, label=None if i else label)
        ax.set(ylabel="score (scorer units)", title=f"sensor {sensor}")
        _legend_beside(ax)
    axes[-1, 0].set_xlabel("window time (UTC)")
    axes[-1, 0].xaxis.set_major_formatter(mdates.ConciseDateFormatter(axes[-1, 0].xaxis.get_major_locator()))
    total = max(total or 0, len(series))
    more = f" (the first {len(shown)} of {total} sensors)" if total > len(shown) else ""
    fig.suptitle(f"Anomaly score per packet{more}")
    fig.tight_layout()
    with atomic_file(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(out)


def render(folder: str | Path, out: str | Path | None = None, progress: bool = True) -> Path:
    """Write report.html (and the PNGs) into `folder` (or `out`); returns the HTML path."""
    from tqdm.auto import tqdm

    folder = Path(folder)
    if not folder.is_dir():
        raise EdgeaeError(f"{folder}: no such report folder")
    out = Path(out) if out else folder
    inputs = _read(folder)
    try:
        figures, summary = _figures(inputs), _summary(inputs)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise EdgeaeError(f"{folder}: damaged or incomplete eval / sweep output ({e.__class__.__name__}: {e})") from None
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    sections = []
    for stem, caption, fig in tqdm(figures, desc="figures", unit="fig", disable=None if progress else True):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        (out / f"{stem}.png").write_bytes(buf.getvalue())
        data = base64.b64encode(buf.getvalue()).decode()
        sections.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>edgeae report: {html.escape(folder.name)}</title>"
            f"<style>{STYLE}</style></head><body><h1>edgeae report: {html.escape(folder.name)}</h1>"
            f"{summary}{''.join(sections)}<script>{SCRIPT}</script></body></html>")  # fmt: skip
    with atomic_file(out / "report.html") as tmp:
        tmp.write_text(page)
    return out / "report.html"

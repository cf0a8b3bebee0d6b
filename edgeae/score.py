"""Anomaly scoring on the host, scikit-learn style: `fit`, `score_samples`, `predict`.

What a window's evidence can be (`Features`):
  - `code`: the dequantized code from the packet,
  - `residual`: the device's reconstruction error from the packet's residual byte,
  - `error`: the reconstruction error of the raw window (offline, when raw windows exist).

Modes:
  - `code`: Mahalanobis distance (squared) of the code from the normal codes,
  - `residual`: the device's residual,
  - `reconstruction`: the raw-window reconstruction error,
  - `combined`: the larger of the residual and code scores, each divided by its own control
    limit, so either kind of deviation can raise an alarm.

Scores are anomaly scores: higher means more anomalous, and `predict` returns 1 for an
anomaly (as the 0/1 labels of the data files), unlike scikit-learn's +1 / -1 outlier API.

Threshold rules, fitted on normal windows: `ucl` (quantile 0.999 x 4/3, the SKAB reference
rule), `percentile` (a quantile of the normal scores), `far` (the quantile giving a target false
alarm rate); with labelled validation data `fit_f1` moves it to the F1-optimal threshold.

A sensor can have a threshold of its own (`sensor_thresholds_`, set by `calibrate_sensor` from the
packets serve stored of a time it ran normally): one export serves a fleet of machines, and a
noisier one would otherwise be flagged all the time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import data as D
from .errors import EdgeaeError
from .fsutil import atomic_file, parse_json
from .manifest import Export
from .metrics import threshold_counts
from .protocols import ucl
from .wire import SENSOR_IDS

MODES = ("code", "residual", "reconstruction", "combined")
RULES = ("ucl", "percentile", "far")
DEFAULT_Q = {"percentile": 0.99, "far": 0.01}  # the quantile, and the target false-alarm rate
RIDGE = 1e-6  # added to the normal codes' covariance before inverting it: the precision's eigenvalues are at most 1 / RIDGE
HOST_MODES = ("residual", "code", "combined")  # what packets carry; "reconstruction" needs raw windows
NEEDS = {"code": ("code",), "residual": ("residual",), "reconstruction": ("error",), "combined": ("code", "residual")}


@dataclass
class Features:
    code: np.ndarray | None = None  # (n, code_size)
    residual: np.ndarray | None = None  # (n,)
    error: np.ndarray | None = None  # (n,)

    def __len__(self) -> int:
        return len(next(v for v in (self.code, self.residual, self.error) if v is not None))

    def subset(self, mask) -> "Features":
        return Features(*(None if v is None else v[mask] for v in (self.code, self.residual, self.error)))


class AnomalyScorer:
    """Scores windows from what the host receives; see the module docstring."""

    def __init__(self, mode: str = "residual", rule: str = "ucl", q: float | None = None):
        if mode not in MODES:
            raise EdgeaeError(f"scoring mode must be one of {', '.join(MODES)}; got {mode!r}")
        if rule not in RULES:
            raise EdgeaeError(f"threshold rule must be one of {', '.join(RULES)}; got {rule!r}")
        self.mode, self.rule, self.q = mode, rule, DEFAULT_Q.get(rule) if q is None else q
        self.sensor_thresholds_: dict[int, float] = {}

    # -- the parts of each mode
    def _code_score(self, code):
        d = code - self.mean_
        return np.einsum("ij,jk,ik->i", d, self.precision_, d)

    def _check(self, f: Features) -> Features:
        missing = [k for k in NEEDS[self.mode] if getattr(f, k) is None]
        if missing:
            raise EdgeaeError(f"scoring mode '{self.mode}' needs {', '.join(missing)} in the features")
        return f

    def _raw(self, f: Features) -> np.ndarray:
        self._check(f)
        if self.mode == "code":
            return self._code_score(f.code)
        if self.mode == "residual":
            return np.asarray(f.residual, dtype=np.float64)
        if self.mode == "reconstruction":
            return np.asarray(f.error, dtype=np.float64)
        return np.maximum(f.residual / self.residual_limit_, self._code_score(f.code) / self.code_limit_)

    def fit(self, normal: Features) -> "AnomalyScorer":
        """Fit on windows of normal operation: the code statistics and the threshold."""
        if len(self._check(normal)) < 2:
            raise EdgeaeError("need at least 2 normal windows to fit a scorer")
        if self.mode in ("code", "combined"):
            code = np.asarray(normal.code, dtype=np.float64)
            self.mean_ = code.mean(axis=0)
            cov = np.atleast_2d(np.cov(code.T)) + RIDGE * np.eye(code.shape[1])
            self.precision_ = np.linalg.inv(cov)
        if self.mode == "combined":
            self.residual_limit_ = ucl(normal.residual)
            self.code_limit_ = ucl(self._code_score(normal.code))
        self.threshold_ = rule_threshold(self._raw(normal), self.rule, self.q)
        return self

    def fit_f1(self, features: Features, labels: np.ndarray) -> "AnomalyScorer":
        """Move the threshold to the one maximizing window-level F1 on labelled data, halfway
        between two distinct scores (never inside a run of ties, which no threshold splits)."""
        y = np.asarray(labels).astype(bool)
        if y.all() or not y.any():
            raise EdgeaeError("the F1-optimal threshold needs both normal and anomalous windows")
        distinct, tp, fp = threshold_counts(y, self.score_samples(features))
        best = int(np.argmax(2 * tp / (tp + fp + y.sum())))
        below = distinct[best + 1] if best + 1 < len(distinct) else distinct[best] - 1
        self.threshold_ = float((distinct[best] + below) / 2)
        self.rule = "f1"
        return self

    def score_samples(self, features: Features) -> np.ndarray:
        """Anomaly score per window (higher = more anomalous)."""
        return self._raw(features)

    def predict(self, features: Features) -> np.ndarray:
        """1 for windows scoring above the threshold, else 0."""
        return (self.score_samples(features) > self.threshold_).astype(np.int8)

    def threshold_for(self, sensor: int) -> float:
        """The threshold a sensor's windows are judged by: its own, else the scorer's."""
        return self.sensor_thresholds_.get(sensor, self.threshold_)

    # -- persistence (JSON, stored beside an export's manifest)
    def to_dict(self) -> dict:
        d = {"mode": self.mode, "rule": self.rule, "q": self.q, "threshold": self.threshold_}
        for k in ("mean_", "precision_", "residual_limit_", "code_limit_"):
            if hasattr(self, k):
                v = getattr(self, k)
                d[k.rstrip("_")] = v.tolist() if isinstance(v, np.ndarray) else v
        if self.sensor_thresholds_:
            d["sensor_thresholds"] = {str(k): v for k, v in sorted(self.sensor_thresholds_.items())}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AnomalyScorer":
        """The scorer `to_dict` wrote; ValueError (or KeyError, TypeError) when a part its mode
        needs is missing, not finite or of the wrong shape, rather than a failure when it scores."""
        if d["mode"] not in MODES or d["rule"] not in (*RULES, "f1") or not (d.get("q") is None or 0 < _finite(d["q"]) < 1):
            raise ValueError(f"mode {d['mode']!r}, rule {d['rule']!r} or q {d.get('q')!r} is not one this edgeae writes")
        s = cls(d["mode"], d["rule"] if d["rule"] in RULES else "ucl", d.get("q"))
        s.rule, s.threshold_ = d["rule"], _threshold(d["threshold"])
        if s.mode in ("code", "combined"):
            s.mean_, s.precision_ = (np.asarray(d[k], dtype=np.float64) for k in ("mean", "precision"))
            k = s.mean_.shape[0] if s.mean_.ndim == 1 else -1
            if s.precision_.shape != (k, k) or not (np.isfinite(s.mean_).all() and np.isfinite(s.precision_).all()):
                raise ValueError("mean and precision must be a finite vector and its square matrix")
            eig = np.linalg.eigvalsh(s.precision_)
            if not np.allclose(s.precision_, s.precision_.T) or eig.min() <= 0 or eig.max() > 1.001 / RIDGE:
                raise ValueError(f"precision must be the inverse of a covariance (symmetric, eigenvalues in (0, {1 / RIDGE:g}])")
        if s.mode == "combined":
            s.residual_limit_, s.code_limit_ = _finite(d["residual_limit"]), _finite(d["code_limit"])
            if min(s.residual_limit_, s.code_limit_) <= 0:
                raise ValueError("the limits must be positive")
        sensors = d.get("sensor_thresholds", {})
        if not isinstance(sensors, dict) or not all(k.isascii() and k.isdigit() and int(k) in SENSOR_IDS for k in sensors):
            raise ValueError(f"sensor_thresholds must map sensor ids 0..{SENSOR_IDS[-1]} to thresholds")
        s.sensor_thresholds_ = {int(k): _threshold(v) for k, v in sensors.items()}
        return s


def rule_threshold(scores: np.ndarray, rule: str, q: float | None) -> float:
    """The threshold a rule (`RULES`) sets on normal scores."""
    if rule == "ucl":
        return ucl(scores)
    return float(np.quantile(scores, q if rule == "percentile" else 1 - q))


def _finite(v) -> float:
    if isinstance(v, bool) or not np.isfinite(v := float(v)):
        raise ValueError(f"{v!r} is not a finite number")
    return v


def _threshold(v) -> float:
    """Every score is >= 0 (0 itself a fitted threshold when most normal scores are 0): one below flags every window."""
    if (v := _finite(v)) < 0:
        raise ValueError(f"a threshold of {v!r}, below every score")
    return v


SCORER_FILE = "scorer.json"


def save(scorer: AnomalyScorer, export_dir: Path, model_id: int) -> Path:
    """Write scorer.json beside the manifest (atomically), tied to the export's model id."""
    path = Path(export_dir) / SCORER_FILE
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({"model_id": f"{model_id:08x}", **scorer.to_dict()}, indent=2) + "\n")
    return path


def load(ex: Export) -> AnomalyScorer | None:
    """The export's scorer, or None when it has none; one calibrated for another export, or
    damaged or hand-edited (a part missing, not finite, not of the code's size, a mean code the
    export's code cannot hold), is an error."""
    path = ex.path / SCORER_FILE
    if not path.is_file():
        return None
    try:
        d = parse_json(path.read_text())
        if d["model_id"] != f"{ex.model_id:08x}":
            raise EdgeaeError(f"{path}: calibrated for model {d['model_id']}, not this export ({ex.model_id:08x})")
        scorer = AnomalyScorer.from_dict(d)
        if hasattr(scorer, "mean_"):
            (lo, hi), size, step = ex.code_range, ex.manifest["code_size"], ex.manifest["quantization"]["code"]["scale"]
            if len(scorer.mean_) != size:
                raise ValueError(f"a code of {len(scorer.mean_)} values, the export's has {size}")
            if not ((scorer.mean_ >= lo - step) & (scorer.mean_ <= hi + step)).all():
                raise ValueError(f"a mean code beyond {lo:.4g} .. {hi:.4g}, all the export's code holds")
        return scorer
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise EdgeaeError(f"{path}: not a valid scorer file ({e.__class__.__name__}: {e})") from None


def calibrate(
    export_dir,
    data,
    mode: str = "residual",
    rule: str = "ucl",
    q: float | None = None,
    train_rows: tuple[int, int] | None = None,
    f1: bool = False,
) -> tuple[AnomalyScorer, dict]:
    """Fit a scorer on the normal windows of `data` (a file, a folder of them, or a list of those;
    of each: the row range, else the rows labelled 0, else all), optionally move its threshold to
    the F1 optimum, and save it in the export."""
    from .pipeline import Pipeline

    if mode not in HOST_MODES:
        raise EdgeaeError(f"the host's scorer reads packets, so its mode is one of {', '.join(HOST_MODES)}; got {mode!r}")
    ex = Export.open(export_dir)
    pipe = Pipeline(ex)
    files, source = ex.read_files(data), D.names(data)
    each = lambda f: np.concatenate([f(s) for s in files])  # noqa: E731  (per file, no window spans two)
    windows = each(lambda s: pipe.norm.windows(s, ex.window, ex.hop))
    unlabelled = [s.source for s in files if s.labels is None]
    labels = None if unlabelled else each(lambda s: D.window_labels(s, ex.window, ex.hop))
    labelled_normal = each(lambda s: D.normal_windows_mask(s, ex.window, ex.hop))
    if train_rows is not None:
        normal = each(lambda s: D.rows_windows_mask(s, ex.window, ex.hop, train_rows))
        where = f"rows {train_rows[0]}:{train_rows[1]}" + (" of each file" if len(files) > 1 else "")
    else:
        normal = labelled_normal
        where = ("every row (no labels)" if len(unlabelled) == len(files) else "rows labelled normal"
                 + (" (every row of a file without labels)" if unlabelled else ""))  # fmt: skip
    if normal.sum() < 2:
        raise EdgeaeError(f"{source}: {int(normal.sum())} windows of {ex.window} rows in {where} "
                          f"({sum(map(len, files))} rows in all); need at least 2 to fit a scorer")  # fmt: skip
    D.check_spread(windows[normal], f"{source}, {where}")
    # rows given that hold a labelled fault: fitted as normal, they raise the threshold to the fault's scores
    faulty = int((normal & ~labelled_normal).sum())
    features = pipe.offline_features(windows)
    scorer = AnomalyScorer(mode, rule, q).fit(features.subset(normal))
    if f1:
        if labels is None:
            raise EdgeaeError(f"{unlabelled[0]}: --f1 needs labelled data")
        scorer.fit_f1(features, labels)
    why = "its normal windows are rougher than the export's calibration set: export again with calibration data from this machine"
    if faulty:
        why = (f"{faulty} of the {int(normal.sum())} windows of {where} hold rows labelled anomalous: fit on rows without faults, "
               "or leave --train-rows out to fit on the rows labelled normal")  # fmt: skip
    check_flaggable(scorer, pipe, scorer.threshold_, f"{source}: the threshold by the {scorer.rule} rule", why)
    try:
        before = load(ex)
    except EdgeaeError:  # damaged, or another export's: nothing of it to carry over
        before = None
    save(scorer, ex.path, ex.model_id)
    report = {"mode": mode, "rule": scorer.rule, **({"q": scorer.q} if scorer.rule in DEFAULT_Q else {}), "threshold": scorer.threshold_,
              "fitted_on": where, "normal_windows": int(normal.sum()), **({"windows_with_anomalous_rows": faulty} if faulty else {})}  # fmt: skip
    if before is not None and before.sensor_thresholds_:  # on the old scorer's scale: meaningless under the new one
        report["sensor_thresholds_dropped"] = sorted(before.sensor_thresholds_)
    if labels is not None:
        from .metrics import detection_rates, roc_auc

        scores = scorer.score_samples(features)
        rates = detection_rates(labels, scores > scorer.threshold_)
        if labels.any() and not labels.all():  # and how well each mode, fitted on the same windows, tells these faults apart
            report.update(auc=roc_auc(labels, scores), **rates)
            report["auc_by_mode"] = {m: report["auc"] if m == mode else roc_auc(labels, AnomalyScorer(m).fit(features.subset(normal)).score_samples(features))
                                     for m in HOST_MODES}  # fmt: skip
        else:  # one class: no ROC-AUC or F1 (NaN is not JSON), only its false alarms or misses
            report.update({k: rates[k] for k in (("mar", "tp", "fn") if labels.all() else ("far", "fp", "tn"))})
    return scorer, report


MIN_SENSOR_PACKETS = 100  # below this the UCL's quantile 0.999 is just the largest score


def check_flaggable(scorer: AnomalyScorer, pipe, threshold: float, what: str, why: str) -> None:
    """Refuse a threshold that the largest score a residual byte gives (byte 255) does not pass: the
    byte would never flag a window (in mode residual, nothing would ever be flagged), in silence.
    `what` names the threshold, `why` the way out."""
    if scorer.mode in ("residual", "combined"):
        top = pipe.residual_ceiling / (scorer.residual_limit_ if scorer.mode == "combined" else 1.0)
        if threshold >= top:
            raise EdgeaeError(f"{what} would be {threshold:.4g}, at or above the largest score a packet's residual byte gives "
                              f"({top:.4g}, byte 255): the byte would never flag a window; {why}")  # fmt: skip


def calibrate_sensor(export_dir, db, sensors: list[int], since: float | None = None, until: float | None = None,
                     rule: str = "ucl", q: float | None = None) -> tuple[AnomalyScorer, list[dict]]:  # fmt: skip
    """Give each of `sensors` a threshold of its own, set by `rule` on the scores of its packets from
    this export that serve stored in `db` with window times in [since, until): a time the operator
    knows its machine ran normally. Reads packets only (numpy and LiteRT, as on a gateway); the
    export's scorer (scorer.json, or the default one) is kept, the sensors' thresholds added to it,
    all of them or, when one cannot be set, none."""
    from .host import Host
    from .results import iso_utc

    host = Host(export_dir)
    scorer = host.scorer
    q = DEFAULT_Q.get(rule) if q is None else q
    span = (f" from {iso_utc(since)}" if since is not None else "") + (f" before {iso_utc(until)}" if until is not None else "")
    reports = []
    for sensor in sensors:
        scores, residual, times = _stored_scores(host, db, sensor, since, until, span)
        old, new = scorer.threshold_for(sensor), rule_threshold(scores, rule, q)
        at_ceiling = 0 if residual is None else int((residual == 255).sum())
        check_flaggable(scorer, host.pipe, new, f"{db}: sensor {sensor}'s threshold by the {rule} rule",
                        f"{at_ceiling} of its {len(scores)} packets{span} are at that ceiling: its machine is rougher than this "
                        f"export measures, and an export calibrated on that machine's data can judge it")  # fmt: skip
        scorer.sensor_thresholds_[sensor] = new
        reports.append({"sensor": sensor, "packets": len(scores), "first_time": iso_utc(min(times)), "last_time": iso_utc(max(times)),
                        "rule": rule, **({"q": q} if rule in DEFAULT_Q else {}), "threshold": new, "previous_threshold": old,
                        "flagged_before": int((scores > old).sum()), "flagged_now": int((scores > new).sum())})  # fmt: skip
    save(scorer, host.export.path, host.model_id)
    return scorer, reports


def _stored_scores(host, db, sensor: int, since: float | None, until: float | None, span: str):
    """The scores of the scorable packets of `sensor` from `host`'s export that serve stored in `db`
    with window times in [since, until), with their residual bytes (None for a scorer of codes) and times."""
    from .results import batches, not_served, read_results

    where, args = ["sensor=?", "model_id=?"], [sensor, f"{host.model_id:08x}"]
    if host.scorer.mode != "code":
        where.append("residual IS NOT NULL")  # no residual byte: a residual scorer cannot score it
    for condition, t in (("timestamp>=?", since), ("timestamp<?", until)):
        if t is not None:
            where.append(condition)
            args.append(t)
    with read_results(db) as con:  # a batch at a time, as serve writes beside it
        rows = [r for b in batches(con, "packets", "code, residual, timestamp", " AND ".join(where), args, key="seq") for r in b]
        if len(rows) < MIN_SENSOR_PACKETS:
            raise EdgeaeError(f"{db}: {len(rows)} scorable packets of sensor {sensor} from export {args[1]}{span}; "
                              f"need at least {MIN_SENSOR_PACKETS} to set its threshold")  # fmt: skip
        size = host.export.manifest["code_size"]
        try:  # JSON lists as serve wrote them (the database's constraints hold the other columns to serve's values)
            codes = np.array([parse_json(c) for c, _, _ in rows], dtype=np.int8)
            if codes.shape != (len(rows), size):
                raise ValueError(f"codes of shape {codes.shape[1:]}, the export's are ({size},)")
        except (ValueError, TypeError, OverflowError) as e:
            raise not_served("packets.code", e) from None
        residual = None if host.scorer.mode == "code" else np.array([r for _, r, _ in rows], dtype=np.uint8)
        times = [float(t) for *_, t in rows]
    return host.scorer.score_samples(host.pipe.packet_features(codes, residual)), residual, times


def remove_sensor_thresholds(export_dir, sensors: list[int]) -> dict:
    """Take `sensors`' own thresholds out of the export's scorer: the export's judges them again."""
    ex = Export.open(export_dir)
    scorer = load(ex)
    own = sorted(scorer.sensor_thresholds_) if scorer else []
    missing = [s for s in sensors if s not in own]
    if missing:
        raise EdgeaeError(f"{ex.path}: sensor(s) {', '.join(map(str, missing))} have no threshold of their own "
                          f"({'those that do: ' + ', '.join(map(str, own)) if own else 'no sensor has'})")  # fmt: skip
    for s in sensors:
        del scorer.sensor_thresholds_[s]
    save(scorer, ex.path, ex.model_id)
    return {"removed": sensors, "threshold": scorer.threshold_}

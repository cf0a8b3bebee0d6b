import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from edgeae.metrics import reconstruction_error, roc_auc, sqnr_db


def test_roc_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 200)
        s = np.round(rng.normal(y * 0.5, 1), 1)  # rounding makes ties
        assert abs(roc_auc(y, s) - roc_auc_score(y, s)) < 1e-12


def test_roc_auc_degenerate():
    assert np.isnan(roc_auc(np.zeros(5), np.arange(5)))
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0


def test_sqnr_and_error():
    x = np.ones(100)
    assert abs(sqnr_db(x, x + 0.1) - 20.0) < 1e-9
    assert sqnr_db(x, x) == float("inf")
    w = np.zeros((3, 2, 2))
    np.testing.assert_allclose(reconstruction_error(w, w + 1), [1, 1, 1])


def test_reconstruction_error_power_mean_over_channels():
    """Power 1: the window's mean squared error; power p: (mean over channels of each channel's
    mean squared error to the p) to the 1/p, by hand."""
    w = np.zeros((1, 3, 2))
    r = np.array([[[1.0, 0.0], [1.0, 0.0], [1.0, 3.0]]])  # channel errors: mean 1 and 3
    assert reconstruction_error(w, r)[0] == 2.0
    np.testing.assert_allclose(reconstruction_error(w, r, 4), [((1 + 3**4) / 2) ** 0.25])
    big = reconstruction_error(w, r, 8)[0]
    assert 2.0 < reconstruction_error(w, r, 2)[0] < big < 3.0  # towards the worst channel


@pytest.mark.parametrize("power", [1, 4])
def test_reconstruction_error_of_a_window_far_outside_float32_squares(power):
    """A window 1e20 normalized units off (a sensor stuck at a rail, data in other units) squared to
    inf in float32: numpy's overflow warnings, then NaN where eval divides by a limit."""
    w = np.zeros((2, 3, 2), np.float32)
    r = w.copy()
    r[1] = 1e20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e = reconstruction_error(w, r, power)
    np.testing.assert_allclose(e, [0.0, 1e40])


def test_pr_auc_matches_average_precision():
    from sklearn.metrics import average_precision_score

    from edgeae.metrics import pr_auc

    rng = np.random.default_rng(1)
    for _ in range(20):
        y = rng.integers(0, 2, 300)
        s = np.round(rng.normal(y * 0.7, 1), 1)
        assert abs(pr_auc(y, s) - average_precision_score(y, s)) < 1e-12
    assert np.isnan(pr_auc(np.zeros(4), np.arange(4)))


def test_detection_rates_match_sklearn():
    from sklearn.metrics import confusion_matrix, f1_score

    from edgeae.metrics import detection_rates

    rng = np.random.default_rng(2)
    y, p = rng.integers(0, 2, 500), rng.integers(0, 2, 500)
    d = detection_rates(y, p)
    tn, fp, fn, tp = confusion_matrix(y, p).ravel()
    assert abs(d["f1"] - f1_score(y, p)) < 1e-12
    assert abs(d["far"] - 100 * fp / (fp + tn)) < 1e-12 and abs(d["mar"] - 100 * fn / (fn + tp)) < 1e-12
    assert detection_rates([0, 0], [0, 0]) == {"f1": 0.0, "far": 0.0, "mar": 0.0, "tp": 0, "fp": 0, "fn": 0, "tn": 2}


def test_count_rates_of_arrays_as_detection_rates_gives_them():
    """Per file (the report's bars) and per resample (the bootstrap): the same rates, 0 where a
    file has no fault or no normal row."""
    from edgeae.metrics import COUNTS, count_rates, detection_rates

    cases = [([1, 1, 0, 0], [1, 0, 0, 0]), ([0, 0, 0], [1, 0, 0]), ([1, 1], [0, 1])]  # (labels, predicted)
    rates = [detection_rates(y, p) for y, p in cases]
    f1, far, mar = count_rates(*(np.array([r[k] for r in rates]) for k in COUNTS))
    assert f1.tolist() == [r["f1"] for r in rates] and far.tolist() == [r["far"] for r in rates] and mar.tolist() == [r["mar"] for r in rates]
    assert (f1[1], mar[1], far[2]) == (0.0, 0.0, 0.0)  # no fault in the second; no normal row in the third


def test_channel_fidelity_by_hand():
    from edgeae.metrics import channel_fidelity

    x = np.ones((2, 3, 2))
    xh = x.copy()
    xh[..., 1] = 0.9  # error 0.1 on channel 1: NMSE 0.01, SNR 20 dB
    d = channel_fidelity(x, xh)
    assert d["nmse"][0] == 0 and abs(d["nmse"][1] - 0.01) < 1e-12 and abs(d["snr_db"][1] - 20) < 1e-9


def test_segments_and_delays_by_hand():
    from edgeae.metrics import detection_delays, segments

    y = [0, 1, 1, 1, 0, 0, 1, 1, 0, 1]
    assert segments(y) == [(1, 4), (6, 8), (9, 10)]
    p = [1, 0, 0, 1, 0, 0, 0, 0, 1, 1]
    assert detection_delays(y, p) == [2, None, 0]


def test_skab_row_rule_by_hand():
    """Window j starts at row j; row i is flagged when every window starting in [i - w + 1, i - 1]
    is above the limit, for i in [w - 1, n_windows - w]. With w = 3 and 8 windows (10 rows):
    rows 2..5 are candidates; windows 1..4 above -> rows 3 (windows 1, 2), 4 (2, 3) and 5 (3, 4)."""
    from edgeae.protocols import skab_rows

    scores = np.array([0, 5, 5, 5, 5, 0, 5, 5], dtype=float)
    assert skab_rows(scores, 1.0, 10, window=3).tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 0]
    assert skab_rows(np.full(8, 5.0), 1.0, 10, window=3).tolist() == [0, 0, 1, 1, 1, 1, 0, 0, 0, 0]
    assert skab_rows(np.full(3, 5.0), 1.0, 5, window=3).tolist() == [0] * 5  # too short for any row


def test_skab_row_rule_matches_the_reference_loop():
    """The reference pipelines' loop: `for i in range(w - 1, len(above) - w + 1): if all(above[i - w + 1 : i])`."""
    from edgeae.protocols import skab_rows

    rng = np.random.default_rng(0)
    for n in (59, 150, 400, 1147):
        scores = np.repeat(rng.random(n // 10 + 1), 10)[: n - 59] + 0.1 * rng.random(n - 59)
        above = scores > 0.5
        expected = np.zeros(n, dtype=np.int8)
        for i in range(59, len(above) - 60 + 1):
            expected[i] = above[i - 59 : i].all()
        assert np.array_equal(skab_rows(scores, 0.5, n), expected)


def test_bootstrap_rates_pool_the_resampled_files_rows():
    """Each resample's F1 / FAR is detection_rates on the rows of the files it drew, pooled; all
    detectors draw the same files; identical files leave nothing to resample."""
    from edgeae.metrics import bootstrap_rates, detection_rates

    rng = np.random.default_rng(1)
    counts = rng.integers(0, 40, size=(2, 7, 4))
    counts[:, 2] = [0, 5, 0, 30]  # a file with false alarms only
    f1, far = bootstrap_rates(counts, 30, seed=3)
    assert f1.shape == far.shape == (2, 30)
    draws = np.random.default_rng(3).integers(0, 7, size=(30, 7))

    def rows(tp, fp, fn, tn):  # labels, predictions
        return np.r_[np.ones(tp + fn), np.zeros(fp + tn)], np.r_[np.ones(tp), np.zeros(fn), np.ones(fp), np.zeros(tn)]

    for r in range(30):
        for d in range(2):
            y, p = (np.concatenate(z) for z in zip(*(rows(*counts[d, i]) for i in draws[r])))
            want = detection_rates(y, p)
            assert abs(f1[d, r] - want["f1"]) < 1e-12 and abs(far[d, r] - want["far"]) < 1e-12
    same_f1, same_far = bootstrap_rates(np.tile([[[3, 1, 2, 50]]], (1, 5, 1)), 20)
    assert np.ptp(same_f1) == 0 and np.ptp(same_far) == 0


def test_report_curves_are_scikit_learns_with_ties():
    """The report's ROC and PR curves have one point per distinct score, as roc_curve (without
    dropping collinear points) and precision_recall_curve do; a run of ties is one segment."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    from edgeae.report import _pr, _roc

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(y * 0.7, 1), 1)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(_roc(y, s), [fpr, tpr])
    precision, recall, _ = precision_recall_curve(y, s)  # lowest threshold first, then (recall 0, precision 1)
    np.testing.assert_allclose(_pr(y, s), [recall[-2::-1], precision[-2::-1]])

import numpy as np
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

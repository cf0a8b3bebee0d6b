"""The host's anomaly scorer (`edgeae calibrate`, used by `serve`): each mode and threshold rule
against scikit-learn or a hand count, the F1-optimal threshold on tied scores, the scorer file."""

import json
import re
import shutil

import numpy as np
import pytest

from edgeae.errors import EdgeaeError
from edgeae.manifest import Export
from edgeae.protocols import ucl
from edgeae.score import HOST_MODES, AnomalyScorer, Features, load, save


def _normal(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    return Features(code=rng.normal(size=(n, 3)) @ [[1, 0, 0], [0.5, 1, 0], [0, 0, 0.2]], residual=rng.gamma(2.0, size=n))


def _export(folder, code_size=3):
    """An export as its scorer file is checked against: its identity (the manifest's hash) and its code."""
    manifest = {"code_size": code_size, "quantization": {"code": {"dtype": "int8", "scale": 0.05, "zero_point": 0}}}
    folder.mkdir(exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return Export(folder, manifest)


def test_ucl_rule_is_the_skab_rule():
    normal = _normal()
    s = AnomalyScorer("residual", "ucl").fit(normal)
    assert s.threshold_ == pytest.approx(np.quantile(normal.residual, 0.999) * 4 / 3) == ucl(normal.residual)


@pytest.mark.parametrize("rule, q, flagged", [("percentile", 0.95, 0.05), ("far", 0.02, 0.02), ("percentile", None, 0.01), ("far", None, 0.01)])
def test_percentile_and_far_rules_flag_their_share_of_normal_windows(rule, q, flagged):
    """Without q, 0.99 and 0.01, and the scorer (and calibrate's report) says so: the report named
    the rule but not the rate it was fitted to."""
    s = AnomalyScorer("residual", rule, q).fit(_normal())
    assert s.predict(_normal(seed=1)).mean() == pytest.approx(flagged, abs=0.01)  # fresh normal windows
    assert s.to_dict()["q"] == (q or {"percentile": 0.99, "far": 0.01}[rule])


def test_code_mode_is_the_squared_mahalanobis_distance():
    from sklearn.covariance import EmpiricalCovariance

    normal, new = _normal(), _normal(50, seed=2)
    s = AnomalyScorer("code").fit(normal)
    ref = EmpiricalCovariance().fit(normal.code)  # maximum likelihood covariance: 1/n, not 1/(n-1)
    n = len(normal)
    np.testing.assert_allclose(s.score_samples(new), ref.mahalanobis(new.code) * (n - 1) / n, rtol=1e-4)


def test_combined_mode_flags_either_kind_of_deviation():
    normal = _normal()
    s = AnomalyScorer("combined").fit(normal)
    typical_code = normal.code.mean(axis=0)
    odd_code = typical_code + [0, 0, 5]  # 25 standard deviations along the third axis, residual typical
    windows = Features(code=np.array([typical_code, typical_code, odd_code]),
                       residual=np.array([np.median(normal.residual), 100.0, np.median(normal.residual)]))  # fmt: skip
    assert s.predict(windows).tolist() == [0, 1, 1]
    assert s.predict(normal).mean() < 0.01


def test_f1_threshold_with_tied_scores_is_the_best_a_threshold_can_reach():
    """Residual bytes tie often. The search ranked windows one by one, so it could pick a cut inside
    a run of equal scores that no threshold makes: F1 0.46 where 0.64 was to be had (seed 37)."""
    from sklearn.metrics import f1_score

    for seed in range(60):
        rng = np.random.default_rng(seed)
        y = np.r_[np.zeros(50, int), np.ones(20, int)]
        residual = np.r_[rng.integers(0, 4, 50), rng.integers(2, 6, 20)].astype(float)
        f = Features(residual=residual)
        s = AnomalyScorer("residual").fit(f.subset(y == 0)).fit_f1(f, y)
        best = max(f1_score(y, (residual > t).astype(int)) for t in np.r_[np.unique(residual) - 0.5, residual.max()])
        assert f1_score(y, s.predict(f)) == pytest.approx(best), seed
        assert s.rule == "f1"


def test_f1_threshold_needs_both_classes():
    f = _normal(10)
    with pytest.raises(EdgeaeError, match="needs both normal and anomalous windows"):
        AnomalyScorer().fit(f).fit_f1(f, np.zeros(10))


def test_a_mode_without_its_features_is_named():
    with pytest.raises(EdgeaeError, match="scoring mode 'combined' needs code"):
        AnomalyScorer("combined").fit(Features(residual=np.arange(5.0)))


def test_scorer_file_round_trip_and_mismatch(tmp_path):
    normal, new = _normal(), _normal(100, seed=3)
    s = AnomalyScorer("combined", "far", 0.05).fit(normal)
    ex = _export(tmp_path)
    save(s, tmp_path, ex.model_id)
    back = load(ex)
    np.testing.assert_array_equal(back.score_samples(new), s.score_samples(new))
    assert (back.mode, back.rule, back.q, back.threshold_) == ("combined", "far", 0.05, s.threshold_)
    save(s, tmp_path, 0xABCD)
    with pytest.raises(EdgeaeError, match=re.escape(f"calibrated for model 0000abcd, not this export ({ex.model_id:08x})")):
        load(ex)
    (tmp_path / "scorer.json").write_text(json.dumps({"model_id": f"{ex.model_id:08x}"}))
    with pytest.raises(EdgeaeError, match="not a valid scorer file \\(KeyError: 'mode'\\)"):
        load(ex)
    assert load(_export(tmp_path / "none")) is None


def test_a_sensor_of_its_own_threshold_is_judged_by_it_and_kept_in_the_file(tmp_path):
    s = AnomalyScorer("residual").fit(_normal())
    s.sensor_thresholds_[7] = s.threshold_ * 2
    assert (s.threshold_for(7), s.threshold_for(8)) == (s.threshold_ * 2, s.threshold_)
    ex = _export(tmp_path)
    save(s, tmp_path, ex.model_id)
    assert json.loads((tmp_path / "scorer.json").read_text())["sensor_thresholds"] == {"7": s.threshold_ * 2}
    assert load(ex).sensor_thresholds_ == {7: s.threshold_ * 2}
    s.threshold_, s.sensor_thresholds_[7] = 0.0, 0.0  # most normal residual bytes 0: a threshold fitted as 0 loads
    save(s, tmp_path, ex.model_id)
    assert (load(ex).threshold_, load(ex).sensor_thresholds_) == (0.0, {7: 0.0})


@pytest.mark.parametrize("edit, message", [
    ({"mean": []}, "ValueError: mean and precision must be a finite vector and its square matrix"),
    ({"precision": 1.5}, "ValueError: mean and precision"),
    ({"mean": "residual"}, "ValueError: could not convert"),
    ({"threshold": None}, "TypeError"),
    ({"threshold": float("nan")}, "ValueError: nan is not a finite number"),
    ({"code_limit": 0}, "ValueError: the limits must be positive"),
    ({"mean": [0.0] * 4, "precision": np.eye(4).tolist()}, "ValueError: a code of 4 values, the export's has 3"),
    # a hand edit that scores every code as inf (1e300 squared), or below 0 (faults missed)
    ({"mean": [1e300, 0, 0]}, "ValueError: a mean code beyond -6.4 .. 6.35, all the export's code holds"),
    ({"precision": np.diag([1e300, 1, 1]).tolist()}, "ValueError: precision must be the inverse of a covariance (symmetric, eigenvalues in (0, 1e+06])"),
    ({"precision": (-np.eye(3)).tolist()}, "ValueError: precision must be the inverse of a covariance"),
    ({"precision": [[1, 2, 0], [0, 1, 0], [0, 0, 1]]}, "ValueError: precision must be the inverse of a covariance"),
    ({"sensor_thresholds": {"7": "inf"}}, "ValueError: inf is not a finite number"),
    ({"sensor_thresholds": {"pump": 1.0}}, "ValueError: sensor_thresholds must map sensor ids 0..65535 to thresholds"),
    # found by fuzzing it again: a traceback (AttributeError), a rule or sensor no packet has
    # stored by serve, thresholds that flag every window
    ({"sensor_thresholds": None}, "ValueError: sensor_thresholds must map sensor ids"),
    ({"sensor_thresholds": {"70000": 1.0}}, "ValueError: sensor_thresholds must map sensor ids"),
    ({"sensor_thresholds": {"-1": 1.0}}, "ValueError: sensor_thresholds must map sensor ids"),
    ({"sensor_thresholds": {"\u0663": 1.0}}, "ValueError: sensor_thresholds must map sensor ids"),  # an Arabic-Indic 3, which int() reads
    ({"sensor_thresholds": {"7": -0.5}}, "ValueError: a threshold of -0.5, below every score"),
    ({"threshold": -1}, "ValueError: a threshold of -1.0, below every score"),
    ({"rule": "x"}, "ValueError: mode 'combined', rule 'x' or q None is not one this edgeae writes"),
    ({"rule": None}, "ValueError: mode 'combined', rule None"),
    ({"q": 2}, "ValueError: mode 'combined', rule 'ucl' or q 2 is not one"),
    ({"mode": None}, "ValueError: mode None"),
])  # fmt: skip
def test_a_hand_edited_scorer_file_is_named_when_loaded(tmp_path, edit, message):
    """A scorer.json with a mean or precision of the wrong shape, or a threshold that is not a
    number, loaded, and serve then failed with a numpy traceback on its first packet (found by
    fuzzing the file: 219 of 664 loadable edits did so). Each is named with the file."""
    ex = _export(tmp_path)
    save(AnomalyScorer("combined").fit(_normal()), tmp_path, ex.model_id)
    d = json.loads((tmp_path / "scorer.json").read_text())
    (tmp_path / "scorer.json").write_text(json.dumps({**d, **edit}))
    with pytest.raises(EdgeaeError, match=re.escape(f"not a valid scorer file ({message}")):
        load(ex)


def test_a_scorer_file_nested_too_deeply_is_named(tmp_path):
    """Python's JSON parser recurses: a file nested some thousand levels deep was a RecursionError traceback."""
    ex = _export(tmp_path)
    (tmp_path / "scorer.json").write_text("[" * 100_000)
    with pytest.raises(EdgeaeError, match=re.escape("scorer.json: not a valid scorer file (JSONDecodeError: nested too deeply")):
        load(ex)


def test_verify_checks_the_stored_scorer(tmp_path, small_export, sim_test):
    """verify passed an export whose scorer.json was damaged: serve refused it only at the gateway."""
    from test_cli import assert_one_line_error, edgeae

    export = tmp_path / "export"
    shutil.copytree(small_export, export)
    assert edgeae("calibrate", export, "--data", sim_test).returncode == 0
    assert edgeae("verify", export).returncode == 0
    d = json.loads((export / "scorer.json").read_text())
    (export / "scorer.json").write_text(json.dumps({**d, "threshold": "high"}))
    assert_one_line_error(edgeae("verify", export), "scorer.json: not a valid scorer file (ValueError: could not convert string to float: 'high')")


def test_calibrate_command_stores_what_serve_scores_with(tmp_path, small_export, sim_test):
    """edgeae calibrate, end to end: the report says what the scorer was fitted on, and the
    scorer.json it writes is the one the export's host side loads."""
    from test_cli import edgeae

    from edgeae.data import read_series

    export = tmp_path / "export"
    shutil.copytree(small_export, export)
    proc = edgeae("calibrate", export, "--data", sim_test, "--mode", "combined", "--f1")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["mode"] == "combined" and report["rule"] == "f1" and report["fitted_on"] == "rows labelled normal"
    assert report["auc"] > 0.9 and report["f1"] > 0.8
    assert load(Export.open(export)).threshold_ == report["threshold"]
    auc = report["auc_by_mode"]  # every mode fitted on the same windows: which tells these faults apart
    assert list(auc) == list(HOST_MODES) and auc["combined"] == report["auc"] and auc["code"] < 0.8 < auc["residual"]
    assert "note:" not in proc.stderr  # residual's is within 0.02 of combined's
    proc = edgeae("calibrate", export, "--data", sim_test, "--mode", "code")
    assert json.loads(proc.stdout)["auc_by_mode"] == auc
    assert f"note: on these labelled windows mode combined tells the faults apart better (ROC-AUC {auc['combined']:.3f}, code's " \
           f"{auc['code']:.3f}): calibrate --mode combined" in proc.stderr  # fmt: skip

    unlabelled = tmp_path / "unlabelled.npz"
    s = read_series(sim_test)
    np.savez(unlabelled, data=s.values[s.labels == 0], channels=np.array(s.channels))
    proc = edgeae("calibrate", export, "--data", unlabelled)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["fitted_on"] == "every row (no labels)"
    healthy = tmp_path / "healthy.npz"  # labelled, every label 0: no ROC-AUC, which printed NaN, not JSON
    np.savez(healthy, data=s.values[s.labels == 0], channels=np.array(s.channels), labels=np.zeros((s.labels == 0).sum(), np.int8))
    proc = edgeae("calibrate", export, "--data", healthy)
    report = json.loads(proc.stdout, parse_constant=lambda c: pytest.fail(f"{c} in calibrate's JSON"))
    assert report["fitted_on"] == "rows labelled normal" and {"far", "fp", "tn"} <= set(report) and not {"auc", "f1", "mar"} & set(report)


def test_calibrate_refuses_a_threshold_no_packet_can_exceed(tmp_path, small_export, sim_test):
    """On data rougher than the export's calibration set the UCL lands above the largest error a
    residual byte carries: the scorer was saved and judged every window normal, in silence."""
    from test_cli import assert_one_line_error, edgeae

    from edgeae.data import read_series

    export, rough = tmp_path / "export", tmp_path / "rough.npz"
    shutil.copytree(small_export, export)
    s = read_series(sim_test)
    noisy = s.values + 3 * s.values.std(axis=0) * np.random.default_rng(0).normal(size=s.values.shape)
    np.savez(rough, data=noisy, channels=np.array(s.channels))
    proc = edgeae("calibrate", export, "--data", rough)
    assert_one_line_error(proc, f"{rough}: the threshold by the ucl rule would be")
    assert "at or above the largest score a packet's residual byte gives" in proc.stderr, proc.stderr
    assert_one_line_error(edgeae("calibrate", export, "--data", rough, "--mode", "combined"), "the byte would never flag a window")
    assert not (export / "scorer.json").exists()
    assert edgeae("calibrate", export, "--data", rough, "--mode", "code").returncode == 0  # codes have no such ceiling


def test_calibrate_says_when_the_rows_given_hold_a_fault(tmp_path, small_export, sim_test):
    """--train-rows over a labelled fault fitted it as normal without a word, and when that put the
    UCL out of the residual byte's reach the refusal blamed a rougher machine."""
    from test_cli import assert_one_line_error, edgeae

    from edgeae.data import read_series

    export = tmp_path / "export"
    shutil.copytree(small_export, export)
    labels = read_series(sim_test).labels
    start = int(np.flatnonzero(labels)[0]) - 2000  # 2000 normal rows, then the first fault's
    rows = f"{start}:{start + 4000}"
    proc = edgeae("calibrate", export, "--data", sim_test, "--train-rows", rows, "--rule", "percentile", "--q", "0.5")
    assert proc.returncode == 0, proc.stderr
    faulty = json.loads(proc.stdout)["windows_with_anomalous_rows"]
    assert faulty > 0 and f"note: {faulty} of the " in proc.stderr and "hold rows labelled anomalous" in proc.stderr
    refused = edgeae("calibrate", export, "--data", sim_test, "--train-rows", rows)
    assert_one_line_error(refused, f"windows of rows {rows} hold rows labelled anomalous: fit on rows without faults")
    fine = edgeae("calibrate", export, "--data", sim_test, "--train-rows", f"0:{start}")
    assert fine.returncode == 0 and "windows_with_anomalous_rows" not in fine.stdout and "note:" not in fine.stderr


def test_calibrate_refuses_a_mode_packets_cannot_feed(tmp_path, small_export, sim_test):
    """Mode 'reconstruction' needs raw windows; its scorer.json made serve refuse the export."""
    from test_cli import assert_option_refused, edgeae

    from edgeae.score import calibrate

    proc = edgeae("calibrate", small_export, "--data", sim_test, "--mode", "reconstruction")
    assert_option_refused(proc, "Invalid value for '--mode'")
    with pytest.raises(EdgeaeError, match="its mode is one of residual, code, combined; got 'reconstruction'"):
        calibrate(small_export, sim_test, mode="reconstruction")
    assert not (small_export / "scorer.json").exists()


def test_calibrate_over_several_files_fits_each_files_windows(tmp_path, small_export, sim_test_files):
    """A folder of recordings, or --data again (it took one file): each file windowed on its own,
    none across two; --train-rows picks those rows of each file."""
    from test_cli import edgeae

    from edgeae import data as D
    from edgeae.manifest import Export

    export = tmp_path / "export"
    shutil.copytree(small_export, export)
    ex = Export.open(export)
    files = [D.read_series(sim_test_files / n) for n in ("a.npz", "b.npz")]
    proc = edgeae("calibrate", export, "--data", sim_test_files, no_tf=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["fitted_on"] == "rows labelled normal"
    assert report["normal_windows"] == sum(D.normal_windows_mask(s, ex.window, ex.hop).sum() for s in files)
    proc = edgeae("calibrate", export, "--data", sim_test_files / "a.npz", "--data", sim_test_files / "b.npz", "--train-rows", "0:1000")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["fitted_on"] == "rows 0:1000 of each file"
    assert report["normal_windows"] == 2 * D.rows_windows_mask(files[0], ex.window, ex.hop, (0, 1000)).sum()

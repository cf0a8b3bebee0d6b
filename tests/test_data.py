import numpy as np
import pytest

from edgeae import data as D
from edgeae.errors import EdgeaeError


def write(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_semicolon_time_and_label(tmp_path):
    p = write(tmp_path, "datetime;a;b;anomaly;changepoint\n2020-01-01 00:00:00;1;2;0;0\n2020-01-01 00:00:01;3;4;1;1\n")
    s = D.read_series(p)
    assert s.channels == ["a", "b"]
    np.testing.assert_array_equal(s.values, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(s.labels, [0, 1])


def test_csv_channels_chosen_by_name_in_order(tmp_path):
    p = write(tmp_path, "t,x,y,z\n0,1,2,3\n1,4,5,6\n")
    s = D.read_series(p, channels=["z", "x"])
    np.testing.assert_array_equal(s.values, [[3, 1], [6, 4]])


def test_missing_column_is_named(tmp_path):
    p = write(tmp_path, "x,y\n1,2\n")
    with pytest.raises(EdgeaeError, match=r"missing channel column\(s\) 'z'"):
        D.read_series(p, channels=["x", "z"])


def test_nan_rows_are_an_error_not_dropped(tmp_path):
    p = write(tmp_path, "x,y\n1,2\n,3\n4,nan\n")
    with pytest.raises(EdgeaeError, match=r"2 row\(s\) with NaN or inf values, first at row 1"):
        D.read_series(p)


def test_inf_and_text_cells(tmp_path):
    with pytest.raises(EdgeaeError, match="NaN or inf"):
        D.read_series(write(tmp_path, "x\n1\ninf\n"))
    with pytest.raises(EdgeaeError, match="'abc' is not a number"):
        D.read_series(write(tmp_path, "x\n1\nabc\n"))


def test_ragged_row_and_bad_labels(tmp_path):
    with pytest.raises(EdgeaeError, match="row 2 has 1 fields"):
        D.read_series(write(tmp_path, "x,y\n1,2\n3\n"))
    with pytest.raises(EdgeaeError, match="labels must be 0"):
        D.read_series(write(tmp_path, "x,label\n1,0\n2,2\n"))


def test_missing_and_non_csv_file(tmp_path):
    with pytest.raises(EdgeaeError, match="no such file"):
        D.read_series(tmp_path / "nope.csv")
    p = tmp_path / "bin.csv"
    p.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(EdgeaeError):
        D.read_series(p)


def test_npz(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, data=np.arange(12.0).reshape(6, 2), channels=np.array(["a", "b"]), labels=np.array([0, 0, 0, 1, 1, 0]))
    s = D.read_series(p)
    assert s.channels == ["a", "b"] and s.labels.tolist() == [0, 0, 0, 1, 1, 0]
    np.savez(p, other=np.zeros(3))
    with pytest.raises(EdgeaeError, match="no 'data' array"):
        D.read_series(p)


def test_windows_and_labels():
    s = D.Series(np.arange(20.0).reshape(10, 2), ["a", "b"], labels=np.array([0] * 7 + [1] * 3))
    w = D.windows(s, 4, 2)
    assert w.shape == (4, 4, 2)
    np.testing.assert_array_equal(w[1, :, 0], [4, 6, 8, 10])
    np.testing.assert_array_equal(D.window_labels(s, 4, 2), [0, 0, 1, 1])
    np.testing.assert_array_equal(D.normal_windows_mask(s, 4, 2), [True, True, False, False])


def test_window_longer_than_data():
    s = D.Series(np.zeros((5, 1)), ["a"])
    with pytest.raises(EdgeaeError, match="5 rows, fewer than one window of 8"):
        D.windows(s, 8)


def test_normalizer_round_trip_and_channel_check():
    w = np.random.default_rng(0).normal(3, 2, (50, 8, 2)).astype(np.float32)
    n = D.Normalizer.fit(w, ["a", "b"])
    z = n(w)
    assert abs(z.mean()) < 1e-5 and abs(z.std() - 1) < 1e-3
    n2 = D.Normalizer.from_dict(n.to_dict())
    np.testing.assert_array_equal(n2(w), z)
    with pytest.raises(EdgeaeError, match="do not match the model's channels"):
        n.check_channels(["b", "a"], "x")


def test_fingerprint_changes_with_data():
    a = D.Series(np.zeros((4, 1)), ["a"])
    b = D.Series(np.ones((4, 1)), ["a"])
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == D.Series(np.zeros((4, 1)), ["a"]).fingerprint()

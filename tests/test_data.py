import re

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


def test_a_time_column_other_than_the_recipes_is_still_not_a_channel(tmp_path):
    """A recipe's `time = "datetime"` over a file whose times are in a `timestamp` column of Unix
    seconds: that column was read as a channel (and an ISO one refused as 'not a number')."""
    for cell in ("1583748873", "2020-03-09 10:14:33"):
        p = write(tmp_path, f"timestamp,a,b\n{cell},1,2\n")
        s = D.read_series(p, time="datetime")
        assert s.channels == ["a", "b"] and list(s.times) == [cell]
    assert D.read_series(write(tmp_path, "DateTime,a\n5,1\n"), time="datetime").channels == ["a"]  # in any case, as the label's


def test_a_label_column_of_booleans_as_pandas_writes_them(tmp_path):
    """`df.to_csv()` of a bool column writes True / False: read as 1 / 0 (was refused)."""
    s = D.read_series(write(tmp_path, "a,anomaly\n1,False\n2,True\n3,false\n4,TRUE\n5,0\n"))
    np.testing.assert_array_equal(s.labels, [0, 1, 0, 1, 0])
    with pytest.raises(EdgeaeError, match="label column 'anomaly' must hold 0 or 1 \\(or True / False\\)"):
        D.read_series(write(tmp_path, "a,anomaly\n1,yes\n"))


@pytest.mark.parametrize("arrays, message", [
    ({"data": np.ones((5, 2)) * 1j}, "'data' is not real numbers (complex128)"),  # was read without its imaginary part
    ({"data": np.ones((5, 0))}, "no channel columns ('data' has shape (5, 0))"),  # was 'fewer than one window'
    ({"data": np.ones((5, 2)), "labels": np.zeros((5, 1))}, "labels must be one per row, shape (5,); got (5, 1)"),  # was '5 labels for 5 rows'
    ({"data": np.ones((5, 2)), "times": np.arange(2)}, "times must be one per row, shape (5,); got (2,)"),
    ({"data": np.ones((5, 2)), "channels": np.array("a")}, "'channels' must be one name per column of 'data', shape (2,); got ()"),  # was a TypeError
    ({"data": np.ones((5, 2)), "channels": np.array([["a", "b"]])}, "'channels' must be one name per column of 'data', shape (2,); got (1, 2)"),
    ({"data": np.ones((5, 2)), "labels": np.zeros(5, complex)}, "labels must be 0 (normal) or 1 (anomalous)"),  # was read, with a ComplexWarning
])  # fmt: skip
def test_npz_arrays_refused(tmp_path, arrays, message):
    np.savez(tmp_path / "x.npz", **arrays)
    with pytest.raises(EdgeaeError, match=re.escape(message)):
        D.read_series(tmp_path / "x.npz")


def test_csv_decimal_commas(tmp_path):
    """A European spreadsheet's export: ';' between cells, ',' before decimals (the time cell's own
    comma is not a decimal one). The first column is a number, not a time column."""
    p = write(tmp_path, "a;b;anomaly\n-0,5;1,25e-3;0\n3;4,0;1\n")
    s = D.read_series(p)
    assert s.channels == ["a", "b"] and s.times is None
    np.testing.assert_array_equal(s.values, np.float32([[-0.5, 1.25e-3], [3, 4]]))
    np.testing.assert_array_equal(s.labels, [0, 1])
    p = write(tmp_path, "time\ta\n2020-01-01 00:00:00,5\t0,5\n", "t.tsv")
    s = D.read_series(p)
    assert s.channels == ["a"] and list(s.times) == ["2020-01-01 00:00:00,5"] and s.values[0, 0] == 0.5


@pytest.mark.parametrize("preamble, header", [
    ("sep=;\n", "time;a;b;label"),  # Excel's delimiter line
    ("# logger 7, firmware 1.2\n\n#site: pump; bay 3\n", "time,a,b,label"),  # a logger's metadata
    ("", "# time,a,b,label"),  # numpy.savetxt(header=...): the header is a comment
    ("", "#,time,a,b,label"),  # a spreadsheet's row-number column, named '#'
])
def test_csv_header_after_a_preamble(tmp_path, preamble, header):
    """Before, each was a header of its own: 'sep=;' or the comment a single channel (missing
    channels), and numpy's '# time' a channel of times, which a model would have learnt."""
    from edgeae.device import stream_rows

    d = ";" if ";" in header else ","
    rows = [f"{1.7e9 + i}{d}{i}{d}{2 * i}{d}{i % 2}" for i in range(3)]
    if header.startswith("#,"):
        rows = [f"{i + 1},{r}" for i, r in enumerate(rows)]
    text = preamble + header + "\n" + "\n".join(rows) + "\n"
    s = D.read_series(write(tmp_path, text))
    assert s.channels == ["a", "b"] and s.row_period() == 1.0
    np.testing.assert_array_equal(s.values, [[0, 0], [1, 2], [2, 4]])
    np.testing.assert_array_equal(s.labels, [0, 1, 0])
    streamed = list(stream_rows(text.splitlines(), ["a", "b"], times=True))
    assert [t for t, _ in streamed] == [1.7e9, 1.7e9 + 1, 1.7e9 + 2]
    bad = text.replace(f"{d}2{d}4{d}", f"{d}zz{d}4{d}")  # the third row; its line number counts the preamble
    with pytest.raises(EdgeaeError, match=f"line {len(text.splitlines())} is not a row of numbers"):
        list(stream_rows(bad.splitlines(), ["a", "b"]))


def test_csv_of_comments_only(tmp_path):
    with pytest.raises(EdgeaeError, match="needs a header row and at least one data row"):
        D.read_series(write(tmp_path, "# nothing\n# here\n"))


@pytest.mark.parametrize("cell, message", [("", "NaN"), ("n/a", "'n/a' is not a number"), ("-", "'-' is not a number")])
def test_csv_first_channel_with_a_missing_first_value_is_not_a_time_column(tmp_path, cell, message):
    """A first column whose first cell was not a number became the time column: a channel with a
    missing first value (empty, 'n/a') was dropped without a word, its other rows unread."""
    with pytest.raises(EdgeaeError, match=message):
        D.read_series(write(tmp_path, f"a,b\n{cell},1\n2,3\n"))
    s = D.read_series(write(tmp_path, "when,a\n03/09/2020 10:14,1\n03/09/2020 10:15,2\n"))
    assert s.channels == ["a"] and list(s.times) == ["03/09/2020 10:14", "03/09/2020 10:15"]


@pytest.mark.parametrize("cell", ["0.5", "1.9", "inf", "nan", "x"])
def test_csv_label_that_is_not_0_or_1_is_named(tmp_path, cell):
    """A label of 0.5 or 1.9 was truncated to 0 or 1 without a word, and 'inf' was an OverflowError
    traceback (found by fuzzing the reader)."""
    with pytest.raises(EdgeaeError, match="label column 'label' must hold 0 or 1"):
        D.read_series(write(tmp_path, f"a,label\n1,0\n2,{cell}\n"))


def test_csv_comma_delimited_keeps_its_cells(tmp_path):
    """In a comma-delimited file a quoted '0,5' stays what it is: not a number."""
    with pytest.raises(EdgeaeError, match="row 1, column 'b': '0,5' is not a number"):
        D.read_series(write(tmp_path, 'a,b\n1,"0,5"\n'))


@pytest.mark.parametrize("cell, seconds", [
    ("1700000000", 1_700_000_000.0),
    ("1700000000.25", 1_700_000_000.25),
    ("2020-03-09 10:14:33", 1_583_748_873.0),  # SKAB's form, naive: UTC
    ("2020-03-09T10:14:33Z", 1_583_748_873.0),
    ("2020-03-09T11:14:33.5+01:00", 1_583_748_873.5),
    ("1700000000250", 1_700_000_000.25),  # milliseconds, as IoT platforms export them: a training run knew no rate
    ("1700000000250000", 1_700_000_000.25),  # microseconds
    ("1700000000250000000", 1_700_000_000.25),  # nanoseconds
])
def test_time_cells_in_unix_seconds(cell, seconds):
    assert D.unix_seconds(cell) == pytest.approx(seconds, abs=1e-6)  # nanoseconds: float64 keeps 0.24 us at 2023


@pytest.mark.parametrize("cell, message", [
    ("03/09/2020 10:14", "neither Unix seconds nor an ISO 8601"),
    ("17000000000", r"not in Unix seconds 0..2\^32"),  # after 2106 in seconds, before 1973 in milliseconds
    ("1e20", r"not in Unix seconds 0..2\^32"),
    ("1969-12-31 23:59:59", r"not in Unix seconds 0..2\^32"),
])
def test_time_cells_refused(cell, message):
    with pytest.raises(ValueError, match=message):
        D.unix_seconds(cell)


def test_series_keeps_its_times_through_select_rows_and_highpass(tmp_path):
    p = write(tmp_path, "timestamp,a,b\n1700000000,1,2\n1700000001,3,4\n1700000003,5,6\n")
    s = D.read_series(p)
    assert s.unix_times().tolist() == [1_700_000_000, 1_700_000_001, 1_700_000_003]
    assert D.highpass(s.select(["b"]).rows(1, None), {"b": 10.0}).unix_times().tolist() == [1_700_000_001, 1_700_000_003]
    assert s.select(["a", "b"]) is s and s.select(["b", "a"]).values.tolist() == [[2, 1], [4, 3], [6, 5]]  # its own: not copied
    assert D.read_series(write(tmp_path, "a,b\n1,2\n")).unix_times() is None  # no time column
    bad = D.read_series(write(tmp_path, "time,a\n2020-01-01,1\nlater,2\n"))  # read for training: the cells are not needed
    with pytest.raises(EdgeaeError, match=r"d.csv: row 2: time 'later' is neither"):
        bad.unix_times()
    np.savez(tmp_path / "d.npz", data=np.zeros((2, 1)), times=np.array([1e9, 1e9 + 2]))
    assert D.read_series(tmp_path / "d.npz").unix_times().tolist() == [1e9, 1e9 + 2]


def test_row_period_is_the_median_time_step(tmp_path):
    """What an export keeps of its training data's rate: a logger's gap or jitter does not move
    it; times that say nothing of it (none, unreadable, not advancing) give None, not an error."""
    steps = [0.001] * 50 + [3.0] + [0.0011, 0.0009] * 10  # a gap of 3 s, some jitter
    times = "\n".join(f"{1_700_000_000 + t:.4f},{i}" for i, t in enumerate(np.cumsum([0.0, *steps])))
    assert D.read_series(write(tmp_path, "time,a\n" + times + "\n")).row_period() == 0.001
    iso = D.read_series(write(tmp_path, "time,a\n2026-01-01T00:00:00.000Z,1\n2026-01-01T00:00:00.002Z,2\n"))
    assert iso.row_period() == 0.002
    for text in ("a\n1\n2\n", "time,a\n2020-01-01,1\nlater,2\n", "time,a\n1700000000,1\n1700000000,2\n1700000000,3\n"):
        assert D.read_series(write(tmp_path, text)).row_period() is None
    D.check_row_period(0.00105, 0.001, "x")  # 5 % off: a logger's clock
    D.check_row_period(None, 0.001, "x")
    D.check_row_period(0.002, None, "x")
    with pytest.raises(EdgeaeError, match=r"^x: rows 0.002 s apart \(500 Hz\), the export's were 0.001 s apart \(1000 Hz\)"):
        D.check_row_period(0.002, 0.001, "x")


def test_rows_newest_first_are_refused(tmp_path):
    """A recording saved newest first (as a time-series database exports it) was windowed as it
    came: every window ran the signal backwards, and train, verify and encode said nothing."""
    s = D.read_series(write(tmp_path, "time,a\n" + "".join(f"{1_700_000_010 - x},{x}\n" for x in range(10))))
    for read in (s.row_period, lambda: D.time_jumps(s)):
        with pytest.raises(EdgeaeError, match=r"d.csv: the rows' times run backwards \(newest first\?\): sort the rows oldest first"):
            read()


def test_time_jumps_are_found_forwards_and_back(tmp_path):
    """Recordings joined end to end, or a clock set back (NAB's machine temperature goes back 55
    minutes once), leave windows that join two stretches of signal."""
    t = [0, 1, 2, 3, 63, 64, 65, 5, 6, 7]  # a jump of a minute, then back to 5
    s = D.read_series(write(tmp_path, "time,a\n" + "".join(f"{1_700_000_000 + x},{i}\n" for i, x in enumerate(t))))
    assert D.time_jumps(s) == {"count": 2, "step_s": 1.0, "largest_s": 60.0, "row": 5}
    assert D.time_jumps(D.read_series(write(tmp_path, "time,a\n1700000000,1\n1700000001,2\n"))) == {"count": 0, "step_s": 1.0}
    for text in ("a\n1\n2\n", "time,a\n2020-01-01,1\nlater,2\n"):
        assert D.time_jumps(D.read_series(write(tmp_path, text))) is None


def test_cut_at_time_jumps(tmp_path):
    """A recording with gaps, one file per stretch (`edgeae cut`): every row kept in order, labels
    and times with their rows, and each file read back by a recipe naming its columns otherwise."""
    import json

    from test_cli import assert_one_line_error, edgeae

    t = [0, 1, 2, 3, 63, 64, 65, 66, 5, 6, 7, 7, 8]  # a minute's gap, a clock set back, a step that does not advance
    rows = "".join(f"{1_700_000_000 + x};{i};{int(i in (5, 6))}\n" for i, x in enumerate(t))
    src = write(tmp_path, "datetime;a;anomaly\n" + rows, "log.csv")
    s = D.read_series(src)
    pieces = D.cut_at_jumps(s)
    assert [len(p) for p in pieces] == [4, 4, 3, 2] and [p.source for p in pieces][1] == f"{src}[4:8]"
    assert [D.time_jumps(p)["count"] for p in pieces] == [0, 0, 0, 0]

    proc = edgeae("cut", src, "--out", tmp_path / "cut", "--min-rows", "3", no_tf=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{src}: 13 rows, 3 time jumps: 3 files of 3-4 rows written to {tmp_path / 'cut'}; " \
                                  "1 stretch(es) shorter than 3 rows left out (2 rows, listed in cut.json)"  # fmt: skip
    m = json.loads((tmp_path / "cut" / "cut.json").read_text())
    assert [f["file"] for f in m["files"]] == ["log-001.npz", "log-002.npz", "log-003.npz"]
    assert [f["rows"] for f in m["files"]] == [[0, 4], [4, 8], [8, 11]] and m["left_out"][0]["rows"] == [11, 13]
    assert m["files"][1]["first"] == "1700000063" and m["jumps"] == 3
    back = D.read_files(tmp_path / "cut", lambda f: D.read_series(f, ["a"], label="anomaly", time="datetime"))  # as models/skab.toml names them
    np.testing.assert_array_equal(np.concatenate([b.values[:, 0] for b in back]), np.arange(11))
    np.testing.assert_array_equal(np.concatenate([b.labels for b in back]), s.labels[:11])
    assert [D.time_jumps(b) for b in back] == [{"count": 0, "step_s": 1.0}] * 3
    proc = edgeae("cut", src, "--out", tmp_path / "cut", "--min-rows", "4", no_tf=True)  # replaces its own earlier output
    assert ": 2 files of 4 rows written to" in proc.stdout and len(list((tmp_path / "cut").glob("*.npz"))) == 2

    untimed = write(tmp_path, "a\n1\n2\n", "u.csv")
    assert_one_line_error(edgeae("cut", untimed, "--out", tmp_path / "x", no_tf=True), "u.csv: no time column: nothing to tell where the rows jump")
    assert_one_line_error(edgeae("cut", src, "--out", tmp_path / "x", "--min-rows", "5", no_tf=True),
                          "log.csv: no stretch between its time jumps has 5 rows (the longest: 4)")  # fmt: skip
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert_one_line_error(edgeae("cut", src, "--out", tmp_path / "mine", no_tf=True), "exists and is not an earlier output of this command (no cut.json)")
    assert not (tmp_path / "x").exists() and (tmp_path / "mine" / "notes.txt").read_text() == "keep"


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
    with pytest.raises(EdgeaeError, match=r"2 row\(s\) with NaN, inf or values beyond float32.s range \(3.4e38\), first at row 2 in channel 'x'"):
        D.read_series(p)


def test_inf_and_text_cells(tmp_path):
    with pytest.raises(EdgeaeError, match="NaN, inf or values beyond"):
        D.read_series(write(tmp_path, "x\n1\ninf\n"))
    with pytest.raises(EdgeaeError, match="values beyond float32's range"):
        D.read_series(write(tmp_path, "x\n1\n1e300\n"))
    with pytest.raises(EdgeaeError, match="'abc' is not a number"):
        D.read_series(write(tmp_path, "x\n1\nabc\n"))


def test_ragged_row_and_bad_labels(tmp_path):
    with pytest.raises(EdgeaeError, match="row 2 has 1 fields"):
        D.read_series(write(tmp_path, "x,y\n1,2\n3\n"))
    with pytest.raises(EdgeaeError, match="label column 'label' must hold 0 or 1"):
        D.read_series(write(tmp_path, "x,label\n1,0\n2,2\n"))


def test_duplicate_column_names_are_an_error(tmp_path):
    """With every column as a channel, the second 'a' was read as a copy of the first."""
    p = write(tmp_path, "a,b,a\n1,2,3\n4,5,6\n")
    with pytest.raises(EdgeaeError, match="column name\\(s\\) 'a' appear more than once"):
        D.read_series(p)
    np.savez(tmp_path / "d.npz", data=np.arange(6.0).reshape(2, 3), channels=np.array(["a", "b", "a"]))
    with pytest.raises(EdgeaeError, match="column name\\(s\\) 'a' appear more than once"):
        D.read_series(tmp_path / "d.npz", ["a", "b"])


@pytest.mark.parametrize("cell", ["9" * 200_000, '"' + "x" * 200_000 + '"'])
def test_a_field_longer_than_the_csv_module_takes_is_named(tmp_path, cell):
    """A cell over 128 KB (a log line pasted into a column, a quote left open) was the csv module's
    Error traceback, read from a file or streamed to encode."""
    from edgeae.device import stream_rows

    text = "a,b\n" + "".join(f"{i},{i}\n" for i in range(5)) + f"1,{cell}\n"
    with pytest.raises(EdgeaeError, match=re.escape("d.csv: not a CSV of numbers (field larger than field limit (131072))")):
        D.read_series(write(tmp_path, text))
    with pytest.raises(EdgeaeError, match=re.escape("<stdin>: line 7 is not a row of numbers (field larger than field limit (131072))")):
        list(stream_rows(text.splitlines(), ["a", "b"]))


@pytest.mark.parametrize("head", ["a," + "b" * 200_000, "# " + '"' + "x" * 200_000 + "\n1,2"])
def test_a_header_longer_than_the_csv_module_takes_is_named_in_a_stream(tmp_path, head):
    """The same in a header, or in a comment read as one, streamed to encode: it was the csv
    module's Error traceback (a file's was already named, by the test above's reader)."""
    from edgeae.device import stream_rows

    with pytest.raises(EdgeaeError, match=re.escape("<stdin>: the lines before the first row are not a CSV header (field larger")):
        list(stream_rows(f"{head}\n1,2\n".splitlines(), ["a", "b"]))


def test_missing_and_non_csv_file(tmp_path):
    with pytest.raises(EdgeaeError, match="nope.csv: no such CSV or .npz file"):
        D.read_series(tmp_path / "nope.csv")
    p = tmp_path / "bin.csv"
    p.write_bytes(b"\x00\x01\x02\xff")
    with pytest.raises(EdgeaeError, match="bin.csv: not a text CSV file$"):
        D.read_series(p)


def test_the_label_column_is_found_in_any_case(tmp_path):
    """A column 'Anomaly' was not taken for the labels: with the recipe's channels, training took
    in the faulty rows; without, it trained on the labels as a channel. In an .npz, labels were
    looked for under the recipe's label column's name alone ('anomaly'), or 'labels'."""
    for name in ("Anomaly", "LABEL", "is_anomaly"):
        s = D.read_series(write(tmp_path, f"x,y,{name}\n1,2,0\n3,4,1\n"))
        assert s.channels == ["x", "y"] and s.labels.tolist() == [0, 1]
        np.savez(tmp_path / "d.npz", data=np.ones((2, 2)), channels=np.array(["x", "y"]), **{name: np.array([0, 1])},
                 time=np.array([1.0, 2.0]))  # fmt: skip
        s = D.read_series(tmp_path / "d.npz", label="anomaly")  # as models/skab.toml names it
        assert s.labels.tolist() == [0, 1] and s.times.tolist() == [1.0, 2.0]
    np.savez(tmp_path / "d.npz", data=np.ones((2, 2)), stamp=np.array([1.0, 2.0]))  # a recipe's `time = "stamp"`, as a CSV's column
    assert D.read_series(tmp_path / "d.npz", time="stamp").times.tolist() == [1.0, 2.0]


def test_a_csv_not_in_utf8_is_refused_at_its_line(tmp_path):
    """A spreadsheet's plain "CSV" is Windows-1252: a degree sign in a row 3,000 lines down was
    "not a text CSV file", which sent the user looking for a broken file."""
    p = tmp_path / "t.csv"
    p.write_bytes("x,y\n".encode() + b"1,2\n" * 3000 + "5,6 \u00b0C\n".encode("cp1252"))
    with pytest.raises(EdgeaeError, match=r"t.csv: line 3002 is not UTF-8 text \(byte 0xb0\): save or send it as UTF-8"):
        D.read_series(p)
    p.write_text("x\ty\n1\t2\n", encoding="utf-16")  # a spreadsheet's "Unicode text", with its byte-order mark
    with pytest.raises(EdgeaeError, match="t.csv: UTF-16 text"):
        D.read_series(p)


def test_columns_without_a_name_are_no_channels(tmp_path):
    """A spreadsheet writes a delimiter after the last column when a row once went further: the
    empty names were 'a column name appearing more than once', or one empty channel all NaN. And
    pandas' to_csv writes the row index under no name: it was a channel."""
    for tail in (",", ",,"):
        s = D.read_series(write(tmp_path, f"x,y{tail}\n1,2{tail}\n3,4{tail}\n"))
        assert s.channels == ["x", "y"] and s.values.tolist() == [[1, 2], [3, 4]]
    s = D.read_series(write(tmp_path, ",x,y,anomaly\n0,1,2,0\n1,3,4,1\n"))
    assert s.channels == ["x", "y"] and s.values.tolist() == [[1, 2], [3, 4]] and s.labels.tolist() == [0, 1]


def test_npz(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, data=np.arange(12.0).reshape(6, 2), channels=np.array(["a", "b"]), labels=np.array([0, 0, 0, 1, 1, 0]))
    s = D.read_series(p)
    assert s.channels == ["a", "b"] and s.labels.tolist() == [0, 0, 0, 1, 1, 0]
    np.savez(p, data=np.zeros((6, 2)), channels=np.array([b"a", b"b"]))  # as h5py and Python 2 saved names: was "b'a'"
    assert D.read_series(p).channels == ["a", "b"]
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


def test_highpass_by_hand_and_streamed():
    """level starts at the first row; y = x - level, then level += (x - level) / tau."""
    s = D.Series(np.array([[2.0, 5.0], [4.0, 6.0], [4.0, 7.0], [0.0, 8.0]]), ["a", "b"])
    out = D.highpass(s, {"a": 2.0})
    np.testing.assert_array_equal(out.values[:, 0], [0.0, 2.0, 1.0, -3.5])  # levels 2, 2, 3, 3.5
    np.testing.assert_array_equal(out.values[:, 1], s.values[:, 1])  # not named: unchanged
    streamed = np.array(list(D.highpass_rows(iter(s.values), s.channels, {"a": 2.0})))
    np.testing.assert_array_equal(streamed, out.values)
    assert D.highpass(s, {}) is s
    with pytest.raises(EdgeaeError, match="no channel\\(s\\) 'c' to high-pass"):
        D.highpass(s, {"c": 5.0})


def test_highpass_removes_slow_drift_and_keeps_fast_changes():
    t = np.arange(3000.0)
    drift, step = 0.01 * t, np.where((t >= 2000) & (t < 2010), 5.0, 0.0)
    y = D.highpass(D.Series(np.c_[drift + step], ["temp"]), {"temp": 60.0}).values[:, 0]
    assert abs(y[1990]) < 0.7 and y[1990] == pytest.approx(0.6, abs=0.01)  # ramp: settles at slope x tau
    assert y[2009] > 4.0  # a 10-row step survives


def test_normalizer_carries_the_highpass():
    w = np.random.default_rng(0).normal(3, 2, (50, 8, 2)).astype(np.float32)
    plain = D.Normalizer.fit(w, ["a", "b"])
    assert "highpass" not in plain.to_dict()  # exports without a filter keep their manifest
    n = D.Normalizer.from_dict(D.Normalizer.fit(w, ["a", "b"], {"b": 30}).to_dict())
    assert n.highpass == {"b": 30.0}
    s = D.Series(np.random.default_rng(1).normal(size=(40, 2)), ["a", "b"])
    np.testing.assert_array_equal(n.windows(s, 8, 4), n(D.windows(D.highpass(s, {"b": 30.0}), 8, 4)))
    np.testing.assert_array_equal(np.array(list(n.prepare_rows(iter(s.values)))), n.prepare(s).values)


def test_fingerprint_changes_with_data():
    a = D.Series(np.zeros((4, 1)), ["a"])
    b = D.Series(np.ones((4, 1)), ["a"])
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == D.Series(np.zeros((4, 1)), ["a"]).fingerprint()

"""The device loop: the same windows as training, the same codes as the int8 encoder."""

import array
import fcntl
import json
import re
import signal
import subprocess
import sys
import termios
import time

import numpy as np
import pytest

from conftest import ROOT, Stderr
from edgeae import data as D
from edgeae import device, simulate, wire
from edgeae.errors import EdgeaeError
from edgeae.manifest import Export
from edgeae.pipeline import Pipeline
from test_cli import assert_one_line_error, assert_option_refused


@pytest.mark.parametrize("length, hop", [(32, 8), (5, 5), (4, 7), (6, 1)])
def test_stream_windows_match_training_windows(length, hop):
    s = D.Series(np.arange(120.0).reshape(60, 2), ["a", "b"])
    streamed = list(device.stream_windows(iter(s.values), length, hop))
    expected = D.windows(s, length, hop)
    assert len(streamed) == len(expected)
    for (last, w), e in zip(streamed, expected):
        np.testing.assert_array_equal(w, e)
        np.testing.assert_array_equal(s.values[last], e[-1])


def _csv(series, path):
    np.savetxt(path, series.values, delimiter=",", header=",".join(series.channels), comments="", fmt="%.6g")
    return path


@pytest.mark.parametrize("delimiter, decimal, bom, newline", [(",", ".", "", "\n"), (";", ",", "", "\n"), ("\t", ".", "", "\n"),
                                                             ("\t", ",", "", "\n"), (",", ".", "\ufeff", "\r\n")])  # fmt: skip
def test_stdin_stream_gives_the_same_packets_as_the_file(tmp_path, small_export, delimiter, decimal, bom, newline):
    """Also for tab- and semicolon-delimited rows with decimal commas, as a spreadsheet in a European
    locale writes them: stdin knew only ';' and ',' (a tab-delimited header was one missing column),
    and neither reader took '0,5' for a number. And after a byte-order mark, which a spreadsheet's
    "CSV UTF-8" starts with: both took it for part of the first column's name ("missing channel
    column 'vib_x' (have: \ufeffvib_x, ...)"). Its lines may end in CR LF."""
    s = simulate.machine(seconds=2, seed=4)
    reference = _csv(s, tmp_path / "s.csv")
    text = reference.read_text()
    csv = tmp_path / "t.csv"
    csv.write_bytes((bom + text.replace(",", delimiter).replace(".", decimal).replace("\n", newline)).encode())
    args = [sys.executable, "-m", "edgeae", "encode", str(small_export), "--sensor", "5", "--t0", "0", "--period", "0.001"]
    expected = subprocess.run(args + ["--data", str(reference), "--out", "-"], capture_output=True, cwd=ROOT)
    from_file = subprocess.run(args + ["--data", str(csv), "--out", "-"], capture_output=True, cwd=ROOT)
    from_stdin = subprocess.run(args + ["--data", "-", "--out", "-"], input=csv.read_bytes(), capture_output=True, cwd=ROOT)
    assert from_file.returncode == 0 and from_stdin.returncode == 0, from_file.stderr + from_stdin.stderr
    assert from_file.stdout == from_stdin.stdout == expected.stdout and len(from_file.stdout) > 0
    assert b"packets of 24 bytes (fits LoRaWAN's 51-byte payload" in from_file.stderr  # no key: no tag


def test_a_live_stream_sends_each_packet_as_its_window_completes(tmp_path, small_export):
    """From stdin, packets waited for 64 windows (a minute of a 1 Hz sensor) and for the end of stdout's buffer."""
    import select

    ex = Export.open(small_export)
    lines = _csv(simulate.machine(seconds=1, seed=4), tmp_path / "s.csv").read_text().splitlines(keepends=True)
    proc = subprocess.Popen([sys.executable, "-m", "edgeae", "encode", str(small_export), "--sensor", "5", "--t0", "0",
                             "--data", "-", "--out", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)  # fmt: skip
    try:
        proc.stdin.write("".join(lines[: 1 + ex.window + ex.hop]).encode())  # the header, then rows for two windows
        proc.stdin.flush()
        size = 2 + wire.packet_size(ex.manifest["code_size"], True, False)
        got = b""
        while len(got) < 2 * size and select.select([proc.stdout], [], [], 60)[0]:  # stdin stays open
            got += proc.stdout.read1(2 * size - len(got))
        assert [wire.decode(p).seq for p in wire.unframe(got)] == [0, 1]
    finally:
        proc.stdin.close()
        proc.wait(60)
    assert proc.returncode == 0


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_rows_after_the_last_window_are_reported(tmp_path, small_export, source):
    """Rows that fill no window are not encoded; encode says how many, not only how many packets."""
    ex = Export.open(small_export)
    rows = ex.window + 3 * ex.hop + 1  # 4 windows, then 1 row
    csv = _csv(simulate.machine(seconds=2, seed=4).rows(0, rows), tmp_path / "s.csv")
    args = [sys.executable, "-m", "edgeae", "encode", str(small_export), "--sensor", "5", "--out", "-"]
    if source == "file":
        proc = subprocess.run(args + ["--data", str(csv)], capture_output=True, cwd=ROOT)
    else:
        proc = subprocess.run(args + ["--data", "-"], input=csv.read_bytes(), capture_output=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.decode().strip().endswith(f"; the last 1 row filled no window of {ex.window} and went unsent")
    assert b": 4 packets of" in proc.stderr


def test_a_folder_is_replayed_file_by_file(tmp_path, small_export):
    """encode read one file: a logger's files (or `edgeae cut`'s) were joined by hand, and windows
    spanned the joins. Now they are replayed one after another, each windowed on its own, the
    sequence numbers running on, each packet stamped with its window's time, and the rows left at
    the end of each file counted."""
    ex = Export.open(small_export)
    folder = tmp_path / "logger"
    folder.mkdir()
    s = simulate.machine(seconds=2, seed=4)
    a, b = s.rows(0, ex.window + 3 * ex.hop + 1), s.rows(1000, 1000 + ex.window + 2 * ex.hop + 2)  # 4 windows and 1 row; 3 and 2
    simulate.save(a, folder / "a.csv", start=1_700_000_000)
    simulate.save(b, folder / "b.csv", start=1_700_003_600)  # an hour later
    args = [sys.executable, "-m", "edgeae", "encode", str(small_export), "--sensor", "5", "--out", "-"]
    proc = subprocess.run(args + ["--data", str(folder)], capture_output=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    packets = [wire.decode(p) for p in wire.unframe(proc.stdout)]
    alone = [wire.decode(p) for f in ("a.csv", "b.csv") for p in device.Encoder(small_export, 5).packets(device.Source(str(folder / f), ex))]
    assert [p.code for p in packets] == [p.code for p in alone] and [p.seq for p in packets] == list(range(7))
    last = [ex.window - 1 + i * ex.hop for i in range(4)] + [ex.window - 1 + i * ex.hop for i in range(3)]
    assert [p.timestamp for p in packets] == [int(1_700_000_000 + 3600 * (i >= 4) + r / 1000) for i, r in enumerate(last)]
    assert proc.stderr.decode().strip().endswith(f"; 3 rows filled no window of {ex.window} and went unsent (the ends of the files)")

    np.savetxt(folder / "c.csv", b.values, delimiter=",", header=",".join(b.channels), comments="", fmt="%.6g")  # no time column
    assert_one_line_error(_text(subprocess.run(args + ["--data", str(folder)], capture_output=True, cwd=ROOT)),
                          "c.csv: no time column, unlike ")  # fmt: skip
    stamped = subprocess.run(args + ["--data", str(folder), "--t0", "0"], capture_output=True, cwd=ROOT)
    assert stamped.returncode == 0 and len(list(wire.unframe(stamped.stdout))) == 10
    np.savetxt(folder / "c.csv", b.values[:1], delimiter=",", header=",".join(b.channels), comments="", fmt="%.6g")
    short = subprocess.run(args + ["--data", str(folder), "--t0", "0"], capture_output=True, cwd=ROOT)
    assert_one_line_error(_text(short), "c.csv: 1 rows, fewer than one window of")
    assert short.stdout == b""
    assert_one_line_error(_text(subprocess.run(args + ["--data", "-", "--data", str(folder)], capture_output=True, cwd=ROOT)),
                          "--data -: stdin is the one stream, without other --data")  # fmt: skip


def test_every_sends_one_window_a_span_of_time(tmp_path, small_export):
    """encode sent a packet every hop, tens a second for a vibration sensor, where a LoRaWAN device
    may send one every few minutes; --every sends one window per span, skipping the others, with
    consecutive sequence numbers, and the summary says what the radio allows."""
    ex = Export.open(small_export)
    csv = _csv(simulate.machine(seconds=20, seed=4), tmp_path / "s.csv")  # rows 1 ms apart, stamped so below
    args = [sys.executable, "-m", "edgeae", "encode", str(small_export), "--sensor", "5", "--out", "-", "--t0", "1700000000",
            "--period", "0.001", "--data", str(csv)]  # fmt: skip
    every = subprocess.run(args + ["--every", "5"], capture_output=True, cwd=ROOT)
    assert every.returncode == 0, every.stderr
    packets = [wire.decode(p) for p in wire.unframe(every.stdout)]
    first = (ex.window - 1) // 1000  # the first window ends in the first second
    assert [(p.seq, p.timestamp) for p in packets] == [(i, 1_700_000_000 + first + 5 * i) for i in range(4)]
    all_of_them = subprocess.run(args, capture_output=True, cwd=ROOT)
    assert [wire.decode(p).code for p in wire.unframe(all_of_them.stdout)][:: 5000 // ex.hop][:4] == [p.code for p in packets]
    said = every.stderr.decode().splitlines()
    assert said[-2].startswith("sensor 5: 4 packets of 24 bytes") and "went unsent" not in said[-2]
    assert said[-1].startswith("radio: a 24-byte packet every 5 s, ") and "duty cycle allows one every" in said[-1]
    assert all_of_them.stderr.decode().splitlines()[-1].startswith(f"radio: a 24-byte packet every {ex.hop} ms, ")
    guessed = subprocess.run(args[:-6] + ["--data", str(csv), "--every", "5"], capture_output=True, cwd=ROOT)  # no times, no rate
    assert_one_line_error(_text(guessed), "--every needs the rows' times: a time column in the data, --period, or an export")
    assert guessed.stdout == b""


def test_packet_codes_are_the_int8_encoders(tmp_path, small_export):
    ex = Export.open(small_export)
    s = simulate.machine(seconds=2, seed=4)
    enc = device.Encoder(small_export, 1)
    packets = [wire.decode(p, None, {ex.model_id}) for p in enc.packets(device.windows_from_series(s, ex))]
    pipe = Pipeline(ex)
    codes = pipe.codes_int8(pipe.norm(D.windows(s, ex.window, ex.hop)))
    assert [p.code for p in packets] == [tuple(int(v) for v in c) for c in codes]
    assert [p.seq for p in packets] == list(range(len(codes)))


def test_bad_stream_lines(tmp_path, small_export):
    args = [sys.executable, "-m", "edgeae", "encode", str(small_export), "--sensor", "1", "--data", "-", "--out", "-"]
    head = ",".join(simulate.CHANNELS) + "\n"
    bad = subprocess.run(args, input=(head + "1,2,3,4\n1,x,3,4\n").encode(), capture_output=True, cwd=ROOT)
    assert_one_line_error(_text(bad), "line 3 is not a row of numbers", stream=True)
    nan = subprocess.run(args, input=(head + "1,2,nan,4\n").encode(), capture_output=True, cwd=ROOT)
    assert_one_line_error(_text(nan), "line 2 has NaN, inf or values beyond", stream=True)
    big = subprocess.run(args, input=(head + "1,2,3,4\n1,2,1e300,4\n").encode(), capture_output=True, cwd=ROOT)
    assert_one_line_error(_text(big), "line 3 has NaN, inf or values beyond float32's range", stream=True)
    assert "Warning" not in big.stderr  # the overflow is reported, not warned about as well
    shifted = subprocess.run(args, input=(head + "1,2,3,4\n1,2,3,4\n1,2,3,4,5\n").encode(), capture_output=True, cwd=ROOT)
    assert_one_line_error(_text(shifted), "line 4 has 5 fields, the header has 4", stream=True)  # was: read, the columns shifted
    short = subprocess.run(args, input=(head.replace(",temperature", ",temperature,label") + "1,2,3,4,0\n1,2,3,4\n").encode(), capture_output=True, cwd=ROOT)
    assert_one_line_error(_text(short), "line 3 has 4 fields, the header has 5", stream=True)  # as the file reader says
    cols = subprocess.run(args, input=b"vib_x,vib_y\n1,2\n", capture_output=True, cwd=ROOT)
    assert_one_line_error(_text(cols), "missing channel column(s) 'current', 'temperature'", stream=True)
    twice = subprocess.run(args, input=(head.strip() + ",vib_x\n1,2,3,4,5\n").encode(), capture_output=True, cwd=ROOT)
    assert_one_line_error(_text(twice), "column name(s) 'vib_x' appear more than once", stream=True)  # was: the first one, unsaid
    latin = subprocess.run(args, input=head.encode() + b"1,2,3,4\n1,2,3,4 \xb0C\n", capture_output=True, cwd=ROOT)
    assert_one_line_error(_text(latin), "<stdin>: line 3 is not UTF-8 text (byte 0xb0)", stream=True)  # was: a traceback
    rows = "".join(f"{1_700_000_000 + 100 - i * 0.001:.3f},1,2,3,4\n" for i in range(100))  # newest first
    back = subprocess.run(args, input=("time," + head + rows).encode(), capture_output=True, cwd=ROOT)
    assert_one_line_error(_text(back), "<stdin>: the rows' times run backwards (newest first?)", stream=True)
    assert back.stdout == b""  # refused before the first window's packet


def test_packets_carry_the_datas_own_times(tmp_path, small_export):
    """A recording was stamped now + one second per row whatever its time column said; serve then
    stored its windows at the time of the replay."""
    ex = Export.open(small_export)
    s = simulate.machine(seconds=1, seed=4)
    start = 1_583_748_873  # 2020-03-09 10:14:33 UTC, in SKAB's form below; rows 0.5 s apart
    stamps = [time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start + i // 2)) + (".5" if i % 2 else "") for i in range(len(s))]
    lines = ["datetime;" + ";".join(s.channels)] + [f"{t};" + ";".join(f"{v:.6g}" for v in row) for t, row in zip(stamps, s.values)]
    csv = tmp_path / "s.csv"
    csv.write_text("\n".join(lines) + "\n")
    args = [sys.executable, "-m", "edgeae", "encode", str(small_export), "--sensor", "5", "--out", "-"]
    from_file = subprocess.run(args + ["--data", str(csv)], capture_output=True, cwd=ROOT)
    from_stdin = subprocess.run(args + ["--data", "-"], input=csv.read_bytes(), capture_output=True, cwd=ROOT)
    assert from_file.returncode == 0 and from_file.stdout == from_stdin.stdout, from_stdin.stderr
    assert b"stamped with the data's times" in from_file.stderr
    packets = [wire.decode(p) for p in wire.unframe(from_file.stdout)]
    last_rows = [k * ex.hop + ex.window - 1 for k in range(len(packets))]
    assert [p.timestamp for p in packets] == [start + r // 2 for r in last_rows]  # whole seconds, as a packet carries
    by_row = subprocess.run(args + ["--data", str(csv), "--t0", "100", "--period", "2"], capture_output=True, cwd=ROOT)
    assert [wire.decode(p).timestamp for p in wire.unframe(by_row.stdout)] == [100 + 2 * r for r in last_rows]
    assert b"stamped" not in by_row.stderr
    csv.write_text(csv.read_text().replace(stamps[20], "03/09/2020"))
    for data, where in ((str(csv), "row 21"), ("-", "line 22")):
        bad = subprocess.run(args + ["--data", data], input=csv.read_bytes(), capture_output=True, cwd=ROOT)
        assert_one_line_error(_text(bad), f"{where}: time '03/09/2020' is neither Unix seconds nor an ISO 8601 date and time (--t0 stamps by row instead)", stream=True)


def test_a_live_streams_times_survive_batching(tmp_path, small_export, monkeypatch):
    """Through the API, a live stream's windows may be run 64 at a time: the row times kept for
    them were those of the last window only, and the first packet's lookup failed (KeyError)."""
    import io

    ex = Export.open(small_export)
    s = simulate.machine(seconds=1, seed=4)
    lines = ["time," + ",".join(s.channels)] + [f"{1_700_000_000 + i}," + ",".join(f"{v:.6g}" for v in row) for i, row in enumerate(s.values)]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(("\n".join(lines) + "\n").encode())))
    source = device.Source("-", ex, times=True)
    packets = [wire.decode(p) for p in device.Encoder(small_export, 1).packets(source, 64, source.time_of)]
    assert len(packets) > 64 and source.timed
    assert [p.timestamp for p in packets] == [1_700_000_000 + k * ex.hop + ex.window - 1 for k in range(len(packets))]


@pytest.mark.parametrize("kwargs, message", [
    ({"sensor": 70000}, "--sensor must be 0..65535"),
    ({"t0": float("nan")}, "--t0 must be Unix seconds"),
    ({"t0": -1e12}, "--t0 must be Unix seconds"),
    ({"period": 0.0}, "--period must be a positive number"),
    ({"period": float("inf")}, "--period must be a positive number"),
    ({"start_seq": -5}, "--start-seq must be 0..2^32-1"),
])  # fmt: skip
def test_encoder_refuses_what_a_packet_header_cannot_carry(small_export, kwargs, message):
    """NaN t0 crashed mid-stream; a negative t0 or sequence wrapped silently; period 0 stamped every packet alike."""
    with pytest.raises(EdgeaeError, match=re.escape(message)):
        device.Encoder(small_export, **{"sensor": 1, **kwargs})


def test_seq_file_carries_the_count_across_runs(tmp_path, small_export):
    """encode started every run at sequence number 0, so a restarted device loop, or a second
    recording of the same sensor, had every packet rejected by serve as replayed_seq."""
    from edgeae.serve import Server

    def run(seed, **kwargs):
        s = simulate.machine(seconds=2, seed=seed)
        windows = device.windows_from_series(s, Export.open(small_export))
        return list(device.Encoder(small_export, 7, **kwargs).packets(windows))

    seq = tmp_path / "seq7.json"
    first, second = run(1, seq_file=seq), run(2, seq_file=seq)
    assert json.loads(seq.read_text()) == {"sensor": 7, "next_seq": len(first) + len(second)}
    assert [wire.decode(p).seq for p in first + second] == list(range(len(first) + len(second)))
    notes = []
    server = Server(small_export, tmp_path / "r.sqlite", notify=notes.append)
    server.run_packets(first + second)
    assert server.stored == len(first) + len(second) and not server.rejected and not notes

    server.run_packets(run(3) + run(4))  # no --seq-file: numbered from 0 again, and said once
    assert server.rejected == {"replayed_seq": 2 * len(first)} and len(notes) == 1
    assert notes[0].startswith(f"sensor 7: seq 0 is stored already, rejected as replayed_seq (stored up to {len(first) + len(second) - 1}); "
                               "a device that restarted its count")  # fmt: skip
    server.close()

    wrap = tmp_path / "wrap.json"
    run(1, seq_file=wrap, start_seq=2**32 - 3)
    assert json.loads(wrap.read_text())["next_seq"] == (2**32 - 3 + len(first)) % 2**32
    with pytest.raises(EdgeaeError, match="holds sensor 7's sequence number, not sensor 8's"):
        device.Encoder(small_export, 8, seq_file=seq)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(EdgeaeError, match="bad.json: not a sequence file of edgeae encode"):
        device.Encoder(small_export, 7, seq_file=tmp_path / "bad.json")
    proc = subprocess.run([sys.executable, "-m", "edgeae", "encode", str(small_export), "--sensor", "7", "--data", "-",
                           "--out", str(tmp_path / "p.bin"), "--seq-file", str(seq), "--start-seq", "5"],
                          input=b"", capture_output=True, cwd=ROOT)  # fmt: skip
    assert_one_line_error(_text(proc), "give --start-seq or --seq-file, not both")


def test_encode_with_a_nan_t0_is_refused(tmp_path, small_export):
    def encode(t0):
        return subprocess.run([sys.executable, "-m", "edgeae", "encode", str(small_export), "--sensor", "1", "--data", "-",
                               "--out", str(tmp_path / "p.bin"), "--t0", t0], input=b"", capture_output=True, cwd=ROOT)  # fmt: skip

    assert_option_refused(_text(encode("nan")), "Invalid value for '--t0': nan is not a finite number")
    assert_one_line_error(_text(encode("-1")), "--t0 must be Unix seconds")
    assert not (tmp_path / "p.bin").exists()


def test_an_unwritable_output_is_one_line(tmp_path, small_export):
    """A missing folder is one line naming the file asked for (it named the temporary file)."""
    proc = subprocess.run([sys.executable, "-m", "edgeae", "encode", str(small_export), "--sensor", "1", "--data", "-",
                           "--out", str(tmp_path / "no" / "p.bin")], input=b"", capture_output=True, cwd=ROOT)  # fmt: skip
    assert_one_line_error(_text(proc), f"{tmp_path / 'no' / 'p.bin'}: folder {tmp_path / 'no'} does not exist")


def _text(proc):
    proc.stderr = proc.stderr.decode()
    return proc


@pytest.mark.slow
def test_uint8_export_packets_decode_to_the_encoders_codes(tmp_path, small_run):
    """With uint8 I/O (the Edge TPU option) the wire still carries int8 (q - 128): the host must
    get back exactly the codes the encoder produced."""
    from edgeae.export import export

    out = export(small_run, tmp_path / "u8", io_type="uint8")
    ex = Export.open(out)
    s = simulate.machine(seconds=2, seed=4)
    packets = [wire.decode(p) for p in device.Encoder(out, 1).packets(device.windows_from_series(s, ex))]
    pipe = Pipeline(ex)
    normalized = pipe.norm(D.windows(s, ex.window, ex.hop))
    received = pipe.packet_features(np.array([p.code for p in packets]), np.array([p.residual for p in packets]))
    expected = pipe.offline_features(normalized)
    np.testing.assert_array_equal(received.code, expected.code)
    np.testing.assert_array_equal(received.residual, expected.residual)
    encoder_codes = pipe.encoder(D.to_input(normalized, pipe.encoder.input_shape))
    np.testing.assert_allclose(received.code, encoder_codes, atol=pipe.code_quant[0] * 1.01)


def test_a_reader_of_stdout_that_goes_away_is_said(tmp_path, small_export):
    """`encode --out - | head -c 100` ended with '[Errno 32] Broken pipe': not which packets went."""
    csv = _csv(simulate.machine(seconds=45, seed=4), tmp_path / "s.csv")  # packets beyond the pipe's 64 KiB: the reader goes first
    enc = subprocess.Popen([sys.executable, "-m", "edgeae", "encode", str(small_export), "--sensor", "5", "--data", str(csv),
                            "--out", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)  # fmt: skip
    enc.stdout.read(100)
    enc.stdout.close()  # the reader goes away
    err = enc.stderr.read().decode()
    assert enc.wait(60) == 2 and len(err.strip().splitlines()) == 1, err
    assert re.fullmatch(r"edgeae: error: stdout: its reader went away; \d+ packet\(s\) were written to it, packet \d+ and the rest not\n", err)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_live_stream_ended_by_a_signal_keeps_its_packets(tmp_path, small_export, sig):
    """Ctrl-C is how a live stream ends; it removed `encode --out`'s file, every packet in it.
    Now the packets made so far are written, and every row read is accounted for."""
    ex = Export.open(small_export)
    lines = _csv(simulate.machine(seconds=1, seed=4), tmp_path / "s.csv").read_text().splitlines(keepends=True)
    rows = ex.window + 2 * ex.hop + 5  # 3 windows, then 5 rows
    out = tmp_path / "live.bin"
    proc = subprocess.Popen([sys.executable, "-m", "edgeae", "encode", str(small_export), "--sensor", "5", "--t0", "0",
                             "--data", "-", "--out", str(out)], stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
    try:
        log = Stderr(proc)
        log.wait_for("SIGTERM or Ctrl-C ends the stream")
        proc.stdin.write("".join(lines[: 1 + rows]))
        proc.stdin.flush()
        unread, deadline = array.array("i", [1]), time.monotonic() + 60
        while unread[0] and time.monotonic() < deadline:  # until encode has read them all (stdin stays open)
            fcntl.ioctl(proc.stdin.fileno(), termios.FIONREAD, unread)
            time.sleep(0.05)
        proc.send_signal(sig)
        log.wait_for(f"stopped by {sig.name}", until=lambda: proc.poll() is not None)
    finally:
        proc.kill()
    assert proc.returncode == 0
    n = int(re.search(r"(\d+) packets", log.lines[-1])[1])
    left = rows - ((n - 1) * ex.hop + ex.window if n else 0)
    assert log.lines[-1].strip().endswith(f"stopped by {sig.name}: the last {left} rows read went unsent"), log.lines
    assert [wire.decode(p).seq for p in wire.unframe(out.read_bytes())] == list(range(n))

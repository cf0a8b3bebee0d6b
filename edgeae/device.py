"""The device-side loop (`edgeae encode`): sensor rows in, packets out.

Rows are high-passed and windowed exactly as in training (filter, length and hop from the
export), normalized with the export's constants, quantized to the model's input type, and run
through the int8 device model in LiteRT; each window becomes one wire-format packet with its code
and residual byte. The bytes are those the firmware produces from the MCU export's constants.

Rows come from CSV / .npz files (several replayed one after another, each windowed on its own) or,
for a live stream, CSV lines on stdin (a header line first).
The timestamp of a window is its last row's time, from the data's time column (`data.time_column`,
`data.unix_seconds`), or `t0 + period * (index of its last row)`. SIGTERM or SIGINT ends the
stream (`Stoppable`); packets the MQTT broker never acknowledged are kept in a file (`publish`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import signal
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from . import data as D
from . import wire
from .errors import EdgeaeError
from .fsutil import atomic_file, parse_json
from .manifest import Export
from .pipeline import Pipeline

BATCH = 64  # windows per LiteRT call


def stream_rows(lines: Iterable[str], channels: list[str], source: str = "<stdin>", times: bool = False) -> Iterator[tuple[float | None, np.ndarray]]:
    """Parse CSV lines (header first) into (time, row of the given channels), validating each
    line; time is the time column's cell in Unix seconds, None when the header has no time column
    (`data.time_column`, with the first line under the header) or `times` is False."""
    try:
        header_line, delimiter, lines, first = D.csv_header(iter(lines))
        header = None if header_line is None else [h.strip() for h in next(csv.reader([header_line], delimiter=delimiter))]
    except csv.Error as e:  # a field longer than the csv module takes (128 KB)
        raise EdgeaeError(f"{source}: the lines before the first row are not a CSV header ({e})") from None
    if header is None:
        raise EdgeaeError(f"{source}: no header line")
    D.check_unique_names(source, header)
    missing = [c for c in channels if c not in header]
    if missing:
        raise EdgeaeError(f"{source}: missing channel column(s) {', '.join(map(repr, missing))} (have: {', '.join(header)})")
    idx = [header.index(c) for c in channels]
    ti: int | None = -1  # the time column's index, found at the first line under the header
    for n, line in enumerate(lines, start=first):
        if not line.strip():
            continue
        try:
            cells = D.with_decimal_points(next(csv.reader([line], delimiter=delimiter)), delimiter)
        except csv.Error as e:  # a field longer than the csv module takes (128 KB)
            raise EdgeaeError(f"{source}: line {n} is not a row of numbers ({e})") from None
        if len(cells) != len(header):  # a delimiter too many or too few: every column after it shifted
            raise EdgeaeError(f"{source}: line {n} has {len(cells)} fields, the header has {len(header)}")
        if ti == -1:
            column = D.time_column(header, cells) if times else None
            ti = None if column is None or column in channels else header.index(column)
        try:
            row = np.array([float(cells[i]) for i in idx])
        except (ValueError, IndexError):
            raise EdgeaeError(f"{source}: line {n} is not a row of numbers for {', '.join(channels)}") from None
        if not (np.abs(row) <= D.FLOAT32_MAX).all():
            raise EdgeaeError(f"{source}: line {n} has NaN, inf or values beyond float32's range (3.4e38)")
        try:
            t = None if ti is None else D.unix_seconds(cells[ti] if ti < len(cells) else "")
        except ValueError as e:
            raise EdgeaeError(f"{source}: line {n}: {e} (--t0 stamps by row instead)") from None
        yield t, row.astype(np.float32)


def stream_windows(rows: Iterable[np.ndarray], length: int, hop: int) -> Iterator[tuple[int, np.ndarray]]:
    """(index of the last row, window) for every window, as `data.windows` cuts them:
    window k covers rows [k * hop, k * hop + length)."""
    recent: deque[np.ndarray] = deque(maxlen=length)
    next_end = length - 1
    for i, row in enumerate(rows):
        recent.append(row)
        if i == next_end:
            yield i, np.stack(recent)
            next_end += hop


class Encoder:
    """Windows -> packets for one sensor, with sequence numbers and optional HMAC tags."""

    def __init__(self, export_dir, sensor: int, key: bytes | None = None, t0: float = 0.0, period: float | None = None,
                 start_seq: int = 0, seq_file: str | Path | None = None):  # fmt: skip
        """`period`: seconds between rows, for stamping by row; by default the training rows' step
        (1 s when the export does not know it)."""
        self.ex = Export.open(export_dir)
        self.pipe = Pipeline(self.ex)
        self.model_id = self.ex.model_id
        self.sensor, self.key, self.t0, self.seq, self.sent_rows = sensor, key, t0, start_seq, 0
        self.period = (self.ex.row_period or 1.0) if period is None else period
        self.period_known = period is not None or self.ex.row_period is not None  # else 1 s, a guess
        if sensor not in wire.SENSOR_IDS:
            raise EdgeaeError(f"--sensor must be 0..65535, got {sensor}")
        self.seq_file = None if seq_file is None else Path(seq_file)
        if self.seq_file is not None and self.seq_file.exists():
            self.seq = read_seq_file(self.seq_file, sensor)
        if not 0 <= t0 < 2**32:  # also false for NaN; packets carry uint32 seconds
            raise EdgeaeError(f"--t0 must be Unix seconds in 0..2^32, got {t0}")
        if not 0 < self.period < float("inf"):
            raise EdgeaeError(f"--period must be a positive number of seconds, got {period}")
        if period is not None:
            D.check_row_period(period, self.ex.row_period, f"--period {period}")
        if not 0 <= start_seq < 2**32:
            raise EdgeaeError(f"--start-seq must be 0..2^32-1 (the packet's uint32 counter), got {start_seq}")
        if key is not None:
            wire.check_key(key, "--key")

    def packets(self, windows: Iterable[tuple[int, np.ndarray]], size: int = BATCH, times=None,
                every: float | None = None) -> Iterator[bytes]:  # fmt: skip
        """The packets of `windows`, run through the model `size` windows at a time; `times` (row
        index -> Unix seconds or None, as `Source.time_of`) stamps them where it knows the time,
        t0 and period elsewhere. With `every` (seconds), one window in each such span of time,
        the others skipped before the model runs (a radio's budget: `lorawan.budget`).
        `sent_rows`: the rows up to the last packet's window's last one."""
        batch: list[tuple[int, np.ndarray]] = []
        due = -math.inf
        for item in windows:
            if every is not None:
                if (t := self._row_time(item[0], times, every=True)) < due:
                    continue
                due = t + every
            batch.append(item)
            if len(batch) == size:
                yield from self._batch(batch, times)
                batch = []
        if batch:
            yield from self._batch(batch, times)

    def _row_time(self, row: int, times, every: bool = False) -> float:
        """Row `row`'s time: from `times` where it knows it, else t0 + period x row (for `every`,
        only with a period given or the export's, not the 1 s guessed without either)."""
        t = None if times is None else times(row)
        if t is None and every and not self.period_known:
            raise EdgeaeError("--every needs the rows' times: a time column in the data, --period, or an export that "
                              "knows its rows' rate (trained on data with times)")  # fmt: skip
        return self.t0 + self.period * row if t is None else t

    def _batch(self, batch, times) -> Iterator[bytes]:
        raw = np.stack([w for _, w in batch])
        codes, residuals = self.pipe.device_outputs(self.pipe.norm(raw))
        packets = []
        for (last_row, _), code, res in zip(batch, codes, residuals):
            t = self._row_time(last_row, times)
            p = wire.Packet(self.model_id, self.sensor, self.seq % 2**32, int(t) % 2**32, tuple(int(v) for v in code), int(res))
            self.seq += 1
            packets.append(wire.encode(p, self.key))
        if self.seq_file is not None:  # before the packets leave: a crash then costs a gap, never a replay
            write_seq_file(self.seq_file, self.sensor, self.seq % 2**32)
        for (last_row, _), packet in zip(batch, packets):
            self.sent_rows = last_row + 1
            yield packet


def read_seq_file(path: Path, sensor: int) -> int:
    """The next sequence number `encode --seq-file` kept for `sensor`."""
    try:
        d = parse_json(path.read_text())
        sensor_, seq = d["sensor"], d["next_seq"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EdgeaeError(f"{path}: not a sequence file of edgeae encode ({e.__class__.__name__}: {e})") from None
    if sensor_ != sensor:
        raise EdgeaeError(f"{path}: holds sensor {sensor_}'s sequence number, not sensor {sensor}'s")
    if not (isinstance(seq, int) and 0 <= seq < 2**32):
        raise EdgeaeError(f"{path}: next_seq must be 0..2^32-1, got {seq!r}")
    return seq


def write_seq_file(path: Path, sensor: int, next_seq: int) -> None:
    """Keep `sensor`'s next sequence number in `path`, replaced in one rename and on the disk before
    the packets leave (fsync), so that not even a power cut gives their numbers again."""
    with atomic_file(path, durable=True) as tmp:
        tmp.write_text(json.dumps({"sensor": sensor, "next_seq": next_seq}) + "\n")


class Source:
    """The windows of recordings (a CSV / .npz file, a folder of them or a list of those, replayed
    one after another, each windowed on its own as by a device restarted at each) or of CSV lines
    on stdin ('-'), as (index of the last row, counted over all the files, window), and `rows`: how
    many rows were read (all of them once the windows are exhausted), so that rows in no window
    (`unsent`) can be reported rather than dropped unsaid. `batch`: windows per model call, 1 for a
    live stream so that each packet leaves once its window's last row is read (batched, a 1 Hz
    sensor's packet waited for 63 more windows). With `times`, rows keep their time from the data's
    time column, for `time_of` (a live stream's until it passes them)."""

    def __init__(self, source, ex: Export, times: bool = False):
        self.batch = 1 if source == "-" else BATCH
        self.timed = False  # whether rows read so far came with their times
        self.windowed = 0  # rows up to the last window's last one
        self.files = 1
        self._tails: list[tuple[int, int]] = []  # (end, rows in no window before it) of each file
        self._times: deque[tuple[int, float]] | np.ndarray | None = None
        if source == "-":
            self.rows, self._times = 0, deque()
            lines = D.utf8_lines(sys.stdin.buffer, "<stdin>")
            rows = self._counted(stream_rows(lines, ex.channels, times=times), ex)
            self._windows = stream_windows(ex.normalizer.prepare_rows(rows), ex.window, ex.hop)
        else:
            files = D.read_recordings(source, ex.channels, ex.row_period)  # a device's rows need no label column
            for s in files:  # every file before the first packet leaves
                D.check_fits(s, ex.window)
            self.rows, self.files = sum(map(len, files)), len(files)
            ends = np.cumsum([len(s) for s in files]).tolist()
            self._tails = [(end, (len(s) - ex.window) % ex.hop) for s, end in zip(files, ends)]
            if times:
                self._times = _file_times(files)
                self.timed = self._times is not None
            self._windows = ((start + last, w) for s, start in zip(files, [0, *ends]) for last, w in windows_from_series(s, ex))

    def unsent(self, upto: int) -> int:
        """Rows in no packet, when the packets' windows reach row `upto`: those after it, and the
        ends of the files before it that filled no window."""
        return self.rows - upto + sum(tail for end, tail in self._tails if end <= upto)

    def time_of(self, row: int) -> float | None:
        """Row `row`'s time in Unix seconds; None when the data has no time column (or the
        source was made without `times`). A live stream's rows are asked for in order, and
        forgotten once passed."""
        if isinstance(self._times, deque):
            while self._times and self._times[0][0] < row:
                self._times.popleft()
            return self._times[0][1] if self._times and self._times[0][0] == row else None
        return None if self._times is None else float(self._times[row])

    def _counted(self, rows: Iterable[tuple[float | None, np.ndarray]], ex: Export) -> Iterator[np.ndarray]:
        """The rows, counted, with their times kept for `time_of`; the rows of the first window,
        before it leaves, checked to come at the export's rate (`data.check_row_period`)."""
        for t, row in rows:
            if t is not None:
                self.timed = True
                self._times.append((self.rows, t))
            self.rows += 1
            if self.rows == ex.window and self.timed:
                D.check_row_period(D.time_step([t for _, t in self._times], "<stdin>"), ex.row_period, "<stdin>")
            yield row

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        for last_row, window in self._windows:
            self.windowed = last_row + 1  # rows that made a window so far
            yield last_row, window


def _file_times(files: list[D.Series]) -> np.ndarray | None:
    """The files' rows' times in Unix seconds, one after another; None when none has a time column."""
    times = []
    for s in files:
        try:
            times.append(s.unix_times())
        except EdgeaeError as e:
            raise EdgeaeError(f"{e} (--t0 stamps by row instead)") from None
    if all(t is None for t in times):
        return None
    if any(t is None for t in times):
        untimed, timed = (next(s.source for s, t in zip(files, times) if (t is None) == want) for want in (True, False))
        raise EdgeaeError(f"{untimed}: no time column, unlike {timed}: give --t0 to stamp every row by its number instead")
    return np.concatenate(times)


def windows_from_series(series: D.Series, ex: Export) -> Iterator[tuple[int, np.ndarray]]:
    """(index of the last row, window) for an in-memory series, with the export's channels
    (high-passed as the export says; not yet standardized)."""
    w = D.windows(ex.normalizer.prepare(series.select(ex.channels)), ex.window, ex.hop)
    return ((i * ex.hop + ex.window - 1, win) for i, win in enumerate(w))


class _Stopped(BaseException):
    """Raised by `Stoppable`'s handler into a wait for the next item (a read of stdin)."""


@contextlib.contextmanager
def _on_stop_signals(handler):
    """SIGTERM and SIGINT call `handler(name of the signal)` inside the block, instead of the
    command's own handlers (main thread only)."""
    stop = lambda signum, frame: handler(signal.Signals(signum).name)  # noqa: E731
    saved = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, previous in saved.items():
            signal.signal(sig, previous)


_NOTHING = object()


class Stoppable:
    """`items` until SIGTERM or SIGINT, which end the iteration instead of killing the command,
    so that the packets already made are still delivered (a live stream is ended that way; killed,
    `encode --out` lost all it had written). A signal that comes while the next item is awaited
    (a live stream's next line) ends the wait; one that comes while the caller handles an item
    ends the iteration after it. `signal` names the signal that stopped it, if one did. The
    handlers are this object's only while it iterates: a second signal, during the delivery
    afterwards, is the caller's (`publish` then stops waiting for the broker and keeps the rest).
    Main thread only."""

    def __init__(self, items: Iterable):
        self.items, self.signal, self._waiting = items, None, False

    def _handle(self, name: str) -> None:
        self.signal = name
        if self._waiting:
            raise _Stopped

    def __iter__(self) -> Iterator:
        items = iter(self.items)
        with _on_stop_signals(self._handle):
            while self.signal is None:
                item = _NOTHING
                try:
                    self._waiting = True
                    item = next(items)
                    self._waiting = False
                except StopIteration:
                    return
                except _Stopped:  # the item, when it came just before the signal, is still handed on
                    pass
                finally:
                    self._waiting = False
                if item is not _NOTHING:
                    yield item


def publish(packets: Iterable[bytes], broker: str, topic: str, unsent: Path, notify=lambda message: None,
            timeout: float = 30.0) -> int:  # fmt: skip
    """Publish `packets` to `topic` on `broker`; returns how many. Packets the broker has not
    acknowledged when publishing ends (it went away and did not come back within `timeout` s, or
    SIGTERM / SIGINT cut that wait short) are written to the packet file `unsent`, and an
    EdgeaeError says so; `serve --packets` stores them."""
    from .mqtt import Publisher

    pub = Publisher(broker, notify=notify, timeout=timeout)
    n, error = 0, None
    try:
        for n, pkt in enumerate(packets, start=1):
            pub.publish(topic, pkt)
    except EdgeaeError as e:  # the broker's silence, or bad input: the packets made so far are still to be saved
        error = e
    with _on_stop_signals(lambda name: pub.give_up(f"stopped by {name} while waiting for the MQTT broker at {pub.broker.address}")):
        if pub.waiting and not pub.client.is_connected() and not pub.reason:
            notify(f"waiting up to {timeout:g} s for the MQTT broker at {pub.broker.address} to acknowledge {pub.waiting} packets "
                   f"(SIGTERM or Ctrl-C stops waiting: they are then kept in {unsent})")  # fmt: skip
        kept = pub.close()
        if kept:
            wire.write_packet_file(unsent, kept)
    if kept:
        raise EdgeaeError(f"{error or pub.reason}; {n - len(kept)} of {n} packets were acknowledged, the other {len(kept)} are kept in "
                          f"{unsent} (edgeae serve --packets {unsent} stores them)")  # fmt: skip
    if error:
        raise error
    return n

"""Sensor data: reading CSV / .npz files, high-passing slow channels, cutting sliding windows,
per-channel normalization.

Numpy only, so the device and host halves can use it without TensorFlow.

A `Series` is a multichannel time series: `values` of shape (rows, channels), the channel
names, optionally a 0/1 `labels` per row (1 = anomalous), and the rows' time cells as read
(`times`, turned into Unix seconds by `unix_times` when asked for). Every reader validates once,
here at the edge: missing columns, non-numeric cells, NaN / inf values and too little data
are reported as an `EdgeaeError` naming the file, the column and the row (rows counted from 1,
the first data row under a CSV header being row 1).
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import re
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .errors import EdgeaeError, existing_file
from .fsutil import atomic_dir, check_replaceable, write_json

#: Column names treated as labels / timestamps when a recipe does not name them.
DEFAULT_LABEL_COLUMNS = ("label", "anomaly", "is_anomaly")  # in any case, as the time columns
DEFAULT_TIME_COLUMNS = ("time", "timestamp", "datetime", "date")
BOOLEANS = {"true": 1.0, "false": 0.0}  # a label column as pandas writes a bool one
#: A channel whose standard deviation is below this is constant (`Normalizer.fit`, `constant_channels`).
CONSTANT_STD = 1e-8
#: Rows whose times give `Series.row_period` (a median needs few; a long file's every cell would take seconds).
PERIOD_ROWS = 10_000
#: How far a recording's row period may be from the training data's (`check_row_period`): a logger's jitter, not another rate.
PERIOD_TOLERANCE = 0.1
#: The largest value a channel, or a recipe's number, may hold: the models compute in float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class Series:
    """A multichannel time series with optional per-row labels."""

    values: np.ndarray  # (rows, channels) float32
    channels: list[str]
    labels: np.ndarray | None = None  # (rows,) int8, 1 = anomalous
    source: str = "<memory>"
    times: np.ndarray | None = None  # (rows,) the time column's cells as read (see `unix_times`)

    def __post_init__(self):
        with np.errstate(over="ignore"):  # beyond float32's range becomes inf, reported below
            self.values = np.asarray(self.values, dtype=np.float32)
        if self.values.ndim == 1:
            self.values = self.values[:, None]
        if self.values.ndim != 2:
            raise EdgeaeError(f"{self.source}: expected a 2-D (rows, channels) array, got shape {self.values.shape}")
        if self.values.shape[1] != len(self.channels):
            raise EdgeaeError(
                f"{self.source}: {self.values.shape[1]} value columns but {len(self.channels)} channel names"
            )
        bad = ~np.isfinite(self.values)
        if bad.any():
            rows, cols = np.nonzero(bad)
            raise EdgeaeError(
                f"{self.source}: {len(set(rows.tolist()))} row(s) with NaN, inf or values beyond float32's range (3.4e38), first at row {rows[0] + 1} "
                f"in channel '{self.channels[cols[0]]}'"
            )
        if self.labels is not None:
            self.labels = np.asarray(self.labels)
            if self.labels.shape != (len(self.values),):
                raise EdgeaeError(f"{self.source}: labels must be one per row, shape ({len(self.values)},); got {self.labels.shape}")
            if self.labels.dtype.kind not in "biuf" or not np.isin(self.labels, (0, 1)).all():  # complex 0j and 1 + 0j too
                raise EdgeaeError(f"{self.source}: labels must be 0 (normal) or 1 (anomalous)")
            self.labels = self.labels.astype(np.int8)
        if self.times is not None and np.shape(self.times) != (len(self.values),):
            raise EdgeaeError(f"{self.source}: times must be one per row, shape ({len(self.values)},); got {np.shape(self.times)}")

    def __len__(self) -> int:
        return len(self.values)

    def select(self, channels: list[str] | None) -> "Series":
        """The same series with only `channels`, in that order (all when None, or when they are its
        own in its order: no copy of a long recording's values)."""
        if channels is None or list(channels) == self.channels:
            return self
        missing = [c for c in channels if c not in self.channels]
        if missing:
            raise EdgeaeError(
                f"{self.source}: missing channel column(s) {', '.join(map(repr, missing))} "
                f"(have: {', '.join(self.channels)})"
            )
        idx = [self.channels.index(c) for c in channels]
        return Series(self.values[:, idx], list(channels), self.labels, self.source, self.times)

    def rows(self, start: int, stop: int | None) -> "Series":
        """Rows [start, stop) as a new series."""
        labels = None if self.labels is None else self.labels[start:stop]
        times = None if self.times is None else self.times[start:stop]
        return Series(self.values[start:stop], self.channels, labels, f"{self.source}[{start}:{stop}]", times)

    def unix_times(self) -> np.ndarray | None:
        """The rows' times in Unix seconds (float64), None without a time column."""
        if self.times is None:
            return None
        out = np.empty(len(self.times))
        for i, cell in enumerate(self.times):
            try:
                out[i] = unix_seconds(str(cell))
            except ValueError as e:
                raise EdgeaeError(f"{self.source}: row {i + 1}: {e}") from None
        return out

    def row_period(self) -> float | None:
        """The rows' time step in seconds: the median step between the times of the first
        PERIOD_ROWS rows, to 3 digits (a 2026 time in float seconds is exact to 0.2 us only). None
        without a time column, with times that are neither Unix seconds nor ISO 8601, or that do
        not advance (a clock coarser than the rows)."""
        if self.times is None:
            return None
        try:
            times = [unix_seconds(str(cell)) for cell in self.times[:PERIOD_ROWS]]
        except ValueError:
            return None
        return time_step(times, self.source)

    def fingerprint(self) -> str:
        """sha256 of the channel names, values and labels: identifies the training data."""
        h = hashlib.sha256()
        h.update(json.dumps(self.channels).encode())
        h.update(np.ascontiguousarray(self.values, dtype="<f4").tobytes())
        if self.labels is not None:
            h.update(self.labels.astype(np.int8).tobytes())
        return h.hexdigest()


def read_series(
    path: str | Path,
    channels: list[str] | None = None,
    label: str | None = None,
    time: str | None = None,
) -> Series:
    """Read a CSV (any delimiter, header row) or .npz file into a `Series`.

    CSV: an optional time column (`time`, or a first column that is not numeric), named channel
    columns, and an optional 0/1 (or True / False) label column (`label`, else a column named
    `label`, `anomaly` or `is_anomaly`, in any case).
    .npz: `data` (rows, channels), optional `channels` (names), `labels` (rows,), `times` (rows,)
    (or under the names a CSV's label and time columns may have: `label` and `time`, or the defaults).
    When `channels` is given, only those columns are used, in that order.
    """
    path = existing_file(path, "CSV or .npz file")
    if path.suffix == ".npz":
        return _read_npz(path, channels, label, time)
    return _read_csv(path, channels, label, time)


def data_files(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """The data files `paths` (one path or several) name, in order: a file as given, a folder as
    its CSV and .npz files in name order (not its subfolders'). A file named twice is refused: its
    windows would weigh double, and nothing would say so."""
    files = []
    for path in map(Path, _listed(paths)):
        if path.is_dir():
            found = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in (".csv", ".npz"))
            if not found:
                raise EdgeaeError(f"{path}: a folder without CSV or .npz files")
            files += found
        else:
            files.append(existing_file(path, "CSV or .npz file"))
    seen = {}
    for f in files:
        if (twin := seen.setdefault(f.resolve(), f)) is not f:
            raise EdgeaeError(f"{f}: given twice" + (f" (also as {twin})" if str(twin) != str(f) else ""))
    return files


def read_files(paths, read: Callable[[Path], Series] = read_series, progress: bool = False) -> list[Series]:
    """`read` of each file `paths` names (`data_files`), with a progress bar over several files
    when `progress`. Each file is windowed on its own: no window spans two recordings."""
    from tqdm.auto import tqdm

    files = data_files(paths)
    return [read(f) for f in tqdm(files, desc="reading", unit="file", disable=None if progress and len(files) > 1 else True)]


def read_recordings(paths, channels: list[str], row_period: float | None, label: str | None = None, time: str | None = None,
                    progress: bool = False) -> list[Series]:  # fmt: skip
    """The recordings `paths` names (`read_files`) for a model: each with its `channels` selected
    and its rows at the model's `row_period` (`check_row_period`)."""

    def read(path: Path) -> Series:
        series = read_series(path, label=label, time=time).select(channels)
        check_row_period(series.row_period(), row_period, str(path))
        return series

    return read_files(paths, read, progress)


def in_first_channels(parts: list[Series]) -> list[Series]:
    """Each series with the first one's channels, in its order (a later file missing one is refused)."""
    return [parts[0], *(p.select(parts[0].channels) for p in parts[1:])]


def names(paths) -> str:
    """The data `paths` as the user gave them (or the files' names), for messages and reports."""
    return ", ".join(map(str, _listed(paths)))


def _listed(paths) -> Iterable:
    """One path as a list of it; several as they are."""
    return [paths] if isinstance(paths, (str, Path)) else paths


def fingerprint(parts: list[Series]) -> str:
    """One file's `Series.fingerprint`; of several, the sha256 of theirs in order."""
    if len(parts) == 1:
        return parts[0].fingerprint()
    return hashlib.sha256("".join(p.fingerprint() for p in parts).encode()).hexdigest()


_SEP_LINE = re.compile(r'"?sep=(.)"?')


def csv_header(lines: Iterator[str]) -> tuple[str | None, str, Iterator[str], int]:
    """(header line, delimiter, the lines after it, the number of the first of them) of CSV
    `lines`, past what writers put before a header: blank lines, lines starting with '#' (a
    logger's metadata) and Excel's 'sep=;' line. numpy's `savetxt` writes its header as a comment
    ('# time,vib_x'): the last comment is the header when the line after it is data (a number in
    a cell) with as many cells. Read as a channel, its time column would have been learnt as one."""
    delimiter, comment, number = None, None, 0
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if text.startswith("#"):
            comment = text.lstrip("#").strip()
        elif delimiter is None and comment is None and (sep := _SEP_LINE.fullmatch(text)):
            delimiter = sep.group(1)
        elif text:
            if comment:
                split = delimiter or csv_delimiter(comment)
                cells = with_decimal_points(next(csv.reader([line], delimiter=split)), split)
                if any(_is_number(c) for c in cells) and len(next(csv.reader([comment], delimiter=split))) == len(cells):
                    return comment, split, itertools.chain([line], lines), number
            return line, delimiter or csv_delimiter(line), lines, number + 1
    return None, delimiter or ",", lines, number + 1


def csv_delimiter(header_line: str) -> str:
    """The delimiter a CSV's header line is split by: one of , ; tab | space, else ','."""
    try:
        return csv.Sniffer().sniff(header_line, delimiters=",;\t| ").delimiter
    except csv.Error:
        return ","


_COMMA_DECIMAL = re.compile(r"\s*[+-]?\d+,\d+(?:[eE][+-]?\d+)?\s*")


def with_decimal_points(cells: list[str], delimiter: str) -> list[str]:
    """A CSV row's cells with decimal commas made decimal points: a spreadsheet in a European
    locale writes '0,5' in files delimited by ';' or tabs. Left alone in comma-delimited files."""
    if delimiter == ",":
        return cells
    return [c.replace(",", ".") if "," in c and _COMMA_DECIMAL.fullmatch(c) else c for c in cells]


def time_column(header: list[str], first_row: list[str] | None) -> str | None:
    """The CSV's time column: one named as in DEFAULT_TIME_COLUMNS, else a first column whose
    first cell is not a number but has digits, as a date or time has (an empty or 'n/a' cell
    is a missing value of a channel, which the reader then reports, not a time);
    None when there is neither."""
    named = next((c for c in header if c.lower() in DEFAULT_TIME_COLUMNS), None)
    if named is None and first_row and not _is_number(first_row[0]) and any(ch.isdigit() for ch in first_row[0]):
        return header[0]
    return named


def unix_seconds(cell: str) -> float:
    """A time cell in Unix seconds: a number of Unix seconds (or of milliseconds, as IoT platforms
    and JavaScript's Date.now() write them, microseconds or nanoseconds, told apart by size: from
    1973 on, each is beyond 2^32 in the unit below), or an ISO 8601 date and time, UTC unless it
    gives its offset ('2020-03-09 10:14:33', '2020-03-09T10:14:33.5+01:00'). A time outside
    1970..2106 is refused: a packet carries uint32 seconds."""
    cell = cell.strip()
    try:
        t = float(cell)
        if t >= 1e11:
            t /= 1e9 if t >= 1e17 else 1e6 if t >= 1e14 else 1e3
    except ValueError:
        try:
            when = datetime.fromisoformat(cell)
        except ValueError:
            raise ValueError(f"time {cell!r} is neither Unix seconds nor an ISO 8601 date and time") from None
        t = (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
    if not 0 <= t < 2**32:
        raise ValueError(f"time {cell!r} is not in Unix seconds 0..2^32 (1970 to 2106)")
    return t


def constant_channels(windows_: np.ndarray, channels: list[str]) -> list[str]:
    """The channels that do not move in `windows_` (n, length, channels): a stuck or disconnected
    sensor, from which a model learns nothing."""
    return [c for c, std in zip(channels, windows_.reshape(-1, windows_.shape[-1]).std(axis=0)) if std < CONSTANT_STD]


def duration(seconds: float) -> str:
    """A span of time in words, to 3 digits: '16 ms', '4.44 min', '1.71 h', '333 days', '56.9 years'
    (days and years from 2 of them on)."""
    year = 365.25 * 86_400
    for unit, size, least in (("years", year, 2 * year), ("days", 86_400, 2 * 86_400), ("h", 3600, 3600), ("min", 60, 60), ("s", 1, 1)):
        if seconds >= least:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds * 1e3:.3g} ms"


def time_step(times, source) -> float | None:
    """The median step between successive times (Unix seconds), to 3 digits; None for fewer than
    two times or times that do not advance. Times that run backwards (a recording saved newest
    first, as many exports of a time-series database are) are refused: their windows would run
    the signal backwards, and nothing else would say so."""
    if len(times) < 2:
        return None
    step = float(f"{np.median(np.diff(np.asarray(times, dtype=np.float64))):.3g}")
    if step < 0:
        raise EdgeaeError(f"{source}: the rows' times run backwards (newest first?): sort the rows oldest first")
    return step if step > 0 else None


def time_jumps(series: Series) -> dict | None:
    """Where the rows' times jump: steps more than twice the median step (`step_s`), or backwards
    (recordings joined end to end, a clock set back). {count, step_s, largest_s: the step of the
    largest jump, row: the row after it (from 1, as error messages count)}; None without times
    that say (none, unreadable, not advancing); times that run backwards are refused (`time_step`)."""
    try:
        times = series.unix_times()
    except EdgeaeError:
        return None
    step = None if times is None else time_step(times, series.source)
    if step is None:
        return None
    starts = jump_starts(times, step)
    if not len(starts):
        return {"count": 0, "step_s": step}
    steps = times[starts] - times[starts - 1]
    at = int(np.argmax(np.abs(steps)))
    return {"count": len(starts), "step_s": step, "largest_s": float(steps[at]), "row": int(starts[at]) + 1}


def jump_starts(times: np.ndarray, step: float) -> np.ndarray:
    """The rows that follow a jump in `times`: a step more than twice `step` (the median), or one
    that does not advance."""
    steps = np.diff(times)
    return np.flatnonzero((steps > 2 * step) | (steps <= 0)) + 1


def cut_at_jumps(series: Series) -> list[Series]:
    """The series cut where its times jump (`jump_starts`): one series per stretch of evenly timed
    rows, each named `source[start:stop]`. Windowed apart, no window joins two stretches."""
    times = series.unix_times()
    if times is None:
        raise EdgeaeError(f"{series.source}: no time column: nothing to tell where the rows jump")
    step = time_step(times, series.source)
    if step is None:
        raise EdgeaeError(f"{series.source}: the rows' times do not advance: nothing to tell where they jump")
    bounds = [0, *jump_starts(times, step).tolist(), len(series)]
    return [series.rows(a, b) for a, b in zip(bounds, bounds[1:])]


CUT_MANIFEST = "cut.json"


def cut(path: str | Path, out: str | Path, min_rows: int = 1) -> dict:
    """Write a recording cut at its time jumps (`cut_at_jumps`) to the folder `out`: one .npz per
    stretch of at least `min_rows` rows (`<name>-001.npz`, ...; every column kept, labels and times
    under the names any recipe reads), and cut.json naming each file's rows and first and last
    time as read, and the stretches left out as too short. A folder of them is what train, verify,
    calibrate and eval take to window each stretch on its own."""
    check_replaceable(out, CUT_MANIFEST)
    series = read_series(path)
    stretches, start = [], 0
    for piece in cut_at_jumps(series):
        stretches.append((piece, {"rows": [start, start + len(piece)], "first": str(piece.times[0]), "last": str(piece.times[-1])}))
        start += len(piece)
    kept = [(piece, info) for piece, info in stretches if len(piece) >= min_rows]
    if not kept:
        raise EdgeaeError(f"{path}: no stretch between its time jumps has {min_rows} rows (the longest: {max(len(p) for p, _ in stretches)})")
    width = max(3, len(str(len(kept))))
    for k, (_, info) in enumerate(kept, start=1):
        info["file"] = f"{Path(path).stem}-{k:0{width}d}.npz"
    manifest = {"source": str(path), "rows": len(series), "jumps": len(stretches) - 1, "min_rows": min_rows,
                "files": [info for _, info in kept], "left_out": [info for piece, info in stretches if len(piece) < min_rows]}  # fmt: skip
    with atomic_dir(out, CUT_MANIFEST) as tmp:
        for piece, info in kept:
            write_npz(piece, tmp / info["file"])
        write_json(tmp / CUT_MANIFEST, manifest)
    return manifest


def check_row_period(step: float | None, trained: float | None, what: str) -> None:
    """Refuse rows at another rate than the rows an export was trained on (more than
    PERIOD_TOLERANCE apart; nothing to compare when either is unknown): the encoder would see the
    signal stretched or squeezed, a fault's frequency moved, and nothing else would say so."""
    if step is not None and trained is not None and abs(step / trained - 1) > PERIOD_TOLERANCE:
        raise EdgeaeError(f"{what}: rows {step:.6g} s apart ({1 / step:.6g} Hz), the export's were {trained:.6g} s apart "
                          f"({1 / trained:.6g} Hz): at another rate the encoder sees another signal; resample the rows "
                          "to the export's rate, or train on rows at this one")  # fmt: skip


def check_unique_names(source, names: list[str]) -> None:
    """Channels are chosen by name, so a name given twice would silently pick one of the columns
    (columns without a name are never chosen)."""
    twice = sorted({n for n in names if n and names.count(n) > 1})
    if twice:
        raise EdgeaeError(f"{source}: column name(s) {', '.join(map(repr, twice))} appear more than once")


def write_npz(series: Series, path: str | Path) -> Path:
    """`series` as the .npz that `read_series` reads: data, channels, and labels and times if it has them."""
    extra = {k: v for k, v in (("labels", series.labels), ("times", series.times)) if v is not None}
    np.savez(path, data=series.values, channels=np.array(series.channels), **extra)
    return Path(path)


def _read_npz(path: Path, channels, label, time) -> Series:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # numpy raises many types for a corrupt archive
        raise EdgeaeError(f"{path}: not a readable .npz file ({e.__class__.__name__})") from None
    if "data" not in arrays:
        raise EdgeaeError(f"{path}: .npz has no 'data' array (has: {', '.join(arrays) or 'nothing'})")
    data = arrays["data"]
    if data.ndim != 2:
        raise EdgeaeError(f"{path}: 'data' must be (rows, channels), got shape {data.shape}")
    if "channels" in arrays and arrays["channels"].shape != (data.shape[1],):
        raise EdgeaeError(f"{path}: 'channels' must be one name per column of 'data', shape ({data.shape[1]},); got {arrays['channels'].shape}")
    # names saved as bytes (dtype 'S', as h5py and Python 2 wrote them) read as text, not "b'vib_x'"
    names = [c.decode(errors="replace") if isinstance(c, bytes) else str(c) for c in arrays.get("channels", [f"ch{i}" for i in range(data.shape[1])])]
    check_unique_names(path, names)
    if data.dtype.kind not in "biuf":  # complex too: casting to float32 dropped the imaginary part
        raise EdgeaeError(f"{path}: 'data' is not real numbers ({data.dtype})")
    if not data.shape[1]:
        raise EdgeaeError(f"{path}: no channel columns ('data' has shape {data.shape})")
    # labels and times also under a CSV's column names: the recipe's label column ('anomaly'), or an
    # array saved as 'label', was not taken for the labels, and a model trained on the faulty rows;
    # the recipe's time column ('stamp') was not taken for the times, so hop_ms and row_period were not known
    labels = _first_named(arrays, [*([label] if label else []), "labels", *DEFAULT_LABEL_COLUMNS])
    times = _first_named(arrays, [*([time] if time else []), "times", *DEFAULT_TIME_COLUMNS])
    return Series(data, names, arrays.get(labels), str(path), arrays.get(times)).select(channels)


def _first_named(available, wanted: list[str]) -> str | None:
    """Of the names `available` (a CSV's header, an .npz's arrays), the one that is the first of
    `wanted` in any case; None when there is none."""
    return next((a for w in wanted for a in available if a.lower() == w.lower()), None)


def _read_csv(path: Path, channels, label, time) -> Series:
    """A CSV read row by row into arrays (8 bytes a value): holding every row's cells as text
    first took 880 bytes a row, a gigabyte for 20 minutes of a 1 kHz sensor. A byte-order mark
    (spreadsheets write one before "CSV UTF-8") is not part of the first column's name."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return _parse_csv(path, f, channels, label, time)
    except csv.Error as e:  # a field longer than the csv module takes (128 KB)
        raise EdgeaeError(f"{path}: not a CSV of numbers ({e})") from None
    except UnicodeDecodeError:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
            if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
                raise EdgeaeError(f"{path}: UTF-16 text (a spreadsheet's 'Unicode text'): save it as UTF-8 CSV") from None
            if b"\0" not in head:  # text: say which line is not UTF-8
                f.seek(0)
                for _ in utf8_lines(f, path):
                    pass
        raise EdgeaeError(f"{path}: not a text CSV file") from None


def utf8_lines(lines: Iterable[bytes], source) -> Iterator[str]:
    """Lines of bytes as text, refusing by number a line that is not UTF-8 (a spreadsheet's plain
    "CSV" is Windows-1252, where a degree sign is byte 0xb0); a byte-order mark before the first
    line is dropped (spreadsheets write one before "CSV UTF-8")."""
    for number, line in enumerate(lines, start=1):
        try:
            yield line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise EdgeaeError(f"{source}: line {number} is not UTF-8 text (byte 0x{line[e.start]:02x}): save or send it "
                              "as UTF-8 (a spreadsheet's 'CSV UTF-8')") from None  # fmt: skip


def _parse_csv(path: Path, f, channels, label, time) -> Series:
    header_line, delimiter, lines, _ = csv_header(f)
    if header_line is None:
        raise EdgeaeError(f"{path}: CSV needs a header row and at least one data row")
    header = [h.strip() for h in next(csv.reader([header_line], delimiter=delimiter))]
    rows = (with_decimal_points(row, delimiter) for row in csv.reader(lines, delimiter=delimiter) if row and any(cell.strip() for cell in row))
    first = next(rows, None)
    if first is None:
        raise EdgeaeError(f"{path}: CSV needs a header row and at least one data row")
    check_unique_names(path, header)

    label = _first_named(header, [*([label] if label else []), *DEFAULT_LABEL_COLUMNS])  # as an .npz's; none: unlabelled
    time = (time and _first_named(header, [time])) or time_column(header, first)  # the recipe's, else found as without one
    if channels is None:
        skip = {label, time, "changepoint", ""}
        channels = [c for c in header if c not in skip]
    missing = [c for c in channels if c not in header]
    if missing:
        raise EdgeaeError(
            f"{path}: missing channel column(s) {', '.join(map(repr, missing))} (have: {', '.join(header)})"
        )
    if not channels:
        raise EdgeaeError(f"{path}: no channel columns")

    cols = [header.index(c) for c in channels]
    li = None if label is None else header.index(label)
    ti = header.index(time) if time in header else None
    values, labels, times = array("d"), array("d"), []
    for i, row in enumerate(itertools.chain([first], rows), start=1):
        if len(row) != len(header):
            raise EdgeaeError(f"{path}: row {i} has {len(row)} fields, the header has {len(header)}")
        for j, c in enumerate(cols):
            cell = row[c].strip()
            try:
                values.append(float(cell) if cell else np.nan)
            except ValueError:
                raise EdgeaeError(f"{path}: row {i}, column '{channels[j]}': '{cell}' is not a number") from None
        if li is not None:
            try:
                labels.append(float(row[li]))
            except ValueError:  # True / False looked up only when the cell is not a number, as most files' are
                cell = row[li].strip().lower()
                if cell not in BOOLEANS:
                    raise EdgeaeError(f"{path}: label column '{label}' must hold 0 or 1 (or True / False)") from None
                labels.append(BOOLEANS[cell])
        if ti is not None:
            times.append(row[ti])
    if li is not None and not np.isin(labels, (0, 1)).all():
        raise EdgeaeError(f"{path}: label column '{label}' must hold 0 or 1 (or True / False)")
    values_ = np.frombuffer(values, dtype=np.float64).reshape(-1, len(cols))
    labels_ = None if li is None else np.frombuffer(labels, dtype=np.float64)
    return Series(values_, list(channels), labels_, str(path), None if ti is None else np.array(times))


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def windows(series: Series, length: int, hop: int = 1) -> np.ndarray:
    """Sliding windows of `length` rows every `hop` rows: shape (n, length, channels)."""
    if length < 1 or hop < 1:
        raise EdgeaeError(f"window length and hop must be positive (got {length}, {hop})")
    check_fits(series, length)
    view = np.lib.stride_tricks.sliding_window_view(series.values, length, axis=0)  # (n, C, L)
    return np.ascontiguousarray(view[::hop].transpose(0, 2, 1))


def check_fits(series: Series, length: int) -> None:
    """Refuse a series shorter than one window of `length` rows, naming it."""
    if len(series) < length:
        raise EdgeaeError(f"{series.source}: {len(series)} rows, fewer than one window of {length}")


def window_labels(series: Series, length: int, hop: int = 1) -> np.ndarray | None:
    """Per-window labels: a window is anomalous when its last row is (as in SKAB's protocol)."""
    if series.labels is None:
        return None
    return series.labels[length - 1 :: hop][: (len(series) - length) // hop + 1].copy()


def normal_windows_mask(series: Series, length: int, hop: int = 1) -> np.ndarray:
    """True for windows whose rows are all labelled normal (all True without labels)."""
    return rows_normal_mask(series.labels, len(series), length, hop)


def rows_normal_mask(labels: np.ndarray | None, rows: int, length: int, hop: int = 1) -> np.ndarray:
    """`normal_windows_mask` from the row labels alone (`rows` of them, or None: all normal)."""
    n = (rows - length) // hop + 1
    if labels is None:
        return np.ones(n, dtype=bool)
    anomalous = np.lib.stride_tricks.sliding_window_view(labels, length)[::hop].any(axis=1)
    return ~anomalous[:n]


def rows_windows_mask(series: Series, length: int, hop: int, rows: tuple[int, int]) -> np.ndarray:
    """True for windows whose last row lies in rows [start, stop): how a row range picks windows."""
    last = np.arange(max(0, (len(series) - length) // hop + 1)) * hop + length - 1
    return (last >= rows[0]) & (last < rows[1])


def check_spread(windows: np.ndarray, where: str) -> None:
    """Refuse training windows that are all one window: every score of them alike, a threshold fitted
    on them (the UCL: that score x 4/3; PCA's: 0) separates nothing."""
    if (windows.min(axis=0) == windows.max(axis=0)).all():
        raise EdgeaeError(f"{where}: every training window is the same (one value in each channel throughout: a machine "
                          f"at rest, a sensor off?): no normal spread to fit on; give --train-rows where the machine runs")  # fmt: skip


def highpass_alphas(channels: list[str], taus: dict[str, float]) -> np.ndarray:
    """Per channel the filter's float32 step 1 / tau, 0 for channels that pass unchanged (edgeae's
    filter and the MCU config header both use these)."""
    return np.array([1.0 / taus[c] if c in taus else 0.0 for c in channels], np.float32)


def highpass_rows(rows: Iterable[np.ndarray], channels: list[str], taus: dict[str, float]) -> Iterator[np.ndarray]:
    """Rows with the channels named in `taus` high-passed, causally, one row at a time.

    y = x - level, then level += (x - level) / tau: the level is an exponential moving average
    with a time constant of tau rows, started at the first row. Drift slower than tau (a machine
    warming up) is removed, faster changes are kept; the other channels pass unchanged. In float32,
    as the firmware computes it (the MCU config header has the same filter)."""
    alpha = highpass_alphas(channels, taus)
    level = None
    for row in rows:
        row = np.asarray(row, np.float32)
        if level is None:
            level = np.where(alpha > 0, row, np.float32(0))
        yield row - level
        level = level + alpha * (row - level)


def highpass(series: Series, taus: dict[str, float]) -> Series:
    """The series with `highpass_rows` applied (the same series when `taus` is empty)."""
    if not taus:
        return series
    missing = sorted(set(taus) - set(series.channels))
    if missing:
        raise EdgeaeError(f"{series.source}: no channel(s) {', '.join(map(repr, missing))} to high-pass (have: {', '.join(series.channels)})")
    values = np.array(list(highpass_rows(series.values, series.channels, taus)), np.float32).reshape(series.values.shape)
    return Series(values, series.channels, series.labels, series.source, series.times)


@dataclass
class Normalizer:
    """What turns sensor rows into model input: the high-pass of slow channels (time constants in
    rows, applied to the row stream before windowing), then per-channel standardization
    z = (x - mean) / std fitted on the training windows only."""

    channels: list[str]
    mean: np.ndarray
    std: np.ndarray
    highpass: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, windows_: np.ndarray, channels: list[str], highpass: dict[str, float] | None = None) -> "Normalizer":
        """Standardization fitted on training windows (already high-passed with `highpass`)."""
        flat = windows_.reshape(-1, windows_.shape[-1]).astype(np.float64)
        std = flat.std(axis=0)
        std = np.where(std < CONSTANT_STD, 1.0, std)  # a constant channel stays as is
        return cls(list(channels), flat.mean(axis=0).astype(np.float32), std.astype(np.float32), dict(highpass or {}))

    @classmethod
    def identity(cls, channels: list[str]) -> "Normalizer":
        n = len(channels)
        return cls(list(channels), np.zeros(n, np.float32), np.ones(n, np.float32))

    def __call__(self, windows_: np.ndarray) -> np.ndarray:
        """Standardize windows cut from a high-passed series (see `windows`)."""
        return ((windows_ - self.mean) / self.std).astype(np.float32)

    def prepare(self, series: Series) -> Series:
        """The series as the model sees it before windowing: slow channels high-passed."""
        return highpass(series, self.highpass)

    def prepare_rows(self, rows: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """`prepare` for a stream of rows (the device loop)."""
        return highpass_rows(rows, self.channels, self.highpass) if self.highpass else iter(rows)

    def windows(self, series: Series, length: int, hop: int = 1) -> np.ndarray:
        """Model input from a series of the model's channels: prepared, windowed, standardized."""
        return self(windows(self.prepare(series), length, hop))

    def check_channels(self, channels: list[str], where: str) -> None:
        """Raise when `channels` are not the ones the model was trained on, in order."""
        if list(channels) != self.channels:
            raise EdgeaeError(
                f"{where}: channels {channels} do not match the model's channels {self.channels}"
            )

    def to_dict(self) -> dict:
        d = {"channels": self.channels, "mean": self.mean.tolist(), "std": self.std.tolist()}
        return {**d, "highpass": self.highpass} if self.highpass else d

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        """The normalizer `to_dict` wrote; KeyError, TypeError or ValueError when a part is missing,
        not one finite number per channel (std > 0), or a high-pass is not of a channel (tau >= 1 row)."""
        channels, highpass = d["channels"], d.get("highpass", {})
        if not (isinstance(channels, list) and all(isinstance(c, str) for c in channels) and isinstance(highpass, dict)):
            raise TypeError("channels must be a list of names and highpass a table of them")
        with np.errstate(over="ignore"):  # a number beyond float32 becomes inf, refused below
            mean, std = (np.asarray(d[k], np.float32) for k in ("mean", "std"))
        if mean.shape != (len(channels),) or std.shape != mean.shape or not (np.isfinite(mean).all() and np.isfinite(std).all()
                                                                              and (std > 0).all()):  # fmt: skip
            raise ValueError("mean and std must be one finite number per channel, std > 0")
        taus = {str(k): float(v) for k, v in highpass.items()}
        if not set(taus) <= set(channels) or not all(1 <= t < np.inf for t in taus.values()):
            raise ValueError("highpass must map channels to time constants >= 1 row")
        return cls(list(channels), mean, std, taus)


def to_input(windows_: np.ndarray, input_shape) -> np.ndarray:
    """Reshape (n, length, channels) windows to a model's per-window input shape (e.g. flat)."""
    shape = tuple(int(s) for s in input_shape)
    if int(np.prod(shape)) != int(np.prod(windows_.shape[1:])):
        raise EdgeaeError(
            f"windows of shape {tuple(windows_.shape[1:])} do not fit the model input {shape}"
        )
    return windows_.reshape((len(windows_),) + shape)

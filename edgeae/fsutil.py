"""Atomic output directories and JSON files: a failed command never leaves a half-written output."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import EdgeaeError


def check_replaceable(out: str | Path, marker: str) -> Path:
    """`out`, if `atomic_dir(out, marker)` may replace it; commands call this before their long work."""
    out = Path(out)
    if out.exists() and not (out.is_dir() and ((out / marker).is_file() or not any(out.iterdir()))):
        raise EdgeaeError(f"{out}: exists and is not an earlier output of this command (no {marker}); "
                          "give a new folder, or remove it yourself")  # fmt: skip
    return out


@contextlib.contextmanager
def atomic_dir(out: str | Path, marker: str):
    """Yield a temporary directory beside `out`; on success it replaces `out` in one rename.

    On any exception the temporary directory is removed and an existing `out` is untouched. An
    existing `out` is replaced only when it is empty or an earlier output of the same kind (it
    holds the file `marker`): a folder of anything else is refused up front, never deleted.
    """
    out = check_replaceable(out, marker)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            try:
                os.replace(out, old / "x")
            except OSError:
                old.rmdir()
                raise
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def check_writable(path: str | Path) -> Path:
    """`path`, if `atomic_file(path)` can write it; commands with long work call this first."""
    path = Path(path)
    if not path.parent.is_dir():
        raise EdgeaeError(f"{path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise EdgeaeError(f"{path}: is a folder, not a file")
    return path


@contextlib.contextmanager
def atomic_file(path: str | Path):
    """Yield a temporary path beside `path` (same suffix, for writers that add one); on success it
    replaces `path` in one rename, on any exception it is removed and `path` is untouched. Errors
    name `path`, not the temporary file."""
    path = check_writable(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        if e.filename == str(tmp):
            e.filename = str(path)
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")

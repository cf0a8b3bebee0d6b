"""Atomic output directories and JSON files: a failed command never leaves a half-written output,
and a JSON or TOML document however malformed is its parser's DecodeError (`parse_json`, `parse_toml`).

The temporary paths being written are kept in `PENDING`, so that the SIGTERM / Ctrl-C handler of
`command_scope` can remove them before it exits; installed through `after_swap`, that handler
waits while a finished output is being moved into place, so the swap is never cut in half.

A run killed outright (SIGKILL, the out-of-memory killer) cannot clean up. So each temporary
folder `X` has a lock file `X.lock` beside it, flock'd while its run lives; the kernel drops the
lock when the process dies, and the next command that makes such folders removes those whose lock
is free (`_remove_dead`).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import secrets
import shutil
import signal
import tempfile
import threading
import tomllib
from pathlib import Path

from .errors import EdgeaeError

try:
    import fcntl
except ImportError:  # not POSIX: dead runs' temporary folders are not swept
    fcntl = None

PENDING: set[Path] = set()
LOCK = ".lock"  # suffix of the lock file beside each temporary folder
FULL_BYTES = 1 << 20  # free bytes under which a short write without an errno is taken for a full disk
_swap = {"depth": 0, "deferred": []}


def remove_pending() -> None:
    """Remove every temporary output still being written."""
    for path in list(PENDING):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        PENDING.discard(path)


def after_swap(handler):
    """`handler` as a signal handler that, while `atomic_dir` swaps an output into place, waits for
    the swap to finish. (Blocking the signal is not enough: another thread, TensorFlow's, takes it.)"""

    def wrapped(signum, frame):
        if _swap["depth"]:
            _swap["deferred"].append(signum)
        else:
            handler(signum, frame)

    return wrapped


@contextlib.contextmanager
def deferring_signals():
    """SIGTERM and Ctrl-C wait (`after_swap`) until the block is done: an output being swapped into
    place, and what must go with it, is finished first."""
    _swap["depth"] += 1
    try:
        yield
    finally:
        _swap["depth"] -= 1
        if not _swap["depth"]:
            deferred, _swap["deferred"] = _swap["deferred"], []
            for signum in deferred:
                signal.raise_signal(signum)


@contextlib.contextmanager
def command_scope(prog: str):
    """Around a CLI command: every temporary file goes to a scratch folder of the command's own
    (TensorFlow's too: its converter leaves SavedModel folders behind when cut short), removed at
    the end. SIGTERM and Ctrl-C, which would kill at once and leave temporary folders behind,
    instead remove them and the outputs still being written, say so in one line and exit with
    128 + the signal. Done in the handler rather than by raising into the command: an exception
    raised in a signal handler can land in a finalizer, where Python prints and drops it, and the
    command runs on. (serve installs its own handlers, for a clean shutdown.) A run killed outright
    (SIGKILL, the out-of-memory killer) cannot clean up: the next command removes its scratch."""
    saved_tempdir, saved_env = tempfile.tempdir, os.environ.get("TMPDIR")
    saved_handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    _remove_dead(Path(tempfile.gettempdir()), f"{prog}-*")
    scratch = Path(tempfile.mkdtemp(prefix=f"{prog}-"))
    lock = _lock(scratch)

    def interrupted(signum, frame):
        remove_pending()
        _unlock(scratch, lock)
        os.write(2, f"{prog}: interrupted ({signal.Signals(signum).name}); temporary files removed, no output half-written\n".encode())
        os._exit(128 + signum)

    tempfile.tempdir = os.environ["TMPDIR"] = str(scratch)
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        for sig in saved_handlers:
            signal.signal(sig, after_swap(interrupted))
    try:
        yield
    finally:
        _unlock(scratch, lock)
        tempfile.tempdir = saved_tempdir
        if saved_env is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = saved_env
        if main_thread:
            for sig, handler in saved_handlers.items():
                signal.signal(sig, handler)


def _lock(folder: Path) -> int | None:
    """Mark `folder` as a live run's: the file `<folder>.lock`, flock'd by this process until
    `_unlock` or its death (the kernel drops the lock then, SIGKILL included). It is locked before it
    appears under that name, so a lock file that no process holds marks a dead run's folder, in any
    process namespace sharing this file system. Where locks are not to be had (not POSIX, a file
    system without flock), the folder goes unmarked: never swept, as if not ours."""
    if fcntl is None:
        return None
    fd, staging = tempfile.mkstemp(prefix=f".{folder.name}.", dir=folder.parent)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        os.close(fd)
        os.unlink(staging)
        return None
    os.rename(staging, _lock_path(folder))
    return fd


def _lock_path(folder: Path) -> Path:
    return folder.with_name(folder.name + LOCK)


def _unlock(folder: Path, lock: int | None) -> None:
    """Remove `folder` (if still there), then its lock."""
    shutil.rmtree(folder, ignore_errors=True)
    if lock is not None:
        _lock_path(folder).unlink(missing_ok=True)
        os.close(lock)


def _remove_dead(parent: Path, pattern: str) -> None:
    """Remove the folders in `parent` matching `pattern` whose lock no process holds, and their
    locks; leave live runs' folders, and folders without a lock (not ours, or from an edgeae before
    the locks), alone."""
    if fcntl is None:
        return
    for lock in parent.glob(pattern + LOCK):
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: a live run
            os.close(fd)
            continue
        _unlock(lock.with_name(lock.name.removesuffix(LOCK)), fd)


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
    _remove_dead(out.parent, f".{glob.escape(out.name)}.*.tmp")
    tmp = temp_folder_beside(out)
    lock = _lock(tmp)
    PENDING.update((tmp, _lock_path(tmp)))
    try:
        yield tmp
        with deferring_signals():
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
    except OSError as e:
        _raise_if_full(e, out)
        _name_output(e, tmp, out)
        raise
    finally:
        PENDING.difference_update((tmp, _lock_path(tmp)))
        _unlock(tmp, lock)


def _name_output(e: OSError, tmp: Path, out: Path) -> None:
    """Have an error in writing the temporary `tmp` (a file, or a folder and what is in it) name the
    output `out`: the temporary's name meant nothing to the user, and an error in a write itself (a
    file size limit, an I/O error) named no file at all ("[Errno 27] File too large"). An error
    without an errno (numpy's short write) keeps its message, which a file name would replace."""
    if e.filename is None and e.strerror is not None:
        e.filename = str(out)
    elif str(e.filename) == str(tmp) or str(e.filename).startswith(f"{tmp}{os.sep}"):
        e.filename = str(out) + str(e.filename)[len(str(tmp)) :]


def _raise_if_full(e: OSError, out: Path) -> None:
    """Name the output a full disk stopped: the bare '[Errno 28] No space left on device' said not
    where, and numpy's short write ('32768 requested and 22496 written', no errno) not even why."""
    try:
        full = e.errno in (errno.ENOSPC, errno.EDQUOT) or (e.errno is None and shutil.disk_usage(out.parent).free < FULL_BYTES)
    except OSError:
        full = False
    if full:
        raise EdgeaeError(f"{out}: not written, the disk (or quota) is full ({e.strerror or e}); nothing half-written is left") from None


def temp_folder_beside(out: Path) -> Path:
    """A new hidden folder `.<name>.<random>.tmp` beside `out`, made as mkdir makes folders, with
    the umask's permissions: mkdtemp's, the owner's alone, stayed with the output once renamed, and
    a service running as another user (serve reading an export) could not read it."""
    while True:
        tmp = out.parent / f".{out.name}.{secrets.token_hex(4)}.tmp"
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue


def check_writable(path: str | Path) -> Path:
    """`path`, if `atomic_file(path)` can write it; commands with long work call this first."""
    path = Path(path)
    if not path.parent.is_dir():
        raise EdgeaeError(f"{path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise EdgeaeError(f"{path}: is a folder, not a file")
    return path


@contextlib.contextmanager
def atomic_file(path: str | Path, durable: bool = False):
    """Yield a temporary path beside `path` (same suffix, for writers that add one); on success it
    replaces `path` in one rename, on any exception it is removed and `path` is untouched. Errors
    name `path`, not the temporary file. `durable`: the file and the rename reach the disk before
    this returns (fsync of both), so that a power cut right after keeps them."""
    path = check_writable(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    PENDING.add(tmp)
    try:
        yield tmp
        if durable:
            fsync_path(tmp)
        os.replace(tmp, path)
        if durable:
            fsync_path(path.parent)
    except OSError as e:
        _raise_if_full(e, path)
        _name_output(e, tmp, path)
        raise
    finally:
        PENDING.discard(tmp)
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def only_one(lock: Path, what: str):
    """Run the block only if no other process is in one holding `lock` (a file, created if new,
    kept: removing it would race with the next taker); otherwise an error naming `what`."""
    if fcntl is None:
        yield
        return
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EdgeaeError(f"{what} is running already (it holds {lock})") from None
        yield
    finally:
        os.close(fd)


def fsync_path(path: Path) -> None:
    """Have the kernel write `path` (a file's data, or a folder's entries: a rename into it) to the
    disk. A folder cannot be synced where there is no O_DIRECTORY (Windows): skipped there."""
    if path.is_dir() and not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def parse_json(text: str | bytes, **kwargs):
    """`json.loads` for what edgeae reads from users, files and the network: any malformed JSON is a
    JSONDecodeError, also what Python's parser gives up on otherwise (`_refused`)."""
    try:
        return json.loads(text, **kwargs)
    except json.JSONDecodeError:
        raise
    except (RecursionError, ValueError) as e:
        raise json.JSONDecodeError(_refused(e), text if isinstance(text, str) else "", 0) from None


def parse_toml(text: str) -> dict:
    """`tomllib.loads`, with any malformed TOML a TOMLDecodeError, as `parse_json`'s JSON."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise
    except (RecursionError, ValueError) as e:
        raise tomllib.TOMLDecodeError(_refused(e)) from None


def _refused(e: Exception) -> str:
    """Why a parser gave up on a document (forged or corrupted) other than by its syntax error:
    nesting deeper than it recurses, or an integer longer than Python converts (4300 digits)."""
    return "nested too deeply" if isinstance(e, RecursionError) else str(e).split("; use sys.")[0]

"""Output folders: written whole or not at all, and a folder that is not ours is never deleted."""

import os
from pathlib import Path

import pytest

from edgeae.errors import EdgeaeError
from edgeae.fsutil import atomic_dir, atomic_file


def test_a_failed_write_leaves_the_earlier_output_and_no_temporary(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out, "m.json") as tmp:
        (tmp / "m.json").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(out, "m.json") as tmp:
        (tmp / "m.json").write_text("2")
        raise RuntimeError("failed half-way")
    assert (out / "m.json").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_an_earlier_output_or_an_empty_folder_is_replaced(tmp_path):
    for out in (tmp_path / "earlier", tmp_path / "empty"):
        out.mkdir()
        if out.name == "earlier":
            (out / "m.json").write_text("old")
            (out / "report.html").write_text("old")
        with atomic_dir(out, "m.json") as tmp:
            (tmp / "m.json").write_text("new")
        assert [p.name for p in out.iterdir()] == ["m.json"] and (out / "m.json").read_text() == "new"


def test_a_folder_of_other_files_is_refused_and_kept(tmp_path):
    """`edgeae eval --out ~/thesis` used to replace the folder, deleting what was in it."""
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("precious")
    with pytest.raises(EdgeaeError, match="not an earlier output of this command \\(no m.json\\)"):
        with atomic_dir(out, "m.json") as tmp:
            (tmp / "m.json").write_text("new")
    assert (out / "chapter1.tex").read_text() == "precious" and [p.name for p in tmp_path.iterdir()] == ["thesis"]


def test_atomic_file_keeps_the_old_file_on_failure_and_names_the_target(tmp_path):
    path = tmp_path / "p.npz"
    with atomic_file(path) as tmp:
        assert tmp.suffix == ".npz"  # writers such as np.savez add a suffix that is missing
        tmp.write_text("1")
    with pytest.raises(RuntimeError), atomic_file(path) as tmp:
        tmp.write_text("2")
        raise RuntimeError("failed half-way")
    assert path.read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["p.npz"]
    with pytest.raises(EdgeaeError, match="missing/p.bin: folder .*missing does not exist"):
        with atomic_file(tmp_path / "missing" / "p.bin"):
            pass
    with pytest.raises(EdgeaeError, match="is a folder, not a file"), atomic_file(tmp_path):
        pass
    with pytest.raises(OSError) as e, atomic_file(path) as tmp:
        raise OSError(13, "Permission denied", str(tmp))  # a write refused, named by its target
    assert e.value.filename == str(path) and path.read_text() == "1"
    with pytest.raises(OSError) as e, atomic_file(path):
        raise OSError(27, "File too large")  # a write's own error names no file: it was "[Errno 27] File too large"
    assert e.value.filename == str(path)


def test_errors_in_an_output_folder_name_the_output_not_its_temporary(tmp_path):
    out = tmp_path / "out"
    for error, named in ((lambda tmp: OSError(13, "Permission denied", str(tmp / "model.tflite")), out / "model.tflite"),
                         (lambda tmp: OSError(27, "File too large"), out)):  # fmt: skip
        with pytest.raises(OSError) as e, atomic_dir(out, "m.json") as tmp:
            raise error(tmp)
        assert e.value.filename == str(named)
    with pytest.raises(OSError) as e, atomic_dir(out, "m.json"):
        raise OSError(2, "No such file or directory", str(tmp_path / "data.csv"))  # an input's error is left as it is
    assert e.value.filename == str(tmp_path / "data.csv")


def test_a_full_disk_is_named_with_the_output_it_stopped(tmp_path, monkeypatch):
    """A full disk said '[Errno 28] No space left on device', not where; numpy's short write
    said '32768 requested and 22496 written', not even why. (Seen on a 300 kB tmpfs: train,
    export, simulate, encode --out, results --parquet.)"""
    import errno
    import shutil
    from collections import namedtuple

    for out, write in ((tmp_path / "run", atomic_dir), (tmp_path / "p.bin", atomic_file)):
        with pytest.raises(EdgeaeError, match=f"^{out}: not written, the disk \\(or quota\\) is full \\(No space left on device\\); "
                           "nothing half-written is left$"), write(out, "m.json") if write is atomic_dir else write(out):  # fmt: skip
            raise OSError(errno.ENOSPC, "No space left on device")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(EdgeaeError, match=r"run: not written, the disk \(or quota\) is full \(32768 requested and 22496 written\)"):
        with atomic_dir(tmp_path / "run", "m.json"):
            raise OSError("32768 requested and 22496 written")
    monkeypatch.undo()
    with pytest.raises(OSError, match="32768 requested"), atomic_dir(tmp_path / "run", "m.json"):  # room left: not the disk
        raise OSError("32768 requested and 22496 written")
    assert list(tmp_path.iterdir()) == []


def test_scratch_folders_of_killed_runs_are_removed_by_the_next_command(tmp_path, monkeypatch):
    """SIGKILL (the out-of-memory killer, say) gives a command no chance to remove its scratch
    folder of TensorFlow temporaries; the next command removes it, and only it: a live run's folder
    (its lock held, here by a child process) and folders without a lock stay."""
    import os
    import signal
    import subprocess
    import sys
    import tempfile

    from edgeae.fsutil import LOCK, command_scope

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    live, dead, other = tmp_path / "edgeae-live", tmp_path / "edgeae-dead", tmp_path / "edgeae-other"
    for folder in (live, dead, other):
        folder.mkdir()
        (folder / "saved_model.pb").write_text("x")
    (tmp_path / f"edgeae-dead{LOCK}").touch()
    (tmp_path / f"edgeae-gone{LOCK}").touch()  # killed after removing its folder, before its lock
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               f"fcntl.flock(os.open({str(live) + LOCK!r}, os.O_CREAT | os.O_WRONLY), fcntl.LOCK_EX)\n"
                               "print('locked', flush=True); time.sleep(120)"], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with command_scope("edgeae"):
            scratch = Path(tempfile.gettempdir())
            assert scratch.parent == tmp_path and Path(f"{scratch}{LOCK}").is_file()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["edgeae-live", f"edgeae-live{LOCK}", "edgeae-other"]
        os.kill(holder.pid, signal.SIGKILL)  # the live run is killed outright: its lock goes with it
        holder.wait()
        with command_scope("edgeae"):
            pass
        assert sorted(p.name for p in tmp_path.iterdir()) == ["edgeae-other"]
    finally:
        holder.kill()
        holder.wait()


def test_a_file_system_without_locks_only_loses_the_sweep(tmp_path, monkeypatch):
    """flock fails on some network file systems (ENOLCK): a command must still run, its folders
    unmarked, so never swept, and still removed at its end."""
    import errno
    import tempfile

    from edgeae import fsutil

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(fsutil.fcntl, "flock", no_locks)
    with fsutil.command_scope("edgeae"):
        assert [p.name for p in tmp_path.iterdir()] == [Path(tempfile.gettempdir()).name]
        with atomic_dir(tmp_path / "out", "m.json") as tmp:
            (tmp / "m.json").write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_half_written_output_of_a_killed_run_is_removed_by_the_next_write(tmp_path):
    """atomic_dir writes into a hidden folder beside the output; a run SIGKILLed mid-write leaves it
    behind, and the next atomic_dir to the same output removes it."""
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "dist"
    writer = subprocess.Popen([sys.executable, "-c", "import time\nfrom edgeae.fsutil import atomic_dir\n"
                               f"with atomic_dir({str(out)!r}, 'm.json') as tmp:\n"
                               "    (tmp / 'half.bin').write_bytes(bytes(1000)); print('writing', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert writer.stdout.readline().strip() == "writing"
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        assert len(list(tmp_path.glob(".dist.*.tmp"))) == 1 and not out.exists()
        with atomic_dir(out, "m.json") as tmp:
            (tmp / "m.json").write_text("{}")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["dist"] and os.listdir(out) == ["m.json"]
    finally:
        writer.kill()
        writer.wait()


def test_a_sequence_file_reaches_the_disk_before_its_packets_leave(tmp_path, monkeypatch):
    """`encode --seq-file` replaced the file in one rename but left it to the kernel to write: a
    power cut seconds later could bring back the old number, and the packets sent meanwhile be
    sent again as replays. The file's data is synced before the rename, the folder after."""
    from edgeae.device import read_seq_file, write_seq_file

    events = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))), replace(a, b))[1])
    write_seq_file(tmp_path / "seq7.json", 7, 42)
    assert events == [("fsync", str(tmp_path / ".seq7.tmp.json")), ("replace", str(tmp_path / "seq7.json")), ("fsync", str(tmp_path))]
    assert read_seq_file(tmp_path / "seq7.json", 7) == 42


def test_output_folders_have_the_umasks_permissions(tmp_path):
    """Output folders were made by mkdtemp, for the owner alone (0700), and kept that once renamed:
    serve running as a service user could not read an export another user made, nor a web server
    a report."""
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "out", "m.json") as tmp:
            (tmp / "m.json").write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755

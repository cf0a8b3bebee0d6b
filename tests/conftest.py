"""Shared fixtures: small simulated recordings and one small trained + exported model."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from edgeae import recipe, simulate

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def small_recipe(kind: str = "dense", **model) -> recipe.Recipe:
    """A recipe small enough to train, prune, export and verify in a few seconds."""
    m = {"kind": kind, "code_size": 4, **model}
    if kind == "dense":
        m.setdefault("hidden", [32])
    else:
        m.setdefault("filters", [8, 8])
    return recipe.from_dict(
        {
            "model": m,
            "data": {"window": 32, "hop": 8},
            "train": {"epochs": 4, "batch_size": 64, "patience": 3},
            "prune": {"epochs": 3},
        },
        name=f"small-{kind}",
    )


def save_npz(path: Path, series) -> Path:
    from edgeae.data import write_npz

    return write_npz(series, path)


@pytest.fixture(scope="session")
def sim_train(tmp_path_factory) -> Path:
    return save_npz(tmp_path_factory.mktemp("data") / "train.npz", simulate.machine(seconds=40, seed=0))


@pytest.fixture(scope="session")
def sim_test(tmp_path_factory) -> Path:
    return save_npz(tmp_path_factory.mktemp("data") / "test.npz", simulate.machine(seconds=40, seed=1))


@pytest.fixture(scope="session")
def sim_test_files(sim_test) -> Path:
    """sim_test as a logger's two files in a folder: a.npz its rows 0:30000 (two faults), b.npz
    the rest (normal rows, then two more faults)."""
    from edgeae.data import read_series

    s, folder = read_series(sim_test), sim_test.parent / "test_files"
    folder.mkdir()
    save_npz(folder / "a.npz", s.rows(0, 30_000)), save_npz(folder / "b.npz", s.rows(30_000, None))
    return folder


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, sim_train) -> Path:
    from edgeae.train import train

    return train(small_recipe(), sim_train, tmp_path_factory.mktemp("runs") / "small", sparsity=0.5, progress=False)


@pytest.fixture(scope="session")
def small_export(tmp_path_factory, small_run) -> Path:
    from edgeae.export import export

    return export(small_run, tmp_path_factory.mktemp("dist") / "small")


class Stderr:
    """A running command's stderr lines, read as they come (a thread), to wait on."""

    def __init__(self, proc):
        self.proc, self.lines = proc, []
        self.reader = threading.Thread(target=lambda: [self.lines.append(line) for line in proc.stderr], daemon=True)
        self.reader.start()

    def wait_for(self, text: str = "", until=lambda: True, timeout: float = 60) -> None:
        """Until a line contains `text` and `until()` holds (once the command has exited: in
        all it wrote); fail, never block, otherwise."""
        deadline = time.monotonic() + timeout
        while not (any(text in line for line in self.lines) and until()):
            if self.proc.poll() is not None and not self.reader.is_alive():
                pytest.fail(f"exited {self.proc.returncode} with no line with {text!r}: {''.join(self.lines)[-500:]}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"no line with {text!r} in {timeout:g} s: {''.join(self.lines)[-500:]}")
            time.sleep(0.1)

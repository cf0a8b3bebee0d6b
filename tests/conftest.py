"""Shared fixtures: small simulated recordings and one small trained + exported model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
    np.savez(path, data=series.values, channels=np.array(series.channels), labels=series.labels)
    return path


@pytest.fixture(scope="session")
def sim_train(tmp_path_factory) -> Path:
    return save_npz(tmp_path_factory.mktemp("data") / "train.npz", simulate.machine(seconds=40, seed=0))


@pytest.fixture(scope="session")
def sim_test(tmp_path_factory) -> Path:
    return save_npz(tmp_path_factory.mktemp("data") / "test.npz", simulate.machine(seconds=40, seed=1))


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, sim_train) -> Path:
    from edgeae.train import train

    return train(small_recipe(), sim_train, tmp_path_factory.mktemp("runs") / "small", sparsity=0.5, progress=False)


@pytest.fixture(scope="session")
def small_export(tmp_path_factory, small_run) -> Path:
    from edgeae.export import export

    return export(small_run, tmp_path_factory.mktemp("dist") / "small")

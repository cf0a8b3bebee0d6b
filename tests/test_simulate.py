import numpy as np
import pytest

from edgeae import simulate
from edgeae.errors import EdgeaeError


def test_deterministic_and_labelled():
    a = simulate.machine(seconds=10, seed=3)
    b = simulate.machine(seconds=10, seed=3)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.channels == simulate.CHANNELS
    assert a.values.shape == (10000, 4)
    assert 0.2 < a.labels.mean() < 0.3  # four faults in the second half, with gaps
    assert not np.array_equal(a.values, simulate.machine(seconds=10, seed=4).values)


def test_each_fault_raises_vibration_energy():
    fs, sched = 1000, [("outer_race", 2, 4), ("inner_race", 6, 8), ("imbalance", 10, 12), ("looseness", 14, 16)]
    s = simulate.machine(seconds=18, seed=0, schedule=sched)
    healthy = np.var(s.values[: 2 * fs, 0])
    for _, start, end in sched:
        assert np.var(s.values[start * fs : end * fs, 0]) > 1.5 * healthy


def test_outer_race_impacts_at_bpfo():
    fs = 1000
    s = simulate.machine(seconds=8, seed=0, schedule=[("outer_race", 0, 8)], severity=3.0)
    env = np.abs(s.values[:, 0] - s.values[:, 0].mean())
    spec = np.abs(np.fft.rfft(env - env.mean()))
    freqs = np.fft.rfftfreq(len(env), 1 / fs)
    band = (freqs > 60) & (freqs < 120)
    peak = freqs[band][np.argmax(spec[band])]
    assert abs(peak - simulate.BPFO_ORDER * 24.6) < 5  # speed drifts +-4 %


@pytest.mark.parametrize("seconds", [0, -5, 0.5, float("nan"), float("inf")])
def test_too_short_or_not_a_number_is_refused(seconds):
    with pytest.raises(EdgeaeError, match="at least 1 second"):
        simulate.machine(seconds=seconds)

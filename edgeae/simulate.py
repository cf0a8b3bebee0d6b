"""The embedded default data: a simulated sensor node on a rotating machine.

A motor drives a shaft carrying a rolling-element bearing. The node samples at `fs` Hz:

- `vib_x`, `vib_y` (g): two accelerometers on the bearing housing, 90 degrees apart. Healthy
  vibration is the shaft rotation frequency f_r and its 2x and 3x harmonics (residual
  imbalance and misalignment), the motor's twice-line-frequency hum, and broadband noise.
- `current` (A): one motor phase, a line-frequency sine whose amplitude follows the load.
- `temperature` (degC): bearing housing, a slow first-order response to the load.

Speed and load drift slowly (random-phase oscillations of a tenth to a third of the recording),
as on a pump following demand.

Faults, each in a labelled segment (label 1), their extra vibration scaled by `severity` (1 in the
demo; the README's "Fault size" table shows what the demo's export catches at smaller ones):

- `outer_race`: a spall on the fixed outer race. Every ball passing it gives an impact, at the
  ball-pass frequency BPFO = (n/2) f_r (1 - d/D cos a), which rings the housing's structural
  resonance (an exponentially decaying sine, here at `resonance` Hz).
- `inner_race`: a spall on the rotating inner race: impacts at BPFI = (n/2) f_r (1 + d/D cos a),
  amplitude-modulated at f_r because the spall passes in and out of the load zone.
- `imbalance`: a larger 1x component, in quadrature on the two axes.
- `looseness`: many harmonics of f_r and a half-order sub-harmonic, with clipping-like impacts.

The bearing geometry is that of a 6205 deep-groove ball bearing (9 balls, d = 7.94 mm,
D = 39.04 mm, contact angle 0), which gives BPFO ~ 3.59 f_r and BPFI ~ 5.41 f_r.
Everything is seeded: the same arguments give the same data.

`save` writes a recording as `edgeae simulate` does: CSV or .npz with a time column (from a date
it is given, START for the demo's: replayed through `edgeae encode`, its packets carry that date).
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np

from .data import Series, write_npz
from .errors import EdgeaeError
from .fsutil import atomic_file

CHANNELS = ["vib_x", "vib_y", "current", "temperature"]
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the first time of a recording unless told (`edgeae simulate --start`)
FAULTS = ("outer_race", "inner_race", "imbalance", "looseness")

N_BALLS, BALL_D, PITCH_D = 9, 7.94, 39.04
BPFO_ORDER = N_BALLS / 2 * (1 - BALL_D / PITCH_D)
BPFI_ORDER = N_BALLS / 2 * (1 + BALL_D / PITCH_D)


def default_schedule(seconds: float, kinds: tuple[str, ...] = FAULTS) -> list[tuple[str, float, float]]:
    """Faults as (kind, start s, end s): the first half is healthy, then each of `kinds` in turn
    with healthy gaps between."""
    half = seconds / 2
    seg = seconds / 2 / (2 * max(len(kinds), 1))
    return [(kind, half + (2 * i + 0.5) * seg, half + (2 * i + 1.5) * seg) for i, kind in enumerate(kinds)]


def machine(
    seconds: float = 120.0,
    fs: float = 1000.0,
    seed: int = 0,
    shaft_hz: float = 24.6,
    line_hz: float = 50.0,
    resonance: float = 310.0,
    severity: float = 1.0,
    schedule: list[tuple[str, float, float]] | None = None,
) -> Series:
    """Simulate `seconds` of the sensor node; returns a labelled `Series` (see module doc)."""
    if not 1 <= seconds < float("inf"):  # also false for NaN
        raise EdgeaeError(f"the simulated recording must last at least 1 second, got {seconds}")
    if not 0 <= severity < float("inf"):
        raise EdgeaeError(f"the fault severity must be a number >= 0 (1 is the demo's), got {severity}")
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fs))
    t = np.arange(n) / fs
    schedule = default_schedule(seconds) if schedule is None else schedule
    unknown = {k for k, _, _ in schedule} - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown fault kind(s) {sorted(unknown)}; known: {FAULTS}")

    # Slow operating-point drift: speed +-4 %, load 0.6..1.0, each a sum of random-phase
    # oscillations with periods of a tenth to a third of the recording, so that any healthy
    # stretch of a few periods visits the whole operating range.
    def drift(scale: float) -> np.ndarray:
        periods = seconds / rng.uniform(3, 10, 4)
        x = sum(np.sin(2 * np.pi * t / p + rng.uniform(0, 2 * np.pi)) for p in periods)
        return x / np.abs(x).max() * scale

    speed = shaft_hz * (1 + drift(0.04))
    load = 0.8 + drift(0.2)
    phase = 2 * np.pi * np.cumsum(speed) / fs  # shaft angle

    vx = 0.05 * np.sin(phase) + 0.02 * np.sin(2 * phase + 0.7) + 0.01 * np.sin(3 * phase + 1.3)
    vy = 0.05 * np.cos(phase) + 0.02 * np.cos(2 * phase + 0.7) + 0.01 * np.cos(3 * phase + 1.3)
    hum = 0.01 * load * np.sin(2 * np.pi * 2 * line_hz * t)
    vx, vy = vx + hum, vy + 0.8 * hum

    labels = np.zeros(n, dtype=np.int8)
    for kind, start, end in schedule:
        seg = (t >= start) & (t < end)
        labels[seg] = 1
        fx, fy = _fault(kind, t, phase, speed, fs, resonance, rng)
        vx = vx + severity * fx * seg
        vy = vy + severity * fy * seg

    vx = vx + rng.normal(0, 0.02, n)
    vy = vy + rng.normal(0, 0.02, n)
    current = 10.0 * load * np.sin(2 * np.pi * line_hz * t) + rng.normal(0, 0.1, n)
    # First-order thermal response to load (time constant 20 s) around 45 degC.
    temp = np.empty(n)
    temp[0] = 45 + 10 * (load.mean() - 0.8)  # in steady state from the start: no warm-up transient
    alpha = 1 / (20 * fs)
    for i in range(1, n):
        temp[i] = temp[i - 1] + alpha * (45 + 10 * (load[i] - 0.8) - temp[i - 1])
    temp = temp + rng.normal(0, 0.05, n)

    values = np.stack([vx, vy, current, temp], axis=1)
    return Series(values, list(CHANNELS), labels, source=f"simulate.machine(seed={seed})")


def _fault(kind, t, phase, speed, fs, resonance, rng):
    """Extra vibration (x, y) of one fault over the whole time axis."""
    if kind == "imbalance":
        return 0.12 * np.sin(phase), 0.12 * np.cos(phase)
    if kind == "looseness":
        x = sum(0.03 / k * np.sin(k * phase + k) for k in range(2, 11)) + 0.04 * np.sin(phase / 2)
        return x, 0.7 * x
    order = BPFO_ORDER if kind == "outer_race" else BPFI_ORDER
    defect_angle = phase * order  # impacts at the defect frequency
    hits = np.nonzero(np.diff(np.floor(defect_angle / (2 * np.pi))) > 0)[0] + 1
    impulses = np.zeros(len(t))
    amp = 0.6 * (1 + 0.1 * rng.normal(size=len(hits)))
    if kind == "inner_race":
        amp = amp * (0.6 + 0.4 * np.cos(phase[hits]))  # load-zone modulation at f_r
    impulses[hits] = amp
    ring_t = np.arange(int(0.02 * fs)) / fs
    ring = np.exp(-ring_t * 2 * np.pi * resonance * 0.05) * np.sin(2 * np.pi * resonance * ring_t)
    x = np.convolve(impulses, ring)[: len(t)]
    return x, 0.6 * x


def save(s: Series, path: str | Path, start: float, fs: float = 1000.0) -> None:
    """Write `s` to `path` (temporary file, then renamed), each row with its time from Unix second
    `start`, `fs` rows a second (an export trained on it keeps that rate): .npz (data, channels,
    labels, times in Unix seconds), or CSV with a header row, the time (ISO 8601, UTC, to the
    millisecond), the channels and the label."""
    with atomic_file(path) as tmp:
        if tmp.suffix == ".npz":
            write_npz(replace(s, times=start + np.arange(len(s)) / fs), tmp)
            return
        ms = np.round(start * 1000 + np.arange(len(s)) * (1000 / fs)).astype("datetime64[ms]")
        rows = io.StringIO()
        np.savetxt(rows, np.column_stack([s.values, s.labels]), delimiter=",", fmt=["%.5g"] * len(s.channels) + ["%d"])
        with open(tmp, "w") as f:
            f.write(",".join(["time", *s.channels, "label"]) + "\n")
            f.writelines(f"{t},{row}\n" for t, row in zip(np.datetime_as_string(ms, unit="ms", timezone="UTC"), rows.getvalue().splitlines()))

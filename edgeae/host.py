"""The host half without a database: packets in, readings out (numpy and LiteRT only).

`edgeae serve` stores these readings in SQLite. A gateway that sends them elsewhere (its own
database, a dashboard, an alarm) uses `Host` directly:

    host = edgeae.Host("dist/pump")                # the export's decoder and anomaly scorer
    packets = [host.decode(raw) for raw in raws]   # a bad one raises wire.PacketError, naming why
    for r in host.read(packets):
        print(r.packet.sensor, r.packet.seq, r.packet.timestamp, r.score, r.anomaly)

Sequence numbers (replays, gaps, reordering) are the caller's to track: `serve` does it in its
database. `Hosts(["dist/v1", "dist/v2"])` does the same for several exports at once, each packet
by the export whose model id it carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import wire
from .errors import EdgeaeError
from .manifest import Export
from .pipeline import Pipeline
from .score import HOST_MODES, SCORER_FILE, AnomalyScorer
from .score import load as load_scorer


@dataclass(frozen=True)
class Reading:
    """One packet, decoded and scored."""

    packet: wire.Packet
    reconstruction: np.ndarray  # (window rows, channels), in sensor units
    score: float  # NaN when the scorer needs the residual byte and the packet has none (see `scored`)
    anomaly: bool  # score above the threshold for its sensor (`AnomalyScorer.threshold_for`)

    @property
    def scored(self) -> bool:
        return not np.isnan(self.score)

    @property
    def rms(self) -> np.ndarray:
        """The reconstruction's RMS per channel, in sensor units."""
        return np.sqrt(np.mean(self.reconstruction**2, axis=0))


class Host:
    """An export's decoder and anomaly scorer (scorer.json from `edgeae calibrate`, or a residual
    scorer fitted on the export's reference windows; a sensor judged by its own threshold when
    the scorer has one for it). `keys`, {sensor: key}, makes `decode` require and check each
    packet's HMAC tag."""

    def __init__(self, export_dir: str | Path, keys: dict[int, bytes] | None = None):
        self.export = Export.open(export_dir)
        self.pipe = Pipeline(self.export)
        self.model_id = self.export.model_id
        self.keys = None if keys is None else {s: wire.check_key(k, f"sensor {s}'s key") for s, k in keys.items()}
        calibrated = load_scorer(self.export)
        self.scorer_source = SCORER_FILE if calibrated else "default"  # which one judges: said by eval
        self.scorer = calibrated or default_scorer(self.pipe)
        if self.scorer.mode not in HOST_MODES:
            raise EdgeaeError(f"the export's scorer uses mode '{self.scorer.mode}', which needs raw windows; "
                              f"packets carry codes and residuals (calibrate with --mode {', '.join(HOST_MODES)})")  # fmt: skip

    def decode(self, raw: bytes) -> wire.Packet:
        """A packet's bytes, validated (length, version, CRC, tag, this export's model id and code size)."""
        return self.accept(wire.decode(raw, self.keys, {self.model_id}))

    def accept(self, p: wire.Packet) -> wire.Packet:
        """`p`, decoded with this export's model id, if its code has the export's size."""
        if len(p.code) != self.export.manifest["code_size"]:  # the model id is public: anyone can forge it without keys
            raise wire.PacketError(wire.BAD_LENGTH, f"code of {len(p.code)} values, this export's has {self.export.manifest['code_size']}")
        return p

    def read(self, packets: list[wire.Packet]) -> list[Reading]:
        """Decoded packets, reconstructed and scored in one batch. A packet without the residual
        byte (a device running the encoder alone) is scored only by a scorer of codes alone (mode
        'code'); under any other it is reconstructed and left unscored, and the others are scored."""
        if not packets:
            return []
        codes = np.array([p.code for p in packets], dtype=np.int16)
        recon = self.pipe.reconstruct(self.pipe.packet_features(codes, None).code) * self.pipe.norm.std + self.pipe.norm.mean
        needs_residual = self.scorer.mode != "code"
        scored = np.array([p.residual is not None or not needs_residual for p in packets])
        scores = np.full(len(packets), np.nan)
        if scored.any():
            residual = np.array([p.residual for p in packets if p.residual is not None]) if needs_residual else None
            scores[scored] = self.scorer.score_samples(self.pipe.packet_features(codes[scored], residual))
        return [Reading(p, r, float(s), bool(s > self.scorer.threshold_for(p.sensor))) for p, r, s in zip(packets, recon, scores)]


class Hosts:
    """Several exports' `Host`s: each packet is decoded, reconstructed and scored by the export whose
    model id it carries (a fleet moving to a new model sends packets of both)."""

    def __init__(self, export_dirs, keys: dict[int, bytes] | None = None):
        self.keys, self.by_id = keys, {}  # model id -> Host
        for d in export_dirs:
            host = Host(d, keys)
            if host.model_id in self.by_id:
                raise EdgeaeError(f"{d}: the same export as {self.by_id[host.model_id].export.path} (model id {host.model_id:08x})")
            self.by_id[host.model_id] = host

    def decode(self, raw: bytes) -> wire.Packet:
        """A packet's bytes, validated as `Host.decode` does, by the export of its model id."""
        p = wire.decode(raw, self.keys, set(self.by_id))
        return self.by_id[p.model_id].accept(p)

    def read(self, packets: list[wire.Packet]) -> list[Reading]:
        """`Host.read` of each export's packets, in one batch each, in the packets' order."""
        readings: list = [None] * len(packets)
        for mid, host in self.by_id.items():
            mine = [i for i, p in enumerate(packets) if p.model_id == mid]
            for i, r in zip(mine, host.read([packets[i] for i in mine])):
                readings[i] = r
        return readings


def default_scorer(pipe: Pipeline) -> AnomalyScorer:
    """A residual scorer fitted on the export's reference (normal validation) windows."""
    windows = pipe.export.reference()[0].reshape(-1, pipe.export.window, len(pipe.export.channels))
    return AnomalyScorer("residual").fit(pipe.offline_features(windows))

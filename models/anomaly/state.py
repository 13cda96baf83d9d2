"""Everything the pipeline knows about each piece of equipment, and its checkpoints.

One :class:`EquipmentState` per equipment id holds its sensors, normal levels
(:class:`~.features.Baseline`), River detector, alert state (hysteresis),
threshold calibration, recent frames (so that maintenance labels can teach the
detector) and alert history (so that they can judge alerts). It is small (tens
of kB, mostly the detector's trees) and bounded: nothing in it grows with time.

:class:`AnomalyState` is the collection, with a checkpoint API for either way
of making it durable:

* the whole state to a file (``save``/``load``, written atomically) or to bytes;
* one equipment at a time (``dump``/``restore``), e.g. as the value of a Faust
  table keyed by equipment id, written once per batch for the equipment it touched
  (``touched`` lists them since the last ``clear_touched``).

Checkpoints are pickles (zlib-compressed): load only files this process family
wrote (the worker's state dir), never bytes from an untrusted source.

>>> st = AnomalyState()
>>> st.get_or_create("pump-1", ["a", "b"], AnomalyConfig(warmup_frames=50)).sensors
['a', 'b']
>>> AnomalyState.from_bytes(st.to_bytes())["pump-1"].sensors
['a', 'b']
"""

from __future__ import annotations

import pickle
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..atomic import write_atomic
from .config import AnomalyConfig
from .detector import OnlineDetector
from .features import Baseline
from .hysteresis import Hysteresis

CHECKPOINT_VERSION = 1
MAX_EPISODES = 100


class CheckpointError(ValueError):
    """A checkpoint that cannot be read (corrupt, or written by an incompatible version)."""


@dataclass(slots=True)
class Episode:
    """One alert: when it was raised and cleared, how strong it got, and what maintenance said."""

    raised_ts: float
    cleared_ts: float | None = None
    peak: float = 0.0  # highest score ratio (1 = threshold) while it was up
    verdict: bool | None = None  # True: confirmed anomaly, False: rejected (normal operation)


@dataclass(slots=True)
class Recent:
    """The last frames of an equipment (bounded): time, score ratio, alert state, deviations."""

    size: int
    ts: np.ndarray = field(default_factory=lambda: np.empty(0))
    ratio: np.ndarray = field(default_factory=lambda: np.empty(0))
    alert: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=bool))
    deviations: np.ndarray | None = None  # (rows, sensors) float32

    def extend(self, ts: np.ndarray, ratio: np.ndarray, alert: np.ndarray, deviations: np.ndarray) -> None:
        keep = self.size
        self.ts = np.concatenate([self.ts, ts])[-keep:]
        self.ratio = np.concatenate([self.ratio, ratio])[-keep:]
        self.alert = np.concatenate([self.alert, alert])[-keep:]
        dev = deviations.astype(np.float32)
        if self.deviations is not None and self.deviations.shape[1] == dev.shape[1]:
            dev = np.concatenate([self.deviations, dev])
        self.deviations = dev[-keep:]


class EquipmentState:
    """The state of one piece of equipment (see module doc)."""

    def __init__(self, equipment_id: str, sensors: list[str], config: AnomalyConfig, warmup: int | None = None) -> None:
        self.equipment_id = equipment_id
        self.sensors = list(sensors)
        self.index = {s: i for i, s in enumerate(self.sensors)}
        self.keys = tuple(self.sensors)  # a frame whose readings have exactly these keys, in order: fast path
        self.baseline = Baseline.from_config(len(self.sensors), warmup or config.warmup_frames, config)
        self.detector: OnlineDetector | None = None
        self.hysteresis = Hysteresis(config.raise_after, config.clear_after)
        self.scale = 1.0  # the ONNX score's threshold, relative to the model's (from this equipment's warm-up)
        self.gain = 1.0  # sensitivity learnt from maintenance labels (> 1: fewer alerts)
        self.scale_version: int | None = None  # model version `scale` was calibrated with
        self.calibration: np.ndarray | None = None  # warm-up deviations (float32): recalibrate on a model swap
        self.recent = Recent(config.feedback_frames)
        self.episodes: list[Episode] = []
        self.ignored: set[str] = set()  # sensors first seen after warm-up: not scored
        self.frames = 0
        self.last_ts = 0.0
        self.confirmed = 0
        self.rejected = 0

    @property
    def calibrated(self) -> bool:
        return self.baseline.calibrated

    def add_sensor(self, name: str) -> bool:
        """Accept a new sensor during warm-up; after it, the sensor is ignored (returns False)."""
        if self.calibrated:
            self.ignored.add(name)
            return False
        self.index[name] = len(self.sensors)
        self.sensors.append(name)
        self.keys = tuple(self.sensors)
        self.baseline.add_sensor()
        return True

    def open_episode(self, ts: float, ratio: float) -> Episode:
        ep = Episode(raised_ts=ts, peak=ratio)
        self.episodes.append(ep)
        del self.episodes[:-MAX_EPISODES]
        return ep

    @property
    def current_episode(self) -> Episode | None:
        if self.episodes and self.episodes[-1].cleared_ts is None:
            return self.episodes[-1]
        return None


class AnomalyState:
    """Per-equipment states by equipment id, with checkpoints (see module doc)."""

    def __init__(self) -> None:
        self._states: dict[str, EquipmentState] = {}
        self.touched: set[str] = set()

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, equipment_id: object) -> bool:
        return equipment_id in self._states

    def __getitem__(self, equipment_id: str) -> EquipmentState:
        return self._states[equipment_id]

    def __iter__(self) -> Iterator[EquipmentState]:
        return iter(self._states.values())

    def get(self, equipment_id: str) -> EquipmentState | None:
        return self._states.get(equipment_id)

    def get_or_create(self, equipment_id: str, sensors: list[str], config: AnomalyConfig,
                      warmup: int | None = None) -> EquipmentState:
        st = self._states.get(equipment_id)
        if st is None:
            st = self._states[equipment_id] = EquipmentState(equipment_id, sensors, config, warmup)
        return st

    def clear_touched(self) -> set[str]:
        touched, self.touched = self.touched, set()
        return touched

    # --- whole state -------------------------------------------------------------

    def to_bytes(self) -> bytes:
        return _pack(self._states)

    @classmethod
    def from_bytes(cls, data: bytes) -> AnomalyState:
        state = cls()
        states = _unpack(data)
        if not isinstance(states, dict):
            raise CheckpointError("not an anomaly state checkpoint")
        state._states = states
        return state

    def save(self, path: str | Path) -> Path:
        """Write atomically (a reader sees the old file or the new one, never half of one)."""
        return write_atomic(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> AnomalyState:
        return cls.from_bytes(Path(path).read_bytes())

    # --- one equipment -------------------------------------------------------------

    def dump(self, equipment_id: str) -> bytes:
        return _pack(self._states[equipment_id])

    def restore(self, equipment_id: str, data: bytes) -> EquipmentState:
        st = _unpack(data)
        if not isinstance(st, EquipmentState) or st.equipment_id != equipment_id:
            raise CheckpointError(f"not the checkpoint of equipment {equipment_id!r}")
        self._states[equipment_id] = st
        return st

    def drop(self, equipment_id: str) -> None:
        """Forget an equipment (a partition moved to another worker, or it was decommissioned)."""
        self._states.pop(equipment_id, None)


def _pack(obj: object) -> bytes:
    return zlib.compress(pickle.dumps({"version": CHECKPOINT_VERSION, "state": obj}, protocol=5), 3)


def _unpack(data: bytes) -> object:
    try:
        payload = pickle.loads(zlib.decompress(data))
    except Exception as exc:  # zlib.error, pickle errors, attribute errors of renamed classes...
        raise CheckpointError(f"unreadable anomaly checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"anomaly checkpoint version {payload.get('version') if isinstance(payload, dict) else '?'}"
                              f" is not {CHECKPOINT_VERSION}")
    return payload["state"]

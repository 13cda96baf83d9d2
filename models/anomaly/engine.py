"""The anomaly scoring loop, without Kafka: frames in, scores, flags and alert changes out.

:class:`AnomalyEngine` is what :class:`streams.anomaly.AnomalyPipeline` runs on
every micro-batch, and what training (threshold calibration) and evaluation run
too, so that the numbers they report are the worker's. Per batch:

1. frames are grouped by equipment; each group becomes a ``(frames, sensors)``
   matrix in the equipment's sensor order (NaN for a missing reading);
2. the equipment's :class:`~.features.Baseline` turns it into deviations (the
   first ``warmup_frames`` of an equipment calibrate it instead: status
   ``calibrating``, score 0);
3. the deviations of *all* equipment go through the ONNX model in one call; it
   returns each sensor's reconstruction error, normalized so that normal
   operation averages 1 (sensors the model does not know contribute their
   squared deviation, the same scale);
4. ``error = sqrt(mean contribution)``, divided by the model's threshold times
   the equipment's own calibration gives the model's ratio (1 = threshold);
   the River detector gives its ratio the same way; the blend
   ``(1 - w) * model + w * detector``, divided by the label-learnt ``gain``,
   is the frame's ``ratio``; ``score = ratio / (1 + ratio)`` in [0, 1), so
   the flag threshold is always 0.5;
5. hysteresis turns per-frame ``ratio >= 1`` into the equipment's alert state;
   clearly normal frames (``ratio < learn_below``, no alert) update the baseline
   and teach the River detector; the others move the baseline's level only, slowly.

>>> from streams.records import SensorFrame
>>> eng = AnomalyEngine(AnomalyConfig(warmup_frames=60, raise_after=3, clear_after=3))
>>> rng = np.random.default_rng(0)
>>> frames = [SensorFrame(f"f{i}", 1e9 + i, "pump-1", {"a": float(v), "b": float(w)})
...           for i, (v, w) in enumerate(rng.normal(size=(120, 2)))]
>>> out = eng.score(frames)
>>> int(out.calibrating.sum()), bool(out.flag.any())
(60, False)
>>> fault = [SensorFrame(f"g{i}", 1e9 + 200 + i, "pump-1", {"a": 8.0, "b": float(rng.normal())}) for i in range(40)]
>>> out = eng.score(fault)
>>> [(e.kind, e.sensors[0]["name"]) for e in out.events]
[('raise', 'a')]
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .config import AnomalyConfig
from .detector import OnlineDetector
from .feedback import MaintenanceLabel, apply_label
from .state import AnomalyState, Episode, EquipmentState

NAN = math.nan


def model_error(contrib: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The model's error per frame: the RMS of the known sensors' contributions.

    >>> model_error(np.array([[4.0, 0.0, 1.0, 1.0]]), np.ones(4, dtype=bool)).round(3).tolist()
    [1.225]
    """
    if not known.any():
        return np.zeros(len(contrib))
    return np.sqrt(contrib[:, known].mean(axis=1))


SCALE_BOUNDS = (1.0, 4.0)  # an equipment's threshold vs the model's: never more trigger-happy than validated


@dataclass(slots=True)
class AlertEvent:
    """An alert raised or cleared at frame ``index`` of the batch."""

    index: int
    kind: str  # "raise" | "clear"
    equipment_id: str
    ratio: float
    sensors: list[dict[str, Any]]  # most responsible first: name, share of the error, deviation (sd)
    episode: Episode


@dataclass(slots=True)
class Scored:
    """One batch's results, aligned with the input frames."""

    score: np.ndarray  # [0, 1); 0.5 = threshold
    ratio: np.ndarray  # score / (1 - score): 1 = threshold
    flag: np.ndarray  # the equipment is in alert (after hysteresis)
    anomalous: np.ndarray  # this frame alone is over the threshold
    calibrating: np.ndarray  # the equipment is still in warm-up
    sensors: list[tuple[str, ...]]  # most responsible sensors of each frame
    detector_version: np.ndarray  # completed reference windows of the equipment's River detector
    imputed: dict[int, list[str]] = field(default_factory=dict)  # frame index -> missing sensors
    events: list[AlertEvent] = field(default_factory=list)
    model_version: int | None = None


class AnomalyEngine:
    """Per-equipment state plus the scoring loop (see module doc)."""

    def __init__(self, config: AnomalyConfig | None = None, state: AnomalyState | None = None, *,
                 on_inference: Callable[[int, float], None] | None = None) -> None:
        self.config = config or AnomalyConfig()
        self.on_inference = on_inference  # (model version, seconds) after each ONNX call: the worker's metric
        self.state = state if state is not None else AnomalyState()
        self.warmup: dict[str, int] = {}  # per-equipment warm-up overrides (evaluation protocols)
        self._columns: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self.labels_applied = 0
        self.detector_updates = 0
        for st in self.state:  # a restored state follows the current alerting settings
            self._follow_config(st)

    def replace_state(self, state: AnomalyState) -> None:
        """Swap in a restored state (it follows the current alerting settings)."""
        for st in state:
            self._follow_config(st)
        self.state = state

    def restore(self, equipment_id: str, data: bytes) -> EquipmentState:
        """Restore one equipment from :meth:`AnomalyState.dump` bytes."""
        st = self.state.restore(equipment_id, data)
        self._follow_config(st)
        return st

    def _follow_config(self, st: EquipmentState) -> None:
        st.hysteresis.raise_after, st.hysteresis.clear_after = self.config.raise_after, self.config.clear_after

    # --- scoring ---------------------------------------------------------------------------

    def score(self, frames: Sequence[Any], scorer: Any = None) -> Scored:
        """Score a batch of :class:`~streams.records.SensorFrame` (any objects with id, ts, equipment_id, readings).

        ``scorer`` is the ONNX model (:class:`~models.onnx_runtime.OnnxScorer`, or
        anything with ``predict`` and ``meta``); without one, each sensor
        contributes its squared deviation and the threshold is ``default_threshold``.
        """
        cfg = self.config
        n = len(frames)
        groups: dict[str, list[int]] = {}
        for i, f in enumerate(frames):
            groups.setdefault(f.equipment_id, []).append(i)
        ts = np.fromiter((f.ts for f in frames), np.float64, n)
        out = Scored(np.zeros(n), np.zeros(n), np.zeros(n, bool), np.zeros(n, bool), np.ones(n, bool),
                     [()] * n, np.zeros(n, np.int64),
                     model_version=scorer.meta.version if scorer is not None else None)
        # An equipment's baseline adapts once every `adapt_frames` of its frames after warm-up, at fixed frame
        # counts: its frames go in rounds cut at those counts (one ONNX call per round for all equipment) and
        # the baseline queues a partial block, so scores do not depend on how the stream is batched.
        chunks = {eid: self._blocks(eid, frames[idx[0]].readings, idx) for eid, idx in groups.items()}
        for r in range(max(len(c) for c in chunks.values()) if chunks else 0):
            self._score_round(frames, ts, {eid: c[r] for eid, c in chunks.items() if len(c) > r}, scorer, out)
        return out

    def _blocks(self, eid: str, first: dict[str, float], idx: list[int]) -> list[list[int]]:
        """An equipment's frames of a batch, cut where its baseline's adaptation blocks (and its warm-up) end."""
        st = self.state.get(eid)
        if st is None:
            st = self.state.get_or_create(eid, list(first), self.config, self.warmup.get(eid))
        size = max(1, self.config.adapt_frames)
        seen, warm = st.baseline.seen, st.baseline.warmup
        cuts = [j for j in range(1, len(idx)) if seen + j >= warm and (seen + j - warm) % size == 0]
        return [idx[a:b] for a, b in zip([0] + cuts, cuts + [len(idx)])]

    def _score_round(self, frames: Sequence[Any], ts: np.ndarray, groups: dict[str, list[int]], scorer: Any,
                     out: Scored) -> None:
        cfg = self.config
        pending: list[tuple[EquipmentState, np.ndarray, Any]] = []
        touched = self.state.touched
        for eid, idx in groups.items():
            st = self.state.get(eid)
            first = frames[idx[0]].readings
            if st is None:
                st = self.state.get_or_create(eid, list(first), cfg, self.warmup.get(eid))
            x = self._matrix(st, [frames[i].readings for i in idx])
            step = st.baseline.feed(x)
            st.frames += len(idx)
            st.last_ts = float(ts[idx[-1]])
            touched.add(eid)
            if step.imputed.any():
                names = st.sensors
                for j, row in zip(idx, step.imputed.tolist()):
                    if any(row):
                        out.imputed[j] = [s for s, m in zip(names, row) if m]
            if step.calibration is not None:
                self._calibrate(st, step.calibration, scorer)
            if len(step.deviations):
                pending.append((st, np.asarray(idx[step.start:], dtype=np.int64), step))
        if not pending:
            return
        if scorer is not None:
            for st, _, _ in pending:
                if st.scale_version != scorer.meta.version:
                    self._calibrate_scale(st, scorer)  # a new model: recalibrate from the stored warm-up
        contributions = self.contributions([(st, step.deviations) for st, _, step in pending], scorer)
        threshold = self._threshold(scorer)
        w = cfg.detector_weight
        k = cfg.top_sensors
        for (st, rows, step), contrib in zip(pending, contributions):
            d = step.deviations
            known = st.baseline.known
            error = model_error(contrib, known)
            ratio = (1.0 - w) * error / (threshold * st.scale)
            if w and st.detector is not None:
                ratio += w * np.maximum(st.detector.ratio(d), 0.0)
            ratio /= st.gain
            anomalous = ratio >= 1.0
            alert, changes = st.hysteresis.step(anomalous)
            # Only clearly normal frames teach: a fault just under the threshold must not widen the normal
            # spread (or the River detector's reference) until it no longer stands out.
            normal = (ratio < cfg.learn_below) & ~alert
            st.baseline.adapt(step.smoothed, normal, d, cfg.adapt_gate,
                              raised=any(kind == "raise" for _, kind in changes), delay=cfg.learn_delay_frames,
                              block=cfg.adapt_frames, onset=cfg.adapt_gate_onset)
            if st.detector is not None:
                self.detector_updates += st.detector.learn(d[normal])
            row_ts = ts[rows]
            st.recent.extend(row_ts, ratio, alert, d)
            out.ratio[rows] = ratio
            out.score[rows] = ratio / (1.0 + ratio)
            out.flag[rows] = alert
            out.anomalous[rows] = anomalous
            out.calibrating[rows] = False
            out.detector_version[rows] = st.detector.windows if st.detector is not None else 0
            names = st.sensors
            top = np.argsort(-contrib, axis=1)[:, :k].tolist()
            sensors = out.sensors
            for j, t in zip(rows.tolist(), top):
                sensors[j] = tuple(names[c] for c in t)
            if changes or alert.any():
                self._episodes(st, rows, row_ts, ratio, alert, changes, contrib, d, out.events)

    def _matrix(self, st: EquipmentState, readings: list[dict[str, float]]) -> np.ndarray:
        """Readings as a ``(frames, sensors)`` matrix in the equipment's sensor order (NaN = missing)."""
        keys = st.keys
        rows: list[list[float]] = []
        slow = False
        for r in readings:
            if tuple(r) == keys:
                rows.append(list(r.values()))
            else:
                slow = True
                for name in r:
                    if name not in st.index and name not in st.ignored:
                        st.add_sensor(name)
                rows.append([r.get(s, NAN) for s in st.sensors])
        if slow:  # sensors added mid-batch: pad the earlier rows
            width = len(st.sensors)
            rows = [row + [NAN] * (width - len(row)) for row in rows]
        x = np.array(rows, dtype=np.float64)
        return x

    # --- model -------------------------------------------------------------------------------

    def _threshold(self, scorer: Any) -> float:
        if scorer is None:
            return self.config.default_threshold
        return float(scorer.meta.extra.get("error_threshold", self.config.default_threshold))

    def _model_columns(self, st: EquipmentState, meta: Any) -> tuple[np.ndarray, np.ndarray]:
        """(equipment columns, model columns) of the sensors both know."""
        key = (meta.version, id(meta), st.keys)
        cols = self._columns.get(key)
        if cols is None:
            pos = {name: i for i, name in enumerate(meta.features)}
            pairs = [(j, pos[s]) for j, s in enumerate(st.sensors) if s in pos]
            cols = (np.array([p[0] for p in pairs], dtype=np.int64), np.array([p[1] for p in pairs], dtype=np.int64))
            if len(self._columns) > 10_000:
                self._columns.clear()
            self._columns[key] = cols
        return cols

    def contributions(self, parts: list[tuple[EquipmentState, np.ndarray]], scorer: Any) -> list[np.ndarray]:
        """Each sensor's share of the anomaly, ~1 on average in normal operation: one ONNX call for all."""
        contrib = [d * d for _, d in parts]
        if scorer is None:
            return contrib
        meta = scorer.meta
        cols = [self._model_columns(st, meta) for st, _ in parts]
        total = sum(len(d) for _, d in parts)
        x = np.zeros((total, len(meta.features)), dtype=np.float32)
        offsets = []
        at = 0
        for (_, d), (eq, mo) in zip(parts, cols):
            if len(mo):
                x[at:at + len(d), mo] = d[:, eq]
            offsets.append(at)
            at += len(d)
        started = time.perf_counter()
        y = np.asarray(scorer.predict(x), dtype=np.float64).reshape(total, -1)
        if self.on_inference is not None:
            self.on_inference(meta.version, time.perf_counter() - started)
        tails = meta.extra.get("sensor_tails")
        if tails:  # round 16: each sensor judged against its own normal tail (see .train.sensor_tails)
            y /= np.asarray(tails, dtype=np.float64)
        for c, at, (_, d), (eq, mo) in zip(contrib, offsets, parts, cols):
            if len(mo):
                c[:, eq] = y[at:at + len(d), mo]
        return contrib

    # --- calibration ---------------------------------------------------------------------------

    def _calibrate(self, st: EquipmentState, warm: np.ndarray, scorer: Any) -> None:
        """End of warm-up: fit the River detector and this equipment's threshold on its normal operation."""
        cfg = self.config
        st.calibration = warm.astype(np.float32)
        st.detector = OnlineDetector(warm.shape[1], trees=cfg.hst_trees, height=cfg.hst_height,
                                     window=cfg.hst_window, seed=cfg.seed)
        st.detector.fit(warm, cfg.calibration_quantile, cfg.detector_calibration)
        self._calibrate_scale(st, scorer)

    def _calibrate_scale(self, st: EquipmentState, scorer: Any) -> None:
        st.scale = 1.0
        st.scale_version = scorer.meta.version if scorer is not None else None
        reference = scorer.meta.extra.get("calibration_reference") if scorer is not None else None
        if st.calibration is None or not reference or not len(st.calibration):
            return
        warm = st.calibration.astype(np.float64)
        contrib = self.contributions([(st, warm)], scorer)[0]
        known = st.baseline.known
        if not known.any():
            return
        error = model_error(contrib, known)
        own = float(np.quantile(error, self.config.calibration_quantile))
        st.scale = float(np.clip(own / float(reference), *SCALE_BOUNDS))

    # --- alerts ------------------------------------------------------------------------------------

    def _episodes(self, st: EquipmentState, rows: np.ndarray, row_ts: np.ndarray, ratio: np.ndarray,
                  alert: np.ndarray, changes: list[tuple[int, str]], contrib: np.ndarray, d: np.ndarray,
                  events: list[AlertEvent]) -> None:
        ep = st.current_episode
        start = 0 if ep is not None else None
        for i, kind in changes:
            if kind == "raise":
                ep = st.open_episode(float(row_ts[i]), float(ratio[i]))
                start = i
                events.append(AlertEvent(int(rows[i]), "raise", st.equipment_id, float(ratio[i]),
                                         self._explain(st, contrib[i], d[i]), ep))
            else:
                if ep is not None:
                    if start is not None:
                        ep.peak = max(ep.peak, float(ratio[start:i + 1].max()))
                    ep.cleared_ts = float(row_ts[i])
                    events.append(AlertEvent(int(rows[i]), "clear", st.equipment_id, float(ratio[i]),
                                             self._explain(st, contrib[i], d[i]), ep))
                ep, start = None, None
        if ep is not None and start is not None:
            ep.peak = max(ep.peak, float(ratio[start:].max()))

    def _explain(self, st: EquipmentState, contrib: np.ndarray, d: np.ndarray) -> list[dict[str, Any]]:
        total = float(contrib.sum()) or 1.0
        top = np.argsort(-contrib)[: self.config.top_sensors]
        return [{"name": st.sensors[j], "share": round(float(contrib[j]) / total, 3),
                 "deviation": round(float(d[j]), 2)} for j in top]

    # --- feedback --------------------------------------------------------------------------------

    def learn(self, labels: Iterable[Any]) -> dict[str, int]:
        """Apply maintenance labels (see :mod:`.feedback`); returns how many of each outcome."""
        outcomes: dict[str, int] = {}
        for raw in labels:
            label = MaintenanceLabel.coerce(raw)
            st = self.state.get(label.equipment_id)
            outcome = "unknown_equipment" if st is None else apply_label(st, label)
            if st is not None:
                self.state.touched.add(label.equipment_id)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            self.labels_applied += 1
        return outcomes

    @property
    def alert_precision(self) -> float:
        """Confirmed / judged alerts over all equipment (NaN until a label judged one)."""
        confirmed = sum(st.confirmed for st in self.state)
        judged = confirmed + sum(st.rejected for st in self.state)
        return confirmed / judged if judged else NAN

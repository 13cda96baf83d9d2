"""Anomaly pipeline: sensor frames in, an anomaly score for each out, equipment alerts that do not flap.

``sensor-frames`` → ``anomaly-scores`` (one record per frame, keyed by frame id,
so a re-delivered frame overwrites rather than duplicates), plus ``alerts``
records when an equipment's alert is raised (after ``raise_after`` anomalous
frames in a row) and when it clears (after ``clear_after`` normal ones), keyed
by equipment so that the two stay in order.

The scoring itself (per-equipment normalization, the ONNX model, the River
detector, hysteresis) is :class:`models.anomaly.engine.AnomalyEngine`; this
module turns its arrays into records and metrics. In a worker, :meth:`setup`
adds the ``maintenance-labels`` agent and makes per-equipment state durable:
one checkpoint file per equipment in the worker's state dir, written
periodically, on partition revocation and at shutdown, and read back on an
equipment's first frame (:mod:`streams.anomaly_state` says why files, not a
Faust table).

A score record::

    {"id": "sf-1-42", "equipment_id": "pump-003", "ts": 1700000042.1, "score": 0.31, "flag": false,
     "status": "scoring", "sensors": ["Current", "Pressure", "Temperature"], "model_version": 3,
     "detector_version": 12, "latency_ms": 84.2}

``status`` is ``calibrating`` during an equipment's warm-up (score 0, no
sensors); ``imputed`` lists the sensors whose reading was missing, when any was.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from models.anomaly.config import AnomalyConfig
from models.anomaly.engine import AlertEvent, AnomalyEngine
from models.anomaly.feedback import MaintenanceLabel, parse_maintenance_label
from models.anomaly.state import AnomalyState, CheckpointError, EquipmentState

from . import metrics
from .anomaly_state import Checkpointer, CheckpointStore
from .batching import Output
from .model_slot import ModelSlot
from .pipeline import Pipeline
from .records import InvalidRecord, SensorFrame, dumps, parse_sensor_frame
from .settings import Settings, get_settings
from .topics import Topics

log = logging.getLogger(__name__)


class AnomalyPipeline(Pipeline):
    name = "anomaly"
    parse = staticmethod(parse_sensor_frame)

    def __init__(self, slot: ModelSlot, topics: Topics, config: AnomalyConfig | None = None,
                 state: AnomalyState | None = None, *, settings: Settings | None = None) -> None:
        if config is None:
            config = AnomalyConfig.from_settings(settings or get_settings())
        self.settings = settings  # set by the worker's factory: state dir, checkpoint timing (see setup)
        self.slot = slot
        self.topics = topics.pipeline(self.name)
        self.alerts_topic = topics.alerts
        self.engine = AnomalyEngine(config, state, on_inference=self._observe_inference)
        self._scores = metrics.SCORES.labels(self.name)
        self._alerts = {s: metrics.ALERTS.labels(self.name, s) for s in ("warning", "critical")}
        self._precision = metrics.ALERT_PRECISION.labels(self.name)
        self._warned_no_model = False
        self.checkpoints: CheckpointStore | None = None  # set by setup(): restore equipment on first sight
        self._waiting: deque[MaintenanceLabel] = deque()  # labels ahead of their equipment's frames
        self._wait_max = (settings or get_settings()).anomaly_label_wait_max
        self.checkpointer: Checkpointer | None = None

    @property
    def config(self) -> AnomalyConfig:
        return self.engine.config

    # --- scoring ---------------------------------------------------------------------------

    def process(self, events: Sequence[SensorFrame], now: float) -> list[Output]:
        scorer = self.slot.scorer
        if scorer is None and not self._warned_no_model:
            log.warning("anomaly: no model loaded; scoring by deviation only until `lepton train anomaly`")
            self._warned_no_model = True
        if self.checkpoints is not None:
            self._restore_unknown({e.equipment_id for e in events})
        out = self.engine.score(events, scorer)
        version = out.model_version
        topic = self.topics.output
        outputs: list[Output] = []
        append = outputs.append
        imputed = out.imputed
        ts = np.fromiter((e.ts for e in events), np.float64, len(events))
        latency = np.round((now - ts) * 1000.0, 3).tolist()
        for i, (e, s, flag, calibrating, sensors, dv, lat) in enumerate(zip(
                events, np.round(out.score, 6).tolist(), out.flag.tolist(), out.calibrating.tolist(), out.sensors,
                out.detector_version.tolist(), latency)):
            record = {
                "id": e.id,
                "equipment_id": e.equipment_id,
                "ts": e.ts,
                "score": s,
                "flag": flag,
                "status": "calibrating" if calibrating else "scoring",
                "sensors": list(sensors),
                "model_version": version,
                "detector_version": dv,
                "latency_ms": lat,
            }
            if imputed and i in imputed:
                record["imputed"] = imputed[i]
            append(Output(topic, e.id.encode(), dumps(record)))
        for event in out.events:
            append(Output(self.alerts_topic, event.equipment_id.encode(),
                          dumps(self._alert(events[event.index], event, version))))
        live = out.score[~out.calibrating]
        for p in live[:: max(1, len(live) // 64)].tolist():
            self._scores.observe(p)
        if self._waiting:
            self._apply_waiting()
        return outputs

    def _alert(self, frame: SensorFrame, event: AlertEvent, version: int | None) -> dict[str, Any]:
        cfg = self.engine.config
        score = event.ratio / (1.0 + event.ratio)
        named = ", ".join(f"{s['name']} ({s['deviation']:+.1f} sd)" for s in event.sensors)
        ep = event.episode
        if event.kind == "raise":
            severity = "critical" if event.ratio >= 2.0 else "warning"
            self._alerts[severity].inc()
            state = "raised"
            reason = f"{event.equipment_id}: anomalous for {cfg.raise_after} frames in a row; most responsible: {named}"
            details = {"equipment_id": event.equipment_id, "sensors": event.sensors, "raised_at": ep.raised_ts,
                       "raise_after": cfg.raise_after}
        else:
            severity, state = "info", "cleared"
            reason = (f"{event.equipment_id}: back to normal for {cfg.clear_after} frames "
                      f"(alert raised at {ep.raised_ts}, peak score {ep.peak / (1 + ep.peak):.2f})")
            details = {"equipment_id": event.equipment_id, "sensors": event.sensors, "raised_at": ep.raised_ts,
                       "cleared_at": ep.cleared_ts, "duration_s": round((ep.cleared_ts or frame.ts) - ep.raised_ts, 3),
                       "peak_score": round(ep.peak / (1 + ep.peak), 6), "clear_after": cfg.clear_after}
        return {
            "id": frame.id,
            "pipeline": self.name,
            "severity": severity,
            "state": state,
            "ts": frame.ts,
            "subject": event.equipment_id,
            "score": round(score, 6),
            "threshold": 0.5,
            "model_version": version,
            "reason": reason,
            "details": details,
        }

    def _observe_inference(self, version: int, seconds: float) -> None:
        metrics.INFERENCE.labels(self.name, str(version)).observe(seconds)

    # --- feedback ------------------------------------------------------------------------------

    def learn(self, labels: Iterable[Any]) -> dict[str, float]:
        """Apply ``maintenance-labels`` records (dicts or :class:`~models.anomaly.feedback.MaintenanceLabel`).

        Returns the outcome counts and the alert precision, which also goes to
        the ``lepton_alert_precision`` gauge.
        """
        labels = [MaintenanceLabel.coerce(x) for x in labels]
        if self.checkpoints is not None:
            self._restore_unknown({x.equipment_id for x in labels})
        outcomes: dict[str, float] = dict(self.engine.learn(labels))
        for outcome, n in outcomes.items():
            metrics.CORRECTIONS.labels(self.name, outcome).inc(n)
        precision = self.alert_precision
        if not math.isnan(precision):
            self._precision.set(precision)
        outcomes["alert_precision"] = precision
        return outcomes

    @property
    def alert_precision(self) -> float:
        return self.engine.alert_precision

    # --- checkpoints ---------------------------------------------------------------------------

    @property
    def state(self) -> AnomalyState:
        return self.engine.state

    def save_state(self, path: str | Path) -> Path:
        """Write every equipment's state to ``path`` (atomic replace)."""
        return self.engine.state.save(path)

    def load_state(self, path: str | Path) -> int:
        """Replace the state with a checkpoint file's; returns the equipment restored."""
        self.engine.replace_state(AnomalyState.load(path))
        return len(self.engine.state)

    def state_bytes(self) -> bytes:
        return self.engine.state.to_bytes()

    def load_state_bytes(self, data: bytes) -> int:
        self.engine.replace_state(AnomalyState.from_bytes(data))
        return len(self.engine.state)

    def dump_equipment(self, equipment_id: str) -> bytes:
        """One equipment's state (e.g. the value of a Faust table keyed by equipment id)."""
        return self.engine.state.dump(equipment_id)

    def restore_equipment(self, equipment_id: str, data: bytes) -> EquipmentState:
        return self.engine.restore(equipment_id, data)

    def touched_equipment(self) -> set[str]:
        """Equipment whose state changed since the last call (the table entries to write)."""
        return self.engine.state.clear_touched()

    # --- worker wiring ---------------------------------------------------------------------------

    def use_checkpoints(self, directory: Path, *, interval_s: float, budget_s: float) -> Checkpointer:
        """Keep per-equipment state in ``directory`` (see :mod:`streams.anomaly_state`)."""
        self.checkpoints = CheckpointStore(directory)
        self.checkpointer = Checkpointer(self.checkpoints, self.dump_equipment, self.touched_equipment,
                                         interval_s=interval_s, budget_s=budget_s)
        return self.checkpointer

    def _restore_unknown(self, equipment: set[str]) -> None:
        state, store = self.engine.state, self.checkpoints
        assert store is not None
        for eid in equipment:
            if eid in state:
                continue
            data = store.read(eid)
            if data is None:
                continue
            try:
                self.restore_equipment(eid, data)
            except CheckpointError as exc:  # an old or damaged file: calibrate afresh, say so
                log.warning("anomaly: checkpoint of %s not restored (%s); it calibrates again", eid, exc)
                continue
            log.info("anomaly: %s restored from its checkpoint", eid)

    def drop_all(self) -> int:
        """Forget every equipment held in memory (after a rebalance: restored from checkpoints on first sight)."""
        names = [st.equipment_id for st in self.engine.state]
        for eid in names:
            self.engine.state.drop(eid)
        return len(names)

    def on_label(self, raw: bytes | None) -> dict[str, float] | None:
        """One raw ``maintenance-labels`` message: learn it (or let it wait), or count it invalid.

        A label about frames this worker has not scored yet (its equipment unseen, or
        behind ``to_ts``: labels travel on their own topic and can overtake the frames)
        waits, and is applied after the batch that brings the equipment past ``to_ts``;
        applied early it would judge alerts not yet raised. At most
        ``anomaly_label_wait_max`` wait; the oldest go first (outcome ``expired``).
        Never stops the agent: a failure is logged and counted (outcome ``error``).
        """
        try:
            label = parse_maintenance_label(raw)
        except InvalidRecord as exc:
            metrics.CORRECTIONS.labels(self.name, "invalid").inc()
            log.warning("anomaly: bad maintenance label dropped (%s): %s", exc.reason, exc)
            return None
        try:
            if self.checkpoints is not None:
                self._restore_unknown({label.equipment_id})
            if not self._caught_up(label):
                self._wait(label)
                return None
            return self.learn([label])
        except Exception:  # a bug must not stop the feedback agent
            metrics.CORRECTIONS.labels(self.name, "error").inc()
            log.exception("anomaly: applying maintenance label %s failed", label)
            return None

    def _caught_up(self, label: MaintenanceLabel) -> bool:
        st = self.engine.state.get(label.equipment_id)
        return st is not None and st.last_ts >= label.to_ts

    def _wait(self, label: MaintenanceLabel) -> None:
        self._waiting.append(label)
        if len(self._waiting) > self._wait_max:
            self._waiting.popleft()
            metrics.CORRECTIONS.labels(self.name, "expired").inc()

    def _apply_waiting(self) -> None:
        ready = [x for x in self._waiting if self._caught_up(x)]
        if ready:
            self._waiting = deque(x for x in self._waiting if not self._caught_up(x))
            self.learn(ready)

    @property
    def waiting_labels(self) -> int:
        return len(self._waiting)

    def setup(self, app: Any) -> None:
        """Maintenance-labels agent, per-equipment checkpoints (timer, revocation, shutdown)."""
        settings = self.settings or get_settings()
        feedback = app.topic(self.topics.feedback, value_serializer="raw")

        async def maintenance_labels(stream: Any) -> None:
            async for raw in stream:
                self.on_label(raw)

        app.agent(feedback, name="lepton.anomaly_labels")(maintenance_labels)

        directory = settings.state_dir / "anomaly" / f"{settings.topic_prefix}{settings.app_id}"
        ckpt = self.use_checkpoints(directory, interval_s=settings.anomaly_checkpoint_interval_s,
                                    budget_s=settings.anomaly_checkpoint_budget_s)

        async def anomaly_checkpoints() -> None:
            ckpt.tick()

        app.timer(1.0, name="lepton.anomaly_checkpoints")(anomaly_checkpoints)

        async def on_revoked(sender: Any, revoked: Any, **_: Any) -> None:
            written = ckpt.flush()
            dropped = self.drop_all()
            if written or dropped:
                log.info("anomaly: partitions revoked: %d checkpoints written, %d equipment released", written, dropped)

        async def on_shutdown(sender: Any, **_: Any) -> None:
            log.info("anomaly: %d checkpoints written at shutdown", ckpt.flush())

        app.on_partitions_revoked.connect(on_revoked)
        app.on_before_shutdown.connect(on_shutdown)

"""Per-equipment checkpoint files: when they are written, and that a released equipment comes back from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.anomaly.config import AnomalyConfig
from streams.anomaly import AnomalyPipeline
from streams.anomaly_state import Checkpointer, CheckpointStore
from streams.records import SensorFrame
from streams.topics import Topics


class _NoModel:
    scorer = None


def _frames(eid: str, start: int, n: int, seed: int = 0) -> list[SensorFrame]:
    rng = np.random.default_rng(seed + start)
    return [SensorFrame(f"{eid}-{i}", 1e9 + i, eid, {"a": float(x), "b": float(y)})
            for i, (x, y) in zip(range(start, start + n), rng.normal(size=(n, 2)))]


def _pipeline(tmp_path: Path, interval_s: float = 10.0) -> AnomalyPipeline:
    p = AnomalyPipeline(_NoModel(), Topics(), AnomalyConfig(warmup_frames=50))  # type: ignore[arg-type]
    p.use_checkpoints(tmp_path, interval_s=interval_s, budget_s=1.0)
    return p


def test_written_once_the_interval_has_passed_then_only_when_changed(tmp_path: Path) -> None:
    p = _pipeline(tmp_path, interval_s=10.0)
    ck = p.checkpointer
    assert ck is not None
    p.process(_frames("pump/1", 0, 80) + _frames("pump-2", 0, 80), 0.0)
    t = 1000.0
    assert ck.due(now=t) == []  # changed just now
    assert ck.tick(now=t + 5.0) == 0  # not yet due
    assert ck.tick(now=t + 10.0) == 2
    assert sorted(p.checkpoints.equipment()) == ["pump-2", "pump/1"]  # type: ignore[union-attr]
    assert ck.tick(now=t + 100.0) == 0  # nothing changed since
    p.learn([{"equipment_id": "pump-2", "from_ts": 1e9, "to_ts": 1e9 + 79, "is_anomaly": False}])
    assert ck.due(now=t + 200.0) == []  # a label changed it: dirty from now on
    assert ck.due(now=t + 210.0) == ["pump-2"]


def test_released_equipment_is_restored_on_its_next_frame(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    p.process(_frames("pump-1", 0, 120), 0.0)
    frames_before = p.state["pump-1"].frames
    assert p.checkpointer.flush() == 1  # type: ignore[union-attr]
    assert p.drop_all() == 1 and "pump-1" not in p.state
    out = p.engine.score(_frames("pump-1", 120, 5))  # the engine alone would calibrate afresh
    assert out.calibrating.all()
    p.drop_all()
    p.process(_frames("pump-1", 120, 5), 0.0)  # the pipeline restores it first
    assert p.state["pump-1"].frames == frames_before + 5 and p.state["pump-1"].calibrated


def test_a_damaged_checkpoint_means_a_fresh_calibration_not_a_crash(tmp_path: Path) -> None:
    CheckpointStore(tmp_path).write("pump-1", b"not a checkpoint")
    p = _pipeline(tmp_path)
    outputs = p.process(_frames("pump-1", 0, 10), 0.0)
    assert len(outputs) == 10 and not p.state["pump-1"].calibrated


def test_flush_skips_equipment_dropped_meanwhile(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    touched = {"gone"}
    ck = Checkpointer(store, lambda eid: (_ for _ in ()).throw(KeyError(eid)), lambda: touched, interval_s=1, budget_s=1)
    assert ck.flush() == 0 and store.equipment() == [] and not ck.dirty

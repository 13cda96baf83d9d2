"""Maintenance labels confirm or reject alerts, move the equipment's threshold, and give alert precision."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from models.anomaly.config import AnomalyConfig
from models.anomaly.feedback import MaintenanceLabel, parse_maintenance_label
from models.registry import ModelRegistry
from streams import metrics
from streams.anomaly import AnomalyPipeline
from streams.model_slot import ModelSlot
from streams.records import InvalidRecord, SensorFrame
from streams.topics import Topics

SENSORS = ["a", "b", "c"]
T0 = 1_700_000_000.0


def frames(x: np.ndarray, start: int, equipment: str = "pump-1") -> list[SensorFrame]:
    return [SensorFrame(f"{equipment}-{start + i}", T0 + start + i, equipment, dict(zip(SENSORS, row)))
            for i, row in enumerate(x.tolist())]


def alerts_of(p: AnomalyPipeline, batch: list[SensorFrame]) -> list[dict]:
    out = []
    for i in range(0, len(batch), 50):
        out += [orjson.loads(o.value) for o in p.process(batch[i:i + 50], T0 + 1e5) if o.topic == "alerts"]
    return out


@pytest.fixture
def pipeline(tmp_path) -> AnomalyPipeline:
    p = AnomalyPipeline(ModelSlot(ModelRegistry(tmp_path), "anomaly"), Topics(),
                        config=AnomalyConfig(warmup_frames=150, detector_weight=0.0))
    rng = np.random.default_rng(0)
    alerts_of(p, frames(rng.normal(size=(200, 3)), 0))
    return p


def test_a_rejected_alert_raises_the_threshold_and_teaches_the_new_normal(pipeline: AnomalyPipeline) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    x[:, 0] += 4.0  # the equipment settled at a new operating point (a maintenance intervention, say)
    raised = alerts_of(pipeline, frames(x, 200))
    assert [a["state"] for a in raised] == ["raised"]
    st = pipeline.state["pump-1"]
    assert st.hysteresis.alert and st.gain == 1.0
    out = pipeline.learn([{"equipment_id": "pump-1", "from_ts": T0 + 200, "to_ts": T0 + 499, "is_anomaly": False}])
    assert out["rejected"] == 1 and out["alert_precision"] == 0.0
    assert 1.0 < st.gain <= 1.5
    # The operator vouched for the current level: the alert clears, and the same level raises nothing more.
    after = alerts_of(pipeline, frames(rng.normal(size=(300, 3)) + [4.0, 0, 0], 500))
    assert [a["state"] for a in after] == ["cleared"]


def test_confirmations_rejections_and_misses(pipeline: AnomalyPipeline) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(600, 3))
    x[50:150, 1] += 8.0  # a clear fault
    x[300:400, 2] += 1.2  # a faint one: below the threshold
    got = alerts_of(pipeline, frames(x, 200))
    assert [a["state"] for a in got] == ["raised", "cleared"]
    labels = [
        {"equipment_id": "pump-1", "from_ts": T0 + 240, "to_ts": T0 + 360, "is_anomaly": True},  # confirms
        {"equipment_id": "pump-1", "from_ts": T0 + 490, "to_ts": T0 + 610, "is_anomaly": True},  # a miss
        {"equipment_id": "pump-9", "from_ts": T0, "to_ts": T0 + 1, "is_anomaly": True},
    ]
    out = pipeline.learn(labels)
    assert (out["confirmed"], out["missed"], out["unknown_equipment"]) == (1, 1, 1)
    assert out["alert_precision"] == 1.0 == pipeline.alert_precision
    assert 1 / 1.5 <= pipeline.state["pump-1"].gain < 1.0  # more sensitive, within one step
    # Re-labelling the same alert as a false alarm replaces the verdict rather than adding one.
    pipeline.learn([MaintenanceLabel("pump-1", T0 + 240, T0 + 360, False)])
    assert pipeline.alert_precision == 0.0
    sample = metrics.REGISTRY.get_sample_value("lepton_alert_precision", {"pipeline": "anomaly"})
    assert sample == 0.0


def test_a_late_clear_after_a_confirmed_fault_is_not_a_false_alarm(pipeline: AnomalyPipeline) -> None:
    """Reports come as consecutive intervals: the normal one after a fault overlaps its alert's tail."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 3))
    x[50:150, 1] += 8.0
    got = alerts_of(pipeline, frames(x, 200))
    assert [a["state"] for a in got] == ["raised", "cleared"]
    cleared_at = got[1]["ts"]
    assert cleared_at > T0 + 350  # the alert outlived the fault (hysteresis, smoothing)
    out = pipeline.learn([
        {"equipment_id": "pump-1", "from_ts": T0 + 250, "to_ts": T0 + 349, "is_anomaly": True},
        {"equipment_id": "pump-1", "from_ts": T0 + 350, "to_ts": T0 + 599, "is_anomaly": False},
    ])
    assert (out["confirmed"], out["normal"], out.get("rejected", 0)) == (1, 1, 0)
    assert pipeline.alert_precision == 1.0


def test_a_label_that_overtakes_its_frames_waits_for_them(pipeline: AnomalyPipeline) -> None:
    """Labels travel on their own topic: applied before the frames they judge, they would judge nothing."""
    label = {"equipment_id": "pump-1", "from_ts": T0 + 240, "to_ts": T0 + 360, "is_anomaly": True}
    assert pipeline.on_label(orjson.dumps(label)) is None and pipeline.waiting_labels == 1
    assert pipeline.on_label(orjson.dumps({**label, "equipment_id": "pump-new"})) is None  # unseen yet
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 3))
    x[50:150, 1] += 8.0
    got = alerts_of(pipeline, frames(x[:100], 200))  # the frames up to T0 + 299: not there yet
    assert [a["state"] for a in got] == ["raised"] and pipeline.waiting_labels == 2
    alerts_of(pipeline, frames(x[100:], 300))
    assert pipeline.waiting_labels == 1  # pump-1's was applied: it confirmed the alert
    assert pipeline.alert_precision == 1.0


def test_precision_is_nan_until_an_alert_is_judged(pipeline: AnomalyPipeline) -> None:
    assert math.isnan(pipeline.alert_precision)
    assert math.isnan(pipeline.learn([])["alert_precision"])


def test_label_validation() -> None:
    ok = parse_maintenance_label(b'{"equipment_id": "p", "from_ts": "2024-01-01T00:00:00Z", '
                                 b'"to_ts": 1704067300, "is_anomaly": true}')
    assert ok == MaintenanceLabel("p", 1704067200.0, 1704067300.0, True)
    for bad in (b'{"equipment_id": "p", "from_ts": 1704067300, "to_ts": 1704067200, "is_anomaly": true}',
                b'{"equipment_id": "p", "from_ts": 1704067200, "to_ts": 1704067300, "is_anomaly": "yes"}',
                b'{"from_ts": 1704067200, "to_ts": 1704067300, "is_anomaly": false}'):
        with pytest.raises(InvalidRecord):
            parse_maintenance_label(bad)

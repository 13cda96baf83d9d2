"""Missing readings, missing sensors, unknown sensors, other sensor sets: imputed and reported, never a crash."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from models.anomaly.config import AnomalyConfig
from models.anomaly.engine import AnomalyEngine
from models.registry import ModelRegistry
from streams.anomaly import AnomalyPipeline
from streams.model_slot import ModelSlot
from streams.records import LIMITS, SensorFrame, parse_sensor_frame
from streams.topics import Topics

SENSORS = ["a", "b", "c", "d", "e"]
T0 = 1_700_000_000.0


def pipeline(tmp_path, **config) -> AnomalyPipeline:
    slot = ModelSlot(ModelRegistry(tmp_path / "models"), "anomaly")
    return AnomalyPipeline(slot, Topics(), config=AnomalyConfig(warmup_frames=100, **config))


def records(p: AnomalyPipeline, frames: list[SensorFrame]) -> list[dict]:
    return [orjson.loads(o.value) for o in p.process(frames, T0 + 1e5) if o.topic == "anomaly-scores"]


def test_null_readings_are_imputed_and_reported(tmp_path) -> None:
    rng = np.random.default_rng(0)
    wire = []
    for i in range(300):
        readings = {s: float(v) for s, v in zip(SENSORS, rng.normal(size=5))}
        if i % 7 == 0:
            readings["b"] = None  # null on the wire
        if i % 11 == 0:
            del readings["d"]  # the sensor did not report at all
        wire.append(orjson.dumps({"id": f"f{i}", "ts": T0 + i, "equipment_id": "pump-1", "readings": readings}))
    frames = [parse_sensor_frame(raw, LIMITS) for raw in wire]
    assert math.isnan(frames[0].readings["b"])
    out = records(pipeline(tmp_path), frames)
    assert len(out) == 300
    assert all(math.isfinite(r["score"]) and 0 <= r["score"] < 1 for r in out)
    by_id = {r["id"]: r for r in out}
    assert by_id["f7"]["imputed"] == ["b"]
    assert by_id["f11"]["imputed"] == ["d"]
    assert by_id["f77"]["imputed"] == ["b", "d"]
    assert "imputed" not in by_id["f1"]
    assert not any(r["flag"] for r in out)  # missing readings are not anomalies


def test_a_sensor_silent_for_a_whole_warm_up_stays_neutral(tmp_path) -> None:
    rng = np.random.default_rng(1)
    frames = []
    for i in range(400):
        v = rng.normal(size=5)
        readings = {s: float(x) for s, x in zip(SENSORS, v)}
        readings["e"] = math.nan if i < 150 else 1e6  # dead during warm-up, absurd afterwards
        frames.append(SensorFrame(f"f{i}", T0 + i, "pump-1", readings))
    out = records(pipeline(tmp_path), frames)
    assert not any(r["flag"] for r in out)
    assert all("e" not in r["sensors"][:1] for r in out[100:])


def test_new_sensors_join_during_warm_up_and_are_ignored_after_it(tmp_path) -> None:
    rng = np.random.default_rng(2)
    p = pipeline(tmp_path)
    first = [SensorFrame(f"f{i}", T0 + i, "m-1", {"a": float(rng.normal()), "b": float(rng.normal())})
             for i in range(50)]
    later = [SensorFrame(f"g{i}", T0 + 50 + i, "m-1", {"a": float(rng.normal()), "b": float(rng.normal()),
                                                        "c": float(rng.normal())}) for i in range(100)]
    records(p, first)
    records(p, later)  # "c" arrives in the middle of the warm-up, in the middle of a batch
    st = p.state["m-1"]
    assert st.sensors == ["a", "b", "c"] and st.calibrated
    tail = [SensorFrame(f"h{i}", T0 + 150 + i, "m-1", {"a": float(rng.normal()), "b": float(rng.normal()),
                                                        "c": float(rng.normal()), "z": 99.0}) for i in range(50)]
    out = records(p, tail)
    assert st.ignored == {"z"} and len(out) == 50
    assert all("z" not in r["sensors"] for r in out)


def test_equipment_with_other_sensor_sets_share_a_batch(tmp_path) -> None:
    rng = np.random.default_rng(3)
    frames = []
    for i in range(300):
        frames.append(SensorFrame(f"p{i}", T0 + i, "pump", {s: float(v) for s, v in zip(SENSORS, rng.normal(size=5))}))
        frames.append(SensorFrame(f"f{i}", T0 + i, "fan", {"rpm": float(rng.normal(1000, 5))}))
        frames.append(SensorFrame(f"v{i}", T0 + i, "valve", {"pos": float(rng.normal()), "flow": float(rng.normal())}))
    out = records(pipeline(tmp_path), frames)
    assert len(out) == 900
    assert {r["equipment_id"] for r in out} == {"pump", "fan", "valve"}
    fan = [r for r in out if r["equipment_id"] == "fan" and r["status"] == "scoring"]
    assert fan and all(r["sensors"] == ["rpm"] for r in fan)


def test_unknown_model_sensors_are_scored_by_their_deviation() -> None:
    """The model knows a and b only: c still counts (its squared deviation), and the model is fed 0 for
    the sensors an equipment lacks."""

    class Meta:
        version, features, extra = 7, ["a", "b", "x"], {"error_threshold": 3.0}

    class Scorer:
        meta = Meta()
        seen: list[np.ndarray] = []

        def predict(self, x: np.ndarray) -> np.ndarray:
            self.seen.append(x.copy())
            return np.ones_like(x)  # every known sensor: a normal error

    engine = AnomalyEngine(AnomalyConfig(warmup_frames=60))
    rng = np.random.default_rng(4)
    frames = [SensorFrame(f"f{i}", T0 + i, "m", {"a": float(rng.normal()), "b": float(rng.normal()),
                                                 "c": float(rng.normal() + (9.0 if i >= 100 else 0.0))})
              for i in range(160)]
    scorer = Scorer()
    out = engine.score(frames, scorer)
    assert out.model_version == 7
    assert all(x.shape[1] == 3 and np.all(x[:, 2] == 0) for x in scorer.seen)
    assert out.flag[120:].all()
    assert all(s[0] == "c" for s in out.sensors[110:])


@pytest.mark.parametrize("bad", [b'{"id": "x", "ts": 1700000000, "equipment_id": "p", "readings": {"a": "hot"}}',
                                 b'{"id": "x", "ts": 1700000000, "equipment_id": "p", "readings": {}}'])
def test_unusable_frames_are_dead_letters_not_crashes(bad: bytes) -> None:
    from streams.records import InvalidRecord

    with pytest.raises(InvalidRecord):
        parse_sensor_frame(bad, LIMITS)

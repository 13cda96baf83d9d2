"""Per-equipment state survives a restart (file, bytes, one equipment at a time); River's detector semantics hold."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from river import anomaly

from models.anomaly.config import AnomalyConfig
from models.anomaly.data import Series
from models.anomaly.detector import OnlineDetector
from models.anomaly.state import AnomalyState, CheckpointError
from models.anomaly.train import fit
from models.registry import ModelRegistry
from streams.anomaly import AnomalyPipeline
from streams.model_slot import ModelSlot
from streams.records import SensorFrame
from streams.settings import Settings
from streams.topics import Topics

SENSORS = ["current", "flow", "pressure", "temperature", "vibration", "voltage"]
T0 = 1_700_000_000.0
CONFIG = AnomalyConfig(warmup_frames=120)


def pump(rng: np.random.Generator, n: int) -> np.ndarray:
    """Correlated sensors around a slowly varying load (AR(1), stationary)."""
    load = np.zeros(n)
    for i in range(1, n):
        load[i] = 0.98 * load[i - 1] + rng.normal(0, 0.1)
    x = rng.normal(size=(n, len(SENSORS)))
    x[:, :3] += load[:, None]
    return x


@pytest.fixture(scope="module")
def slot(tmp_path_factory: pytest.TempPathFactory) -> ModelSlot:
    rng = np.random.default_rng(0)
    normal = [Series(f"train-{i}", T0 + np.arange(500.0), pump(rng, 500), SENSORS, None, "test") for i in range(4)]
    model = fit(normal, CONFIG, epochs=3)
    registry = ModelRegistry(tmp_path_factory.mktemp("models"))
    registry.register("anomaly", model.onnx_bytes, model.meta)
    s = ModelSlot(registry, "anomaly", threads=1)
    s.load_now()
    return s


def stream(n_equipment: int = 4, n: int = 900, seed: int = 1) -> list[SensorFrame]:
    rng = np.random.default_rng(seed)
    frames = []
    data = {f"pump-{e}": pump(rng, n) for e in range(n_equipment)}
    if "pump-1" in data:
        data["pump-1"][500:620, 1] -= 8.0  # one fault, so that alert state and episodes are part of the state
    for i in range(n):
        for e, x in data.items():
            frames.append(SensorFrame(f"{e}-{i}", T0 + i, e, dict(zip(SENSORS, x[i].tolist()))))
    return frames


def run(p: AnomalyPipeline, frames: list[SensorFrame], size: int = 200) -> list[bytes]:
    return [o.value for i in range(0, len(frames), size) for o in p.process(frames[i:i + size], T0 + 1e5)]


def test_state_survives_a_restart_through_a_file(slot: ModelSlot, tmp_path) -> None:
    frames = stream()
    cut = 4 * 550  # in the middle of pump-1's alert
    live = AnomalyPipeline(slot, Topics(), config=CONFIG)
    run(live, frames[:cut])
    assert live.state["pump-1"].hysteresis.alert
    path = live.save_state(tmp_path / "state" / "anomaly.ckpt")
    restarted = AnomalyPipeline(slot, Topics(), config=CONFIG)
    assert restarted.load_state(path) == 4
    # Both go on identically: same scores, same flags, the same alert clears once.
    rest = frames[cut:]
    a, b = run(live, rest), run(restarted, rest)
    assert a == b
    alerts = [orjson.loads(v) for v in b if b'"pipeline"' in v]
    assert [x["state"] for x in alerts if x["subject"] == "pump-1"][:1] == ["cleared"]
    # A restart without the checkpoint would have re-calibrated from scratch: status calibrating.
    fresh = AnomalyPipeline(slot, Topics(), config=CONFIG)
    first = orjson.loads(run(fresh, rest[:4])[0])
    assert first["status"] == "calibrating"


def test_one_equipment_at_a_time_as_table_values(slot: ModelSlot) -> None:
    frames = stream(n_equipment=3, n=400, seed=2)
    live = AnomalyPipeline(slot, Topics(), config=CONFIG)
    run(live, frames)
    touched = live.touched_equipment()
    assert touched == {"pump-0", "pump-1", "pump-2"} and live.touched_equipment() == set()
    table = {eid: live.dump_equipment(eid) for eid in touched}  # what a worker would write to a Faust table
    assert all(len(v) < 200_000 for v in table.values())
    restarted = AnomalyPipeline(slot, Topics(), config=CONFIG)
    for eid, value in table.items():
        restarted.restore_equipment(eid, value)
    more = stream(n_equipment=3, n=100, seed=3)
    assert run(live, more) == run(restarted, more)
    with pytest.raises(CheckpointError):
        restarted.restore_equipment("pump-0", table["pump-1"])
    with pytest.raises(CheckpointError):
        AnomalyState.from_bytes(b"not a checkpoint")


def test_restored_state_follows_new_alert_settings(slot: ModelSlot, tmp_path) -> None:
    live = AnomalyPipeline(slot, Topics(), config=CONFIG)
    run(live, stream(n_equipment=1, n=200))
    path = live.save_state(tmp_path / "s.ckpt")
    stricter = AnomalyPipeline(slot, Topics(), config=CONFIG.with_(raise_after=9, clear_after=30))
    stricter.load_state(path)
    h = stricter.state["pump-0"].hysteresis
    assert (h.raise_after, h.clear_after) == (9, 30)


def test_batch_detector_is_rivers_half_space_trees() -> None:
    """Masses and scores equal River's own learn_one / score_one, window pivots included."""
    rng = np.random.default_rng(5)
    det = OnlineDetector(4, trees=6, height=5, window=40, seed=3)
    warm = rng.normal(size=(90, 4))
    det.fit(warm)
    river = anomaly.HalfSpaceTrees(n_trees=6, height=5, window_size=40, seed=3)
    for row in det.scaled(warm).tolist():
        river.learn_one(dict(enumerate(row)))
    for size in (1, 7, 39, 40, 41, 130):
        d = rng.normal(size=(size, 4)) * 1.5
        det.learn(d)
        for row in det.scaled(d).tolist():
            river.learn_one(dict(enumerate(row)))
    test = rng.normal(size=(300, 4)) * 2
    expected = [river.score_one(dict(enumerate(r))) for r in det.scaled(test).tolist()]
    np.testing.assert_allclose(det.score(test), expected, rtol=0, atol=1e-12)
    synced = det.river()
    for ours, theirs in zip(synced.trees, river.trees):
        assert [(n.l_mass, n.r_mass) for n in ours.iter_dfs()] == [(n.l_mass, n.r_mass) for n in theirs.iter_dfs()]
    assert (synced.counter, synced._first_window) == (river.counter, river._first_window)


def test_settings_and_config_defaults_agree() -> None:
    assert AnomalyConfig.from_settings(Settings()) == AnomalyConfig()

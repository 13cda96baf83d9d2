"""Round 16: each sensor's contribution judged against its own normal tail (``sensor_tail_quantile``)."""

from __future__ import annotations

import numpy as np
import pytest

from models.anomaly.config import AnomalyConfig
from models.anomaly.data import Series
from models.anomaly.engine import AnomalyEngine
from models.anomaly.train import _Scorer, fit, sensor_tails
from models.meta import ModelMeta
from streams.settings import Settings

SENSORS = ["a", "b", "c", "d"]


def pumps(seed: int = 0, n: int = 8, frames: int = 600) -> list[Series]:
    """Four sensors of unit noise; sensor d also wanders (a random walk): heavy-tailed deviations after warm-up."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = rng.normal(size=(frames, 4))
        x[:, 3] += np.cumsum(rng.normal(scale=0.15, size=frames))
        out.append(Series(f"pump-{i}", 1e9 + np.arange(float(frames)), x, SENSORS, None, "t"))
    return out


def test_the_median_by_default_and_read_from_settings() -> None:
    assert AnomalyConfig().sensor_tail_quantile == 0.5  # round 16's default
    assert AnomalyConfig.from_settings(Settings()).sensor_tail_quantile == 0.5
    assert AnomalyConfig.from_settings(Settings(anomaly_sensor_tail_quantile=0.9)).sensor_tail_quantile == 0.9
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError):
            AnomalyConfig(sensor_tail_quantile=bad)


def test_fit_stores_tails_and_the_engine_divides_the_contributions_by_them() -> None:
    series = pumps()
    off = fit(series, AnomalyConfig(warmup_frames=200, sensor_tail_quantile=0.0), epochs=2)
    assert "sensor_tails" not in off.meta.extra  # off: the model is as before round 16
    on = fit(series, AnomalyConfig(warmup_frames=200, sensor_tail_quantile=0.9), epochs=2)
    tails = np.array(on.meta.extra["sensor_tails"])
    assert on.meta.extra["sensor_tail_quantile"] == 0.9 and len(tails) == len(on.meta.features) == 4
    assert np.isclose(np.exp(np.log(tails).mean()), 1.0, atol=1e-4)  # relative to their geometric mean
    # The same network with and without the tails: contributions differ exactly by them.
    d = np.random.default_rng(1).normal(size=(30, 4))
    scorer = _Scorer(on.onnx_bytes, on.meta)
    eng = AnomalyEngine(AnomalyConfig(warmup_frames=200))
    st = eng.state.get_or_create("p", list(on.meta.features), eng.config)
    with_tails = eng.contributions([(st, d)], scorer)[0]
    scorer.meta = on.meta.model_copy(update={"extra": {k: v for k, v in on.meta.extra.items() if k != "sensor_tails"}})
    raw = eng.contributions([(st, d)], scorer)[0]
    assert np.allclose(with_tails * tails, raw)
    assert on.meta.extra["error_threshold"] > 0 and on.meta.extra["calibration_reference"] > 0


class SquareScorer:
    """A stand-in model: each sensor's contribution is its squared deviation."""

    def __init__(self, features: list[str]) -> None:
        self.meta = ModelMeta(pipeline="anomaly", features=features, threshold=0.5, extra={})

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) ** 2


def test_tails_are_each_sensors_own_quantile_after_warm_up_relative_to_their_geometric_mean() -> None:
    rng = np.random.default_rng(3)
    segs = []
    for i in range(3):
        x = rng.normal(size=(600, 4))
        x[400:, 3] += 3.0  # sensor d steps 3 sd after the calibration's warm-up (300 frames): a heavy tail
        segs.append(Series(f"s-{i}", 1e9 + np.arange(600.0), x, SENSORS, None, "t"))
    cfg = AnomalyConfig(warmup_frames=400)
    tails = np.array(sensor_tails(segs, SquareScorer(SENSORS + ["unseen"]), cfg, 0.9))
    assert tails[4] == 1.0  # a model sensor no segment has: neutral
    assert np.isclose(np.exp(np.log(tails[:4]).mean()), 1.0, atol=1e-4)
    assert tails[3] > 5 * tails[:3].max()  # the stepping sensor's tail is the heaviest by far
    assert np.allclose(tails[:3], tails[:3].mean(), rtol=0.3)  # the three alike sensors alike

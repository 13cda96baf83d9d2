"""The River detector's calibration: which warm-up score maps to detector ratio 1."""

from __future__ import annotations

import numpy as np
import pytest

from models.anomaly.config import AnomalyConfig
from models.anomaly.data import Series
from models.anomaly.detector import OnlineDetector, calibration_high
from models.anomaly.engine import AnomalyEngine
from models.anomaly.train import split_holdout
from streams.records import SensorFrame
from streams.settings import Settings


def test_tail_fit_estimates_the_quantile_of_an_exponential_tail_with_less_spread_than_the_4th_largest() -> None:
    rng = np.random.default_rng(3)
    true = np.log(100.0)  # the 99th percentile of Exp(1)
    quantile, tail = [], []
    for _ in range(400):
        s = rng.exponential(size=400)
        quantile.append(calibration_high(s, 0.99, "quantile"))
        tail.append(calibration_high(s, 0.99, "tail"))
    assert abs(np.mean(tail) - true) < 0.1 and abs(np.mean(quantile) - true) < 0.15
    assert np.std(tail) < 0.8 * np.std(quantile)  # 80 scores instead of the 4 largest


def test_mad_is_a_normal_fit_and_quantile_is_numpy() -> None:
    s = np.random.default_rng(1).normal(2.0, 3.0, size=200_000)
    assert calibration_high(s, 0.99, "mad") == pytest.approx(2.0 + 2.3263 * 3.0, abs=0.05)
    assert calibration_high(s, 0.975, "mad") == pytest.approx(2.0 + 1.96 * 3.0, abs=0.05)
    assert calibration_high(s[:400], 0.99, "quantile") == np.quantile(s[:400], 0.99)
    with pytest.raises(ValueError):
        calibration_high(s, 0.99, "gpd")


def test_the_detector_and_the_engine_use_the_configured_calibration() -> None:
    rng = np.random.default_rng(4)
    warm = rng.normal(size=(400, 5))
    highs = {}
    for method in ("quantile", "tail", "mad"):
        det = OnlineDetector(5, seed=1)
        det.fit(warm, 0.99, method)
        scores = det.score(warm)
        assert det.median == pytest.approx(np.median(scores))
        assert det.high == pytest.approx(max(calibration_high(scores, 0.99, method), det.median + 1e-3))
        highs[method] = det.high
    assert len(set(highs.values())) == 3
    # Through the engine: an equipment's detector, fitted at the end of its warm-up, is calibrated as configured.
    frames = [SensorFrame(f"f{i}", float(i), "pump", {f"s{j}": float(v) for j, v in enumerate(row)})
              for i, row in enumerate(rng.normal(size=(120, 5)))]
    engine_highs = {}
    for method in ("quantile", "tail"):
        engine = AnomalyEngine(AnomalyConfig(warmup_frames=100, detector_calibration=method))
        engine.score(frames)
        det = engine.state.get("pump").detector
        assert det is not None
        engine_highs[method] = det.high
    assert engine_highs["quantile"] != pytest.approx(engine_highs["tail"])
    with pytest.raises(ValueError):
        AnomalyConfig(detector_calibration="gpd")
    assert AnomalyConfig.from_settings(Settings(anomaly_detector_calibration="mad")).detector_calibration == "mad"


def _series(eid: str, n: int) -> Series:
    return Series(eid, np.arange(n, dtype=np.float64), np.zeros((n, 2)), ["a", "b"], None, "test")


def test_mixed_holdout_adds_a_quarter_of_the_short_segments() -> None:
    segs = [_series(f"long{i}", 1200) for i in range(8)] + [_series(f"part{i}", 400) for i in range(12)]
    long_only = split_holdout(segs, 400)
    mixed = split_holdout(segs, 400, "mixed")
    assert [s.equipment_id for s in long_only] == ["long3", "long7"]
    assert [s.equipment_id for s in mixed] == ["long3", "long7", "part3", "part7", "part11"]
    # Without long segments both modes hold out a quarter of what there is.
    assert split_holdout(segs[8:], 400, "mixed") == split_holdout(segs[8:], 400) == segs[8:][3::4]
    with pytest.raises(ValueError):
        AnomalyConfig(calibration_holdout="short")
    assert AnomalyConfig.from_settings(Settings(anomaly_calibration_holdout="mixed")).calibration_holdout == "mixed"

"""Round 15: the model's error from the largest sensor contributions only (error_top_sensors)."""

from __future__ import annotations

import numpy as np
import pytest

from models.anomaly.config import AnomalyConfig
from models.anomaly.engine import AnomalyEngine, model_error
from streams.records import SensorFrame
from streams.settings import Settings

T0 = 1_700_000_000.0


def ratios(cfg: AnomalyConfig, x: np.ndarray, size: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Ratios and alert flags of one equipment (no model: every sensor contributes its squared deviation)."""
    eng = AnomalyEngine(cfg)
    names = [f"s{j}" for j in range(x.shape[1])]
    out_r, out_f = [], []
    for start in range(0, len(x), size):
        out = eng.score([SensorFrame(f"p-{i}", T0 + i, "p", dict(zip(names, v)))
                         for i, v in zip(range(start, start + size), x[start:start + size].tolist())])
        out_r.append(out.ratio)
        out_f.append(out.flag)
    return np.concatenate(out_r), np.concatenate(out_f)


def one_sensor_fault(seed: int) -> np.ndarray:
    """Eight unit-noise sensors; sensor 3 shifts by 3 sd over frames 900-1300."""
    x = np.random.default_rng(seed).normal(size=(1600, 8))
    x[900:1300, 3] += 3.0
    return x


def test_top_k_is_the_rms_of_the_largest_contributions() -> None:
    c = np.random.default_rng(0).chisquare(1, size=(50, 8))
    k = np.ones(8, dtype=bool)
    assert np.allclose(model_error(c, k, 8, top=8), model_error(c, k, 8))  # all of them: today's RMS
    assert np.allclose(model_error(c, k, 8, top=1), np.sqrt(c.max(axis=1)))
    want = np.sqrt(np.sort(c, axis=1)[:, -3:].mean(axis=1))
    assert np.allclose(model_error(c, k, 8, top=3), want)
    known = k.copy()
    known[[0, 5]] = False  # unknown sensors are left out before the largest are taken
    assert np.allclose(model_error(c, known, 8, top=2), np.sqrt(np.sort(c[:, known], axis=1)[:, -2:].mean(axis=1)))
    assert np.allclose(model_error(c, known, 8, top=20), model_error(c, known, 8))


@pytest.mark.parametrize("seed", [0, 1])
def test_a_one_sensor_fault_stands_out_more_from_normal_frames(seed: int) -> None:
    # With the RMS over 8 sensors a 3-sd shift of one sensor is averaged with 7 quiet ones; with the 2 largest it
    # stands further above the normal frames' own tail (what a calibrated threshold is set against): its median
    # ratio over the normal frames' 99th percentile is 1.53-1.59 with all, 1.70-1.74 with the 2 largest (seeds 0, 1).
    x = one_sensor_fault(seed)
    sep = {}
    for top in (0, 2):
        cfg = AnomalyConfig(warmup_frames=400, detector_weight=0.0, error_top_sensors=top)
        r, _ = ratios(cfg, x)
        sep[top] = np.median(r[950:1300]) / np.quantile(r[400:900], 0.99)
    assert sep[2] > 1.05 * sep[0]


def test_scores_do_not_depend_on_how_the_stream_is_batched_with_top_sensors() -> None:
    x = one_sensor_fault(2)
    x[1400:1450, 6] += 8.0  # and a fault that raises an alert
    cfg = AnomalyConfig(warmup_frames=300, adapt_frames=50, detector_weight=0.0, error_top_sensors=2)
    runs = [ratios(cfg, x, size) for size in (7, 64, 1600)]
    assert all(np.allclose(r[0], runs[0][0], rtol=0, atol=1e-12) and np.array_equal(r[1], runs[0][1]) for r in runs[1:])
    assert runs[0][1][1410:1450].all()


def test_top_sensors_setting_reaches_the_config_and_bad_values_are_refused() -> None:
    assert AnomalyConfig.from_settings(Settings(anomaly_error_top_sensors=2)).error_top_sensors == 2
    assert AnomalyConfig().error_top_sensors == 0  # off by default: the RMS over all sensors
    with pytest.raises(ValueError):
        AnomalyConfig(error_top_sensors=-1)

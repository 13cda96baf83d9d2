"""The tuning proxy's bookkeeping (round 11): per-fold thresholds and the false-alarm diagnosis; its noise faults."""

from __future__ import annotations

import numpy as np
import pytest

from models.anomaly.data import Series
from models.anomaly.tuning import diagnose, inject, over_seeds


def _row(seed: int, f1: float, thresholds: list[float], fa: int) -> dict:
    return {"smoothing_frames": 10, "target_far": 0.125, "seed": seed, "f1": f1, "far": 0.1, "mar": 0.2,
            "drift_f1": 0.6, "drift_far": 0.1, "drift_mar": 0.3, "thresholds": thresholds, "holdout_far": [0.1, 0.12],
            "drift_diag_fa": fa, "drift_diag_fa_pre": 0.5}


def test_over_seeds_groups_seeds_despite_their_per_fold_thresholds_and_diagnosis() -> None:
    rows = over_seeds([_row(0, 0.8, [2.0, 2.2], 10), _row(1, 0.6, [1.8, 2.0], 30)])
    assert len(rows) == 1  # the per-seed lists and diag figures are measurements, not part of the configuration
    r = rows[0]
    assert r["seeds"] == 2 and r["score"] == 0.65
    assert r["thresholds"] == [2.0, 2.2, 1.8, 2.0] and r["thresholds_mean"] == 2.0
    assert r["holdout_far_mean"] == 0.11 and r["drift_diag_fa"] == 20.0


def test_diagnose_places_false_alarms_around_the_fault_and_says_what_holds_them() -> None:
    n = 200
    label = np.zeros(n, dtype=bool)
    label[60:140] = True
    flag = np.zeros(n, dtype=bool)
    flag[[10, 11]] = True  # two before the fault
    flag[60:150] = True  # the fault, then an alert clearing 10 frames late
    flag[195] = True  # one long after
    ratio = np.full(n, 1.2)
    model = np.full(n, 0.9)  # the model part alone is under 1...
    model[140:145] = 1.05  # ...except in the first 5 frames after the fault
    ratio[148:150] = 0.8  # the last two late frames are held by hysteresis only
    entry = {"label": label, "flag": flag, "scale": np.array(1.5), "ratio": ratio, "model": model}
    d = diagnose([entry, {**entry, "flag": np.zeros(n, dtype=bool)}], 60, 140, prefix="drift_")
    assert d["drift_diag_fa"] == 13 and d["drift_diag_fa_runs"] == 0.5
    assert np.isclose(d["drift_diag_fa_pre"], round(2 / 13, 3)) and np.isclose(d["drift_diag_fa_post50"], round(10 / 13, 3))
    assert np.isclose(d["drift_diag_fa_late"], round(1 / 13, 3))
    assert np.isclose(d["drift_diag_fa_model_over"], round(5 / 13, 3))
    assert np.isclose(d["drift_diag_fa_post_model_over"], round(5 / 11, 3))
    assert np.isclose(d["drift_diag_fa_below"], round(2 / 13, 3))
    assert d["drift_diag_scale"] == 1.5


def test_noise_faults_of_the_proxy_keep_the_level_and_raise_the_movement() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(1150, 4)).cumsum(axis=0) * 0.1 + rng.normal(size=(1150, 4))
    run = Series("ref", 1_700_000_000.0 + np.arange(1150.0), x, ["w", "x", "y", "z"], None, "t")
    shifted = inject(run, np.random.default_rng(1), 400, max_sd=20.0)
    noise = inject(run, np.random.default_rng(1), 400, max_sd=20.0, kind="noise")
    assert (shifted.labels == noise.labels).all() and noise.labels[600:900].all()
    moved = np.flatnonzero(np.abs(noise.values - x).max(axis=0) > 0)
    assert 1 <= len(moved) <= 2
    fault = slice(600, 950)
    for col in moved:
        extra = noise.values[fault, col] - x[fault, col]
        assert abs(extra.mean()) < 0.2 * extra.std()  # no shift of the level
        assert np.diff(noise.values[fault, col]).std() > 1.3 * np.diff(x[fault, col]).std()
    with pytest.raises(ValueError):
        inject(run, np.random.default_rng(1), 400, kind="spike")

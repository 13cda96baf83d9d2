"""Drift: a sensor that keeps trending after warm-up is followed, not alarmed on; batching does not change that."""

from __future__ import annotations

import numpy as np
import pytest

from models.anomaly.config import AnomalyConfig
from models.anomaly.engine import AnomalyEngine
from models.anomaly.features import Baseline
from streams.records import SensorFrame

T0 = 1_700_000_000.0


def heating(n: int, seed: int = 0) -> np.ndarray:
    """Two sensors of unit noise; the second heats up by 0.005 per frame (1.5 over a 300-frame warm-up)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    x[:, 1] += 0.005 * np.arange(n)
    return x


def deviations(b: Baseline, x: np.ndarray, size: int = 25, flag_at: float = 4.0) -> np.ndarray:
    """Deviations after warm-up; rows with a deviation over ``flag_at`` count as flagged (no full-rate learning)."""
    out = []
    for start in range(0, len(x), size):
        step = b.feed(x[start:start + size])
        if len(step.deviations):
            d = step.deviations
            out.append(d)
            b.adapt(step.smoothed, np.abs(d).max(axis=1) < flag_at, d)
    return np.concatenate(out)


def flags_of(cfg: AnomalyConfig, x: np.ndarray, size: int = 100) -> np.ndarray:
    """Per-frame alert state of one equipment streamed through the engine (no model: RMS deviation scoring)."""
    eng = AnomalyEngine(cfg)
    names = [f"s{j}" for j in range(x.shape[1])]
    flags = []
    for start in range(0, len(x), size):
        batch = [SensorFrame(f"p-{i}", T0 + i, "p", dict(zip(names, v)))
                 for i, v in zip(range(start, start + size), x[start:start + size].tolist())]
        flags.append(eng.score(batch).flag)
    return np.concatenate(flags)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_trend_seen_in_warm_up_is_followed_and_a_jump_on_it_stands_out(seed: int) -> None:
    x = heating(1700, seed)
    x[1500:, 1] += 6.0  # a sudden jump of the heating sensor: 6 noise sd
    kw = dict(n_sensors=2, warmup=300, smoothing=5, halflife=1000.0)
    fixed = deviations(Baseline(**kw), x)
    tracking = deviations(Baseline(**kw, drift_lag=1.0, min_halflife=50.0), x)
    before, after = slice(800, 1200), slice(1210, 1240)  # rows after warm-up: before the jump, just after it
    assert np.abs(tracking[before, 1]).max() < 3.5  # followed: no false alarm while it heats up
    # Without tracking the baseline kept up only by widening the spread, so the jump barely shows.
    assert np.abs(fixed[after, 1]).min() < 3.5 < 5.0 < np.abs(tracking[after, 1]).min()


def test_the_cap_on_adaptation_speed_holds() -> None:
    b = Baseline(2, warmup=300, smoothing=5, halflife=1000.0, drift_lag=0.01, min_halflife=200.0)  # lag: tiny
    b.feed(heating(400))
    cap = 1 - 0.5 ** (1 / 200)
    assert np.isclose(b.rate[1], cap) and b.rate.max() <= cap  # the trend asked for more; the cap gave this


def test_a_sensor_drifting_during_another_ones_fault_is_followed_so_the_alert_clears() -> None:
    rng = np.random.default_rng(1)
    n = 1400
    x = rng.normal(size=(n, 3))
    x[:, 2] = 0.3 * rng.normal(size=n)
    x[300:, 2] += 0.002 * np.arange(n - 300)  # starts drifting after warm-up: no trend to learn from it
    x[500:900, 0] += 8.0  # a long fault on another sensor

    def changes(gate: float, halflife: float = 1000.0, weight: float = 0.5) -> list[int]:
        # No model here (RMS deviation / default_threshold). With half-life 1000 the drifting sensor lags its
        # drift by 3-4 sd, passes the 3-sd gate during the fault and is held there (factor 0); at River weight
        # 0.5 (the weight this was written for) the detector's low ratio still lets the alert clear when the
        # fault ends, at 0.25 it stays up. With the shipped half-life (300) it clears at 0.25 too (below).
        # The shipped settings are checked below.
        cfg = AnomalyConfig(warmup_frames=300, adapt_gate=gate, alert_adapt_factor=0.0, adapt_frames=10,
                            baseline_halflife_frames=halflife, detector_weight=weight)
        return np.flatnonzero(np.diff(flags_of(cfg, x).astype(int))).tolist()

    followed, frozen = changes(gate=3.0), changes(gate=0.0)
    assert len(followed) == 2 and 500 <= followed[0] < 510 and 900 <= followed[1] < 925  # one alert, the fault's
    shipped = changes(gate=3.0, halflife=AnomalyConfig().baseline_halflife_frames,
                      weight=AnomalyConfig().detector_weight)
    assert len(shipped) == 2 and 500 <= shipped[0] < 510 and 900 <= shipped[1] < 925
    # Frozen during the fault, the drifting sensor is off when it ends: the alert clears later, and flaps.
    assert frozen[1] > followed[1] + 10 and len(frozen) > 2


def test_scores_do_not_depend_on_how_the_stream_is_batched() -> None:
    x = heating(1500, seed=2)
    x[900:1000, 0] += 6.0
    for weight in (0.0, 0.5):
        cfg = AnomalyConfig(warmup_frames=300, drift_lag=1.0, adapt_frames=25, detector_weight=weight)
        ratios, flags = [], []
        for size in (7, 64, 1500):
            eng = AnomalyEngine(cfg)
            parts = []
            for start in range(0, len(x), size):
                batch = [SensorFrame(f"p-{i}", T0 + i, "p", {"a": v[0], "b": v[1]})
                         for i, v in zip(range(start, start + size), x[start:start + size].tolist())]
                parts.append(eng.score(batch))
            ratios.append(np.concatenate([o.ratio for o in parts]))
            flags.append(np.concatenate([o.flag for o in parts]))
        if weight == 0:  # the baseline moves at the same frame counts whatever the batches: identical scores
            assert np.allclose(ratios[0], ratios[1]) and np.allclose(ratios[0], ratios[2])
        # The River detector's reference window may pivot inside a batch (scored before it learns): close.
        assert max(int((f != flags[2]).sum()) for f in flags) <= 5
        assert flags[2][905:1000].all() and not flags[2][300:890].any()  # 2 sensors, no model: RMS deviation


def drifting_then_fault(seed: int) -> np.ndarray:
    """Sensor c drifts away from warm-up on (3-5 sd off before the fault, not alarming alone); a fault on a 500-900."""
    rng = np.random.default_rng(seed)
    n = 1400
    x = rng.normal(size=(n, 3))
    x[:, 2] = 0.3 * rng.normal(size=n)
    x[300:, 2] += 0.004 * np.arange(n - 300)
    x[500:900, 0] += 8.0
    return x


@pytest.mark.parametrize("seed", [0, 1])
def test_a_sensor_already_off_before_the_alert_keeps_being_followed_with_the_onset_setting(seed: int) -> None:
    x = drifting_then_fault(seed)

    def changes(onset: str) -> list[int]:
        cfg = AnomalyConfig(warmup_frames=300, alert_adapt_factor=0.0, adapt_frames=10,
                            baseline_halflife_frames=1000.0, detector_weight=0.0, adapt_gate_onset=onset)
        flags = flags_of(cfg, x)
        assert flags[510:900].all()  # the fault itself is not learnt away in any mode
        return np.flatnonzero(np.diff(flags[500:].astype(int))).tolist()

    # The gate alone: the drifting sensor is beyond it when the fault starts, frozen, and holds the alert for good.
    assert all(c < 10 for c in changes("none"))  # raised at the fault's start, never cleared
    for onset in ("relative", AnomalyConfig().adapt_gate_onset):  # the last: shipped
        held = changes(onset)
        assert 400 <= held[-1] < 425, onset  # followed during the fault: the alert clears when it ends


def test_the_relative_onset_judges_a_sensor_from_its_deviation_before_the_stretch() -> None:
    # 200 normal rows: column 0 at 0 sd, column 1 at 4 sd (drifting away), column 2 at 2 sd; then 20 non-normal rows
    # where column 0 jumps to 5 (the fault), column 1 moves to 5.5, column 2 to 4.5.
    d = np.vstack([np.tile([0.0, 4.0, 2.0], (200, 1)), np.tile([5.0, 5.5, 4.5], (20, 1))])
    normal = np.arange(220) < 200

    def passed(chunks: int = 1) -> np.ndarray:
        c = Baseline(3, warmup=20, smoothing=1)
        c.feed(np.random.default_rng(0).normal(size=(20, 3)))
        parts = [c._onset_quiet(d[i], normal[i], 3.0) for i in np.array_split(np.arange(220), chunks)]
        return np.concatenate(parts)[200:].all(axis=0)

    assert passed().tolist() == [False, True, True]  # column 2 moved 2.5 < 3 from where it was
    assert passed(chunks=7).tolist() == passed().tolist()  # carried over calls: the batching does not matter
    # A column that was off only in the last few normal rows (a fault's ramp) weighs little in where it was.
    ramp = d.copy()
    ramp[:200, 1] = 0.0
    ramp[190:200, 1] = 4.0
    c = Baseline(3, warmup=20, smoothing=1)
    c.feed(np.random.default_rng(0).normal(size=(20, 3)))
    assert not c._onset_quiet(ramp, normal, 3.0)[200:, 1].any()
    for mode in ("sometimes", "keep", "relative_beyond"):  # round 12's other candidates were removed (round 16)
        with pytest.raises(ValueError):
            AnomalyConfig(adapt_gate_onset=mode)

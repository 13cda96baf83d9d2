"""Round 14: a fault's first frames do not teach the baseline (hold_above / hold_frames, spread_rate_factor)."""

from __future__ import annotations

import numpy as np
import pytest

from models.anomaly.config import AnomalyConfig
from models.anomaly.engine import AnomalyEngine
from models.anomaly.features import Baseline
from streams.records import SensorFrame
from streams.settings import Settings

T0 = 1_700_000_000.0
HOLD = dict(hold_above=0.7, hold_frames=50)


def stream(cfg: AnomalyConfig, x: np.ndarray, size: int = 50) -> tuple[np.ndarray, np.ndarray, dict[int, tuple]]:
    """Ratios and alert flags of one equipment (no model: RMS deviation scoring), and its baseline (level, spread)
    after each batch, keyed by the frames seen."""
    eng = AnomalyEngine(cfg)
    names = [f"s{j}" for j in range(x.shape[1])]
    ratios, flags, snaps = [], [], {}
    for start in range(0, len(x), size):
        batch = [SensorFrame(f"p-{i}", T0 + i, "p", dict(zip(names, v)))
                 for i, v in zip(range(start, start + size), x[start:start + size].tolist())]
        out = eng.score(batch)
        ratios.append(out.ratio)
        flags.append(out.flag)
        b = eng.state.get("p").baseline
        snaps[start + len(batch)] = (b.base.copy(), b.var.copy())
    return np.concatenate(ratios), np.concatenate(flags), snaps


def small_fault(seed: int) -> np.ndarray:
    """Three unit-noise sensors; sensor 0 shifts by 1.8 sd over frames 600-1000: its ratio hovers at 0.6-1.0 (no
    model, 3 sensors), it stays under the threshold and raises no alert, the kind of fault blocks absorb."""
    x = np.random.default_rng(seed).normal(size=(1200, 3))
    x[600:1000, 0] += 1.8
    return x


@pytest.mark.parametrize("seed", [0, 1])
def test_a_faults_first_frames_do_not_move_the_baseline_with_the_hold(seed: int) -> None:
    x = small_fault(seed)

    def moved(**kw) -> tuple[float, float, float]:
        cfg = AnomalyConfig(warmup_frames=300, adapt_frames=50, detector_weight=0.0, **kw)
        ratio, flags, snaps = stream(cfg, x)
        (b0, v0), (b1, v1) = snaps[600], snaps[1000]
        return (b1[0] - b0[0]) / np.sqrt(v0[0]), v1[0] / v0[0], float((ratio[600:1000] >= 0.7).mean())

    level, today, near = moved()  # today: blocks of 50 learn the fault
    assert level > 1.0 and today > 2.0 and near < 0.4
    level, spread, near = moved(**HOLD)  # held as a whole: judged against the level and spread before it
    assert abs(level) < 0.2 and abs(spread - 1.0) < 0.3 and near > 0.6
    # Frame by frame (hold_frames 0) the frames dipping under 0.7 still teach it: the hold leaks.
    assert moved(hold_above=0.7)[0] > 1.0
    # The spread alone, 4 times slower: it widens less, the level moves as before.
    level, spread, _ = moved(spread_rate_factor=0.25)
    assert level > 1.0 and spread < 0.8 * today


def test_held_rows_teach_nothing_and_the_hold_is_carried_over_calls() -> None:
    rng = np.random.default_rng(3)
    u = rng.normal(size=(40, 2))
    u[10:20] += 5.0  # the held rows: far off
    held = np.zeros(40, dtype=bool)
    held[10:20] = True
    a, b = (Baseline(2, warmup=20, smoothing=1) for _ in range(2))
    for c in (a, b):
        c.feed(rng.normal(size=(20, 2)) if c is a else np.random.default_rng(3).normal(size=(20, 2)))
    b.base, b.var = a.base.copy(), a.var.copy()
    for start in range(40):  # blocks of 1: the held rows are skipped, level and spread alike
        a.adapt(u[start:start + 1], np.ones(1, bool), held=held[start:start + 1], spread_factor=0.5)
    for start in [*range(10), *range(20, 40)]:
        b.adapt(u[start:start + 1], np.ones(1, bool), spread_factor=0.5)
    assert np.allclose(a.base, b.base) and np.allclose(a.var, b.var)
    # Sticky: a hot row holds itself and the next 3 rows, across calls.
    hot = np.zeros(12, dtype=bool)
    hot[[2, 9]] = True
    whole = Baseline(1).held_rows(hot, 3)
    parts = Baseline(1)
    split = np.concatenate([parts.held_rows(hot[:4], 3), parts.held_rows(hot[4:10], 3), parts.held_rows(hot[10:], 3)])
    assert whole.tolist() == split.tolist() == [False, False, True, True, True, True, False, False, False, True, True,
                                                True]


def test_normal_drift_is_still_followed_with_the_hold() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 3))
    x[300:, 1] += 0.0015 * np.arange(2700)  # slow drift: 4 sd over the run
    for kw in ({}, HOLD, dict(spread_rate_factor=0.25)):
        cfg = AnomalyConfig(warmup_frames=300, adapt_frames=50, detector_weight=0.0, **kw)
        ratio, flags, snaps = stream(cfg, x, size=100)
        assert not flags.any(), kw  # followed: no false alarm
        assert snaps[3000][0][1] > 3.0, kw  # the level went along (~4 warm-up sd by the end)
    # A limit: both together are not. The spread widening while the level lags a drift is part of what keeps its
    # ratio low; with the spread 4 times slower the lag pushes the ratio over the hold level, the baseline stops,
    # the lag grows and the drift raises an alert (the proxies judge whether that costs more than it finds).
    cfg = AnomalyConfig(warmup_frames=300, adapt_frames=50, detector_weight=0.0, **HOLD, spread_rate_factor=0.25)
    ratio, flags, snaps = stream(cfg, x, size=100)
    assert flags[1500:].any() and snaps[3000][0][1] < 2.0


@pytest.mark.parametrize("kw", [HOLD, dict(**HOLD, spread_rate_factor=0.25), dict(spread_rate_factor=0.25)])
def test_scores_do_not_depend_on_how_the_stream_is_batched_with_the_hold(kw: dict) -> None:
    x = small_fault(2)
    x[1050:1100, 2] += 6.0  # and a fault that raises an alert
    cfg = AnomalyConfig(warmup_frames=300, adapt_frames=25, detector_weight=0.0, **kw)
    runs = [stream(cfg, x, size) for size in (7, 64, 1200)]
    assert all(np.allclose(r[0], runs[0][0], rtol=0, atol=1e-12) and np.array_equal(r[1], runs[0][1]) for r in runs[1:])
    assert runs[0][1][1055:1100].all()


def test_settings_reach_the_config_and_bad_values_are_refused() -> None:
    cfg = AnomalyConfig.from_settings(Settings(anomaly_hold_above=0.7, anomaly_hold_frames=50,
                                               anomaly_spread_rate_factor=0.25))
    assert (cfg.hold_above, cfg.hold_frames, cfg.spread_rate_factor) == (0.7, 50, 0.25)
    off = AnomalyConfig()
    assert (off.hold_above, off.spread_rate_factor) == (0.0, 1.0)  # off by default
    for bad in (dict(spread_rate_factor=0.0), dict(spread_rate_factor=1.5), dict(hold_above=-1.0),
                dict(hold_frames=-1)):
        with pytest.raises(ValueError):
            AnomalyConfig(**bad)

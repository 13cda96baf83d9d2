"""Dynamics features (``dynamics_frames`` > 0): per sensor, the mean |first difference| of its standardized reading.

They sit in the same per-equipment Baseline as the levels, so they must stream (batching changes nothing),
survive a checkpoint, reach the model under their own names, and leave alerts naming sensors.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.anomaly.config import AnomalyConfig
from models.anomaly.data import Series
from models.anomaly.engine import AnomalyEngine
from models.anomaly.features import DYN_CLIP, Baseline
from models.anomaly.state import AnomalyState, feature_names
from models.anomaly.train import _Scorer, fit
from models.anomaly.tuning import inject
from streams.records import SensorFrame

T0 = 1_700_000_000.0
SENSORS = ["a", "b", "c"]


def noisy(n: int, seed: int = 0, factor: float = 3.0) -> np.ndarray:
    """Three sensors of unit noise; sensor b becomes ``factor`` times noisier (same mean) over frames 600-700."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    x[600:700, 1] *= factor
    return x


def feed(b: Baseline, x: np.ndarray, size: int) -> np.ndarray:
    out = []
    for start in range(0, len(x), size):
        step = b.feed(x[start:start + size])
        if len(step.deviations):
            out.append(step.deviations)
    return np.concatenate(out)


def frames(x: np.ndarray, start: int = 0, eid: str = "p") -> list[SensorFrame]:
    return [SensorFrame(f"{eid}-{i}", T0 + i, eid, dict(zip(SENSORS, v)))
            for i, v in zip(range(start, start + len(x)), x.tolist())]


def test_off_by_default_and_one_more_column_per_sensor_when_on() -> None:
    x = noisy(800)
    off = feed(Baseline(3, warmup=300, smoothing=5), x, 100)
    on = feed(Baseline(3, warmup=300, smoothing=5, dynamics=10), x, 100)
    assert off.shape == (500, 3) and on.shape == (500, 6)
    assert np.allclose(on[:, :3], off)  # the level columns are the same features as without dynamics
    # The noise burst hardly moves b's level but stands out in b's dynamics column; the others stay quiet.
    burst = slice(320, 400)  # rows after warm-up: frames 620-700
    assert on[burst, 4].mean() > 3.0 and on[burst, 4].min() > 0.5
    assert np.abs(on[burst, 1]).mean() < on[burst, 4].mean() / 1.3
    assert np.abs(on[:280, 3:]).max() < 4.0 and np.abs(on[burst, [3, 5]]).max() < 4.0


def test_dynamics_do_not_depend_on_batching() -> None:
    x = noisy(900, seed=3)
    ref = feed(Baseline(3, warmup=300, smoothing=5, dynamics=10), x, 900)
    for size in (1, 7, 64):
        assert np.allclose(feed(Baseline(3, warmup=300, smoothing=5, dynamics=10), x, size), ref)


def test_a_spike_moves_the_dynamics_column_by_a_bounded_amount() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(500, 3))
    x[400, 0] += 80.0
    b = Baseline(3, warmup=300, smoothing=5, dynamics=10)
    d = feed(b, x, 50)
    alpha = 2.0 / 11.0
    # z is winsorized, then each |first difference| clipped at DYN_CLIP: the spike adds at most 2 clipped moves
    bound = (b.base[3] + 2 * alpha * DYN_CLIP - b.base[3]) / np.sqrt(b.var[3]) + 3.0
    assert d[100:, 3].max() < bound


def test_engine_names_sensors_and_checkpoints_the_dynamics_state() -> None:
    cfg = AnomalyConfig(warmup_frames=300, dynamics_frames=10, raise_after=5, clear_after=5, default_threshold=1.5)
    x = noisy(1000, seed=5, factor=12.0)  # alert on b
    eng = AnomalyEngine(cfg)
    eng.score(frames(x[:650]))
    st = eng.state.get("p")
    assert st.features == ["a", "b", "c", "a~moves", "b~moves", "c~moves"]
    assert st.detector is not None and st.detector.n_features == 6
    restored = AnomalyEngine(cfg, AnomalyState.from_bytes(eng.state.to_bytes()))
    rest = frames(x[650:], start=650)
    a, b = eng.score(rest), restored.score(rest)
    assert np.allclose(a.ratio, b.ratio) and (a.flag == b.flag).all()
    raised = [e for e in AnomalyEngine(cfg).score(frames(x)).events if e.kind == "raise"]
    assert raised, "a sensor 12 times noisier raises an alert with dynamics on"
    assert raised[0].sensors[0]["name"] == "b"  # sensors, not feature columns, are named
    assert all("~" not in s["name"] for e in raised for s in e.sensors)


def test_a_noisier_sensor_is_flagged_more_with_dynamics_than_without() -> None:
    caught = {0: 0, 10: 0}
    false = {0: 0, 10: 0}
    for seed in range(4):
        x = noisy(1000, seed=seed)  # b 3 times noisier for 100 frames, its mean unchanged
        for dyn in caught:
            flag = AnomalyEngine(AnomalyConfig(warmup_frames=300, dynamics_frames=dyn, default_threshold=1.5)).score(
                frames(x)).flag
            caught[dyn] += int(flag[600:700].sum())
            false[dyn] += int(flag[300:600].sum() + flag[720:].sum())
    assert caught[10] > 2 * caught[0] and caught[10] > 200  # of 400 fault frames
    assert false[10] <= 20  # of 2,320 normal ones


def test_fit_trains_on_the_dynamics_columns() -> None:
    rng = np.random.default_rng(6)
    series = [Series(f"pump-{i}", T0 + np.arange(500.0), rng.normal(size=(500, 3)), SENSORS, None, "t")
              for i in range(4)]
    model = fit(series, AnomalyConfig(warmup_frames=120, dynamics_frames=10), epochs=2)
    assert model.meta.features == feature_names(SENSORS, True)
    assert model.meta.extra["dynamics_frames"] == 10
    scorer = _Scorer(model.onnx_bytes, model.meta)
    out = AnomalyEngine(AnomalyConfig(warmup_frames=120, dynamics_frames=10)).score(frames(series[0].values), scorer)
    assert np.isfinite(out.ratio).all() and not out.calibrating[120:].any()


def test_noise_faults_of_the_proxy_keep_the_level_and_raise_the_movement() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(1150, 4)).cumsum(axis=0) * 0.1 + rng.normal(size=(1150, 4))
    run = Series("ref", T0 + np.arange(1150.0), x, ["w", "x", "y", "z"], None, "t")
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


def test_sd_floor_holds_a_dynamics_column_spread_at_k_times_its_warm_up_mean() -> None:
    x = noisy(1200, seed=8)
    plain = Baseline(3, warmup=200, smoothing=5, dynamics=10)
    floored = Baseline(3, warmup=200, smoothing=5, dynamics=10, dynamics_sd_floor=0.5)
    for b in (plain, floored):
        b.feed(x[:200])
    # White noise: the EWMA of |first difference| has sd ~0.3 around a mean ~1.1, so the floor binds.
    assert (np.sqrt(plain.var[3:]) < 0.5 * plain.base[3:]).all()
    assert np.allclose(floored.base, plain.base) and np.allclose(floored.var[:3], plain.var[:3])  # levels unchanged
    assert np.allclose(np.sqrt(floored.var[3:]), 0.5 * floored.base[3:])
    # Kept while the baseline adapts (normal rows at the full rate pull the variance toward theirs).
    k = 0.5 * floored.base[3:].copy()
    step = floored.feed(x[200:1200])
    floored.adapt(step.smoothed, np.ones(len(step.smoothed), dtype=bool), block=100)
    assert (np.sqrt(floored.var[3:]) >= k - 1e-12).all()
    # Smaller dynamics deviations than without the floor, the levels' the same.
    d_plain, d_floor = plain.feed(x[200:1200]).deviations, step.deviations
    assert np.allclose(d_floor[:, :3], d_plain[:, :3])
    assert np.abs(d_floor[:, 3:]).mean() < 0.8 * np.abs(d_plain[:, 3:]).mean()


def test_sd_floor_is_off_by_default_and_read_from_settings() -> None:
    from streams.settings import Settings

    assert AnomalyConfig().dynamics_sd_floor == 0.0
    assert AnomalyConfig.from_settings(Settings(anomaly_dynamics_sd_floor=0.5)).dynamics_sd_floor == 0.5
    assert Baseline.from_config(3, 300, AnomalyConfig(dynamics_frames=10, dynamics_sd_floor=0.5)).dyn_sd_floor == 0.5
    with pytest.raises(ValueError):
        AnomalyConfig(dynamics_sd_floor=-0.1)


def test_release_brings_a_dynamics_column_back_sooner_after_a_burst_and_still_flags_it() -> None:
    # Round 11: the drift proxies' extra false alarms with dynamics are frames just after a fault, where a
    # dynamics column still remembers the burst over its window; with a release it is the lower of its EWMA and
    # a fast one, so it falls back within a few frames once the movement stops.
    late: dict[int, list[int]] = {0: [], 5: []}
    for seed in range(8):
        x = noisy(1200, seed=seed, factor=6.0)  # b six times noisier over frames 600-700: rows 300-400
        for release in late:
            d = feed(Baseline(3, warmup=300, smoothing=5, dynamics=10, dynamics_release=release), x, 100)
            assert d[320:400, 4].mean() > 3.0  # the burst still stands out in b's dynamics column
            late[release].append(int(np.argmax(d[400:, 4] < 2.0)))  # frames after it until it is under 2 sd
    assert all(a <= b for a, b in zip(late[5], late[0]))
    assert sum(late[5]) < 0.75 * sum(late[0])


def test_release_is_off_by_default_streams_and_keeps_the_levels() -> None:
    x = noisy(900, seed=3, factor=6.0)
    plain = feed(Baseline(3, warmup=300, smoothing=5, dynamics=10), x, 900)
    assert np.allclose(feed(Baseline(3, warmup=300, smoothing=5, dynamics=10, dynamics_release=0), x, 900), plain)
    ref = feed(Baseline(3, warmup=300, smoothing=5, dynamics=10, dynamics_release=5), x, 900)
    assert np.allclose(ref[:, :3], plain[:, :3]) and not np.allclose(ref[:, 3:], plain[:, 3:])
    for size in (1, 7, 64):  # the fast EWMA's state carries across batches too
        assert np.allclose(feed(Baseline(3, warmup=300, smoothing=5, dynamics=10, dynamics_release=5), x, size), ref)
    cfg = AnomalyConfig(warmup_frames=300, dynamics_frames=10, dynamics_release_frames=5)
    eng = AnomalyEngine(cfg)
    eng.score(frames(x[:500]))
    restored = AnomalyEngine(cfg, AnomalyState.from_bytes(eng.state.to_bytes()))
    rest = frames(x[500:], start=500)
    assert np.allclose(eng.score(rest).ratio, restored.score(rest).ratio)


def test_separate_error_is_the_larger_of_the_levels_and_the_dynamics_rms() -> None:
    from models.anomaly.engine import model_error

    x = noisy(1000, seed=5, factor=8.0)
    ratios = {}
    for separate in (False, True):
        cfg = AnomalyConfig(warmup_frames=300, dynamics_frames=10, dynamics_separate=separate, detector_weight=0.0,
                            default_threshold=1.5)
        ratios[separate] = AnomalyEngine(cfg).score(frames(x)).ratio[300:]
    b = Baseline.from_config(3, 300, AnomalyConfig(warmup_frames=300, dynamics_frames=10))
    d = feed(b, x[:800], 800)  # the engine's deviations until its baseline first adapts (after 500 scored frames)
    rms = lambda a: np.sqrt((a * a).mean(axis=1))  # noqa: E731 - no model: each column contributes d^2
    assert np.allclose(ratios[True][:500], np.maximum(rms(d[:, :3]), rms(d[:, 3:])) / 1.5)
    assert np.allclose(ratios[False][:500], rms(d) / 1.5)
    assert (ratios[True] >= ratios[False] - 1e-12).all() and not np.allclose(ratios[True], ratios[False])
    known = np.ones(6, dtype=bool)
    assert np.allclose(model_error(d[:, :3] ** 2, known[:3], 3, separate=True), rms(d[:, :3]))  # no dynamics: one RMS


def test_release_and_separate_are_off_by_default_and_read_from_settings() -> None:
    from streams.settings import Settings

    cfg = AnomalyConfig()
    assert cfg.dynamics_release_frames == 0 and cfg.dynamics_separate is False
    s = Settings(anomaly_dynamics_release_frames=5, anomaly_dynamics_separate=True)
    cfg = AnomalyConfig.from_settings(s)
    assert cfg.dynamics_release_frames == 5 and cfg.dynamics_separate is True
    assert Baseline.from_config(3, 300, cfg.with_(dynamics_frames=10)).dyn_release_alpha == pytest.approx(2 / 6)
    assert Baseline.from_config(3, 300, cfg).dyn_release_alpha == 0.0  # no dynamics columns: nothing to release
    with pytest.raises(ValueError):
        AnomalyConfig(dynamics_release_frames=-1)

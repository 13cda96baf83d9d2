"""``lepton train anomaly``: normal operation → deviations → autoencoder → ONNX, with a calibrated threshold.

1. Normal operation: the training parts of the data (or, by default, every
   equipment's frames before its first labelled anomaly; for the synthetic
   generator, the pumps' healthy stretches). Long series are cut into segments
   of ``3 * warmup_frames``, each calibrated on its own start like a new
   equipment, so that the model also sees how far normal operation drifts after
   a warm-up.
2. Deviations come from :class:`~.features.Baseline`, fed in small batches as
   the worker feeds it. A quarter of the segments is held out.
3. The autoencoder learns the other segments' deviations (:mod:`.autoencoder`).
4. The threshold: the held-out segments are streamed through
   :class:`~.engine.AnomalyEngine` (the worker's code, River detector and
   hysteresis included) and the error threshold is the lowest whose alert rate
   stays within ``target_far`` of their frames. The calibration reference is
   the typical warm-up error quantile, against which each equipment calibrates
   its own threshold when it finishes its warm-up.

Everything used here is normal data: no label other than "this stretch was
normal" is ever needed. torch is imported only when a model is fitted.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from models.meta import ModelMeta

from .config import AnomalyConfig
from .data import Series, load_series, normal_prefix, train_size
from .engine import AnomalyEngine, model_error
from .features import Baseline

DEFAULT_EPOCHS = 30
DEFAULT_TARGET_FAR = 0.125  # = the anomaly_target_far setting (round 8 of models/anomaly/README.md)
MIN_SCALE_ROWS = 500
FEED_ROWS = 50  # rows per Baseline.feed while building training deviations (the worker's batches are similar)
SYNTHETIC_EQUIPMENT = 20
SYNTHETIC_FRAMES = 3000
SYNTHETIC_START = 1_700_000_000.0


@dataclass
class Fit:
    """A trained model, ready to register."""

    onnx_bytes: bytes
    meta: ModelMeta
    details: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def progress_bar(enabled: bool, total: int, what: str) -> Iterator[Callable[..., None]]:
    """``update(done, **fields)``; a no-op unless ``enabled`` (rich, on the terminal)."""
    if not enabled:
        yield lambda done, **_: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # stderr: stdout may carry a JSON result on its last line
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True)) as bar:
        task = bar.add_task(what, total=total)
        yield lambda done, **_: bar.update(task, completed=done)


def segments(series: Sequence[Series], warmup: int) -> list[Series]:
    """Long normal series cut into ``3 * warmup``-frame segments (a short tail joins the last one)."""
    size = 3 * warmup
    out = []
    for s in series:
        n = len(s)
        if n < 2 * size:
            out.append(s)
            continue
        cuts = list(range(0, n - size + 1, size))
        for i, start in enumerate(cuts):
            stop = n if i == len(cuts) - 1 else start + size
            part = s.slice(start, stop)
            part.equipment_id = f"{s.equipment_id}@{i}"
            out.append(part)
    return out


def split_holdout(segs: Sequence[Series], warmup: int, mode: str = "long") -> list[Series]:
    """The segments held out to calibrate the threshold: a quarter of them, taken among those long enough
    for a full warm-up and as much scoring after it when there are any (short ones would be judged with
    a half-length warm-up, noisier than the worker's).

    ``mode="mixed"`` also holds out a quarter of the short segments (e.g. benchmark runs' training parts),
    judged with a half-length warm-up: a run's own drift after its warm-up then counts in the threshold.
    """
    long = [s for s in segs if len(s) >= 2 * warmup]
    pool = long if len(long) >= 2 else list(segs)
    if len(pool) < 2:
        return []
    held = pool[3::4] or pool[-1:]
    if mode == "mixed" and pool is long:
        short = [s for s in segs if len(s) < 2 * warmup]
        held = held + short[3::4]
    return held


def deviations(seg: Series, config: AnomalyConfig, block: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A normal segment's deviations as the worker computes them (warm-up rows in-sample), and a row mask
    that drops frames labelled anomalous. The baseline adapts every ``FEED_ROWS`` rows (training's way), or
    with ``block`` > 1 in blocks of that many rows, as the engine does (every row normal)."""
    warm = min(config.warmup_frames, len(seg))
    b = Baseline.from_config(len(seg.sensors), warm, config)
    rows = []
    for start in range(0, len(seg), FEED_ROWS):
        step = b.feed(seg.values[start:start + FEED_ROWS])
        if step.calibration is not None:
            rows.append(step.calibration)
        if len(step.deviations):
            rows.append(step.deviations)
            b.adapt(step.smoothed, np.ones(len(step.deviations), dtype=bool), block=block)
    d = np.concatenate(rows) if rows else np.empty((0, b.n_sensors))
    keep = np.ones(len(d), dtype=bool)
    if seg.labels is not None:
        keep = ~seg.labels[len(seg) - len(d):]
    return d, keep


def frames_of(s: Series, start: int = 0, stop: int | None = None) -> list:
    """The series as :class:`~streams.records.SensorFrame` objects (what the worker parses from Kafka)."""
    from streams.records import SensorFrame

    sensors, eid = s.sensors, s.equipment_id
    stop = len(s) if stop is None else stop
    return [SensorFrame(f"{eid}-{i}", t, eid, dict(zip(sensors, row)))
            for i, t, row in zip(range(start, stop), s.ts[start:stop].tolist(), s.values[start:stop].tolist())]


class _Scorer:
    """The exported model in an onnxruntime session, with metadata that calibration can change."""

    def __init__(self, onnx_bytes: bytes, meta: ModelMeta) -> None:
        from models.onnx_runtime import OnnxScorer

        self._dir = tempfile.TemporaryDirectory(prefix="lepton-anomaly-")
        path = Path(self._dir.name) / "model.onnx"
        path.write_bytes(onnx_bytes)
        self._inner = OnnxScorer(path, meta, threads=1)
        self.meta = meta

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._inner.predict(x)


def alert_rate(holdout: Sequence[Series], scorer: Any, config: AnomalyConfig, batch: int = 200) -> tuple[float, int]:
    """Share of the held-out frames after warm-up that are in alert, and how many were scored."""
    engine = AnomalyEngine(config)
    flagged = scored = 0
    for s in holdout:
        engine.warmup[s.equipment_id] = max(20, min(config.warmup_frames, len(s) // 2))
        for start in range(0, len(s), batch):
            out = engine.score(frames_of(s, start, start + batch), scorer)
            live = ~out.calibrating
            flagged += int(out.flag[live].sum())
            scored += int(live.sum())
    return (flagged / scored if scored else float("nan")), scored


def calibrate_threshold(holdout: Sequence[Series], scorer: Any, config: AnomalyConfig, target_far: float,
                        lo: float = 0.5, hi: float = 64.0, steps: int = 10) -> tuple[float, float, int]:
    """Lowest error threshold whose held-out alert rate is within ``target_far`` (bisection in log space)."""
    base_extra = dict(scorer.meta.extra)

    def rate(t: float) -> tuple[float, int]:
        scorer.meta = scorer.meta.model_copy(update={"extra": {**base_extra, "error_threshold": t}})
        return alert_rate(holdout, scorer, config)

    far_hi, n = rate(hi)
    if not far_hi <= target_far:  # NaN (nothing scored) or even the loosest threshold alerts too often
        return hi, far_hi, n
    best = (hi, far_hi)
    for _ in range(steps):
        mid = float(np.sqrt(lo * hi))
        far, n = rate(mid)
        if far <= target_far:
            hi, best = mid, (mid, far)
        else:
            lo = mid
    return best[0], best[1], n


def sensor_tails(segs: Sequence[Series], scorer: Any, config: AnomalyConfig, q: float) -> list[float]:
    """Per model input sensor, the ``q``-quantile of its contribution on normal segments after their warm-up (the
    threshold calibration's: half a segment, at most ``warmup_frames``), divided by the quantiles' geometric mean.
    The baseline adapts in blocks of ``adapt_frames`` as the engine's does (every row taken as normal), so the
    tails are those the threshold is calibrated on, not training's (adapting every 50 rows follows drift sooner).

    The autoencoder normalizes each sensor's error by its mean over training frames; on held-out normal data some
    sensors (drifting temperatures, accelerometers) contribute far more and with far heavier tails than others, and
    set the RMS threshold for all. Dividing by these tails judges each sensor against its own normal distribution.
    """
    names = list(scorer.meta.features)
    found: dict[str, list[np.ndarray]] = {n: [] for n in names}
    engine = AnomalyEngine(config)
    for s in segs:
        warm = max(20, min(config.warmup_frames, len(s) // 2))
        d, keep = deviations(s, config.with_(warmup_frames=warm), block=config.adapt_frames)
        live = max(0, len(s) - warm)
        d = d[len(d) - live:][keep[len(d) - live:]]
        if not len(d):
            continue
        st = engine.state.get_or_create(s.equipment_id, list(s.sensors), config)
        contrib = engine.contributions([(st, d)], scorer)[0]
        for j, name in enumerate(s.sensors):
            if name in found:
                found[name].append(contrib[:, j])
    tails = np.array([max(float(np.quantile(np.concatenate(v), q)), 1e-6) if v else np.nan for v in found.values()])
    known = np.isfinite(tails)
    if not known.any():
        return [1.0] * len(names)
    tails = np.where(known, tails / np.exp(np.log(tails[known]).mean()), 1.0)
    return [round(float(t), 6) for t in tails]


def fit(normal: Sequence[Series], config: AnomalyConfig | None = None, *, epochs: int | None = None, seed: int = 0,
        target_far: float = DEFAULT_TARGET_FAR, source: str = "", progress: bool = False) -> Fit:
    """Train on normal series and calibrate; the :class:`Fit` carries ONNX bytes and metadata."""
    from .autoencoder import INPUT_NAME, OUTPUT_NAME, export, train_ensemble  # torch: training only
    config = config or AnomalyConfig()
    segs = [s for s in segments(normal, config.warmup_frames) if len(s) >= 40]
    if not segs:
        raise ValueError("no normal operation to learn from: need series of at least 40 frames")
    sensors: list[str] = []  # the model's input columns
    for s in segs:
        sensors.extend(x for x in s.sensors if x not in sensors)
    pos = {name: i for i, name in enumerate(sensors)}
    holdout = split_holdout(segs, config.warmup_frames, config.calibration_holdout)
    held = {id(s) for s in holdout}
    train_segs = [s for s in segs if id(s) not in held]
    rows, live, warm_q = [], [], []
    for s in train_segs:
        d, keep = deviations(s, config)
        x = np.zeros((len(d), len(sensors)), dtype=np.float32)
        x[:, [pos[c] for c in s.sensors]] = d
        n_warm = min(config.warmup_frames, len(s))
        warm_rows = n_warm - min(2 * config.smoothing_frames, n_warm // 2)
        rows.append(x[keep])
        live.append(x[warm_rows:][keep[warm_rows:]])
    x = np.concatenate(rows)
    after_warmup = np.concatenate(live)
    # Per-sensor error scale from frames after a warm-up when there are enough of them (see train_autoencoder).
    scale_rows = after_warmup if len(after_warmup) >= MIN_SCALE_ROWS else None
    epochs = epochs or DEFAULT_EPOCHS
    members = config.ensemble_members
    losses: list[float] = []
    what = "training anomaly autoencoder" + (f"s (ensemble of {members})" if members > 1 else "")
    with progress_bar(progress, members * epochs, what) as bar:
        def report(step: int, loss: float) -> None:
            losses.append(loss)
            bar(step)

        model = train_ensemble(x, members=members, epochs=epochs, seed=seed, clip=config.clip, scale_rows=scale_rows,
                               progress=report)
    onnx_bytes = export(model)
    meta = ModelMeta(
        pipeline="anomaly", features=sensors, input_name=INPUT_NAME, output_name=OUTPUT_NAME, threshold=0.5,
        extra={"kind": "deviation-autoencoder", "ensemble_members": members,
               "error_threshold": config.default_threshold,
               "smoothing_frames": config.smoothing_frames, "warmup_frames": config.warmup_frames,
               "features_module": "models.anomaly.features"},
    )
    scorer = _Scorer(onnx_bytes, meta)
    if config.sensor_tail_quantile > 0:  # round 16: before anything is calibrated with the contributions
        tails = sensor_tails(holdout or train_segs, scorer, config, config.sensor_tail_quantile)
        scorer.meta = meta = meta.model_copy(update={"extra": {**meta.extra, "sensor_tails": tails,
                                                               "sensor_tail_quantile": config.sensor_tail_quantile}})
    # The reference each equipment compares its own warm-up with.
    engine = AnomalyEngine(config)
    for s in train_segs:
        d, _ = deviations(s, config)
        n_warm = min(config.warmup_frames, len(s))
        warm = d[: n_warm - min(2 * config.smoothing_frames, n_warm // 2)]  # the in-sample warm-up rows
        st = engine.state.get_or_create(s.equipment_id, list(s.sensors), config)
        contrib = engine.contributions([(st, warm)], scorer)[0]
        error = model_error(contrib, np.ones(contrib.shape[1], dtype=bool))
        warm_q.append(float(np.quantile(error, config.calibration_quantile)))
    reference = float(np.median(warm_q))
    scorer.meta = meta = meta.model_copy(update={"extra": {**meta.extra, "calibration_reference": reference}})
    # the members' last epochs, averaged (one member: its last epoch)
    metrics: dict[str, float] = {"train_loss": float(np.mean(losses[epochs - 1::epochs])), "train_rows": float(len(x)),
                                 "scale_rows": float(len(after_warmup) if scale_rows is not None else len(x))}
    threshold = config.default_threshold
    if holdout:
        with progress_bar(progress, 1, "calibrating the threshold on held-out normal data") as bar:
            threshold, far, scored = calibrate_threshold(holdout, scorer, config, target_far)
            bar(1)
        metrics.update({"holdout_alert_rate": float(far), "holdout_frames": float(scored)})
    meta = meta.model_copy(update={
        "metrics": metrics,
        "extra": {**meta.extra, "error_threshold": float(threshold), "target_far": target_far},
        "training": {"source": source, "segments": len(segs), "train_segments": len(train_segs),
                     "holdout_segments": len(holdout), "rows": int(len(x)), "epochs": epochs, "seed": seed,
                     "equipment": sorted({s.equipment_id.split("@")[0] for s in segs})[:50]},
    })
    return Fit(onnx_bytes, meta, {"loss": losses})


def synthetic_series(n_equipment: int = SYNTHETIC_EQUIPMENT, frames: int = SYNTHETIC_FRAMES, seed: int = 1) -> list[Series]:
    """Pumps from :class:`~connectors.generators.SensorGenerator`, with their labels."""
    from connectors.generators import SensorGenerator

    df = SensorGenerator(seed=seed, start_ts=SYNTHETIC_START, n_equipment=n_equipment).batch(n_equipment * frames)
    sensors = [c for c in df.columns if c not in ("id", "ts", "equipment_id", "label")]
    out = []
    for eid, g in df.groupby("equipment_id", sort=True):
        out.append(Series(str(eid), g["ts"].to_numpy(np.float64), g[sensors].to_numpy(np.float64), sensors,
                          g["label"].to_numpy(bool), "synthetic"))
    return out


def normal_operation(series: Sequence[Series], train_frames: int | None = None,
                     train_fraction: float | None = None) -> list[Series]:
    """What to learn from: the protocol's training parts (plus reference runs whole) when a size is given,
    otherwise each equipment's frames before its first labelled anomaly."""
    if train_frames is None and train_fraction is None:
        return [normal_prefix(s) for s in series]
    return [s if s.reference else s.head(train_size(len(s), train_frames, train_fraction)) for s in series]


def train_anomaly(settings: Any, *, data: Path | None = None, epochs: int | None = None, promote: bool = True,
                  progress: bool = False, train_frames: int | None = None, train_fraction: float | None = None,
                  seed: int = 0, target_far: float | None = None) -> ModelMeta:
    """Train on ``data`` (file or folder; default: the synthetic generator) and register the model."""
    from models.registry import ModelRegistry

    config = AnomalyConfig.from_settings(settings)
    if data is None:
        series, source = synthetic_series(), "synthetic"
    else:
        series, source = load_series(data), str(data)
    normal = normal_operation(series, train_frames, train_fraction)
    target = target_far if target_far is not None else getattr(settings, "anomaly_target_far", DEFAULT_TARGET_FAR)
    result = fit(normal, config, epochs=epochs, seed=seed, target_far=target, source=source, progress=progress)
    return ModelRegistry(settings.models_dir).register("anomaly", result.onnx_bytes, result.meta, promote=promote)

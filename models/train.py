"""``lepton train PIPELINE``: data → features → torch → ONNX → registry.

Data comes from a file (through :mod:`connectors.replay`) or, by default,
from the synthetic generator. Fraud features come from replaying the data in
event time through the code the worker runs (:mod:`models.fraud.stream`);
the last labelled week is held out: its metrics and the alert threshold
chosen on it are registered with the model (:mod:`models.fraud.offline`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .meta import ModelMeta
from .registry import ModelRegistry

SYNTHETIC_ROWS = 400_000  # 40 days at the handbook's pace: windows and label delay fill up
SYNTHETIC_START = 1_700_000_000.0
ONLINE_CHECKPOINT = "online.pkl"  # the replayed online learner, next to model.onnx


@contextlib.contextmanager
def _progress(enabled: bool, total: int, what: str) -> Iterator[Any]:
    if not enabled:
        yield lambda epoch, loss: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(),
                  console=Console(stderr=True)) as bar:
        task = bar.add_task(what, total=total, loss=float("nan"))
        yield lambda epoch, loss: bar.update(task, completed=epoch, loss=loss)


def _fraud_frame(data: Path | None, rows: int):
    """The transactions (ts, card, merchant, amount, label) in time order, and where they came from."""
    if data is not None:
        from connectors.replay import read_frame

        frame = read_frame("fraud", data)
        if "label" not in frame.columns or frame["label"].isna().all():
            raise ValueError(f"{data}: training needs fraud labels (TX_FRAUD or label column)")
        return frame, str(data)
    from connectors.generators import TransactionGenerator

    # The handbook's pace (about 10k transactions a day): the scale the features are tuned to.
    frame = TransactionGenerator(seed=1, start_ts=SYNTHETIC_START).batch(rows)
    return frame.sort_values("ts", kind="stable").reset_index(drop=True), "synthetic"


def stream_time_scale(rate_per_s: float) -> float:
    """Feature seconds per second when the synthetic generator streams ``rate_per_s`` transactions a second.

    >>> round(stream_time_scale(500.0) / 4320, 1)  # a simulated day (~10,000 transactions) every ~20 s
    1.0
    """
    from connectors.generators import TransactionGenerator

    from .fraud.features import DAY

    if rate_per_s <= 0:
        raise ValueError("the stream rate must be positive")
    return DAY * rate_per_s / TransactionGenerator(seed=0).events_per_day  # `lepton produce fraud`'s default seed


def train_fraud(settings: Any, *, data: Path | None = None, epochs: int | None = None,
                promote: bool = True, progress: bool = False, rows: int = SYNTHETIC_ROWS,
                train_end: str | None = None, label_delay_days: int = 7, seed: int = 0,
                stream_rate: float | None = None, stream_label_delay_s: float = 30.0) -> ModelMeta:
    """Replay the data through the live feature code, train, export, register.

    The labels used are those known by ``train_end`` (a date, UTC; default: all
    of them). The online learner replayed alongside is saved next to the model
    (``online.pkl``) as the worker's warm start.

    ``stream_rate``: the model is for the synthetic generator streamed at this
    many transactions a second (``lepton produce fraud --rate``, as the demo
    does), with labels ``stream_label_delay_s`` later. Its simulated days then
    pass in seconds, so the model records a time scale
    (:func:`models.fraud.features.time_scale`) and a label delay in scaled days.
    """
    import datetime as dt
    import math

    from .fraud import offline
    from .fraud.features import DAY, FEATURES
    from .fraud.online import OnlineFraudModel
    from .fraud.stream import progress_bar, replay

    scale = 1.0
    if stream_rate is not None:
        scale = stream_time_scale(stream_rate)
        label_delay_days = max(1, math.ceil(stream_label_delay_s * scale / DAY))
    frame, source = _fraud_frame(data, rows)
    ts = frame["ts"].to_numpy(dtype=np.float64)
    labelled = frame["label"].notna().to_numpy()
    y = frame["label"].fillna(False).astype(bool).to_numpy()
    if y.sum() < 2:
        raise ValueError(f"{source}: needs at least 2 fraud labels to train, found {int(y.sum())}")
    known_before = float(ts[-1]) + 1.0
    if train_end is not None:
        import pandas as pd

        end = pd.Timestamp(train_end)
        end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
        known_before = min(known_before, end.normalize().timestamp() + DAY)  # the whole end day
    online = OnlineFraudModel(FEATURES, seed=seed)
    with progress_bar(progress, len(frame), "replaying transactions") as report:
        rep = replay(frame[frame["ts"] < known_before], label_delay_days=label_delay_days, online=online,
                     progress=report)
    n = len(rep.X)
    train, val = offline.split_rows(ts[:n], labelled[:n], known_before, label_delay_days)
    epochs = epochs or offline.EPOCHS
    with _progress(progress, epochs * offline.ENSEMBLE, "training fraud model") as bar:
        fit = offline.fit(rep.X, y[:n], train, val, epochs=epochs, seed=seed, progress=bar)

    def iso(t: float) -> str:
        return dt.datetime.fromtimestamp(float(t), dt.timezone.utc).isoformat(timespec="seconds")

    meta = ModelMeta(
        pipeline="fraud",
        features=FEATURES,
        threshold=fit.threshold,
        metrics=fit.validation,
        training={
            **fit.training,
            "source": source,
            "rows": n,
            "positives": int(y[:n].sum()),
            "validation": f"labelled transactions {iso(ts[val][0])}..{iso(ts[val][-1])}",
            "period": [iso(ts[0]), iso(ts[n - 1])],
            "train_period": [iso(ts[train][0]), iso(ts[train][-1])],
        },
        extra={"label_delay_days": label_delay_days, "features_module": "models.fraud.features",
               "time_scale": scale, "stream_rate": stream_rate,
               "online_checkpoint": ONLINE_CHECKPOINT,
               # alert explanations replace a feature by its training mean (models/fraud/explain.py)
               "feature_means": [round(float(v), 6) for v in rep.X[train].mean(axis=0)],
               "online_prequential": {k: (v if v == v else None) for k, v in online.quality.get().items()}},
    )
    registry = ModelRegistry(settings.models_dir)
    meta = registry.register("fraud", fit.onnx_bytes, meta, promote=promote)
    online.save(registry.model_path("fraud", meta.version).parent / ONLINE_CHECKPOINT)
    return meta


def train_sentiment(settings: Any, **kw: Any) -> ModelMeta:
    """Sentiment: see :func:`models.sentiment.train.train_sentiment` (options: model, test_where, train_part_only)."""
    from .sentiment.train import train_sentiment as train

    return train(settings, **kw)


def train_anomaly(settings: Any, **kw: Any) -> ModelMeta:
    """Anomaly: see :func:`models.anomaly.train.train_anomaly` (options: train_frames, train_fraction, seed, target_far)."""
    from .anomaly.train import train_anomaly as train

    return train(settings, **kw)


TRAINERS = {"fraud": train_fraud, "sentiment": train_sentiment, "anomaly": train_anomaly}


def train_pipeline(settings: Any, pipeline: str, *, data: Path | None = None, epochs: int | None = None,
                   promote: bool = True, progress: bool = False, **options: Any) -> ModelMeta:
    """Train and register ``pipeline``'s model; returns its registered metadata.

    ``options`` go to the pipeline's trainer (fraud: ``train_end``, ``label_delay_days``, ``seed``).
    """
    try:
        trainer = TRAINERS[pipeline]
    except KeyError:
        raise ValueError(f"training for '{pipeline}' is not available yet; available: {sorted(TRAINERS)}") from None
    return trainer(settings, data=data, epochs=epochs, promote=promote, progress=progress, **options)

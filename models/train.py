"""``lepton train PIPELINE``: data → features → torch → ONNX → registry.

Data comes from a file (through :mod:`connectors.replay`) or, by default,
from the synthetic generator. Features come from the same functions the
worker uses. The last 20 % in time is held out: its metrics and the alert
threshold chosen on it are registered with the model.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .meta import ModelMeta
from .registry import ModelRegistry

SYNTHETIC_ROWS = 200_000
DEFAULT_EPOCHS = 8


@contextlib.contextmanager
def _progress(enabled: bool, total: int, what: str) -> Iterator[Any]:
    if not enabled:
        yield lambda epoch, loss: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn()) as bar:
        task = bar.add_task(what, total=total, loss=float("nan"))
        yield lambda epoch, loss: bar.update(task, completed=epoch, loss=loss)


def _fraud_rows(data: Path | None, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(amount, ts, label) arrays in time order, and a description of the source."""
    if data is not None:
        from connectors.replay import read_events

        pairs = list(read_events("fraud", data))
        source = str(data)
    else:
        from connectors.generators import make_generator

        gen = iter(make_generator("fraud", seed=1, rate_per_s=10_000.0))
        pairs = [next(gen) for _ in range(rows)]
        source = "synthetic"
    amount = np.fromiter((e["amount"] for e, _ in pairs), np.float64, len(pairs))
    ts = np.fromiter((e["ts"] for e, _ in pairs), np.float64, len(pairs))
    y = np.fromiter((int(bool(label)) for _, label in pairs), np.float32, len(pairs))
    order = np.argsort(ts, kind="stable")
    return amount[order], ts[order], y[order], source


def train_fraud(settings: Any, *, data: Path | None = None, epochs: int | None = None,
                promote: bool = True, progress: bool = False, rows: int = SYNTHETIC_ROWS) -> ModelMeta:
    from .fraud_features import FEATURES, featurize
    from .training import binary_metrics, choose_threshold, export_onnx, train_binary_classifier

    amount, ts, y, source = _fraud_rows(data, rows)
    if y.sum() < 2:
        raise ValueError(f"{source}: needs at least 2 fraud labels to train, found {int(y.sum())}")
    X = featurize(amount, ts)
    cut = int(len(y) * 0.8)
    epochs = epochs or DEFAULT_EPOCHS
    with _progress(progress, epochs, "training fraud model") as report:
        model = train_binary_classifier(X[:cut], y[:cut], epochs=epochs, progress=report)
    import torch

    with torch.no_grad():
        val_scores = model(torch.from_numpy(X[cut:])).numpy().reshape(-1)
    metrics = binary_metrics(y[cut:], val_scores)
    threshold = choose_threshold(y[cut:], val_scores)
    onnx_bytes = export_onnx(model, len(FEATURES))
    meta = ModelMeta(
        pipeline="fraud",
        features=FEATURES,
        threshold=threshold,
        metrics=metrics,
        training={
            "source": source,
            "rows": int(len(y)),
            "positives": int(y.sum()),
            "train_rows": cut,
            "validation": "last 20% in time",
            "epochs": epochs,
            "period": [float(ts[0]), float(ts[-1])],
        },
    )
    return ModelRegistry(settings.models_dir).register("fraud", onnx_bytes, meta, promote=promote)


TRAINERS = {"fraud": train_fraud}


def train_pipeline(settings: Any, pipeline: str, *, data: Path | None = None, epochs: int | None = None,
                   promote: bool = True, progress: bool = False) -> ModelMeta:
    """Train and register ``pipeline``'s model; returns its registered metadata."""
    try:
        trainer = TRAINERS[pipeline]
    except KeyError:
        raise ValueError(f"training for '{pipeline}' is not available yet; available: {sorted(TRAINERS)}") from None
    return trainer(settings, data=data, epochs=epochs, promote=promote, progress=progress)

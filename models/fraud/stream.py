"""Replaying a labelled file in event time through the live code path.

Training and evaluation see a file the way the worker sees Kafka: transactions
in micro-batches, in time order, each batch featurized from state by
:class:`~models.fraud.features.FeatureEngine` and scored by the online model;
labels arrive ``label_delay_days`` after their transaction and are applied
between batches (state, then the online model, with the features and score
logged when the transaction was scored). A label is never used before it
arrives: batches are cut so that none spans more than ``batch_seconds`` of
event time, and only labels that arrived by a batch's first transaction are
applied before it.

>>> import pandas as pd
>>> t0 = 1_700_000_000.0
>>> frame = pd.DataFrame({"ts": [t0, t0 + 10, t0 + 7 * 86400 + 5], "card": ["a", "a", "a"],
...                       "merchant": ["m", "m", "m"], "amount": [5.0, 7.0, 9.0], "label": [True, False, False]})
>>> out = replay(frame, label_delay_days=7)
>>> out.X.shape == (3, len(FEATURES)), out.labels_applied
(True, 1)
>>> float(out.X[2, FEATURES.index("terminal_last_fraud")])
1.0
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .features import DAY, FEATURES, FeatureEngine
from .online import OnlineFraudModel

BATCH_SECONDS = 3600.0
MAX_BATCH = 2000


@dataclass
class Replayed:
    """What a replay produced, row-aligned with the frame (time order)."""

    X: np.ndarray  # (n, F) float32: the features each transaction was scored with
    online_scores: np.ndarray  # (n,) the online model's score at scoring time (NaN without one)
    labels_applied: int
    card_states: dict[str, Any]
    terminal_states: dict[str, Any]


def _batches(ts: np.ndarray, batch_seconds: float, max_batch: int) -> Iterator[tuple[int, int]]:
    start = 0
    n = len(ts)
    while start < n:
        stop = min(int(np.searchsorted(ts, ts[start] + batch_seconds, side="left")), start + max_batch, n)
        stop = max(stop, start + 1)
        yield start, stop
        start = stop


def replay(
    frame: pd.DataFrame,
    *,
    label_delay_days: int = 7,
    online: OnlineFraudModel | None = None,
    batch_seconds: float = BATCH_SECONDS,
    max_batch: int = MAX_BATCH,
    progress: Callable[[int], None] | None = None,
) -> Replayed:
    """Stream ``frame`` (ts, card, merchant, amount[, label]; sorted by ts) through the live code.

    ``online`` (optional) scores every batch and learns from every label when
    it arrives. ``progress(rows_done)`` is called after each batch.
    """
    ts = frame["ts"].to_numpy(dtype=np.float64)
    if len(ts) and np.any(np.diff(ts) < 0):
        raise ValueError("the frame must be sorted by ts")
    card = frame["card"].to_numpy(dtype=object)
    merchant = frame["merchant"].to_numpy(dtype=object)
    amount = frame["amount"].to_numpy(dtype=np.float64)
    if "label" in frame.columns:
        raw = frame["label"]
        known = raw.notna().to_numpy()
        y = raw.fillna(False).astype(bool).to_numpy()
    else:
        known = np.zeros(len(ts), dtype=bool)
        y = np.zeros(len(ts), dtype=bool)
    engine = FeatureEngine(label_delay_days)
    arrival = ts + label_delay_days * DAY  # sorted, like ts
    X = np.empty((len(ts), len(FEATURES)), dtype=np.float32)
    online_scores = np.full(len(ts), np.nan)
    cards: dict[str, Any] = {}
    terminals: dict[str, Any] = {}
    next_label = 0
    applied = 0
    for a, b in _batches(ts, batch_seconds, max_batch):
        now = ts[a]
        upto = int(np.searchsorted(arrival, now, side="right"))
        if upto > next_label:
            sl = slice(next_label, upto)
            have = known[sl]
            idx = np.arange(next_label, upto)[have]
            if len(idx):
                engine.apply_labels(cards, terminals, card[idx], merchant[idx], ts[idx], y[idx], label_ts=now)
                if online is not None:
                    online.learn(X[idx], y[idx], online_scores[idx])
                applied += len(idx)
            next_label = upto
        X[a:b] = engine.transform(ts[a:b], card[a:b], merchant[a:b], amount[a:b], cards, terminals)
        if online is not None:
            online_scores[a:b] = online.score(X[a:b])
        if progress is not None:
            progress(b)
    return Replayed(X, online_scores, applied, cards, terminals)


@contextlib.contextmanager
def progress_bar(enabled: bool, total: int, what: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar over ``total`` rows (a no-op when not ``enabled``)."""
    if not enabled:
        yield lambda done: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # On stderr: stdout stays clean for ``--json``.
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True)) as bar:
        task = bar.add_task(what, total=total)
        yield lambda done: bar.update(task, completed=done)

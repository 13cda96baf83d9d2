"""Accuracy, macro-F1, macro-recall and the confusion matrix, in plain numpy.

Macro averages weigh the three classes equally: on chat, where most messages
are neutral or negative, accuracy alone rewards a model that never says
"positive". Macro-recall is the measure of the SemEval/TweetEval benchmark.

>>> m = classification_metrics([0, 0, 1, 2, 2], [0, 1, 1, 2, 0])
>>> m["accuracy"], round(m["macro_recall"], 4), round(m["macro_f1"], 4)
(0.6, 0.6667, 0.6111)
>>> m["confusion"]
[[1, 1, 0], [0, 1, 0], [1, 0, 1]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import LABELS


def classification_metrics(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
                           labels: Sequence[str] = LABELS, weights: np.ndarray | None = None) -> dict[str, Any]:
    """Metrics of integer class predictions; ``confusion[true][predicted]``.

    ``weights``: one per row (e.g. to give a validation part another class mix, round 8); the
    confusion matrix and supports are then weighted sums (floats), ``n`` stays the row count.
    """
    y = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if len(y) != len(p) or len(y) == 0:
        raise ValueError(f"need as many predictions as labels (>0), got {len(p)} and {len(y)}")
    k = len(labels)
    confusion = np.bincount(y * k + p, weights=weights, minlength=k * k).reshape(k, k)
    if weights is None:
        confusion = confusion.astype(np.int64)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    present = support > 0
    return {
        "n": int(len(y)),
        "accuracy": float(tp.sum() / confusion.sum()),
        "macro_f1": float(f1[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                             "support": support[i].item()} for i, name in enumerate(labels)},
        "confusion": confusion.tolist(),
    }

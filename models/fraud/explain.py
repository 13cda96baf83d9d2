"""Why a transaction scored high: each feature's contribution, by occlusion.

For a flagged row ``x`` the model is asked again with one feature at a time
replaced by its training mean (the value of an unremarkable transaction):
the contribution of feature ``j`` is ``p(x) - p(x with x_j := mean_j)``, how
much of the score that feature's value is responsible for. One batched model
call for all the alerts of a batch (``rows x features`` rows); alerts are rare,
so this costs nothing on the scoring path. It works for any model (the served
network is not linear) and is exact for what it says: "with an ordinary value
here, the score would have been this much lower".

>>> import numpy as np
>>> predict = lambda X: 1 / (1 + np.exp(-(2.0 * X[:, 0] + 0.1 * X[:, 1])))
>>> top = explain(predict, np.array([[3.0, 1.0]]), np.array([0.0, 0.0]), ["amount", "night"], top=2)
>>> [(t["feature"], t["value"], t["training_mean"]) for t in top[0]]
[('amount', 3.0, 0.0), ('night', 1.0, 0.0)]
>>> top[0][0]["contribution"] > top[0][1]["contribution"] > 0
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def explain(predict: Callable[[np.ndarray], np.ndarray], X: np.ndarray, means: np.ndarray,
            features: Sequence[str], top: int = 3) -> list[list[dict]]:
    """For each row of ``X``, its ``top`` features by contribution (largest first)."""
    X = np.asarray(X, dtype=np.float32)
    n, f = X.shape
    if n == 0:
        return []
    means = np.asarray(means, dtype=np.float32)
    base = np.asarray(predict(X), dtype=np.float64).reshape(-1)
    occluded = np.repeat(X, f, axis=0).reshape(n, f, f)
    idx = np.arange(f)
    occluded[:, idx, idx] = means
    p = np.asarray(predict(occluded.reshape(n * f, f)), dtype=np.float64).reshape(n, f)
    contribution = base[:, None] - p
    order = np.argsort(-contribution, axis=1)[:, :top]
    return [[{"feature": features[j], "value": round(float(X[i, j]), 4),
              "training_mean": round(float(means[j]), 4), "contribution": round(float(contribution[i, j]), 4)}
             for j in order[i]] for i in range(n)]

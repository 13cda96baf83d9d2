"""The online fraud model: River, learning from delayed labels joined to logged features.

Why ``StandardScaler | LogisticRegression`` and not a forest (ARF, Hoeffding trees):

* it is scored **vectorised**: :meth:`OnlineFraudModel.score` reads the scaler's
  means/variances and the weights and does one numpy product per batch, the
  same numbers as ``predict_proba_one`` (tested), at well under 1 µs per
  transaction. An adaptive random forest costs around a millisecond per
  prediction in Python: it cannot score 40,000 transactions/s;
* an update is a few dict operations (tens of µs), and it adapts at once to
  what the latest labels say, which is what an online learner is for beside
  the offline network.

Labels arrive as fast as transactions (a week late). Every fraud label is learnt;
legitimate ones are learnt with probability ``negative_rate`` (1/10 by
default), which keeps the update cost ~10x lower and rebalances the classes;
:meth:`score` adds ``log(negative_rate)`` to the logit, so its probabilities
stay calibrated to the real fraud rate.

Prequential quality: each label is first compared with the score the model
gave the transaction *when it was scored* (logged with its features), then
learnt. :class:`Prequential` keeps River's exact rolling ROC AUC and PR AUC
over the last ``window`` labels; the worker can keep one for the ONNX model too.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(4000, 3)); y = X[:, 0] + rng.normal(size=4000) > 2
>>> model = OnlineFraudModel(["a", "b", "c"], negative_rate=0.5, seed=1)
>>> updates = model.learn(X[:2000], y[:2000])  # no scores logged yet: learn only
>>> updates = model.learn(X[2000:], y[2000:], scores=model.score(X[2000:]))  # test, then train
>>> model.quality.get()["roc_auc"] > 0.8
True
"""

from __future__ import annotations

import math
import operator
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
from river import compose, linear_model, metrics, optim, preprocessing

from ..atomic import write_atomic

CHECKPOINT_VERSION = 1
LEARN_CHUNK = 128  # rows whose SGD steps are computed from one Gram matrix (its cost grows as the square)


class Prequential:
    """Rolling ROC AUC and PR AUC (river.metrics, exact over the last ``window`` labels)."""

    def __init__(self, window: int = 20_000) -> None:
        self.window = window
        self.roc_auc = metrics.RollingROCAUC(window_size=window)
        self.pr_auc = metrics.RollingPRAUC(window_size=window)
        self.labels = 0
        self.positives = 0

    def update(self, y: np.ndarray | list[bool], scores: np.ndarray | list[float]) -> None:
        """Add labels with the scores given to their transactions at scoring time."""
        ys = np.asarray(y, dtype=bool)
        labels, values = ys.astype(int).tolist(), np.asarray(scores, dtype=np.float64).tolist()
        for metric in (self.roc_auc, self.pr_auc):
            if hasattr(metric, "_buf_labels"):  # River buffers updates until get(): the same buffer, in bulk
                buf_labels, buf_scores = metric._buf_labels, metric._buf_scores
                buf_labels.extend(labels)
                buf_scores.extend(values)
                window = metric.window_size
                if len(buf_labels) > window + max(window // 8, 256):
                    # Only the last ``window`` labels can still be in the window when River inserts the buffer
                    # (at get()): the older ones would be inserted into its trees and evicted again (~0.45 µs
                    # a label). River's window is a function of its last ``window`` labels (tested), so the
                    # value is the same. Trimmed every window / 8 labels: a trim (a memmove) costs ~nothing a label.
                    del buf_labels[:-window], buf_scores[:-window]
            else:
                for yy, s in zip(labels, values):
                    metric.update(yy, s)
        self.labels += len(labels)
        self.positives += int(ys.sum())

    def get(self) -> dict[str, float]:
        """``roc_auc`` and ``pr_auc`` (NaN until the window has both classes), ``labels``, ``positives``."""
        both = 0 < self.positives < self.labels
        return {
            "roc_auc": float(self.roc_auc.get()) if both else float("nan"),
            "pr_auc": float(self.pr_auc.get()) if both else float("nan"),
            "labels": float(self.labels),
            "positives": float(self.positives),
        }


class OnlineFraudModel:
    """River logistic regression on the fraud features, learning from labels as they arrive."""

    def __init__(self, features: list[str], *, learning_rate: float = 0.01, l2: float = 0.0,
                 negative_rate: float = 0.1, window: int = 20_000, seed: int = 0) -> None:
        if not 0.0 < negative_rate <= 1.0:
            raise ValueError(f"negative_rate must be in (0, 1], got {negative_rate}")
        self.features = list(features)
        self.negative_rate = negative_rate
        self.model = compose.Pipeline(
            preprocessing.StandardScaler(),
            linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate), l2=l2),
        )
        self.quality = Prequential(window)
        self.updates = 0
        self._rng = random.Random(seed)

    @property
    def _scaler(self) -> preprocessing.StandardScaler:
        return self.model.steps["StandardScaler"]

    @property
    def _linear(self) -> linear_model.LogisticRegression:
        return self.model.steps["LogisticRegression"]

    def _logits(self, X: np.ndarray) -> np.ndarray:
        scaler, lin = self._scaler, self._linear
        names = self.features
        mean = np.array([scaler.means.get(f, 0.0) for f in names])
        var = np.array([scaler.vars.get(f, 0.0) for f in names])
        w = np.array([lin._weights.get(f, 0.0) for f in names])
        std = np.sqrt(var)
        scale = np.divide(w, std, out=np.zeros_like(w), where=var > 0)  # River: a zero variance gives 0
        X = np.asarray(X, dtype=np.float64)
        return (X - mean) @ scale + lin.intercept

    def score(self, X: np.ndarray) -> np.ndarray:
        """Fraud probabilities for a ``(n, len(features))`` batch, corrected for negative sampling."""
        z = self._logits(X) + math.log(self.negative_rate)
        return 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))

    def predict_proba_one(self, x: dict[str, float]) -> float:
        """River's own prediction for one transaction (uncorrected): what :meth:`score` vectorises."""
        return float(self.model.predict_proba_one(x).get(True, 0.0))

    def learn(self, X: np.ndarray, y: np.ndarray | list[bool], scores: np.ndarray | None = None) -> int:
        """Learn from labelled transactions (features as logged at scoring time); returns the updates made.

        ``scores`` are this model's scores logged at scoring time: given, they
        update the prequential metrics first (test, then train).
        """
        X = np.asarray(X, dtype=np.float64)
        ys = np.asarray(y, dtype=bool)
        if scores is not None:
            self.quality.update(ys, scores)
        # The same draws as ``yy or rand() < rate`` row by row: one draw per legitimate label, in order.
        rand = self._rng.random
        rate = self.negative_rate
        take = ys.copy()
        neg = np.flatnonzero(~ys)
        take[neg] = np.array([rand() for _ in range(len(neg))], dtype=np.float64) < rate
        rows = np.flatnonzero(take)
        if len(rows):
            if self._fast_path():
                self._learn_rows(X[rows], ys[rows])
            else:
                names, learn_one = self.features, self.model.learn_one
                for row, yy in zip(X[rows].tolist(), ys[rows].tolist()):
                    learn_one(dict(zip(names, row)), yy)
        self.updates += len(rows)
        return len(rows)

    def _fast_path(self) -> bool:
        """True when :meth:`_learn_rows` reproduces River's ``learn_one`` for this pipeline."""
        scaler, lin = self._scaler, self._linear
        return (scaler.with_std and scaler.window_size is None and lin.l1 == 0.0 and lin.l2 == 0.0
                and type(lin.optimizer) is optim.SGD and type(lin.loss) is optim.losses.Log
                and type(lin.optimizer.lr) is optim.schedulers.Constant
                and type(lin.intercept_lr) is optim.schedulers.Constant
                and type(lin.initializer) is optim.initializers.Zeros)

    def _learn_rows(self, X: np.ndarray, y: np.ndarray) -> None:
        """River's ``model.learn_one`` on each row in turn, computed for all rows at once (~25x cheaper).

        The same updates in the same order: the scaler's running mean and
        variance (Welford, the row included), the row scaled by them, one SGD
        step of the logistic regression (intercept, then weights). Both
        recurrences are summed in closed form, so only the per-row gradient is
        a Python loop (over floats). Equal to River's to float rounding (sums
        are taken in another order; tested); the River objects are updated at
        the end, so scoring, ``predict_proba_one`` and checkpoints are unchanged.
        """
        scaler, lin = self._scaler, self._linear
        names = self.features
        count = np.array([scaler.counts[f] for f in names], dtype=np.float64)
        mean = np.array([scaler.means[f] for f in names], dtype=np.float64)
        var = np.array([scaler.vars[f] for f in names], dtype=np.float64)
        w = np.array([lin._weights.get(f, 0.0) for f in names], dtype=np.float64)
        b = float(lin.intercept)
        lr, ilr = float(lin.optimizer.lr.learning_rate), float(lin.intercept_lr.learning_rate)
        clip = lin.clip_gradient
        pos, neg = lin.loss.weight_pos, lin.loss.weight_neg
        # The scaler's states after each row, all rows at once (Welford's recurrences summed in closed
        # form: count_k * mean_k and count_k * var_k are running sums), then each row scaled by its own.
        k = len(X)
        counts = count + np.arange(1, k + 1, dtype=np.float64)[:, None]
        means = (count * mean + np.cumsum(X, axis=0)) / counts
        before = np.vstack([mean, means[:-1]])
        variances = (count * var + np.cumsum((X - before) * (X - means), axis=0)) / counts
        np.maximum(variances, 0.0, out=variances)  # (rounding never makes a sum of squares negative)
        scaled = np.zeros_like(X)
        np.divide(X - means, np.sqrt(variances), out=scaled, where=variances != 0.0)
        count, mean, var = counts[-1], means[-1], variances[-1]
        # SGD in closed form per chunk: with g_j the gradient of row j, w_k = w_0 - lr * sum_{j<k} g_j xs_j,
        # so row k's logit is xs_k.w_0 - lr * sum_{j<k} g_j (xs_j.xs_k): a loop over floats on the rows'
        # Gram matrix, one numpy product per chunk instead of several per row.
        exp, mul = math.exp, operator.mul
        for a in range(0, k, LEARN_CHUNK):
            rows = scaled[a:a + LEARN_CHUNK]
            base = (rows @ w).tolist()
            gram = (rows @ rows.T).tolist()
            gs: list[float] = []
            for j, yy in enumerate(y[a:a + LEARN_CHUNK].tolist()):
                sign, weight = (1, pos) if yy else (-1, neg)
                z = (base[j] - lr * sum(map(mul, gs, gram[j])) + b) * sign
                if z > 18.0:
                    g = weight * exp(-z) * -sign
                elif z < -18.0:
                    g = weight * -sign
                else:
                    g = weight * -sign / (exp(z) + 1.0)
                g = max(min(float(g), clip), -clip)
                b -= ilr * g
                gs.append(g)
            w = w - lr * (np.asarray(gs) @ rows)
        n = len(y)
        for j, f in enumerate(names):
            scaler.counts[f] = int(count[j])
            scaler.means[f] = float(mean[j])
            scaler.vars[f] = float(var[j])
            lin._weights[f] = float(w[j])
        lin.intercept = b
        lin.optimizer.n_iterations += n

    # --- checkpoints -----------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Pickle the whole learner (weights, scaler, metrics, RNG) atomically to ``path``."""
        data = pickle.dumps({"version": CHECKPOINT_VERSION, "model": self}, protocol=pickle.HIGHEST_PROTOCOL)
        return write_atomic(path, data)

    @classmethod
    def load(cls, path: str | Path) -> OnlineFraudModel:
        """The learner saved at ``path`` (only load checkpoints you wrote: this is pickle)."""
        with open(path, "rb") as f:
            data: Any = pickle.load(f)
        if not isinstance(data, dict) or data.get("version") != CHECKPOINT_VERSION or not isinstance(data.get("model"), cls):
            raise ValueError(f"{path} is not an online fraud model checkpoint (version {CHECKPOINT_VERSION})")
        return data["model"]

"""Training tabular binary classifiers in torch, exporting them to ONNX, and judging them.

torch is imported here and nowhere on the scoring path: workers only need
onnxruntime. The network carries its own standardisation (mean/std buffers
from the training data), so the exported graph takes raw features and
serving cannot drift from training by scaling differently.

The metrics are plain numpy (no scikit-learn in the dependency set):

>>> y = np.array([0, 0, 1, 1])
>>> s = np.array([0.1, 0.4, 0.35, 0.8])
>>> binary_metrics(y, s)
{'roc_auc': 0.75, 'average_precision': 0.8333333333333333}
>>> choose_threshold(y, s)
0.35
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

MAX_TORCH_THREADS = 2


class ExportError(RuntimeError):
    """The ONNX export does not reproduce the torch model."""


class TabularNet(nn.Module):
    """Standardise raw features, then an MLP with a sigmoid: ``(n, f) -> (n,)`` probabilities."""

    def __init__(
        self,
        n_features: int,
        *,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        hidden: tuple[int, ...] = (64, 64),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        mean = np.zeros(n_features) if mean is None else np.asarray(mean, dtype=np.float64)
        std = np.ones(n_features) if std is None else np.asarray(std, dtype=np.float64)
        if mean.shape != (n_features,) or std.shape != (n_features,):
            raise ValueError(f"mean and std must have shape ({n_features},), got {mean.shape} and {std.shape}")
        # A constant column would divide by zero: leave it unscaled instead.
        std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        self.n_features = n_features

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid scores, shape ``(n,)``: training uses these for a stable loss."""
        return self.mlp((x - self.mean) / self.std).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def train_binary_classifier(
    X: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 512,
    lr: float = 1e-3,
    pos_weight: float | None = None,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> TabularNet:
    """Train a :class:`TabularNet` on raw features ``X`` and 0/1 labels ``y``.

    Imbalance: the positive class is weighted by ``pos_weight`` in the BCE loss,
    by default ``negatives / positives`` (balanced). That shifts probabilities
    up, which is why the alert threshold is chosen afterwards on validation data
    (:func:`choose_threshold`) rather than fixed at 0.5.

    Deterministic for a given ``seed``; the caller's global torch RNG and thread
    count are left as they were. ``progress(epoch, mean_loss)`` is called after
    every epoch (1-based). Returns the model in eval mode.
    """
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y).reshape(-1)
    if X.ndim != 2 or len(X) != len(y) or len(X) == 0:
        raise ValueError(f"X must be (n, f) and y (n,), got {X.shape} and {y.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or inf: clean or impute the features before training")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y must contain only 0 and 1")
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        raise ValueError(f"y needs both classes, got {positives} positives in {len(y)} rows")
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be >= 1")
    if pos_weight is None:
        pos_weight = (len(y) - positives) / positives

    threads = torch.get_num_threads()
    torch.set_num_threads(min(MAX_TORCH_THREADS, threads))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = TabularNet(X.shape[1], mean=X.mean(axis=0, dtype=np.float64), std=X.std(axis=0, dtype=np.float64))
            xs = torch.from_numpy(X)
            ys = torch.from_numpy(y.astype(np.float32))
            loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(float(pos_weight)))
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)
            shuffle = torch.Generator().manual_seed(seed)
            model.train()
            for epoch in range(1, epochs + 1):
                total = 0.0
                for idx in torch.randperm(len(xs), generator=shuffle).split(batch_size):
                    optimizer.zero_grad(set_to_none=True)
                    loss = loss_fn(model.logits(xs[idx]), ys[idx])
                    loss.backward()
                    optimizer.step()
                    total += loss.item() * len(idx)
                if progress is not None:
                    progress(epoch, total / len(xs))
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def export_onnx(
    model: nn.Module,
    n_features: int,
    input_name: str = "features",
    output_name: str = "probability",
    *,
    opset: int = 17,
) -> bytes:
    """Export ``model`` with a dynamic batch axis and prove the export matches torch.

    Uses torch's TorchScript exporter: the newer dynamo exporter needs
    onnxscript, which is not in the dependency set. The check runs both on a
    random batch (around the model's training mean/std when it has them) and
    raises :class:`ExportError` unless ``np.allclose(atol=1e-5)``.
    """
    was_training = model.training
    model.eval()
    try:
        dummy = torch.zeros(2, n_features)
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (dummy,),
                buf,
                dynamo=False,
                input_names=[input_name],
                output_names=[output_name],
                dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                opset_version=opset,
            )
        onnx_bytes = buf.getvalue()

        rng = np.random.default_rng(0)
        batch = rng.standard_normal((64, n_features)).astype(np.float32)
        mean, std = getattr(model, "mean", None), getattr(model, "std", None)
        if isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor):
            batch = batch * std.numpy() + mean.numpy()
        with torch.no_grad():
            expected = model(torch.from_numpy(batch)).numpy()
    finally:
        model.train(was_training)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
    got = session.run([output_name], {input_name: batch})[0]
    if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-5):
        diff = np.max(np.abs(got - expected)) if got.shape == expected.shape else "n/a"
        raise ExportError(
            f"ONNX export does not match torch: shapes {got.shape} vs {expected.shape}, max abs diff {diff}"
        )
    return onnx_bytes


def binary_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """ROC AUC (ties count half) and average precision (as scikit-learn defines it)."""
    y, s = _validate(y_true, scores)
    positives = int(y.sum())
    negatives = len(y) - positives

    order = np.argsort(s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    _, first, counts = np.unique(s_sorted, return_index=True, return_counts=True)
    ranks = np.repeat(first + (counts + 1) / 2.0, counts)  # 1-based average ranks of tied scores
    roc_auc = (ranks[y_sorted == 1].sum() - positives * (positives + 1) / 2.0) / (positives * negatives)

    tps, fps, _ = _counts_by_threshold(y, s)
    precision = tps / (tps + fps)
    recall_gain = np.diff(tps, prepend=0) / positives
    average_precision = float(np.sum(recall_gain * precision))
    return {"roc_auc": float(roc_auc), "average_precision": average_precision}


def choose_threshold(y_true: np.ndarray, scores: np.ndarray, *, beta: float = 1.0) -> float:
    """The score ``t`` maximising F-beta of the rule ``score >= t`` (F1 by default).

    Choose it on validation data, not on the training set. ``beta > 1`` favours
    recall (miss fewer frauds), ``beta < 1`` precision (fewer false alerts).
    """
    y, s = _validate(y_true, scores)
    tps, fps, thresholds = _counts_by_threshold(y, s)
    positives = y.sum()
    b2 = beta * beta
    # F-beta = (1 + b2) TP / ((1 + b2) TP + b2 FN + FP), with FN = P - TP.
    f = (1 + b2) * tps / ((1 + b2) * tps + b2 * (positives - tps) + fps)
    return float(thresholds[int(np.argmax(f))])


def _validate(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(y) != len(s):
        raise ValueError(f"y_true has {len(y)} rows, scores {len(s)}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must contain only 0 and 1")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    y = y.astype(np.int64)
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        raise ValueError(f"metrics need both classes in y_true, got {positives} positives in {len(y)} rows")
    return y, s


def _counts_by_threshold(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative true/false positives when flagging ``score >= t``, for each distinct ``t`` (descending)."""
    order = np.argsort(-s, kind="mergesort")
    s_desc, y_desc = s[order], y[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(s_desc)), len(s_desc) - 1]
    tps = np.cumsum(y_desc)[last_of_group].astype(np.float64)
    fps = (last_of_group + 1) - tps
    return tps, fps, s_desc[last_of_group]

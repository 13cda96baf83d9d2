"""The evaluation report a person opens: ``metrics.json`` and three PNG plots.

* ``precision_recall.png``: precision against recall over the filtered test set, per model;
* ``score_distribution.png``: served scores of frauds and of legitimate transactions;
* ``alerts_per_day.png``: alerts (served score >= threshold) per test day, and how many were frauds.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np

from ..report import start_report


def _pr_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-s, kind="mergesort")
    tp = np.cumsum(y[order])
    k = np.arange(1, len(y) + 1)
    return tp / max(int(y.sum()), 1), tp / k


def write_report(out_dir: Path, metrics: dict[str, Any], *, y: np.ndarray, scores: dict[str, np.ndarray],
                 period_day: np.ndarray, period_y: np.ndarray, period_score: np.ndarray,
                 threshold: float) -> list[Path]:
    """Write the report into ``out_dir``; returns the files written."""
    plt, written = start_report(out_dir, metrics)
    y = np.asarray(y, dtype=bool)
    served = metrics.get("served", "onnx")

    fig, ax = plt.subplots(figsize=(6.5, 5))
    for name, s in scores.items():
        ok = np.isfinite(s)
        if not ok.any():
            continue
        recall, precision = _pr_curve(y[ok], s[ok])
        m = metrics["models"][name]
        ax.plot(recall, precision, lw=2 if name == served else 1,
                label=f"{name}{' (served)' if name == served else ''}: AP {m['average_precision']:.3f}, "
                      f"AUC {m['auc_roc']:.3f}, CP@100 {m['card_precision_at_100']:.3f}")
    ax.axhline(y.mean(), color="grey", ls=":", lw=1, label=f"fraud rate {y.mean():.4f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"Precision-recall, test {metrics['test']['start']}..{metrics['test']['end']} "
                 f"({metrics['test']['filtered_transactions']} tx)")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    written.append(_save(fig, out_dir / "precision_recall.png"))

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    s = scores[served]
    bins = np.linspace(0, 1, 51)
    ax.hist(s[~y], bins=bins, alpha=0.6, label=f"legitimate ({int((~y).sum())})", color="tab:blue")
    ax.hist(s[y], bins=bins, alpha=0.6, label=f"fraud ({int(y.sum())})", color="tab:red")
    ax.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.3f}")
    ax.set(yscale="log", xlabel=f"{served} score", ylabel="transactions (log scale)", title="Score distribution")
    ax.legend(fontsize=8)
    written.append(_save(fig, out_dir / "score_distribution.png"))

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    days = np.unique(period_day)
    alerts = period_score >= threshold
    n_alerts = np.array([int(alerts[period_day == d].sum()) for d in days])
    n_true = np.array([int((alerts & period_y)[period_day == d].sum()) for d in days])
    n_fraud = np.array([int(period_y[period_day == d].sum()) for d in days])
    labels = [(dt.date(1970, 1, 1) + dt.timedelta(days=int(d))).strftime("%m-%d") for d in days]
    x = np.arange(len(days))
    ax.bar(x - 0.2, n_alerts, width=0.4, label="alerts", color="tab:orange")
    ax.bar(x + 0.2, n_true, width=0.4, label="alerts that were frauds", color="tab:red")
    ax.plot(x, n_fraud, "k.--", label="frauds that day")
    ax.set_xticks(x, labels)
    ax.set(xlabel="day (UTC)", ylabel="transactions", title=f"Alerts per day (score >= {threshold:.3f})")
    ax.legend(fontsize=8)
    written.append(_save(fig, out_dir / "alerts_per_day.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path

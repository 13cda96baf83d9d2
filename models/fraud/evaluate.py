"""``lepton evaluate fraud``: a whole labelled file, streamed, judged with the handbook's protocol.

1. The file is replayed in event time through the live code (:mod:`.stream`):
   features from state, labels applied ``label_delay_days`` after their
   transaction, the online model scoring every batch and learning every label
   when it arrives.
2. The offline network learns only from labels known before the test period
   starts (transactions before ``test_start - delay``), see :mod:`.offline`.
3. The test period is scored by the exported ONNX graph and by the online model;
   the served score is the ONNX one (:data:`SERVED`; the online model runs as a
   challenger, see ``models/fraud/README.md`` for the numbers behind that choice).
4. Metrics follow the handbook exactly (:mod:`.protocol`): known-compromised cards
   removed day by day, AUC ROC and average precision over the remaining
   transactions, card precision@100 per day, averaged.

A report directory gets ``metrics.json`` and PNG plots (precision-recall curve,
score distribution, alerts per day); ``scores_out`` gets every test-period
transaction with its scores (CSV, or Parquet by extension).
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import offline
from .features import DAY, FEATURES
from .online import OnlineFraudModel
from .protocol import card_precision_at_k, day_of, filtered_test_rows
from .stream import progress_bar, replay

SERVED = "onnx"  # which score is served and headlines the report: "onnx" (champion) or "blend"
K = 100


def _day_number(value: str | dt.date | dt.datetime) -> int:
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.normalize().timestamp() // DAY)


def _iso(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=int(day))).isoformat()


def _metrics(y: np.ndarray, score: np.ndarray, day: np.ndarray, card: np.ndarray) -> dict[str, Any]:
    from models.training import binary_metrics

    base = binary_metrics(y, score)
    cp, per_day = card_precision_at_k(day, card, y, score, k=K)
    return {"average_precision": base["average_precision"], "auc_roc": base["roc_auc"],
            "card_precision_at_100": cp, "card_precision_at_100_per_day": per_day}


def evaluate_fraud(
    data: Path | str,
    test_start: str | dt.date,
    test_end: str | dt.date,
    label_delay_days: int = 7,
    scores_out: Path | str | None = None,
    report_dir: Path | str | None = None,
    *,
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate on ``data`` (handbook or Lepton columns, with labels); test days inclusive, UTC.

    Returns a JSON-able dict with ``average_precision``, ``auc_roc`` and
    ``card_precision_at_100`` (of the served score) and the details.
    """
    from connectors.replay import read_frame

    started = time.perf_counter()
    frame = read_frame("fraud", data)
    if "label" not in frame.columns or frame["label"].isna().all():
        raise ValueError(f"{data}: evaluation needs fraud labels (TX_FRAUD or label column)")
    first_test, last_test = _day_number(test_start), _day_number(test_end)
    if last_test < first_test:
        raise ValueError(f"test_end {test_end} is before test_start {test_start}")
    ts = frame["ts"].to_numpy(dtype=np.float64)
    day = day_of(ts)
    if not ((day >= first_test) & (day <= last_test)).any():
        raise ValueError(f"{data}: no transaction between {_iso(first_test)} and {_iso(last_test)} "
                         f"(the file covers {_iso(day[0])}..{_iso(day[-1])})")
    labelled = frame["label"].notna().to_numpy()
    y = frame["label"].fillna(False).astype(bool).to_numpy()

    online = OnlineFraudModel(FEATURES, seed=seed)
    with progress_bar(progress, len(frame), "replaying transactions") as report:
        rep = replay(frame, label_delay_days=label_delay_days, online=online, progress=report)
    replay_s = time.perf_counter() - started

    known_before = first_test * DAY - label_delay_days * DAY
    train, val = offline.split_rows(ts, labelled, known_before, label_delay_days)
    total_epochs = (epochs or offline.EPOCHS) * offline.ENSEMBLE
    with progress_bar(progress, total_epochs, "training the offline model") as report:
        fit = offline.fit(rep.X, y, train, val, epochs=epochs, seed=seed, progress=lambda e, loss: report(e))
    period = (day >= first_test) & (day <= last_test)
    onnx_score = np.full(len(ts), np.nan)
    onnx_score[period | val] = offline.onnx_scores(fit.onnx_bytes, rep.X[period | val])
    scores = {"onnx": onnx_score, "online": rep.online_scores, "blend": blend(onnx_score, rep.online_scores)}

    card = frame["card"].to_numpy(dtype=object)
    mask = filtered_test_rows(day, card, y, first_test, last_test, label_delay_days) & labelled
    if y[mask].all() or not y[mask].any():
        raise ValueError("the filtered test set needs both frauds and legitimate transactions")
    results = {name: _metrics(y[mask], s[mask], day[mask], card[mask]) for name, s in scores.items()}
    served = results[SERVED]
    out: dict[str, Any] = {
        "average_precision": served["average_precision"],
        "auc_roc": served["auc_roc"],
        "card_precision_at_100": served["card_precision_at_100"],
        "served": SERVED,
        "models": results,
        "threshold": fit.threshold,
        "validation": {**fit.validation, "period": [_iso(day[val][0]), _iso(day[val][-1])]},
        "data": str(data),
        "test": {"start": _iso(first_test), "end": _iso(last_test), "label_delay_days": label_delay_days,
                 "transactions": int(period.sum()), "filtered_transactions": int(mask.sum()),
                 "filtered_frauds": int(y[mask].sum())},
        "training": {**fit.training, "labels_known_before": dt.datetime.fromtimestamp(known_before, dt.timezone.utc)
                     .isoformat(), "period": [_iso(day[train][0]), _iso(day[train][-1])]},
        "online": {"prequential": online.quality.get(), "updates": online.updates,
                   "labels_applied": rep.labels_applied},
        "features": FEATURES,
        "seconds": {"replay": round(replay_s, 1), "total": round(time.perf_counter() - started, 1)},
    }
    served_score = scores[SERVED]
    if scores_out is not None:
        _write_scores(Path(scores_out), frame, period, mask, scores)
    if report_dir is not None:
        from .report import write_report

        write_report(Path(report_dir), out, y=y[mask], scores={k: v[mask] for k, v in scores.items()},
                     period_day=day[period], period_y=y[period], period_score=served_score[period],
                     threshold=fit.threshold)
    return out


def blend(onnx_score: np.ndarray, online_score: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """Average of the two models' logits (``weight`` on the ONNX one); NaN where either is missing."""
    eps = 1e-7
    a = np.clip(onnx_score, eps, 1 - eps)
    b = np.clip(online_score, eps, 1 - eps)
    z = weight * np.log(a / (1 - a)) + (1 - weight) * np.log(b / (1 - b))
    return 1.0 / (1.0 + np.exp(-z))


def _write_scores(path: Path, frame: pd.DataFrame, period: np.ndarray, mask: np.ndarray,
                  scores: dict[str, np.ndarray]) -> None:
    out = frame.loc[period, [c for c in ("id", "ts", "card", "merchant", "amount", "label") if c in frame.columns]]
    out = out.assign(in_test_set=mask[period], **{f"score_{k}": v[period] for k, v in scores.items()},
                     score=scores[SERVED][period])
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".parquet", ".pq"):
        out.to_parquet(path, index=False)
    else:
        out.to_csv(path, index=False)

"""The Fraud Detection Handbook's test protocol: which transactions are scored, and card precision@k.

Published figures are only comparable when the test set is built as the
handbook builds it (its ``get_train_test_set`` and ``card_precision_top_k``):

* Cards already known to be compromised are removed, day by day. The known set
  starts with the cards that had a fraud in the training week (the 7 days
  before the delay period). For test day ``d``, the cards with a fraud on day
  ``d - delay - 1`` join it before day ``d`` is filtered.
* Card precision@k, per test day: the day's remaining transactions grouped by
  card (highest score, highest label), minus the cards detected on earlier test
  days; the share of frauds among the k highest-scored cards. Those frauds
  count as detected from then on. The figure is the mean over the test days.
* AUC ROC and average precision are computed over the filtered transactions.

Days are UTC calendar days, numbered from 1970-01-01 (``floor(ts / 86400)``).

>>> day = np.array([0, 0, 2, 2, 2, 3])
>>> card = np.array([1, 2, 1, 2, 3, 3])
>>> fraud = np.array([0, 1, 1, 0, 1, 0])
>>> filtered_test_rows(day, card, fraud, test_start_day=2, test_end_day=3, delay_days=1, train_days=1).tolist()
[False, False, True, False, True, True]
>>> score = np.array([0, 0, 0.9, 0, 0.2, 0.8])
>>> mask = filtered_test_rows(day, card, fraud, 2, 3, 1, 1)
>>> card_precision_at_k(day[mask], card[mask], fraud[mask], score[mask], k=1)
(0.5, [1.0, 0.0])
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DAY = 86_400.0


def day_of(ts: np.ndarray) -> np.ndarray:
    """UTC day numbers of Unix times."""
    return np.floor(np.asarray(ts, dtype=np.float64) / DAY).astype(np.int64)


def filtered_test_rows(day: np.ndarray, card: np.ndarray, fraud: np.ndarray, test_start_day: int, test_end_day: int,
              delay_days: int, train_days: int = 7) -> np.ndarray:
    """Boolean mask of the handbook's test transactions (``test_start_day..test_end_day`` inclusive)."""
    day = np.asarray(day)
    card = np.asarray(card)
    fraud = np.asarray(fraud).astype(bool)
    train_start = test_start_day - delay_days - train_days
    in_train = (day >= train_start) & (day < test_start_day - delay_days)
    known = set(card[in_train & fraud].tolist())
    mask = np.zeros(len(day), dtype=bool)
    for d in range(test_start_day, test_end_day + 1):
        known |= set(card[(day == d - delay_days - 1) & fraud].tolist())
        today = np.flatnonzero(day == d)
        if len(today):
            keep = ~np.isin(card[today], np.fromiter(known, dtype=card.dtype, count=len(known)) if known else [])
            mask[today[keep]] = True
    return mask


def card_precision_at_k(day: np.ndarray, card: np.ndarray, fraud: np.ndarray, score: np.ndarray,
                        k: int = 100) -> tuple[float, list[float]]:
    """Mean card precision@k over the days present, and the per-day values (filtered rows only)."""
    df = pd.DataFrame({"day": np.asarray(day), "card": np.asarray(card), "fraud": np.asarray(fraud).astype(int),
                       "score": np.asarray(score, dtype=np.float64)})
    detected: set = set()
    per_day: list[float] = []
    for _, rows in df.groupby("day", sort=True):
        rows = rows[~rows["card"].isin(detected)]
        cards = rows.groupby("card")[["score", "fraud"]].max().sort_values("score", ascending=False, kind="stable")
        top = cards.head(k)
        hits = top.index[top["fraud"] == 1]
        per_day.append(len(hits) / k)
        detected.update(hits.tolist())
    return (float(np.mean(per_day)) if per_day else float("nan")), per_day

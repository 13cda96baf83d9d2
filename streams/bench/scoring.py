"""Per-event fraud scoring for the benchmark's baselines (plain Faust, Quix Streams).

The same validation (:func:`~streams.records.parse_transaction`), the same
registered ONNX model and, where possible, the same features as the Lepton
worker, but one event at a time: one feature row and one ONNX call per event,
the way a per-event framework's documentation writes it.

Features follow the registered model's metadata (``meta.features``):

* ``stateful``: the model takes :data:`models.fraud.features.FEATURES`, per-card
  and per-terminal state; the baseline keeps that state in plain in-process
  dicts (no changelog, no expiry) and calls the same
  :class:`~models.fraud.features.FeatureEngine` on one-row batches;
* ``approximate``: it does not match (a model from newer code): the columns known
  by name are computed, the others are zero, and the result says so.

Baselines do not learn online, raise alerts or export metrics: Lepton does
all of that on top of scoring.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable

import numpy as np

from models.onnx_runtime import OnnxScorer
from models.registry import ModelRegistry
from streams.records import Limits, Transaction, parse_transaction
from streams.settings import Settings

log = logging.getLogger(__name__)

Featurizer = Callable[[Transaction], np.ndarray]


def _stateful(features: list[str], extra: dict[str, Any]) -> Featurizer | None:
    try:
        from models.fraud.features import FEATURES, FeatureEngine
    except ImportError:
        return None
    if list(features) != list(FEATURES):
        return None
    try:
        engine = FeatureEngine(label_delay_days=int(extra.get("label_delay_days", 7)))
        cards: dict[str, Any] = {}
        terminals: dict[str, Any] = {}

        def one(tx: Transaction) -> np.ndarray:
            return engine.transform([tx.ts], [tx.card], [tx.merchant], [tx.amount], cards, terminals)

        one(Transaction("probe", time.time(), "probe-card", "probe-terminal", 1.0))  # the API still fits
        cards.clear()
        return one
    except Exception as exc:  # the feature code is evolving: fall back rather than fail the benchmark
        log.warning("stateful fraud features unusable in the baseline (%s): approximating", exc)
        return None


_BY_NAME: dict[str, Callable[[Transaction], float]] = {
    "amount": lambda tx: tx.amount,
    "log_amount": lambda tx: math.log1p(max(tx.amount, 0.0)),
    "hour_sin": lambda tx: math.sin(2 * math.pi * (tx.ts % 86_400.0) / 86_400.0),
    "hour_cos": lambda tx: math.cos(2 * math.pi * (tx.ts % 86_400.0) / 86_400.0),
    "is_weekend": lambda tx: float((tx.ts // 86_400.0 + 3) % 7 >= 5),
    "is_night": lambda tx: float((tx.ts % 86_400.0) / 3600.0 < 6.0),
}


def _approximate(features: list[str]) -> Featurizer:
    cols = [(i, _BY_NAME[name]) for i, name in enumerate(features) if name in _BY_NAME]
    width = len(features)

    def one(tx: Transaction) -> np.ndarray:
        x = np.zeros((1, width), dtype=np.float32)
        for i, f in cols:
            x[0, i] = f(tx)
        return x

    return one


def featurizer_for(features: list[str], extra: dict[str, Any] | None = None) -> tuple[Featurizer, str]:
    """A one-event featurizer for a model taking ``features``, and its mode (see module doc)."""
    one = _stateful(features, extra or {})
    if one is not None:
        return one, "stateful"
    return _approximate(features), "approximate"


class PerEventScorer:
    """Validate, featurize and score one transaction: one ONNX call per event."""

    def __init__(self, settings: Settings) -> None:
        self.limits = Limits.from_settings(settings)
        self.model = OnnxScorer.from_registry(ModelRegistry(settings.models_dir), "fraud",
                                              threads=settings.onnx_threads)
        meta = self.model.meta
        self.version = meta.version
        self.threshold = meta.threshold
        self.featurize, self.features_mode = featurizer_for(meta.features, meta.extra)

    def score(self, raw: bytes | None) -> dict[str, Any]:
        """The output record of one input (raises :class:`~streams.records.InvalidRecord`)."""
        tx = parse_transaction(raw, self.limits)
        p = float(self.model.predict(self.featurize(tx))[0])
        return {
            "id": tx.id,
            "card": tx.card,
            "ts": tx.ts,
            "probability": round(p, 6),
            "decision": "review" if p >= self.threshold else "approve",
            "model_version": self.version,
            "latency_ms": round((time.time() - tx.ts) * 1000.0, 3),
        }


"""Fraud pipeline: transactions in, a fraud probability for each out.

``transactions`` → ``fraud-scores`` (keyed by transaction id, so a
re-delivered input overwrites rather than duplicates), plus an alert on
``alerts`` for every score at or above the model's threshold.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from models.fraud.features import FEATURES, FeatureEngine

from . import metrics
from .batching import Output
from .model_slot import ModelSlot
from .pipeline import Pipeline
from .records import Transaction, dumps, parse_transaction
from .topics import Topics


class FraudPipeline(Pipeline):
    name = "fraud"
    parse = staticmethod(parse_transaction)

    def __init__(self, slot: ModelSlot, topics: Topics) -> None:
        self.slot = slot
        self.topics = topics.pipeline(self.name)
        self.alerts_topic = topics.alerts
        self._scores = metrics.SCORES.labels(self.name)
        self._alerts = {s: metrics.ALERTS.labels(self.name, s) for s in ("warning", "critical")}
        self._engines: dict[int, FeatureEngine] = {}
        self.cards: dict[str, bytes] = {}
        self.terminals: dict[str, bytes] = {}

    def engine(self, label_delay_days: int) -> FeatureEngine:
        """The feature engine for a model's label delay (training and serving must agree)."""
        engine = self._engines.get(label_delay_days)
        if engine is None:
            engine = self._engines[label_delay_days] = FeatureEngine(label_delay_days)
        return engine

    def process(self, events: Sequence[Transaction], now: float) -> list[Output]:
        scorer = self.slot.scorer
        if scorer is None:
            raise RuntimeError("no fraud model loaded: run `lepton train fraud`")
        meta = scorer.meta
        version = meta.version
        n = len(events)
        amount = np.fromiter((e.amount for e in events), np.float64, n)
        ts = np.fromiter((e.ts for e in events), np.float64, n)
        engine = self.engine(int(meta.extra.get("label_delay_days", 7)))
        X = engine.transform(ts, [e.card for e in events], [e.merchant for e in events], amount,
                             self.cards, self.terminals)
        with metrics.INFERENCE.labels(self.name, str(version)).time():
            probability = scorer.predict(X)
        threshold = meta.threshold
        out_topic = self.topics.output
        outputs: list[Output] = []
        append = outputs.append
        for e, p in zip(events, probability.tolist()):
            flagged = p >= threshold
            key = e.id.encode()
            append(
                Output(
                    out_topic,
                    key,
                    dumps(
                        {
                            "id": e.id,
                            "card": e.card,
                            "ts": e.ts,
                            "probability": round(p, 6),
                            "decision": "review" if flagged else "approve",
                            "model_version": version,
                            "latency_ms": round((now - e.ts) * 1000.0, 3),
                        }
                    ),
                )
            )
            if flagged:
                append(Output(self.alerts_topic, key, dumps(self._alert(e, p, threshold, version))))
        step = max(1, n // 64)
        for p in probability[::step].tolist():
            self._scores.observe(p)
        return outputs

    def _alert(self, e: Transaction, p: float, threshold: float, version: int) -> dict:
        severity = "critical" if p >= max(0.9, threshold) else "warning"
        self._alerts[severity].inc()
        return {
            "id": e.id,
            "pipeline": self.name,
            "severity": severity,
            "ts": e.ts,
            "subject": e.card,
            "score": round(p, 6),
            "threshold": threshold,
            "model_version": version,
            "reason": f"fraud probability {p:.2f} ≥ threshold {threshold:.2f}",
            "details": {"amount": e.amount, "merchant": e.merchant, "card": e.card},
        }


__all__ = ["FEATURES", "FraudPipeline"]

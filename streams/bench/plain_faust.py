"""The baseline: the fraud scoring path written the way Faust's docs write agents.

``async for`` over a JSON stream, the same validation, features and ONNX
model, one ONNX call and one ``await topic.send()`` per event. Run as
``python -m streams.bench.plain_faust`` with the ``LEPTON_*`` environment.
"""

from __future__ import annotations

import time

import faust
import numpy as np

from models.fraud_features import featurize
from models.onnx_runtime import OnnxScorer
from models.registry import ModelRegistry
from streams.records import InvalidRecord, Limits, dumps, parse_transaction
from streams.settings import Settings


def create_app(settings: Settings) -> faust.App:
    topics = settings.topics.pipeline("fraud")
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=str(settings.state_dir / "plain-faust"),
    )
    scorer = OnnxScorer.from_registry(ModelRegistry(settings.models_dir), "fraud", threads=settings.onnx_threads)
    limits = Limits.from_settings(settings)
    source = app.topic(topics.input, value_serializer="raw")
    scores = app.topic(topics.output, value_serializer="raw")
    dead = app.topic(settings.topics.dead_letters, value_serializer="raw")

    @app.agent(source)
    async def score(stream: faust.StreamT) -> None:
        async for value in stream:
            try:
                tx = parse_transaction(value, limits)
            except InvalidRecord as exc:
                await dead.send(value=dumps({"reason": exc.reason, "message": str(exc)}))
                continue
            x = featurize(np.array([tx.amount]), np.array([tx.ts]))
            p = float(scorer.predict(x)[0])
            out = {"id": tx.id, "card": tx.card, "ts": tx.ts, "probability": p,
                   "decision": "review" if p >= scorer.meta.threshold else "approve",
                   "model_version": scorer.meta.version, "latency_ms": (time.time() - tx.ts) * 1000.0}
            await scores.send(key=tx.id.encode(), value=dumps(out))

    return app


def main() -> None:
    settings = Settings()
    app = create_app(settings)
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()

"""The baseline: the fraud scoring path written the way Faust's docs write agents.

``async for`` over the input stream, the same validation, model and (where
possible) features as the Lepton worker (:mod:`streams.bench.scoring`), one
ONNX call and one ``await topic.send()`` per event, outputs keyed by id. Run as
``python -m streams.bench.plain_faust`` with the ``LEPTON_*`` environment.
"""

from __future__ import annotations

import faust

from streams.bench.scoring import PerEventScorer
from streams.records import InvalidRecord, dumps
from streams.settings import Settings


def create_app(settings: Settings) -> faust.App:
    topics = settings.topics.pipeline("fraud")
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        # Group membership as Lepton's (a first join on Tansu takes about half the session
        # timeout): shortens start-up only, no effect on events/s.
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        web_enabled=False,
        datadir=str(settings.state_dir / "plain-faust"),
    )
    scorer = PerEventScorer(settings)
    source = app.topic(topics.input, value_serializer="raw")
    scores = app.topic(topics.output, value_serializer="raw")
    dead = app.topic(settings.topics.dead_letters, value_serializer="raw")

    @app.agent(source)
    async def score(stream: faust.StreamT) -> None:
        async for value in stream:
            try:
                out = scorer.score(value)
            except InvalidRecord as exc:
                await dead.send(value=dumps({"pipeline": "fraud", "reason": exc.reason, "message": str(exc)}))
                continue
            await scores.send(key=out["id"].encode(), value=dumps(out))

    return app


def main() -> None:
    settings = Settings()
    app = create_app(settings)
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()

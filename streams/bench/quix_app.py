"""The Quix Streams variant: ``app.dataframe(topic).apply(score).to_topic(out)``.

The same validation, model and (where possible) features as the Lepton worker
(:mod:`streams.bench.scoring`), one ONNX call per event, outputs keyed by id.
Outputs are stamped with their emit time (``set_timestamp``: Quix would
otherwise copy the input's timestamp), as the other variants' producers do.
Invalid input raises in ``score``; Quix's ``on_processing_error`` callback sends
it to ``dead-letters`` and processing continues. Run as
``python -m streams.bench.quix_app`` with the ``LEPTON_*`` environment
(needs the ``bench`` extra: ``quixstreams``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from streams import dead_letters
from streams.bench.scoring import PerEventScorer
from streams.records import InvalidRecord, dumps
from streams.settings import Settings


def create_app(settings: Settings) -> Any:
    """The Quix ``Application`` (quixstreams is imported here: the module imports without it)."""
    from quixstreams import Application

    topics = settings.topics.pipeline("fraud")
    dead_topic = settings.topics.dead_letters
    scorer = PerEventScorer(settings)
    dead_producer: list[Any] = []  # created on the first bad record

    def on_processing_error(exc: Exception, row: Any, logger: logging.Logger) -> bool:
        if not isinstance(exc, InvalidRecord) or row is None:
            return False  # a real failure: let Quix stop the app
        if not dead_producer:
            dead_producer.append(app.get_producer())
        letter = dead_letters.build(row.topic, row.partition, row, "fraud", exc.reason,
                                    type(exc).__name__, str(exc))
        dead_producer[0].produce(topic=dead_topic, key=dead_letters.key_of(letter), value=dumps(letter))
        dead_producer[0].poll(0)
        return True

    app = Application(
        broker_address=settings.kafka_bootstrap,
        consumer_group=settings.app_id,
        auto_offset_reset="earliest",
        auto_create_topics=False,  # the harness creates them (Lepton's partition count)
        use_changelog_topics=False,
        state_dir=str(settings.state_dir / "quix"),
        on_processing_error=on_processing_error,
        loglevel="WARNING",
        # Group membership as Lepton's (a first join on Tansu takes about half the session
        # timeout): shortens start-up only, no effect on events/s.
        consumer_extra_config={"session.timeout.ms": int(settings.session_timeout_s * 1000),
                               "heartbeat.interval.ms": int(settings.heartbeat_interval_s * 1000)},
    )
    source = app.topic(topics.input, value_deserializer="bytes")
    scores = app.topic(topics.output, value_serializer="json")

    def score(raw: bytes) -> dict[str, Any]:
        return scorer.score(raw)

    def emit_time(value: Any, key: Any, timestamp: int, headers: Any) -> int:
        return int(time.time() * 1000)

    # Quix gives an output the *input's* timestamp; the benchmark (like Kafka's
    # producers when not told otherwise) needs the time it was emitted.
    (app.dataframe(source)
     .apply(score)
     .set_timestamp(emit_time)
     .to_topic(scores, key=lambda out: out["id"]))
    return app


def main() -> None:
    create_app(Settings()).run()


if __name__ == "__main__":
    main()

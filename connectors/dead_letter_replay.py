"""Send chosen dead letters back to the topic they came from.

For inputs that failed for a reason that has since been fixed (a model that
crashed on them, a limit that was too strict): the original key and payload
go back to the source topic unchanged and are processed again. Outputs are
keyed by input id, so replaying twice produces duplicates that downstream
deduplicates, never conflicting results.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.dead_letters import original_payload
from streams.settings import Settings

from .admin import topic_offsets
from .kafka_config import kafka_python_config


def read_dead_letters(settings: Settings, bootstrap: str) -> Iterator[dict[str, Any]]:
    """Every dead letter in the topic now (from the first to the current end)."""
    topic = settings.topics.dead_letters
    ends = topic_offsets(bootstrap, [topic], settings=settings).get(topic, {})
    if not any(ends.values()):
        return
    consumer = KafkaConsumer(**kafka_python_config(settings, bootstrap), enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p, end in ends.items() if end > 0]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        remaining = {tp: ends[tp.partition] for tp in tps}
        while remaining:
            for tp, records in consumer.poll(timeout_ms=1000, max_records=10_000).items():
                for r in records:
                    if r.offset < remaining.get(tp, -1):
                        yield json.loads(r.value)
                if tp in remaining and records and records[-1].offset >= remaining[tp] - 1:
                    del remaining[tp]
    finally:
        consumer.close()


def replay(settings: Settings, bootstrap: str, *, pipeline: str | None = None, reason: str | None = None,
           limit: int | None = None, dry_run: bool = False) -> int:
    """Re-send the matching dead letters' original payloads; returns how many."""
    chosen = [
        letter for letter in read_dead_letters(settings, bootstrap)
        if (pipeline is None or letter.get("pipeline") == pipeline)
        and (reason is None or letter.get("reason") == reason)
    ][:limit]
    if dry_run or not chosen:
        for letter in chosen[:20]:
            print(f"{letter['source_topic']}[{letter['partition']}]@{letter['offset']}: "
                  f"{letter['reason']}: {letter['message']}")
        return len(chosen)
    producer = KafkaProducer(**kafka_python_config(settings, bootstrap), linger_ms=5)
    try:
        for letter in chosen:
            key, value = original_payload(letter)
            producer.send(letter["source_topic"], key=key, value=value)
        producer.flush()
    finally:
        producer.close()
    return len(chosen)

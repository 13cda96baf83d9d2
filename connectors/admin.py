"""Topic administration and consumer lag, through kafka-python's admin client.

Works the same on Apache Kafka and on the embedded Tansu broker, whose quirks
are handled here:

* ListOffsets(LATEST) on Tansu returns the *base offset of the last record
  batch* + 1, not the high watermark: after one batch of 500 records into an
  empty partition it says 1. A Fetch response carries the true high watermark,
  so :func:`topic_offsets` reads it with a one-batch fetch from there.
* DescribeGroups fails client-side (kafka-python cannot decode Tansu's
  authorized-operations field), so lag uses OffsetFetch (``list_group_offsets``)
  only, which works.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Iterable, Iterator, NamedTuple

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import OffsetSpec
from kafka.errors import TopicAlreadyExistsError, for_code

from streams.settings import Settings, get_settings

from .kafka_config import kafka_python_config

log = logging.getLogger(__name__)


class PartitionLag(NamedTuple):
    """One partition's consumer position: ``committed`` is None before the first commit."""

    committed: int | None
    end: int
    lag: int


@contextlib.contextmanager
def admin_client(bootstrap: str, settings: Settings | None = None) -> Iterator[KafkaAdminClient]:
    """A short-lived admin client configured from settings."""
    config = kafka_python_config(settings or get_settings(), bootstrap)
    admin = KafkaAdminClient(**config, client_id="lepton-admin")
    try:
        yield admin
    finally:
        admin.close()


def ensure_topics(
    bootstrap: str,
    names: Iterable[str] | None = None,
    partitions: int | None = None,
    *,
    settings: Settings | None = None,
) -> list[str]:
    """Create the topics that do not exist yet (all of Lepton's by default); return those created.

    Defaults to ``settings.topics.all()`` (under ``LEPTON_TOPIC_PREFIX``).
    Idempotent: existing topics are left as they are (a partition count that
    differs from ``partitions`` is logged, not changed). The replication factor
    is the cluster's default.
    """
    settings = settings or get_settings()
    wanted = list(dict.fromkeys(names if names is not None else settings.topics.all()))
    count = partitions or settings.partitions
    created: list[str] = []
    with admin_client(bootstrap, settings) as admin:
        existing = set(admin.list_topics())
        missing = [n for n in wanted if n not in existing]
        if missing:
            spec = {n: {"num_partitions": count, "replication_factor": -1} for n in missing}
            result = admin.create_topics(spec, raise_errors=False)
            for topic in result["topics"]:
                code = topic["error_code"]
                if code == 0:
                    created.append(topic["name"])
                elif code != TopicAlreadyExistsError.errno:  # lost a race with another creator: fine
                    raise for_code(code)(f"creating topic {topic['name']!r}: {topic['error_message']}")
            if created:
                admin.wait_for_topics(created, timeout_ms=int(settings.connect_timeout_s * 1000))
        present = [n for n in wanted if n in existing]
        for topic in admin.describe_topics(present) if present else []:
            if topic["error_code"] == 0 and len(topic["partitions"]) != count:
                log.warning("topic %s has %d partitions, not %d", topic["name"], len(topic["partitions"]), count)
    if created:
        log.info("created topics %s with %d partitions", created, count)
    return created


def _partitions(admin: KafkaAdminClient, topics: Iterable[str]) -> list[TopicPartition]:
    """The partitions of the topics that exist (unknown topics are skipped)."""
    topics = list(topics)
    if not topics:
        return []  # describe_topics([]) describes every topic
    return [
        TopicPartition(t["name"], p["partition_index"])
        for t in admin.describe_topics(topics)
        if t["error_code"] == 0
        for p in t["partitions"]
    ]


def _fetch_high_watermarks(
    bootstrap: str, settings: Settings, listed: dict[TopicPartition, int], timeout_s: float = 5.0
) -> dict[TopicPartition, int]:
    """The true high watermarks, read from Fetch responses (see the module docstring).

    Fetching from ``listed - 1`` returns the last batch (one at most, ``max_partition_fetch_bytes=1``)
    and, with it, the partition's high watermark. On Apache Kafka this agrees with ListOffsets.
    """
    result = dict(listed)
    todo = [tp for tp, off in listed.items() if off > 0]
    if not todo:
        return result
    consumer = KafkaConsumer(
        **kafka_python_config(settings, bootstrap),
        client_id="lepton-offsets",
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
        max_partition_fetch_bytes=1,
    )
    try:
        consumer.assign(todo)
        for tp in todo:
            consumer.seek(tp, listed[tp] - 1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(consumer.highwater(tp) is None for tp in todo):
            consumer.poll(timeout_ms=100)
        for tp in todo:
            high = consumer.highwater(tp)
            if high is None:
                log.warning("no fetch response for %s: using ListOffsets (%d)", tp, listed[tp])
            else:
                result[tp] = max(listed[tp], high)
    finally:
        consumer.close()
    return result


def _end_offsets(
    admin: KafkaAdminClient, bootstrap: str, settings: Settings, tps: list[TopicPartition]
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """(earliest, end) offsets per partition."""
    if not tps:
        return {}, {}
    earliest = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in tps})
    latest = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps})
    end = _fetch_high_watermarks(bootstrap, settings, {tp: latest[tp].offset for tp in tps})
    return {tp: earliest[tp].offset for tp in tps}, end


def _nest(values: dict[TopicPartition, int]) -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = {}
    for tp in sorted(values):
        out.setdefault(tp.topic, {})[tp.partition] = values[tp]
    return out


def topic_offsets(
    bootstrap: str, topics: Iterable[str] | None = None, *, settings: Settings | None = None
) -> dict[str, dict[int, int]]:
    """High watermark (next offset to be written) per partition: ``{topic: {partition: end}}``.

    Topics that do not exist are left out. Defaults to all of Lepton's topics (with the prefix).
    """
    settings = settings or get_settings()
    with admin_client(bootstrap, settings) as admin:
        tps = _partitions(admin, topics if topics is not None else settings.topics.all())
        _, end = _end_offsets(admin, bootstrap, settings, tps)
    return _nest(end)


def group_lag(
    bootstrap: str,
    group_id: str,
    topics: Iterable[str] | None = None,
    *,
    settings: Settings | None = None,
) -> dict[str, dict[int, PartitionLag]]:
    """Committed offset, end offset and lag of ``group_id`` per partition.

    ``topics`` defaults to the topics the group has committed offsets for. A
    partition without a commit has ``committed=None`` and counts everything
    retained as lag. Unknown groups and topics give empty results, not errors.
    """
    settings = settings or get_settings()
    with admin_client(bootstrap, settings) as admin:
        committed = {
            tp: meta.offset
            for tp, meta in admin.list_group_offsets({group_id: None}).get(group_id, {}).items()
            if meta.offset >= 0
        }
        names = list(dict.fromkeys(topics)) if topics is not None else sorted({tp.topic for tp in committed})
        tps = _partitions(admin, names)
        earliest, end = _end_offsets(admin, bootstrap, settings, tps)
    out: dict[str, dict[int, PartitionLag]] = {}
    for tp in sorted(tps):
        position = committed.get(tp)
        lag = max(end[tp] - (position if position is not None else earliest[tp]), 0)
        out.setdefault(tp.topic, {})[tp.partition] = PartitionLag(position, end[tp], lag)
    return out

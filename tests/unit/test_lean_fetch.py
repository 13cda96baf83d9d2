"""Lean fetched records: aiokafka's own records for batch topics, the same records and positions as aiokafka's."""

from __future__ import annotations

import struct

import pytest
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.errors import CorruptRecordException
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import ConsumerRecord, TopicPartition
from aiokafka.consumer.fetcher import READ_COMMITTED, READ_UNCOMMITTED

from streams.batching.fetch import LeanPartitionRecords, LeanTopics


def _fetched(batches: list[list[tuple[bytes, bytes | None]]]) -> bytes:
    """Record batches one after another, as a fetch response holds them (offsets continue)."""
    out, base = b"", 0
    for records in batches:
        builder = BatchBuilder(1 << 20, 0)
        for key, value in records:
            builder.append(key=key, value=value, timestamp=1_000 + base)
        raw = bytearray(builder._build())
        struct.pack_into(">q", raw, 0, base)  # the broker sets each batch's base offset
        out += bytes(raw)
        base += len(records)
    return out


BATCHES = [[(b"k%d" % i, b"v%d" % i) for i in range(5)], [(b"k%d" % i, None if i == 6 else b"v%d" % i)
                                                          for i in range(5, 12)]]
LEAN = LeanTopics(lambda: {"transactions"})


def _records(topic: str, fetch_offset: int, key_deserializer=LEAN, isolation=READ_UNCOMMITTED, data=None):
    return LeanPartitionRecords(TopicPartition(topic, 0), MemoryRecords(data or _fetched(BATCHES)), [], fetch_offset,
                                key_deserializer, None, True, isolation)


@pytest.mark.parametrize("fetch_offset", [0, 3, 5])  # (a fetch starts at the batch holding its offset)
def test_lean_topic_yields_aiokafkas_records_from_the_fetch_offset(fetch_offset: int) -> None:
    lean = _records("transactions", fetch_offset)
    plain = PartitionRecords(TopicPartition("transactions", 0), MemoryRecords(_fetched(BATCHES)), [], fetch_offset,
                             None, None, True, READ_UNCOMMITTED)
    got, want = list(lean), list(plain)
    assert not isinstance(got[0], ConsumerRecord)
    assert [(r.offset, r.key, r.value, r.timestamp) for r in got] == \
        [(r.offset, r.key, r.value, r.timestamp) for r in want]
    assert got[0].offset == fetch_offset and lean.next_fetch_offset == plain.next_fetch_offset == 12


def test_position_follows_each_record_handed_out() -> None:
    lean = _records("transactions", 0)
    taken = [next(lean) for _ in range(7)]  # FetchResult.getall(max_records=7) stops here
    assert taken[-1].offset == 6 and lean.next_fetch_offset == 7


@pytest.mark.parametrize("topic, deserializer, isolation", [
    ("fraud-cards-changelog", LEAN, READ_UNCOMMITTED),  # not a lean topic
    ("transactions", None, READ_UNCOMMITTED),  # a consumer without LeanTopics
    ("transactions", LEAN, READ_COMMITTED),  # aborted transactions are aiokafka's business
], ids=["other topic", "no LeanTopics", "read_committed"])
def test_other_topics_and_consumers_get_consumer_records(topic, deserializer, isolation) -> None:
    got = list(_records(topic, 2, deserializer, isolation))
    assert all(isinstance(r, ConsumerRecord) for r in got)
    assert [(r.topic, r.offset, r.key) for r in got] == [(topic, o, b"k%d" % o) for o in range(2, 12)]


def test_a_corrupt_batch_raises() -> None:
    data = bytearray(_fetched(BATCHES))
    data[-3] ^= 0xFF  # a byte of the last record of the second batch
    with pytest.raises(CorruptRecordException):
        list(_records("transactions", 0, data=bytes(data)))


def test_lean_topics_asked_once() -> None:
    asked = []
    topics = LeanTopics(lambda: asked.append(1) or {"a"})
    assert "a" in topics and "b" not in topics and asked == [1]
    assert topics(b"key") == b"key"

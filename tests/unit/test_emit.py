"""The emitter's record batches: every output, in order, in the right topic-partition, split when full."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.memory_records import MemoryRecords

from streams.batching.emit import Emitter, Output


class _Producer:
    """What the emitter uses of aiokafka's producer; batches are real aiokafka record batches."""

    def __init__(self, batch_size: int, partitions: int = 4, serializer=None) -> None:
        self.batch_size, self.partitions, self.serializer = batch_size, partitions, serializer
        self.sent: list[tuple[str, int, BatchBuilder]] = []
        self.client = self

    async def _wait_on_metadata(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def _partition(self, topic, partition, key, value, skey, svalue) -> int:
        return sum(skey) % self.partitions  # (aiokafka hashes the serialized key)

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0, key_serializer=self.serializer, value_serializer=self.serializer)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future:
        self.sent.append((topic, partition, batch))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


class _App:
    def __init__(self, producer: _Producer) -> None:
        self.producer = self
        self._producer = producer

    def _ensure_producer(self) -> _Producer:
        return self._producer


def _records(batch: BatchBuilder) -> list[tuple[bytes | None, bytes | None]]:
    records = MemoryRecords(bytes(batch._build()))
    out = []
    while records.has_next():
        out += [(r.key, r.value) for r in records.next_batch()]
    return out


def _emit(producer: _Producer, outputs: list[Output], partition: int | None) -> int:
    async def run() -> int:
        return await Emitter(_App(producer)).send(outputs, partition)

    return asyncio.run(run())


@pytest.mark.parametrize("serializer", [None, lambda b: b], ids=["C builder", "serializing producer"])
def test_outputs_co_partitioned_in_order_and_split_when_a_batch_is_full(serializer) -> None:
    outputs = ([Output("scores", f"k{i}".encode(), b"v" * 100 + bytes([i % 256])) for i in range(300)]
               + [Output("changelog", f"c{i}".encode(), None if i % 3 == 0 else b"s" * 50) for i in range(40)]
               + [Output("scores", b"late", b"after the changelog")])
    producer = _Producer(batch_size=4096, serializer=serializer)
    assert _emit(producer, outputs, partition=6) == len(outputs)
    assert {(topic, p) for topic, p, _ in producer.sent} == {("scores", 2), ("changelog", 2)}  # 6 % 4
    got: dict[str, list] = {"scores": [], "changelog": []}
    for topic, _, batch in producer.sent:
        records = _records(batch)
        assert batch.record_count() == len(records) > 0
        got[topic] += records
    assert got["scores"] == [(o.key, o.value) for o in outputs if o.topic == "scores"]
    assert got["changelog"] == [(o.key, o.value) for o in outputs if o.topic == "changelog"]
    assert sum(topic == "scores" for topic, _, _ in producer.sent) > 5  # 4 KB batches: the scores took several


def test_keys_hashed_without_a_partition() -> None:
    outputs = [Output("alerts", f"id{i}".encode(), b"x") for i in range(50)]
    producer = _Producer(batch_size=1 << 20)
    assert _emit(producer, outputs, partition=None) == 50
    for topic, p, batch in producer.sent:
        assert all(sum(key) % 4 == p for key, _ in _records(batch))
    assert sorted(k for _, _, b in producer.sent for k, _ in _records(b)) == sorted(o.key for o in outputs)


def test_a_record_larger_than_a_batch_goes_alone() -> None:
    outputs = [Output("t", b"a", b"1"), Output("t", b"big", b"x" * 10_000), Output("t", b"b", b"2")]
    producer = _Producer(batch_size=1024)
    _emit(producer, outputs, partition=0)
    assert [[k for k, _ in _records(b)] for _, _, b in producer.sent] == [[b"a"], [b"big"], [b"b"]]

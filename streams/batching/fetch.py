"""Fetched records of batch topics handed over as aiokafka read them, without a copy per record.

aiokafka turns every fetched record into a ``ConsumerRecord`` dataclass (eleven
fields, a Python ``__init__``) inside a generator that updates its position per
record: about 1 µs a record on this machine, twice per transaction in the fraud
worker (the transaction and its label). A batch topic's records only need
``offset``, ``key``, ``value``, ``timestamp`` and ``headers``, which aiokafka's
own (C) record already has, so for those topics :class:`LeanPartitionRecords`
yields that record itself, a record batch at a time: 0.46 µs a record. Other
topics (Faust's per-message path) get ``ConsumerRecord`` as before.

Which topics are lean is told by the consumer: :class:`LeanTopics` in place of
its key deserializer (aiokafka hands that to every ``PartitionRecords``; Faust
sets none, and for other topics the record keeps its key as aiokafka reads it).
:func:`install` makes aiokafka's fetcher build :class:`LeanPartitionRecords`;
without a :class:`LeanTopics` they are aiokafka's own.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.consumer.fetcher import READ_COMMITTED
from aiokafka.errors import CorruptRecordException

_AiokafkaPartitionRecords = aiokafka_fetcher.PartitionRecords


class LeanTopics:
    """A consumer's key deserializer that names its lean topics (and deserializes nothing).

    ``topics`` is asked once, at the first fetch: the consumer's subscriptions are known by then.
    """

    def __init__(self, topics: Callable[[], set[str]]) -> None:
        self._topics = topics
        self._known: frozenset[str] | None = None

    def __contains__(self, topic: str) -> bool:
        if self._known is None:
            self._known = frozenset(self._topics())
        return topic in self._known

    def __call__(self, key: bytes | None) -> bytes | None:
        return key


class LeanPartitionRecords(_AiokafkaPartitionRecords):  # type: ignore[misc, valid-type]
    """aiokafka's records of one fetched partition; aiokafka's own records for lean topics."""

    def __init__(self, tp: Any, records: Any, aborted_transactions: Any, fetch_offset: int, key_deserializer: Any,
                 value_deserializer: Any, check_crcs: bool, isolation_level: int) -> None:
        self._lean = False
        if isinstance(key_deserializer, LeanTopics):
            self._lean = tp.topic in key_deserializer and isolation_level != READ_COMMITTED
            key_deserializer = None  # (it deserializes nothing)
        super().__init__(tp, records, aborted_transactions, fetch_offset, key_deserializer, value_deserializer,
                         check_crcs, isolation_level)

    def _unpack_records(self) -> Iterator[Any]:
        if not self._lean:
            yield from super()._unpack_records()
            return
        records = self._records
        while records.has_next():
            batch = records.next_batch()
            if self._check_crcs and not batch.validate_crc():
                raise CorruptRecordException(f"Invalid CRC - {self._tp}")
            if not batch.is_control_batch:  # (control batches are skipped, as aiokafka does)
                run = list(batch)
                start = self.next_fetch_offset
                if run and run[0].offset < start:  # a batch that began before the fetch offset
                    run = [r for r in run if r.offset >= start]
                for record in run:
                    self.next_fetch_offset = record.offset + 1
                    yield record
            self.next_fetch_offset = batch.next_offset


def install() -> None:
    """aiokafka's fetcher builds :class:`LeanPartitionRecords` (aiokafka's own unless a consumer has :class:`LeanTopics`)."""
    aiokafka_fetcher.PartitionRecords = LeanPartitionRecords

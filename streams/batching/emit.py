"""Bulk output on Faust's own producer.

``await topic.send()`` per event costs ~200 µs; appending to one aiokafka
record batch per partition costs a few µs per record. :meth:`Emitter.send`
returns only when the broker has acknowledged every record, so the agent that
awaits it can mark its input batch complete: outputs precede commits.
"""

from __future__ import annotations

import asyncio
from functools import partial
from itertools import count, groupby, repeat, takewhile
from operator import attrgetter, is_not
from typing import Any, Iterable, Iterator, NamedTuple


class Output(NamedTuple):
    """One record to produce. ``key`` decides the partition (murmur2, as Kafka)."""

    topic: str
    key: bytes | None
    value: bytes


class Emitter:
    """Produces many records as one record batch per topic-partition."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._partition_counts: dict[str, int] = {}  # topic -> partitions (metadata loaded once)

    def _producer(self) -> Any:
        # Faust's aiokafka producer wraps an AIOKafkaProducer; its batch API
        # is what makes bulk output cheap.
        return self._app.producer._ensure_producer()

    async def send(self, outputs: Iterable[Output], partition: int | None = None) -> int:
        """Send ``outputs`` and wait until the broker acknowledged all of them."""
        delivery = await self.enqueue(outputs, partition)
        await delivery
        return delivery.records

    async def enqueue(self, outputs: Iterable[Output], partition: int | None = None) -> "Delivery":
        """Hand ``outputs`` to the producer, in order; await the result for the broker's acks.

        Enqueueing several batches before their acks arrive keeps the broker
        round trip off the critical path.

        With ``partition`` (the input batch's partition), every output goes to
        that partition of its topic (modulo its partition count): outputs are
        co-partitioned with their inputs, so a re-delivered input lands on the
        same output partition under the same key, and no key is hashed.
        Without it, keys are hashed with Kafka's murmur2.
        """
        producer = self._producer()
        counts = self._partition_counts
        by_tp: dict[tuple[str, int], list[Output]] = {}
        if partition is None:
            partition_for = producer._partition
            for out in outputs:
                topic = out.topic
                if topic not in counts:
                    counts[topic] = len(await producer.client._wait_on_metadata(topic))
                by_tp.setdefault((topic, partition_for(topic, None, None, None, out.key, None)), []).append(out)
        else:
            # Outputs come in runs of one topic (a pipeline builds them topic by topic): grouped in C.
            for topic, run in groupby(outputs, _topic):
                n = counts.get(topic)
                if n is None:
                    n = counts[topic] = len(await producer.client._wait_on_metadata(topic))
                by_tp.setdefault((topic, partition % n), []).extend(run)
        futures: list[asyncio.Future] = []
        sent = 0
        for (topic, p), records in by_tp.items():
            for batch in _batches(producer, records):
                futures.append(await producer.send_batch(batch, topic, partition=p))
            sent += len(records)
        return Delivery(futures, sent)


_topic, _key, _value = attrgetter("topic"), attrgetter("key"), attrgetter("value")
_NO_HEADERS: list = []
_appended = partial(is_not, None)


def _batches(producer: Any, records: list[Output]) -> Iterator[Any]:
    """``records`` appended, in order, to as many of the producer's record batches as they need.

    aiokafka's ``BatchBuilder.append`` is a Python call per record around its C record
    builder; here the C builder is called over the records by ``map`` (no Python frame per
    record), stopping at the first record that does not fit (it starts the next batch).
    A producer with serializers (never Faust's) takes the Python path.
    """
    start, total = 0, len(records)
    while start < total:
        batch = producer.create_batch()
        rest = records[start:] if start else records
        if batch._key_serializer is not None or batch._value_serializer is not None:
            added = 0
            for rec in rest:
                if batch.append(key=rec.key, value=rec.value, timestamp=None) is None:
                    break
                added += 1
        else:
            added = len(list(takewhile(_appended, map(
                batch._builder.append, count(), repeat(None), map(_key, rest), map(_value, rest),
                repeat(_NO_HEADERS)))))
            batch._relative_offset = added
        if added == 0:  # an empty batch always takes its first record: a record builder that refuses it is broken
            raise RuntimeError(f"the producer's record batch refused a record of {len(rest[0].value or b'')} bytes")
        start += added
        if start < total:
            batch.close()  # full: the rest goes to the next batch
        yield batch


class Delivery:
    """The broker acknowledgements of one enqueue: await it (raises on failure)."""

    def __init__(self, futures: list[asyncio.Future], records: int) -> None:
        self.futures = futures
        self.records = records

    def __await__(self):  # type: ignore[no-untyped-def]
        return asyncio.gather(*self.futures).__await__()

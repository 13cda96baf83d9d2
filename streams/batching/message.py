"""A run of records from one topic-partition, delivered as one Faust message."""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Callable, Sequence

from faust.transport.consumer import Consumer
from faust.types import TP
from faust.types.tuples import ConsumerMessage


@dataclass(slots=True)
class RecordBatch:
    """What a batch agent receives: consecutive records of one partition.

    ``records`` are the transport's records (attributes ``offset``, ``key``,
    ``value``, ``timestamp`` in ms, ``headers``), in offset order.
    ``complete`` is set (by :meth:`mark_complete`) once the batch's outputs
    are acknowledged by the broker; only a complete batch's offsets can ever
    be committed. Faust may ack the batch's event earlier (as soon as the
    agent moves on to the next batch): that ack then waits here.

    ``follow`` is how many more batches of the same topic the same fetch
    delivers right after this one (other partitions, or the rest of a long
    run): an agent may wait for them and process them in one call.
    ``generation_id`` is the consumer generation that fetched the batch.
    """

    topic: str
    partition: int
    records: Sequence[Any]
    complete: bool = False
    follow: int = 0
    generation_id: int | None = None
    _on_complete: Callable[[], Any] | None = None

    def mark_complete(self) -> None:
        """The outputs exist: the offsets may now be committed."""
        self.complete = True
        if self._on_complete is not None:
            callback, self._on_complete = self._on_complete, None
            callback()

    def __len__(self) -> int:
        return len(self.records)

    @property
    def first_offset(self) -> int:
        return self.records[0].offset

    @property
    def last_offset(self) -> int:
        return self.records[-1].offset


_value = attrgetter("value")


class BatchMessage(ConsumerMessage):
    """A Faust message whose value is a :class:`RecordBatch`.

    It flows through Faust's conductor, stream and acking like any message.
    Its ``offset`` is the batch's *last* offset (so Faust's read-offset and
    lag bookkeeping see the partition's true position); its final ack
    acknowledges every offset of the batch at once.
    """

    __slots__ = ("batch",)

    def __init__(self, tp: TP, records: Sequence[Any], generation_id: int | None, follow: int = 0) -> None:
        last = records[-1]
        ts = last.timestamp
        super().__init__(
            tp.topic,
            tp.partition,
            last.offset,
            ts / 1000.0 if ts is not None else 0.0,
            last.timestamp_type,
            None,
            None,
            None,
            None,
            0,
            sum(map(len, filter(None, map(_value, records)))),  # (the records may be aiokafka's own: .fetch)
            tp,
            generation_id=generation_id,
        )
        self.batch = RecordBatch(tp.topic, tp.partition, records, follow=follow, generation_id=generation_id)
        self.value = self.batch  # type: ignore[assignment]

    def on_final_ack(self, consumer: Consumer) -> bool:  # type: ignore[override]
        return consumer.ack_batch(self)  # type: ignore[attr-defined]

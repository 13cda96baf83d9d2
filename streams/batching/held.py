"""Batches an agent holds back, without blocking the fetch loop, until it can apply them.

A worker's topics all arrive through one fetch loop. An agent that waits inside its
``async for`` (for the records of another topic, say) stops taking batches, its
stream queue fills, and the fetch loop blocks on the next put: the records it waits
for are never delivered. So an agent that must wait keeps the batch here and goes
on taking batches; a periodic task applies the held ones when they are ready. A held batch
is not complete, so none of its offsets is committed: a crash re-delivers it.

Per partition, batches are applied in their order: a batch is taken only once the
ones before it are.

>>> from streams.batching import RecordBatch
>>> held = HeldBatches()
>>> held.hold(RecordBatch("labels", 0, [1, 2]), "a")
>>> held.hold(RecordBatch("labels", 0, [3]), "b")
>>> held.hold(RecordBatch("labels", 1, [4]), "c")
>>> len(held)
4
>>> [payload for _, payload in held.take(lambda batch, payload: payload != "b")]
['a', 'c']
>>> len(held)
1
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from .message import RecordBatch

T = TypeVar("T")


class HeldBatches(Generic[T]):
    """Batches (each with a payload the agent derived from it) waiting to be applied, per partition."""

    def __init__(self) -> None:
        self._held: dict[int, deque[tuple[RecordBatch, T]]] = {}
        self._records = 0

    def hold(self, batch: RecordBatch, payload: T) -> None:
        self._held.setdefault(batch.partition, deque()).append((batch, payload))
        self._records += len(batch)

    def take(self, ready: Callable[[RecordBatch, T], bool]) -> list[tuple[RecordBatch, T]]:
        """Per partition, the held batches from the first on while ``ready``; they are no longer held."""
        taken = []
        for partition, queue in list(self._held.items()):
            while queue and ready(*queue[0]):
                batch, payload = queue.popleft()
                self._records -= len(batch)
                taken.append((batch, payload))
            if not queue:
                del self._held[partition]
        return taken

    def clear(self) -> None:
        """Forget every held batch (a rebalance: the stream re-delivers from the committed offsets)."""
        self._held.clear()
        self._records = 0

    def __len__(self) -> int:
        """Records held."""
        return self._records

    def __repr__(self) -> str:
        return f"HeldBatches({self._records} records in {sum(map(len, self._held.values()))} batches)"


__all__ = ["HeldBatches"]

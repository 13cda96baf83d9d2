"""Outputs awaiting the broker's acknowledgement, and the input batches they keep open.

An input batch may be committed only once its outputs exist. Each batch's
outputs are handed to the producer in order and their acknowledgement is
awaited in the background (at most ``max_inflight`` batches at once, so the
broker's round trip stays off the critical path); only then is the batch
marked complete. A :class:`~aiokafka.errors.KafkaError` re-sends the outputs
(backoff 0.2 s, doubling up to 5 s); after ``retries`` re-sends the batch stays
incomplete: nothing from it on is committed, and a restart reads it again.
Duplicates are possible, loss is not.

The scoring agent (:class:`streams.pipeline.BatchAgent`) and the fraud label
agent both deliver through this class.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Callable, Optional, Sequence

from aiokafka.errors import KafkaError

from .. import metrics
from .emit import Output

log = logging.getLogger(__name__)


class Deliveries:
    """The in-flight outputs of one agent (``name`` labels its metrics and logs)."""

    def __init__(self, emitter: Any, name: str, *, max_inflight: int = 4, retries: int = 5) -> None:
        self.emitter = emitter
        self.name = name
        self.max_inflight = max_inflight
        self.retries = retries
        self._pending: deque[asyncio.Future] = deque()

    def __len__(self) -> int:
        return len(self._pending)

    async def send(self, batch: Any, outputs: Sequence[Output],
                   on_acked: Optional[Callable[[], None]] = None) -> None:
        """Hand ``outputs`` of ``batch`` to the producer; the batch completes once they are acknowledged
        (``on_acked`` runs then). Call :meth:`settle` afterwards to bound what is in flight."""
        delivery = await self.emitter.enqueue(outputs, batch.partition)
        self._pending.append(asyncio.ensure_future(self._confirm(batch, delivery, outputs, on_acked)))

    async def settle(self) -> None:
        """Collect finished deliveries; wait for the oldest while more than ``max_inflight`` are pending."""
        pending = self._pending
        while pending and (pending[0].done() or len(pending) > self.max_inflight):
            await pending.popleft()

    async def drain(self) -> None:
        """Wait for every pending delivery."""
        while self._pending:
            await self._pending.popleft()

    async def _confirm(self, batch: Any, delivery: Any, outputs: Sequence[Output],
                       on_acked: Optional[Callable[[], None]]) -> None:
        delay = 0.2
        for attempt in range(self.retries + 1):
            try:
                await delivery
                break
            except KafkaError as exc:
                if attempt == self.retries:
                    log.error("%s: outputs of %s[%d]@%d not delivered (%r); the batch stays uncommitted",
                              self.name, batch.topic, batch.partition, batch.first_offset, exc)
                    return
                metrics.EMIT_RETRIES.labels(self.name).inc()
                log.warning("%s: delivering outputs failed (attempt %d): %r; re-sending", self.name, attempt + 1, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                delivery = await self.emitter.enqueue(outputs, batch.partition)
        batch.mark_complete()
        if on_acked is not None:
            on_acked()

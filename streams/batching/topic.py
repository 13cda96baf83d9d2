"""A Faust topic whose stream yields :class:`RecordBatch` values."""

from __future__ import annotations

from typing import Any, Mapping

import faust
from faust.types import EventT, Message


class BatchTopic(faust.Topic):
    """Subscribe an agent to micro-batches of raw records.

    Decoding is left to the agent, which does it in bulk: the conductor only
    wraps the already-built :class:`RecordBatch` in an event. A Kafka topic
    must be consumed either per message or per batch, never both in one app.

    ``max_batch`` caps a batch of this topic (default: the app's ``max_batch``
    setting): a topic of small records whose cost per batch grows slower than
    its size (the fraud labels) takes larger batches.
    """

    def __init__(self, *args: Any, max_batch: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.max_batch = max_batch

    def _clone_args(self) -> Mapping:
        return {**super()._clone_args(), "max_batch": self.max_batch}

    def _compile_decode(self) -> None:
        # faust.Topic compiles ``self.decode`` from its schema; a batch is
        # already built by the consumer, so decoding is just wrapping it.
        create_event = self._create_event

        async def decode(message: Message, *, propagate: bool = False) -> EventT[Any]:
            return create_event(None, message.value, None, message=message)

        self.decode = decode  # type: ignore[method-assign]


class BatchStream(faust.Stream):
    """A stream that acks batch events through ``Message.ack``.

    Faust's compiled (Cython) stream iterator inlines the per-message ack and
    so would bypass :meth:`BatchMessage.on_final_ack`, acknowledging only the
    batch's last offset. Streams over a :class:`BatchTopic` therefore use
    Faust's pure-Python iterator, which calls ``event.ack()``; at one event
    per batch its extra cost is negligible. Other streams are unchanged.
    """

    def __aiter__(self) -> Any:  # type: ignore[override]
        if isinstance(self.channel, BatchTopic):
            it = self._py_aiter()
            self._active_agens.add(it)
            return it
        return super().__aiter__()

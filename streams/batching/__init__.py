"""Micro-batch delivery inside Faust.

Faust delivers one event per Kafka message, which costs ~150 µs of Python per
event. This package keeps Faust as the framework (app, agents, tables, worker,
rebalancing, commits) but lets chosen topics receive *batches*: one event per
fetched run of records of one topic-partition.

* :mod:`.message`   – :class:`RecordBatch` and the message that carries it.
* :mod:`.transport` – the ``lepton://`` transport: a consumer that yields one
  item per fetched (partition, records) run for batch topics, and acknowledges
  a whole batch at once into Faust's own offset tracking.
* :mod:`.topic`     – :class:`BatchTopic`, a topic whose stream yields batches.
* :mod:`.emit`      – :class:`Emitter`, bulk output on Faust's producer, awaited
  until the broker acknowledged it.
* :mod:`.deliveries` – :class:`Deliveries`, outputs in flight: an input batch
  completes (may be committed) once its outputs are acknowledged; re-sends on
  broker errors.
* :mod:`.held`      – :class:`HeldBatches`, batches an agent holds back without
  blocking the fetch loop (labels waiting for their transactions).
"""

from .deliveries import Deliveries
from .emit import Emitter, Output
from .held import HeldBatches
from .message import RecordBatch
from .topic import BatchStream, BatchTopic
from .transport import SCHEME, install

__all__ = ["BatchStream", "BatchTopic", "Deliveries", "Emitter", "HeldBatches", "Output", "RecordBatch", "SCHEME", "install"]

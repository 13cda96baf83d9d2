"""A Faust table that batch agents read and write in bulk.

Faust writes one changelog record per ``table[key] = value`` through
``send_soon``: about 250 µs each, and commits stall behind them. A batch
agent instead updates many keys at once: :meth:`BatchTable.update` changes
the in-memory store directly and returns the changelog records as ordinary
:class:`~streams.batching.Output` objects, which the agent emits *with* the
batch's other outputs, to the batch's partition (as Faust would: a table's
changelog partition is the partition of the event that wrote it). So a
state change is acknowledged by the broker before the input offset that
caused it is committed, and Faust's own recovery rebuilds the table from the
changelog after a restart or a rebalance.

Keys are ``str``, values ``bytes`` (callers encode compact state). ``None``
deletes a key (a tombstone in the changelog).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import faust

from ..batching import Output


class BatchTable(MutableMapping[str, bytes]):
    """Dict-like view of a Faust table; writes are collected and flushed as outputs."""

    def __init__(self, app: faust.App, name: str, *, partitions: int, global_: bool = False,
                 help: str = "") -> None:
        factory = app.GlobalTable if global_ else app.Table
        self.table = factory(
            name,
            key_type=str,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions,
            help=help,
        )
        self._pending: dict[str, bytes | None] = {}

    @property
    def _store(self) -> MutableMapping[Any, Any]:
        return self.table.data  # the store (memory): Faust's recovery writes here too

    # -- reads see pending writes ------------------------------------------------------------
    def __getitem__(self, key: str) -> bytes:
        if key in self._pending:
            value = self._pending[key]
            if value is None:
                raise KeyError(key)
            return value
        return self._store[key]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._store)

    def __len__(self) -> int:
        return len(self._store)

    # -- writes are collected ------------------------------------------------------------------
    def __setitem__(self, key: str, value: bytes) -> None:
        self._pending[key] = value

    def __delitem__(self, key: str) -> None:
        self._pending[key] = None

    def update_many(self, items: Mapping[str, bytes | None]) -> None:
        self._pending.update(items)

    def flush(self) -> list[Output]:
        """Apply the pending writes to the store; return their changelog records."""
        if not self._pending:
            return []
        topic = self.table.changelog_topic.get_topic_name()
        store = self._store
        outputs = []
        for key, value in self._pending.items():
            if value is None:
                store.pop(key, None)
            else:
                store[key] = value
            outputs.append(Output(topic, key.encode(), value))  # type: ignore[arg-type]
        self._pending.clear()
        return outputs

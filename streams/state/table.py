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

Each key remembers the partition that wrote it (as Faust's memory store does
for recovered keys), so :meth:`BatchTable.sweep` can expire keys of one
partition with tombstones on *that* partition's changelog.
:class:`MemoryTable` is the same API without Faust, for code run outside a
worker (tests, evaluation).

>>> t = MemoryTable()
>>> t["a"] = b"1"; t["b"] = b"2"
>>> t.flush(3)
[]
>>> t.sweep(3, lambda key, value: value == b"1", budget=10)
1
>>> sorted(t), t.partition_of("b")
(['b'], 3)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from itertools import compress, repeat
from operator import eq, is_, is_not
from typing import Any

import faust

from ..batching import Output

_new = tuple.__new__


def outputs(topic: str, keys: Iterable[bytes | None], values: Iterable[bytes | None]) -> list[Output]:
    """One :class:`Output` per (key, value) pair, built in C (``tuple.__new__`` over ``zip``): the
    NamedTuple's own constructor is a Python call per record, several times the cost.

    >>> outputs("t", [b"a", b"b"], [b"1", None]) == [Output("t", b"a", b"1"), Output("t", b"b", None)]
    True
    """
    return list(map(_new, repeat(Output), zip(repeat(topic), keys, values)))


def _consume(iterator: Iterator[Any]) -> None:
    deque(iterator, maxlen=0)


class BatchTable(MutableMapping[str, bytes]):
    """Dict-like view of a Faust table; writes go to the store at once, their changelog records
    are collected and returned by :meth:`flush`."""

    def __init__(self, app: faust.App, name: str, *, partitions: int, global_: bool = False,
                 help: str = "") -> None:
        factory = app.GlobalTable if global_ else app.Table
        # Raw bytes on the changelog: keys decoded to str on recovery, values stay bytes.
        changelog = app.topic(f"{app.conf.id}-{name}-changelog", key_type=str, value_type=None,
                              key_serializer="raw", value_serializer="raw", partitions=partitions,
                              compacting=True, deleting=False, acks=False, internal=True)
        self.table = factory(name, key_type=str, partitions=partitions, help=help, changelog_topic=changelog)
        self.table.lepton_bulk = self  # the batch transport restores its changelog in bulk (restore)
        # Writes since the last flush, one mapping per call, in order (already in the store): a key's
        # last write is its changelog record. Keeping the callers' mappings costs nothing per key.
        self._written: list[Mapping[str, bytes | None]] = []
        self._sweeps: dict[int, list[str]] = {}  # partition -> keys still to check in the current pass
        self._dict: dict[str, bytes] | None = None

    @property
    def _store(self) -> MutableMapping[Any, Any]:
        return self.table.data  # the store (memory): Faust's recovery writes here too

    @property
    def _partitions(self) -> MutableMapping[str, int]:
        store = self.table.data
        if not hasattr(store, "_key_partition"):  # a store that does not track partitions: track them here
            store._key_partition = {}
        return store._key_partition

    def partition_of(self, key: str) -> int | None:
        return self._partitions.get(key)

    def keys_of(self, partition: int) -> list[str]:
        """The stored keys written from (or recovered for) ``partition``: one pass over every key."""
        where = self._partitions
        return list(compress(where, map(eq, where.values(), repeat(partition))))  # (in C: no tuple per key)

    @property
    def _raw(self) -> dict[str, bytes]:
        """The memory store's own dict (created once with the store, kept for its life)."""
        raw = self._dict
        if raw is None:
            store = self.table.data
            raw = self._dict = getattr(store, "data", store)
        return raw

    # -- reads: the store, which holds this batch's writes already -------------------------
    def __getitem__(self, key: str) -> bytes:
        return self._raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        """No exception for an absent key (the expiry and join paths look up many): a dict ``get``."""
        return self._raw.get(key, default)

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        """Values of ``keys`` (None: absent), straight from the store's dict: the bulk read path."""
        return list(map(self._raw.get, keys))

    def __contains__(self, key: object) -> bool:
        return key in self._raw

    def __iter__(self) -> Iterator[str]:
        return iter(self._store)

    def __len__(self) -> int:
        return len(self._store)

    # -- writes: applied now, their changelog records collected ------------------------------
    def __setitem__(self, key: str, value: bytes) -> None:
        self.update_many({key: value})

    def __delitem__(self, key: str) -> None:
        self.update_many({key: None})

    def update_many(self, items: Mapping[str, bytes | None]) -> None:
        """Write ``items`` (a ``None`` value deletes its key). The mapping is kept until the
        next flush (its changelog records): pass a fresh one and do not change it afterwards."""
        if not items:
            return
        raw = self._raw
        if None in items.values():  # deletes (tombstones): out of the store, not into it
            kept = {k: v for k, v in items.items() if v is not None}
            raw.update(kept)
            _consume(map(raw.pop, compress(items, map(is_, items.values(), repeat(None))), repeat(None)))
        else:
            raw.update(items)
        self._written.append(items)

    def pop_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Delete ``keys`` and return their values (None: absent, or a repeat of an earlier key):
        a read and a delete in one pass. The deleted keys' tombstones leave with the next flush."""
        values = list(map(self._raw.pop, keys, repeat(None)))
        found = list(compress(keys, map(is_not, values, repeat(None))))
        if found:
            self._written.append(dict.fromkeys(found))
        return values

    def _pending(self) -> dict[str, bytes | None]:
        """The writes since the last flush, each key's last, as one mapping; forgotten here."""
        written = self._written
        self._written = []
        if len(written) == 1:
            return dict(written[0]) if type(written[0]) is not dict else written[0]  # type: ignore[return-value]
        # Into the largest (ours since update_many): earlier writes only where no later one went.
        big = max(range(len(written)), key=lambda i: len(written[i]))
        merged = written[big] if type(written[big]) is dict else dict(written[big])
        for items in reversed(written[:big]):
            for key, value in items.items():
                if key not in merged:
                    merged[key] = value
        for items in written[big + 1:]:
            merged.update(items)
        return merged  # type: ignore[return-value]

    def flush(self, partition: int | None = None) -> list[Output]:
        """The changelog records of the writes since the last flush (each key's last write).

        ``partition`` is the input partition that caused the writes: the
        records must be emitted to it (the agent's ``Emitter.enqueue(...,
        partition)`` does), and the keys are remembered as that partition's.
        """
        if not self._written:
            return []
        pending = self._pending()
        records = outputs(self.table.changelog_topic.get_topic_name(), map(str.encode, pending), pending.values())
        if partition is not None:
            self._place(pending, repeat(partition))
        return records

    def _place(self, pending: Mapping[str, bytes | None], parts: Iterable[int]) -> None:
        """Remember the written keys' partitions; deleted keys are forgotten (every loop in C)."""
        where = self._partitions
        deleted = list(compress(pending, map(is_, pending.values(), repeat(None))))
        if len(deleted) < len(pending):
            where.update(zip(pending, parts))
        if deleted:
            _consume(map(where.pop, deleted, repeat(None)))

    def flush_split(self, owner: Mapping[str, int], default: int) -> dict[int, list[Output]]:
        """:meth:`flush` for writes caused by several partitions' inputs: partition → its records.

        A pending key's partition is ``owner[key]`` (the partition of the input that wrote
        it), else the partition that holds it already (an expiry's tombstone), else
        ``default``.
        """
        if not self._written:
            return {}
        pending = self._pending()
        where = self._partitions
        parts = list(map(owner.get, pending))
        if None in parts:
            parts = [p if p is not None else where.get(k, default) for k, p in zip(pending, parts)]
        records = outputs(self.table.changelog_topic.get_topic_name(), map(str.encode, pending), pending.values())
        self._place(pending, parts)
        distinct = set(parts)
        if len(distinct) == 1:
            return {parts[0]: records}
        # One pass appending to each partition's list: ~100 ns a record, against ~80 per partition a
        # record for one filtering pass per partition.
        split: dict[int, list[Output]] = {p: [] for p in distinct}
        appends = {p: out.append for p, out in split.items()}
        for record, p in zip(records, parts):
            appends[p](record)
        return split

    def restore(self, partition: int, records: Sequence[Any]) -> None:
        """Apply changelog records (transport records: ``key``, ``value``) read back from ``partition``.

        What Faust's recovery does one event at a time through the conductor
        and a queue (about 1 ms each on this machine), done as one loop over
        a fetched run of records; a ``None`` value is a tombstone.
        """
        data, where = self._raw, self._partitions
        for record in records:
            key = record.key.decode()
            if record.value is None:
                data.pop(key, None)  # type: ignore[attr-defined]
                where.pop(key, None)
            else:
                data[key] = record.value  # type: ignore[index]
                where[key] = partition

    def sweep(self, partition: int, expired: Callable[[str, bytes], bool], budget: int) -> int:
        """Delete (pending: flush emits the tombstones) up to ``budget`` checked keys of
        ``partition`` for which ``expired(key, value)``; returns how many.

        Incremental: each call checks the next ``budget`` keys of a pass over
        the partition's keys, so expiry costs a bounded slice of each batch.
        """
        todo = self._sweeps.get(partition)
        if not todo:
            todo = self._sweeps[partition] = self.keys_of(partition)
        dead: list[str] = []
        data, where = self._raw, self._partitions
        for _ in range(min(budget, len(todo))):
            key = todo.pop()
            value = data.get(key)
            if value is not None and where.get(key) == partition and expired(key, value):
                dead.append(key)
        if dead:
            self.update_many(dict.fromkeys(dead))
        return len(dead)


class MemoryTable(dict):
    """:class:`BatchTable`'s API on a plain dict (no changelog): for code run outside a worker."""

    def __init__(self) -> None:
        super().__init__()
        self._where: dict[str, int] = {}
        self._pending: set[str] = set()
        self._sweeps: dict[int, list[str]] = {}

    def __setitem__(self, key: str, value: bytes) -> None:
        super().__setitem__(key, value)
        self._pending.add(key)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._where.pop(key, None)

    def update_many(self, items: Mapping[str, bytes | None]) -> None:
        for key, value in items.items():
            if value is None:
                self.pop(key, None)
                self._where.pop(key, None)
            else:
                self[key] = value

    def partition_of(self, key: str) -> int | None:
        return self._where.get(key)

    def keys_of(self, partition: int) -> list[str]:
        return [k for k, p in self._where.items() if p == partition]

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        get = self.get
        return [get(k) for k in keys]

    def pop_many(self, keys: Sequence[str]) -> list[bytes | None]:
        values = list(map(self.pop, keys, repeat(None)))
        _consume(map(self._where.pop, compress(keys, map(is_not, values, repeat(None))), repeat(None)))
        return values

    def flush(self, partition: int | None = None) -> list[Output]:
        if partition is not None:
            for key in self._pending:
                if key in self:
                    self._where[key] = partition
        self._pending.clear()
        return []

    def flush_split(self, owner: Mapping[str, int], default: int) -> dict[int, list[Output]]:
        where = self._where
        for key in self._pending:
            if key in self:
                where[key] = owner.get(key, where.get(key, default))
        self._pending.clear()
        return {}

    def sweep(self, partition: int, expired: Callable[[str, bytes], bool], budget: int) -> int:
        todo = self._sweeps.get(partition)
        if not todo:
            todo = self._sweeps[partition] = self.keys_of(partition)
        deleted = 0
        for _ in range(min(budget, len(todo))):
            key = todo.pop()
            value = self.get(key)
            if value is not None and self._where.get(key) == partition and expired(key, value):
                del self[key]
                deleted += 1
        return deleted

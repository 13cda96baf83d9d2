"""BatchTable: writes collected, applied in bulk, and returned as changelog records."""

from __future__ import annotations

import faust

from streams.state.table import BatchTable


def make_table() -> BatchTable:
    app = faust.App("lepton-table-test", broker="memory://", store="memory://")
    return BatchTable(app, "cards", partitions=4)


def test_flush_applies_writes_and_returns_their_changelog_records() -> None:
    table = make_table()
    table["a"], table["b"] = b"1", b"2"
    assert table.get("a") == b"1"  # reads see pending writes
    outputs = table.flush(2)
    topic = table.table.changelog_topic.get_topic_name()
    assert [(o.topic, o.key, o.value) for o in outputs] == [(topic, b"a", b"1"), (topic, b"b", b"2")]
    assert table.table.data["a"] == b"1" and table.partition_of("b") == 2
    assert table.flush(2) == []  # nothing pending


def test_deletes_become_tombstones_and_leave_the_store() -> None:
    table = make_table()
    table["a"], table["b"] = b"1", b"2"
    table.flush(1)
    del table["a"]
    table["b"] = b"3"
    table["c"] = b"4"
    del table["c"]  # written and deleted in one batch: only the tombstone goes out
    outputs = table.flush(3)
    assert {o.key: o.value for o in outputs} == {b"a": None, b"b": b"3", b"c": None}
    assert "a" not in table and "c" not in table and table["b"] == b"3"
    assert table.partition_of("a") is None and table.partition_of("b") == 3
    assert sorted(table) == ["b"] and len(table) == 1


def test_sweep_expires_only_the_partitions_own_keys() -> None:
    table = make_table()
    table["old-1"], table["new-1"] = b"old", b"new"
    table.flush(1)
    table["old-2"] = b"old"
    table.flush(2)
    assert table.sweep(1, lambda key, value: value == b"old", budget=10) == 1
    outputs = table.flush(1)
    assert [(o.key, o.value) for o in outputs] == [(b"old-1", None)]
    assert "old-2" in table and "new-1" in table


def test_flush_split_sends_each_write_to_the_partition_that_caused_it() -> None:
    table = make_table()
    table["old"], table["gone"] = b"0", b"0"
    table.flush(3)
    table["a"], table["b"], table["old"] = b"1", b"2", b"5"  # written by inputs of partitions 0, 1 and (old) 3
    del table["gone"]  # an expiry: its tombstone goes to the partition that holds it
    table["stray"] = b"9"  # neither owned nor stored: the default partition
    split = table.flush_split({"a": 0, "b": 1}, default=2)
    assert {p: sorted((o.key, o.value) for o in outs) for p, outs in split.items()} == {
        0: [(b"a", b"1")], 1: [(b"b", b"2")], 2: [(b"stray", b"9")], 3: [(b"gone", None), (b"old", b"5")]}
    assert [table.partition_of(k) for k in ("a", "b", "old", "stray", "gone")] == [0, 1, 3, 2, None]
    assert table.flush_split({}, default=0) == {} and table.flush(0) == []  # nothing left pending

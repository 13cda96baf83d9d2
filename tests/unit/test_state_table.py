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

"""/healthz: a partition with lag whose committed offset stops moving is reported as stalled."""

from __future__ import annotations

from types import SimpleNamespace

from faust.types import TP

from streams import health as health_module
from streams.health import Health

TP0 = TP("transactions", 0)


class FakeConsumer:
    def __init__(self) -> None:
        self._committed_offset = {TP0: 10}
        self._read_offset = {TP0: 10}
        self.end = 10

    def assignment(self):
        return {TP0}

    def highwater(self, tp):
        return self.end


def make(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(health_module.time, "monotonic", lambda: clock[0])
    consumer = FakeConsumer()
    app = SimpleNamespace(consumer=consumer, topics=SimpleNamespace(acking_topics={"transactions"}))
    return Health(app, stall_after_s=60, newest_record_ts=lambda topic: None), consumer, clock


def test_idle_partition_without_lag_is_healthy(monkeypatch) -> None:
    health, consumer, clock = make(monkeypatch)
    health.update()
    clock[0] += 600
    health.update()
    assert health.stalled() == []


def test_lagging_partition_that_stops_committing_is_stalled(monkeypatch) -> None:
    health, consumer, clock = make(monkeypatch)
    health.update()
    consumer.end = 500  # new input arrives, nothing gets committed
    clock[0] += 30
    health.update()
    assert health.stalled() == []
    clock[0] += 31
    health.update()
    assert health.stalled() and "transactions[0] lag=490" in health.stalled()[0]
    consumer._committed_offset[TP0] = 200  # progress clears it
    health.update()
    assert health.stalled() == []

"""Liveness, readiness and lag, from Faust's own consumer state.

* ``/healthz`` fails when an assigned partition has lag but its committed
  offset has not moved for ``stall_after_s``: the worker is alive but stuck
  (a poisoned batch, a dead agent), and restarting it is the cure.
* ``/ready`` succeeds once partitions are assigned and tables are recovered.

``Health.update`` runs on a one-second Faust timer and also refreshes the
lag gauges.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from faust.types import TP

from . import metrics


@dataclass
class PartitionState:
    committed: int | None = None
    changed_at: float = field(default_factory=time.monotonic)
    lag: int = 0


class Health:
    def __init__(self, app: Any, stall_after_s: float, newest_record_ts: Callable[[str], float | None]) -> None:
        self.app = app
        self.stall_after_s = stall_after_s
        self.newest_record_ts = newest_record_ts  # topic -> Kafka timestamp (s) of the last batch handled
        self.partitions: dict[TP, PartitionState] = {}

    def _tracked(self) -> set[TP]:
        consumer = self.app.consumer
        acking = self.app.topics.acking_topics
        return {tp for tp in consumer.assignment() if tp.topic in acking}

    def update(self) -> None:
        consumer = self.app.consumer
        now = time.monotonic()
        wall = time.time()
        tracked = self._tracked()
        for gone in set(self.partitions) - tracked:
            del self.partitions[gone]
        lag_by_topic: dict[str, int] = {}
        for tp in tracked:
            state = self.partitions.setdefault(tp, PartitionState())
            committed = consumer._committed_offset.get(tp)
            if committed != state.committed:
                state.committed, state.changed_at = committed, now
            end = consumer.highwater(tp)
            base = committed if committed is not None else consumer._read_offset.get(tp)
            state.lag = max(0, (end or 0) - (base or 0)) if end is not None else 0
            lag_by_topic[tp.topic] = lag_by_topic.get(tp.topic, 0) + state.lag
            metrics.LAG_MESSAGES.labels(tp.topic, str(tp.partition)).set(state.lag)
            metrics.COMMIT_AGE.labels(tp.topic, str(tp.partition)).set(now - state.changed_at)
        for topic, lag in lag_by_topic.items():
            newest = self.newest_record_ts(topic)
            metrics.LAG_SECONDS.labels(topic).set(max(0.0, wall - newest) if lag and newest else 0.0)

    def stalled(self) -> list[str]:
        """Partitions with lag whose offset has not advanced for too long."""
        now = time.monotonic()
        return [
            f"{tp.topic}[{tp.partition}] lag={s.lag} no commit for {now - s.changed_at:.0f}s"
            for tp, s in self.partitions.items()
            if s.lag > 0 and now - s.changed_at > self.stall_after_s
        ]

    def ready(self) -> tuple[bool, str]:
        app = self.app
        if app.rebalancing:
            return False, "rebalancing"
        if not app.consumer.assignment():
            return False, "no partitions assigned yet"
        recovery = app.tables.recovery
        if not recovery.completed.is_set():
            return False, "table state is recovering"
        return True, "ready"

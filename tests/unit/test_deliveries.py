"""Deliveries: a batch completes only once its outputs are acknowledged; broker errors re-send them."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from aiokafka.errors import KafkaTimeoutError

from streams.batching import Deliveries, Output, RecordBatch


class FlakyBroker:
    """The emitter's interface; the first ``failures`` deliveries fail with a broker error."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sends: list[list[bytes]] = []

    async def enqueue(self, outputs, partition):
        self.sends.append([o.value for o in outputs])
        done = asyncio.get_running_loop().create_future()
        if self.failures:
            self.failures -= 1
            done.set_exception(KafkaTimeoutError())
        else:
            done.set_result(None)
        return done


def batch(partition: int = 0) -> RecordBatch:
    return RecordBatch("labels", partition, [SimpleNamespace(offset=7, key=None, value=b"x", timestamp=0, headers=[])])


OUT = [Output("alerts", b"k", b"v")]


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    real_sleep = asyncio.sleep
    monkeypatch.setattr(asyncio, "sleep", lambda s: real_sleep(0))


@pytest.mark.parametrize("failures, retries, sends, completes", [
    (2, 5, 3, True),  # two broker errors: re-sent, then acknowledged, the batch completes
    (10, 2, 3, False),  # never acknowledged: the batch stays incomplete (uncommitted, re-read after a restart)
])
def test_broker_errors_re_send_and_only_acknowledged_outputs_complete_the_batch(
        failures: int, retries: int, sends: int, completes: bool) -> None:
    broker, b, acked = FlakyBroker(failures), batch(), []

    async def run() -> None:
        d = Deliveries(broker, "fraud", retries=retries)
        await d.send(b, OUT, lambda: acked.append(True))
        await d.drain()

    asyncio.run(run())
    assert len(broker.sends) == sends and b.complete is completes and acked == ([True] if completes else [])


def test_settle_bounds_what_is_in_flight() -> None:
    async def run() -> tuple[int, int]:
        d = Deliveries(FlakyBroker(), "fraud", max_inflight=2)
        for p in range(5):
            await d.send(batch(p), OUT)
        before = len(d)
        await d.settle()
        return before, len(d)

    before, after = asyncio.run(run())
    assert before == 5 and after <= 2

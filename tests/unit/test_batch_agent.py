"""BatchAgent: a fetch's batches in one pipeline call, each with its own outputs and completion."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import faust

from streams.batching import Output
from streams.batching.message import RecordBatch
from streams.pipeline import BatchAgent, Group, Pipeline, _arrives
from streams.records import LIMITS, InvalidRecord
from streams.settings import Settings


def parse_number(raw: bytes | None, limits) -> SimpleNamespace:
    if not raw or not raw.isdigit():
        raise InvalidRecord("malformed_json", f"not a number: {raw!r}")
    return SimpleNamespace(v=int(raw), ts=0.0)


class Doubler(Pipeline):
    """Outputs twice each input, keyed by its partition; remembers how it was called."""

    name = "fraud"
    parse = staticmethod(parse_number)

    def __init__(self, fail: bool = False) -> None:
        self.topics = Settings().topics.pipeline("fraud")
        self.calls: list[list[Group]] = []
        self.fail = fail

    def process(self, events, now):
        raise AssertionError("the agent calls process_batches")

    def process_batches(self, groups, now):
        self.calls.append(list(groups))
        if self.fail:
            raise ValueError("broken model")
        return [[Output("out", str(g.partition).encode(), str(2 * e.v).encode()) for e in g.events] for g in groups]


class Recorder:
    """The emitter's interface: records what goes to which partition; the broker acks at once."""

    def __init__(self) -> None:
        self.sent: dict[int, list[bytes]] = {}

    async def enqueue(self, outputs, partition):
        self.sent.setdefault(partition, []).extend(o.value for o in outputs)
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def records(*values: bytes | None, first: int = 0) -> list[SimpleNamespace]:
    return [SimpleNamespace(offset=first + i, key=None, value=v, timestamp=1_000, headers=[])
            for i, v in enumerate(values)]


def agent(pipeline: Pipeline) -> BatchAgent:
    app = faust.App("unit-agent", broker="memory://", web_enabled=False)
    app.consumer_generation_id = 3
    a = BatchAgent(app, pipeline, LIMITS, Settings().topics)
    a.deliveries.emitter = Recorder()
    return a


def test_batches_of_one_fetch_share_a_call_and_keep_their_own_outputs() -> None:
    pipeline = Doubler()
    a = agent(pipeline)
    b0 = RecordBatch("t", 0, records(b"1", b"2"), follow=2, generation_id=3)
    b1 = RecordBatch("t", 1, records(b"x", b"5", first=7), follow=1, generation_id=3)
    stale = RecordBatch("t", 2, records(b"9"), follow=0, generation_id=2)  # fetched before a rebalance

    async def run() -> None:
        await a.handle_group([b0, b1, stale])
        await a.deliveries.drain()

    asyncio.run(run())
    assert [[([e.v for e in g.events], g.offsets, g.partition) for g in call] for call in pipeline.calls] == [
        [([1, 2], [0, 1], 0), ([5], [8], 1)]]
    sent = a.deliveries.emitter.sent
    assert sent[0] == [b"2", b"4"]
    assert sent[1][0] == b"10" and len(sent[1]) == 2  # its score, then the dead letter of b"x"
    assert 2 not in sent, "a stale batch is neither processed nor emitted"
    # ...but released: Faust's next rebalance waits for every message it delivered to be acknowledged,
    # and the transport commits no offset of a stale generation (test_batch_acks).
    assert b0.complete and b1.complete and stale.complete


def test_a_failing_call_dead_letters_every_batch_it_took() -> None:
    a = agent(Doubler(fail=True))
    b0 = RecordBatch("t", 0, records(b"1", b"2"), follow=1)
    b1 = RecordBatch("t", 1, records(b"3"))

    async def run() -> None:
        await a.handle_group([b0, b1])
        await a.deliveries.drain()

    asyncio.run(run())
    assert {p: len(v) for p, v in a.deliveries.emitter.sent.items()} == {0: 2, 1: 1}
    assert all(b'"processing_error"' in v for v in a.deliveries.emitter.sent[0] + a.deliveries.emitter.sent[1])
    assert b0.complete and b1.complete


def test_waiting_for_an_announced_batch_is_bounded() -> None:
    async def run() -> tuple[bool, bool]:
        queue: asyncio.Queue = asyncio.Queue()
        asyncio.get_running_loop().call_soon(queue.put_nowait, "batch")
        arrived = await _arrives(queue)
        queue.get_nowait()
        never = await _arrives(queue)
        return arrived, never

    assert asyncio.run(run()) == (True, False)

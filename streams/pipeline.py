"""The contract every pipeline fulfils, and the batch agent that runs it.

A pipeline says how to parse one input and how to turn a *list* of valid
inputs into outputs (one batched model call). :class:`BatchAgent` does the
rest, identically for every pipeline: bulk decode with per-record dead
letters, emit, and metrics. Outputs are handed to the producer in order; the
broker's acknowledgement is awaited in the background (up to
``max_inflight_batches`` batches), and only then is the batch marked
complete, which is what lets its offsets be committed.

One fetch brings a batch per partition. The agent takes those that arrive
together (up to ``max_merged_batches``) and hands them to the pipeline in one
call (:meth:`Pipeline.process_batches`): a pipeline with a fixed cost per call
pays it once per fetch rather than once per partition. Each batch keeps its
own outputs, partition and commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from typing import Any, Callable, NamedTuple, Sequence

import faust

from . import dead_letters, metrics
from .batching import BatchTopic, Deliveries, Emitter, Output, RecordBatch
from .records import InvalidRecord, Limits, dumps
from .topics import PipelineTopics, Topics

log = logging.getLogger(__name__)


class Group(NamedTuple):
    """One partition's valid inputs of a batch, with their offsets."""

    events: Sequence[Any]
    offsets: Sequence[int]
    partition: int


FOLLOWER_SPINS = 50  # event-loop turns an agent waits for a batch its fetch announced


class Pipeline(ABC):
    """One application: input topic in, scored outputs out."""

    name: str
    topics: PipelineTopics  # set by the constructor (names carry the deployment's prefix)
    parse: Callable[[bytes | None, Limits], Any]

    @abstractmethod
    def process(self, events: Sequence[Any], now: float) -> list[Output]:
        """Score ``events`` (valid inputs, in partition order) in one go.

        Returns every output record: one per event on the output topic, plus
        any alerts. Called once per micro-batch; keep per-event work small.
        """

    def process_batch(self, events: Sequence[Any], offsets: Sequence[int], partition: int,
                      now: float) -> list[Output]:
        """:meth:`process` with each event's input offset and the batch's partition.

        A pipeline whose state lives in a table overrides this to recognise
        inputs it already applied before a crash (at-least-once re-delivery).
        """
        return self.process(events, now)

    def process_batches(self, groups: Sequence[Group], now: float) -> list[list[Output]]:
        """:meth:`process_batch` for several partitions' batches at once: one output list per group.

        The default handles them one by one; a pipeline with a large fixed cost per call
        overrides it to score them together.
        """
        return [self.process_batch(events, offsets, partition, now) for events, offsets, partition in groups]

    def setup(self, app: faust.App) -> None:
        """Register tables, timers or extra agents (optional)."""


class BatchAgent:
    """Runs a :class:`Pipeline` over micro-batches inside a Faust agent."""

    def __init__(self, app: faust.App, pipeline: Pipeline, limits: Limits, topics: Topics, *,
                 max_inflight_batches: int = 4, max_merged_batches: int = 8, emit_retries: int = 5) -> None:
        self.app = app
        self.pipeline = pipeline
        self.limits = limits
        self.deliveries = Deliveries(Emitter(app), pipeline.name, max_inflight=max_inflight_batches,
                                     retries=emit_retries)
        self.max_merged = max_merged_batches
        self.dead_letter_topic = topics.dead_letters
        self.last_record_ts: float | None = None  # Kafka timestamp (s) of the newest record handled
        name = pipeline.name
        self._consumed = metrics.EVENTS_CONSUMED.labels(name)
        self._processed = metrics.EVENTS_PROCESSED.labels(name)
        self._failed = metrics.EVENTS_FAILED.labels(name)
        self._batch_size = metrics.BATCH_SIZE.labels(name)
        self._batch_duration = metrics.BATCH_DURATION.labels(name)
        self._batches_per_call = metrics.BATCHES_PER_CALL.labels(name)
        self._latency = metrics.LATENCY.labels(name)
        self.topic = BatchTopic(app, topics=[pipeline.topics.input], acks=True)

    def register(self) -> None:
        """Create the Faust agent (one per pipeline, concurrency 1 keeps order)."""
        self.pipeline.setup(self.app)

        async def run(stream: faust.StreamT) -> None:
            queue = stream.channel.queue
            group: list[RecordBatch] = []
            async for batch in stream:
                group.append(batch)
                if batch.follow and len(group) < self.max_merged and await _arrives(queue):
                    continue  # the fetch's next batch is queued: take it into this call
                await self.handle_group(group)
                group = []

        run.__name__ = f"{self.pipeline.name}_batches"
        run.__qualname__ = run.__name__
        self.app.agent(self.topic, name=f"lepton.{self.pipeline.name}")(run)

    async def handle(self, batch: RecordBatch) -> None:
        """Process one batch; returns once its outputs are handed to the producer."""
        await self.handle_group([batch])

    async def handle_group(self, batches: list[RecordBatch]) -> None:
        """Process batches of one fetch in one pipeline call; each keeps its outputs and commit.

        A batch fetched before a rebalance (an older consumer generation) is dropped: its
        partition may be another worker's now, and its offsets were never acknowledged. It is
        still marked complete, which commits nothing (the transport ignores a stale
        generation's offsets) but releases Faust's hold on its message: a message never
        acknowledged would make the next rebalance wait for it (``wait_empty``) forever.
        """
        started = time.perf_counter()
        pipeline = self.pipeline
        generation = getattr(self.app, "consumer_generation_id", None)
        if generation is not None:
            current = [b for b in batches if b.generation_id in (None, generation)]
            for batch in batches:
                if batch.generation_id not in (None, generation):
                    batch.mark_complete()
            batches = current
            if not batches:
                return
        parse, limits = pipeline.parse, self.limits
        groups: list[Group] = []
        letters: list[list[Output]] = []
        for batch in batches:
            valid: list[Any] = []
            offsets: list[int] = []
            bad: list[Output] = []
            for record in batch.records:
                try:
                    valid.append(parse(record.value, limits))
                    offsets.append(record.offset)
                except InvalidRecord as exc:
                    bad.append(self._dead_letter(batch, record, exc.reason, "InvalidRecord", str(exc)))
            groups.append(Group(valid, offsets, batch.partition))
            letters.append(bad)
        scored = [i for i, g in enumerate(groups) if g.events]
        results: list[list[Output]] = [[] for _ in batches]
        now = time.time()
        try:
            if scored:
                for i, outs in zip(scored, pipeline.process_batches([groups[i] for i in scored], now)):
                    results[i] = outs
        except Exception as exc:  # a bug or a broken model must not stop the stream
            log.exception("%s: processing %d events (%d batches) failed; dead-lettering them", pipeline.name,
                          sum(len(groups[i].events) for i in scored), len(scored))
            for i in scored:
                batch = batches[i]
                results[i] = []
                letters[i] += [self._dead_letter(batch, r, "processing_error", type(exc).__name__, str(exc))
                              for r in batch.records]
                groups[i] = Group([], [], batch.partition)
        for batch, group, outputs, bad in zip(batches, groups, results, letters):
            outputs += bad
            if outputs:
                await self.deliveries.send(batch, outputs, self._latency_of(group.events))
            else:
                batch.mark_complete()
            # Metrics, once per batch.
            n = len(batch.records)
            self._consumed.inc(n)
            self._processed.inc(len(group.events))
            if bad:
                self._failed.inc(len(bad))
            self._batch_size.observe(n)
            last_ts = batch.records[-1].timestamp
            if last_ts is not None:
                self.last_record_ts = last_ts / 1000.0
        await self.deliveries.settle()
        self._batches_per_call.observe(len(batches))
        self._batch_duration.observe(time.perf_counter() - started)

    def _dead_letter(self, batch: RecordBatch, record: Any, reason: str, error_class: str, message: str) -> Output:
        metrics.DEAD_LETTERS.labels(self.pipeline.name, reason).inc()
        letter = dead_letters.build(batch.topic, batch.partition, record, self.pipeline.name, reason, error_class, message)
        return Output(self.dead_letter_topic, dead_letters.key_of(letter), dumps(letter))

    def _latency_of(self, valid: list[Any]) -> Callable[[], None] | None:
        """What to observe once a batch's outputs are acknowledged: end-to-end latency of its valid inputs."""
        if not valid:
            return None

        def observe() -> None:
            done = time.time()
            latency = self._latency
            for e in valid[:: max(1, len(valid) // 64)]:  # a sample bounds the cost
                latency.observe(max(0.0, done - e.ts))

        return observe


async def _arrives(queue: Any) -> bool:
    """True once ``queue`` holds an item, waiting at most :data:`FOLLOWER_SPINS` event-loop turns.

    The consumer puts a fetch's batches into the stream one by one, a few loop turns
    apart; a batch announced by ``follow`` but filtered out on the way never comes, so
    the wait is bounded.
    """
    for _ in range(FOLLOWER_SPINS):
        if not queue.empty():
            return True
        await asyncio.sleep(0)
    return not queue.empty()

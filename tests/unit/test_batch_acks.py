"""Batch acknowledgement feeds Faust's offset tracking, and never commits over a hole.

These drive the real BatchConsumer's bookkeeping (no broker needed: nothing
is fetched); the integration tests prove the same against the real broker.
"""

from __future__ import annotations

from types import SimpleNamespace

import faust
import pytest
from faust.types import TP

from streams.batching import BatchStream, BatchTopic, install
from streams.batching.message import BatchMessage
from streams.settings import Settings

TOPIC = "transactions"
TP0 = TP(TOPIC, 0)


@pytest.fixture
def consumer():
    install()
    app = faust.App("unit-acks", broker="lepton://127.0.0.1:1", Stream=BatchStream, web_enabled=False)
    app.lepton_settings = Settings()
    BatchTopic(app, topics=[TOPIC])
    c = app.consumer
    c.app.topics._acking_topics.add(TOPIC)
    return c


def batch(consumer, first: int, n: int) -> BatchMessage:
    records = [SimpleNamespace(offset=o, timestamp=0, timestamp_type=0, value=b"x")
               for o in range(first, first + n)]
    return BatchMessage(TP0, records, consumer.app.consumer_generation_id)


def test_a_complete_batch_acks_every_offset(consumer) -> None:
    m = batch(consumer, 0, 100)
    m.batch.complete = True
    assert consumer.ack_batch(m)
    assert consumer._new_offset(TP0) == 100


def test_an_incomplete_batch_is_never_acked(consumer) -> None:
    m = batch(consumer, 0, 100)
    assert not consumer.ack_batch(m)  # e.g. Faust acking on a crash: outputs were not confirmed
    assert consumer._new_offset(TP0) is None


def test_no_commit_over_an_unfinished_batch(consumer) -> None:
    consumer._first_delivered[TP0] = 0
    unfinished, later = batch(consumer, 0, 1), batch(consumer, 1, 50)  # a one-record batch left a hole
    later.batch.complete = True
    consumer.ack_batch(later)
    assert consumer._new_offset(TP0) is None, "Faust alone would commit 51 here and lose offset 0"
    unfinished.batch.complete = True
    consumer.ack_batch(unfinished)
    assert consumer._new_offset(TP0) == 51


def test_acks_from_a_previous_generation_are_ignored(consumer) -> None:
    m = batch(consumer, 0, 10)
    m.batch.complete = True
    m.generation_id = -1  # the partition was re-assigned since: it will be re-read
    consumer.ack_batch(m)
    assert consumer._new_offset(TP0) is None


def test_a_stale_batch_marked_complete_leaves_the_pending_set_and_commits_nothing(consumer) -> None:
    """The agent drops a batch of a previous generation but marks it complete: Faust's ack (deferred until
    then) releases the message, which a rebalance's ``wait_empty`` would otherwise wait for forever."""
    m = batch(consumer, 0, 10)
    m.generation_id = -1  # fetched before a rebalance
    consumer.track_message(m)  # as the conductor does before delivering it to the stream
    assert not consumer.ack_batch(m)  # Faust acks as the agent moves on: deferred, the batch is not complete
    assert m in consumer._unacked_messages
    m.batch.mark_complete()
    assert m not in consumer._unacked_messages and m.acked
    assert consumer._new_offset(TP0) is None


def test_only_changelogs_are_fetched_while_rebalancing(consumer) -> None:
    """A stream record fetched before Faust's last resume of a rebalance would be cleared from its
    queue unacked, and the partition would never commit again (the SIGKILL-restart stall)."""
    import asyncio

    app = consumer.app
    app.Table("cards", partitions=1)
    changelog = TP(app.tables["cards"].changelog_topic.get_topic_name(), 0)
    asked: list[set | None] = []

    async def getmany(active_partitions, timeout):  # the aiokafka thread's fetch: record what is asked
        asked.append(set(active_partitions))
        return {}

    consumer._thread = SimpleNamespace(getmany=getmany)
    both = {TP0, changelog}
    app.rebalancing = True
    asyncio.run(consumer._getmany(active_partitions=both, timeout=0))
    asyncio.run(consumer._getmany(active_partitions={TP0}, timeout=0))  # nothing to fetch: no call
    app.rebalancing = False
    asyncio.run(consumer._getmany(active_partitions=both, timeout=0))
    assert asked == [{changelog}, both]


def test_a_fetch_asks_for_the_partitions_active_when_it_started(consumer) -> None:
    """Faust's active set is live: a fetch blocked in a reassignment saw the partitions assigned
    meanwhile and handed out their records while the flow was stopped (dropped, never re-read)."""
    import asyncio

    asked: list[set] = []
    live = {TP0}

    async def getmany(active_partitions, timeout):
        live.add(TP(TOPIC, 1))  # the rebalance's assignment lands while the fetch waits
        asked.append(set(active_partitions))
        return {}

    consumer._thread = SimpleNamespace(getmany=getmany)
    consumer.app.rebalancing = False
    asyncio.run(consumer._getmany(active_partitions=live, timeout=0))
    assert asked == [{TP0}]


def test_partitions_without_a_commit_seek_to_the_beginning(consumer) -> None:
    """aiokafka's seek to the committed offsets leaves a partition with none where its last fetch
    left it: records fetched and dropped in a rebalance were never read again (the partition stalled
    with nothing committed). Changelog partitions keep the positions table recovery gave them."""
    import asyncio

    app = consumer.app
    app.Table("cards", partitions=1)
    changelog = TP(app.tables["cards"].changelog_topic.get_topic_name(), 0)
    committed = {TP0: 120, TP(TOPIC, 1): None, TP(TOPIC, 2): 0, changelog: None}
    seeks: list[tuple] = []

    async def seek_to_committed():
        return dict(committed)

    async def seek_to_beginning(*partitions):
        seeks.append(partitions)

    consumer._thread = SimpleNamespace(seek_to_committed=seek_to_committed, seek_to_beginning=seek_to_beginning)
    assert asyncio.run(consumer.seek_to_committed()) == committed
    assert seeks == [(TP(TOPIC, 1), TP(TOPIC, 2))]

    asyncio.run(consumer.perform_seek())  # Faust's caller: read offsets follow
    assert consumer._read_offset[TP(TOPIC, 1)] is None and consumer._read_offset[TP0] == 120


@pytest.mark.parametrize("seed", range(5))
def test_commit_offset_equals_fausts_without_gaps(consumer, seed: int) -> None:
    import random

    from faust.transport.consumer import Consumer

    rng = random.Random(seed)
    consumer._committed_offset[TP0] = 100  # (Kafka's committed offset: the next to read)
    offsets = list(range(100, 400))
    rng.shuffle(offsets)
    acked = list(dict.fromkeys(offsets[: rng.randrange(1, 300)] + [100] * (seed % 2)))  # (distinct, as acks are)
    ours, fausts = list(acked), list(acked)
    consumer._acked[TP0], consumer._acked_index[TP0] = ours, set(ours)
    got = consumer._new_offset(TP0)
    if 100 not in acked:  # a hole at the head: nothing (Faust would step over a hole of one offset)
        assert got is None
        return
    left = (consumer._acked[TP0], consumer._acked_index[TP0])
    consumer._acked[TP0], consumer._acked_index[TP0] = fausts, set(fausts)
    assert got == Consumer._new_offset(consumer, TP0) and got > 100
    assert left == (consumer._acked[TP0], consumer._acked_index[TP0]), "the same offsets left to commit"


def test_a_batch_topic_cuts_its_batches_at_its_own_max_batch(consumer) -> None:
    """A topic given ``max_batch`` (the fraud labels) is cut at it; the others at the setting."""
    import asyncio

    app = consumer.app
    app.lepton_settings = Settings(max_batch=300)
    labels = BatchTopic(app, topics=["labels"], max_batch=1000)
    assert labels.clone().max_batch == 1000  # (Faust clones topics: the size goes along)
    app.topics.add(BatchTopic(app, topics=[TOPIC]))  # (subscribed, as an agent does)
    app.topics.add(labels)
    tp_labels = TP("labels", 0)
    fetched = {TP0: [SimpleNamespace(offset=o, timestamp=0, timestamp_type=0, value=b"x") for o in range(700)],
               tp_labels: [SimpleNamespace(offset=o, timestamp=0, timestamp_type=0, value=b"y") for o in range(2500)]}

    async def wait_next_records(timeout):
        return fetched, None

    consumer._wait_next_records = wait_next_records
    consumer.highwater = lambda tp: None

    async def collect():
        return [(tp, [r.offset for r in message.value.records], message.value.follow)
                async for tp, message in consumer.getmany(0)]

    got = asyncio.run(collect())
    assert [(tp, len(offsets)) for tp, offsets, _ in got] == [
        (TP0, 300), (TP0, 300), (TP0, 100), (tp_labels, 1000), (tp_labels, 1000), (tp_labels, 500)]
    assert [o for tp, offsets, _ in got if tp == tp_labels for o in offsets] == list(range(2500))
    assert [follow for _, _, follow in got] == [2, 1, 0, 2, 1, 0]  # batches of the same topic still to come

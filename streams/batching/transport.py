"""The ``lepton://`` transport: Faust's aiokafka transport with batch delivery.

How a batch travels, and why offsets stay correct
-------------------------------------------------
1. ``BatchConsumer.getmany`` fetches records exactly as Faust does. For a
   partition of a *batch topic* (a Kafka topic subscribed through a
   :class:`~streams.batching.topic.BatchTopic`) it yields one
   :class:`~streams.batching.message.BatchMessage` per run of at most
   ``max_batch`` records (the topic's own, else the setting) instead of one message per record. Other topics
   (table changelogs, ordinary agents) keep Faust's per-message path.
2. Faust's conductor routes the item by topic-partition like any message; the
   batch topic's ``decode`` wraps it in an event; the agent's stream yields it.
3. When the agent asks for its next value, Faust acks the previous event; the
   message's final ack calls :meth:`BatchConsumer.ack_batch`, which marks every
   offset of the batch as acknowledged in Faust's own ``_acked`` structures.
   Faust's commit loop then commits the highest *contiguous* acknowledged
   offset, exactly as it does for single messages. A batch whose processing
   never finished leaves a hole, so nothing after it is committed.
4. The agent body awaits the broker's acknowledgement of its outputs before it
   returns (see :mod:`.emit`), so an offset is committed only after the outputs
   of its batch exist: at-least-once.

Rebalances: while one is in progress (table recovery included) only
changelog records are fetched (see :meth:`BatchConsumer._getmany`): a stream
record delivered before Faust's final resume would be cleared from its queue
and lost to the commit. Records fetched but dropped around a rebalance are
read again because the rebalance ends with a seek of every stream partition:
to its committed offset, or to the beginning when it has none
(:meth:`BatchConsumer.seek_to_committed`). Faust clears stream queues, which
may cancel the conductor's blocked ``put`` of a batch. That cancellation must
not escape the fetch loop (Faust's fetcher would crash the worker), so it is
treated as a dropped batch: it was never acked, and the seek reads it again.
Acks from a previous consumer generation are ignored for the same reason.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from itertools import filterfalse
from time import monotonic
from typing import Any, AsyncIterator, ClassVar, Iterable, Mapping, Optional, Set, Tuple, Type, cast

import aiokafka
from faust.transport import drivers
from faust.transport.consumer import CONSUMER_FETCHING, ack_lock
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from mode.utils.futures import notify

from . import fetch
from .fetch import LeanTopics
from .message import BatchMessage
from .topic import BatchTopic

SCHEME = "lepton"


class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Creates the aiokafka consumer with a bounded fetch wait.

    Faust hard-codes a 1,500 ms fetch wait, and some brokers (Tansu) answer a
    fetch only when the wait expires: that wait is the floor of end-to-end
    latency, so it is taken from ``max_wait_ms`` instead.
    """

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = int(self.app.lepton_settings.max_wait_ms)
        # Batch topics and bulk-restored changelogs: aiokafka's records as read (see .fetch).
        consumer._key_deserializer = LeanTopics(self.consumer._lean_topic_names)
        return consumer

    async def _highwaters(self, partitions: Any) -> Mapping[TP, int]:
        """End offsets as Fetch reports them (table recovery reads up to these).

        Tansu's ListOffsets(LATEST) is the last record batch's base offset + 1
        (1 for an *empty* partition), so Faust's table recovery would wait
        forever for a record that does not exist. The true high watermark comes
        from a one-batch fetch (:func:`connectors.admin._fetch_high_watermarks`;
        on Apache Kafka the two agree).
        """
        from kafka import TopicPartition
        from kafka.errors import KafkaError

        from connectors.admin import _fetch_high_watermarks

        listed = await super()._highwaters(partitions)
        if not listed:
            return listed
        bootstrap = ",".join(f"{url.host}:{url.port}" for url in self.app.conf.broker)
        asked = {TopicPartition(tp.topic, tp.partition): off for tp, off in listed.items()}
        try:
            true = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(
                None, _fetch_high_watermarks, bootstrap, self.app.lepton_settings, asked), timeout=20.0)
        except (asyncio.TimeoutError, OSError, KafkaError) as exc:  # recover what ListOffsets says rather than hang
            self.log.warning("end offsets from a fetch failed (%r): using ListOffsets", exc)
            return listed
        return {tp: true[TopicPartition(tp.topic, tp.partition)] for tp in listed}


class BatchConsumer(faust_aiokafka.Consumer):
    """Consumer that yields whole batches for batch topics."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # First offset delivered per partition while nothing is committed
        # yet: the base a commit must start from.
        self._first_delivered: dict[TP, int] = {}

    def _new_consumer_thread(self) -> BatchConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    # -- which topics are batched ---------------------------------------------
    def _batch_topics(self) -> dict[str, int]:
        """Batch topics and the most records in one of their batches (the topic's ``max_batch``, else the
        app's)."""
        default = int(self.app.lepton_settings.max_batch)
        sizes: dict[str, int] = {}
        for channel in self.app.topics:
            if isinstance(channel, BatchTopic):
                for name in channel.topics:
                    sizes[name] = channel.max_batch or default
        return sizes

    def _lean_topic_names(self) -> Set[str]:
        """Topics whose records this consumer hands over in bulk: batch topics and bulk tables' changelogs."""
        changelogs = {name for name, table in self.app.tables._changelogs.items()
                      if getattr(table, "lepton_bulk", None) is not None}
        return set(self._batch_topics()) | changelogs

    # -- fetching ---------------------------------------------------------------
    async def _getmany(self, active_partitions: Optional[Set[TP]], timeout: float) -> Any:
        """Faust's fetch, taking only changelog records while a rebalance is in progress.

        Faust resumes the stream partitions (and seeks them to the committed
        offsets) *before* its last ``flow_control.resume()`` of a rebalance,
        which empties every stream queue. When table recovery has already
        resumed the flow, the fetcher delivers stream records in that window:
        they are cleared from the queue, never acked, never fetched again
        (the read offset has passed them), and nothing after them is ever
        committed. Left in aiokafka's buffer instead, they are delivered once
        the rebalance has ended (``app.rebalancing`` turns false after that
        last resume), from the position of the final seek.
        """
        if active_partitions is not None:
            # A copy: Faust's set is live, and a fetch blocked in a reassignment would
            # otherwise hand out records of partitions assigned while it waited.
            active_partitions = set(active_partitions)
            if self.app.rebalancing:
                active_partitions = {tp for tp in active_partitions if self._is_changelog_tp(tp)}
                if not active_partitions:  # aiokafka reads an empty set as "every partition"
                    await asyncio.sleep(0.05)
                    return {}
        return await super()._getmany(active_partitions, timeout)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Seek to the committed offsets, and stream partitions that have none to the beginning.

        aiokafka seeks only partitions with a committed offset; one without keeps
        its read position. Records fetched and then dropped (a fetch handed out as
        a rebalance starts, see :meth:`getmany`) were then never read again: the
        partition stalled with nothing committed until a restart. The seek to the
        beginning is what ``consumer_auto_offset_reset="earliest"`` means for such
        a partition. Changelog partitions keep the positions recovery gave them.
        """
        committed = await super().seek_to_committed()
        if self.app.conf.consumer_auto_offset_reset == "earliest":
            fresh = [tp for tp, offset in committed.items() if not offset and not self._is_changelog_tp(tp)]
            if fresh:
                await self._thread.seek_to_beginning(*fresh)
        return committed

    async def getmany(self, timeout: float) -> AsyncIterator[Tuple[TP, Message]]:
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            try:
                await self.perform_seek()
            except Exception as exc:  # pragma: no cover - same as Faust
                self.log.warning("exception performing seek when flow not active %r", exc)
            return
        batch_topics = self._batch_topics()
        changelogs = self.app.tables._changelogs
        to_message = self._to_message
        # Batches of each batch topic this fetch delivers: each batch says how many follow it, so
        # the agent can take a fetch's partitions in one call (an upper bound: a partition the
        # checks below skip is counted; the agent waits for a follower only briefly).
        left: dict[str, int] = {}
        for tp, tp_records in records.items():
            if tp.topic in batch_topics:
                left[tp.topic] = left.get(tp.topic, 0) + -(-len(tp_records) // batch_topics[tp.topic])
        for tp, tp_records in records.items():
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                break
            if not (
                active_partitions is None
                or tp in active_partitions
                or tp in self._buffered_partitions
            ):
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            if tp.topic in batch_topics:
                max_batch = batch_topics[tp.topic]
                for start in range(0, len(tp_records), max_batch):
                    left[tp.topic] -= 1
                    yield tp, BatchMessage(tp, tp_records[start : start + max_batch], generation_id, left[tp.topic])
            elif (bulk := getattr(changelogs.get(tp.topic), "lepton_bulk", None)) is not None:
                self._restore(bulk, tp, tp_records)
            else:
                for record in tp_records:
                    yield tp, to_message(tp, record)

    def _restore(self, table: Any, tp: TP, records: list[Any]) -> None:
        """Apply a fetched run of a bulk table's changelog records, with Faust's recovery bookkeeping.

        Faust's recovery takes changelog records one message at a time (the
        conductor, a queue, a per-event callback): about 1,000 records/s on
        this machine, so a restart spent most of its time there. A
        :class:`~streams.state.table.BatchTable` takes the run at once, and
        the offsets Faust's recovery waits on are advanced as its own loop
        would (active: up to the end offsets read at the start of recovery;
        standby: kept up to date after it). Records of a partition that is
        neither, or of an active one after its recovery (this worker's own
        writes), are dropped.
        """
        recovery = self.app.tables.recovery
        if tp in recovery.active_tps:
            if not recovery.in_recovery:
                return  # our own writes, read back after recovery: already in the store
            offsets, received = recovery.active_offsets, recovery._active_events_received_at
        elif tp in recovery.standby_tps:
            offsets, received = recovery.standby_offsets, recovery._standby_events_received_at
        else:
            return
        seen = offsets.get(tp)
        if seen is not None:
            records = [r for r in records if r.offset > seen]
        if not records:
            return
        table.restore(tp.partition, records)
        offsets[tp] = records[-1].offset
        received[tp] = recovery._last_flush_at = monotonic()
        if recovery.in_recovery and not recovery.need_recovery():
            recovery.signal_recovery_end.set()  # Faust's loop would notice only at its next 5 s timeout
        tables = self.app.tables
        if tp in recovery.standby_tps and not tables.standbys_ready and not recovery.standby_remaining_total():
            tables.on_standbys_ready()

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - exercised by integration tests
        """Faust's fetch loop, aware of batches.

        Differences from ``faust.transport.consumer.Consumer._drain_messages``:
        a batch's read offset is its last record's (no false "gap" is recorded
        for the offsets inside it), and a delivery cancelled by a rebalance is
        a dropped batch rather than a crash.
        """
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        me = asyncio.current_task()
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                await self.sleep(0)
                if self.should_stop:
                    break
                async for tp, message in getmany(timeout=1.0):
                    await asyncio.sleep(0)
                    is_batch = isinstance(message, BatchMessage)
                    first = message.batch.first_offset if is_batch else message.offset
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is not None and offset < r_offset:
                        continue  # already delivered (re-fetched after a seek)
                    if is_batch and self._committed_offset[tp] is None:
                        self._first_delivered.setdefault(tp, first)
                    if r_offset and first - r_offset > 1 and acks_enabled_for(message.topic):
                        # A real gap (compaction, transaction markers).
                        await self._add_gap(tp, r_offset + 1, first - 1)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    try:
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                    except asyncio.CancelledError:
                        if me is not None and me.cancelling():
                            raise
                        # The stream queue was cleared by a rebalance: the
                        # batch was never acked and will be fetched again.
                        self.log.info("Delivery to %r cancelled by a rebalance; dropped", tp)
                        continue
                    set_read_offset(tp, offset)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise

    async def on_partitions_revoked(self, revoked: Set[TP]) -> None:
        for tp in revoked:
            self._first_delivered.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    def _new_offset(self, tp: TP) -> Optional[int]:
        """Faust's commit offset, refusing to commit over a hole at the head.

        Faust tolerates one missing offset just above the committed one (it
        stands for a compacted record when a gap is known). Without a known
        gap, a missing head means an unfinished batch: commit nothing yet.
        """
        acked = self._acked[tp]
        if not acked or self._gap[tp]:
            return super()._new_offset(tp)
        base = self._committed_offset[tp]
        if base is None:
            base = self._first_delivered.get(tp)
        if base is not None and min(acked) > base:
            return None
        # Faust's answer without a gap (the first run of consecutive acked offsets is committed and
        # dropped), found by bisection rather than a Python call per offset: acked offsets are
        # distinct, so once sorted, ``acked[i] - i`` grows, and equals ``acked[0]`` along the run.
        acked.sort()
        run = bisect_right(range(len(acked)), acked[0], key=lambda i: acked[i] - i)
        done = acked[:run]
        del acked[:run]
        self._acked_index[tp].difference_update(done)
        return done[-1] + 1

    # -- acknowledging ------------------------------------------------------------
    def ack_batch(self, message: BatchMessage) -> bool:
        """Acknowledge every offset of a batch in Faust's offset tracking.

        Called when Faust acks the batch's event. If the batch's outputs are
        not confirmed yet, the ack is deferred until they are; if they never
        are (the process dies, delivery fails), the offsets are never marked
        and Faust commits nothing past them.
        """
        if not message.batch.complete:
            message.batch._on_complete = lambda: self._ack_offsets(message)
            return False
        return self._ack_offsets(message)

    def _ack_offsets(self, message: BatchMessage) -> bool:
        with ack_lock:
            if message.acked:
                return False
            message.acked = True
            self._unacked_messages.discard(message)
            if message.generation_id != self.app.consumer_generation_id:
                return False  # stale: the partition was re-assigned and re-read
            tp = message.tp
            if not self.app.topics.acks_enabled_for(message.topic):
                return False
            committed = self._committed_offset[tp]
            first = message.batch.first_offset
            if committed is not None:
                first = max(first, committed)
            index = self._acked_index[tp]
            new = list(filterfalse(index.__contains__, range(first, message.offset + 1)))
            if new:
                index.update(new)
                self._acked[tp].extend(new)
                self._n_acked += len(new)
            notify(self._waiting_for_ack)
            return True


class BatchTransport(faust_aiokafka.Transport):
    """aiokafka transport whose consumer batches :class:`BatchTopic` topics."""

    Consumer: ClassVar[Type[Any]] = BatchConsumer


def install() -> None:
    """Register the ``lepton://`` URL scheme with Faust's transport registry (and aiokafka's lean records)."""
    drivers.TRANSPORTS.aliases[SCHEME] = f"{__name__}:BatchTransport"
    fetch.install()

"""Fraud pipeline: transactions in, a fraud probability for each out; labels in, learning.

``transactions`` → ``fraud-scores`` (keyed by transaction id, so a
re-delivered input overwrites rather than duplicates), an alert on ``alerts``
(keyed by id, with the features that drove the score) for every score at or
above the model's threshold, and drift alerts.

State: three tables. With ``fraud_state_tables`` they are Faust tables written in bulk
through :class:`~streams.state.table.BatchTable` (their changelog records leave with
the batch's outputs, so a state change is acknowledged before the input offset that
caused it is committed, and recovery rebuilds them); otherwise the same API in
process (:class:`~streams.state.table.MemoryTable`):

* ``fraud-cards``: card → :class:`~models.fraud.features.FeatureEngine` card
  state. Transactions are keyed by card, so a card's state lives in one
  partition. One reserved key per partition (``\\x00applied:<p>``) holds the
  last input offset applied to the card states: a batch re-delivered after a
  crash is scored again but never counted twice in the card windows.
* ``fraud-scored``: transaction id → the record logged at scoring time
  (:mod:`models.fraud.logged`), joined when its label arrives, deleted then
  or after ``fraud_log_retention_days`` of event time.
* ``fraud-terminals``: ``terminal\\x1f<partition>`` → the terminal's label state
  *as seen by that partition's labels*. Labels are keyed by card (like their
  transaction), so a terminal's labels arrive on every partition; each
  partition writes only its own sub-key (one writer per key: no lost
  updates), and scoring merges a terminal's sub-keys
  (:func:`~models.fraud.features.merge_terminal_states`). See README, "Fraud".

Labels (``fraud-labels``, ``{id, is_fraud}``, keyed by card) are read in
batches by a second agent: joined to the logged record, applied to card and
terminal state, learnt by the River challenger, scored into the prequential
metrics of both models, and fed to the error drift detector.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import time
from collections import deque
from collections.abc import Iterator, Mapping, MutableMapping
from itertools import compress, repeat
from operator import is_, is_not
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import orjson

from models.fraud import logged
from models.fraud.drift import DebouncedDrift
from models.fraud.explain import explain
from models.fraud.features import DAY, FEATURES, FeatureEngine, TerminalCache, TerminalParts, time_scale
from models.fraud.online import OnlineFraudModel, Prequential

from . import metrics
from .batching import HeldBatches, Output
from .model_slot import ModelSlot
from .pipeline import Group, Pipeline
from .records import InvalidRecord, Transaction, dump_columns, dumps, parse_transaction
from .settings import Settings
from .state.table import MemoryTable
from .state.table import outputs as table_outputs
from .topics import Topics

log = logging.getLogger(__name__)

APPLIED = "\x00applied:"  # card-table key prefix: last input offset applied, per partition
SUB = "\x1f"  # terminal sub-key separator (never in a validated id)
# Expiry work per batch, proportional to its size (no fixed cost per batch): card keys checked
# per transaction, terminal sub-keys per transaction, log ids popped per transaction (plus a floor).
CARD_SWEEP_PER_TX, TERMINAL_SWEEP_PER_TX, LOG_POPS_PER_TX, LOG_POPS_MIN = 1 / 4, 1 / 16, 4, 256
LOG_COMPACT_MIN = 4096  # a log queue is compacted when over twice its live ids plus this
# Log ids read at a time by an expiry pass: the head usually stops at a record still within retention, and every
# id read past it is read again by the next pass (a whole batch's chunk at a time: ~3 reads per id popped).
LOG_READ_STEP = 128
_TS = struct.Struct("<d")  # a logged record starts with its transaction time
TERMINALS_CACHED_MAX = 100_000  # terminals decoded in the worker (~1.7 KB each with 4 label partitions)
EXPLAIN_MAX = 200  # alerts explained per batch (the rest name no features)
LABELS_RETRY_S = 0.05  # how often held labels (a backlog of both topics) are retried
QUALITY_EVERY_S = 15.0  # rolling AUCs (~50 ms each: a pass over 20,000 labels) exported at most this often


def parse_label(raw: bytes | None) -> tuple[str, bool]:
    """``{id, is_fraud}`` → ``(id, is_fraud)``; raises :class:`InvalidRecord`.

    >>> parse_label(b'{"id": "t1", "is_fraud": true}')
    ('t1', True)
    """
    try:
        obj = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord("malformed_json", f"label is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidRecord("not_an_object", "a label is a JSON object {id, is_fraud}")
    tx_id, y = obj.get("id"), obj.get("is_fraud")
    if not isinstance(tx_id, str) or not tx_id:
        raise InvalidRecord("missing_field", "label without a string id")
    if isinstance(y, bool):
        return tx_id, y
    if y in (0, 1):
        return tx_id, bool(y)
    raise InvalidRecord("wrong_type", f"is_fraud must be a boolean, got {y!r}")


class Labels(NamedTuple):
    """A batch of labels parsed: ids and verdicts of the valid ones, and how many were not."""

    ids: list[str]
    is_fraud: list[bool]
    invalid: int


def parse_labels(raws: Sequence[bytes | None]) -> Labels:
    """:func:`parse_label` over a batch, the common case (every label valid) without a Python call per label.

    >>> parse_labels([b'{"id": "a", "is_fraud": true}', b'{"id": "b", "is_fraud": 0}', b'oops'])
    Labels(ids=['a', 'b'], is_fraud=[True, False], invalid=1)
    """
    try:
        objs = list(map(orjson.loads, raws))
        ids = list(map(dict.get, objs, repeat("id")))  # (TypeError: not an object)
        ys = list(map(dict.get, objs, repeat("is_fraud")))
        if set(map(type, ids)) <= {str} and "" not in ids and set(map(type, ys)) <= {bool}:
            return Labels(ids, ys, 0)
    except (ValueError, TypeError):  # a label is not JSON, or not an object: parse_label says which
        pass
    ids, ys, invalid = [], [], 0
    for raw in raws:
        try:
            tx_id, y = parse_label(raw)
        except InvalidRecord as exc:
            invalid += 1
            log.debug("fraud: bad label dropped (%s)", exc)
            continue
        ids.append(tx_id)
        ys.append(y)
    return Labels(ids, ys, invalid)


class _LogQueue:
    """One partition's logged transaction ids in logging order (event-time order, nearly).

    Retention expiry pops the head while its record is past the horizon, instead of
    checking keys at random: a record costs one append and one pop. Ids whose record a
    label already took are dropped when they reach the head, or all at once when they
    are most of the queue, so memory follows the records still waiting for a label. A
    queue starts from the table (after a start, a restart or a rebalance), sorted by time.

    Ids are kept a batch to a tuple: a tuple of strings is not tracked by the garbage
    collector, so a full collection visits one entry per batch instead of one per waiting
    record (a plain deque of the ids of a 1.2-million-record log added 34 ms to every full
    collection, and full collections stop the event loop).

    >>> from streams.state.table import MemoryTable
    >>> table = MemoryTable()
    >>> queue = _LogQueue(table, 0)
    >>> queue.append(["a", "b"]); queue.append(["c"])
    >>> list(queue), len(queue)
    (['a', 'b', 'c'], 3)
    """

    def __init__(self, table: Any, partition: int) -> None:
        keys = table.keys_of(partition)
        unpack = _TS.unpack_from
        waiting = sorted((unpack(v)[0], k) for k, v in zip(keys, table.get_many(keys)) if v is not None)
        self._reset([k for _, k in waiting])

    def _reset(self, ids: list[str]) -> None:
        self.chunks: deque[tuple[str, ...]] = deque()
        self.head = 0  # ids of chunks[0] before this index are popped
        self.size = 0
        self.append(ids)
        self.compact_at = 2 * self.size + LOG_COMPACT_MIN

    def append(self, ids: Sequence[str]) -> None:
        """Ids just logged (one batch), at the tail."""
        if ids:
            self.chunks.append(tuple(ids))
            self.size += len(ids)

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[str]:
        for i, chunk in enumerate(self.chunks):
            yield from (chunk[self.head:] if i == 0 else chunk)

    def expire(self, table: Any, partition: int, horizon: float, budget: int) -> int:
        """Delete (pending) the head's records logged before ``horizon``, popping at most ``budget`` ids."""
        chunks, unpack = self.chunks, _TS.unpack_from
        dead: list[str] = []
        reached = False
        while chunks and budget > 0 and not reached:
            chunk, start = chunks[0], self.head
            end = min(len(chunk), start + budget, start + LOG_READ_STEP)
            i = end
            ids = chunk[start:end]
            values = table.get_many(ids)  # most are gone already (their label came): read in bulk
            for j in compress(range(len(ids)), map(is_not, values, repeat(None))):
                key, value = ids[j], values[j]
                if unpack(value)[0] >= horizon:
                    reached = True
                    i = start + j
                    break
                if table.partition_of(key) in (partition, None):  # None: written by this batch
                    dead.append(key)
            budget -= i - start
            self.size -= i - start
            if i == len(chunk):
                chunks.popleft()
                self.head = 0
            else:
                self.head = i
        if dead:
            table.update_many(dict.fromkeys(dead))
        if self.size > self.compact_at:
            ids = list(self)
            self._reset(list(compress(ids, map(is_not, table.get_many(ids), repeat(None)))))
        return len(dead)


class _ReadThrough(MutableMapping[str, bytes]):
    """Reads the table, keeps writes to itself: features of re-delivered inputs, state untouched."""

    def __init__(self, table: Mapping[str, bytes]) -> None:
        self.table = table
        self.own: dict[str, bytes] = {}

    def __getitem__(self, key: str) -> bytes:
        return self.own[key] if key in self.own else self.table[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.own[key] if key in self.own else self.table.get(key, default)

    def __setitem__(self, key: str, value: bytes) -> None:
        self.own[key] = value

    def __delitem__(self, key: str) -> None:
        self.own.pop(key, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.own)

    def __len__(self) -> int:
        return len(self.own)


class _SubKeys(MutableMapping[str, bytes]):
    """``terminal -> state`` over the table's ``terminal\\x1f<partition>`` keys of one partition."""

    def __init__(self, table: MutableMapping[str, bytes], partition: int, cache: TerminalCache | None = None) -> None:
        self.table, self.suffix = table, f"{SUB}{partition}"
        self.partition, self.cache = partition, cache

    def __getitem__(self, key: str) -> bytes:
        return self.table[key + self.suffix]

    def get(self, key: str, default: Any = None) -> Any:
        return self.table.get(key + self.suffix, default)

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        suffix = self.suffix
        return self.table.get_many([key + suffix for key in keys])

    def update_many(self, items: Mapping[str, bytes]) -> None:
        self._write(items, None)

    def update_decoded(self, items: Mapping[str, bytes], headers: np.ndarray, buckets: np.ndarray,
                       bucket_key: np.ndarray) -> None:
        """:meth:`update_many` from the engine, which gives the states decoded too: the cache takes those."""
        self._write(items, (headers, buckets, bucket_key))

    def _write(self, items: Mapping[str, bytes], decoded: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> None:
        suffix, cache = self.suffix, self.cache
        self.table.update_many({key + suffix: value for key, value in items.items()})
        if cache is not None and len(cache):
            if decoded is None:
                cache.store(self.partition, list(items), list(items.values()))
            else:
                cache.store_decoded(self.partition, list(items), *decoded)

    def __setitem__(self, key: str, value: bytes) -> None:
        self.update_many({key: value})

    def __delitem__(self, key: str) -> None:
        del self.table[key + self.suffix]
        if self.cache is not None:
            self.cache.discard(key)

    def __iter__(self) -> Iterator[str]:
        raise NotImplementedError("not iterable: the engine only reads and writes keys")

    def __len__(self) -> int:
        raise NotImplementedError


def _behind(app: Any, topic: str, partition: int, done: int | None) -> bool:
    """True while the worker has not reached the end of ``topic``'s ``partition`` (``done``: the last offset it
    processed, if any); also before anything of it was fetched."""
    from faust.types import TP

    tp = TP(topic, partition)
    high = app.consumer.highwater(tp)
    if high is None:  # nothing fetched yet
        return True
    committed = getattr(app.consumer, "_committed_offset", {}).get(tp)  # the last offset committed
    reached = max(done if done is not None else -1, committed if committed is not None else -1)
    return reached + 1 < high


class _LabelWait:
    """A held label batch: its labels (parsed), since when its partition's transactions have not moved,
    and the ids still waiting for their transaction (None: not checked yet) as of ``checked``."""

    __slots__ = ("labels", "seen", "since", "waiting", "checked")

    def __init__(self, labels: Labels, seen: int | None) -> None:
        self.labels, self.seen, self.since = labels, seen, time.monotonic()
        self.waiting: list[str] | None = None
        self.checked = -1  # FraudPipeline.logged_batches when ``waiting`` was looked up


class FraudPipeline(Pipeline):
    name = "fraud"
    parse = staticmethod(parse_transaction)

    def __init__(self, slot: ModelSlot, topics: Topics, settings: Settings | None = None) -> None:
        self.slot = slot
        self.settings = settings or Settings()
        self.topics = topics.pipeline(self.name)
        self.alerts_topic = topics.alerts
        self.partitions = self.settings.partitions
        self._scores = metrics.SCORES.labels(self.name)
        self._alerts = {s: metrics.ALERTS.labels(self.name, s) for s in ("warning", "critical")}
        self._labels = {o: metrics.LABELS_JOINED.labels(self.name, o) for o in ("joined", "missing", "invalid")}
        self._online_updates = metrics.ONLINE_UPDATES.labels(self.name)
        self._engines: dict[int, FeatureEngine] = {}
        # Plain tables until setup() registers the Faust ones (tests, evaluation).
        self.cards: Any = MemoryTable()
        self.scored: Any = MemoryTable()
        self.terminals: Any = MemoryTable()
        self.clock: dict[int, float] = {}  # partition -> feature time (latest transaction ts seen, scaled)
        self.last_offset: dict[int, int] = {}  # partition -> offset of the latest transaction scored
        self.logged_batches = 0  # scoring calls that logged transactions (held labels look again only after one)
        self.label_clock: dict[int, float] = {}  # partition -> latest transaction time (scaled) a label joined
        self.labels_behind: set[int] = set()  # partitions whose labels topic has a backlog (set by the worker)
        # Terminals' sub-states decoded (TerminalCache): the table's sub-keys as read once, then kept up to
        # date by this worker's label writes (the only writer of its partitions' sub-keys) and expiry;
        # dropped entirely when partitions move (recovery writes sub-keys behind our back)
        self._tcache: TerminalCache | None = None
        self._logs: dict[int, _LogQueue] = {}  # partition -> its logged ids in order (dropped like _tcache)
        self.checkpoint_path = self.settings.state_dir / "fraud" / "online.pkl"
        self.online = self._load_online()
        self.champion_quality = Prequential()
        debounce = self.settings.fraud_drift_debounce_s
        self.drift = {s: DebouncedDrift(s, debounce) for s in ("error", "score")}
        self._quality_at = 0.0  # monotonic time of the last full export
        self._quality_stale = False  # labels learnt since then
        self.export_quality()

    # --- models ---------------------------------------------------------------------------------

    def engine(self, label_delay_days: int) -> FeatureEngine:
        """The feature engine for a model's label delay (training and serving must agree)."""
        engine = self._engines.get(label_delay_days)
        if engine is None:
            engine = self._engines[label_delay_days] = FeatureEngine(label_delay_days)
        return engine

    def _load_online(self) -> OnlineFraudModel:
        """The worker's checkpoint, else the champion's warm start (``online.pkl`` beside it), else new."""
        candidates = [self.checkpoint_path]
        scorer = self.slot.scorer
        if scorer is not None:
            try:
                candidates.append(self.slot.registry.model_path(self.name, scorer.meta.version).parent / "online.pkl")
            except Exception:  # a registry without the version dir: no warm start
                pass
        for path in candidates:
            if Path(path).is_file():
                try:
                    model = OnlineFraudModel.load(path)
                    if model.features == FEATURES:
                        log.info("fraud: online model restored from %s (%d updates)", path, model.updates)
                        return model
                except (ValueError, OSError, EOFError) as exc:
                    log.warning("fraud: online checkpoint %s unusable (%s)", path, exc)
        return OnlineFraudModel(FEATURES)

    def save_online(self) -> Path:
        return self.online.save(self.checkpoint_path)

    def export_quality(self, force: bool = True) -> None:
        """Prequential gauges. Label counts every time; the AUCs, which cost a pass over their
        window, unless ``force`` at most every ``QUALITY_EVERY_S`` (a timer exports the rest)."""
        gauge = metrics.PREQUENTIAL
        now = time.monotonic()
        full = force or now - self._quality_at >= QUALITY_EVERY_S
        for learner, quality in (("online", self.online.quality), ("champion", self.champion_quality)):
            if full:
                values = quality.get()
            else:
                values = {"labels": float(quality.labels), "positives": float(quality.positives)}
            for metric, value in values.items():
                gauge.labels(self.name, learner, metric).set(value)
        if full:
            self._quality_at, self._quality_stale = now, False
        else:
            self._quality_stale = True

    # --- transactions ---------------------------------------------------------------------------

    def process(self, events: Sequence[Transaction], now: float) -> list[Output]:
        return self.process_batch(events, None, 0, now)

    def process_batch(self, events: Sequence[Transaction], offsets: Sequence[int] | None, partition: int,
                      now: float) -> list[Output]:
        group = Group(events, offsets, partition)  # type: ignore[arg-type]
        return self._score([group], now, self._applied_before(group) or 0)[0]

    def process_batches(self, groups: Sequence[Group], now: float) -> list[list[Output]]:
        """Several partitions' batches scored in one pass (one feature call, one ONNX call).

        A batch holding inputs applied before a crash (a re-delivery) is scored on its own,
        against read-only state; the others together. Features and scores equal those of
        one call per batch: a card's transactions all come from one partition.
        """
        applied = [self._applied_before(g) for g in groups]
        results: list[list[Output]] = [[] for _ in groups]
        for i, k in enumerate(applied):
            if k is not None:
                results[i] = self._score([groups[i]], now, k)[0]
        fresh = [i for i, k in enumerate(applied) if k is None]
        if fresh:
            for i, outs in zip(fresh, self._score([groups[i] for i in fresh], now)):
                results[i] = outs
        return results

    def _applied_before(self, group: Group) -> int | None:
        """How many of ``group``'s first inputs were applied to the card state already, if any."""
        if group.offsets is None:
            return None
        raw = self.cards.get(f"{APPLIED}{group.partition}")
        applied = int.from_bytes(raw, "big", signed=True) if raw is not None else -1
        if not len(group.offsets) or group.offsets[0] > applied:
            return None
        return int(np.searchsorted(np.asarray(group.offsets), applied, side="right"))

    def _score(self, groups: Sequence[Group], now: float, fresh_from: int = 0) -> list[list[Output]]:
        """Score ``groups`` (each one partition's batch) together; each gets its own outputs.

        ``fresh_from``: how many first inputs of a single group were applied before a crash
        (:meth:`_applied_before`); several groups must all be fresh (see :meth:`process_batches`).
        """
        scorer = self.slot.scorer
        if scorer is None:
            raise RuntimeError("no fraud model loaded: run `lepton train fraud`")
        meta = scorer.meta
        version = meta.version
        events: Sequence[Transaction] = groups[0].events if len(groups) == 1 else [
            e for g in groups for e in g.events]
        sizes = [len(g.events) for g in groups]
        bounds = np.cumsum([0, *sizes]).tolist()
        n = len(events)
        event_ts = np.fromiter((e.ts for e in events), np.float64, n)
        scale = time_scale(meta)
        ts = event_ts * scale if scale != 1.0 else event_ts  # feature time (see time_scale)
        amount = np.fromiter((e.amount for e in events), np.float64, n)
        cards = [e.card for e in events]
        merchants = [e.merchant for e in events]
        engine = self.engine(int(meta.extra.get("label_delay_days", 7)))
        terminals = self._terminal_view(merchants, engine)

        # Inputs at or below the partition's applied offset were counted before a crash:
        # score them against the state (read only), count only the others.
        X = np.empty((n, len(FEATURES)), dtype=np.float32)
        if fresh_from:
            X[:fresh_from] = engine.transform(ts[:fresh_from], cards[:fresh_from], merchants[:fresh_from],
                                              amount[:fresh_from], _ReadThrough(self.cards), terminals)
        if fresh_from < n:
            X[fresh_from:] = engine.transform(ts[fresh_from:], cards[fresh_from:], merchants[fresh_from:],
                                              amount[fresh_from:], self.cards, terminals)
        for g in groups:
            if g.offsets is not None and len(g.offsets):
                self.last_offset[g.partition] = last = int(g.offsets[-1])
                if fresh_from < n:
                    self.cards[f"{APPLIED}{g.partition}"] = last.to_bytes(8, "big", signed=True)

        with metrics.INFERENCE.labels(self.name, str(version)).time():
            probability = scorer.predict(X)
        online_scores = self.online.score(X)
        clocks = []
        for g, a, b in zip(groups, bounds, bounds[1:]):
            clock = max(self.clock.get(g.partition, 0.0), float(ts[a:b].max()))
            self.clock[g.partition] = clock
            self.label_clock.setdefault(g.partition, float(ts[a:b].min()))  # no label yet: as if one came now
            clocks.append(clock)

        # Log what a label will need (features, scores), once per transaction.
        ids = [e.id for e in events]
        if fresh_from < n:
            records = logged.pack(ts[fresh_from:], cards[fresh_from:], merchants[fresh_from:], X[fresh_from:],
                                  probability[fresh_from:], online_scores[fresh_from:])
            self.scored.update_many(dict(zip(ids[fresh_from:], records)))
            self.logged_batches += 1
            for g, a, b in zip(groups, bounds, bounds[1:]):
                self._log_queue(g.partition).append(ids[max(a, fresh_from):b])

        threshold = meta.threshold
        flagged = np.flatnonzero(probability >= threshold)
        owner = np.searchsorted(bounds, flagged, side="right") - 1  # the group of each flagged transaction
        # The first EXPLAIN_MAX alerts of each batch are explained (the rest name no features).
        first = np.searchsorted(flagged, bounds[:-1])
        explained = np.flatnonzero(np.arange(len(flagged)) - first[owner] < EXPLAIN_MAX)
        explanations = dict(zip(explained.tolist(), self._explain(scorer, X[flagged[explained]], meta.extra)))
        online_updates = self.online.updates
        decision = np.where(probability >= threshold, "review", "approve").tolist()
        latency = np.round((now - event_ts) * 1000.0, 3).tolist()
        values = dump_columns({
            "id": ids,
            "card": cards,
            "ts": event_ts.tolist(),
            "probability": np.round(probability.astype(np.float64), 6).tolist(),
            "decision": decision,
            "model_version": version,
            "online_score": np.round(online_scores, 6).tolist(),
            "online_updates": online_updates,
            "latency_ms": latency,
        })
        keys = list(map(str.encode, ids))
        results = [table_outputs(self.topics.output, keys[a:b], values[a:b]) for a, b in zip(bounds, bounds[1:])]
        for k, (i, q) in enumerate(zip(flagged.tolist(), owner.tolist())):
            top = explanations.get(k, [])
            results[q].append(Output(self.alerts_topic, keys[i],
                                     dumps(self._alert(events[i], float(probability[i]), threshold, version, top))))

        step = max(1, n // 64)
        for p in probability[::step].tolist():
            self._scores.observe(p)
        for g, outputs, clock, a, b in zip(groups, results, clocks, bounds, bounds[1:]):
            if self.drift["score"].update([float(probability[a:b].mean())], clock / scale):  # debounced in event time
                outputs.append(self._drift_alert("score", clock / scale, version))
            self._expire(g.partition, clock, engine, b - a)
        tables = (self.cards, self.scored, self.terminals)
        if len(groups) == 1:
            partition = groups[0].partition
            for table in tables:
                results[0] += table.flush(partition)
            return results
        # Each state change leaves with the outputs of the batch whose input caused it.
        parts = np.repeat([g.partition for g in groups], sizes).tolist()
        card_owner = dict(zip(cards, parts))
        card_owner.update((f"{APPLIED}{g.partition}", g.partition) for g in groups)
        index = {g.partition: i for i, g in enumerate(groups)}
        for table, owned in zip(tables, (card_owner, dict(zip(ids, parts)), {})):
            for p, records in table.flush_split(owned, groups[0].partition).items():
                results[index.get(p, 0)] += records
        return results

    def _terminal_cache(self, engine: FeatureEngine) -> TerminalCache:
        days = engine.terminal_keep_days + 10  # a sub-state spans at most terminal_keep_days + 1 days
        cache = self._tcache
        if cache is None or cache.days != days:
            cache = self._tcache = TerminalCache(days=days, parts=self.partitions)
        return cache

    def _terminal_view(self, merchants: Sequence[str], engine: FeatureEngine) -> TerminalCache | TerminalParts:
        """The batch's terminals, each with the sub-states the label partitions wrote, decoded once and
        kept (the features merge them: :class:`~models.fraud.features.TerminalCache`)."""
        cache = self._terminal_cache(engine)
        unread = set(merchants).difference(cache.rows)
        if unread:
            if len(cache) + len(unread) > TERMINALS_CACHED_MAX:
                cache.clear()
                unread = set(merchants)
            keys = list(unread)
            per = self.partitions
            suffixes = [f"{SUB}{q}" for q in range(per)]
            values = self.terminals.get_many([m + s for m in keys for s in suffixes])
            cache.load(keys, [{q: v for q, v in enumerate(values[i * per:(i + 1) * per]) if v is not None}
                              for i in range(len(keys))])
        if cache.wide and not cache.wide.isdisjoint(merchants):  # (never written so by the engine) the bytes
            get = self.terminals.get
            groups = {m: tuple(v for q in cache.order(m) if (v := get(f"{m}{SUB}{q}")) is not None)
                      for m in set(merchants)}
            return TerminalParts({m: g for m, g in groups.items() if g})
        return cache

    def _expire(self, partition: int, clock: float, engine: FeatureEngine, n: int) -> None:
        """Drop, a slice per batch, logged records past retention and cards/terminals no feature needs."""
        horizon = self._log_horizon(partition, clock, engine.delay)
        # The log in time order (one record per transaction); cards and terminals, which change far more
        # slowly, a slice of keys per batch (a pass over them spans many batches).
        self._log_queue(partition).expire(self.scored, partition, horizon, LOG_POPS_PER_TX * n + LOG_POPS_MIN)
        self.cards.sweep(partition, lambda k, v: not k.startswith(APPLIED) and engine.card_expired(v, clock),
                         int(n * CARD_SWEEP_PER_TX) + 1)
        self.terminals.sweep(partition, lambda k, v: self._terminal_gone(k, v, engine, clock),
                             int(n * TERMINAL_SWEEP_PER_TX) + 1)

    def _log_horizon(self, partition: int, clock: float, delay_days: int) -> float:
        """Logged records of ``partition`` before this time are dropped: ``fraud_log_retention_days`` before
        the transactions' clock, unless the labels lag behind it.

        Labels come in about the order of their transactions' times; those joined so far reached
        ``label_clock``. When both topics are replayed from a backlog the transactions may run days ahead
        of the labels (their stream queues alone hold up to 10 days of the handbook's traffic), and
        records whose labels are still on their way would go. So a record stays while the labels have not
        come within ``retention - delay`` of it (steady state, labels ``delay`` behind: the same time). While
        the labels topic has a backlog (``labels_behind``, kept by the worker) that is all; otherwise at most
        twice the retention (labels that stopped coming must not keep the log forever). Before the first
        label, the partition's first transaction stands for it.
        """
        retention = self.settings.fraud_log_retention_days * DAY
        horizon = clock - retention
        labelled = self.label_clock.get(partition)
        if labelled is not None:
            horizon = min(horizon, labelled - (retention - delay_days * DAY))
            if partition not in self.labels_behind:
                horizon = max(horizon, clock - 2 * retention)
        return horizon

    def _log_queue(self, partition: int) -> _LogQueue:
        queue = self._logs.get(partition)
        if queue is None:
            queue = self._logs[partition] = _LogQueue(self.scored, partition)
        return queue

    def _terminal_gone(self, key: str, value: bytes, engine: FeatureEngine, clock: float) -> bool:
        """A terminal sub-key past expiry; its terminal's cached states go with it."""
        if not engine.terminal_expired(value, clock):
            return False
        if self._tcache is not None:
            self._tcache.discard(key.rpartition(SUB)[0])
        return True

    def _explain(self, scorer: Any, X: np.ndarray, extra: dict) -> list[list[dict]]:
        if not len(X):
            return []
        means = extra.get("feature_means")
        if means is None or len(means) != len(FEATURES):  # an older model: the online scaler's means
            scaler = self.online.model.steps["StandardScaler"]
            means = [scaler.means.get(f, 0.0) for f in FEATURES]
        return explain(scorer.predict, X, np.asarray(means), FEATURES, self.settings.fraud_explain_top)

    def _alert(self, e: Transaction, p: float, threshold: float, version: int, top: list[dict]) -> dict:
        severity = "critical" if p >= max(0.9, threshold) else "warning"
        self._alerts[severity].inc()
        because = ", ".join(f"{t['feature']}={t['value']:g} (+{t['contribution']:.2f})" for t in top)
        return {
            "id": e.id,
            "pipeline": self.name,
            "severity": severity,
            "ts": e.ts,
            "subject": e.card,
            "score": round(p, 6),
            "threshold": threshold,
            "model_version": version,
            "reason": f"fraud probability {p:.2f} ≥ threshold {threshold:.2f}" + (f"; driven by {because}" if top else ""),
            "details": {"amount": e.amount, "merchant": e.merchant, "card": e.card, "top_features": top},
        }

    def _drift_alert(self, signal: str, ts: float, version: int | None) -> Output:
        metrics.DRIFT_EVENTS.labels(self.name, signal).inc()
        detector = self.drift[signal]
        what = ("the champion's error on arriving labels" if signal == "error"
                else "the distribution of fraud scores")
        log.warning("fraud: drift detected in %s", what)
        self._alerts["warning"].inc()
        alert_id = f"drift:{self.name}:{signal}:{int(ts)}"
        return Output(self.alerts_topic, alert_id.encode(), dumps({
            "id": alert_id, "pipeline": self.name, "severity": "warning", "ts": ts, "subject": f"drift:{signal}",
            "score": None if math.isnan(detector.estimate) else round(detector.estimate, 6), "threshold": None,
            "model_version": version, "reason": f"drift detected in {what}",
            "details": {"signal": signal, "detector": type(detector.detector).__name__,
                        "detections": detector.detections, "debounce_s": detector.debounce_s},
        }))

    # --- labels ---------------------------------------------------------------------------------

    def process_labels(self, raws: Sequence[bytes | None], partition: int, now: float) -> list[Output]:
        """Join a batch of labels to their logged records, apply them, learn; returns the outputs
        (state changelogs, drift alerts) to emit to ``partition`` before the labels are committed."""
        return self.join_labels(parse_labels(raws), partition, now)

    def join_labels(self, labels: Labels, partition: int, now: float) -> list[Output]:
        """:meth:`process_labels` of labels already parsed (:func:`parse_labels`)."""
        invalid, missing, ys = labels.invalid, 0, labels.is_fraud
        # Taken out of the log as they are read: a label applies once. None: expired, never scored
        # here, already applied (a re-delivered label) or a repeat within this batch.
        recs = self.scored.pop_many(labels.ids)
        if None in recs:
            keep = list(map(is_not, recs, repeat(None)))
            missing = len(recs) - sum(keep)
            ys = list(compress(ys, keep))
            recs = list(compress(recs, keep))
        if missing:
            self._labels["missing"].inc(missing)
        if invalid:
            self._labels["invalid"].inc(invalid)
        outputs: list[Output] = []
        if recs:
            self._labels["joined"].inc(len(recs))
            rec = logged.unpack(recs, len(FEATURES))
            self.label_clock[partition] = max(self.label_clock.get(partition, -math.inf), float(rec.ts.max()))
            y = np.asarray(ys, dtype=bool)
            meta = self.slot.scorer.meta if self.slot.scorer is not None else None
            scale = time_scale(meta)
            clock = self.clock.get(partition) or max(self.clock.values(), default=0.0) or now * scale
            delay = int(meta.extra.get("label_delay_days", 7)) if meta is not None else 7
            self.engine(delay).apply_labels(self.cards, _SubKeys(self.terminals, partition, self._tcache), rec.card,
                                            rec.merchant, rec.ts, y, label_ts=clock)
            known = ~np.isnan(rec.online_score)
            learnt = self.online.learn(rec.X, y, rec.online_score if known.all() else None)
            self._online_updates.inc(learnt)
            self.champion_quality.update(y, rec.score)
            self.export_quality(force=False)
            errors = np.abs(y.astype(np.float64) - rec.score.astype(np.float64))
            if self.drift["error"].update(errors.tolist(), clock / scale):
                outputs.append(self._drift_alert("error", clock / scale, self.slot.version))
        outputs += self.cards.flush(partition) + self.terminals.flush(partition) + self.scored.flush(partition)
        return outputs

    def _not_logged(self, ids: list[str]) -> list[str]:
        return list(compress(ids, map(is_, self.scored.get_many(ids), repeat(None))))

    def transactions_behind(self, app: Any, partition: int) -> bool:
        """True while this partition's transactions are not all scored yet (a backlog after a restart)."""
        return _behind(app, self.topics.input, partition, self.last_offset.get(partition))

    def _labels_ready(self, app: Any, partition: int, wait: _LabelWait, now: float) -> bool:
        """Whether a held label batch can be applied: its transactions are all scored, or its partition's
        transactions are not behind, or they have not moved for ``fraud_label_wait_s`` (then a label whose
        transaction never came counts ``missing``)."""
        done = self.last_offset.get(partition)
        if done != wait.seen:
            wait.seen, wait.since = done, now
        if now - wait.since >= self.settings.fraud_label_wait_s or not self.transactions_behind(app, partition):
            return True
        # Afterwards only the ids still waiting are looked up (a backlog checks often), and only once more
        # transactions were logged (by any partition: the topics need not be co-partitioned).
        if wait.checked != self.logged_batches:
            wait.checked = self.logged_batches
            wait.waiting = self._not_logged(wait.labels.ids if wait.waiting is None else wait.waiting)
        return not wait.waiting

    # --- wiring ---------------------------------------------------------------------------------

    def _register_tables(self, app: Any, parts: int) -> None:
        from .state.table import BatchTable

        self.cards = BatchTable(app, "fraud-cards", partitions=parts, help="card -> feature state")
        self.scored = BatchTable(app, "fraud-scored", partitions=parts, help="tx id -> record logged at scoring")
        self.terminals = BatchTable(app, "fraud-terminals", partitions=parts,
                                    help="terminal<US>partition -> label state from that partition")

    def setup(self, app: Any) -> None:
        """Tables, the label agent, the online model's checkpoints."""
        from .batching import BatchTopic, Deliveries, Emitter

        parts = self.partitions
        if self.settings.fraud_state_tables:
            self._register_tables(app, parts)
        # Label outputs (table changelog records, drift alerts) are acknowledged before the labels' offsets commit.
        deliveries = Deliveries(Emitter(app), self.name, max_inflight=self.settings.max_inflight_batches)
        feedback = BatchTopic(app, topics=[self.topics.feedback], acks=True, max_batch=self.settings.fraud_label_batch)

        # Labels that overtook their transactions are held, not awaited in the agent: an agent that waits
        # stops the fetch loop that would bring the transactions (see streams.batching.held).
        held: HeldBatches[_LabelWait] = HeldBatches()
        applying = asyncio.Lock()
        applied: dict[int, int] = {}  # partition -> last label offset applied

        async def apply_held() -> None:
            async with applying:
                now = time.monotonic()
                for batch, wait in held.take(lambda b, w: self._labels_ready(app, b.partition, w, now)):
                    if batch.generation_id != app.consumer_generation_id:
                        continue  # fetched before a rebalance: re-delivered from the committed offset
                    outputs = self.join_labels(wait.labels, batch.partition, time.time())
                    applied[batch.partition] = batch.last_offset
                    if outputs:
                        await deliveries.send(batch, outputs)
                    else:
                        batch.mark_complete()
                await deliveries.settle()

        async def fraud_labels(stream: Any) -> None:
            async for batch in stream:
                held.hold(batch, _LabelWait(parse_labels([r.value for r in batch.records]),
                                            self.last_offset.get(batch.partition)))
                await apply_held()

        app.agent(feedback, name="lepton.fraud_labels")(fraud_labels)

        async def fraud_held_labels() -> None:
            # A loop rather than a timer: applying held batches may take longer than the period.
            labels = self.topics.feedback
            while True:
                await asyncio.sleep(LABELS_RETRY_S)
                self.labels_behind = {tp.partition for tp in app.consumer.assignment()
                                      if tp.topic == labels and _behind(app, labels, tp.partition,
                                                                        applied.get(tp.partition))}
                if len(held):
                    try:
                        await apply_held()
                    except Exception:  # a bug must not end the loop: log it, keep applying the others
                        log.exception("fraud: applying held labels failed")

        app.task(fraud_held_labels)

        async def forget_merged(*_: Any, **__: Any) -> None:
            if self._tcache is not None:
                self._tcache.clear()
            self._logs.clear()  # recovery may have restored logged records: queues start again from the table
            held.clear()  # uncommitted: the new assignment re-delivers them
            applied.clear()

        self._forget_merged = forget_merged  # a signal holds its receivers weakly
        app.on_partitions_assigned.connect(forget_merged)
        app.on_partitions_revoked.connect(forget_merged)

        async def fraud_checkpoint() -> None:
            if self.online.updates != getattr(self, "_saved_updates", 0):
                self._saved_updates = self.online.updates
                self.save_online()  # on the loop (a few ms): labels are learnt there too, never mid-pickle

        app.timer(self.settings.fraud_checkpoint_s)(fraud_checkpoint)

        async def fraud_quality() -> None:
            if self._quality_stale:
                self.export_quality()

        app.timer(QUALITY_EVERY_S)(fraud_quality)

        async def final_checkpoint(sender: Any = None, **_: Any) -> None:
            path = self.save_online()
            log.info("fraud: online model (%d updates) checkpointed to %s", self.online.updates, path)

        self._final_checkpoint = final_checkpoint  # a signal holds its receivers weakly
        app.on_before_shutdown.connect(final_checkpoint)


__all__ = ["FEATURES", "FraudPipeline", "Labels", "parse_label", "parse_labels"]

"""Sentiment pipeline: chat messages in, a label and three probabilities for each out.

``chat-messages`` → ``sentiment-scores`` (keyed by message id: a re-delivered
message overwrites its score), plus escalation alerts on ``alerts`` when a
channel's mood turns negative (:mod:`models.sentiment.mood`).

Per micro-batch: the batch is tokenized at once and scored in one ONNX call by
the champion (the registry's, fast or accurate); a sample of it is scored by a
shadow challenger, if one is configured, and the two labels' agreement is
counted. With ``sentiment_prior_adaptation`` the champion's probabilities are
first re-weighted to the class mix of the recent stream, estimated without
labels (:mod:`models.sentiment.prior`; the estimate is not checkpointed: after a
restart it is rebuilt from the next ``sentiment_prior_min_messages`` messages). Every text is kept for a while (:class:`~models.sentiment.store.TextStore`)
so that corrections arriving on ``sentiment-labels`` (``{id, label}``) can
teach the River online model (:meth:`SentimentPipeline.learn`); a correction
that arrives before its message was scored waits for it
(``sentiment_correction_wait_s``).

Worker state (channel mood, kept texts, waiting corrections, the online model)
is checkpointed to ``LEPTON_HOME/state/sentiment/checkpoint.pkl`` every
``sentiment_checkpoint_s`` and at shutdown, and restored at start
(:class:`Checkpoints`). Why files and not Faust tables: the text store would
add one changelog record (and later a tombstone) per message to the hot path;
and rebuilding a table on the embedded broker (Tansu) depends on end offsets it
reports wrongly (ListOffsets: the last record batch's base offset + 1; 800
records in two batches: 501). The price: state stays with the worker's
LEPTON_HOME when a partition moves to another host. Inputs are keyed by channel, so a channel's mood lives in one
partition and so in one worker; a re-delivered message (after a crash) is
counted in the mood once, because its id is still among the kept texts.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import pickle
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import faust
import numpy as np

from models.atomic import write_atomic
from models.onnx_runtime import ModelCheckError, OnnxScorer
from models.registry import ModelRegistry, RegistryError
from models.sentiment import LABELS
from models.sentiment.mood import ChannelMood, MoodConfig, Transition
from models.sentiment.online import OnlineSentiment
from models.sentiment.prior import PRIOR_FILE, PriorAdapter, read_source_prior
from models.sentiment.scorer import TextScorer
from models.sentiment.store import TextStore

from . import metrics
from .batching import Output
from .model_slot import ModelSlot
from .pipeline import Pipeline
from .records import ChatMessage, InvalidRecord, _load, _str, dumps, parse_chat_message
from .settings import Settings, get_settings
from .topics import Topics

log = logging.getLogger(__name__)

NEGATIVE = 0
CHECKPOINT_VERSION = 1
MAX_WAITING_CORRECTIONS = 100_000


@dataclass(slots=True)
class Correction:
    id: str
    label: int  # class id (0 negative, 1 neutral, 2 positive)


def parse_correction(raw: bytes | None, limits: Any = None) -> Correction:
    """``{"id": ..., "label": "negative"|"neutral"|"positive"}`` (or -1/0/1); raises InvalidRecord."""
    from .records import LIMITS

    obj = _load(raw, limits or LIMITS)
    label = obj.get("label")
    names = {"negative": 0, "neutral": 1, "positive": 2, -1: 0, 0: 1, 1: 2}
    key = label.strip().lower() if isinstance(label, str) else label
    if isinstance(key, bool) or key not in names:
        raise InvalidRecord("out_of_range", f"field 'label' must be one of {', '.join(LABELS)}, got {label!r}")
    return Correction(_str(obj, "id"), names[key])


def mood_config(s: Settings) -> MoodConfig:
    return MoodConfig(
        window_s=s.sentiment_mood_window_s, bucket_s=s.sentiment_mood_bucket_s,
        min_messages=s.sentiment_escalation_min_messages, raise_margin=s.sentiment_escalation_raise_margin,
        clear_margin=s.sentiment_escalation_clear_margin, raise_z=s.sentiment_escalation_z,
        baseline_messages=s.sentiment_baseline_messages, warmup_messages=s.sentiment_warmup_messages,
        min_hold_s=s.sentiment_escalation_min_hold_s,
    )


class Challenger:
    """The shadow model beside the champion, chosen by ``settings.sentiment_challenger``.

    ``"none"``; ``"auto"``: the newest registered version of the other kind
    (fast vs accurate) than the champion; or a version number. Loading happens
    in :meth:`refresh` (call it off the event loop: a transformer takes a
    second to load), never on the hot path.
    """

    def __init__(self, registry: ModelRegistry, choice: str, threads: int = 1) -> None:
        self.registry = registry
        self.choice = str(choice).strip().lower()
        self.threads = threads
        self.scorer: TextScorer | None = None

    def wanted(self, champion_version: int | None) -> int | None:
        if self.choice in ("", "none", "off"):
            return None
        versions = self.registry.versions("sentiment")
        if self.choice.isdigit():
            return int(self.choice)
        if self.choice != "auto":
            raise ValueError(f"sentiment_challenger must be 'none', 'auto' or a version number, got {self.choice!r}")
        kinds = {m.version: m.extra.get("kind", "fast") for m in versions}
        champion_kind = kinds.get(champion_version)
        others = [v for v, k in kinds.items() if k != champion_kind and v != champion_version]
        return max(others) if others else None

    def refresh(self, champion_version: int | None) -> bool:
        """Load the wanted challenger if it changed; True when it did."""
        try:
            version = self.wanted(champion_version)
        except (RegistryError, ValueError) as exc:
            log.error("sentiment: cannot choose a challenger: %s", exc)
            return False
        if version == champion_version:
            version = None  # shadowing the champion with itself says nothing
        current = self.scorer.version if self.scorer is not None else None
        if version == current:
            return False
        if version is None:
            self.scorer = None
            return True
        try:
            scorer = TextScorer(OnnxScorer.from_registry(self.registry, "sentiment", version, threads=self.threads))
        except (ModelCheckError, RegistryError, OSError, ValueError, ImportError) as exc:
            log.error("sentiment: challenger v%s refused: %s", version, exc)
            return False
        self.scorer = scorer
        log.info("sentiment: challenger v%s (%s) scores in shadow", version, scorer.kind)
        return True


class SentimentPipeline(Pipeline):
    name = "sentiment"
    parse = staticmethod(parse_chat_message)

    def __init__(self, slot: ModelSlot, topics: Topics, settings: Settings | None = None, *,
                 online: OnlineSentiment | None = None) -> None:
        s = settings or get_settings()
        self.settings = s
        self.slot = slot
        self.topics = topics.pipeline(self.name)
        self.alerts_topic = topics.alerts
        self.mood = ChannelMood(mood_config(s))
        self.store = TextStore(s.sentiment_store_max, s.sentiment_store_ttl_s)
        self.online = online or self._warm_start(slot) or OnlineSentiment(window=s.sentiment_online_window)
        self.challenger = Challenger(slot.registry, s.sentiment_challenger, threads=s.onnx_threads)
        self.shadow_max = s.sentiment_shadow_max_per_batch
        self.blend = s.sentiment_blend
        self._text: TextScorer | None = None
        self.prior: PriorAdapter | None = None  # of the champion version in self._prior_of
        self._prior_of: int | None = None
        self._pair: tuple[int, int] | None = None  # (champion, challenger) versions the agreement is about
        self.shadow_scored = 0
        self.shadow_agreed = 0
        self.corrections_learned = 0
        self.corrections_missed = 0
        self.correction_wait_s = s.sentiment_correction_wait_s
        self._waiting: OrderedDict[str, tuple[int, float]] = OrderedDict()  # id -> (label, received at)
        self._changes = 0  # state changes since the last checkpoint
        self._partition: int | None = None  # of the batch being processed, when the runtime says
        self._partition_of: dict[str, int] = {}  # channel -> the partition its messages come from
        self._saving = False  # a thread is serializing the online model: nothing may teach it meanwhile
        self._idle: asyncio.Event | None = None  # set while not saving (the corrections agent waits on it)
        self.checkpoints: Checkpoints | None = None
        self._scores = metrics.SCORES.labels(self.name)
        self._alerts = {s: metrics.ALERTS.labels(self.name, s) for s in ("warning", "critical")}

    @staticmethod
    def _warm_start(slot: ModelSlot) -> OnlineSentiment | None:
        """The online learner saved beside the champion at training time, if any."""
        meta = slot.scorer.meta if slot.scorer is not None else None
        name = meta.extra.get("online_checkpoint") if meta is not None else None
        if not name:
            return None
        try:
            return OnlineSentiment.load(slot.registry.model_path("sentiment", meta.version).parent / name)
        except (OSError, ValueError, RegistryError, Exception) as exc:  # a bad checkpoint must not stop the worker
            log.warning("sentiment: online warm start %s not loaded (%s); starting empty", name, exc)
            return None

    # --- scoring -------------------------------------------------------------------------------

    def text_scorer(self) -> TextScorer:
        """The champion with its encoder (rebuilt only when the slot swapped models)."""
        scorer = self.slot.scorer
        if scorer is None:
            raise RuntimeError("no sentiment model loaded: run `lepton train sentiment`")
        cached = self._text
        if cached is None or cached.scorer is not scorer:
            cached = self._text = TextScorer(scorer)
        return cached

    def process(self, events: Sequence[ChatMessage], now: float) -> list[Output]:
        champion = self.text_scorer()
        version = champion.version
        texts = [e.text for e in events]
        with metrics.INFERENCE.labels(self.name, str(version)).time():
            probs = champion.predict(texts)
        if self.settings.sentiment_prior_adaptation:
            adapter = self.prior if self._prior_of == version else self._new_prior(version)
            if adapter is not None:
                probs = adapter.adapt(probs)
        labels = probs.argmax(axis=1)
        challenger = self.challenger.scorer
        blended = None
        if challenger is not None and self.blend > 0:
            other = self._shadow(challenger, version, texts, labels, every=True)
            probs = (1.0 - self.blend) * probs + self.blend * other
            labels = probs.argmax(axis=1)
            blended = challenger.version
        elif challenger is not None and self.shadow_max > 0:
            self._shadow(challenger, version, texts, labels)
        label_ids = labels.tolist()
        p = np.round(probs.astype(np.float64), 5).tolist()
        out_topic = self.topics.output
        kind = champion.kind
        outputs: list[Output] = []
        append = outputs.append
        mood_add = self.mood.add
        store = self.store
        names = LABELS
        ids, ts = [], []
        for e, y, (pn, pu, pp) in zip(events, label_ids, p):
            ids.append(e.id)
            ts.append(e.ts)
            append(Output(out_topic, e.id.encode(), dumps({
                "id": e.id, "channel": e.channel, "ts": e.ts, "label": names[y],
                "probabilities": {"negative": pn, "neutral": pu, "positive": pp},
                "model_version": version, "model_kind": kind, "blended_with": blended,
                "latency_ms": round((now - e.ts) * 1000.0, 3),
            })))
            if e.id not in store:  # a message re-delivered after a restart counts once
                mood_add(e.channel, e.ts, y == NEGATIVE, pn, e.id, e.text)
        store.put_many(ids, ts, texts, label_ids)
        self._changes += 1
        if self._waiting and not self._saving:
            self._learn_waiting(ids)
        for t in self.mood.check(escalated=self._of_this_partition(events)):
            append(Output(self.alerts_topic, t.channel.encode(), dumps(self._alert(t, version))))
        step = max(1, len(events) // 64)
        for value in probs[::step, NEGATIVE].tolist():
            self._scores.observe(value)
        return outputs

    def _new_prior(self, version: int) -> PriorAdapter | None:
        """A fresh prior adapter for a (new) champion, from the source prior saved beside it."""
        self._prior_of, self.prior = version, None
        try:
            source = read_source_prior(self.slot.registry.model_path(self.name, version).parent)
        except RegistryError:
            source = None
        if source is None:
            log.warning("sentiment: v%s has no source prior (%s); prior adaptation is off for it", version, PRIOR_FILE)
            return None
        s = self.settings
        self.prior = PriorAdapter(source, s.sentiment_prior_window, s.sentiment_prior_min_messages)
        return self.prior

    def process_batch(self, events: Sequence[ChatMessage], offsets: Sequence[int], partition: int,
                      now: float) -> list[Output]:
        """:meth:`process`, told the batch's partition (where the batch runtime passes it)."""
        self._partition = partition
        try:
            return self.process(events, now)
        finally:
            self._partition = None

    def _of_this_partition(self, events: Sequence[ChatMessage]) -> Any:
        """Which escalated channels this batch may raise or clear: those of its partition.

        A channel's messages all come through one partition (inputs are keyed by
        channel), so its alerts are emitted with that partition's batches and
        stay in order. Outside a worker (evaluation, tests) every channel.
        """
        partition = self._partition
        if partition is None:
            event = faust.current_event()  # the batch being processed by this agent
            partition = getattr(getattr(event, "message", None), "partition", None)
        if partition is None:
            return None
        home = self._partition_of
        for channel in {e.channel for e in events}:
            home[channel] = partition
        return lambda channel: home.get(channel) == partition

    def _shadow(self, challenger: TextScorer, version: int, texts: list[str], labels: np.ndarray, *,
                every: bool = False) -> np.ndarray:
        """Challenger probabilities for a sample of the batch (all of it if ``every``); counts agreement."""
        pair = (version, challenger.version)
        if pair != self._pair:  # a new pair: agreement starts over
            self._pair, self.shadow_scored, self.shadow_agreed = pair, 0, 0
        step = 1 if every else max(1, len(texts) // max(self.shadow_max, 1))
        sample = texts[::step] if every else texts[::step][: self.shadow_max]
        with metrics.INFERENCE.labels(self.name, str(challenger.version)).time():
            probs = challenger.predict(sample)
        self.shadow_scored += len(sample)
        self.shadow_agreed += int((probs.argmax(axis=1) == labels[::step][: len(sample)]).sum())
        metrics.MODEL_AGREEMENT.labels(self.name, "challenger").set(self.agreement())
        return probs

    def agreement(self) -> float:
        """Share of shadow-scored messages on which the challenger agrees with the champion (NaN: none yet)."""
        return self.shadow_agreed / self.shadow_scored if self.shadow_scored else float("nan")

    def _alert(self, t: Transition, version: int) -> dict[str, Any]:
        raised = t.state == "raised"
        severity = "resolved"
        if raised:
            cfg = self.mood.config
            severity = "critical" if t.negative_share - t.baseline >= 2 * cfg.raise_margin else "warning"
            self._alerts[severity].inc()
        metrics.ESCALATED_CHANNELS.labels(self.name).set(len(self.mood.escalated))
        share, base = t.negative_share, t.baseline
        window = self.mood.config.window_s
        reason = (f"channel {t.channel}: {share:.0%} negative over the last {window:.0f} s ({t.messages} messages), "
                  f"baseline {base:.0%}" if raised else
                  f"channel {t.channel} calmed down: {share:.0%} negative (baseline {base:.0%})")
        return {
            "id": t.alert_id,
            "pipeline": self.name,
            "severity": severity,
            "state": t.state,
            "ts": t.ts,
            "subject": t.channel,
            "score": round(share, 4),
            "threshold": round(base + self.mood.config.raise_margin, 4),
            "model_version": version,
            "reason": reason,
            "details": {"channel": t.channel, "negative_share": round(share, 4), "baseline": round(base, 4),
                        "messages": t.messages, "rate_per_s": round(t.rate_per_s, 4), "window_s": window,
                        "most_negative": t.examples},
        }

    # --- learning from corrections -------------------------------------------------------------

    def learn(self, corrections: Sequence[Correction], now: float | None = None) -> int:
        """Teach the online model the corrected labels of messages in the store; returns how many.

        A correction whose message is not (yet) kept waits for it up to
        ``sentiment_correction_wait_s`` (corrections and messages travel on
        different topics: one may overtake the other); then it counts as missing.
        """
        now = time.time() if now is None else now
        learned = 0
        for c in corrections:
            kept = self.store.pop(c.id)
            if kept is None:
                self._wait(c, now)
                continue
            self.online.learn(kept.text, c.label, champion_label=kept.label)
            learned += 1
        self._learned(learned)
        return learned

    def _learned(self, n: int) -> None:
        if n:
            self.corrections_learned += n
            self._changes += 1
            metrics.CORRECTIONS.labels(self.name, "learned").inc(n)
            metrics.ONLINE_UPDATES.labels(self.name).inc(n)
            self.export_quality()

    def _missed(self, n: int) -> None:
        if n:
            self.corrections_missed += n
            metrics.CORRECTIONS.labels(self.name, "missing").inc(n)

    def _wait(self, c: Correction, now: float) -> None:
        if self.correction_wait_s <= 0:
            self._missed(1)
            return
        self._waiting[c.id] = (c.label, now)
        self._changes += 1
        if len(self._waiting) > MAX_WAITING_CORRECTIONS:
            self._waiting.popitem(last=False)
            self._missed(1)

    def _learn_waiting(self, ids: list[str]) -> None:
        """Learn the waiting corrections among ``ids`` whose message is kept by now."""
        waiting, store = self._waiting, self.store
        ready = [(i, waiting.pop(i)[0]) for i in ids if i in waiting and i in store]
        learned = 0
        for message_id, label in ready:
            kept = self.store.pop(message_id)
            if kept is not None:
                self.online.learn(kept.text, label, champion_label=kept.label)
                learned += 1
        self._learned(learned)

    def expire_waiting(self, now: float) -> int:
        """Corrections that waited longer than ``sentiment_correction_wait_s`` count as missing."""
        waiting, limit, n = self._waiting, now - self.correction_wait_s, 0
        while waiting and next(iter(waiting.values()))[1] < limit:
            waiting.popitem(last=False)
            n += 1
        self._missed(n)
        return n

    def quality(self) -> dict[str, float]:
        """Every number to export as a gauge: prequential quality, agreement rates, store size."""
        q = self.online.quality()
        q["challenger_agreement"] = self.agreement()
        q["corrections_learned"] = float(self.corrections_learned)
        q["corrections_missed"] = float(self.corrections_missed)
        q["corrections_waiting"] = float(len(self._waiting))
        q["texts_kept"] = float(len(self.store))
        q["escalated_channels"] = float(len(self.mood.escalated))
        return q

    def export_quality(self) -> None:
        q = self.online.quality()
        gauge = metrics.PREQUENTIAL
        for learner, key in (("online", "online"), ("champion", "champion")):
            gauge.labels(self.name, learner, "accuracy").set(q[f"{key}_accuracy"])
            gauge.labels(self.name, learner, "macro_f1").set(q[f"{key}_macro_f1"])
        metrics.MODEL_AGREEMENT.labels(self.name, "online").set(q["online_champion_agreement"])

    # --- housekeeping and wiring ---------------------------------------------------------------

    def housekeeping(self, now: float | None = None) -> None:
        """Expire old texts and waiting corrections, (re)load the challenger. Blocking (a model load)."""
        self.expire(now)
        self.challenger.refresh(self.slot.version)

    def expire(self, now: float | None = None) -> None:
        """The cheap part of housekeeping (runs on the event loop, beside ``process``)."""
        now = time.time() if now is None else now
        if self._waiting and not self._saving:  # those whose message came while a checkpoint was written
            self._learn_waiting(list(self._waiting))
        if self.store.expire(now) + self.expire_waiting(now):
            self._changes += 1

    def state_dict(self) -> dict[str, Any]:
        """Channel mood, kept texts and waiting corrections, JSON-friendly (the online model: ``online.save``)."""
        return {"mood": self.mood.to_dict(), "store": self.store.to_dict(),
                "corrections": [self.corrections_learned, self.corrections_missed],
                "waiting": [[k, label, at] for k, (label, at) in self._waiting.items()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        s = self.settings
        self.mood = ChannelMood.from_dict(state["mood"], self.mood.config)
        store = TextStore.from_dict(state["store"])
        store.max_items, store.ttl_s = s.sentiment_store_max, s.sentiment_store_ttl_s  # today's settings rule
        self.store = store
        self.corrections_learned, self.corrections_missed = state.get("corrections", [0, 0])
        self._waiting = OrderedDict((k, (int(label), float(at))) for k, label, at in state.get("waiting", []))

    def checkpoint_bytes(self) -> bytes:
        """Everything the worker learned, online model included (pickle: load only your own files)."""
        return self._snapshot()()

    def _snapshot(self) -> Any:
        """Copy what batches change (cheap, on the event loop); returns the function that serializes
        the copy and the online model (slow: run it in a thread while ``_saving`` keeps learning off)."""
        self._changes = 0
        mood = self.mood.to_dict()  # fresh containers
        store, items = self.store, self.store.items()  # immutable entries
        waiting = [[k, label, at] for k, (label, at) in self._waiting.items()]
        counters = [self.corrections_learned, self.corrections_missed]
        online = self.online

        def serialize() -> bytes:
            state = {"mood": mood, "store": store.to_dict(items), "corrections": counters, "waiting": waiting}
            return pickle.dumps({"version": CHECKPOINT_VERSION, "state": state, "online": online},
                                protocol=pickle.HIGHEST_PROTOCOL)

        return serialize

    def restore_checkpoint(self, data: bytes) -> None:
        """Replace the state with a checkpoint's (raises ValueError if it is not one)."""
        try:
            obj = pickle.loads(data)
        except Exception as exc:  # a truncated or foreign file
            raise ValueError(f"unreadable sentiment checkpoint: {exc}") from exc
        if not isinstance(obj, dict) or obj.get("version") != CHECKPOINT_VERSION \
                or not isinstance(obj.get("online"), OnlineSentiment):
            raise ValueError("not a sentiment checkpoint of this version")
        self.load_state_dict(obj["state"])
        self.online = obj["online"]
        self._changes = 0
        self.export_quality()
        metrics.ESCALATED_CHANNELS.labels(self.name).set(len(self.mood.escalated))

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint now (if this worker owns the state directory)."""
        if self.checkpoints is None:
            return None
        return self.checkpoints.write(self.checkpoint_bytes())

    def setup(self, app: Any) -> None:
        """Restore the checkpoint; corrections agent; housekeeping and checkpoint timers; a last checkpoint at shutdown."""
        s = self.settings
        checkpoints = Checkpoints(s.state_dir / "sentiment")
        if checkpoints.acquire():
            self.checkpoints = checkpoints
            data = checkpoints.read()
            if data is not None:
                try:
                    self.restore_checkpoint(data)
                    log.info("sentiment: state restored from %s (%d channels, %d texts kept, %d online updates)",
                             checkpoints.path, len(self.mood.channels), len(self.store), self.online.updates)
                except ValueError as exc:
                    kept = checkpoints.set_aside()
                    log.error("sentiment: %s; starting with empty state (the file is kept as %s)", exc, kept)
        else:
            log.warning("sentiment: another worker checkpoints to %s; this one keeps its state in memory only "
                        "(give each worker its own LEPTON_HOME)", checkpoints.directory)

        feedback = app.topic(self.topics.feedback, value_serializer="raw")

        self._idle = asyncio.Event()
        self._idle.set()

        async def corrections(stream: Any) -> None:
            async for raw in stream:
                if self._saving and self._idle is not None:
                    await self._idle.wait()
                try:
                    self.learn([parse_correction(raw)])
                except InvalidRecord as exc:
                    metrics.CORRECTIONS.labels(self.name, "invalid").inc()
                    log.warning("sentiment: bad correction dropped (%s): %s", exc.reason, exc)

        app.agent(feedback, name="lepton.sentiment_corrections")(corrections)

        async def sentiment_housekeeping() -> None:
            self.expire()
            await asyncio.get_running_loop().run_in_executor(None, self.challenger.refresh, self.slot.version)

        app.timer(s.sentiment_housekeeping_s)(sentiment_housekeeping)

        async def sentiment_checkpoint() -> None:
            if self.checkpoints is None or not self._changes:
                return
            serialize = self._snapshot()  # on the loop: a consistent copy
            self._saving = True
            if self._idle is not None:
                self._idle.clear()
            try:
                data = await asyncio.get_running_loop().run_in_executor(None, serialize)
            finally:
                self._saving = False
                if self._idle is not None:
                    self._idle.set()
            await asyncio.get_running_loop().run_in_executor(None, self.checkpoints.write, data)

        app.timer(s.sentiment_checkpoint_s)(sentiment_checkpoint)

        async def final_checkpoint(sender: Any = None, **_: Any) -> None:
            if self.checkpoints is not None:
                self.save_checkpoint()
                log.info("sentiment: state checkpointed to %s", self.checkpoints.path)

        self._final_checkpoint = final_checkpoint  # a signal holds its receivers weakly
        app.on_before_shutdown.connect(final_checkpoint)


class Checkpoints:
    """One file per state directory, written atomically, owned by one worker at a time (a lock file).

    >>> import tempfile
    >>> a, b = Checkpoints(Path(tempfile.mkdtemp())), None
    >>> a.acquire(), a.read()
    (True, None)
    >>> _ = a.write(b"state")
    >>> b = Checkpoints(a.directory)
    >>> b.acquire(), b.read()
    (False, b'state')
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / "checkpoint.pkl"
        self._lock: Any = None

    def acquire(self) -> bool:
        """Lock the directory for this process; False if another live process holds it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        handle = open(self.directory / "lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._lock = handle  # held until the process exits
        return True

    def read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def write(self, data: bytes) -> Path:
        return write_atomic(self.path, data)

    def set_aside(self) -> Path:
        bad = self.path.with_suffix(f".bad-{int(time.time())}")
        self.path.replace(bad)
        return bad


__all__ = ["Challenger", "Checkpoints", "Correction", "SentimentPipeline", "parse_correction"]

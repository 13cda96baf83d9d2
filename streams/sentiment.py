"""Sentiment pipeline: chat messages in, a label and three probabilities for each out.

``chat-messages`` → ``sentiment-scores`` (keyed by message id: a re-delivered
message overwrites its score), plus escalation alerts on ``alerts`` when a
channel's mood turns negative (:mod:`models.sentiment.mood`).

Per micro-batch: the batch is tokenized at once and scored in one ONNX call by
the champion (the registry's, fast or accurate); a sample of it is scored by a
shadow challenger, if one is configured, and the two labels' agreement is
counted. Every text is kept for a while (:class:`~models.sentiment.store.TextStore`)
so that corrections arriving on ``sentiment-labels`` (``{id, label}``) can
teach the River online model (:meth:`SentimentPipeline.learn`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from models.onnx_runtime import ModelCheckError, OnnxScorer
from models.registry import ModelRegistry, RegistryError
from models.sentiment import LABELS
from models.sentiment.mood import ChannelMood, MoodConfig, Transition
from models.sentiment.online import OnlineSentiment
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
        self._pair: tuple[int, int] | None = None  # (champion, challenger) versions the agreement is about
        self.shadow_scored = 0
        self.shadow_agreed = 0
        self.corrections_learned = 0
        self.corrections_missed = 0
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
            mood_add(e.channel, e.ts, y == NEGATIVE, pn, e.id, e.text)
        self.store.put_many(ids, ts, texts, label_ids)
        for t in self.mood.check():
            append(Output(self.alerts_topic, t.channel.encode(), dumps(self._alert(t, version))))
        step = max(1, len(events) // 64)
        for value in probs[::step, NEGATIVE].tolist():
            self._scores.observe(value)
        return outputs

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

    def learn(self, corrections: Sequence[Correction]) -> int:
        """Teach the online model the corrected labels of messages still in the store; returns how many."""
        learned = 0
        for c in corrections:
            kept = self.store.pop(c.id)
            if kept is None:
                self.corrections_missed += 1
                metrics.CORRECTIONS.labels(self.name, "missing").inc()
                continue
            self.online.learn(kept.text, c.label, champion_label=kept.label)
            learned += 1
        if learned:
            self.corrections_learned += learned
            metrics.CORRECTIONS.labels(self.name, "learned").inc(learned)
            metrics.ONLINE_UPDATES.labels(self.name).inc(learned)
            self.export_quality()
        return learned

    def quality(self) -> dict[str, float]:
        """Every number to export as a gauge: prequential quality, agreement rates, store size."""
        q = self.online.quality()
        q["challenger_agreement"] = self.agreement()
        q["corrections_learned"] = float(self.corrections_learned)
        q["corrections_missed"] = float(self.corrections_missed)
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
        """Expire old texts and (re)load the challenger. Blocking: run it in an executor."""
        self.store.expire(time.time() if now is None else now)
        self.challenger.refresh(self.slot.version)

    def state_dict(self) -> dict[str, Any]:
        """Channel mood and kept texts, JSON-friendly (the online model checkpoints with ``online.save``)."""
        return {"mood": self.mood.to_dict(), "store": self.store.to_dict(),
                "corrections": [self.corrections_learned, self.corrections_missed]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mood = ChannelMood.from_dict(state["mood"], self.mood.config)
        self.store = TextStore.from_dict(state["store"])
        self.corrections_learned, self.corrections_missed = state.get("corrections", [0, 0])

    def setup(self, app: Any) -> None:
        """Corrections agent on ``sentiment-labels`` and a housekeeping timer."""
        feedback = app.topic(self.topics.feedback, value_serializer="raw")

        async def corrections(stream: Any) -> None:
            async for raw in stream:
                try:
                    self.learn([parse_correction(raw)])
                except InvalidRecord as exc:
                    metrics.CORRECTIONS.labels(self.name, "invalid").inc()
                    log.warning("sentiment: bad correction dropped (%s): %s", exc.reason, exc)

        app.agent(feedback, name="lepton.sentiment_corrections")(corrections)

        async def sentiment_housekeeping() -> None:
            await asyncio.get_running_loop().run_in_executor(None, self.housekeeping)

        app.timer(self.settings.sentiment_housekeeping_s)(sentiment_housekeeping)


__all__ = ["Challenger", "Correction", "SentimentPipeline", "parse_correction"]

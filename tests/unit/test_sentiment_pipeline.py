"""SentimentPipeline.process: one score per message, escalation alerts, corrections, shadow agreement."""

from __future__ import annotations

import math

import orjson
import pytest

from connectors.generators import ChatGenerator
from models.registry import ModelRegistry
from models.sentiment.data import labels_to_ids
from models.sentiment.fast import FastConfig, train_fast
from models.sentiment.train import register_model
from streams.model_slot import ModelSlot
from streams.records import LIMITS, ChatMessage, InvalidRecord, Limits, parse_chat_message
from streams.sentiment import Correction, SentimentPipeline
from streams.settings import Settings


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    frame = ChatGenerator(seed=3, start_ts=1_700_000_000.0).batch(3000)
    encoder, net = train_fast(frame["text"].tolist(), labels_to_ids(frame["label"]),
                              FastConfig(dim=16, n_bigrams=1 << 12, epochs=3, min_count=1))
    settings = Settings(home=tmp_path_factory.mktemp("home"))
    register_model(settings, "fast", encoder, net, metrics={}, training={})
    register_model(settings, "accurate", encoder, net, metrics={}, training={}, promote=False)  # a stand-in
    return settings.home


def make(home, **overrides) -> SentimentPipeline:
    settings = Settings(home=home, **overrides)
    slot = ModelSlot(ModelRegistry(settings.models_dir), "sentiment", threads=1)
    slot.load_now()
    return SentimentPipeline(slot, settings.topics, settings)


def messages(n: int, seed: int = 11, start: float = 1_700_000_000.0) -> tuple[list[ChatMessage], list[str]]:
    gen = iter(ChatGenerator(seed=seed, start_ts=start, rate_per_s=10.0))
    out, labels = [], []
    for _ in range(n):
        e, label = next(gen)
        out.append(ChatMessage(e["id"], e["ts"], e["channel"], e["user"], e["text"]))
        labels.append(label)
    return out, labels


def test_one_score_per_message_keyed_by_id(home) -> None:
    pipeline = make(home)
    batch, labels = messages(500)
    now = batch[-1].ts + 0.5
    outputs = pipeline.process(batch, now)
    scores = [o for o in outputs if o.topic == "sentiment-scores"]
    assert [o.key for o in scores] == [m.id.encode() for m in batch]
    rec = orjson.loads(scores[0].value)
    assert set(rec) == {"id", "channel", "ts", "label", "probabilities", "model_version", "model_kind", "blended_with",
                        "latency_ms"}
    assert rec["blended_with"] is None
    assert rec["model_version"] == 1 and rec["model_kind"] == "fast"
    assert abs(sum(rec["probabilities"].values()) - 1.0) < 1e-3
    got = [orjson.loads(o.value)["label"] for o in scores]
    assert sum(g == t for g, t in zip(got, labels)) / len(labels) > 0.9
    assert len(pipeline.store) == 500


def test_bad_text_is_a_dead_letter_with_a_reason() -> None:
    for raw, reason in ((b'{"id":"m","ts":1700000000,"channel":"c","user":"u","text":"   "}', "empty_text"),
                        (b'{"id":"m","ts":1700000000,"channel":"c","user":"u","text":"' + b"a" * 50 + b'"}', "oversized"),
                        (b'{"id":"m","ts":1700000000,"channel":"c","user":"u","text":7}', "wrong_type")):
        with pytest.raises(InvalidRecord) as err:
            parse_chat_message(raw, Limits(max_text_chars=40))
        assert err.value.reason == reason


def test_escalation_alert_raised_and_cleared_on_a_synthetic_channel(home) -> None:
    pipeline = make(home, sentiment_mood_window_s=60, sentiment_mood_bucket_s=5, sentiment_warmup_messages=100,
                    sentiment_escalation_min_hold_s=30, sentiment_baseline_messages=200)
    pool, labels = messages(4000, seed=21)
    by_label = {k: [m.text for m, l in zip(pool, labels) if l == k] for k in ("negative", "neutral", "positive")}
    t = 1_700_000_000.0
    alerts = []

    def run(seconds: int, mix: tuple[str, ...]) -> None:
        nonlocal t
        for s in range(seconds):
            batch = []
            for k in range(2):  # 2 messages a second on channel "vip"
                t += 0.5
                label = mix[(s * 2 + k) % len(mix)]
                text = by_label[label][(s * 2 + k) % len(by_label[label])]
                batch.append(ChatMessage(f"m{t}", t, "vip", "u", text))
            for o in pipeline.process(batch, t):
                if o.topic == "alerts":
                    alerts.append(orjson.loads(o.value))

    calm = ("neutral", "positive", "negative", "neutral", "positive")  # 20 % negative
    run(300, calm)
    assert alerts == []
    run(90, ("negative", "negative", "negative", "negative", "neutral"))  # 80 % negative
    assert [a["state"] for a in alerts] == ["raised"]
    raised = alerts[0]
    assert raised["subject"] == "vip" and raised["pipeline"] == "sentiment"
    assert raised["severity"] in ("warning", "critical") and raised["score"] >= raised["threshold"] > 0.3
    quotes = raised["details"]["most_negative"]
    assert quotes and all(q["text"] in by_label["negative"] for q in quotes)
    run(200, calm)
    assert [a["state"] for a in alerts] == ["raised", "cleared"]
    assert alerts[1]["id"] == raised["id"] and alerts[1]["severity"] == "resolved"


def test_corrections_teach_the_online_model(home) -> None:
    pipeline = make(home)
    batch, labels = messages(1200, seed=31)
    for i in range(0, 1200, 200):
        pipeline.process(batch[i:i + 200], batch[i + 199].ts)
    names = ("negative", "neutral", "positive")
    learned = pipeline.learn([Correction(m.id, names.index(l)) for m, l in zip(batch, labels)])
    assert learned == 1200
    t0 = 1_800_000_000.0
    assert pipeline.learn([Correction("never-seen", 0), Correction(batch[0].id, 0)], now=t0) == 0  # learned once
    assert pipeline.quality()["corrections_waiting"] == 2  # they wait for their message...
    pipeline.expire(t0 + pipeline.correction_wait_s + 1)
    q = pipeline.quality()  # ...and count as missing when it does not come
    assert q["corrections_learned"] == 1200 and q["corrections_missed"] == 2 and q["corrections_waiting"] == 0
    assert q["online_accuracy"] > 0.8 and q["champion_accuracy"] > 0.9
    assert 0.0 <= q["online_champion_agreement"] <= 1.0
    state = pipeline.state_dict()
    again = make(home)
    again.load_state_dict(orjson.loads(orjson.dumps(state)))
    assert len(again.store) == len(pipeline.store)


def test_challenger_scores_in_shadow(home) -> None:
    pipeline = make(home, sentiment_challenger="auto", sentiment_shadow_max_per_batch=50)
    assert math.isnan(pipeline.agreement())
    pipeline.housekeeping(now=1_700_000_000.0)
    assert pipeline.challenger.scorer is not None and pipeline.challenger.scorer.version == 2
    batch, _ = messages(400)
    pipeline.process(batch, batch[-1].ts)
    assert pipeline.shadow_scored == 50
    assert pipeline.agreement() == 1.0  # the stand-in is the same network


def test_setup_registers_the_corrections_agent_and_housekeeping(home) -> None:
    import asyncio

    registered = {}

    class FakeApp:
        def topic(self, name, value_serializer=None):
            registered["topic"] = (name, value_serializer)
            return name

        def agent(self, channel, name):
            return lambda fn: registered.setdefault("agent", (channel, name, fn))

        def timer(self, seconds):
            return lambda fn: registered.setdefault("timers", []).append((seconds, fn)) or fn

        class on_before_shutdown:
            @staticmethod
            def connect(fn):
                registered["shutdown"] = fn

    pipeline = make(home)
    pipeline.setup(FakeApp())
    assert registered["topic"] == ("sentiment-labels", "raw")
    batch, _ = messages(3)
    pipeline.process(batch, batch[-1].ts)

    async def stream():
        yield b'{"id": "%s", "label": "negative"}' % batch[0].id.encode()
        yield b"not json"

    asyncio.run(registered["agent"][2](stream()))
    assert pipeline.corrections_learned == 1
    for _, timer in registered["timers"]:
        asyncio.run(timer())
    asyncio.run(registered["shutdown"](None))
    assert pipeline.checkpoints is not None and pipeline.checkpoints.path.is_file()


def test_blend_scores_every_message_with_both_models(home) -> None:
    pipeline = make(home, sentiment_challenger="2", sentiment_blend=0.5)
    pipeline.housekeeping(now=1_700_000_000.0)
    batch, _ = messages(300)
    outputs = pipeline.process(batch, batch[-1].ts)
    rec = orjson.loads(outputs[0].value)
    assert rec["blended_with"] == 2 and rec["model_version"] == 1
    assert pipeline.shadow_scored == 300 and pipeline.agreement() == 1.0


def test_a_correction_may_arrive_before_its_message(home) -> None:
    pipeline = make(home)
    batch, labels = messages(50, seed=41)
    assert pipeline.learn([Correction(batch[10].id, 0)], now=batch[0].ts) == 0
    pipeline.process(batch, batch[-1].ts)
    q = pipeline.quality()
    assert q["corrections_learned"] == 1 and q["corrections_waiting"] == 0 and pipeline.online.updates > 0
    assert batch[10].id not in pipeline.store  # learned once: the text is consumed
    # while a checkpoint serializes the online model, nothing teaches it; housekeeping catches up
    more, _ = messages(50, seed=42)
    pipeline.learn([Correction(more[5].id, 2)], now=more[0].ts)
    pipeline._saving = True
    pipeline.process(more, more[-1].ts)
    assert pipeline.quality()["corrections_waiting"] == 1
    pipeline._saving = False
    pipeline.expire(more[-1].ts)
    assert pipeline.quality()["corrections_learned"] == 2 and pipeline.quality()["corrections_waiting"] == 0


def test_checkpoint_restores_mood_texts_waiting_corrections_and_online_model(home) -> None:
    pipeline = make(home)
    batch, labels = messages(600, seed=51)
    pipeline.process(batch[:500], batch[499].ts)
    names = ("negative", "neutral", "positive")
    pipeline.learn([Correction(m.id, names.index(l)) for m, l in zip(batch[:100], labels[:100])])
    pipeline.learn([Correction(batch[550].id, 0)], now=batch[0].ts)  # waits for a message not yet scored
    updates = pipeline.online.updates
    again = make(home)
    again.restore_checkpoint(pipeline.checkpoint_bytes())
    assert again.online.updates == updates and len(again.store) == 400
    assert again.mood.snapshot() == pipeline.mood.snapshot()
    assert again.quality()["corrections_learned"] == 100 and again.quality()["corrections_waiting"] == 1
    # a message re-delivered after the restart is not counted twice in its channel's mood
    before = sum(c["messages"] for c in again.mood.snapshot().values())
    again.process(batch[400:600], batch[599].ts)
    assert sum(c["messages"] for c in again.mood.snapshot().values()) == before + 100
    assert again.quality()["corrections_learned"] == 101  # the waiting correction met its message
    with pytest.raises(ValueError):
        again.restore_checkpoint(b"not a checkpoint")


def test_a_channel_is_raised_and_cleared_only_with_batches_of_its_partition(home) -> None:
    pipeline = make(home)
    vip = [ChatMessage(f"v{i}", 1_700_000_000.0 + i, "vip", "u", "this is unacceptable") for i in range(5)]
    other = [ChatMessage(f"o{i}", 1_700_000_000.0 + i, "billing", "u", "thanks!") for i in range(5)]
    pipeline.process_batch(vip, list(range(5)), 0, vip[-1].ts)
    pipeline.process_batch(other, list(range(5)), 1, other[-1].ts)
    pipeline._partition = 1
    in_partition_1 = pipeline._of_this_partition(other)
    assert in_partition_1("billing") and not in_partition_1("vip")
    pipeline._partition = None
    assert pipeline._of_this_partition(other) is None  # outside a worker: every channel


def test_mood_check_looks_only_at_the_escalated_channels_it_is_told() -> None:
    from models.sentiment.mood import ChannelMood, MoodConfig

    mood = ChannelMood(MoodConfig(window_s=60, bucket_s=10, min_messages=10, warmup_messages=20, min_hold_s=0))
    t = 0.0
    for i in range(150):
        t += 1.0
        mood.add("vip", t, i % 5 == 0, 0.5, f"m{i}", "meh")
    mood.check(t)
    for i in range(40):
        t += 1.0
        mood.add("vip", t, True, 0.9, f"n{i}", "awful")
    assert [e.state for e in mood.check(t)] == ["raised"]
    t += 600.0  # the window is empty: vip would clear...
    assert mood.check(t, escalated=lambda c: c != "vip") == []  # ...but not with another partition's batch
    assert [e.state for e in mood.check(t, escalated=lambda c: c == "vip")] == ["cleared"]


def test_prior_adaptation_reweights_the_champion_with_its_source_prior(home) -> None:
    import numpy as np

    from models.sentiment.prior import PRIOR_FILE, reweight, write_source_prior

    batch, _ = messages(600, seed=21)
    now = batch[-1].ts

    def probabilities(pipeline: SentimentPipeline) -> np.ndarray:
        recs = [orjson.loads(o.value)["probabilities"] for o in pipeline.process(batch, now)
                if o.topic == "sentiment-scores"]
        return np.array([[p["negative"], p["neutral"], p["positive"]] for p in recs])

    base = probabilities(make(home))
    no_prior = make(home, sentiment_prior_adaptation=True, sentiment_prior_min_messages=100)
    np.testing.assert_array_equal(probabilities(no_prior), base)  # no prior.json beside the model: off (logged)
    assert no_prior.prior is None
    directory = ModelRegistry(Settings(home=home).models_dir).model_path("sentiment", 1).parent
    write_source_prior(directory, np.array([[0.2, 0.6, 0.2]]), "test: a neutral-heavy source")
    try:
        on = make(home, sentiment_prior_adaptation=True, sentiment_prior_min_messages=100)
        got = probabilities(on)
        assert on.prior is not None and on.prior.seen == 600
        np.testing.assert_allclose(got, reweight(base, on.prior.source, on.prior.prior), atol=2e-5)
        assert abs(on.prior.prior[1] - 0.6) > 0.05  # the stream's mix is estimated, not the source's
        assert (got.argmax(1) != base.argmax(1)).any()
    finally:
        (directory / PRIOR_FILE).unlink()

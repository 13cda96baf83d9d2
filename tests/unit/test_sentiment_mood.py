"""Channel mood: an escalation is raised and cleared on a synthetic channel, without flapping."""

from __future__ import annotations

import json
import random

from models.sentiment.mood import ChannelMood, MoodConfig

CFG = MoodConfig(window_s=120, bucket_s=10, min_messages=20, raise_margin=0.2, clear_margin=0.08, raise_z=3.0,
                 baseline_messages=300, warmup_messages=100, min_hold_s=60)


def feed(mood: ChannelMood, rng: random.Random, t: float, seconds: int, share: float, channel: str = "support",
         rate: float = 1.0) -> tuple[float, list]:
    """``seconds`` of messages at ``rate``/s, each negative with probability ``share``; checks once a second."""
    events = []
    for _ in range(seconds):
        t += 1.0
        for k in range(int(rate)):
            neg = rng.random() < share
            mood.add(channel, t, neg, 0.9 if neg else 0.1, f"{channel}-{t}-{k}", "awful" if neg else "fine")
        events += mood.check(t)
    return t, events


def test_escalation_raised_then_cleared_once() -> None:
    rng = random.Random(0)
    mood = ChannelMood(CFG)
    t, events = feed(mood, rng, 0.0, 900, 0.25)  # 15 calm minutes: baseline ~0.25
    assert events == []
    assert abs(mood.channels["support"].baseline - 0.25) < 0.08
    t, events = feed(mood, rng, t, 300, 0.8)  # an angry spell
    assert [e.state for e in events] == ["raised"]
    raised = events[0]
    assert raised.channel == "support" and raised.negative_share >= raised.baseline + CFG.raise_margin
    assert raised.examples and all(x["text"] == "awful" for x in raised.examples)
    assert abs(raised.baseline - 0.25) < 0.08  # the spell did not become the baseline
    t, events = feed(mood, rng, t, 600, 0.25)
    assert [e.state for e in events] == ["cleared"]
    assert events[0].alert_id == raised.alert_id


def test_no_flapping_around_the_threshold_and_min_volume() -> None:
    rng = random.Random(1)
    mood = ChannelMood(CFG)
    t, _ = feed(mood, rng, 0.0, 900, 0.25)
    # hovering near baseline + raise margin: at most one raise, never raise-clear-raise
    t, events = feed(mood, rng, t, 1800, 0.47)
    states = [e.state for e in events]
    assert states.count("raised") <= 1 and "cleared" not in states[:1]
    # a quiet channel: 3 angry messages cannot raise (min volume)
    quiet = ChannelMood(CFG)
    t2, _ = feed(quiet, rng, 0.0, 900, 0.25, channel="vip")
    t2, events = feed(quiet, rng, t2, 3, 1.0, channel="vip")
    assert events == []


def test_state_round_trips_mid_escalation() -> None:
    rng = random.Random(2)
    mood = ChannelMood(CFG)
    t, _ = feed(mood, rng, 0.0, 900, 0.2)
    t, events = feed(mood, rng, t, 200, 0.9)
    assert [e.state for e in events] == ["raised"]
    restored = ChannelMood.from_dict(json.loads(json.dumps(mood.to_dict())))
    assert restored.escalated == ["support"]
    _, events = feed(restored, rng, t, 600, 0.2)
    assert [e.state for e in events] == ["cleared"]


def test_default_settings_catch_the_generators_angry_spells_at_chat_pace() -> None:
    """60,000 synthetic messages at 10/s (the pace `lepton produce sentiment` stamps), true labels:
    escalations come during the channels' angry spells, with the worker's default settings."""
    from connectors.generators import ChatGenerator
    from streams.sentiment import mood_config
    from streams.settings import Settings

    mood = ChannelMood(mood_config(Settings()))
    gen = ChatGenerator(seed=0, start_ts=1_700_000_000.0, rate_per_s=10.0)
    stream = iter(gen)
    raised = []
    for _ in range(300):
        for _ in range(200):
            e, label = next(stream)
            negative = label == "negative"
            mood.add(e["channel"], e["ts"], negative, 0.9 if negative else 0.1, e["id"], e["text"])
        raised += [gen.angry(t.channel) for t in mood.check() if t.state == "raised"]
    assert len(raised) >= 8 and sum(raised) >= 0.85 * len(raised)  # measured: 14 of 15 during a spell

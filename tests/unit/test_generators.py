"""Synthetic generators: deterministic, unique ids, the wire schema, and learnable ground truth."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pandas as pd
import pytest

from connectors.generators import (
    LABELS,
    ChatGenerator,
    SensorGenerator,
    TransactionGenerator,
    chat_messages,
    make_generator,
    sensor_frames,
    transactions,
)
from streams.records import LIMITS, PARSERS

T0 = 1_700_000_000.0
MIDNIGHT = 1_699_920_000.0  # 2023-11-14 00:00 UTC


def take(gen, n):
    return list(itertools.islice(iter(gen), n))


@pytest.mark.parametrize("pipeline", ["fraud", "sentiment", "anomaly"])
def test_deterministic_for_a_seed(pipeline: str) -> None:
    a = take(make_generator(pipeline, seed=11, start_ts=T0), 3000)
    b = take(make_generator(pipeline, seed=11, start_ts=T0), 3000)
    c = take(make_generator(pipeline, seed=12, start_ts=T0), 3000)
    assert a == b
    assert [e for e, _ in a] != [e for e, _ in c]


@pytest.mark.parametrize("pipeline", ["fraud", "sentiment", "anomaly"])
def test_ids_unique_and_time_ordered(pipeline: str) -> None:
    events = [e for e, _ in take(make_generator(pipeline, seed=3, start_ts=T0), 20_000)]
    ids = [e["id"] for e in events]
    assert len(set(ids)) == len(ids) and all(isinstance(i, str) for i in ids)
    ts = np.array([e["ts"] for e in events])
    assert (np.diff(ts) >= 0).all() and ts[0] >= T0
    other_seed = {e["id"] for e, _ in take(make_generator(pipeline, seed=4, start_ts=T0), 1000)}
    assert not other_seed & set(ids)


@pytest.mark.parametrize("pipeline", ["fraud", "sentiment", "anomaly"])
def test_events_pass_the_wire_schema(pipeline: str) -> None:
    import orjson

    parse = PARSERS[pipeline]
    for event, _ in take(make_generator(pipeline, seed=1, start_ts=time.time() - 3600), 500):
        parse(orjson.dumps(event), LIMITS)


def test_transaction_schema_and_label_kept_apart() -> None:
    event, label = next(iter(TransactionGenerator(seed=1, start_ts=T0)))
    assert set(event) == {"id", "ts", "card", "merchant", "amount", "country"}
    assert isinstance(label, bool)
    assert (type(event["ts"]), type(event["amount"]), type(event["card"])) == (float, float, str)
    assert [e for e in itertools.islice(transactions(1, T0), 5)] == [e for e, _ in take(TransactionGenerator(1, T0), 5)]


def test_batch_equals_iteration() -> None:
    pairs = take(TransactionGenerator(seed=2, start_ts=T0), 5000)
    gen = TransactionGenerator(seed=2, start_ts=T0)
    frame = pd.concat([gen.batch(1234), gen.batch(5000 - 1234)], ignore_index=True)
    assert list(frame.columns) == ["id", "ts", "card", "merchant", "amount", "country", "label"]
    rows = frame.to_dict("records")
    assert [({k: v for k, v in r.items() if k != "label"}, r["label"]) for r in rows] == pairs

    big = TransactionGenerator(seed=9).batch(200_000)  # its speed is measured by `lepton bench`'s prefill, not here
    assert len(big) == 200_000 and big["id"].is_unique


def test_fraud_follows_the_handbook_scenarios() -> None:
    gen = TransactionGenerator(seed=5, start_ts=MIDNIGHT)
    df = gen.batch(300_000)
    assert 0.005 < df["label"].mean() < 0.015  # about 1 % (the handbook's data: 0.82 %)
    assert df.loc[df["amount"] > 220, "label"].all()  # scenario 1
    days = (df["ts"].iloc[-1] - df["ts"].iloc[0]) / 86_400
    assert abs(days - 300_000 / gen.events_per_day) < 1.5  # the handbook's pace: ~10k a day
    # scenario 2: a compromised terminal yields fraud on many days; 3: inflated amounts on stolen cards
    fraud = df[df["label"]]
    per_terminal = fraud.groupby("merchant").size()
    assert per_terminal.max() >= 10
    card_mean = df[~df["label"]].groupby("card")["amount"].mean()
    ratio = (fraud["amount"] / fraud["card"].map(card_mean)).dropna()
    assert (ratio > 3).mean() > 0.2
    hours = (df["ts"] % 86_400) / 3600
    assert 10 < hours.mean() < 14 and hours.between(9, 15).mean() > 0.35  # noon ± 5.5 h
    assert df["country"].nunique() == 9


def test_rate_mode_keeps_event_time_at_the_rate() -> None:
    events = [e for e, _ in take(TransactionGenerator(seed=1, start_ts=T0, rate_per_s=500.0), 5000)]
    span = events[-1]["ts"] - events[0]["ts"]
    assert abs(span - 5000 / 500) < 0.01
    assert T0 <= events[0]["ts"] < T0 + 1 / 500


def test_chat_messages_are_varied_and_channels_turn_angry() -> None:
    gen = ChatGenerator(seed=4, start_ts=T0, rate_per_s=50.0)
    pairs = take(gen, 30_000)
    events = [e for e, _ in pairs]
    labels = [y for _, y in pairs]
    assert set(events[0]) == {"id", "ts", "channel", "user", "text"}
    assert set(labels) == set(LABELS)
    shares = {label: labels.count(label) / len(labels) for label in LABELS}
    assert all(0.15 < s < 0.6 for s in shares.values())
    texts = [e["text"] for e in events]
    assert len(set(texts)) > 0.5 * len(texts)  # not a handful of fixed strings
    assert len({e["user"] for e in events}) > 500
    # angry spells: some window of 100 messages in one channel is mostly negative
    by_channel: dict[str, list[str]] = {}
    for e, y in pairs:
        by_channel.setdefault(e["channel"], []).append(y)
    worst = max(
        max(np.convolve(np.array(ys) == "negative", np.ones(100), "valid")) / 100
        for ys in by_channel.values() if len(ys) >= 100
    )
    assert worst > 0.6
    assert abs(events[-1]["ts"] - events[0]["ts"] - 30_000 / 50) < 1
    assert list(itertools.islice(chat_messages(4, T0, 50.0), 3)) == events[:3]


def test_sensor_frames_degrade_and_fail() -> None:
    gen = SensorGenerator(seed=6, start_ts=T0, n_equipment=10, period_s=1.0)
    frame = gen.batch(60_000)
    assert set(frame["equipment_id"]) == set(gen.equipment)
    assert 0.03 < frame["label"].mean() < 0.2
    event, label = next(iter(SensorGenerator(seed=6, start_ts=T0)))
    assert set(event) == {"id", "ts", "equipment_id", "readings"} and isinstance(label, bool)
    assert len(event["readings"]) == 8
    assert all(isinstance(v, float) and math.isfinite(v) for v in event["readings"].values())
    normal, anomalous = frame[~frame["label"]], frame[frame["label"]]
    for sensor in ("accel1_rms", "temperature"):
        assert anomalous[sensor].mean() > normal[sensor].mean() + 2 * normal[sensor].std() / 4
    assert anomalous["flow_rate"].mean() < normal["flow_rate"].mean()
    # one frame per pump per period
    first = frame.groupby("equipment_id")["ts"].apply(lambda s: np.diff(s.to_numpy()).mean())
    assert np.allclose(first, 1.0, atol=0.01)
    assert [e["id"] for e in itertools.islice(sensor_frames(6, T0), 2)] == ["sf-6-0", "sf-6-1"]


def test_unknown_pipeline() -> None:
    with pytest.raises(ValueError, match="unknown pipeline"):
        make_generator("weather")

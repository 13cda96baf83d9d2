"""Online learning from corrections: the text store, the River learner, prequential quality."""

from __future__ import annotations

import math

from connectors.generators import ChatGenerator
from models.sentiment import LABELS
from models.sentiment.online import OnlineSentiment
from models.sentiment.store import TextStore
from streams.records import InvalidRecord
from streams.sentiment import Correction, parse_correction

import pytest


def test_store_is_bounded_by_size_and_age() -> None:
    store = TextStore(max_items=3, ttl_s=100.0)
    store.put_many(["a", "b", "c", "d"], [0.0, 10.0, 20.0, 30.0], ["ta", "tb", "tc", "td"], [0, 1, 2, 0])
    assert len(store) == 3 and store.get("a") is None and store.evicted == 1
    assert store.expire(115.0) == 1  # b (ts 10) is older than 100 s
    assert store.pop("c").text == "tc" and store.pop("c") is None
    assert TextStore.from_dict(store.to_dict()).get("d").label == 0


def test_online_model_learns_from_corrections_prequentially() -> None:
    gen = iter(ChatGenerator(seed=5, start_ts=1_700_000_000.0))
    online = OnlineSentiment(window=500)
    assert math.isnan(online.quality()["online_accuracy"])
    for i in range(1500):
        event, label = next(gen)
        online.learn(event["text"], LABELS.index(label), champion_label=1)  # a champion that says "neutral"
    q = online.quality()
    assert online.updates == 1500
    assert q["online_accuracy"] > 0.9 and q["online_macro_f1"] > 0.85
    assert q["champion_accuracy"] < 0.6  # the constant champion, scored on the same corrections
    assert 0.2 < q["online_champion_agreement"] < 0.7


def test_checkpoint_round_trip(tmp_path) -> None:
    online = OnlineSentiment()
    online.learn("this is awful", 0)
    online.learn("thank you so much", 2)
    online.save(tmp_path / "online.pkl")
    again = OnlineSentiment.load(tmp_path / "online.pkl")
    assert again.updates == 2 and again.predict("awful") == online.predict("awful")


def test_parse_correction() -> None:
    assert parse_correction(b'{"id": "m1", "label": "Negative"}') == Correction("m1", 0)
    assert parse_correction(b'{"id": "m1", "label": 1}') == Correction("m1", 2)
    for bad in (b'{"id": "m1", "label": "angry"}', b'{"label": "neutral"}', b"nope", b'{"id": "m1", "label": true}'):
        with pytest.raises(InvalidRecord):
            parse_correction(bad)

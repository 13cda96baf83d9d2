"""The fraud pipeline in-process: replay guard, label join, expiry, explanations, drift, terminal merge."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.fraud.drift import DebouncedDrift
from models.fraud.features import (
    DAY,
    FEATURES,
    FeatureEngine,
    TerminalCache,
    TerminalParts,
    merge_terminal_groups,
    merge_terminal_states,
)
from models.registry import ModelRegistry
from streams.fraud import APPLIED, FraudPipeline, parse_label, parse_labels
from streams.model_slot import ModelSlot
from streams.records import InvalidRecord, Transaction
from streams.settings import Settings

T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.train import train_fraud

    home = tmp_path_factory.mktemp("fraud-home")
    train_fraud(Settings(home=home), epochs=1, rows=20_000)
    return home


def pipeline(home: Path, tmp_path: Path, **settings) -> FraudPipeline:
    models = ModelRegistry(home / "models")
    slot = ModelSlot(models, "fraud", features=FEATURES)
    slot.load_now()
    return FraudPipeline(slot, Settings(home=tmp_path).topics, Settings(home=tmp_path, **settings))


def txs(n: int, tag: str = "t", start: float = T0, step: float = 60.0) -> list[Transaction]:
    return [Transaction(f"{tag}{i}", start + i * step, f"c{i % 7}", f"m{i % 5}", 10.0 + (i * 37) % 200)
            for i in range(n)]


def scores(outputs) -> dict[str, dict]:
    return {json.loads(o.value)["id"]: json.loads(o.value) for o in outputs if o.topic == "fraud-scores"}


def test_redelivered_batch_is_scored_but_not_counted_twice(home: Path, tmp_path: Path) -> None:
    p = pipeline(home, tmp_path)
    batch = txs(200)
    first = scores(p.process_batch(batch, list(range(100, 300)), 2, T0))
    cards = {k: v for k, v in p.cards.items() if not k.startswith(APPLIED)}
    # The crash came after the state was acknowledged, before the offsets were: the batch comes back,
    # with more records after it.
    more = txs(50, "u", start=T0 + 200 * 60)
    again = scores(p.process_batch(batch + more, list(range(100, 350)), 2, T0))
    assert set(again) == set(first) | {t.id for t in more}, "every input is scored again"
    fresh = pipeline(home, tmp_path / "fresh")
    once = scores(fresh.process_batch(batch + more, list(range(100, 350)), 2, T0))
    assert {k: v for k, v in p.cards.items() if not k.startswith(APPLIED)} == \
        {k: v for k, v in fresh.cards.items() if not k.startswith(APPLIED)}, "state as if each input came once"
    assert {i: once[i]["probability"] for i in once if i.startswith("u")} == \
        {i: again[i]["probability"] for i in again if i.startswith("u")}
    assert cards != {k: v for k, v in p.cards.items() if not k.startswith(APPLIED)}
    # Another partition's offsets are its own.
    p.process_batch(txs(3, "w"), [0, 1, 2], 3, T0)
    assert int.from_bytes(p.cards[f"{APPLIED}3"], "big", signed=True) == 2


def test_labels_join_learn_apply_once_and_expire(home: Path, tmp_path: Path) -> None:
    p = pipeline(home, tmp_path, fraud_log_retention_days=8.0)
    batch = txs(300)
    p.process_batch(batch, list(range(300)), 0, T0)
    assert len(p.scored) == 300
    labels = [json.dumps({"id": t.id, "is_fraud": i % 10 == 0}).encode() for i, t in enumerate(batch[:200])]
    before = p.online.updates
    p.process_labels(labels + [b"not json", b'{"id": "nope", "is_fraud": true}'], 0, T0)
    assert p.online.updates > before
    assert p.champion_quality.get()["labels"] == 200 and p.champion_quality.get()["positives"] == 20
    assert len(p.scored) == 100, "a joined record leaves the log"
    assert p.terminals and all(k.endswith("\x1f0") for k in p.terminals), "partition 0 wrote its own sub-keys"
    updates = p.online.updates
    p.process_labels(labels, 0, T0)  # re-delivered: nothing to join any more
    assert p.online.updates == updates and p.champion_quality.get()["labels"] == 200
    # Labels make the terminal features move for later transactions at those terminals.
    later = scores(p.process([Transaction("late", T0 + 8 * DAY, "c1", "m0", 20.0)], T0))
    assert later["late"]["probability"] >= 0
    # Event time passes the retention, but the labels stopped short of it: the 100 unlabelled records wait
    # (they may still come), until twice the retention; then they expire, a slice per batch.
    p.process_batch(txs(10, "w", start=T0 + 9 * DAY), list(range(900, 910)), 0, T0)
    assert len([k for k in p.scored if k.startswith("t")]) == 100
    for k in range(5):
        p.process_batch(txs(10, f"x{k}", start=T0 + 17 * DAY), list(range(1000 + 10 * k, 1010 + 10 * k)), 0, T0)
    assert not [k for k in p.scored if k.startswith("t")], "records past twice the retention are gone"


def test_labels_days_behind_their_transactions_still_join(home: Path, tmp_path: Path) -> None:
    """Both topics replayed from a backlog: the transactions run days ahead of the labels."""
    p = pipeline(home, tmp_path)  # retention 10 days, the model's label delay 7
    batches = [txs(100, f"d{day}-", start=T0 + day * DAY, step=600.0) for day in range(16)]
    for day, batch in enumerate(batches):
        p.process_batch(batch, list(range(100 * day, 100 * day + 100)), 0, T0)
        if day == 13:  # the labels of the first day come while the transactions are 13 days on
            p.process_labels([json.dumps({"id": t.id, "is_fraud": False}).encode() for t in batches[0]], 0, T0)
    assert p.champion_quality.get()["labels"] == 100
    assert all(f"d{day}-0" in p.scored for day in range(1, 16)), "records past retention wait for their labels"
    late = [json.dumps({"id": t.id, "is_fraud": False}).encode() for batch in batches[1:] for t in batch]
    p.process_labels(late, 0, T0)
    assert p.champion_quality.get()["labels"] == 1600, "every label joined"
    # Labels caught up (they reached day 15.7): the usual horizon, 10 days behind the transactions' clock.
    assert p._log_horizon(0, T0 + 16 * DAY, 7) == T0 + 6 * DAY
    assert p._log_horizon(0, T0 + 18 * DAY, 7) == T0 + 8 * DAY
    p.label_clock[0] = T0 + 2 * DAY  # labels lag: records within 3 days of them stay, at most 20 days
    assert p._log_horizon(0, T0 + 16 * DAY, 7) == T0 - DAY
    assert p._log_horizon(0, T0 + 30 * DAY, 7) == T0 + 10 * DAY
    p.labels_behind = {0}  # ... unless the labels topic has a backlog: they are on their way
    assert p._log_horizon(0, T0 + 30 * DAY, 7) == T0 - DAY


def test_alerts_name_the_features_that_drove_the_score(home: Path, tmp_path: Path) -> None:
    p = pipeline(home, tmp_path, fraud_explain_top=3)
    outputs = p.process(txs(400), T0)
    alerts = [json.loads(o.value) for o in outputs if o.topic.endswith("alerts")]
    threshold = p.slot.scorer.meta.threshold
    flagged = [s for s in scores(outputs).values() if s["probability"] >= threshold]
    assert len(alerts) == len(flagged) > 0
    for a in alerts[:20]:
        top = a["details"]["top_features"]
        assert len(top) == 3 and {t["feature"] for t in top} <= set(FEATURES)
        assert top[0]["contribution"] >= top[1]["contribution"] >= top[2]["contribution"]
        assert a["severity"] in ("warning", "critical") and a["score"] >= threshold


def test_parse_label() -> None:
    assert parse_label(b'{"id": "a", "is_fraud": 1}') == ("a", True)
    for bad in (b"[]", b'{"id": 3, "is_fraud": true}', b'{"id": "a", "is_fraud": "yes"}', None):
        with pytest.raises(InvalidRecord):
            parse_label(bad)


@pytest.mark.parametrize("raws", [
    [b'{"id": "a", "is_fraud": true}', b'{"id": "b", "is_fraud": false}'],  # all valid: the bulk path
    [b'{"id": "a", "is_fraud": 1}', b"[]", b'{"id": "", "is_fraud": true}', None, b"{", b'{"id": "b", "is_fraud": 0}',
     b'{"id": 3, "is_fraud": true}', b'"text"', b'{"id": "c", "is_fraud": "yes"}'],
], ids=["valid", "mixed"])
def test_parse_labels_agrees_with_parse_label(raws) -> None:
    valid = []
    for raw in raws:
        try:
            valid.append(parse_label(raw))
        except InvalidRecord:
            pass
    labels = parse_labels(raws)
    assert list(zip(labels.ids, labels.is_fraud)) == valid and labels.invalid == len(raws) - len(valid)


def test_held_labels_wait_for_their_transactions_and_look_again_only_after_scoring(home: Path, tmp_path: Path,
                                                                                   monkeypatch) -> None:
    from streams.fraud import _LabelWait

    p = pipeline(home, tmp_path, fraud_label_wait_s=3600.0)
    monkeypatch.setattr(p, "transactions_behind", lambda app, partition: True)  # a backlog of transactions
    batch = txs(10)
    wait = _LabelWait(parse_labels([json.dumps({"id": t.id, "is_fraud": False}).encode() for t in batch]), None)
    now = time.monotonic()  # (the clock of fraud_label_wait_s)
    looked = []
    lookup = p._not_logged
    monkeypatch.setattr(p, "_not_logged", lambda ids: looked.append(len(ids)) or lookup(ids))
    assert not p._labels_ready(None, 0, wait, now) and looked == [10]
    assert not p._labels_ready(None, 0, wait, now) and looked == [10], "nothing scored since: no lookup"
    p.process_batch(batch[:6], list(range(6)), 0, T0)
    assert not p._labels_ready(None, 0, wait, now) and looked == [10, 10] and wait.waiting == [t.id for t in batch[6:]]
    p.process_batch(batch[6:], list(range(6, 10)), 0, T0)
    assert p._labels_ready(None, 0, wait, now) and looked == [10, 10, 4], "only the ids still waiting"
    p.join_labels(wait.labels, 0, T0)
    assert p._not_logged([t.id for t in batch]) == [t.id for t in batch], "every label joined its logged record"


def test_drift_on_errors_is_detected_and_debounced() -> None:
    d = DebouncedDrift("error", debounce_s=3600.0)
    rng = np.random.default_rng(0)
    reports = []
    for step in range(400):  # one batch of 50 labels a minute; errors jump at minute 200
        level = 0.02 if step < 200 else 0.5
        if d.update(np.clip(rng.normal(level, 0.01, 50), 0, 1), ts=step * 60.0):
            reports.append(step)
    assert reports and 200 <= reports[0] < 210, reports
    assert d.detections >= len(reports)
    assert all(b - a >= 60 for a, b in zip(reports, reports[1:])), "at most one report an hour"
    quiet = DebouncedDrift("error")
    assert not any(quiet.update(np.clip(rng.normal(0.02, 0.01, 50), 0, 1), ts=s * 60.0) for s in range(400))


def test_drift_alert_and_metric_from_the_pipeline(home: Path, tmp_path: Path) -> None:
    from streams import metrics

    p = pipeline(home, tmp_path)
    counter = metrics.DRIFT_EVENTS.labels("fraud", "score")
    before = counter._value.get()
    out = []
    for k in range(120):  # ordinary amounts, then very large ones: the score distribution moves
        amount = 20.0 if k < 60 else 5000.0
        batch = [Transaction(f"d{k}-{i}", T0 + k * 600 + i, f"c{i}", f"m{i}", amount) for i in range(20)]
        out += p.process(batch, T0)
    drift = [json.loads(o.value) for o in out if o.key.startswith(b"drift:")]
    assert counter._value.get() - before == len(drift) >= 1
    assert drift[0]["subject"] == "drift:score" and drift[0]["severity"] == "warning"


def _labelled_transactions(rng: np.random.Generator, n: int, *, days: int, merchants: int, fraud_rate: float,
                           parts: int) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """Random labelled transactions in time order: times, terminals, fraud flags, label partitions."""
    tx_ts = np.sort(T0 + rng.uniform(0, days * DAY, n))
    merchant = [f"m{i}" for i in rng.integers(0, merchants, n)]
    y = rng.random(n) < fraud_rate
    return tx_ts, merchant, y, rng.integers(0, parts, n)


def test_terminal_state_split_over_partitions_merges_to_the_single_state() -> None:
    eng = FeatureEngine(7)
    rng = np.random.default_rng(1)
    n = 400
    tx_ts, merchant, y, part = _labelled_transactions(rng, n, days=20, merchants=6, fraud_rate=0.2, parts=3)
    card = [f"c{i}" for i in rng.integers(0, 30, n)]
    whole: dict = {}
    split: list[dict] = [{}, {}, {}]
    for lo in range(0, n, 40):  # labels arrive in batches, in time order
        sl = slice(lo, lo + 40)
        now = tx_ts[sl][-1] + 7 * DAY
        eng.apply_labels({}, whole, card[sl], merchant[sl], tx_ts[sl], y[sl], label_ts=now)
        for q in range(3):
            idx = np.flatnonzero(part[sl] == q) + lo
            eng.apply_labels({}, split[q], [card[i] for i in idx], [merchant[i] for i in idx], tx_ts[idx],
                             y[idx], label_ts=now)
    merged = {m: merge_terminal_states([s[m] for s in split if m in s]) for m in whole}
    groups = [[s[m] for s in split if m in s] for m in whole]
    assert merge_terminal_groups(groups) == list(merged.values()), "the vectorised merge is the same"
    probe_ts = [tx_ts[-1] + 7 * DAY + 3600] * 6
    terms = [f"m{i}" for i in range(6)]
    a = eng.transform(probe_ts, ["z"] * 6, terms, [10.0] * 6, {}, whole)
    b = eng.transform(probe_ts, ["z"] * 6, terms, [10.0] * 6, {}, merged)
    cols = [FEATURES.index(f) for f in FEATURES if f.startswith("terminal_") and "streak" not in f]
    np.testing.assert_allclose(a[:, cols], b[:, cols], rtol=1e-6)
    # The scoring path merges the parts on the fly: the features of the merged states, every one.
    split[2] = {m: v for m, v in split[2].items() if m != "m0"}  # a terminal without a part here
    merged = {m: merge_terminal_states([s[m] for s in split if m in s]) for m in whole}
    parts = TerminalParts({m: tuple(s[m] for s in split if m in s) for m in whole})
    assert {len(v) for v in parts.values()} == {2, 3}
    probe = (probe_ts * 3, ["z"] * 18, terms * 3, [10.0] * 18)
    for shift in (0.0, -5 * DAY, -12 * DAY):  # windows over the parts' buckets, not only the latest
        ts = [t + shift for t in probe[0]]
        got = eng.transform(ts, *probe[1:], {}, parts)
        np.testing.assert_allclose(got, eng.transform(ts, *probe[1:], {}, merged), rtol=1e-12)
        assert got[:, FEATURES.index("terminal_count_7d")].min() > 0


def test_a_handbook_file_produces_labels_keyed_like_their_transactions(tmp_path: Path) -> None:
    """`lepton produce fraud --source FILE --label-delay-days N`: labels follow N days later, keyed by card,
    so they reach the partition that holds the logged transaction and the card's state."""
    import pandas as pd

    from connectors.producer import schedule, unzip
    from connectors.replay import read_events_from

    rows = pd.DataFrame({
        "TRANSACTION_ID": range(6),
        "TX_DATETIME": pd.date_range("2018-04-01", periods=6, freq="1D").astype(str),
        "CUSTOMER_ID": [1, 2, 1, 3, 2, 1], "TERMINAL_ID": [10, 11, 12, 10, 11, 12],
        "TX_AMOUNT": [5.0, 7.5, 3.2, 9.9, 1.0, 2.0], "TX_FRAUD": [0, 1, 0, 0, 1, 0],
    })
    path = tmp_path / "handbook.csv"
    rows.to_csv(path, index=False)
    events, labels = unzip(read_events_from("fraud", path))
    sent = list(schedule("fraud", events, labels, label_delay_s=2 * 86_400.0))
    txs_sent = {rec["id"]: (key, rec) for is_label, key, rec in sent if not is_label}
    labels_sent = [(i, key, rec) for i, (is_label, key, rec) in enumerate(sent) if is_label]
    assert len(txs_sent) == 6 and len(labels_sent) == 6
    order = [rec["id"] for _, _, rec in sent]
    for i, key, label in labels_sent:
        tx_key, tx = txs_sent[label["id"]]
        assert key == tx_key == str(tx["card"]), "a label is keyed by its transaction's card"
        assert set(label) == {"id", "is_fraud"}
        later = [txs_sent[o][1]["ts"] for o in order[:i] if o in txs_sent]
        assert max(later) >= tx["ts"] + 2 * 86_400 or i >= len(sent) - 2, "released after the delay (or at the end)"
    assert sorted(rec["is_fraud"] for _, _, rec in labels_sent) == [False] * 4 + [True] * 2


def test_cached_terminal_states_follow_the_table(home: Path, tmp_path: Path) -> None:
    """Labels on several partitions, scoring in between: the cached terminal sub-states always equal
    those read afresh from the table (the cache sees this worker's label writes and expiry)."""
    p = pipeline(home, tmp_path, partitions=3)
    rng = np.random.default_rng(2)
    batches = [txs(120, f"b{k}", start=T0 + k * 3 * DAY, step=300.0) for k in range(8)]
    for k, batch in enumerate(batches):
        part = k % 3
        p.process_batch(batch, list(range(1000 * k, 1000 * k + len(batch))), part, T0)
        if k >= 3:  # labels of a batch scored earlier, split over the partitions
            ids = [t.id for t in batches[k - 3]]
            for q in range(3):
                raws = [json.dumps({"id": i, "is_fraud": bool(rng.random() < 0.3)}).encode() for i in ids[q::3]]
                p.process_labels(raws, q, T0)
        merchants = [t.merchant for t in batch]
        engine = p.engine(7)
        cached = decoded(p._terminal_view(merchants, engine), merchants)
        p._tcache.clear()
        assert decoded(p._terminal_view(merchants, engine), merchants) == cached, f"batch {k}"
    assert len({k.rpartition("\x1f")[2] for k in p.terminals}) == 3, "every partition wrote sub-keys"


def decoded(cache: TerminalCache, keys: list[str]) -> dict:
    """Each key's cached parts: part id -> (header, first day, cumulative counts)."""
    out = {}
    for m in set(keys):
        row = cache.rows[m]
        out[m] = {q: (cache.head[row, k].tolist(), int(cache.base[row, k]), cache.cum[row, k].tobytes())
                  for q, k in enumerate(cache.slot_of[row].tolist()) if k >= 0}
    return out


class Decoded(dict):
    """A state mapping that hands the engine's decoded writes to a terminal cache (as the worker's sub-keys do)."""

    def __init__(self, cache: TerminalCache, part: int) -> None:
        super().__init__()
        self.cache, self.part = cache, part

    def update_decoded(self, items, headers, buckets, bucket_key) -> None:
        self.update(items)
        self.cache.store_decoded(self.part, list(items), headers, buckets, bucket_key)


def test_terminal_cache_gives_the_features_of_the_parts_bit_for_bit() -> None:
    """The worker's decoded terminal cache and the parts' bytes give the same features to the last bit,
    with parts added in any order, states rewritten, terminals dropped and reloaded."""
    eng = FeatureEngine(7)
    rng = np.random.default_rng(3)
    n = 3000
    tx_ts, merchant, y, part = _labelled_transactions(rng, n, days=60, merchants=40, fraud_rate=0.15, parts=4)
    split: list[dict] = [{}, {}, {}, {}]
    cache = TerminalCache(days=eng.terminal_keep_days + 10)
    order: dict[str, list[int]] = {}  # each terminal's parts in the order the cache took them

    def parts_view(keys):
        return TerminalParts({m: tuple(split[q][m] for q in order[m]) for m in keys if order.get(m)})

    for lo in range(0, n, 150):  # labels arrive in batches per partition, in time order
        sl = slice(lo, lo + 150)
        now = tx_ts[sl][-1] + 7 * DAY
        for q in rng.permutation(4).tolist():
            idx = np.flatnonzero(part[sl] == q) + lo
            written = Decoded(cache, q) if lo % 300 else {}  # the engine's arrays, or the bytes decoded again
            eng.apply_labels({}, written, ["c"] * len(idx), [merchant[i] for i in idx], tx_ts[idx], y[idx],
                             label_ts=now)
            split[q].update(written)
            if not isinstance(written, Decoded):
                cache.store(q, list(written), list(written.values()))
            for m in written:
                if m in cache and q not in order[m]:
                    order[m].append(q)
        if lo % 600 == 0 and len(cache):  # a terminal dropped (expiry): read again from the parts later
            gone = sorted(cache.rows)[0]
            cache.discard(gone)
            del order[gone]
        keys = sorted({f"m{i}" for i in rng.integers(0, 40, 200)})
        unread = [m for m in keys if m not in cache]
        cache.load(unread, [{q: split[q][m] for q in range(4) if m in split[q]} for m in unread])
        order.update({m: [q for q in range(4) if m in split[q]] for m in unread})
        ts = now + rng.uniform(-3 * DAY, DAY, len(keys))
        args = (ts, ["z"] * len(keys), keys, [10.0] * len(keys))
        assert eng.transform(*args, {}, cache).tobytes() == eng.transform(*args, {}, parts_view(keys)).tobytes()
    assert max(len(v) for v in order.values()) == 4 and cache.head.shape[1] == 4


def test_a_time_scaled_model_sees_compressed_traffic_as_its_training_pace(home: Path, tmp_path: Path) -> None:
    """The demo's model (time_scale k) scores traffic k times faster exactly as the normal model scores the same
    traffic at normal pace: same features, scores and state; latency stays in event time."""
    k = 4000.0
    normal, fast = pipeline(home, tmp_path / "normal"), pipeline(home, tmp_path / "fast")
    fast.slot.scorer.meta.extra["time_scale"] = k
    slow_txs = txs(400, step=600.0)  # 6 days of a card's life...
    fast_txs = [replace(t, ts=t.ts / k) for t in slow_txs]  # ...in about 2 minutes of event time
    now = fast_txs[-1].ts + 0.25
    a = scores(normal.process_batch(slow_txs, list(range(400)), 0, now * k))
    b = scores(fast.process_batch(fast_txs, list(range(400)), 0, now))
    assert [a[i]["probability"] for i in a] == [b[i]["probability"] for i in a]
    assert b["t399"]["latency_ms"] == pytest.approx(250.0)
    labels = [json.dumps({"id": t.id, "is_fraud": i % 9 == 0}).encode() for i, t in enumerate(slow_txs[:200])]
    normal.process_labels(labels, 0, now * k)
    fast.process_labels(labels, 0, now)
    assert dict(normal.cards.items()) == dict(fast.cards.items())
    assert dict(normal.terminals.items()) == dict(fast.terminals.items())
    more = txs(100, "u", start=slow_txs[-1].ts + 600.0, step=600.0)
    c = scores(normal.process_batch(more, list(range(400, 500)), 0, now * k))
    d = scores(fast.process_batch([replace(t, ts=t.ts / k) for t in more], list(range(400, 500)), 0, now))
    assert [c[i]["probability"] for i in c] == [d[i]["probability"] for i in c]


def test_log_queue_starts_from_the_table_in_time_order_and_forgets_labelled_ids() -> None:
    """After a restart the log's expiry order comes from the table; labelled ids do not pile up."""
    import struct

    from streams.fraud import LOG_COMPACT_MIN, _LogQueue
    from streams.state.table import MemoryTable

    table = MemoryTable()
    rec = lambda t: struct.pack("<d", t) + b"rest"  # noqa: E731 - a logged record starts with its time
    table.update_many({"late": rec(300.0), "early": rec(100.0), "mid": rec(200.0)})
    table.flush(1)
    table.update_many({"other": rec(50.0)})
    table.flush(2)
    queue = _LogQueue(table, 1)
    assert list(queue) == ["early", "mid", "late"], "this partition's records, oldest first"
    assert queue.expire(table, 1, horizon=250.0, budget=10) == 2
    table.flush(1)
    assert sorted(table) == ["late", "other"] and list(queue) == ["late"]
    # Ids whose record a label took are compacted away once they are most of the queue.
    ids = [f"t{i}" for i in range(3 * LOG_COMPACT_MIN)]
    table.update_many({i: rec(400.0) for i in ids})
    queue.append(ids)
    table.update_many(dict.fromkeys(ids[:-10]))  # labelled: popped from the log
    queue.expire(table, 1, horizon=250.0, budget=10)
    assert list(queue) == ["late", *ids[-10:]]


def test_log_queue_expires_across_batches_within_its_budget_and_stays_out_of_the_gc() -> None:
    """Expiry walks the per-batch chunks in order, stops at the budget or the horizon; chunks are untracked."""
    import gc
    import struct

    from streams.fraud import _LogQueue
    from streams.state.table import MemoryTable

    table = MemoryTable()
    queue = _LogQueue(table, 0)
    for b in range(5):  # five batches of three, times 0..14
        ids = [f"b{b}-{i}" for i in range(3)]
        table.update_many({k: struct.pack("<d", 3 * b + i) for i, k in enumerate(ids)})
        queue.append(ids)
    table.flush(0)
    assert queue.expire(table, 0, horizon=100.0, budget=4) == 4, "the budget caps the pops, across a batch boundary"
    table.flush(0)
    assert list(queue)[:2] == ["b1-1", "b1-2"] and len(queue) == 11
    assert queue.expire(table, 0, horizon=8.5, budget=100) == 5, "stops at the first record inside the horizon"
    table.flush(0)
    assert list(queue) == ["b3-0", "b3-1", "b3-2", "b4-0", "b4-1", "b4-2"] and sorted(table) == list(queue)
    gc.collect()
    assert not any(gc.is_tracked(chunk) for chunk in queue.chunks), "full collections skip the waiting ids"


def test_log_queue_reads_a_step_at_a_time_up_to_the_horizon(monkeypatch: pytest.MonkeyPatch) -> None:
    """Expiry reads the head a few ids at a time: ids past the first one inside the horizon are not read."""
    import struct

    from streams.fraud import LOG_READ_STEP, _LogQueue
    from streams.state.table import MemoryTable

    table = MemoryTable()
    queue = _LogQueue(table, 0)
    ids = [f"t{i}" for i in range(5 * LOG_READ_STEP)]  # one batch (one chunk), times 0, 1, ...
    table.update_many({k: struct.pack("<d", float(i)) for i, k in enumerate(ids)})
    queue.append(ids)
    gone = LOG_READ_STEP + 7
    table.update_many(dict.fromkeys(ids[:gone]))  # labelled: popped from the log
    table.flush(0)
    reads: list[int] = []
    get_many = table.get_many
    monkeypatch.setattr(table, "get_many", lambda keys: reads.append(len(keys)) or get_many(keys))
    horizon = 2 * LOG_READ_STEP + 3
    assert queue.expire(table, 0, horizon=float(horizon), budget=10 * len(ids)) == horizon - gone
    table.flush(0)
    assert list(queue) == ids[horizon:] and sorted(table) == sorted(ids[horizon:])
    assert sum(reads) <= horizon + LOG_READ_STEP, "read a step at a time, not the rest of the chunk"


def _with_tables(p: FraudPipeline) -> FraudPipeline:
    import faust

    from streams.state.table import BatchTable

    app = faust.App("merge", broker="memory://", store="memory://")
    p.cards, p.scored, p.terminals = (BatchTable(app, name, partitions=p.partitions)
                                      for name in ("fraud-cards", "fraud-scored", "fraud-terminals"))
    return p


def test_partitions_scored_in_one_call_equal_one_call_each(home: Path, tmp_path: Path) -> None:
    """process_batches (a fetch's partitions together) gives each batch exactly the outputs, changelog
    records and state that one call per batch gives; a re-delivered batch among them is still not
    counted twice."""
    from streams.pipeline import Group

    def run(merged: bool) -> tuple[list[list[tuple]], dict, dict]:
        p = _with_tables(pipeline(home, tmp_path / str(merged), partitions=3))
        got = []
        for k in range(4):
            groups = [Group([replace(t, card=f"{t.card}-p{q}") for t in txs(90 + 10 * q, f"k{k}q{q}-",
                                                                               start=T0 + k * DAY, step=500.0)],
                            list(range(100 * k, 100 * k + 90 + 10 * q)), q) for q in range(3)]
            if k == 3:  # partition 1's batch comes back after a crash, with more
                groups[1] = Group(old := last[1].events + groups[1].events[:5],
                                  list(range(200, 200 + len(old))), 1)
            last = groups
            outs = p.process_batches(groups, T0) if merged else [p.process_batch(*g, T0) for g in groups]
            got.append([sorted((o.topic, o.key, o.value) for o in batch if b'"latency_ms"' not in (o.value or b""))
                        + sorted((o.key, json.loads(o.value)["probability"]) for o in batch
                                 if o.topic == "fraud-scores") for batch in outs])
            ids = [json.loads(o.value)["id"] for o in outs[1] if o.topic == "fraud-scores"]
            assert ids == [t.id for t in groups[1].events], "each batch gets its own scores, in order"
        return got, dict(p.cards.items()), dict(p.scored.items())

    one_each, merged = run(False), run(True)
    assert merged == one_each
    got, cards, scored = merged
    assert {o[0] for o in got[0][0] if len(o) == 3} >= {"alerts", "merge-fraud-cards-changelog",
                                                           "merge-fraud-scored-changelog"}
    assert len(cards) == 7 * 3 + 3 and len(scored) > 900  # 7 cards per partition, 3 applied offsets


def test_cost_benchmark_compares_two_settings_in_one_process(home: Path, tmp_path: Path) -> None:
    """`fraud_process --versus`: both pipelines process the same stream (same outputs); the result has both
    costs and their ratio; a name that is not a setting is refused."""
    from connectors.generators import TransactionGenerator
    from streams.bench import fraud_process

    frame = TransactionGenerator(seed=1, start_ts=T0).batch(30_000)
    settings = Settings(home=home)
    result = fraud_process.pipeline_cost(frame, settings, batch_size=1000, warm_days=1.0, rows=3000,
                                         versus={"max_merged_batches": 1})
    assert 2000 <= result["transactions"] <= 3000 and result["us_per_tx"] > 0 and result["harness_us_per_tx"] > 0
    versus = result["versus"]
    assert versus["outputs"] == result["outputs"] > 2000, "the same stream, the same outputs"
    assert versus["ratio"] == pytest.approx(versus["us_per_tx"] / result["us_per_tx"], rel=0.01)
    # (ONNX on merged or separate batches can round a logged score differently in the last bit)
    assert 0 <= versus["differing_batches"] <= result["transactions"] // 1000 + 3
    with pytest.raises(SystemExit):
        fraud_process.main(["--versus", "no_such_setting=1"])
    # --baseline-tree: the second pipeline runs another checkout's code (here this one, imported again).
    import streams

    tree = Path(streams.__file__).resolve().parents[1]
    result = fraud_process.pipeline_cost(frame, settings, batch_size=1000, warm_days=1.0, rows=2000, baseline=tree)
    versus = result["versus"]
    assert versus["code"] == str(tree) and versus["differing_batches"] == 0 and versus["outputs"] == result["outputs"]
    assert sys.modules["streams"] is streams, "this process's own modules are put back"
    with pytest.raises(ValueError):
        fraud_process.pipeline_cost(frame, settings, rows=1000, warm_days=1.0, baseline=tmp_path)

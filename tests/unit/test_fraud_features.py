"""Fraud features: the engine against a brute-force pandas computation, state bounds, labels, JSON."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from connectors.generators import TransactionGenerator
from models.fraud.features import (
    AGE_CAP_DAYS,
    CARD_KEEP_DAYS,
    CARD_LAYOUT,
    DAY,
    FEATURES,
    GAP_CAP_S,
    TERMINAL_LAYOUT,
    FeatureEngine,
    decode,
    from_json,
    to_json,
)

DELAY = 7
START = 1_530_000_000.0  # 2018-06-26, a Tuesday


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    """~60 days of a small world (100 cards, 200 terminals): a few thousand rows, some frauds."""
    gen = TransactionGenerator(seed=7, start_ts=START, n_customers=100, n_terminals=200, radius=20.0)
    df = gen.batch(13_000)
    assert df["label"].sum() > 20
    return df


def run_engine(df: pd.DataFrame, seed: int = 0, state_format: str = "bytes"
               ) -> tuple[np.ndarray, np.ndarray, dict, dict, FeatureEngine]:
    """Replay in batches of random sizes; labels applied at each batch's start. Returns X and batch starts."""
    rng = np.random.default_rng(seed)
    eng = FeatureEngine(DELAY, state_format=state_format)
    cards: dict = {}
    terms: dict = {}
    ts = df["ts"].to_numpy()
    card = df["card"].to_numpy(dtype=object)
    term = df["merchant"].to_numpy(dtype=object)
    amount = df["amount"].to_numpy()
    y = df["label"].to_numpy()
    arrival = ts + DELAY * DAY
    X = np.empty((len(df), len(FEATURES)), dtype=np.float32)
    batch_start = np.empty(len(df))
    a, labelled = 0, 0
    while a < len(df):
        b = min(len(df), a + int(rng.integers(1, 400)))
        now = ts[a]
        upto = int(np.searchsorted(arrival, now, side="right"))
        if upto > labelled:
            eng.apply_labels(cards, terms, card[labelled:upto], term[labelled:upto], ts[labelled:upto],
                             y[labelled:upto], label_ts=now)
            labelled = upto
        X[a:b] = eng.transform(ts[a:b], card[a:b], term[a:b], amount[a:b], cards, terms)
        batch_start[a:b] = now
        a = b
    return X, batch_start, cards, terms, eng


@pytest.fixture(scope="module")
def engine_run(small):
    return run_engine(small)


def reference(df: pd.DataFrame, batch_start: np.ndarray) -> pd.DataFrame:
    """The same features by brute force: every row joined with every row of its card / terminal."""
    d = df.reset_index(drop=True).assign(i=np.arange(len(df)), bs=batch_start)
    d["day"] = np.floor(d["ts"] / DAY).astype(int)
    d["phi"] = d["ts"] / DAY - d["day"]
    out = pd.DataFrame(index=d.index)
    out["amount"] = d["amount"]
    out["log_amount"] = np.log1p(d["amount"])
    stamp = pd.to_datetime(d["ts"], unit="s", utc=True)
    out["is_weekend"] = (stamp.dt.day_of_week >= 5).astype(float)
    out["is_night"] = (stamp.dt.hour <= 6).astype(float)

    # Cards: rows j of the same card up to row i (time order, ties by position), i included.
    c = d.merge(d[["card", "i", "ts", "day", "amount", "label"]], on="card", suffixes=("", "_j"))
    past = c[(c["ts_j"] < c["ts"]) | ((c["ts_j"] == c["ts"]) & (c["i_j"] <= c["i"]))].copy()
    past["q_j"] = past["amount_j"] ** 2
    win = {}
    for w in (1, 7, 14, 30):
        full = past[(past["day_j"] > past["day"] - w) & (past["day_j"] <= past["day"])]
        edge = past[past["day_j"] == past["day"] - w]
        sums = full.groupby("i")[["amount_j", "q_j"]].agg(["count", "sum"])
        n = full.groupby("i").size().reindex(d.index, fill_value=0).astype(float)
        s = full.groupby("i")["amount_j"].sum().reindex(d.index, fill_value=0.0)
        q = full.groupby("i")["q_j"].sum().reindex(d.index, fill_value=0.0)
        weight = 1.0 - d["phi"]
        n += weight * edge.groupby("i").size().reindex(d.index, fill_value=0)
        s += weight * edge.groupby("i")["amount_j"].sum().reindex(d.index, fill_value=0.0)
        q += weight * edge.groupby("i")["q_j"].sum().reindex(d.index, fill_value=0.0)
        win[w] = (n, s, q)
        del sums
    for w in (1, 7, 30):
        out[f"card_count_{w}d"] = win[w][0]
        out[f"card_mean_{w}d"] = win[w][1] / win[w][0]
    n30, s30, q30 = win[30]
    a = d["amount"]
    n_prev = n30 - 1
    has = n_prev >= 1 - 1e-9
    mean_prev = np.where(has, (s30 - a) / n_prev.where(has, 1.0), a).clip(min=0)
    var_prev = np.where(has, ((q30 - a * a) / n_prev.where(has, 1.0) - mean_prev ** 2).clip(lower=0), 0.0)
    out["card_log_gap"] = 0.0  # filled below
    out["card_log_ratio"] = np.log1p(a) - np.log1p(mean_prev)
    out["card_amount_z"] = np.clip((a - mean_prev) / np.sqrt(var_prev + (0.1 * mean_prev) ** 2 + 1), -20, 50)
    prev_ts = past[past["i_j"] != past["i"]].groupby("i")["ts_j"].max().reindex(d.index)
    gap = (d["ts"] - prev_ts).clip(0, GAP_CAP_S).fillna(GAP_CAP_S)
    out["card_log_gap"] = np.log1p(gap)
    known_c = c[(c["ts_j"] + DELAY * DAY <= c["bs"]) & c["label_j"]]
    last_fraud = known_c.groupby("i")["ts_j"].max().reindex(d.index)
    out["card_fraud_age"] = ((d["ts"] - last_fraud) / DAY).clip(0, AGE_CAP_DAYS).fillna(AGE_CAP_DAYS)

    # Terminals: labels that have arrived by the row's batch start.
    t = d.merge(d[["merchant", "ts", "day", "label"]], on="merchant", suffixes=("", "_j"))
    known = t[t["ts_j"] + DELAY * DAY <= t["bs"]].copy()
    end = known["day"] - DELAY
    for w in (1, 7, 30):
        full = known[(known["day_j"] > end - w) & (known["day_j"] <= end)]
        edge = known[known["day_j"] == end - w]
        weight = 1.0 - d["phi"]
        n = full.groupby("i").size().reindex(d.index, fill_value=0) + weight * edge.groupby("i").size().reindex(
            d.index, fill_value=0)
        f = full.groupby("i")["label_j"].sum().reindex(d.index, fill_value=0) + weight * edge.groupby("i")[
            "label_j"].sum().reindex(d.index, fill_value=0)
        out[f"terminal_count_{w}d"] = n
        out[f"terminal_risk_{w}d"] = np.where(n > 1e-9, f / n.where(n > 1e-9, 1.0), 0.0)
    lf = known[known["label_j"]].groupby("i")["ts_j"].max().reindex(d.index).fillna(0.0)
    ll = known[~known["label_j"]].groupby("i")["ts_j"].max().reindex(d.index).fillna(0.0)
    run = known[known["label_j"] & (known["ts_j"] > ll.reindex(known["i"]).to_numpy())]
    ss = run.groupby("i")["ts_j"].min().reindex(d.index)
    sc = run.groupby("i").size().reindex(d.index, fill_value=0)
    streak = lf > ll
    out["terminal_fraud_age"] = np.where(lf > 0, ((d["ts"] - lf) / DAY).clip(0, AGE_CAP_DAYS), AGE_CAP_DAYS)
    out["terminal_streak_age"] = np.where(streak, ((d["ts"] - ss) / DAY).clip(0, AGE_CAP_DAYS), AGE_CAP_DAYS)
    out["terminal_last_fraud"] = streak.astype(float)
    out["terminal_streak_frauds"] = np.where(streak, sc.clip(upper=30), 0.0)
    n14, s14, _ = win[14]
    n_old, s_old = n30 - n14, s30 - s14
    has_old = n_old >= 1 - 1e-9
    mean_old = np.where(has_old, s_old / n_old.where(has_old, 1.0), mean_prev)
    out["card_log_ratio_old"] = np.log1p(a) - np.log1p(np.clip(mean_old, 0, None))
    return out[FEATURES]


def test_features_match_a_brute_force_pandas_computation(small, engine_run) -> None:
    X, batch_start, *_ = engine_run
    ref = reference(small, batch_start).to_numpy(dtype=np.float64)
    for j, name in enumerate(FEATURES):
        np.testing.assert_allclose(X[:, j], ref[:, j], rtol=2e-5, atol=2e-3, err_msg=name)
    # The label-based features were exercised, not just zero.
    assert (X[:, FEATURES.index("terminal_last_fraud")] > 0).sum() > 10
    assert (X[:, FEATURES.index("terminal_risk_30d")] > 0).sum() > 10
    assert (X[:, FEATURES.index("card_fraud_age")] < AGE_CAP_DAYS).sum() > 5


def test_batching_does_not_change_features(small, engine_run) -> None:
    X, *_ = engine_run
    X2, *_ = run_engine(small, seed=1)  # other batch boundaries (labels applied at other times)
    same = [FEATURES.index(n) for n in FEATURES if not n.startswith(("terminal_", "card_fraud"))]
    np.testing.assert_allclose(X[:, same], X2[:, same], rtol=1e-6, atol=1e-4)


def test_json_state_format_gives_the_same_features(small, engine_run) -> None:
    X, _, cards, _, _ = engine_run
    X_json, _, cards_json, terms_json, _ = run_engine(small, state_format="json")
    np.testing.assert_array_equal(X, X_json)
    assert all(isinstance(v, list) for v in (*cards_json.values(), *terms_json.values()))
    assert {k: to_json(v) for k, v in cards.items()} == cards_json


def test_a_shuffled_batch_gives_the_same_rows() -> None:
    eng = FeatureEngine(DELAY)
    gen = TransactionGenerator(seed=3, start_ts=START, n_customers=30, n_terminals=50, radius=30.0)
    df = gen.batch(3000)
    warm, batch = df.iloc[:2500], df.iloc[2500:]
    cards: dict = {}
    eng.transform(warm["ts"], warm["card"].tolist(), warm["merchant"].tolist(), warm["amount"], cards, {})
    args = lambda b: (b["ts"].to_numpy(), b["card"].tolist(), b["merchant"].tolist(), b["amount"].to_numpy())
    in_order = eng.transform(*args(batch), copy.deepcopy(cards), {})
    perm = np.random.default_rng(0).permutation(len(batch))
    shuffled = eng.transform(*args(batch.iloc[perm]), copy.deepcopy(cards), {})
    np.testing.assert_allclose(shuffled, in_order[perm], rtol=1e-6)


def test_state_stays_bounded_and_expired_keys_change_nothing(small, engine_run) -> None:
    _, _, cards, terms, eng = engine_run
    assert max(len(decode(s, CARD_LAYOUT)["buckets"]) for s in cards.values()) <= CARD_KEEP_DAYS + 1
    assert max(len(decode(s, TERMINAL_LAYOUT)["buckets"]) for s in terms.values()) <= eng.terminal_keep_days + 1
    assert max(len(s) for s in cards.values()) <= 8 * (2 + 4 * (CARD_KEEP_DAYS + 1))  # bytes
    # 60 days later everything has expired: dropping the keys gives the same features as keeping them.
    now = float(small["ts"].iloc[-1]) + 60 * DAY
    assert all(eng.card_expired(s, now) for s in cards.values())
    assert all(eng.terminal_expired(s, now) for s in terms.values())
    batch = small.iloc[:50]
    args = (batch["ts"].to_numpy() + (now - small["ts"].iloc[0]), batch["card"].tolist(), batch["merchant"].tolist(),
            batch["amount"].to_numpy())
    kept = eng.transform(*args, copy.deepcopy(cards), copy.deepcopy(terms))
    dropped = eng.transform(*args, {}, {})
    np.testing.assert_allclose(kept, dropped, rtol=1e-6)
    # ... while a week later nothing has.
    soon = float(small["ts"].iloc[-1]) + 7 * DAY
    assert not any(eng.card_expired(s, soon) for s in cards.values())


def test_labels_build_runs_of_frauds_in_any_order() -> None:
    eng = FeatureEngine(DELAY)
    terms: dict = {}
    cards: dict = {}
    t0 = START
    # legit, fraud, fraud at one terminal, applied in reverse order: the run starts at the first fraud.
    eng.apply_labels(cards, terms, ["c1", "c2", "c3"], ["t", "t", "t"], [t0 + 3, t0 + 2, t0 + 1],
                     [True, True, False], label_ts=t0 + 8 * DAY)
    st = decode(terms["t"], TERMINAL_LAYOUT)
    assert (st["lf"], st["ll"], st["ss"], st["sc"]) == (t0 + 3, t0 + 1, t0 + 2, 2.0)
    assert decode(cards["c1"], CARD_LAYOUT)["f"] == t0 + 3 and decode(cards["c2"], CARD_LAYOUT)["f"] == t0 + 2
    assert "c3" not in cards
    x = eng.transform([t0 + 8 * DAY], ["c9"], ["t"], [10.0], cards, terms)[0]
    assert x[FEATURES.index("terminal_last_fraud")] == 1.0
    assert x[FEATURES.index("terminal_streak_frauds")] == 2.0
    assert x[FEATURES.index("terminal_streak_age")] == pytest.approx((8 * DAY - 2) / DAY)
    assert x[FEATURES.index("terminal_count_30d")] == pytest.approx(3.0)
    assert x[FEATURES.index("terminal_risk_30d")] == pytest.approx(2 / 3)
    # A later legitimate label ends the run; the terminal's last fraud is still remembered.
    eng.apply_labels(cards, terms, ["c4"], ["t"], [t0 + 4], [False], label_ts=t0 + 8 * DAY + 4)
    st = decode(terms["t"], TERMINAL_LAYOUT)
    assert (st["lf"], st["ll"], st["ss"], st["sc"]) == (t0 + 3, t0 + 4, 0.0, 0.0)
    x = eng.transform([t0 + 8 * DAY + 5], ["c9"], ["t"], [10.0], cards, terms)[0]
    assert x[FEATURES.index("terminal_last_fraud")] == 0.0
    assert x[FEATURES.index("terminal_streak_age")] == AGE_CAP_DAYS
    assert x[FEATURES.index("terminal_fraud_age")] == pytest.approx((8 * DAY + 2) / DAY)


def test_labels_count_only_in_the_delayed_window() -> None:
    eng = FeatureEngine(DELAY)
    terms: dict = {}
    t0 = np.floor(START / DAY) * DAY  # midnight
    eng.apply_labels({}, terms, ["c"], ["t"], [t0 + 1000], [True], label_ts=t0 + 1000 + DELAY * DAY)
    risk = FEATURES.index("terminal_risk_1d")
    # Within the delayed 1-day window (t-8d, t-7d] of a transaction 7 days + a bit later: counted.
    assert eng.transform([t0 + DELAY * DAY + 2000], ["c"], ["t"], [1.0], {}, terms)[0, risk] == 1.0
    # 9 days later the label is older than t-8d: out of the 1-day window, still in the 7-day one.
    x = eng.transform([t0 + 9 * DAY + 2000], ["c"], ["t"], [1.0], {}, terms)[0]
    assert x[risk] == 0.0 and x[FEATURES.index("terminal_risk_7d")] == 1.0


def test_state_survives_a_json_round_trip(small) -> None:
    eng = FeatureEngine(DELAY)
    cards: dict = {}
    terms: dict = {}
    head, tail = small.iloc[:6000], small.iloc[6000:6500]
    eng.transform(head["ts"], head["card"].tolist(), head["merchant"].tolist(), head["amount"], cards, terms)
    eng.apply_labels(cards, terms, head["card"].tolist(), head["merchant"].tolist(), head["ts"], head["label"],
                     label_ts=float(head["ts"].iloc[-1]))
    revived_cards = {k: from_json(json.loads(json.dumps(to_json(v)))) for k, v in cards.items()}
    revived_terms = {k: from_json(json.loads(json.dumps(to_json(v)))) for k, v in terms.items()}
    args = (tail["ts"].to_numpy(), tail["card"].tolist(), tail["merchant"].tolist(), tail["amount"].to_numpy())
    np.testing.assert_array_equal(eng.transform(*args, cards, terms),
                                  eng.transform(*args, revived_cards, revived_terms))


def test_each_key_is_written_once_per_batch(small) -> None:
    class Counting(dict):
        writes = 0

        def __setitem__(self, key, value):
            Counting.writes += 1
            super().__setitem__(key, value)

    cards = Counting()
    batch = small.iloc[:500]
    FeatureEngine(DELAY).transform(batch["ts"], batch["card"].tolist(), batch["merchant"].tolist(),
                                   batch["amount"], cards, {})
    assert Counting.writes == batch["card"].nunique()


def test_bad_input_is_refused() -> None:
    eng = FeatureEngine(DELAY)
    with pytest.raises(ValueError, match="differ in length"):
        eng.transform([1.0, 2.0], ["a"], ["t", "t"], [1.0, 2.0], {}, {})
    with pytest.raises(ValueError, match="finite"):
        eng.transform([float("nan")], ["a"], ["t"], [1.0], {}, {})
    with pytest.raises(ValueError, match="whole number"):
        FeatureEngine(1.5)  # type: ignore[arg-type]
    assert eng.transform([], [], [], [], {}, {}).shape == (0, len(FEATURES))


def _replay_with_label_points(df: pd.DataFrame, sizes: np.ndarray, label_every: int = 500) -> np.ndarray:
    """Features with labels applied every ``label_every`` rows (the same points whatever the batches)."""
    eng = FeatureEngine(DELAY)
    cards: dict = {}
    terms: dict = {}
    ts, amount, y = df["ts"].to_numpy(), df["amount"].to_numpy(), df["label"].to_numpy()
    card, term = df["card"].tolist(), df["merchant"].tolist()
    X = np.empty((len(df), len(FEATURES)), dtype=np.float32)
    labelled = 0
    cuts = np.unique(np.r_[np.cumsum(sizes), np.arange(0, len(df), label_every), len(df)].clip(0, len(df)))
    for a, b in zip(cuts[:-1], cuts[1:]):
        if a % label_every == 0:
            upto = int(np.searchsorted(ts + DELAY * DAY, ts[a], side="right"))
            if upto > labelled:
                eng.apply_labels(cards, terms, card[labelled:upto], term[labelled:upto], ts[labelled:upto],
                                 y[labelled:upto], label_ts=ts[a])
                labelled = upto
        X[a:b] = eng.transform(ts[a:b], card[a:b], term[a:b], amount[a:b], cards, terms)
    return X


def test_batched_path_equals_the_per_event_path(small) -> None:
    """One transaction per call, random micro-batches and whole 500-row batches give the same features."""
    df = small.iloc[:4000]
    one = _replay_with_label_points(df, np.ones(len(df), dtype=int))
    rng = np.random.default_rng(4)
    for sizes in (rng.integers(1, 300, size=len(df)), np.full(len(df), 500)):
        np.testing.assert_allclose(_replay_with_label_points(df, sizes), one, rtol=1e-6, atol=1e-6)
    assert (one[:, FEATURES.index("card_count_30d")] > 5).sum() > 100  # windows were filled


def test_bucket_append_equals_the_general_merge() -> None:
    """The in-order fast path of the card write gives the buckets of the general (sorting) merge,
    and late events or long batches take the general merge."""
    from models.fraud.features import _BIG, _append_days, _sum_buckets

    rng = np.random.default_rng(9)
    for trial in range(200):
        m = int(rng.integers(1, 8))
        n_old = rng.integers(0, 6, size=m)
        old_key = np.repeat(np.arange(m), n_old)
        base = rng.integers(100, 140, size=m)
        old_days = np.concatenate([np.sort(rng.choice(np.arange(b - 40, b + 1), size=c, replace=False))
                                   for b, c in zip(base, n_old)]) if n_old.sum() else np.zeros(0)
        old = np.column_stack([old_days, rng.integers(1, 4, size=len(old_days)),
                               rng.random(len(old_days)) * 100, rng.random(len(old_days)) * 1e4]).astype(float)
        n_tx = rng.integers(1, 5, size=m)
        key = np.repeat(np.arange(m), n_tx)
        late = trial % 3 == 0  # some keys get a transaction before their latest bucket, or far after it
        step = rng.integers(-3 if late else 0, 45 if late else 2, size=len(key))
        day = np.concatenate([np.sort(b + s) for b, s in zip(base, np.split(step, np.cumsum(n_tx)[:-1]))])
        a = rng.random(len(key)) * 50
        tx_rows = np.column_stack([day.astype(float), np.ones_like(a), a, a * a])
        comp_old, comp = old_key * _BIG + old[:, 0].astype(np.int64), key * _BIG + day
        first = np.r_[True, key[1:] != key[:-1]]
        oldest = day[np.r_[np.flatnonzero(np.diff(key)), len(key) - 1]] - 30
        got, got_key = _append_days(old, old_key, comp_old, tx_rows, key, comp, first, oldest)
        rows, keys, comps = (np.concatenate(p) for p in ((old, tx_rows), (old_key, key), (comp_old, comp)))
        seq = np.argsort(comps, kind="stable")
        want, want_key = _sum_buckets(rows[seq], keys[seq], comps[seq], oldest)
        np.testing.assert_array_equal(got_key, want_key)
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_parts_combined_in_order_equal_numpys_reduction() -> None:
    """`_over_parts` (the terminal windows summed over label partitions, the merged headers' maxima and
    minima) gives numpy's `reduce(axis=1)` bit for bit on the values it combines: finite or infinite, no
    negative zero, every batch length (numpy buffers reductions in runs of 8,192) and number of parts."""
    from models.fraud.features import _over_parts

    rng = np.random.default_rng(13)
    for n in (1, 2, 7, 100, 2000, 8191, 8192, 8193, 16000):
        for parts in range(1, 10):
            for tail in ((), (2,)):
                a = rng.random((n, parts, *tail)) * 10.0 ** rng.integers(-5, 17, (n, parts, *tail))
                a[rng.random(a.shape) < 0.3] = 0.0
                a[rng.random(a.shape) < 0.02] = np.inf
                for ufunc in (np.add, np.maximum, np.minimum):
                    assert _over_parts(ufunc, a).tobytes() == ufunc.reduce(a, axis=1).tobytes(), (n, parts, tail, ufunc)

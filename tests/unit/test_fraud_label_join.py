"""The worker's flow (log at scoring time, join the label days later) gives what the evaluation replay gives."""

from __future__ import annotations

import numpy as np

from connectors.generators import TransactionGenerator
from models.fraud.features import DAY, FEATURES, FeatureEngine
from models.fraud.logged import pack, unpack
from models.fraud.online import OnlineFraudModel
from models.fraud.stream import replay

DELAY = 7


def test_logged_label_join_matches_the_replay() -> None:
    frame = TransactionGenerator(seed=11, start_ts=1_600_000_000.0, n_customers=300, n_terminals=600).batch(12_000)
    reference_online = OnlineFraudModel(FEATURES, seed=3)
    ref = replay(frame, label_delay_days=DELAY, online=reference_online, batch_seconds=1800.0, max_batch=500)

    # The worker: batches in, features and scores out, one logged record per id; labels arrive later.
    engine = FeatureEngine(DELAY)
    online = OnlineFraudModel(FEATURES, seed=3)
    cards: dict = {}
    terminals: dict = {}
    logged: dict[str, bytes] = {}
    ids = frame["id"].to_numpy(dtype=object)
    ts = frame["ts"].to_numpy()
    y = frame["label"].to_numpy()
    X = np.empty((len(frame), len(FEATURES)), dtype=np.float32)
    next_label = 0
    a = 0
    while a < len(frame):
        b = min(len(frame), a + 500, int(np.searchsorted(ts, ts[a] + 1800.0, side="left")))
        now = ts[a]
        upto = int(np.searchsorted(ts + DELAY * DAY, now, side="right"))
        if upto > next_label:  # a batch of labels from `fraud-labels`: {id, is_fraud}
            label_ids, label_y = ids[next_label:upto], y[next_label:upto]
            rec = unpack([logged.pop(i) for i in label_ids], len(FEATURES))  # the join; joined rows leave
            engine.apply_labels(cards, terminals, rec.card, rec.merchant, rec.ts, label_y, label_ts=now)
            online.learn(rec.X, label_y, rec.online_score)
            next_label = upto
        batch = frame.iloc[a:b]
        X[a:b] = engine.transform(batch["ts"].to_numpy(), batch["card"].tolist(), batch["merchant"].tolist(),
                                  batch["amount"].to_numpy(), cards, terminals)
        r = online.score(X[a:b])
        for key, record in zip(ids[a:b], pack(batch["ts"].to_numpy(), batch["card"].tolist(),
                                              batch["merchant"].tolist(), X[a:b], np.zeros(b - a), r)):
            logged[key] = record
        a = b

    np.testing.assert_array_equal(X, ref.X)
    assert online.updates == reference_online.updates
    np.testing.assert_allclose(online.score(X[-1000:]), reference_online.score(X[-1000:]), rtol=1e-9)
    # Only the transactions whose labels have not arrived yet are still logged: the join table stays bounded.
    assert len(logged) == len(frame) - next_label
    assert max(ts) - min(ts[next_label:]) <= DELAY * DAY + 1800.0  # + one batch

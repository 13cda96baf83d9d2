"""The online fraud model: vectorised scoring = River's, it learns from delayed labels, it survives a restart."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from connectors.generators import TransactionGenerator
from models.fraud.features import FEATURES
from models.fraud.online import OnlineFraudModel, Prequential
from models.fraud.stream import replay


@pytest.fixture(scope="module")
def replayed():
    """~50 days of a small synthetic world replayed with an online model (labels 7 days late).

    Long enough for labels of transactions scored with label-based features to arrive.
    """
    frame = TransactionGenerator(seed=5, start_ts=1_600_000_000.0, n_customers=1000, n_terminals=2000).batch(100_000)
    online = OnlineFraudModel(FEATURES, seed=0)
    out = replay(frame, label_delay_days=7, online=online)
    return frame, out, online


def test_online_model_learns_from_delayed_labels(replayed) -> None:
    frame, out, online = replayed
    quality = online.quality.get()
    assert quality["labels"] == out.labels_applied > 80_000
    assert quality["roc_auc"] > 0.8, quality
    assert quality["pr_auc"] > 0.3, quality
    # Negative sampling: every fraud is learnt, about 1 in 10 legitimate labels.
    assert quality["positives"] < online.updates < 0.2 * quality["labels"]


def test_vectorised_score_is_rivers_prediction(replayed) -> None:
    _, out, online = replayed
    X = out.X[-200:]
    fast = online.score(X)
    for x, p in zip(X.tolist(), fast.tolist()):
        river_p = online.predict_proba_one(dict(zip(FEATURES, x)))
        river_p = min(max(river_p, 1e-12), 1 - 1e-12)
        corrected = 1 / (1 + math.exp(-(math.log(river_p / (1 - river_p)) + math.log(online.negative_rate))))
        assert p == pytest.approx(corrected, rel=1e-6, abs=1e-9)


def test_checkpoint_survives_a_restart(tmp_path, replayed) -> None:
    frame, out, online = replayed
    path = online.save(tmp_path / "ckpt" / "online.pkl")
    restored = OnlineFraudModel.load(path)
    X, y = out.X[-5000:], frame["label"].to_numpy()[-5000:]
    np.testing.assert_array_equal(restored.score(X), online.score(X))
    assert restored.quality.get() == online.quality.get()
    # Both go on learning the same way (the sampling RNG is part of the checkpoint).
    twin = pickle.loads(pickle.dumps(online))
    restored.learn(X, y, restored.score(X))
    twin.learn(X, y, twin.score(X))
    np.testing.assert_array_equal(restored.score(X), twin.score(X))
    assert restored.updates == twin.updates


def test_a_foreign_pickle_is_refused(tmp_path) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"version": 1, "model": "not a model"}))
    with pytest.raises(ValueError, match="not an online fraud model"):
        OnlineFraudModel.load(path)


def test_prequential_is_nan_until_both_classes_are_seen() -> None:
    q = Prequential(window=100)
    q.update([False, False], [0.1, 0.2])
    assert math.isnan(q.get()["roc_auc"])
    q.update([True, False], [0.9, 0.3])
    assert q.get()["roc_auc"] == 1.0 and q.get()["labels"] == 4


def test_numpy_learning_is_rivers_learn_one() -> None:
    """The fast update path makes River's own updates (scaler, then one SGD step), row by row."""
    rng = np.random.default_rng(3)
    names = ["a", "b", "constant", "d"]
    X = rng.normal(size=(3000, 4)) * [1.0, 50.0, 0.0, 1e-3] + [0.0, 10.0, 7.0, 0.0]
    y = X[:, 0] + rng.normal(size=3000) > 1.5
    fast = OnlineFraudModel(names, negative_rate=0.5, seed=2)
    river = pickle.loads(pickle.dumps(fast))
    assert fast._fast_path()
    for a in range(0, 3000, 700):  # several calls: state carried over through the River objects
        fast.learn(X[a:a + 700], y[a:a + 700])
        rand, rate = river._rng.random, river.negative_rate
        for row, yy in zip(X[a:a + 700].tolist(), y[a:a + 700].tolist()):
            if yy or rand() < rate:
                river.model.learn_one(dict(zip(names, row)), yy)
                river.updates += 1
    assert fast.updates == river.updates > 1000
    fs, rs = fast.model.steps["StandardScaler"], river.model.steps["StandardScaler"]
    fl, rl = fast.model.steps["LogisticRegression"], river.model.steps["LogisticRegression"]
    assert dict(fs.counts) == dict(rs.counts)
    for f in names:
        assert fs.means[f] == pytest.approx(rs.means[f], rel=1e-12, abs=1e-12)
        assert fs.vars[f] == pytest.approx(rs.vars[f], rel=1e-12, abs=1e-12)
        assert fl._weights.get(f, 0.0) == pytest.approx(rl._weights.get(f, 0.0), rel=1e-9, abs=1e-12)
    assert fl.intercept == pytest.approx(rl.intercept, rel=1e-9)
    assert fl.optimizer.n_iterations == rl.optimizer.n_iterations
    np.testing.assert_allclose(fast.score(X), river.score(X), rtol=1e-9)


def test_prequential_bulk_update_is_rivers_one_by_one() -> None:
    rng = np.random.default_rng(5)
    y = rng.random(3000) < 0.1
    s = np.clip(y * 0.3 + rng.random(3000) * 0.7, 0, 1)
    bulk, one = Prequential(window=1000), Prequential(window=1000)
    for a in range(0, 3000, 250):
        bulk.update(y[a:a + 250], s[a:a + 250])
        for yy, ss in zip(y[a:a + 250].tolist(), s[a:a + 250].tolist()):
            one.roc_auc.update(yy, ss)
            one.pr_auc.update(yy, ss)
        one.labels += 250
        one.positives += int(y[a:a + 250].sum())
        if a % 1000 == 0:
            assert bulk.get() == one.get()
    assert bulk.get() == one.get() and 0.5 < bulk.get()["roc_auc"] < 1.0


def test_prequential_keeps_only_the_window_rivers_value_unchanged() -> None:
    """Labels older than the window are dropped from River's buffer before it inserts them: the same
    ROC/PR AUCs as River fed every label (ties, long gaps between reads, reads after trims)."""
    rng = np.random.default_rng(7)
    n, window = 9000, 500
    y = rng.random(n) < 0.05
    s = np.round(np.clip(y * 0.2 + rng.random(n) * 0.8, 0, 1), 2)  # ties
    ours, river = Prequential(window=window), Prequential(window=window)
    reads = {1000, 1250, 4000, 4100, 8999}
    for a in range(0, n, 50):
        ours.update(y[a:a + 50], s[a:a + 50])
        assert len(ours.roc_auc._buf_labels) <= window + 256 + 50
        for yy, ss in zip(y[a:a + 50].astype(int).tolist(), s[a:a + 50].tolist()):
            river.roc_auc.update(yy, ss)
            river.pr_auc.update(yy, ss)
        river.labels += 50
        river.positives += int(y[a:a + 50].sum())
        if any(a <= r < a + 50 for r in reads):
            assert ours.get() == river.get()
    assert ours.get() == river.get() and 0.5 < ours.get()["roc_auc"] < 1.0

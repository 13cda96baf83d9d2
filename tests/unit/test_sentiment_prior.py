"""Unsupervised prior adaptation (EM, Saerens et al. 2002): known priors recovered on a synthetic
mixture, the online window (the pipeline option: test_sentiment_pipeline.py)."""

from __future__ import annotations

import numpy as np

from models.sentiment.prior import PRIOR_FILE, PriorAdapter, em_prior, read_source_prior, reweight, write_source_prior

MEANS = np.array([-2.0, 0.0, 2.0])  # one-dimensional classes, unit variance


def posteriors(x: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Exact class probabilities of ``x`` under ``prior`` (a perfectly calibrated model)."""
    lik = np.exp(-0.5 * (x[:, None] - MEANS[None, :]) ** 2) * prior
    return lik / lik.sum(1, keepdims=True)


def sample(n: int, prior: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=prior)
    return rng.normal(MEANS[y], 1.0), y


SOURCE = np.array([1 / 3, 1 / 3, 1 / 3])
TARGET = np.array([0.6, 0.3, 0.1])


def test_em_recovers_a_known_prior_from_unlabelled_scores() -> None:
    x, _ = sample(20_000, TARGET, seed=1)
    estimate = em_prior(posteriors(x, SOURCE), SOURCE)
    np.testing.assert_allclose(estimate, TARGET, atol=0.02)
    naive = posteriors(x, SOURCE).mean(0)  # the mean score alone is biased towards the source prior
    assert np.abs(naive - TARGET).max() > 0.05


def test_em_leaves_an_unshifted_stream_alone() -> None:
    x, _ = sample(20_000, SOURCE, seed=2)
    np.testing.assert_allclose(em_prior(posteriors(x, SOURCE), SOURCE), SOURCE, atol=0.02)


def test_reweighting_to_the_true_prior_equals_the_posterior_under_it() -> None:
    x, _ = sample(500, TARGET, seed=3)
    np.testing.assert_allclose(reweight(posteriors(x, SOURCE), SOURCE, TARGET), posteriors(x, TARGET), atol=1e-6)


def test_online_adapter_warms_up_then_tracks_the_window_and_helps() -> None:
    adapter = PriorAdapter(SOURCE, window=3000, min_messages=500)
    first, _ = sample(400, TARGET, seed=4)
    p = posteriors(first, SOURCE)
    np.testing.assert_array_equal(adapter.adapt(p), p)  # warm-up: unchanged
    x, y = sample(8000, TARGET, seed=5)
    raw = posteriors(x, SOURCE)
    adapted = np.concatenate([adapter.adapt(raw[i:i + 500]) for i in range(0, len(x), 500)])
    np.testing.assert_allclose(adapter.prior, TARGET, atol=0.03)
    assert adapter.seen == 8400
    assert (adapted.argmax(1) == y).mean() > (raw.argmax(1) == y).mean() + 0.02
    # the window forgets: a stream that changes back to the source mix is followed
    x2, _ = sample(6000, SOURCE, seed=6)
    raw2 = posteriors(x2, SOURCE)
    for i in range(0, len(x2), 500):
        adapter.adapt(raw2[i:i + 500])
    np.testing.assert_allclose(adapter.prior, SOURCE, atol=0.03)


def test_adapter_ring_buffer_keeps_the_last_window_rows() -> None:
    adapter = PriorAdapter(SOURCE, window=5, min_messages=1000)
    rows = np.eye(3)[[0, 1, 2, 0, 1, 2, 2]].astype(float)
    adapter.adapt(rows[:3])
    adapter.adapt(rows[3:])
    kept = adapter._buf
    assert sorted(map(tuple, kept.tolist())) == sorted(map(tuple, rows[-5:].tolist()))
    adapter.adapt(np.eye(3)[[1] * 12].astype(float))  # a batch longer than the window
    assert (adapter._buf == np.eye(3)[1]).all()


def test_source_prior_file_round_trip(tmp_path) -> None:
    assert read_source_prior(tmp_path) is None
    prior = write_source_prior(tmp_path, np.array([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1]]), "test")
    np.testing.assert_allclose(prior, [0.6, 0.3, 0.1])
    np.testing.assert_allclose(read_source_prior(tmp_path), [0.6, 0.3, 0.1])
    (tmp_path / PRIOR_FILE).write_text("not json")
    assert read_source_prior(tmp_path) is None

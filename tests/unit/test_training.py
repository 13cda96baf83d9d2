"""Training, ONNX export parity and the numpy metrics."""

from __future__ import annotations

import doctest
from itertools import product

import numpy as np
import pytest
import torch

import models.training
from models.meta import ModelMeta
from models.onnx_runtime import OnnxScorer
from models.registry import ModelRegistry
from models.training import (
    ExportError,
    TabularNet,
    binary_metrics,
    choose_threshold,
    export_onnx,
    train_binary_classifier,
)


def separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Imbalanced (~10 % positives), features on wildly different scales: standardisation matters."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    y = (X[:, 0] + 0.5 * X[:, 1] > 1.3).astype(np.int64)
    X = X * [1.0, 1000.0, 1.0, 0.01, 50.0, 1.0] + [0.0, 5000.0, 0.0, 1.0, -20.0, 3.0]
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def trained() -> TabularNet:
    X, y = separable(4000, seed=0)
    return train_binary_classifier(X, y, epochs=15, seed=0)


def test_doctests():
    result = doctest.testmod(models.training)
    assert result.failed == 0 and result.attempted > 0


# --- training ----------------------------------------------------------------------


def test_learns_a_separable_problem(trained):
    X, y = separable(2000, seed=1)
    with torch.no_grad():
        scores = trained(torch.from_numpy(X)).numpy()
    assert scores.shape == (2000,) and np.all((scores >= 0) & (scores <= 1))
    assert binary_metrics(y, scores)["roc_auc"] > 0.95
    assert not trained.training, "returned in eval mode"


def test_normalisation_is_baked_in(trained):
    X, _ = separable(4000, seed=0)
    np.testing.assert_allclose(trained.mean.numpy(), X.mean(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(trained.std.numpy(), X.std(axis=0), rtol=1e-4)
    assert {"mean", "std"} <= dict(trained.named_buffers()).keys()


def test_constant_column_does_not_divide_by_zero():
    X, y = separable(500, seed=2)
    X[:, 2] = 7.0
    model = train_binary_classifier(X, y, epochs=1)
    with torch.no_grad():
        assert torch.isfinite(model(torch.from_numpy(X))).all()


def test_training_is_deterministic_and_leaves_global_state_alone():
    X, y = separable(1000, seed=3)
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    threads_before = torch.get_num_threads()
    losses: list[tuple[int, float]] = []
    a = train_binary_classifier(X, y, epochs=3, batch_size=128, seed=7, progress=lambda e, l: losses.append((e, l)))
    b = train_binary_classifier(X, y, epochs=3, batch_size=128, seed=7)
    c = train_binary_classifier(X, y, epochs=3, batch_size=128, seed=8)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.get_num_threads() == threads_before
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.mlp[0].weight, c.mlp[0].weight)
    assert [e for e, _ in losses] == [1, 2, 3] and all(np.isfinite(l) for _, l in losses)


@pytest.mark.parametrize(
    "X, y, match",
    [
        (np.ones((4, 2)), np.array([0, 0, 0, 0]), "both classes"),
        (np.array([[np.nan, 1], [1, 1]]), np.array([0, 1]), "NaN"),
        (np.ones((4, 2)), np.array([0, 1, 2, 1]), "only 0 and 1"),
        (np.ones((4, 2)), np.array([0, 1, 1]), "must be"),
    ],
)
def test_bad_training_data_is_refused(X, y, match):
    with pytest.raises(ValueError, match=match):
        train_binary_classifier(X, y, epochs=1)


# --- export ------------------------------------------------------------------------


def test_onnx_matches_torch_through_registry_and_scorer(trained, tmp_path):
    onnx_bytes = export_onnx(trained, 6)
    reg = ModelRegistry(tmp_path)
    meta = ModelMeta(pipeline="fraud", features=[f"f{i}" for i in range(6)])
    reg.register("fraud", onnx_bytes, meta)
    scorer = OnnxScorer.from_registry(reg, "fraud", threads=1)
    for n in (1, 5, 2000):
        X, _ = separable(n, seed=n)
        with torch.no_grad():
            want = trained(torch.from_numpy(X)).numpy()
        got = scorer.predict(X)
        assert got.shape == (n,)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_export_uses_the_requested_names(trained, tmp_path):
    import onnx

    model = onnx.load_from_string(export_onnx(trained, 6, input_name="x", output_name="p"))
    assert [i.name for i in model.graph.input] == ["x"]
    assert [o.name for o in model.graph.output] == ["p"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param, "batch axis is dynamic"


def test_export_raises_when_onnx_disagrees_with_torch(trained, monkeypatch):
    class WrongSession:
        def __init__(self, *args, **kwargs):
            pass

        def run(self, outputs, feeds):
            return [np.zeros(len(next(iter(feeds.values()))), dtype=np.float32)]

    monkeypatch.setattr(models.training.ort, "InferenceSession", WrongSession)
    with pytest.raises(ExportError, match="does not match torch"):
        export_onnx(trained, 6)


# --- metrics -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "y, s, auc, ap",
    [
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75, 5 / 6),
        # ranked +,-,+,-,-: positive pairs won 3 + 2 of 6; precision 1 at recall .5, 2/3 at recall 1
        ([1, 0, 1, 0, 0], [0.9, 0.8, 0.7, 0.6, 0.5], 5 / 6, 0.5 * 1 + 0.5 * 2 / 3),
        # a tie between a positive and a negative counts half; tied scores form one threshold
        ([1, 0, 1, 0], [0.8, 0.8, 0.3, 0.1], 2.5 / 4, 0.5 * 0.5 + 0.5 * 2 / 3),
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5, 0.5),
        ([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], 1.0, 1.0),
        ([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], 0.0, 0.5 * 1 / 3 + 0.5 * 2 / 4),
    ],
)
def test_binary_metrics_hand_computed(y, s, auc, ap):
    got = binary_metrics(np.array(y), np.array(s))
    assert got == pytest.approx({"roc_auc": auc, "average_precision": ap})


def test_roc_auc_equals_pairwise_definition_with_ties():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, size=300)
    s = np.round(rng.random(300) + 0.3 * y, 1)  # coarse: many ties
    pos, neg = s[y == 1], s[y == 0]
    pairwise = np.mean([(p > n) + 0.5 * (p == n) for p, n in product(pos, neg)])
    assert binary_metrics(y, s)["roc_auc"] == pytest.approx(pairwise)


def test_metrics_refuse_single_class_and_bad_input():
    with pytest.raises(ValueError, match="both classes"):
        binary_metrics(np.zeros(3), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics(np.array([0, 1]), np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="rows"):
        choose_threshold(np.array([0, 1]), np.array([0.1]))


def test_choose_threshold_maximises_f1():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    # flag >= 0.8: F1 2/3; >= 0.4: 1/2; >= 0.35: 4/5; >= 0.1: 2/3
    assert choose_threshold(y, s) == 0.35
    # separable: the lowest positive score flags every positive and no negative
    assert choose_threshold(np.array([0, 0, 1, 1, 1]), np.array([0.1, 0.2, 0.6, 0.7, 0.9])) == 0.6


def test_choose_threshold_beta_trades_precision_for_recall():
    y = np.array([1, 0, 0, 1, 0, 0, 1])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    assert choose_threshold(y, s, beta=0.3) == 0.9
    assert choose_threshold(y, s, beta=3.0) == 0.3

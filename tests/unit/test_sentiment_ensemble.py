"""An ensemble of registered sentiment models is one ONNX graph whose output is the weighted mean of its
members' torch outputs, served by the same scorer, and usable as a distillation teacher."""

from __future__ import annotations

import numpy as np
import pytest

from connectors.generators import ChatGenerator
from models.onnx_runtime import OnnxScorer
from models.registry import ModelRegistry
from models.sentiment.data import labels_to_ids
from models.sentiment.ensemble import EnsembleError, merge, register_ensemble
from models.sentiment.export import PARITY_TEXTS
from models.sentiment.fast import FastConfig, predict_fast, train_fast
from models.sentiment.scorer import TextScorer
from models.sentiment.train import register_model, teacher_probabilities
from streams.settings import Settings

FIXED = [*PARITY_TEXTS, "", "!!!", "worst delay ever, never again", "thank you so much", "gate moved to b7"]


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Three tiny fast models sharing one vocabulary, registered as v1..v3; their torch nets."""
    frame = ChatGenerator(seed=5, start_ts=1_700_000_000.0).batch(1500)
    texts, y = frame["text"].tolist(), labels_to_ids(frame["label"])
    settings = Settings(home=tmp_path_factory.mktemp("home"))
    nets = []
    for seed in range(3):
        cfg = FastConfig(dim=8, n_bigrams=1 << 10, epochs=1 + seed, min_count=1, seed=seed)
        encoder, net = train_fast(texts, y, cfg)
        register_model(settings, "fast", encoder, net, metrics={}, training={"seed": seed}, promote=False)
        nets.append((encoder, net))
    return settings, nets, texts[:300]


def _served(settings, version):
    return TextScorer(OnnxScorer.from_registry(ModelRegistry(settings.models_dir), "sentiment", version, threads=1))


def test_ensemble_onnx_equals_the_mean_of_its_members_torch_outputs(members) -> None:
    settings, nets, texts = members
    meta = register_ensemble(settings, [1, 2])
    served = _served(settings, meta.version)
    probe = FIXED + texts
    expected = np.mean([predict_fast(e, n, probe) for e, n in nets[:2]], axis=0)
    np.testing.assert_allclose(served.predict(probe), expected, atol=1e-5)
    assert served.kind == "fast" and meta.extra["ensemble_of"] == [1, 2]
    assert meta.training["weights"] == [0.5, 0.5]
    assert not np.allclose(predict_fast(*nets[0], probe), predict_fast(*nets[1], probe), atol=1e-3)  # a real mix


def test_weights_are_normalized_and_members_may_live_in_another_registry(members, tmp_path) -> None:
    settings, nets, texts = members
    root = ModelRegistry(settings.models_dir)
    other = Settings(home=tmp_path / "other")
    meta = register_ensemble(other, [root.model_path("sentiment", 1).parent, root.model_path("sentiment", 3).parent],
                             weights=[3, 1])
    expected = 0.75 * predict_fast(*nets[0], texts) + 0.25 * predict_fast(*nets[2], texts)
    np.testing.assert_allclose(_served(other, meta.version).predict(texts), expected, atol=1e-5)
    # as a distillation teacher: the members' cached probabilities, weighted, equal the merged graph's
    teacher = teacher_probabilities(other, meta.version, texts)
    np.testing.assert_allclose(teacher, _served(other, meta.version).predict(texts), atol=1e-5)
    assert any(root.model_path("sentiment", 1).parent.glob("teacher-*.npy"))  # cached beside the member


def test_members_that_tokenize_differently_are_refused(members) -> None:
    settings, _, _ = members
    frame = ChatGenerator(seed=6, start_ts=1_700_000_000.0).batch(80)  # another vocabulary
    encoder, net = train_fast(frame["text"].tolist(), labels_to_ids(frame["label"]),
                              FastConfig(dim=8, n_bigrams=1 << 10, epochs=1, min_count=1))
    other = register_model(settings, "fast", encoder, net, metrics={}, training={}, promote=False)
    with pytest.raises(EnsembleError, match="tokenize differently"):
        register_ensemble(settings, [1, other.version])
    with pytest.raises(EnsembleError, match="at least two"):
        merge([ModelRegistry(settings.models_dir).model_path("sentiment", 1).read_bytes()])
    with pytest.raises(EnsembleError, match="not a registered model version"):
        register_ensemble(settings, [1, "/nonexistent/v9"])


def test_offsets_shift_the_mix_in_log_space_for_one_model_or_an_ensemble(members) -> None:
    """Round 7: ``p * exp(o)`` renormalized in the graph; for one model the same as adding ``o`` to its logits;
    as a teacher, the members' cached probabilities give what the graph gives."""
    from models.sentiment.ensemble import apply_offsets

    settings, nets, texts = members
    probe = FIXED + texts
    o = [0.0, 0.6, -0.3]
    one = register_ensemble(settings, [1], offsets=o)
    p = predict_fast(*nets[0], probe)
    expected = np.exp(np.log(p) + o) / np.exp(np.log(p) + o).sum(1, keepdims=True)
    np.testing.assert_allclose(_served(settings, one.version).predict(probe), expected, atol=1e-5)
    assert one.training["offsets"] == o and one.extra["ensemble_of"] == [1]
    two = register_ensemble(settings, [1, 2], offsets=o)
    mix = np.mean([predict_fast(e, n, probe) for e, n in nets[:2]], axis=0)
    np.testing.assert_allclose(_served(settings, two.version).predict(probe), apply_offsets(mix, o), atol=1e-5)
    np.testing.assert_allclose(teacher_probabilities(settings, two.version, probe), apply_offsets(mix, o), atol=1e-5)
    with pytest.raises(EnsembleError, match="one per class"):
        register_ensemble(settings, [1], offsets=[0.1, 0.2])

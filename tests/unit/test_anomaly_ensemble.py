"""An ensemble of autoencoders is one ONNX graph whose output is the mean of its members' torch outputs."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.anomaly.autoencoder import (INPUT_NAME, AutoencoderEnsemble, DeviationAutoencoder, export, member_seeds,
                                        train_autoencoder, train_ensemble)
from models.anomaly.config import AnomalyConfig
from models.anomaly.data import Series
from models.anomaly.train import _Scorer, fit

SENSORS = ["current", "flow", "pressure", "temperature", "vibration", "voltage"]


def normal(rng: np.random.Generator, n: int) -> np.ndarray:
    load = np.cumsum(rng.normal(0, 0.05, n))
    x = rng.normal(size=(n, len(SENSORS)))
    x[:, :3] += load[:, None]
    return x.astype(np.float32)


def test_ensemble_onnx_output_is_the_mean_of_its_members_torch_outputs() -> None:
    rng = np.random.default_rng(0)
    x = normal(rng, 600)
    ensemble = train_ensemble(x, members=3, epochs=3, seed=4)
    assert isinstance(ensemble, AutoencoderEnsemble) and len(ensemble.members) == 3
    session = ort.InferenceSession(export(ensemble))
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
    test = np.concatenate([x[:100], 8 * rng.normal(size=(50, len(SENSORS))).astype(np.float32)])  # normal and faulty
    got = session.run(None, {INPUT_NAME: test})[0]
    with torch.no_grad():
        members = np.stack([m(torch.from_numpy(test)).numpy() for m in ensemble.members])
    np.testing.assert_allclose(got, members.mean(axis=0), rtol=1e-5, atol=1e-5)
    # The members differ (different inits), so the mean is not any one of them.
    assert min(np.abs(got - m).max() for m in members) > 1e-3


def test_members_are_the_single_models_of_their_seeds() -> None:
    """Member 0 of seed s is seed s's single model: members=1 changes nothing; member i is seeded s + 1000 i."""
    x = normal(np.random.default_rng(1), 400)
    assert member_seeds(3, 2) == [3, 1003]
    single = train_ensemble(x, members=1, epochs=2, seed=3)
    assert isinstance(single, DeviationAutoencoder)
    pair = train_ensemble(x, members=2, epochs=2, seed=3)
    for member, seed in zip(pair.members, member_seeds(3, 2)):
        alone = train_autoencoder(x, epochs=2, seed=seed)
        for a, b in zip(member.state_dict().values(), alone.state_dict().values()):
            assert torch.equal(a, b)
    assert torch.equal(single.error_scale, pair.members[0].error_scale)
    with pytest.raises(ValueError):
        train_ensemble(x, members=0)


def test_fit_with_an_ensemble_scores_through_one_onnx_call() -> None:
    rng = np.random.default_rng(2)
    series = [Series(f"pump-{i}", 1e9 + np.arange(500.0), normal(rng, 500).astype(np.float64), SENSORS, None, "t")
              for i in range(4)]
    config = AnomalyConfig(warmup_frames=120, ensemble_members=3)
    model = fit(series, config, epochs=2)
    assert model.meta.extra["ensemble_members"] == 3
    assert len(model.details["loss"]) == 3 * 2  # every member's epochs were trained
    scorer = _Scorer(model.onnx_bytes, model.meta)
    d = rng.normal(size=(20, len(model.meta.features))).astype(np.float32)  # one column per sensor
    contributions = scorer.predict(d)
    assert contributions.shape == d.shape and np.isfinite(contributions).all()
    assert model.meta.extra["error_threshold"] > 0
    with pytest.raises(ValueError):
        AnomalyConfig(ensemble_members=0)

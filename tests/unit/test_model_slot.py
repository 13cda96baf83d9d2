"""Hot swap: a promoted model is swapped in; a bad one is refused and the old one keeps serving."""

from __future__ import annotations

import asyncio

import torch

from models.meta import ModelMeta
from models.registry import ModelRegistry
from models.training import export_onnx
from streams import metrics
from streams.model_slot import ModelSlot

FEATURES = ["a", "b", "c"]


def _model(n_features: int) -> bytes:
    return export_onnx(torch.nn.Sequential(torch.nn.Linear(n_features, 1), torch.nn.Sigmoid()), n_features)


def test_promoted_version_is_swapped_in_and_a_bad_one_refused(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.register("fraud", _model(3), ModelMeta(pipeline="fraud", features=FEATURES))
    slot = ModelSlot(registry, "fraud", features=FEATURES)
    slot.load_now()
    assert slot.version == 1
    assert not asyncio.run(slot.refresh()), "nothing changed: no reload"

    registry.register("fraud", _model(3), ModelMeta(pipeline="fraud", features=FEATURES))
    assert asyncio.run(slot.refresh()) and slot.version == 2

    failures = metrics.MODEL_LOAD_FAILURES.labels("fraud")._value.get()
    wrong = ["a", "b", "c", "d"]  # a model trained on other features: the worker cannot feed it
    registry.register("fraud", _model(4), ModelMeta(pipeline="fraud", features=wrong))
    assert not asyncio.run(slot.refresh())
    assert slot.version == 2, "the old version keeps serving"
    assert metrics.MODEL_LOAD_FAILURES.labels("fraud")._value.get() == failures + 1
    assert not asyncio.run(slot.refresh()), "a refused champion is not retried every second"

    registry.rollback("fraud")  # the refused v3 was champion: back to v2
    assert asyncio.run(slot.refresh())
    assert slot.version == 2

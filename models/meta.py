"""What a registered model is, in one JSON file next to its ``model.onnx``.

The metadata travels with the model so that a worker can build the feature
matrix (``features`` is the column order), feed the right graph input, read
the right output and apply the threshold chosen at training time, without
asking the code that trained it.

>>> meta = ModelMeta(pipeline="fraud", features=["amount", "count_1h"], threshold=0.7,
...                  metrics={"roc_auc": 0.93}, training={"rows": 1000, "positives": 12})
>>> meta.version, meta.kind, meta.input_name, meta.output_name
(0, 'onnx', 'features', 'probability')
>>> ModelMeta.from_json(meta.to_json()) == meta
True
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

PIPELINE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class ModelMeta(BaseModel):
    """Metadata of one model version.

    ``version`` is 0 until the registry assigns one (1, 2, 3, ...). Unknown
    keys in a ``meta.json`` are ignored, so a worker keeps reading models
    written by a newer trainer during a rolling upgrade. Instances are frozen:
    they are shared between the loader and the scoring path.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    pipeline: str = Field(pattern=PIPELINE_PATTERN)
    version: int = Field(0, ge=0, description="Assigned by the registry; 0 = not registered yet.")
    created: str = Field(default_factory=_now_iso, description="ISO 8601, UTC.")
    kind: Literal["onnx"] = "onnx"
    features: list[str] = Field(min_length=1, description="Input columns, in graph order.")
    input_name: str = "features"
    output_name: str = "probability"
    threshold: float = Field(0.5, description="Alert when score >= threshold.")
    metrics: dict[str, float] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict, description="rows, positives, source, period...")
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("features")
    @classmethod
    def _unique_features(cls, features: list[str]) -> list[str]:
        dupes = sorted(name for name, n in Counter(features).items() if n > 1)
        if dupes:
            raise ValueError(f"duplicate feature names: {dupes}")
        return features

    @property
    def n_features(self) -> int:
        return len(self.features)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelMeta:
        return cls.model_validate_json(text)

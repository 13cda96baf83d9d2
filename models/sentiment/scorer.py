"""Texts to class probabilities through a registered ONNX model: the serving path.

Used by the worker (:class:`streams.sentiment.SentimentPipeline`) and by
offline evaluation alike. The tokenizer is rebuilt from the model file's own
metadata (:mod:`.export`), so each version scores with the vocabulary it was
trained with. No torch here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.onnx_runtime import ModelCheckError, OnnxScorer

from . import LABELS
from .export import ENCODER_KEY, encoder_from_json

ACCURATE_CHUNK = 64  # messages per call for the transformer, grouped by length
FAST_CHUNK = 250  # the fast model: a padded matrix as wide as the batch's longest row costs more than the calls


class TextScorer:
    """An :class:`OnnxScorer` plus the text encoder its model was trained with."""

    def __init__(self, scorer: OnnxScorer) -> None:
        meta = scorer.meta
        spec = scorer.metadata.get(ENCODER_KEY)
        if spec is None:
            raise ModelCheckError(f"{meta.pipeline} v{meta.version} has no text encoder in its ONNX metadata "
                                  f"({ENCODER_KEY}); re-export it with `lepton train sentiment`")
        try:
            self.encoder = encoder_from_json(spec)
        except (ValueError, ImportError) as exc:
            raise ModelCheckError(f"{meta.pipeline} v{meta.version}: cannot build its text encoder: {exc}") from exc
        if scorer.n_outputs != len(LABELS):
            raise ModelCheckError(f"{meta.pipeline} v{meta.version} outputs {scorer.n_outputs} columns, "
                                  f"expected {len(LABELS)} class probabilities")
        self.scorer = scorer
        self.meta = meta
        self.version = meta.version
        self.kind = str(meta.extra.get("kind", "fast"))

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """``(n, 3)`` probabilities (negative, neutral, positive).

        Messages are scored in chunks of similar length (one ONNX call each):
        padding every message to the longest of a 2,000-message batch would cost
        the transformer about twice the work, and the fast model, whose cost is
        one embedding gather per padded position, about 1.5 times (3 times with
        subwords, whose unknown words add columns). Rows are independent, so the
        chunking changes no score.
        """
        if not texts:
            return np.zeros((0, len(LABELS)), dtype=np.float32)
        ids = self.encoder.encode(texts)
        chunk = ACCURATE_CHUNK if self.kind == "accurate" else FAST_CHUNK
        if len(texts) <= chunk:
            return self.scorer.predict(ids)
        lengths = (ids != 0).sum(1)
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(texts), len(LABELS)), dtype=np.float32)
        for i in range(0, len(order), chunk):
            idx = order[i:i + chunk]
            out[idx] = self.scorer.predict(ids[idx, : max(int(lengths[idx].max()), 1)])
        return out

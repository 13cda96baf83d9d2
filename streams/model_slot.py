"""The model a pipeline scores with, swapped without a restart.

A slot holds the champion :class:`~models.onnx_runtime.OnnxScorer` of one
pipeline. :meth:`ModelSlot.refresh` is cheap when nothing changed (it
compares the registry's champion token); when a new version is promoted it
loads and checks the model in a thread, then swaps it in with one attribute
assignment. Agents read ``slot.scorer`` once per batch, so a swap always
happens *between* batches. A model that fails to load or check is refused:
an error metric, a log line, and the old version keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from models.onnx_runtime import ModelCheckError, OnnxScorer
from models.registry import ModelRegistry, RegistryError

from . import metrics

log = logging.getLogger(__name__)


class ModelSlot:
    def __init__(self, registry: ModelRegistry, pipeline: str, threads: int = 1,
                 features: list[str] | None = None) -> None:
        self.registry = registry
        self.pipeline = pipeline
        self.threads = threads
        self.features = features  # what the pipeline computes; a model must expect exactly these
        self.scorer: OnnxScorer | None = None
        self._token: str | None = None
        self._refused: str | None = None  # token of a champion we refused to load

    @property
    def version(self) -> int | None:
        return self.scorer.meta.version if self.scorer is not None else None

    def load_now(self) -> OnnxScorer:
        """Load the champion synchronously (at start-up); raise if there is none."""
        token = self.registry.champion_token(self.pipeline)
        scorer = self._load()
        self._install(scorer, token)
        return scorer

    async def refresh(self) -> bool:
        """Swap in a newly promoted champion. True when a swap happened."""
        token = self.registry.champion_token(self.pipeline)
        if token == self._token or token == self._refused:
            return False
        try:
            scorer = await asyncio.get_running_loop().run_in_executor(None, self._load)
        except (ModelCheckError, RegistryError, OSError, ValueError) as exc:
            self._refused = token
            metrics.MODEL_LOAD_FAILURES.labels(self.pipeline).inc()
            log.error(
                "%s: refused new model (%s); version %s keeps serving", self.pipeline, exc, self.version
            )
            return False
        self._install(scorer, token)
        log.info("%s: now serving model version %s", self.pipeline, scorer.meta.version)
        return True

    def _load(self) -> OnnxScorer:
        scorer = OnnxScorer.from_registry(self.registry, self.pipeline, threads=self.threads)
        if self.features is not None and list(scorer.meta.features) != list(self.features):
            raise ModelCheckError(
                f"{self.pipeline} v{scorer.meta.version} expects features {scorer.meta.features[:4]}… "
                f"({len(scorer.meta.features)}), this worker computes {len(self.features)}: "
                f"retrain with this version (`lepton train {self.pipeline}`)"
            )
        return scorer

    def _install(self, scorer: OnnxScorer, token: str) -> None:
        old = self.version
        self.scorer = scorer  # atomic for the event loop: the swap point
        self._token, self._refused = token, None
        if old is not None:
            metrics.MODEL_INFO.labels(self.pipeline, str(old), "champion").set(0)
        metrics.MODEL_INFO.labels(self.pipeline, str(scorer.meta.version), "champion").set(1)
        metrics.MODEL_LOADS.labels(self.pipeline).inc()

    def describe(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "version": self.version}

"""Scoring with an ONNX model: load once, check it, then one ``predict`` per micro-batch.

A model is checked when it is loaded, not when the first batch arrives: the
worker loads a new version beside the current one and swaps only if the
checks pass, so a bad export never reaches the hot path.

Sessions use ``settings.onnx_threads`` intra-op threads, one inter-op thread
and sequential execution: a worker process is one scoring loop, and extra
threads would fight the event loop for the same cores. Idle threads do not
spin between batches, for the same reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.meta import ModelMeta
from models.registry import ModelRegistry, RegistryError

SMOKE_ROWS = 4

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


class ModelCheckError(Exception):
    """A model failed a load-time check; the message names the check."""


class OnnxScorer:
    """An ONNX session for one model version, checked against its metadata.

    ``predict`` returns shape ``(n,)`` when the model has one output column
    (a probability or an anomaly score) and ``(n, k)`` for ``k`` outputs
    (class probabilities).

    Text models take int64 token ids of shape ``(batch, length)`` with a
    dynamic length axis (``meta.features`` then names that one input column,
    e.g. ``["tokens"]``); the feature-count check only applies to a fixed
    second axis. What a model needs besides its graph (a vocabulary) travels
    in the ONNX file's metadata: :attr:`metadata`.
    """

    def __init__(self, path: Path | str, meta: ModelMeta, *, threads: int | None = None) -> None:
        if threads is None:
            from streams.settings import get_settings  # late: streams may import models

            threads = get_settings().onnx_threads
        self.meta = meta
        self.path = Path(path)
        self._session = _open_session(self.path, meta, threads)
        self._input_name = meta.input_name
        self._outputs = [meta.output_name]
        self._dtype, self._flatten, self.n_outputs = _check(self._session, meta)

    @classmethod
    def from_registry(
        cls, registry: ModelRegistry, pipeline: str, version: int | None = None, *, threads: int | None = None
    ) -> OnnxScorer:
        """Load ``version`` of ``pipeline``, or its champion when ``version`` is None."""
        if version is None:
            meta = registry.champion(pipeline)
            if meta is None:
                raise RegistryError(f"no {pipeline} model registered in {registry.root}: run `lepton train {pipeline}`")
        else:
            meta = registry.get(pipeline, version)
        return cls(registry.model_path(pipeline, meta.version), meta, threads=threads)

    @property
    def version(self) -> int:
        return self.meta.version

    @property
    def features(self) -> list[str]:
        return self.meta.features

    @property
    def metadata(self) -> dict[str, str]:
        """The ONNX model's own metadata (``metadata_props``): key -> string, empty if none."""
        return dict(self._session.get_modelmeta().custom_metadata_map)

    def __repr__(self) -> str:
        return f"OnnxScorer({self.meta.pipeline} v{self.meta.version}, {len(self.meta.features)} features)"

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Score a ``(n, n_features)`` batch of raw features (hot path: one session call)."""
        out = self._session.run(self._outputs, {self._input_name: np.asarray(x, dtype=self._dtype)})[0]
        return out.reshape(-1) if self._flatten else out


def _open_session(path: Path, meta: ModelMeta, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several private exception types
        raise ModelCheckError(f"load check failed for {meta.pipeline} v{meta.version} ({path}): {exc}") from exc


def _check(session: ort.InferenceSession, meta: ModelMeta) -> tuple[type, bool, int]:
    """Check inputs, outputs and a smoke batch; return (input dtype, flatten?, outputs per row)."""
    label = f"{meta.pipeline} v{meta.version}"
    inputs = {i.name: i for i in session.get_inputs()}
    if meta.input_name not in inputs:
        raise ModelCheckError(f"input check failed for {label}: graph inputs are {sorted(inputs)}, meta says {meta.input_name!r}")
    if len(inputs) != 1:
        raise ModelCheckError(f"input check failed for {label}: expected one graph input, found {sorted(inputs)}")
    arg = inputs[meta.input_name]
    if arg.type not in _ORT_DTYPES:
        raise ModelCheckError(f"input check failed for {label}: unsupported input type {arg.type}")
    shape = arg.shape
    if len(shape) != 2:
        raise ModelCheckError(f"input check failed for {label}: input shape {shape} is not (batch, features)")
    n_features = len(meta.features)
    if isinstance(shape[1], int) and shape[1] != n_features:
        raise ModelCheckError(
            f"input check failed for {label}: graph takes {shape[1]} features, meta lists {n_features}"
        )
    if isinstance(shape[0], int):
        raise ModelCheckError(f"input check failed for {label}: batch axis is fixed at {shape[0]}; export it as dynamic")

    outputs = [o.name for o in session.get_outputs()]
    if meta.output_name not in outputs:
        raise ModelCheckError(f"output check failed for {label}: graph outputs are {outputs}, meta says {meta.output_name!r}")

    dtype = _ORT_DTYPES[arg.type]
    try:
        out = session.run([meta.output_name], {meta.input_name: np.zeros((SMOKE_ROWS, n_features), dtype=dtype)})[0]
    except Exception as exc:
        raise ModelCheckError(f"smoke check failed for {label}: a zero batch of {SMOKE_ROWS} rows raised {exc}") from exc
    out = np.asarray(out)
    if out.ndim not in (1, 2) or out.shape[0] != SMOKE_ROWS:
        raise ModelCheckError(f"smoke check failed for {label}: {SMOKE_ROWS} rows gave output shape {out.shape}")
    if not np.issubdtype(out.dtype, np.number) or not np.all(np.isfinite(out)):
        raise ModelCheckError(f"smoke check failed for {label}: output on a zero batch is not finite: {out.ravel()[:8]}")
    n_outputs = 1 if out.ndim == 1 else out.shape[1]
    return dtype, n_outputs == 1, n_outputs

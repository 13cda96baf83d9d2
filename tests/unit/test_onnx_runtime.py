"""OnnxScorer: load-time checks and the shape of predictions. Graphs are built with onnx.helper (no torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from models.meta import ModelMeta
from models.onnx_runtime import ModelCheckError, OnnxScorer
from models.registry import ModelRegistry, RegistryError

REPO = Path(__file__).resolve().parents[2]


def linear_model(
    n_features: int = 3,
    n_outputs: int = 1,
    *,
    input_name: str = "features",
    output_name: str = "probability",
    batch: int | str = "batch",
    add: float = 0.0,
    squeeze: bool = False,
) -> bytes:
    """sigmoid(x @ W + add); W[i, j] = (i + 1) / 10. ``add=nan`` makes a model that outputs NaN."""
    w = np.array([[(i + 1) / 10] * n_outputs for i in range(n_features)], dtype=np.float32)
    nodes = [
        helper.make_node("MatMul", [input_name, "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["p" if squeeze else output_name]),
    ]
    initializers = [
        helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.ravel()),
        helper.make_tensor("B", TensorProto.FLOAT, [1], [add]),
    ]
    out_shape = [batch, n_outputs]
    if squeeze:
        nodes.append(helper.make_node("Squeeze", ["p", "axis"], [output_name]))
        initializers.append(helper.make_tensor("axis", TensorProto.INT64, [1], [1]))
        out_shape = [batch]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, n_features])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, out_shape)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def meta(n_features: int = 3, **kw) -> ModelMeta:
    return ModelMeta(pipeline="fraud", version=1, features=[f"f{i}" for i in range(n_features)], **kw)


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    return path


def expected(x: np.ndarray, n_outputs: int = 1) -> np.ndarray:
    w = np.array([[(i + 1) / 10] * n_outputs for i in range(x.shape[1])])
    return 1 / (1 + np.exp(-(x @ w)))


# --- predict ------------------------------------------------------------------------


@pytest.mark.parametrize("squeeze", [False, True])
def test_binary_model_predicts_one_score_per_row(tmp_path, squeeze):
    scorer = OnnxScorer(write(tmp_path, linear_model(squeeze=squeeze)), meta(), threads=1)
    x = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    got = scorer.predict(x)
    assert got.shape == (7,)
    np.testing.assert_allclose(got, expected(x).ravel(), atol=1e-6)
    assert scorer.n_outputs == 1 and scorer.version == 1 and scorer.features == ["f0", "f1", "f2"]


def test_multi_output_model_keeps_columns(tmp_path):
    scorer = OnnxScorer(write(tmp_path, linear_model(n_outputs=3)), meta(), threads=1)
    x = np.ones((5, 3), dtype=np.float32)
    got = scorer.predict(x)
    assert got.shape == (5, 3) and scorer.n_outputs == 3
    np.testing.assert_allclose(got, expected(x, 3), atol=1e-6)


def test_predict_accepts_any_batch_size_and_casts_float64(tmp_path):
    scorer = OnnxScorer(write(tmp_path, linear_model()), meta(), threads=1)
    assert scorer.predict(np.zeros((1, 3))).shape == (1,)
    big = np.random.default_rng(1).normal(size=(3000, 3))
    np.testing.assert_allclose(scorer.predict(big), expected(big).ravel(), atol=1e-6)


def test_session_threads_follow_the_argument_and_settings(tmp_path, monkeypatch):
    from streams.settings import get_settings

    path = write(tmp_path, linear_model())
    opts = OnnxScorer(path, meta(), threads=3)._session.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (3, 1)

    monkeypatch.setenv("LEPTON_ONNX_THREADS", "2")
    get_settings.cache_clear()
    try:
        assert OnnxScorer(path, meta())._session.get_session_options().intra_op_num_threads == 2
    finally:
        get_settings.cache_clear()


# --- load-time checks ---------------------------------------------------------------


def test_wrong_feature_count_fails_the_input_check(tmp_path):
    with pytest.raises(ModelCheckError, match="input check failed.*takes 3 features, meta lists 4"):
        OnnxScorer(write(tmp_path, linear_model(3)), meta(4), threads=1)


def test_wrong_input_name_fails_the_input_check(tmp_path):
    with pytest.raises(ModelCheckError, match="input check failed.*'x'"):
        OnnxScorer(write(tmp_path, linear_model(input_name="x")), meta(), threads=1)


def test_fixed_batch_axis_fails_the_input_check(tmp_path):
    with pytest.raises(ModelCheckError, match="batch axis is fixed at 1"):
        OnnxScorer(write(tmp_path, linear_model(batch=1)), meta(), threads=1)


def test_missing_output_fails_the_output_check(tmp_path):
    with pytest.raises(ModelCheckError, match="output check failed.*'score'"):
        OnnxScorer(write(tmp_path, linear_model(output_name="score")), meta(), threads=1)


def test_nan_output_fails_the_smoke_check(tmp_path):
    with pytest.raises(ModelCheckError, match="smoke check failed.*not finite"):
        OnnxScorer(write(tmp_path, linear_model(add=float("nan"))), meta(), threads=1)


def test_garbage_file_fails_the_load_check(tmp_path):
    with pytest.raises(ModelCheckError, match="load check failed"):
        OnnxScorer(write(tmp_path, b"not an onnx model"), meta(), threads=1)


# --- registry -----------------------------------------------------------------------


def test_from_registry_loads_champion_or_a_given_version(tmp_path):
    reg = ModelRegistry(tmp_path)
    with pytest.raises(RegistryError, match="lepton train fraud"):
        OnnxScorer.from_registry(reg, "fraud", threads=1)
    reg.register("fraud", linear_model(), meta())
    reg.register("fraud", linear_model(n_outputs=3), meta(), promote=False)
    assert OnnxScorer.from_registry(reg, "fraud", threads=1).version == 1
    challenger = OnnxScorer.from_registry(reg, "fraud", 2, threads=1)
    assert challenger.version == 2 and challenger.n_outputs == 3
    with pytest.raises(RegistryError, match="no version 9"):
        OnnxScorer.from_registry(reg, "fraud", 9, threads=1)


def test_scoring_path_does_not_import_torch():
    code = "import sys, models.onnx_runtime, models.registry, models.meta; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0

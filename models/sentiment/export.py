"""ONNX export of both sentiment models, with their tokenizer inside the file.

Why inside: the registry swaps ``model.onnx`` atomically, so a worker can never
load a new graph with an old vocabulary. The encoder's JSON goes into the
ONNX model's metadata (``lepton.text_encoder``), which
:class:`~models.onnx_runtime.OnnxScorer` exposes as ``metadata``.

Every export is checked: the ONNX graph, fed by the *serving* encoder, must
reproduce the torch model's probabilities on a fixed set of messages
(:data:`PARITY_TEXTS`, plus any texts the caller adds), or :class:`ExportError`.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import LABELS
from .text import VERSION

INPUT = "tokens"
OUTPUT = "probabilities"
ENCODER_KEY = "lepton.text_encoder"
LABELS_KEY = "lepton.labels"
PARITY_TEXTS = (
    "@united thanks, the crew was great!! 😊",
    "My flight is delayed AGAIN... 3 hours on the tarmac 😡 #fail",
    "how do i change my delivery address?",
    "ok",
    "Not bad at all, actually I loooove the new app :)",
    "RT @someone: http://t.co/abc is this real? 12:30 at gate B7",
    "ｆｕｌｌ ｗｉｄｔｈ and “curly quotes” don’t matter &amp; neither do tabs\tor\nnewlines",
)


class ExportError(RuntimeError):
    """The exported graph does not reproduce the torch model."""


def encoder_json(encoder: Any) -> str:
    """The JSON that rebuilds ``encoder`` at serving time (see :func:`encoder_from_json`)."""
    from .encoder import WordEncoder

    if isinstance(encoder, WordEncoder):
        return encoder.to_json()
    return json.dumps({"kind": "wordpiece", "text_version": VERSION, "max_tokens": encoder.max_tokens,
                       "tokenizer": encoder.tokenizer_json}, ensure_ascii=False)


def encoder_from_json(text: str) -> Any:
    """A :class:`~.encoder.WordEncoder` or :class:`~.accurate.WordPieceEncoder` from its JSON."""
    spec = json.loads(text)
    kind = spec.get("kind")
    if kind == "words":
        from .encoder import WordEncoder

        return WordEncoder.from_json(text)
    if kind == "wordpiece":
        if spec.get("text_version") != VERSION:
            raise ValueError(f"model was trained with text normalization v{spec.get('text_version')}, "
                             f"this code is v{VERSION}: retrain it")
        from .accurate import WordPieceEncoder

        return WordPieceEncoder(spec["tokenizer"], spec["max_tokens"])
    raise ValueError(f"unknown text encoder kind {kind!r}")


def export(model: Any, encoder: Any, *, check_texts: Sequence[str] = (), opset: int = 17,
           atol: float = 1e-5) -> bytes:
    """The ONNX bytes of ``model`` (ids -> probabilities), encoder embedded, parity checked."""
    import onnx
    import onnxruntime as ort
    import torch

    was_training = model.training
    model.eval()
    texts = list(PARITY_TEXTS) + list(check_texts)
    ids = encoder.encode(texts)
    try:
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = model.for_export() if hasattr(model, "for_export") else model
            torch.onnx.export(traced, (torch.from_numpy(ids[:2]),), buf, dynamo=False, input_names=[INPUT],
                              output_names=[OUTPUT], opset_version=opset,
                              dynamic_axes={INPUT: {0: "batch", 1: "length"}, OUTPUT: {0: "batch"}})
        with torch.no_grad():
            expected = model(torch.from_numpy(ids)).numpy()
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(buf.getvalue())
    onnx.helper.set_model_props(proto, {ENCODER_KEY: encoder_json(encoder), LABELS_KEY: json.dumps(list(LABELS))})
    onnx_bytes = proto.SerializeToString()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
    serving = encoder_from_json(session.get_modelmeta().custom_metadata_map[ENCODER_KEY])
    served_ids = serving.encode(texts)
    if not np.array_equal(served_ids, ids):
        raise ExportError("the serving encoder rebuilt from the ONNX metadata tokenizes differently from training")
    got = session.run([OUTPUT], {INPUT: served_ids})[0]
    if got.shape != expected.shape or not np.allclose(got, expected, atol=atol):
        diff = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else "n/a"
        raise ExportError(f"ONNX export does not match torch: shapes {got.shape} vs {expected.shape}, "
                          f"max abs diff {diff}")
    single = session.run([OUTPUT], {INPUT: np.zeros((3, 1), dtype=np.int64)})[0]
    if single.shape != (3, len(LABELS)) or not np.all(np.isfinite(single)):
        raise ExportError(f"ONNX export fails on an all-padding batch: {single}")
    return onnx_bytes

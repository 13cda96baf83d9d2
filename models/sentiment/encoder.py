"""Token ids for the fast model: a word vocabulary plus hashed buckets for unknown words.

The vocabulary is learned from the training texts and travels inside the ONNX
file (see :mod:`.export`), so serving maps words to exactly the ids training
used. Unknown words fall into ``n_oov`` buckets by CRC-32, which is stable
across processes (Python's ``hash`` is not). Id 0 is padding.

Encoding is batch-first and vectorized: one tokenizer pass over the joined
batch (:func:`~.text.normalize_joined`), one dict lookup per token, then numpy
builds the padded matrix. Per message that is a few microseconds.

>>> enc = WordEncoder.build([["flight", "good"], ["flight", "bad"]], min_count=1, n_oov=8)
>>> enc.words
['flight', 'good', 'bad']
>>> enc.encode(["Good flight!!", "awful"]).tolist()  # '!!' and 'awful' are unknown: buckets 4..11
[[2, 1, 6], [11, 0, 0]]
>>> WordEncoder.from_json(enc.to_json()).encode(["bad"]).tolist()
[[3]]
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from .text import SEPARATOR, TOKEN, VERSION, normalize_joined

_BOUNDARY = -2
_UNKNOWN = -1


class WordEncoder:
    """Texts -> ``(n, length)`` int64 ids, padded with 0, at most ``max_tokens`` per text."""

    def __init__(self, words: Sequence[str], *, n_oov: int = 4096, max_tokens: int = 64,
                 text_version: int = VERSION) -> None:
        if text_version != VERSION:
            raise ValueError(f"model was trained with text normalization v{text_version}, this code is v{VERSION}: "
                             "retrain the model (`lepton train sentiment`)")
        self.words = list(words)
        self.vocab = {w: i + 1 for i, w in enumerate(self.words)}  # 0 = padding
        self.vocab[SEPARATOR] = _BOUNDARY
        self.n_oov = n_oov
        self.max_tokens = max_tokens
        self.oov_base = len(self.words) + 1

    @property
    def n_ids(self) -> int:
        """Size of the id space (padding, words, unknown-word buckets)."""
        return self.oov_base + self.n_oov

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], *, min_count: int = 2, max_words: int = 60_000,
              **kw) -> "WordEncoder":
        """The words seen at least ``min_count`` times (most frequent first, ties by first appearance)."""
        counts = Counter(t for toks in token_lists for t in toks)
        words = [w for w, c in counts.most_common(max_words) if c >= min_count and w != SEPARATOR]
        return cls(words, **kw)

    def oov_id(self, token: str) -> int:
        return self.oov_base + zlib.crc32(token.encode("utf-8")) % self.n_oov

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Padded ids of ``texts`` (hot path: one call per micro-batch)."""
        n = len(texts)
        if n == 0:
            return np.zeros((0, 1), dtype=np.int64)
        toks = TOKEN.findall(normalize_joined(texts))
        get = self.vocab.get
        ids = np.fromiter((get(t, _UNKNOWN) for t in toks), dtype=np.int64, count=len(toks))
        unknown = np.flatnonzero(ids == _UNKNOWN)
        for i in unknown.tolist():  # rare: a few per message at most
            ids[i] = self.oov_id(toks[i])
        bounds = np.flatnonzero(ids == _BOUNDARY)
        starts = np.concatenate(([0], bounds + 1))
        ends = np.concatenate((bounds, [len(ids)]))
        lengths = np.minimum(ends - starts, self.max_tokens)
        width = max(int(lengths.max()), 1)
        out = np.zeros((n, width), dtype=np.int64)
        total = int(lengths.sum())
        if total:
            rows = np.repeat(np.arange(n), lengths)
            cols = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            out[rows, cols] = ids[np.repeat(starts, lengths) + cols]
        return out

    def to_json(self) -> str:
        return json.dumps({"kind": "words", "text_version": VERSION, "n_oov": self.n_oov,
                           "max_tokens": self.max_tokens, "words": self.words}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "WordEncoder":
        spec = json.loads(text)
        if spec.get("kind") != "words":
            raise ValueError(f"not a word encoder: {spec.get('kind')!r}")
        return cls(spec["words"], n_oov=spec["n_oov"], max_tokens=spec["max_tokens"],
                   text_version=spec["text_version"])

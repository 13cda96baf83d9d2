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

Optional subwords (fastText's character n-grams, ``subwords={"min_n": 3, "max_n": 5,
"buckets": B}``): each word's n-grams, with ``<``/``>`` boundary marks, are hashed by
CRC-32 into ``B`` buckets (:func:`char_ngram_buckets`). For vocabulary words the
model looks them up in a table built from the same function
(:meth:`WordEncoder.subword_table`); an unknown word, which has no row there, gets
its n-grams as extra ids ``n_ids + bucket`` after the message's words (at most
``max_per_message``), so a misspelling still lands near the word it spells.

>>> sub = WordEncoder(["good"], n_oov=4, subwords={"min_n": 3, "max_n": 3, "buckets": 1000})
>>> char_ngrams("bad", 3, 3)
['<ba', 'bad', 'ad>']
>>> row = sub.encode(["good bad"])[0].tolist()
>>> row[:2], row[2:] == [sub.n_ids + b for b in char_ngram_buckets("bad", 3, 3, 1000)]
([1, 5], True)
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import chain, repeat

import numpy as np

from .text import SEPARATOR, TOKEN, VERSION, normalize_joined

_BOUNDARY = -2
_UNKNOWN = -1
SUBWORD_DEFAULTS = {"min_n": 3, "max_n": 5, "max_per_message": 64}
MAX_NGRAM_WORD = 30  # longer tokens contribute the n-grams of their first 30 characters


def char_ngrams(word: str, min_n: int, max_n: int) -> list[str]:
    """The character n-grams of ``<word>`` (boundary marks included), shortest first."""
    w = f"<{word[:MAX_NGRAM_WORD]}>"
    return [w[i:i + n] for n in range(min_n, max_n + 1) for i in range(len(w) - n + 1)]


def char_ngram_buckets(word: str, min_n: int, max_n: int, buckets: int) -> list[int]:
    """Hashed n-gram ids of ``word`` in ``[0, buckets)`` (CRC-32 of each n-gram's UTF-8: stable across
    processes). An ASCII word is encoded once and its n-grams are byte slices (the same bytes)."""
    w = f"<{word[:MAX_NGRAM_WORD]}>"
    raw = w.encode("utf-8")
    crc = zlib.crc32
    if len(raw) == len(w):
        return [crc(raw[i:i + n]) % buckets for n in range(min_n, max_n + 1) for i in range(len(raw) - n + 1)]
    return [crc(g.encode("utf-8")) % buckets for g in char_ngrams(word, min_n, max_n)]


class WordEncoder:
    """Texts -> ``(n, length)`` int64 ids, padded with 0, at most ``max_tokens`` per text."""

    def __init__(self, words: Sequence[str], *, n_oov: int = 4096, max_tokens: int = 64,
                 text_version: int = VERSION, subwords: dict | None = None) -> None:
        if text_version != VERSION:
            raise ValueError(f"model was trained with text normalization v{text_version}, this code is v{VERSION}: "
                             "retrain the model (`lepton train sentiment`)")
        self.words = list(words)
        self.vocab = {w: i + 1 for i, w in enumerate(self.words)}  # 0 = padding
        self.vocab[SEPARATOR] = _BOUNDARY
        self.n_oov = n_oov
        self.max_tokens = max_tokens
        self.oov_base = len(self.words) + 1
        self.subwords = {**SUBWORD_DEFAULTS, **subwords} if subwords else None
        self._unknown_cache: dict[str, tuple[int, list[int]]] = {}

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

    def _ngram_ids(self, word: str) -> list[int]:
        sw = self.subwords
        return char_ngram_buckets(word, sw["min_n"], sw["max_n"], sw["buckets"])

    def subword_table(self) -> tuple[np.ndarray, np.ndarray]:
        """``(table, counts)``: row ``id`` holds the n-gram buckets of vocabulary word ``id``
        (padded with 0, ``counts[id]`` of them are real); padding and unknown-word ids have none."""
        rows = [self._ngram_ids(w) for w in self.words]
        width = max((len(r) for r in rows), default=1)
        table = np.zeros((self.n_ids, width), dtype=np.int64)
        counts = np.zeros(self.n_ids, dtype=np.int64)
        for i, r in enumerate(rows, 1):
            table[i, :len(r)] = r
            counts[i] = len(r)
        return table, counts

    def _unknown(self, token: str) -> tuple[int, list[int]]:
        """An unknown token's bucket id and, with subwords, ``n_ids + bucket`` for each of its n-grams."""
        n_ids = self.n_ids
        grams = [n_ids + b for b in self._ngram_ids(token)] if self.subwords else []
        return self.oov_id(token), grams

    def _unknowns(self, tokens: Iterable[str]) -> list[tuple[int, list[int]]]:
        """:meth:`_unknown` of each token, cached (one dict lookup per token; the cache is bounded)."""
        cache = self._unknown_cache
        if len(cache) >= 100_000:
            cache.clear()
        get, out = cache.get, []
        for t in tokens:
            got = get(t)
            if got is None:
                got = cache[t] = self._unknown(t)
            out.append(got)
        return out

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Padded ids of ``texts`` (hot path: one call per micro-batch)."""
        n = len(texts)
        if n == 0:
            return np.zeros((0, 1), dtype=np.int64)
        toks = TOKEN.findall(normalize_joined(texts))
        get = self.vocab.get
        ids = np.fromiter(map(get, toks, repeat(_UNKNOWN, len(toks))), dtype=np.int64, count=len(toks))
        unknown = np.flatnonzero(ids == _UNKNOWN)
        found = self._unknowns(map(toks.__getitem__, unknown.tolist())) if len(unknown) else []
        if found:  # a few per message at most
            ids[unknown] = [f[0] for f in found]
        bounds = np.flatnonzero(ids == _BOUNDARY)
        starts = np.concatenate(([0], bounds + 1))
        ends = np.concatenate((bounds, [len(ids)]))
        lengths = np.minimum(ends - starts, self.max_tokens)
        extra = self._extra_subwords(found, unknown, starts, lengths) if self.subwords and len(unknown) else None
        width = max(int(lengths.max()) + (0 if extra is None else int(extra[2].max())), 1)
        out = np.zeros((n, width), dtype=np.int64)
        total = int(lengths.sum())
        if total:
            rows = np.repeat(np.arange(n), lengths)
            cols = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            out[rows, cols] = ids[np.repeat(starts, lengths) + cols]
        if extra is not None:
            rows, values, counts = extra
            k = len(values)
            if k:
                rank = np.arange(k) - np.repeat(np.cumsum(counts) - counts, counts)
                out[rows, lengths[rows] + rank] = values
        return out

    def _extra_subwords(self, found: list[tuple[int, list[int]]], unknown: np.ndarray, starts: np.ndarray,
                        lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(message of each extra id, the ids, extras per message) for the unknown tokens kept.

        ``found`` is :meth:`_unknowns` of the tokens at ``unknown``. Per message, the n-grams of
        its unknown words in order, cut at ``max_per_message``; one flat list, no array per token.
        """
        message = np.searchsorted(starts, unknown, side="right") - 1
        kept = unknown - starts[message] < lengths[message]
        message = message[kept]
        grams = [found[j][1] for j in np.flatnonzero(kept).tolist()]
        counts = np.fromiter(map(len, grams), dtype=np.int64, count=len(grams))
        total = int(counts.sum())
        if not total:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(len(starts), dtype=np.int64)
        rows = np.repeat(message, counts)
        values = np.fromiter(chain.from_iterable(grams), dtype=np.int64, count=total)
        first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])  # rows are grouped by message, in order
        rank = np.arange(len(rows)) - np.repeat(first, np.diff(np.r_[first, len(rows)]))
        keep = rank < self.subwords["max_per_message"]
        rows, values = rows[keep], values[keep]
        return rows, values, np.bincount(rows, minlength=len(starts)).astype(np.int64)

    def to_json(self) -> str:
        spec = {"kind": "words", "text_version": VERSION, "n_oov": self.n_oov,
                "max_tokens": self.max_tokens, "words": self.words}
        if self.subwords:
            spec["subwords"] = self.subwords
        return json.dumps(spec, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "WordEncoder":
        spec = json.loads(text)
        if spec.get("kind") != "words":
            raise ValueError(f"not a word encoder: {spec.get('kind')!r}")
        return cls(spec["words"], n_oov=spec["n_oov"], max_tokens=spec["max_tokens"],
                   text_version=spec["text_version"], subwords=spec.get("subwords"))

"""What the worker logs per transaction at scoring time, so a label arriving days later can be joined.

A label (``{id, is_fraud}``) needs the transaction's time, card and terminal
(for :meth:`FeatureEngine.apply_labels`), its features (for the online model
to learn from what it saw then) and the scores given then (for the prequential
metrics). One record per transaction, keyed by its id in a table with expiry
(longer than the label delay). Records are compact ``bytes`` (about 130 bytes
with 25 features): packing a batch is one ``tobytes`` and a concatenation per
row, unpacking a batch one ``frombuffer``.

>>> import numpy as np
>>> X = np.arange(6, dtype=np.float32).reshape(2, 3)
>>> recs = pack([1.5, 2.5], ["card-1", "c2"], ["term-9", "t"], X, [0.9, 0.1], [0.8, np.nan])
>>> got = unpack(recs, n_features=3)
>>> got.ts.tolist(), got.card, got.merchant, got.X.tolist()
([1.5, 2.5], ['card-1', 'c2'], ['term-9', 't'], [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
>>> [round(s, 3) for s in got.score.tolist()], np.isnan(got.online_score).tolist()
([0.9, 0.1], [False, True])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_SEP = b"\x1f"  # unit separator: never in a validated card or terminal id


@dataclass
class Logged:
    """A batch of unpacked records, row-aligned."""

    ts: np.ndarray  # float64 transaction times
    card: list[str]
    merchant: list[str]
    X: np.ndarray  # (n, F) float32, the features it was scored with
    score: np.ndarray  # float32, the served (ONNX) score
    online_score: np.ndarray  # float32, the online model's score (NaN: none)


def _dtype(n_features: int) -> np.dtype:
    return np.dtype([("ts", "<f8"), ("score", "<f4"), ("online", "<f4"), ("x", "<f4", (n_features,))])


def pack(ts: Sequence[float] | np.ndarray, card: Sequence[str], merchant: Sequence[str], X: np.ndarray,
         score: Sequence[float] | np.ndarray, online_score: Sequence[float] | np.ndarray) -> list[bytes]:
    """One record per row of a scored batch."""
    X = np.asarray(X, dtype=np.float32)
    n, f = X.shape
    rec = np.empty(n, dtype=_dtype(f))
    rec["ts"] = ts
    rec["score"] = score
    rec["online"] = online_score
    rec["x"] = X
    buf = rec.tobytes()
    size = rec.dtype.itemsize
    tails = [f"{c}\x1f{m}".encode() for c, m in zip(card, merchant)]  # card, _SEP, terminal in one encode
    return [buf[a:a + size] + tail for a, tail in zip(range(0, n * size, size), tails)]


def unpack(records: Sequence[bytes], n_features: int) -> Logged:
    """The batch back from its records (all written with the same number of features)."""
    dt = _dtype(n_features)
    size = dt.itemsize
    rec = np.frombuffer(b"".join([r[:size] for r in records]), dtype=dt)
    # Each tail is card _SEP terminal (neither holds _SEP): all of them joined by _SEP, one decode, one split.
    ids = _SEP.join([r[size:] for r in records]).decode().split("\x1f")
    if len(ids) == 2 * len(records):
        card, merchant = ids[0::2], ids[1::2]
    else:  # (an id that holds the separator after all: each record split at its first)
        pairs = [r[size:].decode().split("\x1f", 1) for r in records]
        card, merchant = [c for c, _ in pairs], [m for _, m in pairs]
    return Logged(rec["ts"].copy(), card, merchant, rec["x"].copy(), rec["score"].copy(), rec["online"].copy())

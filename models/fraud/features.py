"""Fraud features in event time, from per-card and per-terminal state: one implementation.

The worker, the trainer and the evaluation all call :meth:`FeatureEngine.transform`
on micro-batches and :meth:`FeatureEngine.apply_labels` when labels arrive, so
the features a model is trained on are the features it is served: no skew.

State lives in two mappings, ``card -> state`` and ``terminal -> state`` (a
``dict`` for evaluation, a Faust table in the worker). Each key is read once and
written at most once per call. A state is one flat run of float64 numbers, a
small header then daily buckets (UTC days), see :data:`CARD_LAYOUT` and
:data:`TERMINAL_LAYOUT`; at most 31 buckets for a card, ``delay + 31`` for a
terminal. It is stored as ``bytes`` by default: reading a batch's states is
one ``b"".join`` and writing them one ``tobytes()`` plus a slice per key, and a
Faust table with the ``raw`` serializer stores them with no encoding cost.
``FeatureEngine(state_format="json")`` stores plain lists of numbers instead,
for a table with the JSON serializer (about 3 µs more per transaction);
:func:`to_json`, :func:`from_json` and :func:`decode` convert and inspect.

Windows. "The last w days" at time ``t`` (day ``d``, fraction of the day elapsed ``φ``) is

    the buckets of days d-w+1 .. d (today up to t, the current transaction included)
    + (1 - φ) × the bucket of day d-w,

the exact sliding window ``(t-w, t]`` if day d-w's transactions were spread
evenly over it. So a card keeps at most 31 buckets. Terminal windows are the
handbook's, delayed by the label delay ``D``: ``(t-D-w, t-D]`` by transaction
time, counting only the labels that have *arrived* (a label is applied when it
arrives, never before), so a terminal keeps at most ``D + 31`` buckets. Labels
also give each terminal its last known fraud and the start of its current run
of frauds (the handbook's compromised terminals stay compromised for weeks),
and each card its last known fraud.

>>> eng = FeatureEngine(label_delay_days=7)
>>> cards, terms = {}, {}
>>> X = eng.transform([0.0, 3600.0], ["c1", "c1"], ["t1", "t2"], [10.0, 30.0], cards, terms)
>>> X.shape == (2, len(FEATURES))
True
>>> float(X[1, FEATURES.index("card_count_1d")]), float(X[1, FEATURES.index("card_mean_1d")])
(2.0, 20.0)
>>> eng.apply_labels(cards, terms, ["c1"], ["t2"], [3600.0], [True], label_ts=3600.0 + 7 * 86400)
>>> decode(terms["t2"], TERMINAL_LAYOUT)["lf"], decode(cards["c1"], CARD_LAYOUT)
(3600.0, {'t': 3600.0, 'f': 3600.0, 'buckets': [[0.0, 2.0, 40.0, 1000.0]]})
>>> to_json(cards["c1"])
[3600.0, 3600.0, 0.0, 2.0, 40.0, 1000.0]
>>> from_json(to_json(cards["c1"])) == cards["c1"]
True
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
import itertools
import struct
from itertools import compress, repeat
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import pandas as pd

DAY = 86_400.0

try:  # the ufunc np.clip ends in, without np.clip's per-call argument handling (several µs a call)
    from numpy._core.umath import clip as _clip
except ImportError:  # pragma: no cover - an older numpy
    _clip = np.clip


def time_scale(meta: Any) -> float:
    """Feature seconds per second of event time, for a model (``meta.extra["time_scale"]``, default 1).

    Features count days. A model trained for traffic whose days pass faster
    than the wall clock (the demo streams a simulated day of about 10,000
    transactions in 20 s) records by how much, and the worker multiplies event
    times by it before computing features, so that the served features are on
    the scale the model was trained on. Latency and drift debouncing stay in
    event time.

    >>> from types import SimpleNamespace
    >>> time_scale(SimpleNamespace(extra={})), time_scale(SimpleNamespace(extra={"time_scale": 4320}))
    (1.0, 4320.0)
    """
    return float((getattr(meta, "extra", None) or {}).get("time_scale", 1.0))
CARD_WINDOWS = (1, 7, 30)
TERMINAL_WINDOWS = (1, 7, 30)
CARD_KEEP_DAYS = max(CARD_WINDOWS)  # buckets older than (card's latest day - 30) are never read again
AGE_CAP_DAYS = 40.0  # "never" for ages: longer than the handbook's compromises last
GAP_CAP_S = 30 * DAY  # "never" for the time since the card's previous transaction
_BIG = 1 << 24  # composite (key, day) codes key * _BIG + day: days since 1970 stay far below

FEATURES: list[str] = [
    "amount",
    "log_amount",
    "is_weekend",
    "is_night",
    *(f"card_count_{w}d" for w in CARD_WINDOWS),
    *(f"card_mean_{w}d" for w in CARD_WINDOWS),
    "card_log_gap",  # log1p(seconds since the card's previous transaction)
    "card_log_ratio",  # log1p(amount) - log1p(mean amount of the card's previous 30 days)
    "card_amount_z",  # the same against the card's spread
    "card_fraud_age",  # days since the card's latest known fraud (AGE_CAP_DAYS: none)
    *(f"terminal_count_{w}d" for w in TERMINAL_WINDOWS),  # labelled transactions, delayed window
    *(f"terminal_risk_{w}d" for w in TERMINAL_WINDOWS),  # share of frauds among them
    "terminal_fraud_age",  # days since the terminal's latest known fraud
    "terminal_streak_age",  # days since the first fraud of its current run of known frauds
    "terminal_last_fraud",  # 1 if the terminal's latest known label is a fraud
    "terminal_streak_frauds",  # known frauds in that run (a lone fraud is not a compromised terminal)
    "card_log_ratio_old",  # log1p(amount) - log1p(mean amount of the card 14..30 days ago)
]
_COL = {name: i for i, name in enumerate(FEATURES)}
OLD_DAYS = 14  # "the card before": a compromised card is compromised for 14 days in the handbook
_CARD_WIN = (*CARD_WINDOWS, OLD_DAYS)  # the card windows computed per transaction
# Day shifts searched for a window's two ends (before day d-w, before day d-w-1), all windows at once.
_CARD_SHIFTS = np.array([*_CARD_WIN, *(w + 1 for w in _CARD_WIN)], dtype=np.int64)[:, None]
_TERMINAL_SHIFTS = np.array([*TERMINAL_WINDOWS, *(w + 1 for w in TERMINAL_WINDOWS)], dtype=np.int64)[:, None]


@dataclass(frozen=True)
class Layout:
    """How a state is laid out: ``header`` scalars, then buckets of ``bucket`` numbers (the day first)."""

    header: tuple[str, ...]
    bucket: tuple[str, ...]


CARD_LAYOUT = Layout(
    # t: time of the card's latest transaction; f: time of its latest known fraud (0: none)
    header=("t", "f"),
    bucket=("day", "count", "sum", "sum_sq"),
)
TERMINAL_LAYOUT = Layout(
    # lf/ll: transaction time of the latest known fraud / legitimate label (0: none);
    # ss: transaction time of the first fraud after ll (0: none); sc: frauds after ll
    header=("lf", "ll", "ss", "sc"),
    bucket=("day", "labels", "frauds"),  # by transaction day, labels that have arrived
)
_ONE, _TWO = struct.Struct("<d"), struct.Struct("<2d")
State = Union[bytes, list]  # float64 little-endian bytes, or (state_format="json") a list of numbers


def to_json(state: State) -> list[float]:
    """A state as a plain list of numbers."""
    return np.frombuffer(state, dtype="<f8").tolist() if isinstance(state, bytes) else list(state)


def from_json(values: list[float]) -> bytes:
    """A state (list of numbers) as the engine's default ``bytes``."""
    return np.asarray(values, dtype="<f8").tobytes()


def decode(state: State, layout: Layout) -> dict[str, Any]:
    """A state as a readable dict (header fields and ``buckets``): for people and tests."""
    values = to_json(state)
    h = len(layout.header)
    w = len(layout.bucket)
    return {**dict(zip(layout.header, values[:h])), "buckets": [values[i:i + w] for i in range(h, len(values), w)]}


_SMALL = 256  # below this many keys a dict factorizes faster than pandas (its ~35 µs fixed cost per call)


def _factorize(keys: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """Codes in order of first appearance and the distinct keys (``pd.factorize(..., sort=False)``).

    >>> codes, uniques = _factorize(["b", "a", "b"])
    >>> codes.tolist(), uniques
    ([0, 1, 0], ['b', 'a'])
    """
    if len(keys) < _SMALL and None not in keys:  # (pandas codes a missing key -1)
        index: dict[Any, int] = {}
        setdefault = index.setdefault
        codes = [setdefault(key, len(index)) for key in keys]
        return np.array(codes, dtype=np.int64), list(index)
    codes, uniques = pd.factorize(np.asarray(keys, dtype=object), sort=False)
    return codes.astype(np.int64, copy=False), uniques.tolist()


class _Store:
    """Reads and writes one kind of state for a batch of keys, in one format."""

    def __init__(self, layout: Layout, fmt: str) -> None:
        self.h = len(layout.header)
        self.w = len(layout.bucket)
        self.json = fmt == "json"
        self.empty: State = [0.0] * self.h if self.json else bytes(8 * self.h)

    def gather(self, states: Mapping[str, State], keys: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(headers (m, h), buckets (rows, w), bucket key index)``; buckets sorted by (key, day)."""
        empty = self.empty
        get_many = getattr(states, "get_many", None)  # a table's bulk read (None: absent)
        if get_many is not None:
            vals = get_many(keys)
            if None in vals:  # absent keys (new cards, terminals): the empty state
                vals = [empty if v is None else v for v in vals]
        else:
            get = states.get
            vals = [get(key, empty) for key in keys]
        return self.gather_values(vals)

    def gather_values(self, vals: list[State]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`gather` of states already read (``self.empty`` for none)."""
        m = len(vals)
        if self.json:
            lens = np.fromiter(map(len, vals), np.int64, m)
            flat = np.fromiter(itertools.chain.from_iterable(vals), np.float64, int(lens.sum()))
        else:
            lens = np.fromiter(map(len, vals), np.int64, m) // 8
            flat = np.frombuffer(b"".join(vals), dtype="<f8")
        starts = np.cumsum(lens) - lens
        head_idx = starts[:, None] + np.arange(self.h)
        headers = flat[head_idx]
        body = np.ones(len(flat), dtype=bool)
        body[head_idx.ravel()] = False
        buckets = flat[body].reshape(-1, self.w)
        return headers, buckets, np.repeat(np.arange(m), (lens - self.h) // self.w)

    def write(self, states: MutableMapping[str, State], keys: list[Any], headers: np.ndarray,
              buckets: np.ndarray, bucket_key: np.ndarray) -> None:
        """Write each key once: its header and its buckets (``bucket_key`` sorted ascending)."""
        m, h, w = len(keys), self.h, self.w
        counts = np.bincount(bucket_key, minlength=m)
        lens = h + counts * w
        ends = np.cumsum(lens)
        starts = ends - lens
        total = int(ends[-1]) if m else 0
        out = np.empty(total, dtype="<f8")
        is_header = np.zeros(total, dtype=bool)
        is_header[(starts[:, None] + np.arange(h)).ravel()] = True
        out[is_header] = headers.ravel()  # each key: its header, then its buckets (already in key order)
        out[~is_header] = buckets.ravel()
        if self.json:
            flat = out.tolist()
            values = [flat[a:b] for a, b in zip(starts.tolist(), ends.tolist())]
        else:
            buf = out.tobytes()
            values = [buf[a:b] for a, b in zip((starts * 8).tolist(), (ends * 8).tolist())]
        update_many = getattr(states, "update_many", None)  # a table's bulk write
        if hasattr(states, "update_decoded"):  # one that keeps its states decoded too: the arrays as well
            states.update_decoded(dict(zip(keys, values)), headers, buckets, bucket_key)
        elif update_many is not None:
            update_many(dict(zip(keys, values)))
        else:
            for key, value in zip(keys, values):
                states[key] = value


def _sum_buckets(rows: np.ndarray, key: np.ndarray, comp: np.ndarray,
                 oldest_day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by ``comp`` (key * _BIG + day) summed per (key, day), days before
    ``oldest_day[key]`` dropped: ``(buckets, key of each)``."""
    keep = rows[:, 0] >= oldest_day[key]
    if not keep.all():
        rows, comp, key = rows[keep], comp[keep], key[keep]
    if not len(comp):
        return rows, key
    last = np.empty(len(comp), dtype=bool)
    last[-1] = True
    np.not_equal(comp[1:], comp[:-1], out=last[:-1])
    if last.all():  # one row per (key, day): nothing to add up
        return rows, key
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    summed = np.add.reduceat(rows, starts, axis=0)
    summed[:, 0] = rows[ends, 0]
    return summed, key[ends]


def _append_days(old: np.ndarray, old_key: np.ndarray, comp_old: np.ndarray, tx_rows: np.ndarray,
                 key: np.ndarray, comp: np.ndarray, first: np.ndarray, oldest_day: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Stored buckets (sorted by ``comp_old``) and a batch's transaction rows (sorted by ``comp``,
    ``first``: each key's first row; every key 0..m-1 has one) summed per (key, day), days before
    ``oldest_day[key]`` dropped: ``(buckets, key of each)``, sorted by (key, day).

    Events come in time order (labels nearly so), so a key's rows are on or after its latest bucket's day:
    its kept buckets are a run of the stored ones, the latest one maybe topped up, then the new
    days. That is index arithmetic on runs already sorted; a batch with an older day (late
    events) or spanning more than the kept days takes the general merge.
    """
    m = len(oldest_day)
    n_old = np.bincount(old_key, minlength=m)
    old_end = np.cumsum(n_old)
    has_old = n_old > 0
    latest = np.full(m, -np.inf)
    latest[has_old] = old[old_end[has_old] - 1, 0]
    first_day = tx_rows[first, 0]
    if not ((first_day >= latest).all() and (first_day >= oldest_day).all()):
        rows = np.concatenate([old, tx_rows])
        keys = np.concatenate([old_key, key])
        comps = np.concatenate([comp_old, comp])
        seq = np.argsort(comps, kind="stable")
        return _sum_buckets(rows[seq], keys[seq], comps[seq], oldest_day)
    # The batch's days: one row per (key, day).
    day_end = np.empty(len(comp), dtype=bool)
    day_end[-1] = True
    np.not_equal(comp[1:], comp[:-1], out=day_end[:-1])
    ends = np.flatnonzero(day_end)
    starts = np.concatenate(([0], ends[:-1] + 1))
    new = np.add.reduceat(tx_rows, starts, axis=0)
    new[:, 0] = tx_rows[ends, 0]
    new_key = key[ends]
    n_new = np.bincount(new_key, minlength=m)
    new_start = np.cumsum(n_new) - n_new
    # A key whose first new day is its latest stored day: that bucket is added to the new one.
    topped = first_day == latest
    new[new_start[topped], 1:] += old[old_end[topped] - 1, 1:]
    keep_from = np.searchsorted(comp_old, np.arange(m) * _BIG + oldest_day, side="left")
    n_keep = old_end - topped - keep_from
    count = n_keep + n_new
    out_start = np.cumsum(count) - count
    # Each key: its kept stored run, then its new days; gathered from [old; new] in one indexing.
    seg_src = np.column_stack([keep_from, len(old) + new_start]).ravel()
    seg_len = np.column_stack([n_keep, n_new]).ravel()
    seg_out = np.column_stack([out_start, out_start + n_keep]).ravel()
    total = int(count.sum())
    idx = np.repeat(seg_src - seg_out, seg_len) + np.arange(total)
    return np.concatenate([old, new]).take(idx, axis=0), np.repeat(np.arange(m), count)  # (take: see _card)


class FeatureEngine:
    """Computes :data:`FEATURES` for batches of transactions and learns from their labels.

    Holds no state itself (all of it is in the mappings passed in), so one
    engine serves any number of partitions. ``label_delay_days`` delays the
    terminal windows; training and serving must use the same value.
    """

    features: list[str] = FEATURES

    def __init__(self, label_delay_days: int = 7, *, state_format: str = "bytes") -> None:
        if int(label_delay_days) != label_delay_days or label_delay_days < 0:
            raise ValueError(f"label_delay_days must be a whole number of days >= 0, got {label_delay_days}")
        if state_format not in ("bytes", "json"):
            raise ValueError(f"state_format must be 'bytes' or 'json', got {state_format!r}")
        self.delay = int(label_delay_days)
        self.terminal_keep_days = self.delay + max(TERMINAL_WINDOWS)
        self.state_format = state_format
        self._cards = _Store(CARD_LAYOUT, state_format)
        self._terminals = _Store(TERMINAL_LAYOUT, state_format)

    # --- scoring time ----------------------------------------------------------------------

    def transform(
        self,
        ts: Sequence[float] | np.ndarray,
        card: Sequence[str],
        merchant: Sequence[str],
        amount: Sequence[float] | np.ndarray,
        card_states: MutableMapping[str, State],
        terminal_states: Mapping[str, State],
    ) -> np.ndarray:
        """Features of a batch, ``(n, len(FEATURES))`` float32, rows in input order.

        A transaction counts for the later ones of its card (event-time order,
        ties in input order), and each card of the batch is written once.
        Terminal state is only read: it changes when labels arrive.
        """
        ts = np.asarray(ts, dtype=np.float64)
        amount = np.asarray(amount, dtype=np.float64)
        n = len(ts)
        if not (len(card) == len(merchant) == len(amount) == n):
            raise ValueError(f"batch columns differ in length: ts {n}, card {len(card)}, "
                             f"merchant {len(merchant)}, amount {len(amount)}")
        X = np.empty((n, len(FEATURES)), dtype=np.float32)
        if n == 0:
            return X
        if not np.isfinite(ts).all() or not np.isfinite(amount).all():
            raise ValueError("ts and amount must be finite (validate inputs before featurizing)")
        day_f = np.floor(ts / DAY)
        day = day_f.astype(np.int64)
        frac = ts / DAY - day_f
        X[:, _COL["amount"]] = amount
        X[:, _COL["log_amount"]] = np.log1p(np.maximum(amount, 0.0))
        X[:, _COL["is_weekend"]] = (day + 3) % 7 >= 5  # 1970-01-01 was a Thursday
        X[:, _COL["is_night"]] = frac * 24.0 < 7.0  # hours 0-6, as the handbook
        self._card(X, ts, day, frac, amount, card, card_states)
        self._terminal(X, ts, day, frac, merchant, terminal_states)
        return X

    def _card(self, X: np.ndarray, ts: np.ndarray, day: np.ndarray, frac: np.ndarray, amount: np.ndarray,
              card: Sequence[str], states: MutableMapping[str, State]) -> None:
        codes, keys = _factorize(card)
        headers, old, old_key = self._cards.gather(states, keys)
        last, fraud = headers[:, 0], headers[:, 1]

        # The batch sorted by (card, time), hence by (card, day) like the stored buckets. A window is
        # the card's stored buckets in it plus its batch transactions up to this one (ties in input
        # order): two prefix sums over runs already sorted, no merge.
        time_order = np.arange(len(ts)) if (ts[1:] >= ts[:-1]).all() else np.argsort(ts, kind="stable")
        order = time_order[np.argsort(codes[time_order], kind="stable")]
        k, t, d, fr, a = codes[order], ts[order], day[order], frac[order], amount[order]
        tx_rows = np.column_stack([d.astype(np.float64), np.ones_like(a), a, a * a])
        comp = k * _BIG + d
        comp_old = old_key * _BIG + old[:, 0].astype(np.int64)
        p_old = np.zeros((len(old) + 1, 3))
        np.cumsum(old[:, 1:], axis=0, out=p_old[1:])
        p_new = np.zeros((len(k) + 1, 3))
        np.cumsum(tx_rows[:, 1:], axis=0, out=p_new[1:])
        # (rows gathered with take(axis=0): the same copy as p_old[i], several times faster for 2-D arrays)
        upto = p_old.take(np.searchsorted(comp_old, comp, side="right"), axis=0) + p_new[1:]
        edge = (1.0 - fr)[:, None]
        # Every window at once (one search per run for all of them: the same numbers, fewer numpy calls):
        # the prefix sums before day d-w (a) and before day d-w-1 (b), stored and batch rows.
        q = (comp - _CARD_SHIFTS).ravel()
        at_old = p_old.take(np.searchsorted(comp_old, q, side="right"), axis=0).reshape(len(_CARD_SHIFTS), len(comp), 3)
        at_new = p_new.take(np.searchsorted(comp, q, side="right"), axis=0).reshape(len(_CARD_SHIFTS), len(comp), 3)
        nw = len(_CARD_WIN)
        a_old, b_old, a_new, b_new = at_old[:nw], at_old[nw:], at_new[:nw], at_new[nw:]
        wins = upto - a_old - a_new + edge * (a_old - b_old + a_new - b_new)
        win = dict(zip(_CARD_WIN, wins))  # w -> (n, 3): count, sum, sum of squares over the window

        out = order  # the columns below are in (card, time) order
        for w in CARD_WINDOWS:
            cnt = win[w][:, 0]
            X[out, _COL[f"card_count_{w}d"]] = cnt
            X[out, _COL[f"card_mean_{w}d"]] = win[w][:, 1] / np.maximum(cnt, 1e-9)
        # The amount against the card's previous 30 days (the current transaction left out).
        n_prev = win[30][:, 0] - 1.0
        has = n_prev >= 1.0 - 1e-9
        safe_n = np.where(has, n_prev, 1.0)
        mean_prev = np.maximum(np.where(has, (win[30][:, 1] - a) / safe_n, a), 0.0)
        var_prev = np.where(has, np.maximum((win[30][:, 2] - a * a) / safe_n - mean_prev ** 2, 0.0), 0.0)
        X[out, _COL["card_log_ratio"]] = np.log1p(np.maximum(a, 0.0)) - np.log1p(mean_prev)
        old_win = win[30] - win[OLD_DAYS]
        has_old = old_win[:, 0] >= 1.0 - 1e-9
        mean_old = np.where(has_old, old_win[:, 1] / np.where(has_old, old_win[:, 0], 1.0), mean_prev)
        X[out, _COL["card_log_ratio_old"]] = np.log1p(np.maximum(a, 0.0)) - np.log1p(np.maximum(mean_old, 0.0))
        z = (a - mean_prev) / np.sqrt(var_prev + (0.1 * mean_prev) ** 2 + 1.0)
        X[out, _COL["card_amount_z"]] = _clip(z, -20.0, 50.0)
        first = np.ones(len(k), dtype=bool)
        first[1:] = k[1:] != k[:-1]
        prev = np.empty_like(t)
        prev[1:] = t[:-1]
        prev[first] = last[k[first]]
        gap = np.where(prev > 0.0, _clip(t - prev, 0.0, GAP_CAP_S), GAP_CAP_S)
        X[out, _COL["card_log_gap"]] = np.log1p(gap)
        f = fraud[k]
        X[out, _COL["card_fraud_age"]] = np.where(f > 0.0, _clip((t - f) / DAY, 0.0, AGE_CAP_DAYS), AGE_CAP_DAYS)

        # Write each card once: its buckets and its transactions summed per day, days before its day - 30 dropped.
        key_last = np.concatenate((np.flatnonzero(k[1:] != k[:-1]), [len(k) - 1]))  # each card's last row
        headers[:, 0] = np.maximum(last, t[key_last])
        oldest = d[key_last] - CARD_KEEP_DAYS
        buckets, bucket_key = _append_days(old, old_key, comp_old, tx_rows, k, comp, first, oldest)
        self._cards.write(states, keys, headers, buckets, bucket_key)

    def _terminal(self, X: np.ndarray, ts: np.ndarray, day: np.ndarray, frac: np.ndarray,
                  merchant: Sequence[str], states: Mapping[str, State] | TerminalCache) -> None:
        if isinstance(states, TerminalCache):
            if states.wide and not states.wide.isdisjoint(merchant):
                raise ValueError("a terminal of this batch has a part too wide for the cache: pass its states")
            rows = np.fromiter(map(states.rows.__getitem__, merchant), np.int64, len(merchant))
            heads, counts, P = states._windows(rows, day - self.delay, _TERMINAL_SHIFTS[:, 0])
            lf, ll, ss, sc = _merge_headers(heads)
            self._terminal_features(X, ts, frac, counts[0], counts[1:], P, lf, ll, ss, sc, np.arange(len(ts)))
            return
        codes, keys = _factorize(merchant)
        if isinstance(states, TerminalParts):  # P parts per terminal (padded with empty ones), merged here
            get = states.get
            groups = [get(key, ()) for key in keys]
            P = max(1, max(map(len, groups), default=1))
            pads = [(self._terminals.empty,) * (P - k) for k in range(P + 1)]
            headers, old, old_key = self._terminals.gather_values(
                list(itertools.chain.from_iterable([g + pads[len(g)] for g in groups])))
            lf, ll, ss, sc = _merge_headers(headers.reshape(len(keys), P, -1))
        else:
            P = 1
            headers, old, old_key = self._terminals.gather(states, keys)
            lf, ll, ss, sc = headers.T
        comp_old = old_key * _BIG + old[:, 0].astype(np.int64)  # sorted: keys (parts) in order, days in order
        prefix = np.zeros((len(old) + 1, 2))
        np.cumsum(old[:, 1:], axis=0, out=prefix[1:])
        # Each transaction's window in each part of its terminal, added up over the parts.
        end = (codes[:, None] * P + np.arange(P)).ravel() * _BIG + np.repeat(day - self.delay, P)
        upto = prefix[np.searchsorted(comp_old, end, side="right")]
        # Every window's two ends in one search (as for cards).
        at = prefix[np.searchsorted(comp_old, (end - _TERMINAL_SHIFTS).ravel(), side="right")]
        at = at.reshape(len(_TERMINAL_SHIFTS), len(end), 2)
        self._terminal_features(X, ts, frac, upto, at, P, lf, ll, ss, sc, codes)

    @staticmethod
    def _terminal_features(X: np.ndarray, ts: np.ndarray, frac: np.ndarray, upto: np.ndarray, at: np.ndarray,
                           P: int, lf: np.ndarray, ll: np.ndarray, ss: np.ndarray, sc: np.ndarray,
                           codes: np.ndarray) -> None:
        """The terminal columns from label counts up to each transaction's delayed day (``upto``, per transaction
        and part) and up to the days before each window (``at``), and the merged headers (indexed by ``codes``)."""
        edge = np.repeat(1.0 - frac, P)[:, None]
        nw = len(TERMINAL_WINDOWS)
        wins = upto - at[:nw] + edge * (at[:nw] - at[nw:])
        for w, win in zip(TERMINAL_WINDOWS, wins):
            n_lab, n_fr = (_over_parts(np.add, win.reshape(len(ts), P, 2)) if P > 1 else win).T
            X[:, _COL[f"terminal_count_{w}d"]] = n_lab
            X[:, _COL[f"terminal_risk_{w}d"]] = np.where(n_lab > 1e-9, n_fr / np.maximum(n_lab, 1e-9), 0.0)
        f_t, l_t, s_t = lf[codes], ll[codes], ss[codes]
        X[:, _COL["terminal_fraud_age"]] = np.where(f_t > 0.0, _clip((ts - f_t) / DAY, 0.0, AGE_CAP_DAYS),
                                                    AGE_CAP_DAYS)
        streak = (f_t > l_t) & (s_t > 0.0)
        X[:, _COL["terminal_streak_age"]] = np.where(streak, _clip((ts - s_t) / DAY, 0.0, AGE_CAP_DAYS),
                                                     AGE_CAP_DAYS)
        X[:, _COL["terminal_last_fraud"]] = f_t > l_t
        X[:, _COL["terminal_streak_frauds"]] = np.where(streak, np.minimum(sc[codes], 30.0), 0.0)

    # --- label time ------------------------------------------------------------------------

    def apply_labels(
        self,
        card_states: MutableMapping[str, State],
        terminal_states: MutableMapping[str, State],
        card: Sequence[str],
        merchant: Sequence[str],
        tx_ts: Sequence[float] | np.ndarray,
        is_fraud: Sequence[bool] | np.ndarray,
        label_ts: float,
    ) -> None:
        """Make arrived labels count: terminal label buckets and fraud runs, card latest fraud.

        ``card``, ``merchant`` and ``tx_ts`` are those of the labelled
        transactions (logged at scoring time); ``label_ts`` is the event time at
        which the labels arrived (now), which decides what has expired. Each
        terminal is written once; a card only when one of its labels is a fraud.
        Labels may arrive in any order.
        """
        tx_ts = np.asarray(tx_ts, dtype=np.float64)
        y = np.asarray(is_fraud, dtype=bool)
        n = len(tx_ts)
        if not (len(card) == len(merchant) == len(y) == n):
            raise ValueError("label columns differ in length")
        if n == 0:
            return
        if y.any():  # cards: only their latest known fraud, so only cards with a fraud are written
            ccodes, ckeys = _factorize(np.asarray(card, dtype=object)[y])
            headers, old, old_key = self._cards.gather(card_states, ckeys)
            latest = headers[:, 1].copy()
            np.maximum.at(latest, ccodes, tx_ts[y])
            changed = latest > headers[:, 1]
            if changed.any():
                headers[:, 1] = latest
                pick = np.flatnonzero(changed)
                keep = changed[old_key]
                remap = np.cumsum(changed) - 1
                self._cards.write(card_states, [ckeys[j] for j in pick], headers[pick], old[keep],
                                  remap[old_key[keep]])

        codes, keys = _factorize(merchant)
        headers, old, old_key = self._terminals.gather(terminal_states, keys)
        lf, ll, ss, sc = headers.T
        tx_day = np.floor(tx_ts / DAY)
        new = np.column_stack([tx_day, np.ones(n), y.astype(np.float64)])
        comp = codes * _BIG + tx_day.astype(np.int64)
        seq = np.argsort(comp, kind="stable")  # the labels by (terminal, day), ties in arrival order
        key = codes[seq]
        first = np.concatenate(([True], key[1:] != key[:-1]))
        oldest = np.full(len(keys), int(np.floor(label_ts / DAY)) - self.terminal_keep_days, dtype=np.int64)
        comp_old = old_key * _BIG + old[:, 0].astype(np.int64)
        buckets, bucket_key = _append_days(old, old_key, comp_old, new[seq], key, comp[seq], first, oldest)
        # Runs: the latest legitimate label ends one; the first fraud after it starts the next.
        new_ll = ll.copy()
        np.maximum.at(new_ll, codes[~y], tx_ts[~y])
        new_lf = lf.copy()
        np.maximum.at(new_lf, codes[y], tx_ts[y])
        continuing = ss > new_ll  # no legitimate label came after the run began
        start = np.where(continuing, ss, np.inf)
        count = np.where(continuing, sc, 0.0)
        after = y & (tx_ts > new_ll[codes])
        np.minimum.at(start, codes[after], tx_ts[after])
        np.add.at(count, codes[after], 1.0)
        new_ss = np.where(np.isfinite(start), start, 0.0)
        headers = np.column_stack([new_lf, new_ll, new_ss, count])
        self._terminals.write(terminal_states, keys, headers, buckets, bucket_key)

    # --- expiry ----------------------------------------------------------------------------

    @staticmethod
    def card_expired(state: State, now: float) -> bool:
        """True once ``state`` can no longer change a feature: the key can go (features as if absent)."""
        t, f = _TWO.unpack_from(state) if isinstance(state, bytes) else state[:2]
        horizon = max((CARD_KEEP_DAYS + 1) * DAY, GAP_CAP_S, AGE_CAP_DAYS * DAY)
        return max(t, f) < now - horizon

    def terminal_expired(self, state: State, now: float) -> bool:
        """True once ``state`` can no longer change a feature: the key can go (features as if absent)."""
        h, w = len(TERMINAL_LAYOUT.header), len(TERMINAL_LAYOUT.bucket)
        if isinstance(state, bytes):  # two fields and a day read in place (a sweep checks many keys)
            lf, ll = _TWO.unpack_from(state)
            newest_day = _ONE.unpack_from(state, len(state) - 8 * w)[0] if len(state) > 8 * h else -np.inf
        else:
            lf, ll = state[0], state[1]
            newest_day = state[len(state) - w] if len(state) > h else -np.inf
        buckets_gone = newest_day < np.floor(now / DAY) - self.terminal_keep_days - 1
        return bool(buckets_gone and max(lf, ll) < now - AGE_CAP_DAYS * DAY)


class TerminalParts(dict):
    """``terminal -> tuple of states``, the states written for it by several label partitions.

    Passed as ``terminal_states`` to :meth:`FeatureEngine.transform`, the parts
    are merged on the fly: the features of :func:`merge_terminal_states`' state,
    without writing a merged state per terminal (the worker's scoring path).
    """


class TerminalCache:
    """Terminals' label sub-states decoded once, kept as per-day cumulative counts (the worker's scoring path).

    :class:`TerminalParts` decodes every part of every terminal of a batch from its bytes at every
    batch (about 1 KB per transaction with 4 label partitions) and searches the windows' ends in
    them. This cache decodes a part when it is first read and when its label partition rewrites
    it (:meth:`store`), into a row of cumulative label and fraud counts over ``days`` days from the
    part's first bucket, so a batch's windows are read by index. Window counts are whole numbers,
    so every count read here equals the one the bytes give, to the last bit, and the features
    equal those of :class:`TerminalParts` with the parts in the same order: a terminal's parts
    are kept in the order they were added (``load``, then new ones at the end), as there.

    A part whose buckets span more than ``days`` days (never written by :meth:`FeatureEngine.apply_labels`,
    which keeps ``label_delay_days + 32``) makes its terminal ``wide``: its batches take the bytes.

    >>> eng = FeatureEngine(label_delay_days=7)
    >>> a, b = {}, {}
    >>> eng.apply_labels({}, a, ["c"], ["t"], [0.0], [True], label_ts=7 * DAY)
    >>> eng.apply_labels({}, b, ["d"], ["t"], [3600.0], [False], label_ts=7 * DAY)
    >>> cache = TerminalCache(days=48)
    >>> cache.load(["t"], [{0: a["t"]}]); cache.store(1, ["t", "u"], [b["t"], b"x"])  # "u" is not cached
    >>> X = eng.transform([8 * DAY], ["z"], ["t"], [5.0], {}, cache)
    >>> Y = eng.transform([8 * DAY], ["z"], ["t"], [5.0], {}, TerminalParts(t=(a["t"], b["t"])))
    >>> X.tobytes() == Y.tobytes(), float(X[0, FEATURES.index("terminal_count_1d")])
    (True, 2.0)
    """

    def __init__(self, days: int = 48, parts: int = 1) -> None:
        self.days = int(days)
        self.rows: dict[Any, int] = {}  # terminal -> row
        self._free: list[int] = []
        self.wide: set[Any] = set()  # terminals with a part too wide for the rows
        self._alloc(0, max(1, parts), max(1, parts))

    def _alloc(self, rows: int, slots: int, ids: int) -> None:
        """Arrays for ``rows`` rows of ``slots`` slots and ``ids`` part ids, the current contents copied in."""
        head = np.zeros((rows, slots, len(TERMINAL_LAYOUT.header)))
        base = np.zeros((rows, slots), dtype=np.int64)
        # labels and frauds up to each day (counts before day 0 of the part, then through each day): whole
        # numbers < 2**24, exact in float32; a day's two counts side by side, so reading a window end is one
        # 8-byte read (the reads are cache misses: ~16 MB for 10,000 terminals of 4 parts)
        cum = np.zeros((rows, slots, self.days + 1, 2), dtype=np.float32)
        used = np.zeros(rows, dtype=np.int64)  # slots taken (the first ones)
        slot_of = np.full((rows, ids), -1, dtype=np.int64)  # part id -> slot (-1: none)
        if hasattr(self, "head"):
            r, q = self.head.shape[:2]
            head[:r, :q], base[:r, :q], cum[:r, :q], used[:r] = self.head, self.base, self.cum, self.used
            slot_of[:r, :self.slot_of.shape[1]] = self.slot_of
        self.head, self.base, self.cum, self.used, self.slot_of = head, base, cum, used, slot_of

    def _grow(self, rows: int = 0, slots: int = 0, ids: int = 0) -> None:
        r, q, i = len(self.head), self.head.shape[1], self.slot_of.shape[1]
        if rows > r or slots > q or ids > i:
            self._alloc(max(rows, 2 * r) if rows > r else r, max(slots, q), max(ids, i))

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, key: object) -> bool:
        return key in self.rows

    def clear(self) -> None:
        self.rows.clear()
        self._free.clear()
        self.wide.clear()
        _, q, i = len(self.head), self.head.shape[1], self.slot_of.shape[1]
        del self.head
        self._alloc(0, q, i)

    def discard(self, key: Any) -> None:
        """Forget ``key`` (expired): its row is reused."""
        row = self.rows.pop(key, None)
        if row is not None:
            self.head[row], self.base[row], self.cum[row], self.used[row], self.slot_of[row] = 0.0, 0, 0.0, 0, -1
            self._free.append(row)
            self.wide.discard(key)

    def order(self, key: Any) -> list[int]:
        """``key``'s part ids in slot order."""
        ids = self.slot_of[self.rows[key]]
        return [int(q) for q in np.argsort(ids, kind="stable") if ids[q] >= 0]

    def load(self, keys: Sequence[Any], parts: Sequence[Mapping[int, bytes]]) -> None:
        """Cache ``keys`` (not cached yet) with their parts (part id -> state, in the order to keep)."""
        rows = []
        top = len(self.rows) + len(self._free)  # rows in use or free: the next new row
        for key in keys:
            row = self._free.pop() if self._free else top
            top += row == top
            self.rows[key] = row
            rows.append(row)
        sizes = np.fromiter(map(len, parts), np.int64, len(parts))
        ids = np.fromiter((q for group in parts for q in group), np.int64, int(sizes.sum()))
        self._grow(rows=top, slots=int(sizes.max(initial=0)), ids=int(ids.max(initial=-1)) + 1)
        r = np.asarray(rows, dtype=np.int64)
        self.used[r] = sizes
        r = np.repeat(r, sizes)
        slot = np.arange(len(r)) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # each row's parts in order
        self.slot_of[r, ids] = slot
        self._decode(r, slot, [v for group in parts for v in group.values()])

    def store(self, part: int, keys: Sequence[Any], states: Sequence[bytes]) -> None:
        """Part ``part`` of ``keys`` rewritten with ``states``: the cached keys take them (others are read when needed)."""
        found = [(key, state) for key, state in zip(keys, states) if key in self.rows]
        if found:
            self.store_decoded(part, [key for key, _ in found],
                               *_Store(TERMINAL_LAYOUT, "bytes").gather_values([state for _, state in found]))

    def store_decoded(self, part: int, keys: Sequence[Any], headers: np.ndarray, buckets: np.ndarray,
                      bucket_key: np.ndarray) -> None:
        """:meth:`store` of states given as :meth:`_Store.gather_values` gives them (what the engine writes)."""
        rows = np.fromiter(map(self.rows.get, keys, repeat(-1)), np.int64, len(keys))
        cached = rows >= 0
        if not cached.any():
            return
        if not cached.all():
            keep = cached[bucket_key]
            bucket_key = (np.cumsum(cached) - 1)[bucket_key[keep]]
            rows, headers, buckets = rows[cached], headers[cached], buckets[keep]
        self._grow(ids=part + 1)
        slot = self.slot_of[rows, part]
        new = slot < 0
        if new.any():  # a part not seen for this terminal yet: the next slot
            slot[new] = self.used[rows[new]]
            self.used[rows[new]] += 1
            self.slot_of[rows[new], part] = slot[new]
            self._grow(slots=int(slot.max()) + 1)
        self._put(rows, slot, headers, buckets, bucket_key)

    def _decode(self, r: np.ndarray, k: np.ndarray, states: Sequence[bytes]) -> None:
        """Each state into its row ``r`` and slot ``k``."""
        if len(states):
            self._put(r, k, *_Store(TERMINAL_LAYOUT, "bytes").gather_values(list(states)))

    def _put(self, r: np.ndarray, k: np.ndarray, headers: np.ndarray, buckets: np.ndarray, key: np.ndarray) -> None:
        """States (headers, buckets sorted by state, the state of each) into rows ``r``, slots ``k``."""
        m = len(r)
        self.head[r, k] = headers
        first = np.zeros(m, dtype=np.int64)
        counts = np.bincount(key, minlength=m)
        has = counts > 0
        starts = np.cumsum(counts) - counts
        first[has] = buckets[starts[has], 0].astype(np.int64)
        self.base[r, k] = first
        offset = buckets[:, 0].astype(np.int64) - first[key]
        fits = (offset >= 0) & (offset < self.days)
        fits[1:] &= (key[1:] != key[:-1]) | (offset[1:] > offset[:-1])  # one bucket a day, in order
        cum = np.zeros((m, self.days + 1, 2), dtype=np.float32)
        at = (key[fits] * (self.days + 1) + offset[fits] + 1) * 2  # (two 1-D assignments: far cheaper than one of pairs)
        flat = cum.reshape(-1)
        flat[at] = buckets[fits, 1]
        flat[at + 1] = buckets[fits, 2]
        # The running sums over days: each (labels, frauds) pair viewed as one complex64, whose addition is the
        # two float32 additions, in the same order (the same bits), with days the last axis: numpy's cumsum
        # over the middle axis of (m, days + 1, 2) costs ~2 times as much (0.26 against 0.17 ms, 520 terminals)
        pairs = cum.view(np.complex64)[..., 0]
        np.cumsum(pairs, axis=1, out=pairs)
        self.cum.reshape(-1, self.days + 1, 2)[r * self.cum.shape[1] + k] = cum
        if not fits.all():  # (buckets out of order or too wide: the bytes are read for this terminal)
            bad = set(r[np.unique(key[~fits])].tolist())
            self.wide.update(key_ for key_, row in self.rows.items() if row in bad)

    def _windows(self, rows: np.ndarray, ends: np.ndarray, shifts: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, int]:
        """Per transaction and part (slots ``0..P-1``, ``P`` the most any of ``rows`` uses): headers ``(n, P, 4)``
        and counts up to each day ``ends - shift`` (``(1 + len(shifts), n * P, 2)``, first for shift 0)."""
        P = max(1, int(self.used[rows].max(initial=0)))
        slots, width = self.cum.shape[1], self.days + 1
        base = self.base[rows, :P]
        days = ends[None, :] - np.concatenate(([0], shifts))[:, None]  # (S, n)
        index = _clip(days[:, :, None] - base[None, :, :] + 1, 0, self.days)  # (S, n, P)
        index += ((rows * slots)[:, None] + np.arange(P)) * width  # into the rows' runs of (labels, frauds) pairs
        counts = self.cum.reshape(-1, 2).take(index.reshape(-1), axis=0)  # (S * n * P, 2): labels, frauds
        return self.head[rows, :P], counts.reshape(len(days), len(rows) * P, 2).astype(np.float64), P


def _merge_headers(heads: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Terminal headers ``(m, parts, 4)`` (all-zero rows: no part) merged: ``lf, ll, ss, sc`` each ``(m,)``.

    Latest fraud / legitimate label are maxima; a part's run counts if it began after the merged
    latest legitimate label, else only its latest fraud if that came after it.
    """
    lf, ll, ss, sc = np.moveaxis(heads, -1, 0)
    g_ll = _over_parts(np.maximum, ll)
    after = g_ll[:, None]
    in_run = ss > after
    lone = ~in_run & (lf > after)
    start = _over_parts(np.minimum, np.where(in_run, ss, np.where(lone, lf, np.inf)))
    count = _over_parts(np.add, np.where(in_run, sc, lone.astype(np.float64)))
    return _over_parts(np.maximum, lf), g_ll, np.where(np.isfinite(start), start, 0.0), count


def _over_parts(ufunc: np.ufunc, a: np.ndarray) -> np.ndarray:
    """``ufunc.reduce(a, axis=1)`` for ``a`` of shape ``(n, parts, ...)``: with 4 to 7 parts, one elementwise
    call per part, in order (~0.09 against ~0.27 ms for 2,000 × 4 × 2 floats: numpy's reduction over a short
    middle axis is slow), else numpy's own. Bit for bit the same for the values summed here (finite, no
    negative zero: numpy, too, combines 4-7 parts in order from the first; with fewer it starts an addition
    from +0.0, with 8 or more along the last axis it sums pairwise), and for maxima and minima.

    >>> a = np.array([[[1e16, 1.0], [1.0, 2.0], [-1e16, 3.0], [1.0, 0.5]]])
    >>> _over_parts(np.add, a).tobytes() == np.add.reduce(a, axis=1).tobytes()
    True
    """
    parts = a.shape[1]
    if not 4 <= parts < 8:
        return ufunc.reduce(a, axis=1)
    out = ufunc(a[:, 0], a[:, 1])
    for p in range(2, parts):
        ufunc(out, a[:, p], out=out)
    return out


def merge_terminal_states(states: Sequence[State]) -> bytes:
    """One terminal's state from the states written for it by several label partitions.

    Labels are keyed by card, so a terminal's labels arrive on every partition
    and each partition keeps its own state for it (one writer per key). Label
    buckets add up and the latest fraud / legitimate label are maxima: exact.
    The current run of frauds (after the latest legitimate label, over all
    partitions) is exact when each partition's run began after that label; a
    partition whose run began before it counts its latest fraud only (a lower
    bound, and rare: a compromised terminal has no legitimate labels).

    >>> a = from_json([100.0, 50.0, 80.0, 2.0, 0.0, 3.0, 2.0])
    >>> b = from_json([90.0, 120.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 4.0, 0.0])
    >>> decode(merge_terminal_states([a, b]), TERMINAL_LAYOUT)
    {'lf': 100.0, 'll': 120.0, 'ss': 0.0, 'sc': 0.0, 'buckets': [[0.0, 4.0, 2.0], [1.0, 4.0, 0.0]]}
    """
    h, w = len(TERMINAL_LAYOUT.header), len(TERMINAL_LAYOUT.bucket)
    values = [np.asarray(to_json(s), dtype=np.float64) for s in states]
    heads = np.array([v[:h] for v in values])
    lf, ll = heads[:, 0].max(), heads[:, 1].max()
    start, count = np.inf, 0.0
    for f, _, s, c in heads:
        if s > ll:
            start, count = min(start, s), count + c
        elif f > ll:
            start, count = min(start, f), count + 1.0
    rows = np.concatenate([v[h:].reshape(-1, w) for v in values])
    days, inverse = np.unique(rows[:, 0], return_inverse=True)
    summed = np.zeros((len(days), w))
    summed[:, 0] = days
    np.add.at(summed[:, 1:], inverse, rows[:, 1:])
    header = [lf, ll, start if np.isfinite(start) else 0.0, count]
    return np.concatenate([header, summed.ravel()]).astype("<f8").tobytes()


def merge_terminal_groups(groups: Sequence[Sequence[State]]) -> list[bytes]:
    """:func:`merge_terminal_states` for many terminals at once (vectorised: the worker's path).

    >>> a = from_json([100.0, 50.0, 80.0, 2.0, 0.0, 3.0, 2.0])
    >>> b = from_json([90.0, 120.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 4.0, 0.0])
    >>> merge_terminal_groups([[a, b], [b]]) == [merge_terminal_states([a, b]), merge_terminal_states([b])]
    True
    """
    store = _Store(TERMINAL_LAYOUT, "bytes")
    flat = [s if isinstance(s, bytes) else from_json(list(s)) for g in groups for s in g]
    sizes = np.fromiter(map(len, groups), np.int64, len(groups))
    m = len(groups)
    if m == 0:
        return []
    group = np.repeat(np.arange(m), sizes)
    headers, rows, row_state = store.gather_values(flat)
    heads = np.zeros((m, int(sizes.max()), headers.shape[1]))
    heads[group, np.arange(len(flat)) - np.repeat(np.cumsum(sizes) - sizes, sizes)] = headers
    key = group[row_state]
    comp = key * _BIG + rows[:, 0].astype(np.int64)
    seq = np.argsort(comp, kind="stable")
    buckets, bucket_key = _sum_buckets(rows[seq], key[seq], comp[seq], np.full(m, np.iinfo(np.int64).min))
    out: dict[int, bytes] = {}
    merged = np.column_stack(_merge_headers(heads))
    store.write(out, list(range(m)), merged, buckets, bucket_key)
    return [out[i] for i in range(m)]

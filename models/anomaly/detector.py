"""The online detector: River's HalfSpaceTrees, one per equipment, run a batch at a time.

Why HalfSpaceTrees: it is River's streaming isolation forest. It needs no
labels, keeps a bounded state (``trees`` trees of fixed shape, node masses over
a sliding window) and adapts to each equipment by refreshing its reference
masses every ``window`` frames. It assumes features in [0, 1]: the deviations
are min-max scaled per equipment with the range seen at warm-up (plus 10 % on
each side), so a fault lands outside that box, in low-mass leaves. It learns
only from frames that are not flagged: a fault must not become the reference.

Why batches: River's ``learn_one`` and ``score_one`` walk every tree in Python
(about 20 µs each per frame, twice the whole frame budget). River builds the
trees (its ``learn_one`` on the first frame); their splits are then read into
numpy arrays in heap order (children of node ``i``: ``2i+1``, ``2i+2``) and the
masses are kept there: learning a batch is one ``bincount`` of the paths per
window, scoring it a dozen array operations. The semantics are River's,
window pivots included (tests compare masses and scores with ``learn_one`` /
``score_one``). :meth:`OnlineDetector.river` writes the masses back into the
River object, which is what a checkpoint stores.

>>> rng = np.random.default_rng(1)
>>> det = OnlineDetector(n_features=3, window=64, seed=1)
>>> det.fit(rng.normal(size=(200, 3)))
>>> normal, fault = det.score(rng.normal(size=(50, 3))), det.score(rng.normal(size=(50, 3)) + 6)
>>> bool(fault.mean() > normal.mean())
True
"""

from __future__ import annotations

import numpy as np
from river import anomaly


CALIBRATIONS = ("quantile", "tail", "mad")
TAIL_FRACTION = 0.2  # "tail": the exponential tail is fitted to this top share of the warm-up scores
NORMAL_Z = {0.95: 1.6449, 0.975: 1.96, 0.99: 2.3263, 0.995: 2.5758, 0.999: 3.0902}


def calibration_high(scores: np.ndarray, quantile: float = 0.99, method: str = "quantile") -> float:
    """The warm-up score that maps to detector ratio 1: an estimate of the scores' ``quantile``.

    * ``quantile``: the empirical quantile (of 400 warm-up scores, the 99th rests on the 4 largest);
    * ``tail``: peaks over threshold with an exponential tail (GPD of shape 0) fitted to the top
      ``TAIL_FRACTION`` of the scores: ``q + mean excess over q * ln(TAIL_FRACTION / (1 - quantile))``,
      where ``q`` is their ``1 - TAIL_FRACTION`` quantile (80 scores of 400 instead of 4);
    * ``mad``: a normal fit of all of them, ``median + z(quantile) * 1.4826 * MAD``.

    >>> s = np.random.default_rng(0).exponential(size=100_000)
    >>> [round(calibration_high(s, 0.99, m), 1) for m in CALIBRATIONS]  # exponential: ln(100) = 4.6; a normal fit is too low
    [4.6, 4.6, 2.3]
    """
    s = np.asarray(scores, dtype=np.float64)
    if method == "quantile" or len(s) < 10:
        return float(np.quantile(s, quantile))
    if method == "tail":
        tail_q = 1.0 - TAIL_FRACTION
        if quantile <= tail_q:
            return float(np.quantile(s, quantile))
        u = float(np.quantile(s, tail_q))
        excess = s[s > u] - u
        mean_excess = float(excess.mean()) if len(excess) else 0.0
        return u + mean_excess * float(np.log(TAIL_FRACTION / (1.0 - quantile)))
    if method == "mad":
        med = float(np.median(s))
        z = NORMAL_Z.get(round(quantile, 4))
        if z is None:
            from statistics import NormalDist

            z = NormalDist().inv_cdf(quantile)
        return med + z * 1.4826 * float(np.median(np.abs(s - med)))
    raise ValueError(f"unknown detector calibration {method!r} (one of {', '.join(CALIBRATIONS)})")


class OnlineDetector:
    """River ``HalfSpaceTrees`` on per-equipment min-max scaled deviations, plus its calibration."""

    def __init__(self, n_features: int, *, trees: int = 10, height: int = 6, window: int = 250,
                 seed: int = 0) -> None:
        self.n_features = n_features
        self.trees, self.height, self.window, self.seed = trees, height, window, seed
        self.hst: anomaly.HalfSpaceTrees | None = None
        self.lo = np.zeros(n_features)
        self.span = np.ones(n_features)
        self.median = 0.0  # of the warm-up scores: they calibrate the score into a ratio
        self.high = 1.0  # their calibration quantile
        self.updates = 0
        self.windows = 0  # completed reference windows: the detector's "version"
        self._arrays: dict[str, np.ndarray] | None = None  # feature, threshold, l_mass, r_mass (trees, nodes)
        self._counter = 0
        self._first_window = True

    # --- life cycle --------------------------------------------------------------

    def fit(self, warm: np.ndarray, quantile: float = 0.99, method: str = "quantile") -> None:
        """Scale from the warm-up deviations, learn them, calibrate the score on them (:func:`calibration_high`)."""
        warm = np.asarray(warm, dtype=np.float64)
        lo, hi = warm.min(axis=0), warm.max(axis=0)
        pad = np.maximum(0.1 * (hi - lo), 1e-3)
        self.lo, self.span = lo - pad, (hi - lo) + 2 * pad
        # The first window must complete during warm-up, or the detector could not score yet.
        window = int(min(self.window, max(16, len(warm) // 2)))
        self.hst = anomaly.HalfSpaceTrees(n_trees=self.trees, height=self.height, window_size=window,
                                          seed=self.seed)
        self._arrays = None
        self.learn(warm)
        s = self.score(warm)
        self.median = float(np.median(s))
        self.high = float(max(calibration_high(s, quantile, method), self.median + 1e-3))

    def scaled(self, d: np.ndarray) -> np.ndarray:
        return (np.asarray(d, dtype=np.float64) - self.lo) / self.span

    def learn(self, d: np.ndarray) -> int:
        """Learn rows of deviations (unscaled), as River's ``learn_one`` would one by one; returns the rows learnt."""
        hst = self.hst
        if hst is None or len(d) == 0:
            return 0
        x = self.scaled(d)
        if self._arrays is None:
            if not hst.trees:  # River builds the trees on its first frame
                hst.learn_one(dict(zip(range(self.n_features), x[0].tolist())))
                x = x[1:]
            self._load()
        a = self._arrays
        assert a is not None
        window = hst.window_size
        offsets = a["offsets"]
        while len(x):
            take = min(len(x), window - self._counter)
            paths = self._paths(x[:take])  # (trees, rows, height + 1)
            flat = (paths + offsets[:, :, None]).ravel()
            a["l_mass"] += np.bincount(flat, minlength=a["l_mass"].size).reshape(a["l_mass"].shape)
            self._counter += take
            x = x[take:]
            if self._counter == window:  # pivot: the window just filled becomes the reference
                a["r_mass"] = a["l_mass"]
                a["l_mass"] = np.zeros_like(a["r_mass"])
                self._counter = 0
                self._first_window = False
                self.windows += 1
        self.updates += len(d)
        return len(d)

    def _paths(self, x: np.ndarray) -> np.ndarray:
        """Node visited at each depth (0..height) by each row, per tree."""
        a = self._arrays
        assert a is not None and self.hst is not None
        f_flat, t_flat, offsets = a["f_flat"], a["t_flat"], a["offsets"]
        trees = len(offsets)
        rows = np.arange(len(x))[None, :]
        node = np.zeros((trees, len(x)), dtype=np.int64)
        out = np.empty((trees, len(x), self.hst.height + 1), dtype=np.int64)
        out[:, :, 0] = 0
        for depth in range(self.hst.height):
            flat = node + offsets
            node = 2 * node + 1 + (x[rows, f_flat[flat]] >= t_flat[flat])
            out[:, :, depth + 1] = node
        return out

    # --- scoring -----------------------------------------------------------------

    def ratio(self, d: np.ndarray) -> np.ndarray:
        """Score relative to warm-up: 0 at its median, 1 at its calibration quantile."""
        return (self.score(d) - self.median) / (self.high - self.median)

    def score(self, d: np.ndarray) -> np.ndarray:
        """River's ``score_one`` for every row of deviations ``d`` (0 before a first window)."""
        hst = self.hst
        if hst is None or len(d) == 0:
            return np.zeros(len(d))
        if self._arrays is None:
            if not hst.trees:
                return np.zeros(len(d))
            self._load()
        if self._first_window:
            return np.zeros(len(d))
        a = self._arrays
        assert a is not None
        x = self.scaled(d)
        r_flat = a["r_mass"].ravel()
        f_flat, t_flat, offsets = a["f_flat"], a["t_flat"], a["offsets"]
        trees = len(offsets)
        rows = np.arange(len(x))[None, :]
        node = np.zeros((trees, len(x)), dtype=np.int64)
        alive = np.ones(node.shape, dtype=bool)
        total = np.zeros(len(x))
        limit = hst.size_limit
        weight = 1.0
        for _ in range(hst.height):
            flat = node + offsets
            r = r_flat[flat]
            total += (r * alive).sum(axis=0) * weight  # River stops a walk once a node's mass is too small
            alive &= r >= limit
            node = 2 * node + 1 + (x[rows, f_flat[flat]] >= t_flat[flat])
            weight *= 2.0
        total += (r_flat[node + offsets] * alive).sum(axis=0) * weight
        return 1.0 - total / hst._max_score

    # --- River's object ------------------------------------------------------------------

    def _heap_nodes(self) -> list[list]:
        hst = self.hst
        assert hst is not None
        n_nodes = 2 ** (hst.height + 1) - 1
        out = []
        for root in hst.trees:
            order = [root]
            for i in range(n_nodes):
                if hasattr(order[i], "threshold"):
                    order.extend(order[i].children)
            out.append(order)
        return out

    def _load(self) -> None:
        """Read the trees (splits and masses) from River's object into arrays."""
        hst = self.hst
        assert hst is not None
        nodes = self._heap_nodes()
        self._arrays = {
            "feature": np.array([[getattr(n, "feature", 0) for n in t] for t in nodes], dtype=np.int64),
            "threshold": np.array([[getattr(n, "threshold", 0.0) for n in t] for t in nodes], dtype=np.float64),
            "l_mass": np.array([[n.l_mass for n in t] for t in nodes], dtype=np.int64),
            "r_mass": np.array([[n.r_mass for n in t] for t in nodes], dtype=np.int64),
        }
        a = self._arrays
        a["f_flat"], a["t_flat"] = a["feature"].ravel(), a["threshold"].ravel()
        a["offsets"] = (np.arange(len(nodes)) * a["feature"].shape[1])[:, None]
        self._counter, self._first_window = hst.counter, hst._first_window

    def river(self) -> anomaly.HalfSpaceTrees | None:
        """River's object, brought up to date with the batch updates (a checkpoint stores this)."""
        hst = self.hst
        if hst is None or self._arrays is None:
            return hst
        for t, order in enumerate(self._heap_nodes()):
            for node, lm, rm in zip(order, self._arrays["l_mass"][t].tolist(), self._arrays["r_mass"][t].tolist()):
                node.l_mass, node.r_mass = lm, rm
        hst.counter, hst._first_window = self._counter, self._first_window
        return hst

    def __getstate__(self) -> dict:
        keys = ("n_features", "trees", "height", "window", "seed", "lo", "span", "median", "high", "updates", "windows")
        state = {k: getattr(self, k) for k in keys}
        state["hst"] = self.river()  # the arrays are a cache, rebuilt from River's trees after a restart
        return state

    def __setstate__(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)
        self._arrays = None
        self._counter = self.hst.counter if self.hst is not None else 0
        self._first_window = self.hst._first_window if self.hst is not None else True

"""Per-equipment normalization: raw readings → smoothed, standardized deviations from normal.

Why this shape. Sensors differ by orders of magnitude between pieces of
equipment (SKAB's anomaly-free rig reads a flow of 125, its other runs 32), so
every number is relative to the equipment's *own* first ``warmup_frames``:

1. ``z = (x - median) / sd`` per sensor, from the warm-up frames, winsorized
   at ``+-spike_clip`` around the current baseline: one wild reading moves the average by at most
   ``2 * spike_clip / (smoothing + 1)`` sd, so an isolated spike cannot hold the score
   up for the ``raise_after`` frames an alert needs, while a sustained shift,
   however large, still stands out;
2. ``u`` = a short EWMA of ``z`` (span ``smoothing_frames``): 1 Hz sensor noise
   averages out, a sustained shift does not;
3. the deviation ``d = (u - base) / sqrt(var)``, where ``base`` and ``var`` start
   as the warm-up mean and variance of ``u`` and then follow slow drift with a
   half-life of ``baseline_halflife_frames`` normal frames (the variance update
   winsorized at 3 sd). While a frame is flagged only the level moves, and
   ``alert_adapt_factor`` times slower: a long fault is neither learnt as the
   new normal nor allowed to widen the spread until its own alert clears, and
   an alert still ends if the equipment really settled somewhere else.

``d`` is what the ONNX model and the River detector see, in training and in
serving (same class, same code). A missing reading (NaN) is imputed as "at the
baseline" (``z = base``) and reported; a sensor never seen during warm-up stays
neutral (``d = 0``).

Everything is vectorized over a batch of one equipment's frames: the EWMA has a
closed form (:func:`ewma`), and the baseline adapts once per batch from the
batch's frames (it lags by at most one batch, a small fraction of its half-life).

>>> rng = np.random.default_rng(0)
>>> b = Baseline(n_sensors=2, warmup=100, smoothing=10)
>>> step = b.feed(rng.normal(size=(150, 2)))
>>> step.start, step.deviations.shape, step.calibration.shape
(100, (50, 2), (80, 2))
>>> float(np.abs(b.feed(np.full((30, 2), 5.0)).deviations[-1]).min()) > 10  # a 5-sd shift stands out
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

_EXP_LIMIT = 200.0  # chunk the closed-form EWMA so that beta**-t stays below e**200
ONSET_SPAN = 50  # round 12: a sensor's deviation before an alert = an EWMA of this span over the normal rows


def ewma(z: np.ndarray, u0: np.ndarray, alpha: float) -> np.ndarray:
    """Rows of ``u_t = (1 - alpha) u_{t-1} + alpha z_t`` from ``u0``, in closed form (no Python loop per row).

    >>> z = np.array([[1.0], [1.0], [3.0]])
    >>> ewma(z, np.zeros(1), 0.5).ravel().tolist()
    [0.5, 0.75, 1.875]
    """
    z = np.asarray(z, dtype=np.float64)
    if alpha >= 1.0:
        return z.copy()
    beta = 1.0 - alpha
    chunk = max(1, int(_EXP_LIMIT / -math.log(beta)))
    out = np.empty_like(z)
    u = np.asarray(u0, dtype=np.float64)
    for start in range(0, len(z), chunk):
        part = z[start:start + chunk]
        p = beta ** np.arange(1, len(part) + 1, dtype=np.float64)[:, None]
        out[start:start + len(part)] = p * (u + alpha * np.cumsum(part / p, axis=0))
        u = out[start + len(part) - 1]
    return out


@dataclass(slots=True)
class Step:
    """What one batch of frames gave: rows before ``start`` were warm-up (no deviation yet)."""

    start: int
    deviations: np.ndarray  # (rows - start, sensors)
    smoothed: np.ndarray  # u for the same rows: the baseline adapts from it
    imputed: np.ndarray  # (rows, sensors) bool: a reading was missing
    calibration: np.ndarray | None = None  # warm-up deviations, when calibration happened in this batch


class Baseline:
    """One equipment's normal level per sensor (see module doc)."""

    def __init__(self, n_sensors: int, warmup: int = 400, smoothing: int = 10, halflife: float = 1000.0,
                 alert_factor: float = 0.5, clip: float = 20.0, spike_clip: float = 6.0,
                 drift_allowance: float = 0.0, drift_lag: float = 0.0, min_halflife: float = 50.0) -> None:
        self.n_sensors = n_sensors
        self.drift_allowance = drift_allowance
        self.drift_lag = drift_lag
        self.max_rate = 1.0 - 0.5 ** (1.0 / min_halflife)
        self.warmup = warmup
        self.alpha = 2.0 / (smoothing + 1.0)
        self.smoothing = smoothing
        self.rate = 1.0 - 0.5 ** (1.0 / halflife)
        self.alert_factor = alert_factor
        self.clip = clip
        self.spike_clip = spike_clip
        self.seen = 0
        self._buffer: list[np.ndarray] = []
        self.center = np.zeros(n_sensors)
        self.scale = np.ones(n_sensors)
        self._reset_columns()

    def _reset_columns(self) -> None:
        """Per-sensor state (before calibration)."""
        width = self.n_sensors
        self.known = np.zeros(width, dtype=bool)  # had readings during warm-up
        self.u = np.zeros(width)
        self.base = np.zeros(width)
        self.var = np.ones(width)

    @classmethod
    def from_config(cls, n_sensors: int, warmup: int, config: Any) -> Baseline:
        """The baseline an :class:`~.config.AnomalyConfig` describes (the worker's and training's)."""
        return cls(n_sensors, warmup, config.smoothing_frames, config.baseline_halflife_frames,
                   config.alert_adapt_factor, config.clip, config.spike_clip, config.drift_allowance,
                   config.drift_lag, config.drift_min_halflife_frames)

    @property
    def calibrated(self) -> bool:
        return self.seen >= self.warmup

    @property
    def burn_in(self) -> int:
        """Warm-up rows left out of calibration while the EWMA forgets its start."""
        return min(2 * self.smoothing, self.warmup // 2)

    def add_sensor(self) -> None:
        """A sensor first seen during warm-up (a column of NaN so far)."""
        self.n_sensors += 1
        self._buffer = [np.column_stack([b, np.full(len(b), np.nan)]) for b in self._buffer]
        self.center = np.append(self.center, 0.0)
        self.scale = np.append(self.scale, 1.0)
        self._reset_columns()  # nothing per column is set before calibration

    def feed(self, x: np.ndarray) -> Step:
        """Take a batch of raw readings ``(rows, sensors)`` (NaN = missing)."""
        x = np.asarray(x, dtype=np.float64)
        imputed = np.isnan(x)
        calibration = None
        start = 0
        if not self.calibrated:
            start = min(len(x), self.warmup - self.seen)
            self._buffer.append(x[:start])
            self.seen += start
            if self.calibrated:
                calibration = self._calibrate(np.concatenate(self._buffer))
                self._buffer = []
        rest = x[start:]
        self.seen += len(rest)
        if len(rest) == 0:
            empty = np.empty((0, self.n_sensors))
            return Step(start, empty, empty, imputed, calibration)
        # Winsorized around the current normal level (not the warm-up's): a sensor followed as it drifts
        # keeps its full range for faults.
        n = self.n_sensors
        level = self.base[:n]
        z = np.clip((rest - self.center) / self.scale, level - self.spike_clip, level + self.spike_clip)
        z = np.where(np.isnan(z), level, z)  # missing: "at the baseline"
        u = ewma(z, self.u[:n], self.alpha)
        self.u = u[-1].copy()
        return Step(start, self._deviation(u), u, imputed, calibration)

    def _deviation(self, u: np.ndarray) -> np.ndarray:
        d = (u - self.base) / np.sqrt(self.var)
        d[:, ~self.known] = 0.0
        return np.clip(d, -self.clip, self.clip)

    def _calibrate(self, warm: np.ndarray) -> np.ndarray:
        """Fix the scales from the warm-up rows; return their (in-sample) deviations after the burn-in."""
        self.known = ~np.all(np.isnan(warm), axis=0)
        with np.errstate(all="ignore"):
            center = np.nanmedian(np.where(self.known, warm, 0.0), axis=0)
            sd = np.nanstd(np.where(self.known, warm, 0.0), axis=0)
            # A sensor that drifted during warm-up (temperatures) keeps drifting: its scale also counts the
            # move between the warm-up's halves, so the drift itself is not a fault.
            allowance = getattr(self, "drift_allowance", 0.0)
            if allowance and len(warm) >= 40:
                half = len(warm) // 2
                move = np.nanmedian(warm[half:], axis=0) - np.nanmedian(warm[:half], axis=0)
                sd = np.sqrt(sd ** 2 + allowance * np.nan_to_num(move) ** 2)
        floor = 1e-6 * np.maximum(np.abs(center), 1.0)
        self.center = np.nan_to_num(center)
        self.scale = np.where(np.isfinite(sd) & (sd > floor), sd, np.maximum(floor, 1e-12))
        z = np.clip((warm - self.center) / self.scale, -self.spike_clip, self.spike_clip)
        z = np.where(np.isnan(z), 0.0, z)
        u = ewma(z, z[0], self.alpha)
        # The variance of an EWMA of unit white noise is 1/smoothing: the floor for a smooth warm-up.
        floor = np.full(self.n_sensors, 1.0 / self.smoothing)
        tail = u[self.burn_in:]
        self.var_floor = floor
        self.base = tail.mean(axis=0)
        self.var = np.maximum(tail.var(axis=0), floor)
        self.u = u[-1].copy()
        lag = getattr(self, "drift_lag", 0.0)
        if lag and len(tail) >= 20:
            self._track_trend(tail, lag)
        return self._deviation(tail)

    def _track_trend(self, tail: np.ndarray, lag: float) -> None:
        """Sensors that trended during warm-up (temperatures heating up) keep trending: follow them faster.

        A baseline adapting at rate ``a`` lags a trend of slope ``s`` by about
        ``s / a``; each sensor gets the rate that keeps that lag within ``lag``
        of its warm-up sd, never less than the common rate nor more than
        ``max_rate`` (a fault developing slower than that would be absorbed),
        and its baseline starts at the trend's end instead of the warm-up mean.
        """
        t = np.arange(len(tail), dtype=np.float64)
        t -= t.mean()
        slope = (t[:, None] * (tail - tail.mean(axis=0))).sum(axis=0) / (t * t).sum()
        needed = np.abs(slope) / (lag * np.sqrt(self.var))
        trending = self.known & (needed > self.rate)
        self.rate = np.where(trending, np.minimum(needed, self.max_rate), self.rate)
        self.base = np.where(trending, self.base + slope * t[-1], self.base)

    def adapt(self, smoothed: np.ndarray, normal: np.ndarray, deviations: np.ndarray | None = None,
              gate: float = 0.0, raised: bool = False, delay: int = 0, block: int = 1, onset: str = "none") -> None:
        """Follow slow drift: normal rows at the full rate, the others ``alert_factor`` times slower.

        The others move the level only: were they to widen the variance, a fault
        would shrink its own deviation and clear its alert while it lasts. With
        ``gate`` > 0, a sensor whose deviation is within ``+-gate`` sd in such a
        row is not part of the fault and is followed as in normal operation
        (level and spread, full rate): a sensor drifting while another one
        faults is then where it would have been without the fault, and the
        alert can clear when the fault ends.

        ``onset`` ``"relative"`` (round 12) also passes a sensor within ``+-gate``
        of ``ref``, its deviation before the stretch of non-normal rows (an EWMA,
        span ``ONSET_SPAN``, of its deviations in normal rows, so a fault's own
        ramp weighs little): a sensor already drifting away before the alert is
        not frozen by it. ``"none"``: the gate alone.

        Rows are queued and teach in blocks of ``block`` rows (the baseline moves
        at fixed frame counts, whatever the batching), ``delay`` rows late; if an
        alert is ``raised`` meanwhile, the queued rows count as the fault's onset
        (not normal): a fault building up under the threshold does not first
        widen the spread it is judged against.
        """
        if len(smoothed) == 0:
            return
        normal = np.asarray(normal, dtype=bool)
        rows = np.broadcast_to(normal[:, None], smoothed.shape)
        quiet = np.zeros(smoothed.shape, dtype=bool)
        if gate > 0 and deviations is not None:
            quiet = np.abs(deviations) < gate
            if onset != "none":
                quiet |= self._onset_quiet(deviations, normal, gate)
            rows = rows | quiet
        queue = getattr(self, "_queue", None)
        if queue is not None and queue[0].shape[1] == smoothed.shape[1]:
            smoothed = np.concatenate([queue[0], smoothed])
            rows = np.concatenate([queue[1], rows])
            quiet = np.concatenate([queue[2], quiet])
        if raised:
            rows = rows & quiet
        block = max(1, block)
        ready = max(0, len(smoothed) - delay) // block * block
        self._queue = (smoothed[ready:], rows[ready:], quiet[ready:]) if ready < len(smoothed) else None
        for start in range(0, ready, block):
            u, r = smoothed[start:start + block], rows[start:start + block]
            self._pull(u, r, self.rate, spread=True)
            slow = ~r
            if slow.any():
                self._pull(u, slow, self.rate * self.alert_factor, spread=False)

    def _onset_quiet(self, d: np.ndarray, normal: np.ndarray, gate: float) -> np.ndarray:
        """Rows x columns the ``"relative"`` onset rule passes (see :meth:`adapt`). ``ref``: an EWMA (span ``ONSET_SPAN``) of
        the deviations of normal rows, carried over calls, as of each row's last normal row."""
        ref0 = getattr(self, "onset_ref", None)
        if ref0 is None or len(ref0) != d.shape[1]:
            ref0 = np.zeros(d.shape[1])  # no normal row yet: "at the baseline"
        rows = np.flatnonzero(normal)
        if len(rows):
            level = ewma(d[rows], ref0, 2.0 / (ONSET_SPAN + 1.0))
            last = np.maximum.accumulate(np.where(normal, np.arange(len(d)), -1))
            pos = np.searchsorted(rows, np.maximum(last, 0))  # index among the normal rows (valid where last >= 0)
            ref = np.where((last >= 0)[:, None], level[pos], ref0)
            self.onset_ref = level[-1].copy()
        else:
            ref = np.broadcast_to(ref0, d.shape)
        return np.abs(d - ref) < gate

    def _pull(self, u: np.ndarray, rows: np.ndarray, rate: float | np.ndarray, spread: bool) -> None:
        """Per sensor, the ``k`` selected rows at ``rate`` pull the level (and spread)
        ``1 - (1 - rate)**k`` of the way toward their mean (and mean square deviation)."""
        k = rows.sum(axis=0)
        if not k.any() or np.all(np.asarray(rate) <= 0):
            return
        w = 1.0 - (1.0 - rate) ** k
        n = np.maximum(k, 1)
        if spread:  # winsorized at 3 sd: a few large deviations cannot widen the spread much
            r2 = (np.minimum((u - self.base) ** 2, 9.0 * self.var) * rows).sum(axis=0) / n
            floor = getattr(self, "var_floor", None)
            floor = 1.0 / self.smoothing if floor is None else floor
            self.var = np.where(k > 0, np.maximum(self.var + w * (r2 - self.var), floor), self.var)
        mean = (u * rows).sum(axis=0) / n
        self.base = np.where(k > 0, self.base + w * (mean - self.base), self.base)

    def rebase(self) -> None:
        """Take the current smoothed state as normal (an operator said so: a rejected alert)."""
        self.base = self.u.copy()

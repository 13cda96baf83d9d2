"""Drift detection on the fraud pipeline's two signals, debounced in event time.

* ``error``: River ``ADWIN`` over the champion's absolute error ``|y - p|``,
  one value per label as labels arrive. A change in the mean error is the
  model getting worse (or better) on what is happening now.
* ``score``: River ``PageHinkley`` over the mean score of each scored batch
  (one value per batch: cheap at any rate). A shift of the score
  distribution is visible at once, days before the labels that confirm it.

A detector fires on every change it sees; a detection is reported only if the
same signal has not reported one within ``debounce_s`` of event time.

>>> d = DebouncedDrift("score", debounce_s=3600.0)
>>> fired = [t for t in range(600) if d.update([0.01 if t < 300 else 0.4], ts=t * 60.0)]
>>> len(fired), 300 * 60.0 <= fired[0] * 60.0 < 320 * 60.0
(1, True)
"""

from __future__ import annotations

from collections.abc import Sequence

from river import drift

SIGNALS = ("error", "score")


class DebouncedDrift:
    """One River detector over one signal; :meth:`update` says whether to report a drift now."""

    def __init__(self, signal: str, debounce_s: float = 3600.0) -> None:
        if signal not in SIGNALS:
            raise ValueError(f"signal must be one of {SIGNALS}, got {signal!r}")
        self.signal = signal
        self.debounce_s = debounce_s
        self.detector = drift.ADWIN(delta=0.002) if signal == "error" else drift.PageHinkley(
            min_instances=30, delta=0.005, threshold=1.0)
        self.last_report: float | None = None
        self.detections = 0  # raw detections, reported or not
        self.reports = 0

    def update(self, values: Sequence[float], ts: float) -> bool:
        """Feed ``values`` (event time ``ts``); True if a drift is to be reported."""
        detected = False
        update = self.detector.update
        for v in values:
            update(float(v))
            if self.detector.drift_detected:
                detected = True
                self.detections += 1
        if not detected:
            return False
        if self.last_report is not None and ts - self.last_report < self.debounce_s:
            return False
        self.last_report = ts
        self.reports += 1
        return True

    @property
    def estimate(self) -> float:
        """The detector's current estimate of the signal's mean (ADWIN) or ``nan``."""
        return float(getattr(self.detector, "estimation", float("nan")))

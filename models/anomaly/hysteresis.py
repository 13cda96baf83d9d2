"""Alerts that do not flap: raise after ``k`` anomalous frames in a row, clear after ``m`` normal ones.

A per-frame threshold on a noisy score would open and close an alert every few
seconds around the threshold, and an isolated spike would page someone. The
state machine below is the whole remedy; it is per equipment, survives restarts
with the rest of the equipment's state, and is fed a batch at a time (a batch
with no change of state, the usual case, costs one numpy call).

>>> h = Hysteresis(raise_after=3, clear_after=2)
>>> alert, changes = h.step(np.array([1, 0, 1, 1, 1, 1, 0, 1, 0, 0, 0], dtype=bool))
>>> alert.astype(int).tolist()
[0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0]
>>> changes
[(4, 'raise'), (9, 'clear')]
"""

from __future__ import annotations

import numpy as np


class Hysteresis:
    """An equipment's alert state: ``alert`` and the run of frames pushing toward the other state."""

    __slots__ = ("raise_after", "clear_after", "alert", "run")

    def __init__(self, raise_after: int = 5, clear_after: int = 5) -> None:
        if raise_after < 1 or clear_after < 1:
            raise ValueError("raise_after and clear_after must be >= 1")
        self.raise_after = raise_after
        self.clear_after = clear_after
        self.alert = False
        self.run = 0

    def step(self, anomalous: np.ndarray) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """Alert state after each frame, and the frames where it changed (``'raise'`` / ``'clear'``)."""
        anomalous = np.asarray(anomalous, dtype=bool)
        n = len(anomalous)
        if n == 0:
            return np.zeros(0, dtype=bool), []
        # Fast paths: nothing can change.
        if not self.alert and not anomalous.any():
            self.run = 0
            return np.zeros(n, dtype=bool), []
        if self.alert and anomalous.all():
            self.run = 0
            return np.ones(n, dtype=bool), []
        out = np.empty(n, dtype=bool)
        changes: list[tuple[int, str]] = []
        alert, run, k, m = self.alert, self.run, self.raise_after, self.clear_after
        for i, a in enumerate(anomalous.tolist()):
            if alert:
                run = 0 if a else run + 1
                if run >= m:
                    alert, run = False, 0
                    changes.append((i, "clear"))
            else:
                run = run + 1 if a else 0
                if run >= k:
                    alert, run = True, 0
                    changes.append((i, "raise"))
            out[i] = alert
        self.alert, self.run = alert, run
        return out, changes

    def __getstate__(self) -> tuple:
        return (self.raise_after, self.clear_after, self.alert, self.run)

    def __setstate__(self, state: tuple) -> None:
        self.raise_after, self.clear_after, self.alert, self.run = state

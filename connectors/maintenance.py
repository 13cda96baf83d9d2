"""Per-frame anomaly labels → maintenance labels ``{equipment_id, from_ts, to_ts, is_anomaly}``.

What a maintenance team reports is an interval of one equipment's time ("pump-3
was failing from 10:02 to 10:19", "it was fine all morning"), not a verdict on
each frame. The synthetic generator and labelled files (SKAB's ``anomaly``
column) know each frame's truth; :class:`MaintenanceIntervals` turns it into
those reports: one per run of equal labels of an equipment, cut every
``max_frames`` frames so that labels keep arriving during long runs.

>>> m = MaintenanceIntervals(max_frames=3)
>>> out = [r for ts, y in [(1, False), (2, False), (3, True), (4, True), (5, False)] for r in m.add("p", ts, y)]
>>> [(r["from_ts"], r["to_ts"], r["is_anomaly"]) for r in out + m.close()]
[(1.0, 2.0, False), (3.0, 4.0, True), (5.0, 5.0, False)]
"""

from __future__ import annotations

from typing import Any


class MaintenanceIntervals:
    """Accumulates labelled frames per equipment; emits an interval when its label changes."""

    def __init__(self, max_frames: int = 600) -> None:
        if max_frames < 1:
            raise ValueError("max_frames must be at least 1")
        self.max_frames = max_frames
        self._open: dict[str, list[Any]] = {}  # equipment -> [from_ts, to_ts, is_anomaly, frames]

    @staticmethod
    def _record(equipment_id: str, run: list[Any]) -> dict[str, Any]:
        return {"equipment_id": equipment_id, "from_ts": float(run[0]), "to_ts": float(run[1]),
                "is_anomaly": bool(run[2])}

    def add(self, equipment_id: str, ts: float, is_anomaly: bool) -> list[dict[str, Any]]:
        """Add one frame's label; returns the intervals it closed (zero or one)."""
        run = self._open.get(equipment_id)
        is_anomaly = bool(is_anomaly)
        if run is not None and run[2] == is_anomaly and run[3] < self.max_frames:
            run[1] = ts
            run[3] += 1
            return []
        self._open[equipment_id] = [ts, ts, is_anomaly, 1]
        return [self._record(equipment_id, run)] if run is not None else []

    def close(self) -> list[dict[str, Any]]:
        """The intervals still open (end of the stream)."""
        out = [self._record(eid, run) for eid, run in self._open.items()]
        self._open.clear()
        return out


__all__ = ["MaintenanceIntervals"]

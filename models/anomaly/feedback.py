"""Maintenance labels: confirm or reject alerts, and teach the equipment's detector and threshold.

A label ``{equipment_id, from_ts, to_ts, is_anomaly}`` says what the equipment
really did over an interval. It acts on the equipment's state:

* every alert overlapping the interval gets the verdict: confirmed, or rejected if it was
  also *raised* inside the interval (an alert raised during a fault that clears a little
  after the fault ended is not a false alarm; reports come as consecutive intervals);
  alert precision = confirmed / (confirmed + rejected) over all judged alerts
  (a re-labelled alert counts once, with its latest verdict);
* ``is_anomaly = false`` over frames we flagged (a false alarm): the equipment's
  sensitivity ``gain`` rises so that the interval's peak score would have stayed
  under the threshold (at most x1.5 per label), the River detector learns the
  flagged frames as normal, and if the alert still up began before the interval ended,
  the current smoothed level becomes its baseline (the new normal an operator vouched for,
  e.g. after a repair, whether or not that alert itself was a false alarm);
* ``is_anomaly = true`` where no alert was raised (a miss): ``gain`` falls so
  that the interval's peak would have crossed (at most /1.5 per label).

``gain`` stays within [0.5, 4]: labels tune the threshold, they cannot switch an
equipment's alerts off or make it page on noise.

>>> parse_maintenance_label(b'{"equipment_id": "pump-1", "from_ts": 1700000000, "to_ts": 1700000600, "is_anomaly": false}')
MaintenanceLabel(equipment_id='pump-1', from_ts=1700000000.0, to_ts=1700000600.0, is_anomaly=False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from streams.records import LIMITS, InvalidRecord, Limits, _load, _str, _ts

from .state import EquipmentState

MAX_STEP = 1.5
MIN_GAIN, MAX_GAIN = 0.5, 4.0


@dataclass(frozen=True, slots=True)
class MaintenanceLabel:
    equipment_id: str
    from_ts: float
    to_ts: float
    is_anomaly: bool

    @classmethod
    def coerce(cls, label: Any) -> MaintenanceLabel:
        """A label from a dict (the wire schema) or any object with the four attributes."""
        if isinstance(label, cls):
            return label
        get = label.get if isinstance(label, Mapping) else lambda k: getattr(label, k)
        return cls(str(get("equipment_id")), float(get("from_ts")), float(get("to_ts")), bool(get("is_anomaly")))


def parse_maintenance_label(raw: bytes | None, limits: Limits = LIMITS) -> MaintenanceLabel:
    """Validate one ``maintenance-labels`` message (bad ones raise :class:`InvalidRecord`: a dead letter)."""
    obj = _load(raw, limits)
    lo = _ts({"ts": obj.get("from_ts")}, limits)
    hi = _ts({"ts": obj.get("to_ts")}, limits)
    if hi < lo:
        raise InvalidRecord("out_of_range", f"to_ts {hi} is before from_ts {lo}")
    flag = obj.get("is_anomaly")
    if not isinstance(flag, bool):
        raise InvalidRecord("wrong_type", "field 'is_anomaly' must be true or false")
    return MaintenanceLabel(_str(obj, "equipment_id"), lo, hi, flag)


def apply_label(st: EquipmentState, label: MaintenanceLabel) -> str:
    """Apply one label to its equipment's state; returns what it was: confirmed, rejected, missed or normal."""
    lo, hi = label.from_ts, label.to_ts
    judged = [ep for ep in st.episodes
              if ep.raised_ts <= hi and (ep.cleared_ts is None or ep.cleared_ts >= lo)]
    if not label.is_anomaly:  # an alert raised during a fault that clears late is not a false alarm
        judged = [ep for ep in judged if ep.raised_ts >= lo]
    for ep in judged:
        if ep.verdict is True:
            st.confirmed -= 1
        elif ep.verdict is False:
            st.rejected -= 1
        ep.verdict = label.is_anomaly
        if label.is_anomaly:
            st.confirmed += 1
        else:
            st.rejected += 1
    rec = st.recent
    inside = (rec.ts >= lo) & (rec.ts <= hi)
    if inside.any():
        peak: float | None = float(rec.ratio[inside].max())
    else:
        peak = max((ep.peak for ep in judged), default=None)
    if not label.is_anomaly:
        if peak is not None and peak >= 1.0:
            st.gain = min(MAX_GAIN, st.gain * min(max(peak * 1.05, 1.0), MAX_STEP))
        flagged = inside & (rec.ratio >= 1.0)
        if st.detector is not None and rec.deviations is not None and flagged.any():
            st.detector.learn(rec.deviations[flagged].astype(np.float64))
        current = st.current_episode
        if st.hysteresis.alert and current is not None and current.raised_ts <= hi:
            # The alert still up covers time the operator calls normal (a repair moved the
            # normal level, say): the current level is the new normal.
            st.baseline.rebase()
        return "rejected" if judged else "normal"
    if not judged and peak is not None and peak < 1.0:
        st.gain = max(MIN_GAIN, st.gain * max(peak / 1.05, 1.0 / MAX_STEP))
    return "confirmed" if judged else "missed"

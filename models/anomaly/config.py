"""The anomaly pipeline's tunables, in one frozen object built from :class:`~streams.settings.Settings`.

The scoring code takes an :class:`AnomalyConfig` rather than the settings, so
that training, evaluation and the worker run the same code with the same
numbers, and a test can change one of them without touching the environment.
How the defaults were chosen (on normal data only) is in ``models/anomaly/README.md``.

>>> cfg = AnomalyConfig()
>>> cfg.warmup_frames, cfg.raise_after, cfg.clear_after
(400, 5, 5)
>>> AnomalyConfig(raise_after=3).with_(clear_after=9).clear_after
9
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

ONSET_MODES = ("none", "relative")


@dataclass(frozen=True, slots=True)
class AnomalyConfig:
    """Per-equipment streaming parameters (frames, not seconds: sensors tick at their own pace)."""

    warmup_frames: int = 400  # an equipment's first frames: its normal operation, calibrates everything
    smoothing_frames: int = 5  # span of the short EWMA that averages sensor noise out
    baseline_halflife_frames: float = 300.0  # how fast the normal level follows slow drift (normal frames)
    alert_adapt_factor: float = 0.1  # during an alert the baseline adapts this much slower (never quite stuck)
    spike_clip: float = 6.0  # readings are winsorized at +-spike_clip warm-up sd before smoothing
    drift_allowance: float = 0.0  # a sensor's scale also counts this times its move between the warm-up's halves
    drift_lag: float = 0.0  # a sensor trending during warm-up is followed fast enough to lag it by <= this many sd (0: off)
    drift_min_halflife_frames: float = 50.0  # ...but never faster than this half-life (the cap on adaptation speed)
    adapt_frames: int = 500  # an equipment's baseline adapts once every this many of its frames (at fixed counts)
    adapt_gate: float = 3.0  # during an alert, sensors within +-adapt_gate sd keep following drift at the full rate (0: off)
    adapt_gate_onset: str = "relative"  # round 12: the gate also passes a sensor within +-gate of where it was before the alert (Baseline.adapt)
    learn_delay_frames: int = 0  # frames teach the baseline this much later, unless an alert was raised meanwhile
    sensor_tail_quantile: float = 0.5  # round 16, training: each sensor's contribution is divided by its held-out q-quantile (0: off)
    learn_below: float = 1.0  # a frame teaches the normal spread and the River detector only under this ratio
    clip: float = 20.0  # standardized deviations are clipped to +-clip (a dead sensor cannot dominate forever)
    default_threshold: float = 3.0  # RMS deviation raising a flag when the model carries no calibrated one
    calibration_holdout: str = "mixed"  # training: threshold calibrated on held-out long segments plus short ones, or "long" only
    calibration_quantile: float = 0.99  # of the equipment's warm-up scores, compared with the training reference
    raise_after: int = 5  # k: consecutive anomalous frames that raise an alert
    clear_after: int = 5  # m: consecutive normal frames that clear it
    top_sensors: int = 3  # sensors named in scores and alerts
    detector_weight: float = 0.25  # share of the River detector in the blended score (the rest: the ONNX model)
    detector_calibration: str = "tail"  # River ratio's 1: a tail fitted to warm-up scores, or their "quantile", or "mad" (normal fit)
    hst_trees: int = 10
    hst_height: int = 6  # River builds 2**(h+1) - 1 nodes per tree in Python: 6 costs ~25 ms per new equipment, 8 ~150
    hst_window: int = 250
    ensemble_members: int = 1  # autoencoders averaged in the ONNX graph (training only; the worker runs the graph)
    feedback_frames: int = 900  # recent frames kept per equipment, so that labels can teach the detector
    seed: int = 0

    def __post_init__(self) -> None:
        if self.warmup_frames < 20:
            raise ValueError("warmup_frames must be at least 20")
        if self.smoothing_frames < 1 or self.raise_after < 1 or self.clear_after < 1:
            raise ValueError("smoothing_frames, raise_after and clear_after must be >= 1")
        if not 0.0 <= self.detector_weight <= 1.0:
            raise ValueError("detector_weight must be within [0, 1]")
        if self.detector_calibration not in ("quantile", "tail", "mad"):
            raise ValueError("detector_calibration must be 'quantile', 'tail' or 'mad'")
        if self.calibration_holdout not in ("long", "mixed"):
            raise ValueError("calibration_holdout must be 'long' or 'mixed'")
        if self.adapt_gate_onset not in ONSET_MODES:
            raise ValueError(f"adapt_gate_onset must be one of {ONSET_MODES}")
        if not 0.0 <= self.sensor_tail_quantile < 1.0:
            raise ValueError("sensor_tail_quantile must be within [0, 1)")
        if self.ensemble_members < 1:
            raise ValueError("ensemble_members must be >= 1")

    @classmethod
    def from_settings(cls, settings: Any) -> AnomalyConfig:
        """The ``anomaly_*`` fields of :class:`~streams.settings.Settings`."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {n: getattr(settings, f"anomaly_{n}") for n in names if hasattr(settings, f"anomaly_{n}")}
        return cls(**values)

    def with_(self, **changes: Any) -> AnomalyConfig:
        return dataclasses.replace(self, **changes)

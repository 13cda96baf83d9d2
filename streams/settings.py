"""All of Lepton's configuration, in one place.

Every value is read from the environment (prefix ``LEPTON_``) and may be
overridden by command-line flags; nothing else in the code base holds a
tunable constant. ``get_settings()`` returns the process-wide instance.

>>> s = Settings(kafka_bootstrap="kafka:9092", max_batch=500)
>>> s.embedded_broker
False
>>> s.max_batch
500
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from .topics import Topics


class Settings(BaseSettings):
    """Lepton settings. Environment variable = ``LEPTON_`` + upper-cased field name."""

    model_config = SettingsConfigDict(env_prefix="LEPTON_", extra="ignore")

    # --- Kafka -----------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        None,
        description="host:port[,host:port] of a Kafka cluster. Unset: start the embedded broker.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    topic_prefix: str = Field("", description="Prepended to every topic name (several deployments on one cluster).")
    partitions: int = Field(4, ge=1, description="Partitions per topic when Lepton creates topics.")
    broker_port: int = Field(0, ge=0, description="Embedded broker port (0: a free one).")
    connect_timeout_s: float = Field(20.0, gt=0, description="How long to wait for the broker to answer.")

    # --- Faust worker ----------------------------------------------------------
    app_id: str = Field("lepton", description="Faust app id: the consumer group and table prefix.")
    max_batch: int = Field(2000, ge=1, description="Most events in one micro-batch.")
    max_wait_ms: int = Field(100, ge=1, description="Longest wait for a fetch (bounds batch latency).")
    max_inflight_batches: int = Field(4, ge=1, description="Batches whose outputs may await the broker's ack at once.")
    max_merged_batches: int = Field(
        8, ge=1, description="Most batches of one fetch (one per partition, or a long run cut at max_batch) "
        "processed in one pipeline call: fixed costs per call are paid once per fetch (1: one call per batch).")
    fetch_max_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Consumer max fetch size.")
    commit_interval_s: float = Field(1.0, gt=0, description="How often offsets are committed.")
    session_timeout_s: float = Field(
        10.0, gt=0, description="Consumer-group session timeout (a first join on Tansu takes about half of it)."
    )
    heartbeat_interval_s: float = Field(2.0, gt=0)
    rebalance_timeout_s: float = Field(30.0, gt=0)
    onnx_threads: int = Field(1, ge=1, description="intra-op threads per ONNX session.")
    gc_young_threshold: int = Field(
        100_000, ge=0, description="Net container allocations between young-generation garbage collections in a "
        "worker (0: Python's default, 700); a batch's records outlive many collections at 700.")
    pipelines: list[str] = Field(default_factory=lambda: ["fraud"], description="Pipelines a worker runs.")

    # --- Fraud -----------------------------------------------------------------
    fraud_state_tables: bool = Field(
        True, description="Keep fraud state (cards, scored log, terminals) in Faust tables with changelogs, "
        "recovered after a restart or a rebalance; off: in-process state that starts empty after a restart "
        "(one worker, no changelog traffic).")
    fraud_log_retention_days: float = Field(
        10.0, gt=0, description="How long (event time) a scored transaction waits for its label; must exceed "
        "the label delay (7 days in the handbook).")
    fraud_checkpoint_s: float = Field(
        30.0, gt=0, description="How often the worker checkpoints the online fraud model to "
        "LEPTON_HOME/state/fraud/ (also at shutdown; restored at start).")
    fraud_drift_debounce_s: float = Field(
        3600.0, ge=0, description="Event time after a drift detection during which the same signal raises no new one.")
    fraud_explain_top: int = Field(3, ge=1, description="Features named in a fraud alert's explanation.")
    fraud_label_batch: int = Field(
        20000, ge=1, description="Most labels in one batch (a batch per partition). A label batch rewrites the "
        "state of each terminal it names once: larger batches than max_batch rewrite each less often.")
    fraud_label_wait_s: float = Field(
        30.0, ge=0, description="A label whose transaction is not scored yet is held (uncommitted) while the "
        "transactions of its partition are behind (both replayed from a backlog), until they have not moved "
        "for this long; then it counts as missing.")

    # --- Sentiment -------------------------------------------------------------
    sentiment_challenger: str = Field(
        "none", description="Shadow model beside the champion: 'none', 'auto' (newest version of the other kind, "
        "fast/accurate) or a version number.")
    sentiment_blend: float = Field(
        0.0, ge=0.0, le=1.0, description="Weight of the challenger in the served probabilities. 0: the champion "
        "alone (the challenger scores a sample, in shadow); >0: both score every message and the label is the blend's.")
    sentiment_shadow_max_per_batch: int = Field(
        64, ge=0, description="Messages per batch the challenger scores (a sample: the accurate model is slow).")
    sentiment_prior_adaptation: bool = Field(
        False, description="Re-estimate the class mix of the recent stream without labels (EM, Saerens et al. 2002) "
        "and re-weight the champion's probabilities to it; needs the model's source prior (prior.json beside it).")
    sentiment_prior_window: int = Field(2000, ge=10, description="Recent messages the class-mix estimate is made over.")
    sentiment_prior_min_messages: int = Field(
        200, ge=1, description="Messages seen before the prior adaptation starts re-weighting.")
    sentiment_store_max: int = Field(200_000, ge=1, description="Message texts kept for corrections (oldest go first).")
    sentiment_store_ttl_s: float = Field(7 * 86_400.0, gt=0, description="How long a text waits for its correction.")
    sentiment_online_window: int = Field(1000, ge=10, description="Corrections over which prequential quality is measured.")
    sentiment_housekeeping_s: float = Field(5.0, gt=0, description="Expire kept texts, reload the challenger.")
    sentiment_checkpoint_s: float = Field(
        10.0, gt=0, description="How often the worker checkpoints mood, kept texts and the online model to "
        "LEPTON_HOME/state/sentiment/ (also at shutdown; restored at start).")
    sentiment_correction_wait_s: float = Field(
        60.0, ge=0, description="A correction that arrives before its message was scored waits this long for it.")
    sentiment_mood_window_s: float = Field(300.0, gt=0, description="Channel mood window (event time).")
    sentiment_mood_bucket_s: float = Field(10.0, gt=0, description="Resolution of the mood window.")
    sentiment_escalation_min_messages: int = Field(20, ge=1, description="Messages in the window needed to raise.")
    sentiment_escalation_raise_margin: float = Field(0.20, gt=0, description="Negative share above baseline that raises.")
    sentiment_escalation_clear_margin: float = Field(0.08, ge=0, description="Back within this of baseline: clears.")
    sentiment_escalation_z: float = Field(3.0, ge=0, description="The rise must be this many standard errors.")
    sentiment_escalation_min_hold_s: float = Field(120.0, ge=0, description="An escalation stays raised at least this long.")
    sentiment_baseline_messages: float = Field(500.0, gt=0, description="Memory of a channel's baseline, in messages.")
    sentiment_warmup_messages: int = Field(200, ge=0, description="No escalation before a channel's baseline saw this many.")

    # --- Anomaly pipeline (frames, not seconds; see models/anomaly/README.md) ----
    anomaly_warmup_frames: int = Field(400, ge=20, description="An equipment's first frames: they calibrate its normal operation.")
    anomaly_smoothing_frames: int = Field(5, ge=1, description="Span of the EWMA that averages sensor noise out.")
    anomaly_baseline_halflife_frames: float = Field(300.0, gt=0, description="How fast an equipment's normal level follows drift.")
    anomaly_alert_adapt_factor: float = Field(0.1, ge=0, le=1, description="Baseline adaptation during an alert, relative to normal.")
    anomaly_spike_clip: float = Field(6.0, gt=0, description="Readings are winsorized at +-this many warm-up sd before smoothing.")
    anomaly_drift_allowance: float = Field(0.0, ge=0, description="A sensor's scale also counts this times its move between the warm-up's halves (slow drift is not a fault).")
    anomaly_drift_lag: float = Field(0.0, ge=0, description="A sensor trending during warm-up gets a baseline fast enough to lag its trend by at most this many sd (0: off).")
    anomaly_drift_min_halflife_frames: float = Field(50.0, gt=0, description="The fastest a trending sensor's baseline may adapt (half-life in frames).")
    anomaly_adapt_frames: int = Field(500, ge=1, description="An equipment's baseline adapts once every this many of its frames, at fixed counts (scores do not depend on batching).")
    anomaly_adapt_gate: float = Field(3.0, ge=0, description="During an alert, sensors within +-this many sd of normal keep following drift at the full rate (0: off).")
    anomaly_adapt_gate_onset: Literal["none", "relative"] = Field("relative", description="During an alert, the gate also passes a sensor within +-gate of its deviation before the alert (an EWMA, span 50, over the normal frames) ('none': the gate alone). Round 12: 'relative'.")
    anomaly_learn_delay_frames: int = Field(0, ge=0, description="Frames teach an equipment's baseline this many frames later, and not as normal if an alert was raised meanwhile (its onset).")
    anomaly_sensor_tail_quantile: float = Field(0.5, ge=0, lt=1, description="Training: each sensor's contribution is divided by its own q-quantile on held-out normal data (relative to the sensors' geometric mean), so that a sensor contributing more on held-out data than in training does not set the threshold for the others (round 16: 0.5; 0: off). Stored in the model.")
    anomaly_learn_below: float = Field(1.0, gt=0, le=1, description="Frames teach the normal spread and the River detector only under this score ratio (1 = threshold).")
    anomaly_clip: float = Field(20.0, gt=0, description="Standardized deviations are clipped to +-clip.")
    anomaly_default_threshold: float = Field(3.0, gt=0, description="RMS deviation threshold when the model has no calibrated one.")
    anomaly_calibration_holdout: Literal["long", "mixed"] = Field("mixed", description="Training: the threshold is calibrated on a quarter of the long normal segments, or ('mixed') also on a quarter of the short ones (benchmark training parts, half-length warm-up).")
    anomaly_calibration_quantile: float = Field(0.99, gt=0, lt=1, description="Warm-up score quantile an equipment calibrates its threshold with.")
    anomaly_raise_after: int = Field(5, ge=1, description="k: consecutive anomalous frames that raise an alert.")
    anomaly_clear_after: int = Field(5, ge=1, description="m: consecutive normal frames that clear it.")
    anomaly_top_sensors: int = Field(3, ge=1, description="Sensors named in scores and alerts.")
    anomaly_detector_weight: float = Field(0.25, ge=0, le=1, description="Share of the River detector in the blended score.")
    anomaly_detector_calibration: Literal["quantile", "tail", "mad"] = Field("tail", description="River detector's ratio 1 from its warm-up scores: their empirical calibration quantile, an exponential tail fitted to their top 20 % ('tail'), or a normal fit ('mad').")
    anomaly_hst_trees: int = Field(10, ge=1, description="HalfSpaceTrees: trees per equipment.")
    anomaly_hst_height: int = Field(6, ge=1, le=12, description="HalfSpaceTrees: tree height.")
    anomaly_hst_window: int = Field(250, ge=16, description="HalfSpaceTrees: frames per reference window.")
    anomaly_feedback_frames: int = Field(900, ge=0, description="Recent frames kept per equipment for maintenance labels.")
    anomaly_ensemble_members: int = Field(1, ge=1, le=16, description="Training: autoencoders (different random inits) averaged in the one ONNX graph.")
    anomaly_target_far: float = Field(0.125, gt=0, lt=1, description="Training calibrates the threshold to this alert rate on held-out normal data.")
    anomaly_checkpoint_interval_s: float = Field(15.0, gt=0, description="An equipment's changed state is checkpointed to the state dir this long after it changed.")
    anomaly_checkpoint_budget_s: float = Field(0.1, gt=0, description="Most event-loop time spent writing checkpoints per second (the rest waits for the next tick).")
    anomaly_label_max_frames: int = Field(600, ge=1, description="`lepton produce anomaly`: longest maintenance-label interval, in frames of one equipment.")
    anomaly_label_wait_max: int = Field(10_000, ge=0, description="Maintenance labels that may wait for their equipment's frames (the oldest are dropped).")

    # --- Storage ---------------------------------------------------------------
    home: Path = Field(Path(".lepton"), description="Models, tables and checkpoints live here.")

    # --- Validation ------------------------------------------------------------
    max_payload_bytes: int = Field(64 * 1024, ge=64, description="Larger messages are dead letters.")
    max_text_chars: int = Field(2000, ge=1, description="Longer chat messages are dead letters.")
    max_amount: float = Field(1_000_000.0, gt=0, description="Larger transaction amounts are absurd.")
    max_future_skew_s: float = Field(86_400.0, gt=0, description="Event times further ahead are absurd.")

    # --- Observability ---------------------------------------------------------
    metrics_port: int = Field(9308, ge=0, description="Port of /metrics, /healthz and /ready.")
    metrics_host: str = "0.0.0.0"
    stall_after_s: float = Field(60.0, gt=0, description="/healthz fails when a lagging partition has not committed for this long.")
    log_level: str = "INFO"

    @property
    def embedded_broker(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def topics(self) -> "Topics":
        from .topics import Topics

        return Topics(self.topic_prefix)

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def state_dir(self) -> Path:
        return self.home / "state"


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment)."""
    return Settings()

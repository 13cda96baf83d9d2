"""Every number a person needs, as Prometheus metrics (prefix ``lepton_``).

Base units, ``_total`` on counters, low-cardinality labels only (pipeline,
topic, partition, reason, model version). One registry per process; the
worker serves it at ``/metrics`` (see :mod:`streams.web`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
_INFERENCE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

EVENTS_CONSUMED = Counter(
    "lepton_events_consumed_total", "Input records read from Kafka.", ["pipeline"], registry=REGISTRY
)
EVENTS_PROCESSED = Counter(
    "lepton_events_processed_total", "Inputs that produced an output.", ["pipeline"], registry=REGISTRY
)
EVENTS_FAILED = Counter(
    "lepton_events_failed_total", "Inputs that became dead letters.", ["pipeline"], registry=REGISTRY
)
DEAD_LETTERS = Counter(
    "lepton_dead_letters_total", "Dead letters by reason.", ["pipeline", "reason"], registry=REGISTRY
)
LATENCY = Histogram(
    "lepton_end_to_end_latency_seconds",
    "Event time to output emitted (acknowledged by the broker).",
    ["pipeline"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "lepton_batch_size", "Records per micro-batch.", ["pipeline"], buckets=_BATCH_BUCKETS, registry=REGISTRY
)
BATCHES_PER_CALL = Histogram(
    "lepton_batches_per_call",
    "Micro-batches (one per partition of a fetch) processed in one pipeline call.",
    ["pipeline"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16),
    registry=REGISTRY,
)
BATCH_DURATION = Histogram(
    "lepton_batch_duration_seconds",
    "Wall time to decode, score and enqueue the micro-batches of one pipeline call.",
    ["pipeline"],
    buckets=_INFERENCE_BUCKETS,
    registry=REGISTRY,
)
INFERENCE = Histogram(
    "lepton_inference_seconds",
    "One batched ONNX call.",
    ["pipeline", "model_version"],
    buckets=_INFERENCE_BUCKETS,
    registry=REGISTRY,
)
SCORES = Histogram(
    "lepton_score",
    "Distribution of model scores.",
    ["pipeline"],
    buckets=(0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99),
    registry=REGISTRY,
)
ALERTS = Counter(
    "lepton_alerts_total", "Alerts raised.", ["pipeline", "severity"], registry=REGISTRY
)
ALERT_PRECISION = Gauge(
    "lepton_alert_precision",
    "Share of the alerts judged by feedback labels that were confirmed (unset until one is judged).",
    ["pipeline"],
    registry=REGISTRY,
)
MODEL_INFO = Gauge(
    "lepton_model_version_info",
    "1 for the model version serving now (champion) per pipeline.",
    ["pipeline", "model_version", "role"],
    registry=REGISTRY,
)
MODEL_LOADS = Counter(
    "lepton_model_loads_total", "Models loaded and swapped in.", ["pipeline"], registry=REGISTRY
)
MODEL_LOAD_FAILURES = Counter(
    "lepton_model_load_failures_total",
    "Models refused at load or check; the previous version keeps serving.",
    ["pipeline"],
    registry=REGISTRY,
)
LAG_MESSAGES = Gauge(
    "lepton_consumer_lag_messages",
    "End offset minus committed offset.",
    ["topic", "partition"],
    registry=REGISTRY,
)
LAG_SECONDS = Gauge(
    "lepton_consumer_lag_seconds",
    "Age of the oldest input not yet processed (event time of the last batch vs now, 0 when caught up).",
    ["topic"],
    registry=REGISTRY,
)
COMMIT_AGE = Gauge(
    "lepton_partition_last_commit_age_seconds",
    "Seconds since this partition's offset last advanced.",
    ["topic", "partition"],
    registry=REGISTRY,
)
EMIT_RETRIES = Counter(
    "lepton_emit_retries_total", "Output sends retried after a broker error.", ["pipeline"], registry=REGISTRY
)
BUILD = Info("lepton_build", "Lepton version.", registry=REGISTRY)

# --- online learning and model comparison (first used by the sentiment pipeline) -----------------
PREQUENTIAL = Gauge(
    "lepton_prequential_quality",
    "Rolling prequential quality on labelled feedback (predict first, then learn).",
    ["pipeline", "learner", "metric"],
    registry=REGISTRY,
)
MODEL_AGREEMENT = Gauge(
    "lepton_model_agreement_ratio",
    "Share of messages on which a shadow model (challenger or online learner) agrees with the champion.",
    ["pipeline", "model"],
    registry=REGISTRY,
)
ONLINE_UPDATES = Counter(
    "lepton_online_updates_total", "Online learner updates (labels learned).", ["pipeline"], registry=REGISTRY
)
DRIFT_EVENTS = Counter(
    "lepton_drift_events_total", "Drift detections (debounced), by signal (error, score).", ["pipeline", "signal"],
    registry=REGISTRY,
)
LABELS_JOINED = Counter(
    "lepton_labels_total", "Feedback labels by outcome (joined to their scored event; missing: expired, "
    "unknown or already applied; invalid).", ["pipeline", "outcome"], registry=REGISTRY,
)
CORRECTIONS = Counter(
    "lepton_corrections_total",
    "Label corrections received, by outcome (learned, missing: text no longer kept, invalid).",
    ["pipeline", "outcome"],
    registry=REGISTRY,
)
ESCALATED_CHANNELS = Gauge(
    "lepton_escalated_channels", "Channels currently in an escalation alert.", ["pipeline"], registry=REGISTRY
)

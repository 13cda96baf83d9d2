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
    fetch_max_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Consumer max fetch size.")
    commit_interval_s: float = Field(1.0, gt=0, description="How often offsets are committed.")
    session_timeout_s: float = Field(
        10.0, gt=0, description="Consumer-group session timeout (a first join on Tansu takes about half of it)."
    )
    heartbeat_interval_s: float = Field(2.0, gt=0)
    rebalance_timeout_s: float = Field(30.0, gt=0)
    onnx_threads: int = Field(1, ge=1, description="intra-op threads per ONNX session.")
    pipelines: list[str] = Field(default_factory=lambda: ["fraud"], description="Pipelines a worker runs.")

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

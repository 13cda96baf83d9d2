"""The Faust app: one worker process running the chosen pipelines.

``create_app`` wires, from :class:`~streams.settings.Settings` alone: the
``lepton://`` batch transport, one :class:`~streams.pipeline.BatchAgent` per
pipeline, model hot-swap (a timer polling the registry and an agent on
``model-updates``), health and lag, and the HTTP endpoints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import faust

from connectors.kafka_config import faust_broker_credentials
from models.registry import ModelRegistry

from . import batching, web
from .fraud import FEATURES as FRAUD_FEATURES, FraudPipeline
from .health import Health
from .model_slot import ModelSlot
from .pipeline import BatchAgent, Pipeline
from .records import Limits
from .settings import Settings

log = logging.getLogger(__name__)


def _fraud(slot: ModelSlot, settings: Settings) -> Pipeline:
    return FraudPipeline(slot, settings.topics, settings)


def _sentiment(slot: ModelSlot, settings: Settings) -> Pipeline:
    from .sentiment import SentimentPipeline

    return SentimentPipeline(slot, settings.topics, settings)


def _anomaly(slot: ModelSlot, settings: Settings) -> Pipeline:
    from models.anomaly.config import AnomalyConfig

    from .anomaly import AnomalyPipeline

    return AnomalyPipeline(slot, settings.topics, AnomalyConfig.from_settings(settings), settings=settings)


#: the feature columns each pipeline computes (a model must expect exactly these);
#: sentiment (token ids) and anomaly (any sensors) check their inputs themselves
PIPELINE_FEATURES: dict[str, list[str]] = {"fraud": FRAUD_FEATURES}

#: pipeline name -> factory taking its model slot and the settings
PIPELINE_FACTORIES: dict[str, Callable[[ModelSlot, Settings], Pipeline]] = {
    "fraud": _fraud, "sentiment": _sentiment, "anomaly": _anomaly,
}


@dataclass
class Runtime:
    """What a running worker holds, for tests and the CLI."""

    app: faust.App
    settings: Settings
    agents: dict[str, BatchAgent] = field(default_factory=dict)
    slots: dict[str, ModelSlot] = field(default_factory=dict)
    health: Health | None = None


def create_app(settings: Settings, bootstrap: str) -> Runtime:
    """Build the Faust app for ``settings.pipelines`` against ``bootstrap``."""
    unknown = set(settings.pipelines) - set(PIPELINE_FACTORIES)
    if unknown:
        raise ValueError(
            f"unknown pipeline(s) {sorted(unknown)}; available: {sorted(PIPELINE_FACTORIES)}"
        )
    batching.install()
    app = faust.App(
        settings.app_id,
        broker=f"{batching.SCHEME}://{bootstrap}",
        broker_credentials=faust_broker_credentials(settings),
        store="memory://",
        Stream=batching.BatchStream,
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=settings.fetch_max_bytes,
        broker_commit_interval=settings.commit_interval_s,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_request_timeout=max(90.0, settings.session_timeout_s + 10),
        producer_max_batch_size=512 * 1024,
        producer_max_request_size=4 * 1024 * 1024,
        producer_linger_ms=1,
        stream_buffer_maxsize=64,
        web_port=settings.metrics_port,
        web_bind=settings.metrics_host,
        web_enabled=True,
        web_in_thread=False,
        datadir=str(settings.state_dir),
        loghandlers=[],
    )
    app.lepton_settings = settings  # read by the batch transport
    runtime = Runtime(app=app, settings=settings)
    registry = ModelRegistry(settings.models_dir)
    limits = Limits.from_settings(settings)
    for name in settings.pipelines:
        slot = ModelSlot(registry, name, threads=settings.onnx_threads, features=PIPELINE_FEATURES.get(name))
        slot.load_now()
        agent = BatchAgent(app, PIPELINE_FACTORIES[name](slot, settings), limits, settings.topics,
                           max_inflight_batches=settings.max_inflight_batches,
                           max_merged_batches=settings.max_merged_batches)
        agent.register()
        runtime.slots[name] = slot
        runtime.agents[name] = agent

    newest = {a.pipeline.topics.input: a for a in runtime.agents.values()}
    health = Health(app, settings.stall_after_s, lambda topic: getattr(newest.get(topic), "last_record_ts", None))
    runtime.health = health
    web.register(app, health)

    @app.timer(1.0)
    async def housekeeping() -> None:
        health.update()
        for slot in runtime.slots.values():
            await slot.refresh()

    updates = app.topic(settings.topics.model_updates, value_serializer="json")

    @app.agent(updates, name="lepton.model_updates")
    async def on_model_update(stream: faust.StreamT) -> None:
        async for update in stream:
            slot = runtime.slots.get((update or {}).get("pipeline", ""))
            if slot is not None:
                await slot.refresh()

    return runtime

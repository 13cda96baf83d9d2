"""Which Kafka a ``lepton`` command talks to.

1. ``LEPTON_KAFKA_BOOTSTRAP`` set: that cluster (checked to answer).
2. Unset, and another ``lepton`` process runs the embedded broker: that one
   (it publishes its address in ``$LEPTON_HOME/broker.json``), so
   ``lepton worker`` and ``lepton produce`` in two terminals meet.
3. Otherwise: a new embedded broker owned by this command, stopped on exit.

Topics are created on the embedded broker; on a real cluster they are
created only when missing (and the client is allowed to).
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Iterator

from connectors.admin import ensure_topics
from connectors.broker import EmbeddedBroker
from connectors.kafka_config import BrokerUnreachable, wait_for_broker

from .settings import Settings


def _published(settings: Settings) -> str | None:
    """The bootstrap of a running embedded broker another Lepton process published in the home."""
    path = settings.home / "broker.json"
    try:
        info = json.loads(path.read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    try:
        wait_for_broker(info["bootstrap"], 2.0, settings)
    except BrokerUnreachable:
        return None
    return str(info["bootstrap"])


def starts_embedded_broker(settings: Settings) -> bool:
    """True when :func:`kafka` will start an embedded broker of its own (no cluster, none running)."""
    return not settings.kafka_bootstrap and _published(settings) is None


@contextlib.contextmanager
def kafka(settings: Settings, *, create_topics: bool = True) -> Iterator[str]:
    """Yield a bootstrap address that answers, with Lepton's topics created."""
    if settings.kafka_bootstrap:
        wait_for_broker(settings.kafka_bootstrap, settings.connect_timeout_s, settings)
        if create_topics:
            ensure_topics(settings.kafka_bootstrap, settings.topics.all(), settings.partitions, settings=settings)
        yield settings.kafka_bootstrap
        return
    shared = _published(settings)
    if shared:
        yield shared
        return
    settings.home.mkdir(parents=True, exist_ok=True)
    info = settings.home / "broker.json"
    with EmbeddedBroker(settings) as broker:
        info.write_text(json.dumps({"bootstrap": broker.bootstrap, "pid": os.getpid()}))
        try:
            if create_topics:
                ensure_topics(broker.bootstrap, settings.topics.all(), settings.partitions, settings=settings)
            yield broker.bootstrap
        finally:
            with contextlib.suppress(OSError):
                info.unlink()


def announce_model(settings: Settings, pipeline: str, version: int) -> None:
    """Publish on ``model-updates`` that ``pipeline`` has a new champion."""
    from kafka import KafkaProducer

    from connectors.kafka_config import kafka_python_config

    bootstrap = settings.kafka_bootstrap or _published(settings)
    if not bootstrap:
        return  # nothing runs: workers load the champion when they start
    producer = KafkaProducer(**kafka_python_config(settings.model_copy(update={"kafka_bootstrap": bootstrap})))
    try:
        producer.send(settings.topics.model_updates, key=pipeline.encode(),
                      value=json.dumps({"pipeline": pipeline, "version": version}).encode())
        producer.flush(10)
    finally:
        producer.close()

"""Session-wide fixtures: one real embedded broker (Tansu) shared by every test that needs Kafka.

The broker starts on first use and stops at the end of the session. It is
memory-only, so tests isolate themselves with their own topic prefix
(``Settings(topic_prefix=...)``) or topic names, and their own consumer groups.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from connectors.broker import EmbeddedBroker
from streams.settings import Settings


@pytest.fixture(scope="session")
def embedded_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """The session's broker process (its log is ``broker.log`` in a temporary home)."""
    home = tmp_path_factory.mktemp("broker-home")
    with EmbeddedBroker(Settings(home=home, kafka_bootstrap=None, broker_port=0)) as broker:
        yield broker


@pytest.fixture(scope="session")
def broker(embedded_broker: EmbeddedBroker) -> str:
    """Bootstrap address (``127.0.0.1:PORT``) of the session's real broker."""
    return embedded_broker.bootstrap

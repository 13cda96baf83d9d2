"""Fixtures for tests against the real embedded broker (started once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.settings import Settings

from support import isolated_deployment


@pytest.fixture(scope="session")
def fraud_model_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Lepton home with a small fraud model registered (trained once per session)."""
    from models.train import train_fraud

    home = tmp_path_factory.mktemp("lepton-home")
    train_fraud(Settings(home=home), epochs=1, rows=20_000)
    return home


@pytest.fixture
def deployment(broker: str, fraud_model_home: Path, request: pytest.FixtureRequest):
    """An isolated deployment (own topic prefix and consumer group); its workers stop at the end."""
    with isolated_deployment(broker, fraud_model_home, request.node.name) as d:
        yield d

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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Keep each phase's report on the item, so fixtures can tell that their test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def deployment(broker: str, fraud_model_home: Path, request: pytest.FixtureRequest):
    """An isolated deployment (own topic prefix and consumer group); its workers stop at the end.
    When the test fails, the tail of every worker's log is printed (pytest shows it with the failure)."""
    with isolated_deployment(broker, fraud_model_home, request.node.name) as d:
        yield d
        call = getattr(request.node, "report_call", None)
        if call is not None and call.failed:
            print(f"--- worker logs of {request.node.name} ---\n{d.logs(12_000)}")

"""Every exported metric is documented in the README, named the Prometheus way, with few labels.

The README's metrics table is the catalogue a person reads; the registry is
what a worker serves. A metric added without a README row, a row left behind
after a rename, or a row whose type or labels disagree with the code fails here
(``python -m streams.metrics_catalogue README.md`` prints the missing rows).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streams.metrics_catalogue import catalogue, readme_rows

README = Path(__file__).resolve().parents[2] / "README.md"

# Labels whose values are per event or per entity would make one series per
# card, message or pump: never a label.
HIGH_CARDINALITY = {"id", "card", "merchant", "user", "channel", "equipment_id", "text", "key", "offset", "subject"}


@pytest.fixture(scope="module")
def documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    return readme_rows(README.read_text())


def test_the_catalogue_is_read_from_the_registry():
    names = {d.name for d in catalogue()}
    assert {"lepton_events_consumed_total", "lepton_end_to_end_latency_seconds", "lepton_consumer_lag_seconds"} <= names


def test_every_metric_is_documented(documented):
    missing = [d.name for d in catalogue() if d.name not in documented]
    assert not missing, f"metrics missing from the README's table (python -m streams.metrics_catalogue README.md): {missing}"


def test_no_documented_metric_is_gone(documented):
    exported = {d.name for d in catalogue()}
    stale = sorted(set(documented) - exported)
    assert not stale, f"README documents metrics no worker exports: {stale}"


def test_documented_type_and_labels_match_the_code(documented):
    for doc in catalogue():
        if doc.name in documented:
            assert documented[doc.name] == (doc.kind, doc.labels), f"{doc.name}: README says {documented[doc.name]}"


def test_prometheus_naming():
    for doc in catalogue():
        assert re.fullmatch(r"lepton_[a-z0-9_]+", doc.name), doc.name
        assert (doc.kind == "counter") == doc.name.endswith("_total"), f"{doc.name}: _total is for counters only"
        # base units: seconds and bytes, never milli- or micro-
        assert not re.search(r"_(ms|milliseconds|us|microseconds|minutes|hours|kb|mb)(_|$)", doc.name), doc.name
        assert doc.help.strip(), f"{doc.name} has no help text"


def test_labels_have_low_cardinality():
    for doc in catalogue():
        assert not set(doc.labels) & HIGH_CARDINALITY, f"{doc.name}: per-entity label {set(doc.labels) & HIGH_CARDINALITY}"
        assert len(doc.labels) <= 3, f"{doc.name}: {doc.labels}"

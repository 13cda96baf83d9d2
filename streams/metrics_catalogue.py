"""The catalogue of exported metrics, read from the registry itself.

The README's metrics table, the Grafana dashboard and the Prometheus alert
rules all name metrics; the tests compare them with this catalogue, so a
metric renamed in :mod:`streams.metrics` cannot leave a dashboard panel or an
alert silently empty. ``python -m streams.metrics_catalogue`` prints the
README table's rows for the metrics it lacks.

>>> docs = {d.name: d for d in catalogue()}
>>> docs["lepton_events_consumed_total"].kind, docs["lepton_events_consumed_total"].labels
('counter', ('pipeline',))
>>> "lepton_score_bucket" in exported_series()
True
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from . import metrics

#: suffixes Prometheus adds to a histogram's samples (and to an info metric's name)
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


@dataclass(frozen=True)
class MetricDoc:
    """One metric as Prometheus shows it: the name queries use, type, labels, help text."""

    name: str
    kind: str
    labels: tuple[str, ...]
    help: str


def _exposed_name(name: str, kind: str) -> str:
    if kind == "counter":
        return f"{name}_total"
    if kind == "info":
        return f"{name}_info"
    return name


def catalogue(registry: CollectorRegistry = metrics.REGISTRY) -> list[MetricDoc]:
    """Every metric of ``registry``, sorted by name (children need not exist yet)."""
    collectors = {id(c): c for c in registry._names_to_collectors.values()}.values()
    docs = [
        MetricDoc(_exposed_name(c._name, c._type), c._type, tuple(c._labelnames), c._documentation)
        for c in collectors
    ]
    return sorted(docs, key=lambda d: d.name)


def exported_series(registry: CollectorRegistry = metrics.REGISTRY) -> set[str]:
    """Every series name a query may use: metric names plus histogram ``_bucket/_sum/_count``."""
    names = set()
    for doc in catalogue(registry):
        names.add(doc.name)
        if doc.kind == "histogram":
            names.update(doc.name + s for s in HISTOGRAM_SUFFIXES)
    return names


def base_name(series: str) -> str:
    """The metric a series belongs to: ``lepton_score_bucket`` -> ``lepton_score``.

    >>> base_name("lepton_end_to_end_latency_seconds_bucket"), base_name("lepton_alerts_total")
    ('lepton_end_to_end_latency_seconds', 'lepton_alerts_total')
    """
    for suffix in HISTOGRAM_SUFFIXES:
        if series.endswith(suffix):
            return series[: -len(suffix)]
    return series


_README_ROW = re.compile(r"^\|\s*`(lepton_[a-z0-9_]+)`\s*\|\s*([a-z]+)\s*\|([^|]*)\|")


def readme_rows(text: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """``{name: (type, labels)}`` from the README's metrics table rows.

    >>> readme_rows("| `lepton_x_total` | counter | pipeline, reason | things |")
    {'lepton_x_total': ('counter', ('pipeline', 'reason'))}
    """
    rows = {}
    for line in text.splitlines():
        m = _README_ROW.match(line.strip())
        if m:
            labels = tuple(part.strip() for part in m.group(3).split(",") if part.strip() and part.strip() != "-")
            rows[m.group(1)] = (m.group(2), labels)
    return rows


def markdown_row(doc: MetricDoc) -> str:
    """A README table row for ``doc`` (its meaning taken from the help text, to be edited)."""
    return f"| `{doc.name}` | {doc.kind} | {', '.join(doc.labels) or '-'} | {doc.help} |"


if __name__ == "__main__":  # pragma: no cover - a developer's helper
    documented = readme_rows(open(sys.argv[1]).read()) if len(sys.argv) > 1 else {}
    for doc in catalogue():
        if doc.name not in documented:
            print(markdown_row(doc))

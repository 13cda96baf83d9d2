"""The terminal view of a running worker, from its own /metrics endpoint.

It reads exactly what Prometheus would scrape, so what a person sees in the
terminal and what the dashboards show cannot disagree.
"""

from __future__ import annotations

import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str, timeout: float = 2.0) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] from a Prometheus text endpoint."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        text = resp.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def total(samples: dict, name: str, **match: str) -> float:
    return sum(v for labels, v in samples.get(name, []) if all(labels.get(k) == m for k, m in match.items()))


def quantile(samples: dict, name: str, q: float, **match: str) -> float | None:
    """A quantile from histogram buckets (upper bound of the bucket reaching q)."""
    buckets = sorted(
        (float(labels["le"]), v)
        for labels, v in samples.get(f"{name}_bucket", [])
        if all(labels.get(k) == m for k, m in match.items())
    )
    if not buckets or buckets[-1][1] == 0:
        return None
    target = q * buckets[-1][1]
    for le, count in buckets:
        if count >= target:
            return le
    return None


@dataclass
class LiveView:
    """Keeps the previous scrape to turn counters into rates."""

    metrics_url: str
    pipelines: list[str]
    alerts: deque = field(default_factory=lambda: deque(maxlen=8))
    _prev: tuple[float, dict] | None = None

    def frame(self) -> Any:
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table

        try:
            samples = scrape(self.metrics_url)
        except OSError as exc:
            return Panel(f"waiting for the worker at {self.metrics_url} ({exc.__class__.__name__})")
        now = time.monotonic()
        prev_t, prev = self._prev if self._prev else (now, samples)
        self._prev = (now, samples)
        dt = max(1e-6, now - prev_t)
        table = Table(title="Lepton Streams: live", expand=True)
        for col in ("pipeline", "events/s", "processed", "dead letters", "p50 latency", "p99 latency", "model", "alerts"):
            table.add_column(col, justify="right")
        for p in self.pipelines:
            done = total(samples, "lepton_events_consumed_total", pipeline=p)
            rate = (done - total(prev, "lepton_events_consumed_total", pipeline=p)) / dt if prev is not samples else 0.0
            p50 = quantile(samples, "lepton_end_to_end_latency_seconds", 0.5, pipeline=p)
            p99 = quantile(samples, "lepton_end_to_end_latency_seconds", 0.99, pipeline=p)
            versions = [lab["model_version"] for lab, v in samples.get("lepton_model_version_info", [])
                        if lab.get("pipeline") == p and v == 1]
            table.add_row(
                p,
                f"{rate:,.0f}",
                f"{total(samples, 'lepton_events_processed_total', pipeline=p):,.0f}",
                f"{total(samples, 'lepton_dead_letters_total', pipeline=p):,.0f}",
                f"≤{p50 * 1000:.0f} ms" if p50 is not None else "-",
                f"≤{p99 * 1000:.0f} ms" if p99 is not None else "-",
                ",".join(f"v{v}" for v in versions) or "-",
                f"{total(samples, 'lepton_alerts_total', pipeline=p):,.0f}",
            )
        lag = Table(title="consumer lag", expand=True)
        lag.add_column("topic")
        lag.add_column("messages", justify="right")
        lag.add_column("seconds", justify="right")
        topics = {labels["topic"] for labels, _ in samples.get("lepton_consumer_lag_messages", [])}
        for t in sorted(topics):
            lag.add_row(t, f"{total(samples, 'lepton_consumer_lag_messages', topic=t):,.0f}",
                        f"{total(samples, 'lepton_consumer_lag_seconds', topic=t):.1f}")
        recent = "\n".join(self.alerts) or "(none yet)"
        return Group(table, lag, Panel(recent, title="recent alerts"))

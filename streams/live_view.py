"""The terminal view of a running worker, from its own /metrics endpoint.

It reads exactly what Prometheus would scrape, so what a person sees in the
terminal and what the dashboards show cannot disagree. One row per pipeline
(throughput, latency, lag, dead letters, model, alerts, online quality, drift)
and the latest alerts of each pipeline, read from the alerts topic.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str) -> Samples:
    """Sample name -> [(labels, value)] from Prometheus text.

    >>> parse('lepton_x_total{pipeline="fraud"} 3.0\\n')["lepton_x_total"]
    [({'pipeline': 'fraud'}, 3.0)]
    """
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def scrape(url: str, timeout: float = 2.0) -> Samples:
    """Sample name -> [(labels, value)] from a Prometheus text endpoint."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return parse(resp.read().decode())


def total(samples: Samples, name: str, **match: str) -> float:
    return sum(v for labels, v in samples.get(name, []) if all(labels.get(k) == m for k, m in match.items()))


def quantile(samples: Samples, name: str, q: float, since: Samples | None = None, **match: str) -> float | None:
    """A quantile from histogram buckets (upper bound of the bucket reaching q).

    With ``since`` (an earlier scrape), of the observations made in between only.

    >>> s = parse('h_bucket{le="0.1"} 90\\nh_bucket{le="1.0"} 99\\nh_bucket{le="+Inf"} 100\\n')
    >>> quantile(s, "h", 0.5), quantile(s, "h", 0.99), quantile(s, "h", 1.0)
    (0.1, 1.0, inf)
    >>> old = parse('h_bucket{le="0.1"} 90\\nh_bucket{le="1.0"} 90\\nh_bucket{le="+Inf"} 90\\n')
    >>> quantile(s, "h", 0.5, since=old)  # the last 10 observations: 9 of them over 0.1
    1.0
    """
    def counts(samples: Samples) -> dict[float, float]:
        return {float(labels["le"]): v for labels, v in samples.get(f"{name}_bucket", [])
                if all(labels.get(k) == m for k, m in match.items())}

    now = counts(samples)
    before = counts(since) if since is not None else {}
    buckets = sorted((le, v - before.get(le, 0.0)) for le, v in now.items())
    if not buckets or buckets[-1][1] == 0:
        return None
    target = q * buckets[-1][1]
    for le, count in buckets:
        if count >= target:
            return le
    return None


#: prequential gauges that count labels rather than measure quality: not shown
COUNTS = {"labels", "positives", "negatives", "n", "count"}


def _duration(seconds: float | None) -> str:
    """A histogram bucket bound, short: the view shows ``p50 / p99`` in one column.

    >>> _duration(0.25), _duration(2.5), _duration(float("inf")), _duration(None)
    ('≤250ms', '≤2.5s', '>60s', '-')
    """
    if seconds is None:
        return "-"
    if seconds == float("inf"):
        return ">60s"
    return f"≤{seconds * 1000:.0f}ms" if seconds < 1 else f"≤{seconds:g}s"


def alert_line(alert: dict[str, Any]) -> str:
    """One alert record (topic ``alerts``) as a line of the view.

    >>> alert_line({"severity": "critical", "ts": 0, "subject": "card-000042",
    ...             "reason": "fraud probability 0.99 >= threshold 0.9"})
    '00:00:00 critical card-000042: fraud probability 0.99 >= threshold 0.9'
    >>> alert_line({"severity": "warning", "ts": 0, "subject": "pump-003", "reason": "pump-003: anomalous"})
    '00:00:00 warning pump-003: anomalous'
    """
    ts = alert.get("ts")
    when = time.strftime("%H:%M:%S", time.gmtime(float(ts))) if isinstance(ts, (int, float)) else "--:--:--"
    subject, reason = str(alert.get("subject", "?")), str(alert.get("reason", ""))
    what = reason if subject in reason else f"{subject}: {reason}"
    return f"{when} {alert.get('severity', '?')} {what}"


@dataclass
class LiveView:
    """Keeps the previous scrape to turn counters into rates, and the latest alerts per pipeline."""

    metrics_url: str
    pipelines: list[str]
    input_topics: dict[str, str] = field(default_factory=dict)
    alerts_per_pipeline: int = 3
    rate_window_s: float = 5.0
    fetch: Callable[[str], Samples] = scrape
    clock: Callable[[], float] = time.monotonic
    alerts: dict[str, deque] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # alerts arrive from a reader thread
    _history: deque = field(default_factory=deque)

    def add_alert(self, alert: dict[str, Any]) -> None:
        pipeline = str(alert.get("pipeline", "?"))
        line = alert_line(alert)
        with self._lock:
            self.alerts.setdefault(pipeline, deque(maxlen=self.alerts_per_pipeline)).appendleft(line)

    @staticmethod
    def quality(samples: Samples, pipeline: str) -> str:
        """Prequential quality per learner on one line each, and shadow agreement.

        >>> s = parse('lepton_prequential_quality{pipeline="p",learner="online",metric="roc_auc"} 0.91\\n'
        ...           'lepton_prequential_quality{pipeline="p",learner="online",metric="labels"} 1200\\n'
        ...           'lepton_model_agreement_ratio{pipeline="p",model="online"} 0.97\\n')
        >>> LiveView.quality(s, "p")
        'online roc_auc 0.91\\nonline agrees 97%'
        """
        learners: dict[str, list[str]] = {}
        for labels, v in samples.get("lepton_prequential_quality", []):
            if labels.get("pipeline") == pipeline and v == v and labels.get("metric") not in COUNTS:
                learners.setdefault(labels.get("learner", "?"), []).append(f"{labels.get('metric', '?')} {v:.2f}")
        lines = [f"{learner} {' '.join(sorted(parts))}" for learner, parts in sorted(learners.items())]
        lines += [f"{labels.get('model', '?')} agrees {v:.0%}"
                  for labels, v in samples.get("lepton_model_agreement_ratio", [])
                  if labels.get("pipeline") == pipeline and v == v]
        lines += [f"alert precision {v:.0%}" for labels, v in samples.get("lepton_alert_precision", [])
                  if labels.get("pipeline") == pipeline and v == v]
        return "\n".join(lines) or "(waiting for labels)"

    def _rate(self, samples: Samples, pipeline: str, now: float) -> float:
        """Events/s over the last ``rate_window_s`` (a 1 s difference jumps with batch timing)."""
        then, old = self._history[0]
        if now <= then:
            return 0.0
        return (total(samples, "lepton_events_consumed_total", pipeline=pipeline)
                - total(old, "lepton_events_consumed_total", pipeline=pipeline)) / (now - then)

    def frame(self) -> Any:
        from rich.console import Group
        from rich.markup import escape
        from rich.panel import Panel
        from rich.table import Table

        try:
            samples = self.fetch(self.metrics_url)
        except OSError as exc:
            return Panel(f"waiting for the worker at {self.metrics_url} ({exc.__class__.__name__})")
        now = self.clock()
        self._history.append((now, samples))
        while len(self._history) > 2 and self._history[1][0] <= now - self.rate_window_s:
            self._history.popleft()
        table = Table(title="Lepton Streams: live", expand=True)
        for col in ("pipeline", "events/s", "processed", "dead letters", "latency p50 / p99",
                    "lag msgs / s", "model", "alerts"):
            table.add_column(col, justify="left" if col == "pipeline" else "right", no_wrap=True,
                             min_width=9 if col == "pipeline" else None)
        learning = Table(title="learning from feedback", expand=True)
        learning.add_column("pipeline", no_wrap=True, min_width=9)
        learning.add_column("drift events", justify="right", no_wrap=True)
        learning.add_column("prequential quality (rolling), shadow agreement, alert precision")
        for p in self.pipelines:
            rate = self._rate(samples, p, now)
            since = self._history[0][1] if len(self._history) > 1 else None  # latency of the last seconds
            topic = self.input_topics.get(p)
            lag = (f"{total(samples, 'lepton_consumer_lag_messages', topic=topic):,.0f} / "
                   f"{total(samples, 'lepton_consumer_lag_seconds', topic=topic):.1f}") if topic else "-"
            versions = sorted({lab["model_version"] for lab, v in samples.get("lepton_model_version_info", [])
                               if lab.get("pipeline") == p and v == 1}, key=lambda v: (len(v), v))
            table.add_row(
                p,
                f"{rate:,.0f}",
                f"{total(samples, 'lepton_events_processed_total', pipeline=p):,.0f}",
                f"{total(samples, 'lepton_dead_letters_total', pipeline=p):,.0f}",
                f"{_duration(quantile(samples, 'lepton_end_to_end_latency_seconds', 0.5, since, pipeline=p))} / "
                f"{_duration(quantile(samples, 'lepton_end_to_end_latency_seconds', 0.99, since, pipeline=p))}",
                lag,
                ",".join(f"v{v}" for v in versions) or "-",
                f"{total(samples, 'lepton_alerts_total', pipeline=p):,.0f}",
            )
            learning.add_row(p, f"{total(samples, 'lepton_drift_events_total', pipeline=p):,.0f}",
                             self.quality(samples, p))
        recent = Table(title="recent alerts (newest first)", expand=True, show_header=False, box=None)
        recent.add_column("pipeline", style="bold", no_wrap=True, min_width=9)
        recent.add_column("alert", no_wrap=True, overflow="ellipsis")
        with self._lock:
            latest = {p: list(self.alerts.get(p, ())) for p in self.pipelines}
        for p in self.pipelines:
            for i, line in enumerate(latest[p] or ["(none yet)"]):
                recent.add_row(p if i == 0 else "", escape(line))
        return Group(table, learning, Panel(recent))

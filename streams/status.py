"""``lepton status``: topics, lag, model versions, worker health, in one report."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from .settings import Settings
from .topics import PIPELINES


def _http(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except (OSError, ValueError) as exc:
        return 0, {"status": f"unreachable ({exc.__class__.__name__})"}


def collect(settings: Settings) -> dict[str, Any]:
    from connectors.admin import group_lag, topic_offsets
    from models.registry import ModelRegistry

    from .kafka_session import kafka

    registry = ModelRegistry(settings.models_dir)
    report: dict[str, Any] = {"models": {}, "topics": {}, "lag": {}, "worker": {}}
    for name in PIPELINES:
        champion = registry.champion(name)
        report["models"][name] = {
            "champion": champion.version if champion else None,
            "versions": [m.version for m in registry.versions(name)],
        }
    with kafka(settings, create_topics=False) as bootstrap:
        report["bootstrap"] = bootstrap
        for topic, offsets in topic_offsets(bootstrap, settings.topics.all(), settings=settings).items():
            report["topics"][topic] = {"partitions": len(offsets), "messages": sum(offsets.values())}
        inputs = [settings.topics.pipeline(p).input for p in PIPELINES]
        lag = group_lag(bootstrap, settings.app_id, inputs, settings=settings)
        report["lag"] = {t: sum(v.lag for v in parts.values()) for t, parts in lag.items()}
    base = f"http://127.0.0.1:{settings.metrics_port}"
    for check in ("healthz", "ready"):
        code, body = _http(f"{base}/{check}")
        report["worker"][check] = {"http": code, **(body if isinstance(body, dict) else {})}
    return report


def render(report: dict[str, Any]) -> str:
    lines = [f"Kafka: {report.get('bootstrap')}", "", "topics:"]
    for topic, info in report["topics"].items():
        lines.append(f"  {topic:<20} {info['partitions']} partitions  {info['messages']:>10,} messages")
    lines += ["", f"consumer lag (group of the worker):"]
    for topic, lag in report["lag"].items():
        lines.append(f"  {topic:<20} {lag:>10,}")
    lines += ["", "models:"]
    for name, m in report["models"].items():
        lines.append(f"  {name:<10} champion={'v' + str(m['champion']) if m['champion'] else '-'}  "
                     f"versions={','.join('v' + str(v) for v in m['versions']) or '-'}")
    lines += ["", "worker:"]
    for check, info in report["worker"].items():
        lines.append(f"  /{check:<8} http {info.get('http')}  {info.get('status')}")
    return "\n".join(lines)

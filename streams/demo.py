"""``lepton demo``: the whole product on the embedded default, in one command.

Starts the embedded broker (this process owns it), trains any missing model,
runs the worker and a synthetic generator as child processes (as they would
run in production), and shows a live view built from the worker's /metrics.
Ctrl-C (or ``--duration``) stops the children, then the broker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from .live_view import LiveView
from .settings import Settings

DEMO_PIPELINES = ["fraud"]


def _spawn(args: list[str], env: dict[str, str], log_path: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "streams.cli", *args], env=env,
                            stdout=log_path, stderr=subprocess.STDOUT, start_new_session=False)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


def run_demo(settings: Settings, *, duration: float | None, rate: float) -> None:
    from kafka import KafkaConsumer
    from rich.console import Console
    from rich.live import Live

    from models.registry import ModelRegistry
    from models.train import train_pipeline

    from .kafka_session import kafka

    console = Console()
    registry = ModelRegistry(settings.models_dir)
    for name in DEMO_PIPELINES:
        if registry.champion(name) is None:
            console.print(f"[bold]no {name} model yet: training one on synthetic data[/bold]")
            train_pipeline(settings, name, progress=True)
    with kafka(settings) as bootstrap:
        console.print(f"Kafka: {bootstrap} ({'external' if settings.kafka_bootstrap else 'embedded, in memory only'})")
        env = dict(os.environ, LEPTON_KAFKA_BOOTSTRAP=bootstrap, LEPTON_HOME=str(settings.home))
        settings.home.mkdir(parents=True, exist_ok=True)
        log = open(settings.home / "demo.log", "ab")
        procs = [_spawn(["worker", "--pipelines", ",".join(DEMO_PIPELINES)], env, log)]
        procs += [_spawn(["produce", name, "--rate", str(rate), "--count", str(10**12)], env, log)
                  for name in DEMO_PIPELINES]
        url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
        console.print(f"metrics: {url}  (point Prometheus at it: a scrape job like deploy/prometheus.yml's, "
                      f"target 127.0.0.1:{settings.metrics_port})   logs: {settings.home / 'demo.log'}   Ctrl-C stops")
        view = LiveView(url, DEMO_PIPELINES)
        alerts = KafkaConsumer(settings.topics.alerts, bootstrap_servers=bootstrap, auto_offset_reset="latest",
                               enable_auto_commit=False)
        deadline = time.monotonic() + duration if duration else None
        try:
            with Live(view.frame(), console=console, refresh_per_second=2) as live:
                while deadline is None or time.monotonic() < deadline:
                    for records in alerts.poll(timeout_ms=1000).values():
                        for r in records:
                            a = json.loads(r.value)
                            view.alerts.appendleft(
                                f"{a.get('severity', '?'):<8} {a.get('pipeline')}: {a.get('reason')} [{a.get('subject')}]")
                    live.update(view.frame())
                    dead = [p for p in procs if p.poll() is not None]
                    if dead:
                        console.print(f"[red]a child process stopped (exit {dead[0].returncode}); see {settings.home / 'demo.log'}[/red]")
                        break
        except KeyboardInterrupt:
            console.print("stopping…")
        finally:
            alerts.close()
            _stop(procs)
            log.close()

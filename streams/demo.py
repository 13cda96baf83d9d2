"""``lepton demo``: the whole product on the embedded default, in one command.

Starts the embedded broker (this process owns it), trains any missing model,
runs one worker for the three pipelines and a synthetic generator per pipeline
as child processes (as they would run in production), and shows a live view
built from the worker's /metrics and the alerts topic. Ctrl-C (or
``--duration``) stops the children, then the broker.

The generators tell the stories the pipelines are built for: cards and
terminals get compromised (fraud bursts) and their labels arrive later;
chat channels turn angry now and then; pumps degrade, fail and get repaired
(maintenance labels follow). A small share of broken input (a buggy upstream
client) shows the dead-letter path at work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

from .live_view import LiveView
from .settings import Settings

DEMO_PIPELINES = ["fraud", "sentiment", "anomaly"]


@dataclass(frozen=True)
class Feed:
    """How the demo feeds one pipeline: events per second and label delay (event time = wall clock)."""

    rate: float
    label_delay_s: float


def feeds(rate: float, chat_rate: float, sensor_rate: float) -> dict[str, Feed]:
    """The demo's three streams.

    Fraud labels arrive 30 s after their transaction (days late in real life;
    here the simulated world runs a day every ~10,000 transactions), chat
    corrections after 5 s; maintenance labels as each repair interval ends.
    """
    return {"fraud": Feed(rate, 30.0), "sentiment": Feed(chat_rate, 5.0), "anomaly": Feed(sensor_rate, 0.0)}


#: Settings of the demo's worker (unless set in the environment). The demo runs its worlds fast
#: (a minute should show a story), so the chat mood window shrinks from 5 minutes to 30 s:
#: otherwise a channel turning angry at 100 messages/s would hardly move a 5-minute window.
DEMO_WORKER_ENV = {
    "LEPTON_SENTIMENT_MOOD_WINDOW_S": "30",
    "LEPTON_SENTIMENT_MOOD_BUCKET_S": "1",
    "LEPTON_SENTIMENT_ESCALATION_MIN_HOLD_S": "20",
}

#: what a buggy client sends now and then to each pipeline's input: (payload, the dead-letter reason it gets)
BAD_INPUT: dict[str, list[tuple[bytes, str]]] = {
    "fraud": [(b'{"id": "tx-broken", "ts": ', "malformed_json"),
              (b'{"id": "tx-no-card", "ts": 1700000000, "merchant": "m", "amount": 1}', "missing_field")],
    "sentiment": [(b'{"id": "chat-empty", "ts": 1700000000, "channel": "support", "user": "u", "text": " "}',
                   "empty_text")],
    "anomaly": [(b'["not", "an", "object"]', "not_an_object")],
}


def prometheus_hint(port: int) -> str:
    """How to point Prometheus and Grafana at the demo's worker.

    >>> "127.0.0.1:9308" in prometheus_hint(9308)
    True
    """
    return (
        f"Prometheus: a scrape job with target 127.0.0.1:{port}, e.g. in prometheus.yml\n"
        f"  scrape_configs: [{{job_name: lepton-worker, scrape_interval: 5s, "
        f"static_configs: [{{targets: ['127.0.0.1:{port}']}}]}}]\n"
        f"  and rule_files: [deploy/prometheus/rules/lepton.yml] for the alert rules.\n"
        f"Grafana: add that Prometheus as a datasource (uid 'prometheus') and import "
        f"deploy/grafana/dashboards/lepton.json\n"
        f"  (or `docker compose up` runs Kafka, workers, Prometheus and Grafana on :3000 with it provisioned)."
    )


def _spawn(args: list[str], env: dict[str, str], log: IO[bytes]) -> subprocess.Popen:
    # Own session: Ctrl-C reaches the demo only, which then stops the children
    # in order with SIGTERM (the worker commits and leaves its group).
    return subprocess.Popen([sys.executable, "-m", "streams.cli", *args], env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _train_missing(settings: Settings, pipelines: list[str], console: Any, plan: dict[str, Feed]) -> None:
    from models.fraud.features import time_scale
    from models.registry import ModelRegistry
    from models.train import stream_time_scale, train_pipeline

    registry = ModelRegistry(settings.models_dir)
    fraud = plan["fraud"]
    # The demo compresses the fraud world's days into seconds: its model must know (models/train.py).
    options = {"fraud": {"stream_rate": fraud.rate, "stream_label_delay_s": fraud.label_delay_s}}
    for name in pipelines:
        champion = registry.champion(name)
        if champion is None:
            console.print(f"[bold]no {name} model yet: training one on synthetic data[/bold]")
            started = time.monotonic()
            meta = train_pipeline(settings, name, progress=True, **options.get(name, {}))
            console.print(f"{name}: v{meta.version} registered in {time.monotonic() - started:.0f} s")
        elif name == "fraud":
            have, want = time_scale(champion), stream_time_scale(fraud.rate)
            if not 0.5 < have / want < 2.0:
                console.print(f"[yellow]the fraud model v{champion.version} was trained for another pace of traffic "
                              f"(time scale {have:g}, this demo's {want:.0f}): expect poor fraud scores; "
                              f"fix: lepton train fraud --stream-rate {fraud.rate:g} "
                              f"--stream-label-delay-s {fraud.label_delay_s:g}[/yellow]")


class _BrokenClient(threading.Thread):
    """Sends one piece of :data:`BAD_INPUT` to a pipeline's input every ``every_s`` seconds."""

    def __init__(self, settings: Settings, bootstrap: str, pipelines: list[str], every_s: float = 5.0) -> None:
        super().__init__(name="demo-broken-client", daemon=True)
        self.settings, self.bootstrap, self.pipelines, self.every_s = settings, bootstrap, pipelines, every_s
        self.stopped = threading.Event()

    def run(self) -> None:
        from kafka import KafkaProducer

        from connectors.kafka_config import kafka_python_config

        producer = KafkaProducer(**kafka_python_config(self.settings, self.bootstrap), client_id="demo-broken-client")
        try:
            n = 0
            while not self.stopped.wait(self.every_s):
                for p in self.pipelines:
                    payload, _ = BAD_INPUT[p][n % len(BAD_INPUT[p])]
                    producer.send(self.settings.topics.pipeline(p).input, key=b"broken", value=payload)
                n += 1
            producer.flush(10)
        finally:
            producer.close(5)


class _AlertReader(threading.Thread):
    """Feeds the view from the alerts topic, off the refresh loop (a slow fetch must not freeze the view).

    Reads from the start of the topic (the embedded broker's ListOffsets answers are wrong, so
    "latest" is not reliable there) and skips alerts raised before the demo began.
    """

    def __init__(self, settings: Settings, bootstrap: str, view: LiveView, since: float) -> None:
        super().__init__(name="demo-alert-reader", daemon=True)
        self.settings, self.bootstrap, self.view, self.since = settings, bootstrap, view, since
        self.stopped = threading.Event()

    def run(self) -> None:
        from kafka import KafkaConsumer

        from connectors.kafka_config import kafka_python_config

        consumer = KafkaConsumer(self.settings.topics.alerts, **kafka_python_config(self.settings, self.bootstrap),
                                 auto_offset_reset="earliest", enable_auto_commit=False)
        try:
            while not self.stopped.is_set():
                for records in consumer.poll(timeout_ms=500).values():
                    for r in records:
                        try:
                            alert = json.loads(r.value)
                        except ValueError:
                            continue
                        if isinstance(alert, dict) and float(alert.get("ts") or 0) >= self.since:
                            self.view.add_alert(alert)
        finally:
            consumer.close()


def run_demo(settings: Settings, *, duration: float | None, rate: float, chat_rate: float = 100.0,
             sensor_rate: float = 400.0, pipelines: list[str] | None = None) -> None:
    from rich.console import Console
    from rich.live import Live

    from .kafka_session import kafka

    pipelines = pipelines or DEMO_PIPELINES
    plan = feeds(rate, chat_rate, sensor_rate)
    console = Console()
    _train_missing(settings, pipelines, console, plan)
    with kafka(settings) as bootstrap:
        console.print(f"Kafka: {bootstrap} ({'external' if settings.kafka_bootstrap else 'embedded, in memory only'})")
        topics = settings.topics
        env = {**DEMO_WORKER_ENV, **os.environ, "LEPTON_KAFKA_BOOTSTRAP": bootstrap,
               "LEPTON_HOME": str(settings.home), "LEPTON_METRICS_PORT": str(settings.metrics_port)}
        settings.home.mkdir(parents=True, exist_ok=True)
        log_path = settings.home / "demo.log"
        url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
        view = LiveView(url, pipelines, input_topics={p: topics.pipeline(p).input for p in pipelines})
        alerts = _AlertReader(settings, bootstrap, view, since=time.time() - 60)
        broken = _BrokenClient(settings, bootstrap, pipelines)
        procs: list[subprocess.Popen] = []
        previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the children too, like Ctrl-C
        log = open(log_path, "ab")
        try:
            procs.append(_spawn(["worker", "--pipelines", ",".join(pipelines)], env, log))
            for name in pipelines:
                feed = plan[name]
                procs.append(_spawn(["produce", name, "--rate", str(feed.rate), "--count", str(10**12),
                                     "--label-delay-days", f"{feed.label_delay_s / 86_400:.9f}"], env, log))
            broken.start()
            alerts.start()
            console.print(f"metrics: {url}   logs: {log_path}   Ctrl-C stops")
            console.print(prometheus_hint(settings.metrics_port), markup=False, highlight=False)
            deadline = time.monotonic() + duration if duration else None
            interrupted = False
            with Live(view.frame(), console=console, refresh_per_second=2) as live:
                try:
                    while deadline is None or time.monotonic() < deadline:
                        time.sleep(1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic())))
                        live.update(view.frame())
                        dead = [p for p in procs if p.poll() is not None]
                        if dead:
                            console.print(f"[red]a child process stopped (exit {dead[0].returncode}); "
                                          f"see {log_path}[/red]")
                            break
                except KeyboardInterrupt:
                    interrupted = True
                    live.update(view.frame())  # the state at Ctrl-C, while the worker still answers
            if interrupted:
                console.print("stopping…")
        except KeyboardInterrupt:
            console.print("stopping…")
        finally:
            console.print()
            broken.stopped.set()
            alerts.stopped.set()
            _stop(procs)
            for thread in (broken, alerts):
                if thread.is_alive():
                    thread.join(10)
            log.close()
            signal.signal(signal.SIGTERM, previous)

"""Helpers for tests against the real embedded broker: run workers, read topics."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

HARNESS = Path(__file__).with_name("harness_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


@dataclass
class Worker:
    """One worker process (the real CLI through the fault-injection harness)."""

    env: dict[str, str]
    metrics_port: int
    log: Path
    proc: subprocess.Popen | None = None

    def start(self, **extra_env: str) -> "Worker":
        env = {**self.env, **extra_env}
        self.proc = subprocess.Popen([sys.executable, str(HARNESS)], env=env, cwd=ROOT,
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        return self

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def ready(self) -> bool:
        return self.get("/ready")[0] == 200

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Deployment:
    """An isolated Lepton deployment on the shared broker: its own topic prefix and group."""

    bootstrap: str
    home: Path
    prefix: str
    partitions: int = 4
    workers: list[Worker] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "LEPTON_KAFKA_BOOTSTRAP": self.bootstrap,
            "LEPTON_HOME": str(self.home),
            "LEPTON_TOPIC_PREFIX": self.prefix,
            "LEPTON_APP_ID": f"{self.prefix}app",
            "LEPTON_PARTITIONS": str(self.partitions),
            "LEPTON_SESSION_TIMEOUT_S": "6",
            "LEPTON_HEARTBEAT_INTERVAL_S": "1",
            "LEPTON_REBALANCE_TIMEOUT_S": "10",
            "LEPTON_COMMIT_INTERVAL_S": "0.5",
            "LEPTON_LOG_LEVEL": os.environ.get("LEPTON_TEST_WORKER_LOG_LEVEL", "WARNING"),
        }

    def topic(self, name: str) -> str:
        return self.prefix + name

    def worker(self, **extra_env: str) -> Worker:
        port = free_port()
        w = Worker({**self.env, "LEPTON_METRICS_PORT": str(port), **extra_env}, port,
                   self.home / f"worker-{len(self.workers)}.log")
        self.workers.append(w)
        return w

    def logs(self, tail: int = 3000) -> str:
        """The last ``tail`` characters of each worker's log."""
        return "\n".join(f"[{w.log.name}]\n" + w.log.read_text(errors="replace")[-tail:]
                         for w in self.workers if w.log.exists())

    def produce(self, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> dict[int, int]:
        """Send (key, value) records; returns how many landed on each partition."""
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, batch_size=256 * 1024)
        futures = [producer.send(self.topic(topic), key=k, value=v) for k, v in records]
        producer.flush()
        counts: dict[int, int] = {}
        for f in futures:
            md = f.get(10)
            counts[md.partition] = counts.get(md.partition, 0) + 1
        producer.close()
        return counts

    def committed(self, topic: str) -> dict[int, int | None]:
        c = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=f"{self.prefix}app",
                          enable_auto_commit=False)
        try:
            return {p: c.committed(TopicPartition(self.topic(topic), p)) for p in range(self.partitions)}
        finally:
            c.close()


class TopicReader:
    """Reads a topic from the beginning, incrementally, as JSON values."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.consumer.assign(tps)
        for tp in tps:
            self.consumer.seek(tp, 0)
        self.values: list[dict] = []
        self.keys: list[bytes | None] = []

    def poll(self) -> list[dict]:
        for records in self.consumer.poll(timeout_ms=300, max_records=50_000).values():
            for r in records:
                self.values.append(json.loads(r.value))
                self.keys.append(r.key)
        return self.values

    def close(self) -> None:
        self.consumer.close()


_deployments = itertools.count()


@contextlib.contextmanager
def isolated_deployment(broker: str, home: Path, tag: str) -> Iterator[Deployment]:
    """A deployment with its own topic prefix and consumer group (topics created); its workers stop at the end."""
    from connectors.admin import ensure_topics
    from streams.settings import Settings

    prefix = f"d{next(_deployments)}-{tag[:20]}."
    d = Deployment(broker, home, prefix)
    ensure_topics(broker, Settings(topic_prefix=prefix).topics.all(), d.partitions)
    try:
        yield d
    finally:
        for w in d.workers:
            w.stop()


def fraud_probe_scores(home: Path, history: list[dict], probe: dict) -> tuple[float, float]:
    """A probe transaction's fraud probability computed in-process after ``history`` (dicts with
    id, ts, card, merchant, amount), and with no history: what a worker whose card windows hold
    exactly ``history`` must score, and what one that lost them would."""
    from models.registry import ModelRegistry
    from streams.fraud import FEATURES, FraudPipeline
    from streams.model_slot import ModelSlot
    from streams.records import Transaction
    from streams.settings import Settings

    settings = Settings(home=home / "scratch")
    slot = ModelSlot(ModelRegistry(home / "models"), "fraud", features=FEATURES)
    slot.load_now()

    def tx(r: dict) -> Transaction:
        return Transaction(r["id"], float(r["ts"]), r["card"], r["merchant"], float(r["amount"]))

    out = []
    for events in ([tx(r) for r in history], []):
        pipeline = FraudPipeline(slot, settings.topics, settings)
        if events:
            pipeline.process(events, time.time())
        scored = [json.loads(o.value) for o in pipeline.process([tx(probe)], time.time())
                  if o.topic == settings.topics.pipeline("fraud").output]
        out.append(scored[0]["probability"])
    return out[0], out[1]

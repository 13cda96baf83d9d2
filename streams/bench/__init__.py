"""``lepton bench``: the same fraud workload done several ways, in one run.

The input topic is filled once with N synthetic transactions. Each variant
then runs as its own worker process under a fresh consumer group, reading
all N from the start; the variants alternate, ``runs`` times each, and the
medians are reported. Measured per run, from the output topic and the
worker's /proc entry:

* events/s from the first to the last output record (broker timestamps), so
  process start-up and the consumer-group join are excluded;
* CPU seconds per 1,000 events over the same span.

The machine is shared and noisy: the ratio between variants measured in the
same run is the figure to trust, not an absolute number.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..settings import Settings

VARIANTS: dict[str, list[str]] = {
    "lepton": [sys.executable, "-m", "streams.cli", "worker", "--pipelines", "fraud"],
    "faust": [sys.executable, "-m", "streams.bench.plain_faust"],
}


@dataclass
class RunResult:
    variant: str
    run: int
    events: int
    seconds: float
    events_per_s: float
    cpu_s_per_1k: float


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _prefill(settings: Settings, bootstrap: str, n: int) -> None:
    from connectors.generators import make_generator
    from connectors.producer import produce

    gen = make_generator("fraud", seed=42, rate_per_s=10_000.0)
    now = time.time()
    events = ({**event, "ts": now} for event, _ in gen)  # fresh event times: latency is meaningful
    produce(settings, bootstrap, "fraud", events, rate=None, count=n, progress=True)




def _run_variant(settings: Settings, bootstrap: str, variant: str, run: int, expected: int,
                 timeout_s: float) -> RunResult:
    from kafka import KafkaConsumer, TopicPartition

    from connectors.admin import topic_offsets

    out_topic = settings.topics.pipeline("fraud").output
    start = topic_offsets(bootstrap, [out_topic], settings=settings)[out_topic]
    env = dict(
        os.environ,
        LEPTON_KAFKA_BOOTSTRAP=bootstrap,
        LEPTON_APP_ID=f"bench-{variant}-{run}-{int(time.time())}",
        LEPTON_METRICS_PORT=str(_free_port()),
        LEPTON_HOME=str(settings.home),
        LEPTON_PARTITIONS=str(settings.partitions),
        LEPTON_LOG_LEVEL="WARNING",
    )
    proc = subprocess.Popen(VARIANTS[variant], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_bytes=32 << 20)
    tps = [TopicPartition(out_topic, p) for p in start]
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, start[tp.partition])
    seen = 0
    first_ts = last_ts = None
    cpu_first = cpu_last = 0.0
    deadline = time.monotonic() + timeout_s
    try:
        while seen < expected:
            if time.monotonic() > deadline or proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.poll() is not None else ""
                raise RuntimeError(f"{variant}: {seen}/{expected} outputs before giving up. {err}")
            for records in consumer.poll(timeout_ms=500, max_records=100_000).values():
                if first_ts is None and records:
                    first_ts = records[0].timestamp / 1000.0
                    cpu_first = _cpu_seconds(proc.pid)
                seen += len(records)
                for r in records:
                    last_ts = max(last_ts or 0.0, r.timestamp / 1000.0)
        cpu_last = _cpu_seconds(proc.pid)
    finally:
        consumer.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    span = max(1e-6, (last_ts or 0.0) - (first_ts or 0.0))
    return RunResult(variant, run, seen, span, seen / span, (cpu_last - cpu_first) / seen * 1000.0)


def run_bench(settings: Settings, *, events: int, runs: int, variants: list[str],
              json_out: Path | None = None, timeout_s: float = 600.0) -> dict[str, Any]:
    """Run the benchmark; print a table; return (and optionally write) the result."""
    from models.registry import ModelRegistry
    from models.train import train_pipeline

    from ..kafka_session import kafka

    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variant(s) {sorted(unknown)}; available: {sorted(VARIANTS)}")
    if ModelRegistry(settings.models_dir).champion("fraud") is None:
        train_pipeline(settings, "fraud", progress=True)
    results: list[RunResult] = []
    with kafka(settings) as bootstrap:
        _prefill(settings, bootstrap, events)
        for run in range(runs):
            for variant in variants:
                r = _run_variant(settings, bootstrap, variant, run, events, timeout_s)
                print(f"  run {run + 1}/{runs} {variant:<8} {r.events_per_s:>10,.0f} events/s  "
                      f"{r.cpu_s_per_1k:6.3f} CPU s/1k events", flush=True)
                results.append(r)
    summary: dict[str, Any] = {"events": events, "runs": runs, "machine": _machine(), "variants": {}}
    for variant in variants:
        mine = [r for r in results if r.variant == variant]
        summary["variants"][variant] = {
            "events_per_s": statistics.median(r.events_per_s for r in mine),
            "cpu_s_per_1k": statistics.median(r.cpu_s_per_1k for r in mine),
            "runs": [asdict(r) for r in mine],
        }
    if "lepton" in summary["variants"]:
        base = summary["variants"]["lepton"]["events_per_s"]
        for other in variants:
            if other != "lepton":
                summary[f"ratio_vs_{other}"] = base / summary["variants"][other]["events_per_s"]
    _print_table(summary)
    if json_out is not None:
        json_out.write_text(json.dumps(summary, indent=2))
    return summary


def _machine() -> str:
    return f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {os.uname().machine}"


def _print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fraud scoring, {summary['events']:,} events, median of {summary['runs']} runs")
    for col in ("variant", "events/s", "CPU s / 1k events"):
        table.add_column(col, justify="right")
    for name, v in summary["variants"].items():
        table.add_row(name, f"{v['events_per_s']:,.0f}", f"{v['cpu_s_per_1k']:.3f}")
    Console().print(table)
    for key, value in summary.items():
        if key.startswith("ratio_vs_"):
            print(f"{key}: {value:.1f}x")

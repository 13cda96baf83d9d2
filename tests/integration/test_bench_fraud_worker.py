"""Smoke test of the whole-worker fraud benchmark with labels on the session's real broker.

Small N, one run: every transaction is scored, every label is joined (none missing),
and the figures are positive and consistent with each other. The figures themselves
come from the full run (README, "Fraud pipeline", Throughput).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from streams.bench.fraud_worker import run_bench
from streams.settings import Settings

pytestmark = pytest.mark.integration


def test_worker_bench_scores_every_transaction_and_joins_every_label(broker: str, fraud_model_home: Path) -> None:
    settings = Settings(home=fraud_model_home, kafka_bootstrap=broker, topic_prefix=f"tbenchw{int(time.time())}.",
                        session_timeout_s=4.0, heartbeat_interval_s=1.0)

    result = run_bench(settings, None, rows=3000, label_delay_days=0.1, runs=1, echo=lambda msg: None)

    assert result["transactions"] == 3000 and result["labels_sent"] == 3000
    run = result["runs"][0]
    assert run["labels_joined"] == 3000 and run["labels_missing"] == 0
    for key in ("seconds", "transactions_per_s", "cpu_s_per_1k", "transactions_per_cpu_s", "startup_s"):
        assert math.isfinite(run[key]) and run[key] > 0, (key, run[key])
    assert run["transactions_per_s"] == pytest.approx(3000 / run["seconds"])
    assert run["transactions_per_cpu_s"] == pytest.approx(1000 / run["cpu_s_per_1k"])


def test_worker_bench_against_a_baseline_tree_runs_pairs(broker: str, fraud_model_home: Path) -> None:
    from streams.bench import ROOT

    settings = Settings(home=fraud_model_home, kafka_bootstrap=broker, topic_prefix=f"tbenchb{int(time.time())}.",
                        session_timeout_s=4.0, heartbeat_interval_s=1.0)
    said: list[str] = []

    result = run_bench(settings, None, rows=1000, label_delay_days=0.1, runs=1, echo=said.append, baseline=ROOT)

    base = result["baseline"]
    assert base["code"] == str(ROOT) and len(base["runs"]) == len(result["runs"]) == 1
    assert base["runs"][0]["labels_joined"] == result["runs"][0]["labels_joined"] == 1000
    assert base["speedup_rate"] == pytest.approx(result["transactions_per_s"] / base["transactions_per_s"])
    assert base["speedup_cpu"] == pytest.approx(base["cpu_s_per_1k"] / result["cpu_s_per_1k"])
    assert base["pair_rate_ratios"] == [pytest.approx(base["speedup_rate"])]
    assert any("(baseline)" in line for line in said) and any(line.startswith("against ") for line in said)
    logs = (fraud_model_home / "bench").glob(f"{settings.topic_prefix}benchw*/fraud-worker-run0*.log")
    assert sorted(p.name for p in logs) == ["fraud-worker-run0-baseline.log", "fraud-worker-run0.log"]

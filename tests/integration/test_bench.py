"""Smoke test of ``lepton bench`` on the session's real broker: a small N, one run.

It checks only that the harness produces a well-formed result (JSON keys,
positive numbers, a PNG): the figures themselves come from the full run
(README). Quix Streams takes part when it is installed (the ``bench`` extra, or
``LEPTON_BENCH_QUIX_PYTHON``); otherwise the result must say why it was skipped.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from streams.bench import quix_interpreter, run_bench
from streams.settings import Settings

pytestmark = pytest.mark.integration


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bench_produces_a_well_formed_result(broker: str, fraud_model_home: Path, tmp_path: Path) -> None:
    # A short session timeout shortens each worker's first join on Tansu (about half of it): the
    # smoke test starts four or five workers. It has no effect on the figures.
    settings = Settings(home=fraud_model_home, kafka_bootstrap=broker, topic_prefix=f"tbench{int(time.time())}.",
                        session_timeout_s=4.0, heartbeat_interval_s=1.0)
    quix_ok = quix_interpreter()[0] is not None
    json_out, png_out = tmp_path / "bench.json", tmp_path / "bench.png"

    summary = run_bench(settings, events=2000, runs=1, pipelines=["fraud"], json_out=json_out, plot_out=png_out,
                        latency_seconds=2.0, latency_variants=["lepton", "faust"],  # < 90 s with Quix too
                        echo=lambda msg: None, progress=False)

    written = json.loads(json_out.read_text())
    assert written["ratio_vs_faust"] == pytest.approx(summary["ratio_vs_faust"])
    assert {"ratio_vs_faust", "ratio_vs_quix", "variants", "latency", "targets", "machine", "skipped"} <= set(written)
    expected = {"lepton", "faust"} | ({"quix"} if quix_ok else set())
    assert set(written["variants"]) == expected
    for name, v in written["variants"].items():
        keys = ["events_per_s", "cpu_s_per_1k"]
        if name != "quix":
            keys += ["latency_p50_ms", "latency_p99_ms", "latency_rate_per_s"]
        for key in keys:
            assert _positive(v[key]), (name, key, v[key])
        assert v["runs"] and v["runs"][0]["events"] >= 2000
    assert _positive(written["ratio_vs_faust"])
    if quix_ok:
        assert _positive(written["ratio_vs_quix"])
    else:
        assert written["ratio_vs_quix"] is None and "quixstreams" in written["skipped"]["quix"]
    lepton = written["variants"]["lepton"]
    assert _positive(lepton["latency_at_half_max_p99_ms"])
    assert {lr["basis"] for lr in written["latency"] if lr["variant"] != "floor"} == {
        "50% of the slowest variant's max", "50% of Lepton's max"}
    for lr in written["latency"]:  # the context that says whether the machine let the rate stay below saturation
        assert lr["variant"] == "floor" or _positive(lr["worker_cpu_cores"])
        assert {"loadavg_start", "backlog_growth_ms"} <= set(lr)
    assert _positive(written["latency_floor"]["p99_ms"])  # the broker and client alone, same rate
    assert {"start", "end"} == set(written["loadavg"])
    assert set(written["targets"]) >= {"events_per_s_ratio_vs_faust", "latency_p99_ms_at_half_lepton_max"}
    assert png_out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_paced_load_stamps_each_event_with_its_due_time(broker: str) -> None:
    """Latency counts from when an event was due, so waiting for its tick's send is never hidden."""
    import asyncio

    from kafka import KafkaConsumer, TopicPartition

    from connectors.admin import ensure_topics
    from streams.bench.load import _paced, latency_id_time

    topic = f"paced-{time.time_ns()}"
    ensure_topics(broker, [topic], 2, settings=Settings(kafka_bootstrap=broker))
    rate = 400.0
    sent = asyncio.run(_paced(broker, topic, "fraud", rate=rate, seconds=1.0, tick_s=0.05))
    assert sent["sent"] == 400

    consumer = KafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False, consumer_timeout_ms=3000)
    consumer.assign([TopicPartition(topic, p) for p in (0, 1)])
    consumer.seek_to_beginning()
    seen = {}
    for record in consumer:
        event = json.loads(record.value)
        seq = int(event["id"].split("-")[1])
        due = latency_id_time(event["id"])
        seen[seq] = due
        assert event["ts"] == pytest.approx(due, abs=1e-6)
        assert record.timestamp / 1000.0 >= due - 0.002  # sent at or after it was due, never before
        if len(seen) == sent["sent"]:
            break
    consumer.close()
    assert sorted(seen) == list(range(400))
    # The schedule, not the tick: event k was due k/rate after the start, even though
    # 20 of them left together in each 50 ms tick.
    for seq, due in seen.items():
        assert due == pytest.approx(sent["started"] + seq / rate, abs=1e-5)

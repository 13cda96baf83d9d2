"""How ``lepton bench`` turns runs into its result: medians, ratios, targets, other pipelines, skips.

No broker and no timing: synthetic run results go in, the JSON-ready summary comes out.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.bench import LatencyResult, RunResult, _available_pipelines, _summarize
from streams.settings import Settings


def _run(pipeline: str, variant: str, run: int, eps: float, cpu: float = 0.02) -> RunResult:
    return RunResult(pipeline, variant, run, 1000, 1000 / eps, eps, cpu, 5.0)


def _lat(variant: str, basis: str, p50: float, p99: float, rate: float = 100.0) -> LatencyResult:
    return LatencyResult(variant, basis, rate, rate, 500, p50, p99, p99 * 1.1)


SLOWEST, HALF = "50% of the slowest variant's max", "50% of Lepton's max"


def test_medians_ratios_and_targets(tmp_path: Path) -> None:
    workloads = [("fraud", "lepton"), ("fraud", "faust"), ("fraud", "quix"), ("anomaly", "lepton")]
    results = [
        _run("fraud", "lepton", 0, 20_000), _run("fraud", "lepton", 1, 5_000), _run("fraud", "lepton", 2, 30_000),
        _run("fraud", "faust", 0, 1_000), _run("fraud", "faust", 1, 800), _run("fraud", "faust", 2, 1_200),
        _run("fraud", "quix", 0, 4_000), _run("fraud", "quix", 1, 6_000), _run("fraud", "quix", 2, 5_000),
        _run("anomaly", "lepton", 0, 40_000, 0.01),
    ]
    latencies = [
        _lat("lepton", SLOWEST, 20, 90), _lat("lepton", HALF, 50, 400), _lat("lepton", SLOWEST, 25, 60),
        _lat("lepton", HALF, 40, 200), _lat("lepton", SLOWEST, 30, 70), _lat("lepton", HALF, 45, 240),
        _lat("faust", SLOWEST, 10, 30),
    ]
    summary = _summarize(Settings(home=tmp_path), 1000, 3, workloads, results, latencies, {"sentiment": "why"})

    lepton, faust = summary["variants"]["lepton"], summary["variants"]["faust"]
    assert lepton["events_per_s"] == 20_000 and faust["events_per_s"] == 1_000
    assert summary["ratio_vs_faust"] == pytest.approx(20.0)
    assert summary["ratio_vs_quix"] == pytest.approx(4.0)
    # latency: the median of the repeated segments, per basis
    assert (lepton["latency_p50_ms"], lepton["latency_p99_ms"]) == (25, 70)
    assert (lepton["latency_at_half_max_p50_ms"], lepton["latency_at_half_max_p99_ms"]) == (45, 240)
    assert faust["latency_p99_ms"] == 30 and "latency_p99_ms" not in summary["variants"]["quix"]
    targets = summary["targets"]
    assert targets["events_per_s_ratio_vs_faust"]["met"] is True
    assert targets["events_per_s_ratio_vs_quix"]["met"] is True
    assert targets["latency_p99_ms_at_half_lepton_max"] == {"target": 250.0, "measured": 240, "met": True}
    # the other pipelines are Lepton-only rows, outside the fraud ratios
    assert set(summary["pipelines"]) == {"anomaly"}
    assert summary["pipelines"]["anomaly"]["events_per_s"] == 40_000
    assert summary["skipped"] == {"sentiment": "why"}
    assert len(summary["latency"]) == len(latencies)
    json.dumps(summary)  # JSON-ready as is


def test_missed_targets_and_a_lone_variant(tmp_path: Path) -> None:
    results = [_run("fraud", "lepton", 0, 10_000), _run("fraud", "faust", 0, 2_000)]
    summary = _summarize(Settings(home=tmp_path), 1000, 1, [("fraud", "lepton"), ("fraud", "faust")], results,
                         [_lat("lepton", HALF, 300, 900)], {})
    assert summary["ratio_vs_faust"] == pytest.approx(5.0) and summary["ratio_vs_quix"] is None
    assert summary["targets"]["events_per_s_ratio_vs_faust"]["met"] is False
    assert summary["targets"]["latency_p99_ms_at_half_lepton_max"]["met"] is False
    assert "events_per_s_ratio_vs_quix" not in summary["targets"]


def test_unknown_pipelines_are_skipped_with_a_reason() -> None:
    chosen, skipped = _available_pipelines(["fraud", "anomaly", "weather"])
    assert chosen == ["fraud", "anomaly"]
    assert set(skipped) == {"weather"} and "PIPELINE_FACTORIES" in skipped["weather"]

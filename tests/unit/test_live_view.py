"""The demo's live view: what it shows from a worker's /metrics and the alerts topic.

The view is fed Prometheus text as a worker serves it (two scrapes, a fake
clock), and rendered to plain text the way a terminal would show it.
"""

from __future__ import annotations

import pytest
from rich.console import Console

from streams.demo import BAD_INPUT, DEMO_PIPELINES, feeds, prometheus_hint
from streams.live_view import LiveView, parse
from streams.records import InvalidRecord, LIMITS, parse_chat_message, parse_sensor_frame, parse_transaction


def exposition(consumed: dict[str, float], latencies: int, slow: int = 1000) -> str:
    """A worker's /metrics after ``consumed`` events and ``latencies`` latency observations (50 % ≤ 0.1 s,
    99 % ≤ 0.5 s), after ``slow`` ones over 2.5 s (a worker that joined late)."""
    k = latencies / 100
    lines = []
    for p, n in consumed.items():
        lines += [
            f'lepton_events_consumed_total{{pipeline="{p}"}} {n}',
            f'lepton_events_processed_total{{pipeline="{p}"}} {n - 3}',
            f'lepton_dead_letters_total{{pipeline="{p}",reason="malformed_json"}} 3',
            f'lepton_alerts_total{{pipeline="{p}",severity="warning"}} 7',
            f'lepton_model_version_info{{pipeline="{p}",model_version="2",role="champion"}} 1',
            f'lepton_model_version_info{{pipeline="{p}",model_version="1",role="champion"}} 0',
            f'lepton_end_to_end_latency_seconds_bucket{{pipeline="{p}",le="0.1"}} {50 * k}',
            f'lepton_end_to_end_latency_seconds_bucket{{pipeline="{p}",le="0.5"}} {99 * k}',
            f'lepton_end_to_end_latency_seconds_bucket{{pipeline="{p}",le="2.5"}} {100 * k}',
            f'lepton_end_to_end_latency_seconds_bucket{{pipeline="{p}",le="+Inf"}} {100 * k + slow}',
        ]
    lines += [
        'lepton_consumer_lag_messages{topic="transactions",partition="0"} 40',
        'lepton_consumer_lag_messages{topic="transactions",partition="1"} 2',
        'lepton_consumer_lag_seconds{topic="transactions"} 1.5',
        'lepton_prequential_quality{pipeline="fraud",learner="online",metric="roc_auc"} 0.93',
        'lepton_prequential_quality{pipeline="fraud",learner="online",metric="labels"} 5000',
        'lepton_drift_events_total{pipeline="fraud",signal="error"} 2',
        'lepton_model_agreement_ratio{pipeline="sentiment",model="challenger"} 0.875',
        'lepton_alert_precision{pipeline="anomaly"} 0.5',
    ]
    return "\n".join(lines) + "\n"


def render(view: LiveView) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(view.frame())
    return console.export_text()


def row(text: str, pipeline: str, table: int = 0) -> list[str]:
    """The cells of ``pipeline``'s first line in the ``table``-th table (0: main, 1: learning)."""
    lines = [line for line in text.splitlines() if line.startswith(f"│ {pipeline} ")]
    assert len(lines) == 2, lines
    return [cell.strip() for cell in lines[table].strip("│").split("│")]


@pytest.fixture
def view():
    # Before the first scrape, 1000 events waited over 2.5 s: the view shows the latency of
    # the observations between its two scrapes only.
    scrapes = iter([exposition({"fraud": 1000, "sentiment": 100, "anomaly": 400}, 0),
                    exposition({"fraud": 3000, "sentiment": 300, "anomaly": 1200}, 200)])
    times = iter([10.0, 12.0])
    return LiveView("http://worker/metrics", DEMO_PIPELINES, input_topics={"fraud": "transactions"},
                    fetch=lambda url: parse(next(scrapes)), clock=lambda: next(times))


def test_a_row_per_pipeline_with_rates_from_two_scrapes(view):
    render(view)
    text = render(view)
    fraud = row(text, "fraud")
    assert fraud == ["fraud", "1,000", "2,997", "3", "≤100ms / ≤500ms", "42 / 1.5", "v2", "7"]
    assert row(text, "fraud", 1) == ["fraud", "2", "online roc_auc 0.93"]  # drift events, quality
    assert "5000" not in text  # a count is not a quality
    assert row(text, "sentiment")[1] == "100"
    assert row(text, "anomaly")[1] == "400"
    assert row(text, "anomaly")[5] == "-"  # no input topic given for it
    assert "challenger agrees 88%" in text
    assert "alert precision 50%" in text


def test_recent_alerts_are_kept_per_pipeline_newest_first(view):
    for i in range(5):
        view.add_alert({"pipeline": "fraud", "severity": "critical", "ts": 60.0 * i, "subject": f"card-{i}",
                        "reason": f"probability [0.9{i}]"})
    view.add_alert({"pipeline": "anomaly", "severity": "warning", "ts": 0, "subject": "pump-1", "reason": "pump-1: hot"})
    text = render(view)
    assert "card-4" in text and "card-2" in text and "card-1" not in text  # three per pipeline
    assert text.index("card-4") < text.index("card-3")
    assert "probability [0.94]" in text  # markup-like text is shown as is
    assert "00:00:00 warning pump-1: hot" in text
    assert "(none yet)" in text  # sentiment


def test_a_worker_not_answering_yet_is_shown_as_waiting():
    def refuse(url: str):
        raise ConnectionRefusedError(url)

    view = LiveView("http://127.0.0.1:1/metrics", DEMO_PIPELINES, fetch=refuse)
    assert "waiting for the worker at http://127.0.0.1:1/metrics" in render(view)


PARSERS = {"fraud": parse_transaction, "sentiment": parse_chat_message, "anomaly": parse_sensor_frame}


@pytest.mark.parametrize("pipeline", DEMO_PIPELINES)
def test_the_demo_broken_client_sends_dead_letters(pipeline):
    assert BAD_INPUT[pipeline]
    for payload, reason in BAD_INPUT[pipeline]:
        with pytest.raises(InvalidRecord) as err:
            PARSERS[pipeline](payload, LIMITS)
        assert err.value.reason == reason


def test_the_demo_feeds_every_pipeline_with_delayed_labels():
    plan = feeds(500, 100, 400)
    assert sorted(plan) == sorted(DEMO_PIPELINES)
    assert plan["fraud"].rate == 500 and plan["fraud"].label_delay_s > 0
    assert "127.0.0.1:9400" in prometheus_hint(9400)

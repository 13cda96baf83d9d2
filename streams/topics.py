"""The topics Lepton reads and writes, fixed by the product spec.

>>> PIPELINES["fraud"].input
'transactions'
>>> sorted(all_topics())[:3]
['alerts', 'anomaly-scores', 'chat-messages']
"""

from __future__ import annotations

from dataclasses import dataclass

ALERTS = "alerts"
DEAD_LETTERS = "dead-letters"
MODEL_UPDATES = "model-updates"
SHARED = (ALERTS, DEAD_LETTERS, MODEL_UPDATES)


@dataclass(frozen=True)
class PipelineTopics:
    """Where one pipeline's events come in, go out, and get their labels."""

    input: str
    output: str
    feedback: str


PIPELINES: dict[str, PipelineTopics] = {
    "fraud": PipelineTopics("transactions", "fraud-scores", "fraud-labels"),
    "sentiment": PipelineTopics("chat-messages", "sentiment-scores", "sentiment-labels"),
    "anomaly": PipelineTopics("sensor-frames", "anomaly-scores", "maintenance-labels"),
}


def all_topics() -> list[str]:
    """Every topic Lepton creates on the embedded broker."""
    names = [t for p in PIPELINES.values() for t in (p.input, p.output, p.feedback)]
    return names + list(SHARED)

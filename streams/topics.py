"""The topics Lepton reads and writes, fixed by the product spec.

Names may carry a prefix (``LEPTON_TOPIC_PREFIX``), so that several
deployments, or test runs, share one Kafka cluster without seeing each
other's events.

>>> PIPELINES["fraud"].input
'transactions'
>>> t = Topics("staging.")
>>> t.pipeline("fraud").output, t.dead_letters
('staging.fraud-scores', 'staging.dead-letters')
>>> len(t.all())
12
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


@dataclass(frozen=True)
class Topics:
    """Lepton's topic names under one prefix."""

    prefix: str = ""

    def pipeline(self, name: str) -> PipelineTopics:
        t = PIPELINES[name]
        p = self.prefix
        return PipelineTopics(p + t.input, p + t.output, p + t.feedback)

    @property
    def alerts(self) -> str:
        return self.prefix + ALERTS

    @property
    def dead_letters(self) -> str:
        return self.prefix + DEAD_LETTERS

    @property
    def model_updates(self) -> str:
        return self.prefix + MODEL_UPDATES

    def all(self) -> list[str]:
        """Every topic Lepton creates."""
        names = [n for p in PIPELINES for n in vars(self.pipeline(p)).values()]
        return names + [self.prefix + s for s in SHARED]


def all_topics(prefix: str = "") -> list[str]:
    """Every topic Lepton creates (under ``prefix``)."""
    return Topics(prefix).all()

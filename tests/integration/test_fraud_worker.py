"""The fraud worker end to end on the real broker: scores, labels joined and learnt, restart keeps state.

Transactions and delayed labels go through the real producer (keyed by card,
so a card's transactions, its labels and its state share a partition); a real
worker scores them, joins labels to the logged records, updates the online
model; after a SIGTERM and a restart the online model and the card windows
(recovered from the table changelog) are still there.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import orjson
import pytest

from connectors.admin import ensure_topics
from connectors.generators import TransactionGenerator
from connectors.producer import produce
from streams.settings import Settings
from support import Deployment, TopicReader, fraud_probe_scores, wait_for

pytestmark = pytest.mark.integration

N = 3000


def metric(body: str, name: str, **labels: str) -> float:
    """A sample's value from Prometheus text (labels in any order); NaN when absent."""
    for m in re.finditer(rf"^{name}{{([^}}]*)}} (\S+)$", body, re.M):
        if dict(re.findall(r'(\w+)="([^"]*)"', m.group(1))) == labels:
            return float(m.group(2))
    return float("nan")


@pytest.fixture
def fraud_deployment(broker: str, fraud_model_home: Path, tmp_path: Path):
    """A deployment with its own home (a copy of the session's model): its checkpoints are its own."""
    home = tmp_path / "home"
    shutil.copytree(fraud_model_home / "models", home / "models")
    prefix = f"tfw{int(time.time() * 1000) % 10**8}."
    d = Deployment(broker, home, prefix)
    ensure_topics(broker, Settings(topic_prefix=prefix).topics.all(), d.partitions)
    yield d
    for w in d.workers:
        w.stop()


def test_scores_labels_online_learning_and_restart(fraud_deployment: Deployment) -> None:
    d = fraud_deployment
    settings = Settings(home=d.home, topic_prefix=d.prefix, partitions=d.partitions)
    start = time.time() - 2 * 86_400
    frame = TransactionGenerator(seed=7, start_ts=start).batch(N)
    # The probe (sent after the restart) pays with a busy card that has no fraud label, at a new
    # terminal: its features depend on the card's windows only.
    frauds = set(frame.loc[frame["label"].astype(bool), "card"])
    probe_card = frame.loc[~frame["card"].isin(frauds), "card"].value_counts().index[0]
    events = frame.drop(columns=["label"]).to_dict("records")
    produce(settings, d.bootstrap, "fraud", iter(events), labels=frame["label"].tolist(), label_delay_s=1800.0,
            progress=False)

    worker = d.worker(LEPTON_FRAUD_STATE_TABLES="true").start()
    scores = TopicReader(d.bootstrap, d.topic("fraud-scores"), d.partitions)
    try:
        wait_for(lambda: len({v["id"] for v in scores.poll()}) >= N, 120, f"{N} distinct scores")
        assert {v["id"] for v in scores.values} == set(frame["id"])
        one = scores.values[0]
        assert {"id", "card", "probability", "model_version", "online_score", "online_updates", "decision",
                "latency_ms"} <= set(one)

        def labels_seen() -> float:
            body = worker.get("/metrics")[1]
            value = metric(body, "lepton_prequential_quality", pipeline="fraud", learner="champion", metric="labels")
            return value if value == value and value >= N else 0.0

        try:
            wait_for(labels_seen, 60, "every label joined (champion prequential label count)")
        except AssertionError:
            body = worker.get("/metrics")[1]
            raise AssertionError("labels not all joined: " + " | ".join(
                line for line in body.splitlines() if "labels" in line and not line.startswith("#"))) from None
        body = worker.get("/metrics")[1]
        assert metric(body, "lepton_labels_total", pipeline="fraud", outcome="joined") == N
        updates = metric(body, "lepton_online_updates_total", pipeline="fraud")
        assert updates > 0, "the online model learnt from the labels"
        assert metric(body, "lepton_prequential_quality", pipeline="fraud", learner="online", metric="labels") >= N
        wait_for(lambda: d.committed("fraud-labels") and all(v for v in d.committed("fraud-labels").values()
                                                            if v is not None), 30, "label offsets committed")
        assert worker.stop() == 0, d.logs()
        checkpoint = d.home / "state" / "fraud" / "online.pkl"
        assert checkpoint.is_file(), "the online model is checkpointed at shutdown"
        from models.fraud.online import OnlineFraudModel

        saved = OnlineFraudModel.load(checkpoint)
        assert saved.quality.labels >= N and saved.updates >= updates

        # Restart: the online model comes back from its checkpoint, the card windows from the changelog.
        assert (frame["card"] == probe_card).sum() >= 2
        probe = {"id": "probe", "card": probe_card, "merchant": "term-probe", "amount": 42.0,
                 "ts": float(frame["ts"].max()) + 60.0}
        restarted = d.worker(LEPTON_FRAUD_STATE_TABLES="true").start()
        produce(settings, d.bootstrap, "fraud", iter([probe]), progress=False)
        got = wait_for(lambda: [v for v in scores.poll() if v["id"] == "probe"], 90, "the probe's score")[0]
        assert got["online_updates"] == saved.updates, "the restarted worker kept the online model"

        history = frame[frame["card"] == probe_card].to_dict("records")
        expected_with, expected_without = fraud_probe_scores(d.home, history, probe)
        assert abs(got["probability"] - expected_with) < 1e-4, (got, expected_with, expected_without)
        assert abs(expected_with - expected_without) > 1e-3, "the probe must depend on the card's history"
        assert restarted.ready()
    finally:
        scores.close()



def test_labels_ahead_of_their_transactions_are_held_without_stalling_the_worker(
        fraud_deployment: Deployment) -> None:
    """A backlog whose labels come before their transactions (both topics full when the worker starts).

    Batches of 10 make 300 label batches, far more than a stream queue holds (64): a label agent
    that waited for the transactions inside its loop filled its queue, blocked the fetch loop that
    would bring them, and let each batch time out (30 s) with its labels counted missing.
    """
    d = fraud_deployment
    settings = Settings(home=d.home, topic_prefix=d.prefix, partitions=d.partitions)
    frame = TransactionGenerator(seed=11, start_ts=time.time() - 2 * 86_400).batch(N)
    labels = [(card.encode(), orjson.dumps({"id": i, "is_fraud": bool(y)}))
              for i, card, y in zip(frame["id"], frame["card"], frame["label"])]
    d.produce("fraud-labels", labels)
    produce(settings, d.bootstrap, "fraud", iter(frame.drop(columns=["label"]).to_dict("records")), progress=False)

    worker = d.worker(LEPTON_MAX_BATCH="10", LEPTON_FRAUD_LABEL_BATCH="10", LEPTON_FRAUD_LABEL_WAIT_S="30").start()
    scores = TopicReader(d.bootstrap, d.topic("fraud-scores"), d.partitions)
    try:
        wait_for(lambda: len({v["id"] for v in scores.poll()}) >= N, 120, f"{N} distinct scores")

        def joined() -> bool:
            body = worker.get("/metrics")[1]
            return metric(body, "lepton_labels_total", pipeline="fraud", outcome="joined") >= N

        wait_for(joined, 60, "every label joined", every=0.5)
        body = worker.get("/metrics")[1]
        assert metric(body, "lepton_labels_total", pipeline="fraud", outcome="missing") == 0
        wait_for(lambda: all(v for v in d.committed("fraud-labels").values()), 30, "label offsets committed")
    finally:
        scores.close()

"""The sentiment pipeline in a real worker process on the real broker (sentiment only).

Chat messages keyed by channel (as ``lepton produce`` sends them), a timeline in
event time: calm channels, then one channel ("vip") turns angry for 90 seconds
and calms down again. Checked: one score per message; exactly one escalation
for "vip" (raised once, cleared once: no flapping), naming it and quoting its
messages, none for the calm channels; corrections on ``sentiment-labels`` move
the prequential gauges; and after a restart the worker still knows the
channel baselines, the kept texts and its online model.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from connectors.generators import ChatGenerator
from streams.settings import Settings

from support import Deployment, TopicReader, wait_for, isolated_deployment

pytestmark = pytest.mark.integration

LABELS = ("negative", "neutral", "positive")
CALM = ("neutral", "positive", "negative", "neutral", "positive")  # 20 % negative
ANGRY = ("negative", "negative", "negative", "negative", "neutral")  # 80 % negative
MOOD_ENV = {  # a one-minute window, so the test's timeline is short
    "LEPTON_PIPELINES": '["sentiment"]',
    "LEPTON_SENTIMENT_MOOD_WINDOW_S": "60",
    "LEPTON_SENTIMENT_MOOD_BUCKET_S": "5",
    "LEPTON_SENTIMENT_WARMUP_MESSAGES": "100",
    "LEPTON_SENTIMENT_BASELINE_MESSAGES": "200",
    "LEPTON_SENTIMENT_ESCALATION_MIN_HOLD_S": "30",
    "LEPTON_SENTIMENT_CHECKPOINT_S": "1",
    "LEPTON_MAX_WAIT_MS": "50",
}


@pytest.fixture(scope="module")
def sentiment_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Lepton home with a small fast sentiment model (synthetic chat, seconds to train)."""
    from models.sentiment.data import labels_to_ids
    from models.sentiment.fast import FastConfig, train_fast
    from models.sentiment.train import register_model

    frame = ChatGenerator(seed=3, start_ts=1_700_000_000.0).batch(4000)
    encoder, net = train_fast(frame["text"].tolist(), labels_to_ids(frame["label"]),
                              FastConfig(dim=16, n_bigrams=1 << 12, epochs=3, min_count=1))
    home = tmp_path_factory.mktemp("sentiment-home")
    register_model(Settings(home=home), "fast", encoder, net, metrics={}, training={"source": "synthetic"})
    return home


@pytest.fixture
def deployment(broker: str, sentiment_home: Path, tmp_path: Path, request: pytest.FixtureRequest):
    """An isolated deployment (own prefix, group, and home: the model is copied, state starts empty)."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(sentiment_home, home)
    with isolated_deployment(broker, home, f"s-{request.node.name}") as d:
        yield d


class Chat:
    """Messages on a timeline (event time, an hour ago), with texts of a chosen label."""

    def __init__(self) -> None:
        pool = ChatGenerator(seed=21, start_ts=1_700_000_000.0).batch(6000)
        self.texts = {k: pool.loc[pool["label"] == k, "text"].tolist() for k in LABELS}
        self.t = time.time() - 3600.0
        self.n = 0
        self.sent: list[dict] = []
        self.truth: dict[str, str] = {}

    def run(self, seconds: int, moods: dict[str, tuple[tuple[str, ...], int]]) -> list[dict]:
        """``moods``: channel -> (label cycle, messages per second)."""
        out = []
        for _ in range(seconds):
            for channel, (mix, per_s) in moods.items():
                for k in range(per_s):
                    label = mix[self.n % len(mix)]
                    text = self.texts[label][self.n % len(self.texts[label])]
                    msg = {"id": f"m{self.n}", "ts": round(self.t + k / per_s, 3), "channel": channel,
                           "user": f"u{self.n % 97}", "text": text}
                    self.truth[msg["id"]] = label
                    self.n += 1
                    out.append(msg)
            self.t += 1.0
        self.sent += out
        return out


def send(d: Deployment, messages: list[dict]) -> None:
    d.produce("chat-messages", [(m["channel"].encode(), json.dumps(m).encode()) for m in messages])


def correct(d: Deployment, chat: Chat, messages: list[dict]) -> None:
    d.produce("sentiment-labels", [(m["channel"].encode(), json.dumps({"id": m["id"], "label": chat.truth[m["id"]]}).encode())
                                   for m in messages])


def metric(worker, name: str, **labels: str) -> float | None:
    """A sample of the worker's /metrics (None when absent)."""
    _, text = worker.get("/metrics")
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)\{(.*)\} (\S+)$", line)
        if m and m.group(1) == name:
            got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            if all(got.get(k) == v for k, v in labels.items()):
                return float(m.group(3))
    return None


def scores_of(reader: TopicReader, n: int) -> dict[str, dict]:
    def enough():
        values = reader.poll()
        return len({v["id"] for v in values}) >= n
    wait_for(enough, 120, f"{n} distinct sentiment scores")
    return {v["id"]: v for v in reader.values}


@pytest.mark.timeout(300)
def test_scores_one_escalation_and_corrections(deployment: Deployment) -> None:
    d = deployment
    worker = d.worker(**MOOD_ENV).start()
    wait_for(worker.ready, 90, "the worker to be ready")
    chat = Chat()
    calm = {"vip": (CALM, 2), "billing": (CALM, 1), "shipping": (CALM, 1)}
    alerts_reader = TopicReader(d.bootstrap, d.topic("alerts"), d.partitions)

    def sentiment_alerts(state: str) -> list[dict] | None:
        got = [a for a in alerts_reader.poll() if a["pipeline"] == "sentiment"]
        return got if any(a.get("state") == state for a in got) else None

    # Two phases, each sent once the worker has acted on the previous one: mood is checked at the end
    # of each micro-batch, and under load one batch could hold a whole spell (raised and calm again).
    messages = chat.run(300, calm)
    messages += chat.run(90, {**calm, "vip": (ANGRY, 2)})
    send(d, messages)
    wait_for(lambda: sentiment_alerts("raised"), 90, "the escalation to be raised")
    calm_again = chat.run(200, calm)
    send(d, calm_again)
    messages += calm_again

    scores_reader = TopicReader(d.bootstrap, d.topic("sentiment-scores"), d.partitions)
    scores = scores_of(scores_reader, len(messages))
    assert set(scores) == {m["id"] for m in messages}  # N messages -> N distinct scores
    for rec in list(scores.values())[:50]:
        assert rec["label"] in LABELS and abs(sum(rec["probabilities"].values()) - 1.0) < 1e-3
        assert rec["model_version"] == 1 and rec["latency_ms"] > 0
    right = sum(scores[i]["label"] == chat.truth[i] for i in scores) / len(scores)
    assert right > 0.9

    alerts = wait_for(lambda: sentiment_alerts("cleared"), 90, "the escalation to be cleared")
    assert [(a["subject"], a["state"]) for a in alerts] == [("vip", "raised"), ("vip", "cleared")], alerts
    raised = alerts[0]
    assert "vip" in raised["reason"] and raised["details"]["channel"] == "vip"
    assert raised["score"] >= raised["threshold"] and raised["details"]["messages"] >= 20
    angry_texts = {m["text"] for m in messages if chat.truth[m["id"]] == "negative"}
    quotes = raised["details"]["most_negative"]
    assert quotes and all(q["text"] in angry_texts and scores[q["id"]]["channel"] == "vip" for q in quotes)
    assert metric(worker, "lepton_alerts_total", pipeline="sentiment") is not None

    # Corrections: the prequential gauges appear and say how good each model is.
    assert metric(worker, "lepton_prequential_quality", pipeline="sentiment", learner="online",
                  metric="accuracy") is None
    corrected = messages[::4]
    correct(d, chat, corrected)
    wait_for(lambda: metric(worker, "lepton_corrections_total", pipeline="sentiment", outcome="learned")
             == len(corrected), 60, "every correction to be learned")
    champion = metric(worker, "lepton_prequential_quality", pipeline="sentiment", learner="champion",
                      metric="accuracy")
    online = metric(worker, "lepton_prequential_quality", pipeline="sentiment", learner="online", metric="accuracy")
    assert champion is not None and champion > 0.9
    assert online is not None and 0.5 < online <= 1.0  # learned from nothing but these corrections
    assert metric(worker, "lepton_online_updates_total", pipeline="sentiment") == len(corrected)
    scores_reader.close()
    alerts_reader.close()


def checkpointed_corrections(path: Path) -> int:
    """Corrections learned according to the worker's checkpoint file (0 before the first)."""
    import pickle

    try:
        return pickle.loads(path.read_bytes())["state"]["corrections"][0]
    except FileNotFoundError:
        return 0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_state_survives_a_worker_restart(deployment: Deployment, stop: str) -> None:
    """SIGTERM: the checkpoint written at shutdown; SIGKILL: the last periodic one (every second here)."""
    d = deployment
    first = d.worker(**MOOD_ENV).start()
    wait_for(first.ready, 90, "the worker to be ready")
    chat = Chat()
    history = chat.run(300, {"vip": (CALM, 2)})  # 600 calm messages: past the 100-message warm-up
    send(d, history)
    scores_reader = TopicReader(d.bootstrap, d.topic("sentiment-scores"), d.partitions)
    scores_of(scores_reader, len(history))
    correct(d, chat, history[:200])
    wait_for(lambda: metric(first, "lepton_corrections_total", pipeline="sentiment", outcome="learned") == 200,
             60, "200 corrections learned")
    online = metric(first, "lepton_prequential_quality", pipeline="sentiment", learner="online", metric="accuracy")
    checkpoint = d.home / "state" / "sentiment" / "checkpoint.pkl"
    if stop == "sigterm":
        assert first.stop() == 0
    else:
        wait_for(lambda: checkpointed_corrections(checkpoint) == 200, 30, "a periodic checkpoint with the corrections")
        first.kill()
    assert checkpoint.is_file()

    second = d.worker(**MOOD_ENV).start()
    wait_for(second.ready, 90, "the restarted worker to be ready")
    # the online model and its quality came back
    assert metric(second, "lepton_prequential_quality", pipeline="sentiment", learner="online",
                  metric="accuracy") == online
    # the kept texts came back: a correction of a message scored before the restart is learned
    correct(d, chat, history[300:301])
    wait_for(lambda: metric(second, "lepton_corrections_total", pipeline="sentiment", outcome="learned") == 1,
             60, "the correction of an old message to be learned")
    assert metric(second, "lepton_corrections_total", pipeline="sentiment", outcome="missing") is None
    # the channel's baseline came back: an angry spell escalates at once (an empty state would still be
    # warming up: 100 messages before any escalation, and the baseline would be the prior)
    angry = chat.run(40, {"vip": (ANGRY, 2)})
    send(d, angry)
    scores_of(scores_reader, len(history) + len(angry))
    alerts_reader = TopicReader(d.bootstrap, d.topic("alerts"), d.partitions)
    alerts = wait_for(lambda: [a for a in alerts_reader.poll() if a["pipeline"] == "sentiment"], 60,
                      "an escalation after the restart")
    assert [(a["subject"], a["state"]) for a in alerts] == [("vip", "raised")]
    assert alerts[0]["details"]["baseline"] < 0.3  # learned from the calm history (20 % negative)
    scores_reader.close()
    alerts_reader.close()

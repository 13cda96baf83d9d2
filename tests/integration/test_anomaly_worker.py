"""The anomaly pipeline in a real worker process against the real broker.

Frames are keyed by equipment id (as ``lepton produce`` sends them), warm-up is
shortened to 100 frames, and the model is a small one trained once for the module
on the synthetic generator. Sensors are i.i.d. noise around fixed levels; a fault
shifts two of them by 12 sd for 60 frames.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from streams.settings import Settings

from support import Deployment, TopicReader, wait_for, isolated_deployment

SENSORS = ["accel1_rms", "accel2_rms", "current", "pressure", "temperature", "thermocouple", "voltage", "flow_rate"]
LEVELS = np.array([0.2, 0.27, 2.0, 0.3, 79.5, 26.0, 233.0, 32.0])
NOISE = np.array([0.01, 0.012, 0.3, 0.05, 0.25, 0.15, 1.5, 0.4])
WARMUP = 100
WORKER_ENV = {"LEPTON_PIPELINES": '["anomaly"]', "LEPTON_ANOMALY_WARMUP_FRAMES": str(WARMUP),
              "LEPTON_MAX_WAIT_MS": "50", "LEPTON_ANOMALY_CHECKPOINT_INTERVAL_S": "0.5"}


@pytest.fixture(scope="module")
def anomaly_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Lepton home with a small anomaly model (2 epochs on the synthetic pumps)."""
    from models.train import train_anomaly

    home = tmp_path_factory.mktemp("anomaly-home")
    train_anomaly(Settings(home=home, anomaly_warmup_frames=WARMUP), epochs=2)
    return home


@pytest.fixture
def deployment(broker: str, anomaly_home: Path, request: pytest.FixtureRequest):
    with isolated_deployment(broker, anomaly_home, f"an-{request.node.name}") as d:
        yield d


def frames(equipment: str, start: int, n: int, t0: float, rng: np.random.Generator,
           fault: tuple[int, int] | None = None, spike: int | None = None) -> list[dict]:
    """Frames ``start .. start + n`` of one equipment, one a second from ``t0``."""
    out = []
    for i in range(start, start + n):
        x = LEVELS + NOISE * rng.normal(size=len(SENSORS))
        if fault and fault[0] <= i < fault[1]:
            x[2] += 12 * NOISE[2]  # current up
            x[7] -= 12 * NOISE[7]  # flow down
        if spike == i:
            x[4] += 40 * NOISE[4]
        out.append({"id": f"{equipment}-{i}", "ts": round(t0 + i, 3), "equipment_id": equipment,
                    "readings": dict(zip(SENSORS, np.round(x, 5).tolist()))})
    return out


def send(d: Deployment, topic: str, records: list[dict], key: str = "equipment_id") -> None:
    d.produce(topic, [(r[key].encode(), orjson.dumps(r)) for r in records])


def metric_value(worker, series: str) -> float | None:
    status, text = worker.get("/metrics")
    line = next((x for x in text.splitlines() if x.startswith(series + " ")), None) if status == 200 else None
    return float(line.split()[-1]) if line else None


def metric(worker, name: str) -> float | None:
    status, text = worker.get("/metrics")
    m = re.search(rf'^{name}\{{pipeline="anomaly"\}} (\S+)$', text, re.M) if status == 200 else None
    return float(m.group(1)) if m else None


@pytest.mark.timeout(240)
def test_scores_alerts_and_maintenance_labels(deployment: Deployment) -> None:
    d = deployment
    worker = d.worker(**WORKER_ENV).start()
    rng = np.random.default_rng(7)
    t0 = time.time() - 10_000
    fault = (300, 360)
    pump_a = frames("pump-a", 0, 600, t0, rng, fault=fault)
    pump_b = frames("pump-b", 0, 600, t0, rng, spike=300)  # one isolated spike: no alert
    send(d, "sensor-frames", [f for pair in zip(pump_a, pump_b) for f in pair])
    n = len(pump_a) + len(pump_b)

    scores = TopicReader(d.bootstrap, d.topic("anomaly-scores"), d.partitions)
    alerts = TopicReader(d.bootstrap, d.topic("alerts"), d.partitions)
    try:
        wait_for(lambda: len({s["id"] for s in scores.poll()}) >= n, 120, f"{n} scores\n{d.logs()}")
        by_id = {s["id"]: s for s in scores.values}
        assert len(by_id) == n == len(scores.values)  # one score per frame, no duplicates
        assert all(0.0 <= s["score"] < 1.0 for s in scores.values)
        assert by_id["pump-a-50"]["status"] == "calibrating" and by_id["pump-a-200"]["status"] == "scoring"
        assert by_id["pump-a-200"]["model_version"] == 1
        assert not any(by_id[f"pump-a-{i}"]["flag"] for i in range(WARMUP, fault[0]))
        assert any(by_id[f"pump-a-{i}"]["flag"] for i in range(*fault))

        def alert_states() -> list[tuple[str, str]]:
            return [(a["subject"], a["state"]) for a in alerts.poll() if a["pipeline"] == "anomaly"]

        wait_for(lambda: ("pump-a", "cleared") in alert_states(), 30, f"pump-a's alert to clear\n{d.logs()}")
        mine = [a for a in alerts.values if a["subject"] == "pump-a"]
        assert [a["state"] for a in mine] == ["raised", "cleared"]
        raised = mine[0]
        assert fault[0] <= int(raised["id"].rsplit("-", 1)[1]) < fault[1]
        assert {s["name"] for s in raised["details"]["sensors"][:2]} == {"current", "flow_rate"}
        assert "pump-a" in raised["reason"] and raised["score"] >= 0.5
        assert not [a for a in alerts.values if a["subject"] == "pump-b"]  # the spike raised nothing

        # Maintenance confirms the alert, then (re-labelled) rejects it: the precision metric follows.
        assert metric(worker, "lepton_alert_precision") == 0.0  # nothing judged yet
        label = {"equipment_id": "pump-a", "from_ts": t0 + fault[0], "to_ts": t0 + fault[1], "is_anomaly": True}
        send(d, "maintenance-labels", [label])
        wait_for(lambda: metric(worker, "lepton_alert_precision") == 1.0, 30, "alert precision 1.0")
        send(d, "maintenance-labels", [{**label, "is_anomaly": False}])
        wait_for(lambda: metric(worker, "lepton_alert_precision") == 0.0, 30, "alert precision 0.0")
        d.produce("maintenance-labels", [(b"pump-a", b'{"equipment_id": "pump-a"}')])  # invalid: counted, skipped
        wait_for(lambda: 'lepton_corrections_total{outcome="invalid",pipeline="anomaly"} 1.0' in worker.get("/metrics")[1]
                 or 'lepton_corrections_total{pipeline="anomaly",outcome="invalid"} 1.0' in worker.get("/metrics")[1],
                 30, "the invalid label counted")
        assert worker.alive()
    finally:
        scores.close()
        alerts.close()


@pytest.mark.timeout(240)
def test_equipment_state_survives_a_worker_crash(deployment: Deployment) -> None:
    from models.anomaly.state import AnomalyState

    d = deployment
    rng = np.random.default_rng(11)
    t0 = time.time() - 10_000
    first = frames("pump-c", 0, 160, t0, rng)
    worker = d.worker(**WORKER_ENV).start()
    send(d, "sensor-frames", first)
    scores = TopicReader(d.bootstrap, d.topic("anomaly-scores"), d.partitions)
    try:
        wait_for(lambda: len(scores.poll()) >= len(first), 120, f"the first scores\n{d.logs()}")
        checkpoint = d.home / "state" / "anomaly" / f"{d.prefix}{d.prefix}app" / "pump-c.ckpt"

        def checkpointed_frames() -> int:
            state = AnomalyState()
            return checkpoint.is_file() and state.restore("pump-c", checkpoint.read_bytes()).frames

        wait_for(lambda: checkpointed_frames() == len(first), 30, "a checkpoint of all 160 frames")
        before = max(s["detector_version"] for s in scores.values)
        worker.kill()  # SIGKILL: no shutdown hook runs

        worker = d.worker(**WORKER_ENV).start()
        second = frames("pump-c", len(first), 60, t0, rng)
        send(d, "sensor-frames", second)
        ids = {f["id"] for f in second}
        wait_for(lambda: ids <= {s["id"] for s in scores.poll()}, 120, f"scores after the restart\n{d.logs()}")
        after = [s for s in scores.values if s["id"] in ids]
        # Without its state, pump-c would calibrate again for 100 frames (status "calibrating", score 0).
        assert all(s["status"] == "scoring" for s in after), [s["status"] for s in after][:5]
        assert min(s["detector_version"] for s in after) >= before
        assert not any(s["flag"] for s in after)
    finally:
        scores.close()


@pytest.mark.timeout(300)
def test_equipment_state_follows_its_partition_to_a_new_worker(deployment: Deployment) -> None:
    """A second worker joins: the first writes its equipment on revocation, the new owner restores it.

    Periodic checkpoints are off (interval 1000 s), so only the revocation can have written them.
    """
    from kafka.partitioner.default import murmur2

    d = deployment
    env = {**WORKER_ENV, "LEPTON_ANOMALY_CHECKPOINT_INTERVAL_S": "1000"}
    pumps, covered = [], set()
    for i in range(100):  # one pump per partition, so that both workers own some
        part = (murmur2(f"pump-{i}".encode()) & 0x7FFFFFFF) % d.partitions
        if part not in covered:
            covered.add(part)
            pumps.append(f"pump-{i}")
    assert len(pumps) == d.partitions
    rng = np.random.default_rng(5)
    t0 = time.time() - 10_000
    first = [f for p in pumps for f in frames(p, 0, 150, t0, rng)]
    a = d.worker(**env).start()
    send(d, "sensor-frames", first)
    scores = TopicReader(d.bootstrap, d.topic("anomaly-scores"), d.partitions)
    try:
        wait_for(lambda: len(scores.poll()) >= len(first), 120, f"the first scores\n{d.logs()}")
        b = d.worker(**env).start()
        wait_for(lambda: b.ready() and a.ready(), 90, f"both workers assigned\n{d.logs()}")
        second = [f for p in pumps for f in frames(p, 150, 30, t0, rng)]
        send(d, "sensor-frames", second)
        ids = {f["id"] for f in second}
        wait_for(lambda: ids <= {s["id"] for s in scores.poll()}, 120, f"scores after the rebalance\n{d.logs()}")
        after = [s for s in scores.values if s["id"] in ids]
        # Without the revocation's checkpoints every pump would calibrate again (100 frames).
        assert {s["status"] for s in after} == {"scoring"}
        files = (d.home / "state" / "anomaly" / f"{d.prefix}{d.prefix}app").glob("*.ckpt")
        assert {p.name[:-5] for p in files} >= set(pumps)
        processed = [metric_value(w, 'lepton_events_processed_total{pipeline="anomaly"}') for w in (a, b)]
        assert processed[1] and processed[1] > 0, processed  # the new worker scored some of the pumps
        assert a.alive() and b.alive()
    finally:
        scores.close()


@pytest.mark.timeout(180)
def test_a_graceful_stop_writes_every_changed_equipment(deployment: Deployment) -> None:
    from models.anomaly.state import AnomalyState

    d = deployment
    rng = np.random.default_rng(3)
    batch = frames("pump-d", 0, 130, time.time() - 10_000, rng)
    worker = d.worker(**{**WORKER_ENV, "LEPTON_ANOMALY_CHECKPOINT_INTERVAL_S": "1000"}).start()
    send(d, "sensor-frames", batch)
    scores = TopicReader(d.bootstrap, d.topic("anomaly-scores"), d.partitions)
    try:
        wait_for(lambda: len(scores.poll()) >= len(batch), 120, f"the scores\n{d.logs()}")
    finally:
        scores.close()
    checkpoint = d.home / "state" / "anomaly" / f"{d.prefix}{d.prefix}app" / "pump-d.ckpt"
    assert not checkpoint.exists()  # not due for 1000 s
    assert worker.stop() == 0  # SIGTERM
    assert AnomalyState().restore("pump-d", checkpoint.read_bytes()).frames == len(batch)

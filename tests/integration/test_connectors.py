"""connectors/ against the real embedded broker: start/stop, topics, offsets, lag, producing, replay.

Every test works under its own topic prefix and consumer group, so it shares
the session broker with other tests without seeing their events.
"""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import orjson
import pandas as pd
import pytest
from faust.auth import SASLCredentials
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import OffsetSpec
from kafka.structs import OffsetAndMetadata

from connectors.admin import PartitionLag, ensure_topics, group_lag, topic_offsets
from connectors.broker import EmbeddedBroker, broker_for
from connectors.generators import TransactionGenerator
from connectors.kafka_config import BrokerUnreachable, faust_broker_credentials, kafka_python_config, wait_for_broker
from connectors.producer import KEY_FIELDS, produce, produce_raw, schedule, unzip
from connectors.replay import ReplayError, read_events
from streams.settings import Settings

import support

ROOT = Path(__file__).resolve().parents[2]
integration = pytest.mark.integration


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    return support.wait_for(condition, timeout, what, every=0.02)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with a topic prefix of this test's own."""
    return Settings(home=tmp_path, kafka_bootstrap=None, topic_prefix=f"conn-{uuid.uuid4().hex[:8]}.", partitions=4)


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 15.0) -> list:
    """Every record of ``topic`` (waits until ``expected`` have arrived)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list = []

        def more() -> bool:
            for batch in consumer.poll(timeout_ms=100).values():
                records.extend(batch)
            return len(records) >= expected

        wait_for(more, timeout, f"{expected} records on {topic} (got {len(records)})")
        return records
    finally:
        consumer.close()


# --- the broker ------------------------------------------------------------------------------

@integration
def test_broker_answers(broker: str, embedded_broker: EmbeddedBroker) -> None:
    assert broker == f"127.0.0.1:{embedded_broker.port}"
    # Bounds that catch a hang, not a speed claim: on the shared 2-core machine start-up took 7.5 s
    # under load (usually well under a second); speed belongs to benchmarks, not to tests.
    assert embedded_broker.running() and embedded_broker.startup_s < 60
    assert wait_for_broker(broker, 30, Settings(kafka_bootstrap=None)) < 30
    admin = KafkaAdminClient(bootstrap_servers=broker)
    try:
        assert admin.describe_cluster()["brokers"][0]["port"] == embedded_broker.port
    finally:
        admin.close()


@integration
def test_stop_ends_the_process(tmp_path: Path) -> None:
    broker = EmbeddedBroker(Settings(home=tmp_path, kafka_bootstrap=None)).start()
    pid = broker.pid
    assert pid and _alive(pid)
    broker.stop()
    broker.stop()  # idempotent
    assert not _alive(pid) and not broker.running()
    assert "listening on: tcp://127.0.0.1" in (tmp_path / "broker.log").read_text()


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


_CHILD = """
import sys, time
from connectors.broker import EmbeddedBroker
from streams.settings import Settings
broker = EmbeddedBroker(Settings(home=sys.argv[1], kafka_bootstrap=None)).start()
print(broker.pid, broker.bootstrap, flush=True)
time.sleep(120)
"""


@integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_broker_dies_with_a_sigkilled_parent(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        line = parent.stdout.readline()
        assert line, "the parent exited before starting the broker"
        pid_text, bootstrap = line.split()
        tansu = int(pid_text)
        assert _alive(tansu)
        wait_for_broker(bootstrap, 5, Settings(kafka_bootstrap=None))
        parent.send_signal(signal.SIGKILL)  # no atexit, no finally: only the kernel can clean up
        parent.wait(5)
        wait_for(lambda: not _alive(tansu), 10, f"tansu (pid {tansu}) to exit after its parent was SIGKILLed")
    finally:
        parent.kill()
        parent.wait()


@integration
def test_taken_port_fails_fast_with_the_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(home=tmp_path, kafka_bootstrap=None, broker_port=port, connect_timeout_s=60)
        started = time.monotonic()
        with pytest.raises(BrokerUnreachable) as info:
            EmbeddedBroker(settings).start()
    # Tansu exits (with code 0!) when it cannot bind: the failure comes from that exit, long before the
    # 60 s connect timeout (a loose bound: a loaded machine delays the spawn by seconds).
    assert time.monotonic() - started < 30
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "Address in use" in message and str(tmp_path / "broker.log") in message


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_external_bootstrap_names_the_setting() -> None:
    address = f"127.0.0.1:{_closed_port()}"
    settings = Settings(kafka_bootstrap=address, connect_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable) as info:
        with broker_for(settings):
            pass
    message = str(info.value)
    assert "LEPTON_KAFKA_BOOTSTRAP" in message and address in message
    assert "unset LEPTON_KAFKA_BOOTSTRAP to use the embedded broker" in message
    assert time.monotonic() - started < 15  # the 0.5 s timeout holds (loosely: a loaded machine adds seconds)


@integration
def test_broker_for_uses_a_reachable_external_cluster(broker: str) -> None:
    with broker_for(Settings(kafka_bootstrap=broker, connect_timeout_s=5)) as bootstrap:
        assert bootstrap == broker


# --- client configuration ----------------------------------------------------------------------

def test_kafka_config_only_sets_what_is_configured(tmp_path: Path) -> None:
    plain = kafka_python_config(Settings(kafka_bootstrap="k1:9092,k2:9092"))
    assert plain == {"bootstrap_servers": "k1:9092,k2:9092", "security_protocol": "PLAINTEXT"}
    tls = Settings(kafka_bootstrap="k:9093", kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "ca.pem")
    assert kafka_python_config(tls)["ssl_cafile"] == str(tmp_path / "ca.pem")
    assert "sasl_mechanism" not in kafka_python_config(tls)
    # the embedded broker is plaintext whatever the external cluster needs
    assert kafka_python_config(tls, "127.0.0.1:1234")["security_protocol"] == "PLAINTEXT"


def test_faust_credentials() -> None:
    assert faust_broker_credentials(Settings(kafka_bootstrap="k:9092")) is None
    sasl = Settings(kafka_bootstrap="k:9092", kafka_security_protocol="SASL_SSL",
                    kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="u", kafka_sasl_password="p")
    creds = faust_broker_credentials(sasl)
    assert isinstance(creds, SASLCredentials)
    assert (creds.username, creds.mechanism.value, creds.protocol.value) == ("u", "SCRAM-SHA-512", "SASL_SSL")
    embedded = sasl.model_copy(update={"kafka_bootstrap": None})
    assert faust_broker_credentials(embedded) is None


# --- topics, offsets, lag --------------------------------------------------------------------------

@integration
def test_ensure_topics_is_idempotent(broker: str, settings: Settings) -> None:
    names = settings.topics.all()
    assert sorted(ensure_topics(broker, settings=settings)) == sorted(names)
    assert ensure_topics(broker, settings=settings) == []
    assert ensure_topics(broker, names[:2], 2, settings=settings) == []
    offsets = topic_offsets(broker, settings=settings)
    assert sorted(offsets) == sorted(names)
    assert all(parts == {0: 0, 1: 0, 2: 0, 3: 0} for parts in offsets.values())


@integration
def test_topic_offsets_are_true_high_watermarks(broker: str, settings: Settings) -> None:
    """Tansu's ListOffsets reports the last batch's base offset + 1; topic_offsets must not."""
    topic = settings.topic_prefix + "hw"
    ensure_topics(broker, [topic], 1, settings=settings)
    produce_raw(broker, topic, [b"x%d" % i for i in range(50)])  # one batch
    produce_raw(broker, topic, [b"y%d" % i for i in range(30)])  # a second one
    assert topic_offsets(broker, [topic, settings.topic_prefix + "missing"]) == {topic: {0: 80}}
    admin = KafkaAdminClient(bootstrap_servers=broker)
    try:
        listed = admin.list_partition_offsets({TopicPartition(topic, 0): OffsetSpec.LATEST})
    finally:
        admin.close()
    assert listed[TopicPartition(topic, 0)].offset in (51, 80)  # 51 on Tansu, 80 on Apache Kafka


@integration
def test_group_lag(broker: str, settings: Settings) -> None:
    topic = settings.topic_prefix + "lag"
    group = settings.topic_prefix + "group"
    ensure_topics(broker, [topic], 2, settings=settings)
    produce_raw(broker, topic, [b"v%d" % i for i in range(30)], [b"k%d" % i for i in range(30)])
    consumer = KafkaConsumer(
        topic, bootstrap_servers=broker, group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=False, fetch_max_wait_ms=50,
        session_timeout_ms=2000, heartbeat_interval_ms=300,  # Tansu's join waits about half the session
    )
    try:
        ends: dict[int, int] = {}

        def consumed_all() -> bool:
            for tp, batch in consumer.poll(timeout_ms=100).items():
                ends[tp.partition] = max(ends.get(tp.partition, 0), batch[-1].offset + 1)
            return sum(ends.values()) == 30

        wait_for(consumed_all, 20, "the group to consume 30 records")
        consumer.commit({
            TopicPartition(topic, 0): OffsetAndMetadata(ends[0] - 2, "", -1),
            TopicPartition(topic, 1): OffsetAndMetadata(ends[1], "", -1),
        })
    finally:
        consumer.close()
    lag = group_lag(broker, group)  # topics: those the group committed to
    assert lag == {topic: {0: PartitionLag(ends[0] - 2, ends[0], 2), 1: PartitionLag(ends[1], ends[1], 0)}}
    unknown = group_lag(broker, group + "-nobody", [topic])
    assert unknown == {topic: {p: PartitionLag(None, ends[p], ends[p]) for p in (0, 1)}}
    assert group_lag(broker, group + "-nobody") == {}


# --- producing -------------------------------------------------------------------------------------

@integration
def test_produce_and_read_back(broker: str, settings: Settings) -> None:
    gen = TransactionGenerator(seed=7, start_ts=1_700_000_000.0, rate_per_s=1000.0)
    pairs = [next(iter_) for iter_ in [iter(gen)] for _ in range(2000)]
    events, labels = unzip(iter(pairs))
    sent = produce(settings, broker, "fraud", events, labels=labels, count=2000, progress=False)
    assert sent == 2000
    topics = settings.topics.pipeline("fraud")

    records = read_topic(broker, topics.input, 2000)
    by_id = {orjson.loads(r.value)["id"]: r for r in records}
    assert len(records) == 2000 and by_id.keys() == {e["id"] for e, _ in pairs}
    partition_of_card: dict[str, int] = {}
    for event, _ in pairs:
        record = by_id[event["id"]]
        assert orjson.loads(record.value) == event
        assert record.key == event[KEY_FIELDS["fraud"]].encode()
        assert partition_of_card.setdefault(event["card"], record.partition) == record.partition

    feedback = read_topic(broker, topics.feedback, 2000)
    truth = {e["id"]: y for e, y in pairs}
    assert {orjson.loads(r.value)["id"]: orjson.loads(r.value)["is_fraud"] for r in feedback} == truth
    # labels are co-partitioned with their events
    assert all(r.partition == by_id[orjson.loads(r.value)["id"]].partition for r in feedback)
    assert sum(topic_offsets(broker, [topics.input])[topics.input].values()) == 2000


@integration
def test_labels_wait_for_event_time(broker: str, settings: Settings) -> None:
    """A label is sent only after an event with ts >= its event's ts + delay (rate-limited, so visible)."""
    n, delay = 60, 10.0
    events = [{"id": f"e{i}", "ts": 1_700_000_000.0 + i, "card": f"c{i % 7}", "merchant": "m", "amount": 1.0}
              for i in range(n)]
    produce(settings, broker, "fraud", iter(events), labels=[i % 2 == 0 for i in range(n)],
            label_delay_s=delay, rate=200.0, progress=False)
    topics = settings.topics.pipeline("fraud")
    sent_at = {orjson.loads(r.value)["id"]: r.timestamp for r in read_topic(broker, topics.input, n)}
    labels = {orjson.loads(r.value)["id"]: r for r in read_topic(broker, topics.feedback, n)}
    assert orjson.loads(labels["e0"].value) == {"id": "e0", "is_fraud": True}
    for i in range(n):
        released_by = f"e{min(i + int(delay), n - 1)}"  # the first event at ts + delay (or the stream's end)
        assert labels[f"e{i}"].timestamp >= sent_at[released_by]
        if i + delay < n:
            assert labels[f"e{i}"].timestamp - sent_at[f"e{i}"] >= 25  # 10 events at 200/s: ~50 ms later


def test_schedule_orders_labels_by_event_time() -> None:
    events = [{"id": str(i), "ts": float(t), "channel": "c"} for i, t in enumerate([0, 1, 2, 5, 6, 20])]
    out = [(is_label, rec["id"]) for is_label, _, rec in
           schedule("sentiment", events, ["neg", None, "pos", "neu", "neg", "pos"], label_delay_s=4)]
    assert out == [
        (False, "0"), (False, "1"), (False, "2"),
        (False, "3"), (True, "0"),  # ts 5 passes 0+4
        (False, "4"), (True, "2"),  # ts 6 passes 2+4 (event 1 has no label)
        (False, "5"), (True, "3"), (True, "4"),  # ts 20 passes 5+4 and 6+4
        (True, "5"),  # end of stream: the rest
    ]
    immediate = list(schedule("anomaly", [{"id": "a", "ts": 1.0, "equipment_id": "p"}], [True]))
    assert immediate == [(False, "p", {"id": "a", "ts": 1.0, "equipment_id": "p"}),
                         (True, "p", {"equipment_id": "p", "from_ts": 1.0, "to_ts": 1.0, "is_anomaly": True})]


@integration
def test_rate_limit(broker: str, settings: Settings) -> None:
    gen = TransactionGenerator(seed=3, rate_per_s=400)
    started = time.monotonic()
    assert produce(settings, broker, "fraud", (e for e, _ in gen), rate=400, count=400, progress=False) == 400
    assert 0.8 < time.monotonic() - started < 10.0  # paced, not slower than needed (loose: shared machine)


# --- replay --------------------------------------------------------------------------------------

def _handbook_csv(path: Path) -> pd.DataFrame:
    rows = pd.DataFrame({
        "TRANSACTION_ID": [2, 0, 1, 3],
        "TX_DATETIME": ["2018-04-01 00:02:10", "2018-04-01 00:00:31", "2018-04-01 00:01:00", "2018-04-02 12:00:00"],
        "CUSTOMER_ID": [4961, 596, 596, 17],
        "TERMINAL_ID": [3412, 3156, 3156, 9],
        "TX_AMOUNT": [81.51, 57.16, 230.0, 12.0],
        "TX_FRAUD": [0, 0, 1, 0],
        "TX_FRAUD_SCENARIO": [0, 0, 1, 0],
    })
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            rows.to_csv(f, index=False)
    else:
        rows.to_csv(path, index=False)
    return rows


@pytest.mark.parametrize("name", ["tx.csv", "tx.csv.gz"])
def test_replay_reads_the_handbook_format(tmp_path: Path, name: str) -> None:
    _handbook_csv(tmp_path / name)
    pairs = list(read_events("fraud", tmp_path / name))
    assert [e["id"] for e, _ in pairs] == ["0", "1", "2", "3"]  # time-ordered
    assert pairs[1] == ({"id": "1", "ts": 1522540860.0, "card": "596", "merchant": "3156", "amount": 230.0}, True)
    assert all(set(e) == {"id", "ts", "card", "merchant", "amount"} for e, _ in pairs)  # no scenario
    assert [y for _, y in pairs] == [False, True, False, False]


def test_replay_reads_lepton_schema_parquet(tmp_path: Path) -> None:
    frame = TransactionGenerator(seed=5, start_ts=1_700_000_000.0).batch(300)
    frame.to_parquet(tmp_path / "tx.parquet")
    pairs = list(read_events("fraud", tmp_path / "tx.parquet"))
    expected = list(zip(TransactionGenerator(seed=5, start_ts=1_700_000_000.0), range(300)))
    assert pairs == [pair for pair, _ in expected]


@pytest.mark.parametrize("pipeline,name", [("sentiment", "chat.csv"), ("anomaly", "frames.parquet")])
def test_replay_round_trips_generator_batches(tmp_path: Path, pipeline: str, name: str) -> None:
    from connectors.generators import make_generator

    frame = make_generator(pipeline, seed=8, start_ts=1_700_000_000.0).batch(200)
    (frame.to_csv(tmp_path / name, index=False) if name.endswith(".csv") else frame.to_parquet(tmp_path / name))
    expected = [pair for pair, _ in zip(make_generator(pipeline, seed=8, start_ts=1_700_000_000.0), range(200))]
    assert list(read_events(pipeline, tmp_path / name)) == expected


def test_replay_names_missing_columns(tmp_path: Path) -> None:
    pd.DataFrame({"TRANSACTION_ID": [1], "TX_DATETIME": ["2018-04-01 00:00:00"], "TX_AMOUNT": [1.0]}).to_csv(
        tmp_path / "bad.csv", index=False)
    with pytest.raises(ReplayError, match="missing column.*CUSTOMER_ID, TERMINAL_ID"):
        list(read_events("fraud", tmp_path / "bad.csv"))
    pd.DataFrame({"id": [1], "ts": [1.0], "text": ["hi"]}).to_csv(tmp_path / "chat.csv", index=False)
    with pytest.raises(ReplayError, match="missing column.*channel, user"):
        list(read_events("sentiment", tmp_path / "chat.csv"))


@integration
def test_replay_then_produce(broker: str, settings: Settings, tmp_path: Path) -> None:
    _handbook_csv(tmp_path / "tx.csv")
    events, labels = unzip(read_events("fraud", tmp_path / "tx.csv"))
    assert produce(settings, broker, "fraud", events, labels=labels, label_delay_s=7 * 86400, progress=False) == 4
    topics = settings.topics.pipeline("fraud")
    assert sorted(orjson.loads(r.value)["id"] for r in read_topic(broker, topics.input, 4)) == ["0", "1", "2", "3"]
    feedback = sorted((orjson.loads(r.value)["id"], orjson.loads(r.value)["is_fraud"])
                      for r in read_topic(broker, topics.feedback, 4))
    assert feedback == [("0", False), ("1", True), ("2", False), ("3", False)]

"""The batch path inside Faust, against the real broker: nothing lost, bad input isolated.

Every test runs real `lepton worker` processes (through tests/integration/
harness_worker.py, which can inject a crash or slowness) on the session's
embedded broker, in its own topic prefix and consumer group.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter

import pytest
from kafka.partitioner.default import murmur2

from support import Deployment, TopicReader, fraud_probe_scores, wait_for

pytestmark = pytest.mark.integration

NOW = time.time()


def transactions(n: int, tag: str) -> list[tuple[bytes, bytes]]:
    return [
        (f"card-{i % 500}".encode(),
         json.dumps({"id": f"{tag}-{i}", "ts": NOW, "card": f"card-{i % 500}", "merchant": f"m-{i % 40}",
                     "amount": float(5 + (i * 37) % 400)}).encode())
        for i in range(n)
    ]


MALFORMED: list[tuple[str, bytes]] = [
    ("malformed_json", b'{"id": "x", "ts": '),
    ("not_an_object", b"[1, 2, 3]"),
    ("missing_field", json.dumps({"id": "x", "ts": NOW, "merchant": "m", "amount": 1.0}).encode()),
    ("wrong_type", json.dumps({"id": "x", "ts": NOW, "card": "c", "merchant": "m", "amount": "12"}).encode()),
    ("malformed_json", b'{"id": "x", "ts": 1, "card": "c", "merchant": "m", "amount": NaN}'),
    ("out_of_range", json.dumps({"id": "x", "ts": NOW, "card": "c", "merchant": "m", "amount": 1e12}).encode()),
    ("out_of_range", json.dumps({"id": "x", "ts": NOW + 10 * 86400, "card": "c", "merchant": "m", "amount": 1.0}).encode()),
    ("oversized", json.dumps({"id": "x", "ts": NOW, "card": "c", "merchant": "m", "amount": 1.0,
                              "note": "z" * 70_000}).encode()),
    ("malformed_json", b"\xff\xfe\x00binary"),
    ("empty", None),
]


def scores_by_id(reader: TopicReader) -> Counter:
    return Counter(v["id"] for v in reader.poll())


def missing_by_partition(deployment: Deployment, n: int, tag: str, scores: TopicReader) -> str:
    """Where the unscored inputs are (partition: count) and what the group committed: tells a lost
    event (committed past it) from a stuck partition (committed before it)."""
    seen = set(scores_by_id(scores))
    missing = Counter((murmur2(f"card-{i % 500}".encode()) & 0x7FFFFFFF) % deployment.partitions
                      for i in range(n) if f"{tag}-{i}" not in seen)
    return f"unscored per partition {dict(sorted(missing.items()))}, committed {deployment.committed('transactions')}"


def test_valid_events_scored_once_malformed_dead_lettered_offsets_committed(deployment: Deployment) -> None:
    records = transactions(10_000, "a")
    expected_letters: list[str] = []
    for i in range(100):  # 1 % malformed, spread through the stream
        reason, payload = MALFORMED[i % len(MALFORMED)]
        records.insert(i * 100 + 50, (b"bad", payload))
        expected_letters.append(reason)
    produced = deployment.produce("transactions", records)
    worker = deployment.worker().start()
    scores = TopicReader(deployment.bootstrap, deployment.topic("fraud-scores"), deployment.partitions)
    letters = TopicReader(deployment.bootstrap, deployment.topic("dead-letters"), deployment.partitions)
    try:
        wait_for(lambda: len(scores.poll()) >= 10_000 and len(letters.poll()) >= 100, 120,
                 "10,000 scores and 100 dead letters")
        counts = scores_by_id(scores)
        assert set(counts) == {f"a-{i}" for i in range(10_000)}
        assert max(counts.values()) == 1, "a clean run emits exactly one score per input"
        one = scores.values[0]
        assert {"id", "card", "probability", "decision", "model_version", "latency_ms"} <= set(one)
        assert scores.keys[0] == one["id"].encode(), "scores are keyed by input id (idempotent downstream)"

        assert Counter(v["reason"] for v in letters.values) == Counter(expected_letters)
        for letter in letters.values:
            assert letter["source_topic"] == deployment.topic("transactions")
            assert letter["error_class"] == "InvalidRecord" and letter["message"]
            assert isinstance(letter["partition"], int) and isinstance(letter["offset"], int)
        binary = [v for v in letters.values if v["payload_encoding"] == "base64"]
        assert binary and base64.b64decode(binary[0]["payload"]).startswith(b"\xff\xfe")

        wait_for(lambda: deployment.committed("transactions") == produced, 30,
                 f"committed offsets to reach the produced counts {produced}")
        status, body = worker.get("/metrics")
        assert status == 200
        assert 'lepton_events_processed_total{pipeline="fraud"} 10000.0' in body
        assert 'lepton_dead_letters_total{pipeline="fraud",reason="oversized"} 10.0' in body
        calls = {name: float(value) for name, value in (line.rsplit(" ", 1) for line in body.splitlines())
                 if name.startswith("lepton_batches_per_call_") and 'pipeline="fraud"' in name}
        merged, calls = calls['lepton_batches_per_call_sum{pipeline="fraud"}'], calls['lepton_batches_per_call_count{pipeline="fraud"}']
        assert merged > calls, f"a fetch's partitions are taken in one call: {merged:.0f} batches in {calls:.0f} calls"
        assert worker.get("/healthz")[0] == 200 and worker.ready()
    finally:
        scores.close()
        letters.close()
    assert worker.stop() == 0, deployment.logs()


def test_sigkill_mid_stream_then_restart_loses_nothing_and_keeps_card_state(deployment: Deployment) -> None:
    """Fraud state is in Faust tables (the default): after the kill, the restarted worker recovers the
    card windows from the changelogs, and inputs re-delivered after the kill are not counted twice."""
    n = 40_000
    records = transactions(n, "k")
    produced = deployment.produce("transactions", records)
    first = deployment.worker(LEPTON_MAX_BATCH="500").start(HARNESS_SLEEP_PER_BATCH="0.01")
    scores = TopicReader(deployment.bootstrap, deployment.topic("fraud-scores"), deployment.partitions)
    try:
        wait_for(lambda: len(scores.poll()) >= 5_000, 120, "the first outputs")
        first.kill()  # SIGKILL while it is busy: in the middle of a batch
        before = len(scores.poll())
        at_kill = deployment.committed("transactions")
        assert before < n, "the worker finished before it could be killed mid-stream"
        deployment.worker().start()
        wait_for(lambda: len(set(scores_by_id(scores))) >= n, 180, "a score for every input after restart")
        counts = scores_by_id(scores)
        assert set(counts) == {f"k-{i}" for i in range(n)}, "no input lost"
        duplicates = sum(c - 1 for c in counts.values())
        print(f"SIGKILL at {before} outputs: {duplicates} duplicates re-emitted (at-least-once)")
        wait_for(lambda: deployment.committed("transactions") == produced, 30, "offsets committed")

        # The probe's card is on a partition with offsets committed before the kill: its windows can be
        # right only if they came back from the changelog (they are not all re-read from the input).
        partition = max(at_kill, key=lambda p: at_kill[p] or 0)
        assert at_kill[partition], f"nothing committed before the kill: {at_kill}"
        card = next(k for k, _ in records if (murmur2(k) & 0x7FFFFFFF) % deployment.partitions == partition)
        probe = {"id": "probe", "ts": NOW + 60, "card": card.decode(), "merchant": "m-probe", "amount": 42.0}
        deployment.produce("transactions", [(card, json.dumps(probe).encode())])
        got = wait_for(lambda: [v for v in scores.poll() if v["id"] == "probe"], 60, "the probe's score")[0]
        history = [json.loads(value) for key, value in records if key == card]
        with_history, without = fraud_probe_scores(deployment.home, history, probe)
        assert abs(got["probability"] - with_history) < 1e-4, \
            f"card windows not as before the kill: {got['probability']} != {with_history} (empty: {without})"
        assert abs(with_history - without) > 1e-3, "the probe must depend on the card's history"
    finally:
        scores.close()


def test_crash_mid_batch_after_partial_output(deployment: Deployment) -> None:
    n = 8_000
    produced = deployment.produce("transactions", transactions(n, "c"))
    crashing = deployment.worker(LEPTON_MAX_BATCH="400").start(HARNESS_CRASH_AT_BATCH="3")
    wait_for(lambda: not crashing.alive(), 120, "the worker to crash in its third batch")
    assert crashing.proc.returncode == 137
    scores = TopicReader(deployment.bootstrap, deployment.topic("fraud-scores"), deployment.partitions)
    try:
        partial = scores_by_id(scores)
        assert 0 < len(partial) < n
        committed = deployment.committed("transactions")
        assert sum(v or 0 for v in committed.values()) < n, "the crashed batch must not be committed"
        deployment.worker().start()
        wait_for(lambda: len(set(scores_by_id(scores))) >= n, 120, "every input scored after the restart")
        counts = scores_by_id(scores)
        assert set(counts) == {f"c-{i}" for i in range(n)}
        assert sum(c - 1 for c in counts.values()) >= 1, "the half-emitted batch is re-processed"
        wait_for(lambda: deployment.committed("transactions") == produced, 30, "offsets committed")
    finally:
        scores.close()


def test_rebalance_mid_batch_loses_nothing(deployment: Deployment) -> None:
    n = 20_000
    produced = deployment.produce("transactions", transactions(n, "r"))
    slow = {"HARNESS_SLEEP_PER_BATCH": "0.2"}
    a = deployment.worker(LEPTON_MAX_BATCH="200").start(**slow)
    scores = TopicReader(deployment.bootstrap, deployment.topic("fraud-scores"), deployment.partitions)
    try:
        wait_for(lambda: len(scores.poll()) >= 1_000, 120, "worker A's first outputs")
        b = deployment.worker(LEPTON_MAX_BATCH="200").start(**slow)  # joins: rebalance while A is mid-batch
        wait_for(b.ready, 120, "worker B to get partitions")
        wait_for(lambda: len(scores.poll()) >= 8_000, 120, "progress with two workers")
        assert b.stop() == 0  # leaves: a second rebalance
        try:
            wait_for(lambda: len(set(scores_by_id(scores))) >= n, 180, "every input scored")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {missing_by_partition(deployment, n, 'r', scores)}") from None
        assert a.alive(), "worker A survived both rebalances"
        counts = scores_by_id(scores)
        assert set(counts) == {f"r-{i}" for i in range(n)}
        print(f"rebalances: {sum(c - 1 for c in counts.values())} duplicates")
        wait_for(lambda: deployment.committed("transactions") == produced, 60, "offsets committed")
    finally:
        scores.close()


def test_dead_letters_replayed_after_a_fix_are_scored(deployment: Deployment) -> None:
    from connectors.dead_letter_replay import replay
    from streams.settings import Settings

    big = [(b"card-1", json.dumps({"id": f"big-{i}", "ts": NOW, "card": "card-1", "merchant": "m",
                                   "amount": 2_000_000.0}).encode()) for i in range(5)]
    deployment.produce("transactions", big + transactions(20, "ok"))
    strict = deployment.worker().start()
    letters = TopicReader(deployment.bootstrap, deployment.topic("dead-letters"), deployment.partitions)
    scores = TopicReader(deployment.bootstrap, deployment.topic("fraud-scores"), deployment.partitions)
    try:
        wait_for(lambda: len(letters.poll()) >= 5 and len(scores.poll()) >= 20, 120, "5 dead letters, 20 scores")
        assert {v["reason"] for v in letters.values} == {"out_of_range"}
        assert strict.stop() == 0
        # The fix: a higher limit. Restart, then send the letters back.
        deployment.worker(LEPTON_MAX_AMOUNT="10000000").start()
        settings = Settings(topic_prefix=deployment.prefix)
        assert replay(settings, deployment.bootstrap, pipeline="fraud", reason="out_of_range") == 5
        wait_for(lambda: {f"big-{i}" for i in range(5)} <= set(scores_by_id(scores)), 120,
                 "the replayed transactions to be scored")
    finally:
        letters.close()
        scores.close()

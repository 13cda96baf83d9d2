"""A real Prometheus server scrapes a real worker, and loads the alert rules.

Debian's ``prometheus`` package (CI installs it; ``apt-get install prometheus``)
provides the server. The test starts a worker on the session's embedded broker,
feeds it transactions (some malformed), starts Prometheus on loopback with a
temporary config that scrapes the worker every second and loads
deploy/prometheus/rules/lepton.yml, and asks Prometheus's HTTP API what it
stored. Skipped only when the binary is absent.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from connectors.generators import TransactionGenerator
from support import ROOT, free_port, wait_for

PROMETHEUS = shutil.which("prometheus")
RULES = ROOT / "deploy" / "prometheus" / "rules" / "lepton.yml"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PROMETHEUS is None, reason="no prometheus binary on PATH (Debian: apt-get install prometheus)"),
]


class Prometheus:
    """A Prometheus server process on loopback with its own config and storage."""

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "lepton-worker", "static_configs": [{"targets": targets}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
        )

    def api(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def test_prometheus_scrapes_lepton_series_from_a_worker(deployment, tmp_path):
    worker = deployment.worker().start()
    try:
        wait_for(worker.ready, 180, "the worker to be ready")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nworker log:\n{deployment.logs()}") from None
    events = itertools.islice(TransactionGenerator(seed=7, start_ts=time.time(), rate_per_s=1000.0), 500)
    records = [(e["card"].encode(), json.dumps(e).encode()) for e, _ in events]
    records += [(b"card-x", b"{not json"), (b"card-x", b'{"id": "bad", "ts": 1}')]
    deployment.produce("transactions", records)

    prom = Prometheus(tmp_path, [f"127.0.0.1:{worker.metrics_port}"])
    try:
        wait_for(prom.ready, 60, f"prometheus to be ready: {prom.log}")

        def value(expr: str) -> float | None:
            result = prom.query(expr)
            return float(result[0]["value"][1]) if result else None

        wait_for(lambda: value('up{job="lepton-worker"}') == 1.0, 60, "the worker target to be up")
        wait_for(lambda: (value('sum(lepton_events_consumed_total{pipeline="fraud"})') or 0) >= len(records), 90,
                 "Prometheus to see every consumed event")
        assert value('sum(lepton_events_processed_total{pipeline="fraud"})') == len(records) - 2
        dead = {r["metric"]["reason"]: float(r["value"][1]) for r in prom.query("lepton_dead_letters_total")}
        assert sum(dead.values()) == 2, dead
        # Histograms arrive whole: a latency quantile can be computed from the buckets.
        p99 = value('histogram_quantile(0.99, sum by (le) (lepton_end_to_end_latency_seconds_bucket{pipeline="fraud"}))')
        assert p99 is not None and 0 < p99 <= 60
        assert value('max(lepton_model_version_info{pipeline="fraud", role="champion"})') == 1.0

        names = set(prom.api("label/__name__/values"))
        lepton = {n for n in names if n.startswith("lepton_")}
        assert {"lepton_consumer_lag_messages", "lepton_partition_last_commit_age_seconds", "lepton_build_info"} <= lepton

        # The deployed alert rules load into a real server and evaluate without error.
        groups = prom.api("rules")["groups"]
        rules = {r["name"]: r for g in groups for r in g["rules"]}
        assert {"WorkerDown", "PartitionStalled", "DriftDetected"} <= set(rules)
        def rule_states() -> dict[str, tuple[str, str]]:
            return {r["name"]: (r.get("health"), r.get("state")) for g in prom.api("rules")["groups"] for r in g["rules"]}

        # Every rule evaluates; WorkerDown, pending before the first scrape
        # (absent(up)), goes back to inactive once the worker answers.
        wait_for(lambda: all(h == "ok" for h, _ in rule_states().values()), 30, "every rule to evaluate without error")
        wait_for(lambda: rule_states()["WorkerDown"][1] == "inactive", 30, "WorkerDown to be inactive")
    finally:
        prom.stop()

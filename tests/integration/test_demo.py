"""``lepton demo`` as a person runs it: live view, then Ctrl-C stops everything.

The demo runs as its own process (the real CLI) on the session's broker with a
fraud model already trained, until its live view shows scored events and dead
letters; then it gets SIGINT, as from Ctrl-C, and must exit 0 with every child
process (worker, generators) gone.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from support import ROOT, free_port, wait_for

pytestmark = pytest.mark.integration


def processes_with(marker: str) -> list[int]:
    """Pids of this user's processes whose environment holds ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if marker.encode() in (proc / "environ").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return resp.read().decode()
    except OSError:
        return ""


def counter(text: str, name: str, pipeline: str) -> float:
    return sum(float(v) for v in re.findall(rf'^{name}\{{[^}}]*pipeline="{pipeline}"[^}}]*\}} (\S+)$', text, re.M))


def test_demo_shows_the_live_view_and_stops_cleanly_on_ctrl_c(broker, fraud_model_home, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(fraud_model_home / "models", home / "models")
    port = free_port()
    marker = f"LEPTON_TOPIC_PREFIX=demo-{port}."
    env = {**os.environ, "LEPTON_KAFKA_BOOTSTRAP": broker, "LEPTON_HOME": str(home), "LEPTON_METRICS_PORT": str(port),
           "LEPTON_TOPIC_PREFIX": marker.split("=", 1)[1], "LEPTON_APP_ID": f"demo-{port}",
           "LEPTON_SESSION_TIMEOUT_S": "6", "LEPTON_HEARTBEAT_INTERVAL_S": "1", "COLUMNS": "160"}
    out = tmp_path / "demo.out"
    demo = subprocess.Popen([sys.executable, "-m", "streams.cli", "demo", "--pipelines", "fraud", "--rate", "200"],
                            env=env, cwd=ROOT, stdout=open(out, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        def progressed() -> bool:
            if demo.poll() is not None:
                raise AssertionError(f"the demo exited {demo.returncode}:\n{out.read_text()[-3000:]}")
            text = scrape(port)
            return counter(text, "lepton_events_processed_total", "fraud") > 500 and \
                counter(text, "lepton_dead_letters_total", "fraud") >= 1
        wait_for(progressed, 150, "the worker to score events and dead-letter the broken client's records", every=1)
        assert len(processes_with(marker)) >= 3  # the demo, its worker and its generator
        demo.send_signal(signal.SIGINT)
        assert demo.wait(90) == 0, out.read_text()[-3000:]
    finally:
        if demo.poll() is None:
            demo.kill()
    text = out.read_text()
    assert f"metrics: http://127.0.0.1:{port}/metrics" in text
    assert f"static_configs: [{{targets: ['127.0.0.1:{port}']}}]" in text  # the scrape job to give Prometheus
    assert "Lepton Streams: live" in text and "stopping" in text
    last_frame = text[text.rindex("Lepton Streams: live"):]
    row = next(line for line in last_frame.splitlines() if line.startswith("│ fraud "))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert int(cells[2].replace(",", "")) > 500  # processed
    assert cells[6] == "v1"
    wait_for(lambda: not processes_with(marker), 10, "every child process to be gone")
    assert scrape(port) == ""

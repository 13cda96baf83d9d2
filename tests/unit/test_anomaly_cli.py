"""`lepton evaluate anomaly` and the sending side of `lepton produce anomaly` (folders, maintenance intervals)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from click.testing import CliRunner

from connectors.producer import schedule
from connectors.replay import read_events_from
from streams.cli import main


def _run_file(path: Path, seed: int, fault: tuple[int, int] | None, n: int = 700) -> None:
    """A SKAB-shaped run: ``datetime;<sensors>;anomaly``, one frame a second."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) + np.array([10.0, 20.0, 30.0])
    y = np.zeros(n, dtype=int)
    if fault:
        x[fault[0]:fault[1], 0] += 6.0
        y[fault[0]:fault[1]] = 1
    stamps = pd.date_range("2020-03-01 10:00:00", periods=n, freq="s") + pd.Timedelta(hours=seed)
    df = pd.DataFrame({"datetime": stamps.strftime("%Y-%m-%d %H:%M:%S"), "a": x[:, 0], "b": x[:, 1], "c": x[:, 2]})
    if fault is not None:
        df["anomaly"] = y
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, sep=";", index=False)


def test_evaluate_anomaly_prints_json_and_writes_scores(tmp_path: Path) -> None:
    data = tmp_path / "bench"
    _run_file(data / "rig" / "0.csv", 0, (400, 550))
    _run_file(data / "rig" / "1.csv", 1, (450, 600))
    _run_file(data / "free" / "normal.csv", 2, None, n=1500)
    scores = tmp_path / "scores.csv"
    result = CliRunner().invoke(main, ["evaluate", "anomaly", "--data", str(data), "--json", "--train-frames", "200",
                                       "--scores-out", str(scores), "--report", str(tmp_path / "report")],
                                env={"LEPTON_HOME": str(tmp_path / "home"), "LEPTON_ANOMALY_WARMUP_FRAMES": "200"})
    assert result.exit_code == 0, result.output
    r = json.loads(result.output.strip().splitlines()[-1])
    assert {"f1", "far", "mar", "alerts"} <= set(r)
    assert r["protocol"]["reference_runs"] == ["free-normal"] and r["protocol"]["labelled_runs"] == 2
    assert r["f1"] > 0.5 and r["detection"]["detected"] == 2  # a 6-sd shift is found in both runs
    df = pd.read_csv(scores)
    assert set(df["equipment_id"]) == {"rig-0", "rig-1"} and df["score"].between(0, 1).all()
    assert (df[df["part"] == "train"].groupby("equipment_id").size() == 200).all()


def test_evaluate_anomaly_says_what_is_wrong_with_the_data(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["evaluate", "anomaly", "--data", str(tmp_path / "empty")],
                                env={"LEPTON_HOME": str(tmp_path / "home")})
    assert result.exit_code == 2
    assert "no CSV or Parquet files" in result.output and "fix:" in result.output


def test_a_folder_replays_as_one_stream_with_maintenance_intervals(tmp_path: Path) -> None:
    _run_file(tmp_path / "valve1" / "0.csv", 0, (400, 550))
    _run_file(tmp_path / "valve1" / "1.csv", 0, (450, 600))  # same hours: the two runs interleave
    pairs = list(read_events_from("anomaly", tmp_path))
    events = [e for e, _ in pairs]
    assert len(events) == 1400 and {e["equipment_id"] for e in events} == {"valve1-0", "valve1-1"}
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    messages = list(schedule("anomaly", events, [y for _, y in pairs], label_max_frames=1000))
    labels = [rec for is_label, _, rec in messages if is_label]
    run0 = [(r["to_ts"] - r["from_ts"], r["is_anomaly"]) for r in labels if r["equipment_id"] == "valve1-0"]
    assert run0 == [(399.0, False), (149.0, True), (149.0, False)]
    # every key is the equipment: labels land in its frames' partition
    assert all(key == rec["equipment_id"] for _, key, rec in messages)

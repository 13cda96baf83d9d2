"""``lepton train sentiment --data A --data B`` and ``lepton evaluate sentiment`` through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from connectors.generators import ChatGenerator
from streams.cli import main


def test_train_on_two_files_then_evaluate_with_json_and_predictions(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    ChatGenerator(seed=1, start_ts=1_700_000_000.0).batch(1500).to_csv(a, index=False)
    ChatGenerator(seed=2, start_ts=1_800_000_000.0).batch(500).to_csv(b, index=False)
    home = tmp_path / "home"
    runner = CliRunner()
    out = runner.invoke(main, ["--home", str(home), "train", "sentiment", "--data", str(a), "--data", str(b),
                               "--epochs", "2"])
    assert out.exit_code == 0, out.output
    assert "registered sentiment v1" in out.output
    meta = json.loads((home / "models" / "sentiment" / "v1" / "meta.json").read_text())
    assert meta["training"]["rows"] == 2000 and meta["extra"]["kind"] == "fast"

    out = runner.invoke(main, ["--home", str(home), "evaluate", "sentiment", "--data", str(a), "--test", str(b),
                               "--json", "--epochs", "2", "--predictions-out", str(tmp_path / "p.csv"),
                               "--report", str(tmp_path / "report")])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output.strip().splitlines()[-1])
    assert result["test_rows"] == 500 and result["macro_f1"] > 0.8
    assert {"accuracy", "macro_f1", "macro_recall", "confusion"} <= set(result)
    assert (tmp_path / "p.csv").is_file() and (tmp_path / "report" / "metrics.json").is_file()

    out = runner.invoke(main, ["--home", str(home), "evaluate", "sentiment", "--data", str(a), "--test-where", "channel=nope"])
    assert out.exit_code == 2 and "no row matches" in out.output and "fix:" in out.output
    out = runner.invoke(main, ["--home", str(home), "train", "fraud", "--data", str(a), "--data", str(b)])
    assert out.exit_code == 2 and "reads one --data file" in out.output


def test_synthetic_chat_timing_and_a_share_of_corrections() -> None:
    import time

    from streams.cli import _chat_timing, _some_labels

    assert _chat_timing(500.0, 1000) == {"rate_per_s": 500.0}  # paced: event time is the wall clock
    unpaced = _chat_timing(None, 36_000)  # unpaced: an hour of chat at 10/s that ends now
    assert unpaced["rate_per_s"] == 10.0 and abs(unpaced["start_ts"] - (time.time() - 3600)) < 5
    pairs = [({"id": str(i)}, "negative") for i in range(5000)]
    kept = [label for _, label in _some_labels(iter(pairs), 0.1, seed=0)]
    assert len(kept) == 5000 and 400 < sum(label is not None for label in kept) < 600

"""``evaluate_fraud`` on a slice of the real handbook data (``../shared`` beside the repository).

A five-week slice written back in the handbook's own column format, so the file
path through ``connectors.replay`` is exercised too. The floors are far above
what a broken model gets (average precision ≈ the fraud rate, under 0.01) and
below what this slice gives (AP 0.63, AUC 0.88, CP@100 0.32; online AP 0.50; ~20 s); the full-file
figures are in ``models/fraud/README.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "fraud" / \
    "transactions-2018-04-01_2018-08-14.csv.gz"

pytestmark = pytest.mark.skipif(not DATA.is_file(), reason=f"the handbook data is not at {DATA} (../shared)")


@pytest.fixture(scope="module")
def slice_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    df = pd.read_csv(DATA)
    stamp = pd.to_datetime(df["TX_DATETIME"])
    part = df[(stamp >= "2018-06-01") & (stamp < "2018-07-06")]
    path = tmp_path_factory.mktemp("fraud") / "slice.csv"
    part.to_csv(path, index=False)
    return path


@pytest.mark.timeout(120)
def test_evaluation_on_a_slice_of_the_handbook_data(slice_file: Path, tmp_path: Path) -> None:
    from models.fraud.evaluate import evaluate_fraud

    report = tmp_path / "report"
    scores = tmp_path / "scores.csv"
    result = evaluate_fraud(slice_file, "2018-06-29", "2018-07-05", label_delay_days=7, scores_out=scores,
                            report_dir=report, epochs=4)
    assert result["average_precision"] >= 0.5, result["models"]
    assert result["auc_roc"] >= 0.8, result["models"]
    assert result["card_precision_at_100"] >= 0.15, result["models"]
    assert result["models"]["online"]["average_precision"] >= 0.3, result["models"]
    # The test set is the handbook's: fewer rows than the week (known-compromised cards removed).
    test = result["test"]
    assert 0 < test["filtered_transactions"] < test["transactions"]
    assert result["training"]["labels_known_before"].startswith("2018-06-22")
    # A report a person can open, and the scores of every test-period transaction.
    for name in ("metrics.json", "precision_recall.png", "score_distribution.png", "alerts_per_day.png"):
        assert (report / name).stat().st_size > 1000, name
    assert json.loads((report / "metrics.json").read_text())["average_precision"] == result["average_precision"]
    written = pd.read_csv(scores)
    assert len(written) == test["transactions"] and int(written["in_test_set"].sum()) == test["filtered_transactions"]
    assert json.dumps(result)  # JSON-able as it is (``--json``)


@pytest.mark.timeout(120)
def test_lepton_evaluate_fraud_command(slice_file: Path, tmp_path: Path) -> None:
    """`lepton evaluate fraud ... --json`: the figures on the last line, the report and the scores written."""
    from click.testing import CliRunner

    from streams.cli import main

    scores = tmp_path / "scores.csv"
    result = CliRunner().invoke(main, ["evaluate", "fraud", "--data", str(slice_file), "--test-start", "2018-06-29",
                                       "--test-end", "2018-07-05", "--label-delay-days", "7", "--json",
                                       "--scores-out", str(scores), "--report", str(tmp_path / "report"),
                                       "--epochs", "2"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["average_precision"] >= 0.4 and out["auc_roc"] >= 0.75, out["models"]
    assert {"card_precision_at_100", "models", "test"} <= set(out)
    assert "onnx" in result.output and "(served)" in result.output
    assert scores.stat().st_size > 0 and (tmp_path / "report" / "metrics.json").is_file()
    bad = CliRunner().invoke(main, ["evaluate", "fraud", "--data", str(slice_file), "--test-start", "2019-01-01",
                                    "--test-end", "2019-01-07"])
    assert bad.exit_code == 2 and "fix:" in bad.output

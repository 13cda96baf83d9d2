"""``evaluate_sentiment`` on slices of the real data sets (``../shared`` beside the repository).

The airline slice is the first 5,000 messages in time (4,000 to train, 1,000 to
test, the agreed 80/20 split); the SemEval slice takes 4,000 training tweets and
1,000 ``twitter-2016test`` tweets. The floors are far above chance (macro-F1 of
a constant answer: ~0.25) and below what the slices give; the full-data figures
are in ``models/sentiment/README.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "sentiment"
AIRLINE = DATA / "airline-tweets.csv.gz"
SEMEVAL = DATA / "semeval-2013-2016.csv.gz"

pytestmark = pytest.mark.skipif(not AIRLINE.is_file() or not SEMEVAL.is_file(),
                                reason=f"the sentiment data sets are not in {DATA} (../shared)")


@pytest.mark.timeout(120)
def test_airline_slice_end_to_end(tmp_path: Path) -> None:
    from models.sentiment.evaluate import evaluate_command
    from streams.settings import Settings

    part = pd.read_csv(AIRLINE).sort_values("ts", kind="stable").head(5000)
    data = tmp_path / "airline-slice.csv"
    part.to_csv(data, index=False)
    lines: list[str] = []
    result = evaluate_command(data, predictions_out=tmp_path / "predictions.csv", report_dir=tmp_path / "report",
                              json_out=True, settings=Settings(home=tmp_path / "home"), echo=lines.append)
    last = json.loads(lines[-1])
    assert {"accuracy", "macro_f1", "macro_recall"} <= set(last)
    assert result["test_rows"] == 1000 and result["n"] == 1000
    assert result["macro_f1"] >= 0.55 and result["accuracy"] >= 0.65
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert len(predictions) == 1000 and set(predictions["predicted"]) <= {"negative", "neutral", "positive"}
    for name in ("metrics.json", "confusion.png", "report.html"):
        assert (tmp_path / "report" / name).is_file()
    assert result["pipeline_stats"]["messages_per_s"] > 1000


@pytest.mark.timeout(120)
def test_semeval_slice_with_test_where(tmp_path: Path) -> None:
    from models.sentiment.evaluate import evaluate_sentiment
    from streams.settings import Settings

    df = pd.read_csv(SEMEVAL)
    test = df[df["source"] == "twitter-2016test"].sample(1000, random_state=0)
    train = df[df["source"] != "twitter-2016test"].sample(4000, random_state=0)
    data = tmp_path / "semeval-slice.csv"
    pd.concat([train, test]).to_csv(data, index=False)
    result = evaluate_sentiment(data, test_where="source=twitter-2016test", settings=Settings(home=tmp_path / "h"),
                                word_vectors=False)
    assert result["test_rows"] == 1000
    assert result["macro_recall"] >= 0.45 and result["macro_f1"] >= 0.4

"""The exact recipes behind the numbers in ``models/sentiment/README.md``.

Both learn from the *training parts* of the two public data sets only (airline:
first 80 % in time; SemEval: every source but ``twitter-2016test``), so that
one registered model can be evaluated on both test parts
(``lepton evaluate sentiment --version N``).

* ``accurate``: MiniLM fine-tuned in two one-epoch runs, each over every airline
  training message plus 14,000 SemEval training messages drawn afresh (a
  CPU budget of about 25,000 messages per epoch), the second continuing from
  the first at a lower learning rate. About 15-30 minutes per run on one core.
* ``fast``: ``lepton train sentiment`` on both files' training parts, distilled
  from the accurate model (``--teacher``), word vectors from MiniLM.

    python -m models.sentiment.recipes accurate --airline A.csv.gz --semeval S.csv.gz
    python -m models.sentiment.recipes fast --airline A.csv.gz --semeval S.csv.gz --teacher N
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.meta import ModelMeta

from .data import read_labelled, training_part

SEMEVAL_TEST = "source=twitter-2016test"
SEMEVAL_PER_EPOCH = 14_000


def _epoch_rows(airline: Path, semeval: Path, seed: int) -> tuple[list[str], np.ndarray]:
    a = training_part(read_labelled(airline), SEMEVAL_TEST)
    s = training_part(read_labelled(semeval), SEMEVAL_TEST)
    pick = np.sort(np.random.default_rng(seed).choice(len(s), min(SEMEVAL_PER_EPOCH, len(s)), replace=False))
    s = s.iloc[pick]
    return [*a["text"].tolist(), *s["text"].tolist()], np.concatenate([a["y"].to_numpy(), s["y"].to_numpy()])


def accurate(settings: Any, airline: Path, semeval: Path, promote: bool = False, progress: bool = True) -> ModelMeta:
    from .accurate import AccurateConfig, train_accurate
    from .train import _bar, register_model

    runs = [AccurateConfig(epochs=1, lr=8e-5, head_lr=2e-3, freeze_layers=2, seed=0),
            AccurateConfig(epochs=1, lr=4e-5, head_lr=5e-4, warmup=0.02, freeze_layers=2, seed=1)]
    model = encoder = None
    started = time.time()
    for i, cfg in enumerate(runs):
        texts, y = _epoch_rows(airline, semeval, seed=i)
        with _bar(progress, 1, f"fine-tuning MiniLM, run {i + 1}/2 ({len(texts)} texts)") as report:
            encoder, model = train_accurate(texts, y, cfg, start=model,
                                            progress=lambda step, total, loss: report(step / total, loss))
    training = {"source": f"{airline} + {semeval} (training parts)", "recipe": "models.sentiment.recipes.accurate",
                "runs": [vars(c) for c in runs], "semeval_per_epoch": SEMEVAL_PER_EPOCH,
                "train_part_only": True, "test_where": SEMEVAL_TEST, "kind": "accurate",
                "seconds": round(time.time() - started, 1)}
    return register_model(settings, "accurate", encoder, model, metrics={}, training=training, promote=promote)


def fast(settings: Any, airline: Path, semeval: Path, teacher: int | None, promote: bool = True,
         progress: bool = True) -> ModelMeta:
    from .train import train_sentiment

    return train_sentiment(settings, [airline, semeval], promote=promote, progress=progress, model="fast",
                           test_where=SEMEVAL_TEST, train_part_only=True, teacher=teacher)


def main() -> None:
    from streams.settings import get_settings

    parser = argparse.ArgumentParser(description="the recipes behind the sentiment README's numbers")
    parser.add_argument("model", choices=("accurate", "fast"))
    parser.add_argument("--airline", type=Path, required=True)
    parser.add_argument("--semeval", type=Path, required=True)
    parser.add_argument("--teacher", type=int, help="fast: the registered accurate version to distil")
    parser.add_argument("--promote", action="store_true")
    args = parser.parse_args()
    settings = get_settings()
    if args.model == "accurate":
        meta = accurate(settings, args.airline, args.semeval, promote=args.promote)
    else:
        meta = fast(settings, args.airline, args.semeval, args.teacher, promote=args.promote)
    print(f"registered sentiment v{meta.version} ({meta.extra['kind']}) in {settings.models_dir}")


if __name__ == "__main__":
    main()

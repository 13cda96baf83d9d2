"""How fast the fraud feature engine and the online model are, per transaction, on the worker's batches.

Warms the state up on the first ``warm_days`` (so cards and terminals carry
their full 30-day history, as in steady state), then times ``transform``,
``apply_labels`` and the online model's ``score`` and ``learn`` on batches of
``batch_size``, one thread, in event-time order with labels 7 days late.
Times are this process's CPU time, so other work on the machine does not
inflate them (the machine is shared).

    python -m models.fraud.bench [FILE] [--batch-size 2000] [--state-format bytes|json]

Without a file it uses the synthetic generator (handbook pace).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .features import DAY, FEATURES, FeatureEngine, to_json
from .online import OnlineFraudModel


def feature_throughput(frame: pd.DataFrame, *, batch_size: int = 2000, warm_days: float = 40.0,
                       timed_rows: int = 300_000, label_delay_days: int = 7,
                       state_format: str = "bytes") -> dict[str, float]:
    """µs per transaction / per label of each step, after a warm-up; ``frame`` sorted by ts."""
    ts = frame["ts"].to_numpy(dtype=np.float64)
    card = frame["card"].to_numpy(dtype=object)
    term = frame["merchant"].to_numpy(dtype=object)
    amount = frame["amount"].to_numpy(dtype=np.float64)
    y = frame["label"].fillna(False).astype(bool).to_numpy()
    arrival = ts + label_delay_days * DAY
    engine = FeatureEngine(label_delay_days, state_format=state_format)
    online = OnlineFraudModel(FEATURES)
    cards: dict = {}
    terms: dict = {}
    X = np.empty((len(ts), len(FEATURES)), dtype=np.float32)
    start_timing = int(np.searchsorted(ts, ts[0] + warm_days * DAY))
    stop = min(len(ts), start_timing + timed_rows)
    spent = {"transform": 0.0, "apply_labels": 0.0, "online_score": 0.0, "online_learn": 0.0}
    labelled = 0
    timed_tx = timed_labels = 0
    for a in range(0, stop, batch_size):
        b = min(a + batch_size, stop)
        timing = a >= start_timing
        upto = int(np.searchsorted(arrival, ts[a], side="right"))
        if upto > labelled:
            sl = slice(labelled, upto)
            t0 = time.process_time()
            engine.apply_labels(cards, terms, card[sl], term[sl], ts[sl], y[sl], label_ts=ts[a])
            t1 = time.process_time()
            online.learn(X[sl], y[sl])
            t2 = time.process_time()
            if timing:
                spent["apply_labels"] += t1 - t0
                spent["online_learn"] += t2 - t1
                timed_labels += upto - labelled
            labelled = upto
        t0 = time.process_time()
        X[a:b] = engine.transform(ts[a:b], card[a:b], term[a:b], amount[a:b], cards, terms)
        t1 = time.process_time()
        online.score(X[a:b])
        t2 = time.process_time()
        if timing:
            spent["transform"] += t1 - t0
            spent["online_score"] += t2 - t1
            timed_tx += b - a
    if timed_tx == 0:
        raise ValueError(f"the data is shorter than the {warm_days}-day warm-up")
    per = {f"{k}_us_per_tx": round(v / timed_tx * 1e6, 2) for k, v in spent.items() if k in ("transform", "online_score")}
    per.update({f"{k}_us_per_label": round(v / max(timed_labels, 1) * 1e6, 2)
                for k, v in spent.items() if k in ("apply_labels", "online_learn")})
    per.update({"state_format": state_format, "transactions": timed_tx, "labels": timed_labels, "batch_size": batch_size,
                "card_state_numbers_mean": round(float(np.mean([len(to_json(s)) for s in cards.values()])), 1),
                "terminal_state_numbers_mean": round(float(np.mean([len(to_json(s)) for s in terms.values()] or [0])), 1)})
    return per


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", type=Path)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--state-format", choices=("bytes", "json"), default="bytes")
    args = parser.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    if args.data is not None:
        from connectors.replay import read_frame

        frame = read_frame("fraud", args.data)
    else:
        from connectors.generators import TransactionGenerator

        frame = TransactionGenerator(seed=1, start_ts=1_700_000_000.0).batch(800_000)
    print(json.dumps(feature_throughput(frame, batch_size=args.batch_size, state_format=args.state_format)))


if __name__ == "__main__":
    main()

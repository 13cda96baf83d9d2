"""CPU cost of the fraud worker's own code per transaction: everything but Kafka and JSON parsing.

Runs :class:`~streams.fraud.FraudPipeline` as the worker does (its three tables
are real Faust tables behind :class:`~streams.state.table.BatchTable`, so the
changelog records are built too; an app that is never started, no broker),
on a labelled file in event-time order, batches of ``batch_size`` on
``partitions`` partitions (keyed by card; up to ``max_merged_batches`` partitions'
batches scored in one call, as the worker takes a fetch's batches), labels arriving ``label_delay_days``
late in batches: features from state, ONNX, the online model, outputs,
alerts and their explanations, logging, expiry, label join and learning.
Times are this process's CPU time in the pipeline's calls after a warm-up (building
each batch's inputs, the transport's part in a worker, is reported apart as
``harness_us_per_tx``), so ``1e6 / us_per_tx`` is the rate one core sustains for
this part of the worker. Other work on a shared machine still inflates them
(caches, a busy sibling core): ``--versus SETTING=VALUE`` runs a second pipeline
with a setting changed in the same process, the two taking turns batch by batch,
so that a comparison is a ratio measured under the same load.

    python -m streams.bench.fraud_process [FILE] [--rows 300000] [--warm-days 40] [--breakdown]
    python -m streams.bench.fraud_process FILE --versus max_merged_batches=1

``--breakdown`` adds where the time goes: CPU µs per transaction in each part
(timed around whole calls, so the parts cost what they cost in the run; what
no part covers is ``other``: output records, logging, alerts, metrics).

Needs a registered fraud model (``lepton train fraud``) in ``LEPTON_HOME``.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

DAY = 86_400.0

# (label, object path, method): the parts timed by --breakdown, outermost first; a call inside
# another timed part is counted in the inner one only.
PARTS = [
    ("features (card and terminal windows)", "engine", "transform"),
    ("terminal states read (cache loads)", "pipeline", "_terminal_view"),
    ("ONNX (scores, alert explanations)", "scorer", "predict"),
    ("River score", "online", "score"),
    ("logged record packed", "logged", "pack"),
    ("expiry sweeps", "pipeline", "_expire"),
    ("logged records unpacked", "logged", "unpack"),
    ("labels applied to card/terminal state", "engine", "apply_labels"),
    ("River learn + prequential", "online", "learn"),
    ("prequential gauges", "pipeline", "export_quality"),
    ("table flush (changelog records)", "table", "flush"),
]


class _Timer:
    """Wraps methods to add up this process's CPU time in each (nested calls counted once, innermost)."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self._stack: list[list] = []

    def wrap(self, obj, name: str, label: str) -> None:
        inner = getattr(obj, name)
        stack, spent = self._stack, self.spent

        def timed(*args, **kwargs):
            frame = [time.process_time(), 0.0]
            stack.append(frame)
            try:
                return inner(*args, **kwargs)
            finally:
                stack.pop()
                took = time.process_time() - frame[0]
                spent[label] = spent.get(label, 0.0) + took - frame[1]
                if stack:
                    stack[-1][1] += took

        setattr(obj, name, timed)


def _fraud_pipeline(settings, name: str):
    """A :class:`~streams.fraud.FraudPipeline` with real Faust tables (an app never started, no broker)."""
    import faust

    from models.fraud.features import FEATURES
    from models.registry import ModelRegistry

    from ..fraud import FraudPipeline
    from ..model_slot import ModelSlot
    from ..state.table import BatchTable

    slot = ModelSlot(ModelRegistry(settings.models_dir), "fraud", features=FEATURES)
    slot.load_now()
    pipeline = FraudPipeline(slot, settings.topics, settings)
    app = faust.App(f"lepton-fraud-cost-{name}", broker="memory://", store="memory://")
    parts = settings.partitions
    pipeline.cards = BatchTable(app, "fraud-cards", partitions=parts)
    pipeline.scored = BatchTable(app, "fraud-scored", partitions=parts)
    pipeline.terminals = BatchTable(app, "fraud-terminals", partitions=parts)
    return pipeline


def pipeline_cost(frame: pd.DataFrame, settings, *, batch_size: int = 2000, warm_days: float = 40.0,
                  rows: int = 300_000, label_delay_days: int = 7, breakdown: bool = False,
                  versus: dict | None = None) -> dict:
    """µs of CPU per transaction (labels included, one per transaction) after ``warm_days``.

    ``versus`` (setting → value): a second pipeline with those settings is fed the same batches
    in the same process, the two taking turns batch by batch (which one goes first alternates),
    so load from other work falls on both alike; the result adds its cost and the ratio.
    """
    from ..gc_pauses import freeze_long_lived
    from ..pipeline import Group
    from ..records import Transaction

    if breakdown and versus:
        raise ValueError("--breakdown times one pipeline: drop it or --versus")
    runs = [(settings, _fraud_pipeline(settings, "a"))]
    if versus:
        other = settings.model_copy(update=versus)
        runs.append((other, _fraud_pipeline(other, "b")))
    pipeline = runs[0][1]
    parts = settings.partitions
    timer = _Timer() if breakdown else None
    if timer is not None:
        from models.fraud import logged

        targets = {"engine": pipeline.engine(label_delay_days), "pipeline": pipeline, "scorer": pipeline.slot.scorer,
                   "online": pipeline.online, "logged": logged}
        for label, what, method in PARTS:
            if what == "table":
                for table in (pipeline.cards, pipeline.scored, pipeline.terminals):
                    timer.wrap(table, method, label)
            else:
                timer.wrap(targets[what], method, label)

    ts = frame["ts"].to_numpy(dtype=np.float64)
    start = int(np.searchsorted(ts, ts[0] + warm_days * DAY))
    stop = min(len(ts), start + rows)
    if start >= stop:
        raise ValueError(f"the data is shorter than the {warm_days}-day warm-up")
    frame = frame.iloc[:stop]
    ids = frame["id"].astype(str).tolist() if "id" in frame.columns else [f"tx{i}" for i in range(stop)]
    events = [Transaction(i, t, c, m, a) for i, t, c, m, a in
              zip(ids, ts[:stop].tolist(), frame["card"].astype(str).tolist(), frame["merchant"].astype(str).tolist(),
                  frame["amount"].astype(float).tolist())]
    y = frame["label"].fillna(False).astype(bool).tolist()
    part = (pd.util.hash_array(frame["card"].astype(str).to_numpy()) % parts).astype(np.int64)
    labels = [json.dumps({"id": i, "is_fraud": v}).encode() for i, v in zip(ids, y)]
    arrival = ts[:stop] + label_delay_days * DAY
    # As the worker does once started (streams/worker.py): what exists now never becomes garbage. Here that
    # also takes the harness's own inputs (one tracked Transaction per row, never in a worker's heap) out of
    # the full collections, which would otherwise charge their traversal to the fraud code.
    freeze_long_lived(settings.gc_young_threshold)
    offsets = np.zeros(parts, dtype=np.int64)
    labelled = 0
    spent = [0.0] * len(runs)
    outputs = [0] * len(runs)
    timed_tx = 0
    harness = 0.0  # building each batch's inputs (the transport's part in a worker): reported, not counted
    warm = True
    for k, a in enumerate(range(0, stop, batch_size)):
        b = min(a + batch_size, stop)
        timing = a >= start
        if timing and warm:
            # River's rolling metrics buffer their labels until a full export (every 15 s of wall time, so in or
            # out of the timed part by chance: 0 or ~4 µs per transaction): the warm-up's are flushed uncounted.
            for _, run in runs:
                run.export_quality(force=True)
            if timer is not None:
                timer.spent.clear()  # the warm-up's share is not counted
            warm = False
        t0 = time.process_time()
        upto = int(np.searchsorted(arrival, ts[a], side="right"))
        work = []
        if upto > labelled:
            lp = part[labelled:upto]
            work = [([labels[i] for i in np.flatnonzero(lp == p) + labelled], p) for p in range(parts)]
            labelled = upto
        bp = part[a:b]
        groups = []
        for p in range(parts):
            idx = np.flatnonzero(bp == p) + a
            if len(idx):
                offs = list(range(int(offsets[p]), int(offsets[p]) + len(idx)))
                offsets[p] += len(idx)
                groups.append(Group([events[i] for i in idx], offs, p))
        if timing:
            harness += time.process_time() - t0
        for r in (range(len(runs)) if k % 2 == 0 else reversed(range(len(runs)))):
            run_settings, run = runs[r]
            merged = run_settings.max_merged_batches  # partitions' batches per call (LEPTON_MAX_MERGED_BATCHES)
            t0 = time.process_time()
            for raws, p in work:
                outputs[r] += len(run.process_labels(raws, p, ts[a]))
            for g in range(0, len(groups), merged):  # as the worker's agent takes a fetch's batches
                outputs[r] += sum(map(len, run.process_batches(groups[g:g + merged], ts[b - 1])))
            if timing:
                spent[r] += time.process_time() - t0
        if timing:
            timed_tx += b - a
    for r, (_, run) in enumerate(runs):  # the timed labels' share of the rolling metrics, counted
        t0 = time.process_time()
        run.export_quality(force=True)
        spent[r] += time.process_time() - t0
    gc.unfreeze()
    result = {"us_per_tx": round(spent[0] / timed_tx * 1e6, 2), "tx_per_cpu_second": round(timed_tx / spent[0]),
              "transactions": timed_tx, "batch_size": batch_size, "partitions": parts,
              "merged_batches": settings.max_merged_batches, "online_updates": pipeline.online.updates,
              "outputs": outputs[0], "harness_us_per_tx": round(harness / timed_tx * 1e6, 2)}
    if timer is not None:
        parts_us = {label: round(timer.spent.get(label, 0.0) / timed_tx * 1e6, 2) for label, _, _ in PARTS}
        parts_us["other"] = round(result["us_per_tx"] - sum(parts_us.values()), 2)
        result["breakdown_us_per_tx"] = parts_us
    if versus:
        result["versus"] = {"settings": versus, "us_per_tx": round(spent[1] / timed_tx * 1e6, 2),
                            "outputs": outputs[1], "ratio": round(spent[1] / spent[0], 3)}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", type=Path)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--warm-days", type=float, default=40.0)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--breakdown", action="store_true", help="CPU µs per transaction in each part")
    parser.add_argument("--versus", action="append", default=[], metavar="SETTING=VALUE",
                        help="also run a pipeline with this setting changed, in the same process, batch for batch "
                             "(e.g. max_merged_batches=1); repeatable")
    args = parser.parse_args(argv)
    from pydantic import TypeAdapter

    from ..settings import Settings

    settings = Settings()
    versus = {}
    for item in args.versus:
        key, sep, value = item.partition("=")
        if not sep or key not in Settings.model_fields:
            parser.error(f"--versus {item!r}: expected SETTING=VALUE with a setting of streams/settings.py")
        versus[key] = TypeAdapter(Settings.model_fields[key].annotation).validate_python(value)
    if args.data is not None:
        from connectors.replay import read_frame

        frame = read_frame("fraud", args.data)
    else:
        from connectors.generators import TransactionGenerator

        frame = TransactionGenerator(seed=1, start_ts=1_700_000_000.0).batch(800_000)
    print(json.dumps(pipeline_cost(frame, settings, batch_size=args.batch_size, warm_days=args.warm_days,
                                   rows=args.rows, breakdown=args.breakdown, versus=versus or None)))


if __name__ == "__main__":
    main()

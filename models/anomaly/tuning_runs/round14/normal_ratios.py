"""Round 14, before group 2: how high is the score ratio on normal data (training data only)?

Model seed 0, both folds, trained and calibrated as ``tuning.run_grid`` does with the defaults (target_far 0.125);
the held-out normal segments the threshold is calibrated on (long segments and the labelled runs' training parts,
``_holdout_of``) streamed through the engine with the defaults: quantiles of the ratio of frames not under an
alert, and the share of frames a sticky hold (``Baseline.held_rows``) would hold at a few levels. No proxy fault,
no test part. Run from the repository root with the venv: ``python models/anomaly/tuning_runs/round14/normal_ratios.py``.
"""
import numpy as np

from models.anomaly.config import AnomalyConfig
from models.anomaly.data import load_series
from models.anomaly.engine import AnomalyEngine
from models.anomaly.features import Baseline
from models.anomaly.train import _Scorer, calibrate_threshold, fit, frames_of, normal_operation
from models.anomaly.tuning import _holdout_of, pseudo_runs

WARMUP = 400
series = load_series("/work/shared/datasets/anomaly/skab")
labelled_parts = normal_operation([s for s in series if not s.reference], train_frames=WARMUP)
runs = pseudo_runs([s for s in series if s.reference])
fold_of = {r.equipment_id: i % 2 for i, r in enumerate(runs)}
fold_of.update({p.equipment_id: i % 2 for i, p in enumerate(labelled_parts)})
cfg = AnomalyConfig(warmup_frames=WARMUP, seed=0)
ratios, alerts = [], []
for f in range(2):
    train_runs = [r for r in runs + labelled_parts if fold_of[r.equipment_id] != f]
    m = fit(train_runs, cfg, epochs=30, seed=0, target_far=0.05)
    scorer = _Scorer(m.onnx_bytes, m.meta)
    holdout = _holdout_of(train_runs, cfg)
    t, far, _ = calibrate_threshold(holdout, scorer, cfg, 0.125)
    scorer.meta = scorer.meta.model_copy(update={"extra": {**scorer.meta.extra, "error_threshold": t}})
    print(f"fold {f}: T {t:.3f}, held-out alert rate {far:.3f}, {len(holdout)} held-out segments", flush=True)
    eng = AnomalyEngine(cfg)
    for s in holdout:  # as train.alert_rate streams them: each its own equipment, warm-up 400 or half its length
        eng.warmup[s.equipment_id] = max(20, min(cfg.warmup_frames, len(s) // 2))
        parts = [eng.score(frames_of(s, a, a + 200), scorer) for a in range(0, len(s), 200)]
        live = np.concatenate([~o.calibrating for o in parts])
        ratios.append(np.concatenate([o.ratio for o in parts])[live])
        alerts.append(np.concatenate([o.flag for o in parts])[live])
r, a = np.concatenate(ratios), np.concatenate(alerts)
calm = r[~a]
print(f"{len(r)} scored held-out frames, {a.mean():.1%} under an alert; ratio of the others: "
      + ", ".join(f"q{int(q * 100)} {np.quantile(calm, q):.2f}" for q in (0.5, 0.75, 0.9, 0.95, 0.98, 0.99)))
for h in (0.7, 0.8, 0.9, 1.0):
    for frames in (0, 10, 50):
        held = []
        for rr, aa in zip(ratios, alerts):
            held.append(Baseline(1).held_rows((rr >= h) & ~aa, frames) & ~aa)
        held = np.concatenate(held)
        print(f"hold_above {h}, hold_frames {frames}: {held[~a].mean():.1%} of the frames not under an alert held")

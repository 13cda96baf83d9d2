"""Round 15 check (after the decision): which shift faults do the defaults miss, and where in the fault?

Model seed 0, both folds, trained and calibrated as ``tuning.run_grid`` does (same pseudo-runs, same injections:
seed 0 shifts, 1-20 sd, 1-2 sensors); defaults (blocks of 500). Per injected fault: its size (the largest injected
shift over its sensors, in warm-up sd), the share of its frames flagged, and the share of its frames whose ratio
is >= 1 (over the threshold, before hysteresis). Misses split by position: before the baseline's first move after
the fault's start (the first block boundary inside it) or after. Run from the repository root with the venv:
``python models/anomaly/tuning_runs/round15/miss_check.py`` (output: miss_check.log).
"""
import numpy as np

from models.anomaly.config import AnomalyConfig
from models.anomaly.data import load_series
from models.anomaly.engine import AnomalyEngine
from models.anomaly.train import _Scorer, calibrate_threshold, fit, frames_of, normal_operation
from models.anomaly.tuning import _holdout_of, injected, pseudo_runs

WARMUP = 400
series = load_series("/work/shared/datasets/anomaly/skab")
reference = [s for s in series if s.reference]
labelled_parts = normal_operation([s for s in series if not s.reference], train_frames=WARMUP)
runs = pseudo_runs(reference)
shifts = list(zip(injected(runs, np.random.default_rng(0), 4, WARMUP, 20.0), [r for r in runs for _ in range(4)]))
fold_of = {r.equipment_id: i % 2 for i, r in enumerate(runs)}
fold_of.update({p.equipment_id: i % 2 for i, p in enumerate(labelled_parts)})
cfg = AnomalyConfig(warmup_frames=WARMUP, seed=0)
rows = []  # size, frames, flagged, over, missed before the first move, missed after
for f in range(2):
    train_runs = [r for r in runs + labelled_parts if fold_of[r.equipment_id] != f]
    m = fit(train_runs, cfg, epochs=30, seed=0, target_far=0.05)
    scorer = _Scorer(m.onnx_bytes, m.meta)
    t, _, _ = calibrate_threshold(_holdout_of(train_runs, cfg), scorer, cfg, 0.125)
    scorer.meta = scorer.meta.model_copy(update={"extra": {**scorer.meta.extra, "error_threshold": t}})
    eng = AnomalyEngine(cfg)
    for s, orig in (p for p in shifts if fold_of[p[0].equipment_id.split("#")[0]] == f):
        eng.warmup[s.equipment_id] = WARMUP
        flag, ratio = np.zeros(len(s), dtype=bool), np.zeros(len(s))
        for start in range(0, len(s), 500):
            out = eng.score(frames_of(s, start, start + 500), scorer)
            flag[start:start + 500], ratio[start:start + 500] = out.flag, out.ratio
        fault = np.flatnonzero(s.labels)
        a, b = fault[0], fault[-1] + 1
        sd = np.nanstd(orig.values[:WARMUP], axis=0)
        size = float(np.nanmax(np.abs(s.values - orig.values) / sd))
        move = WARMUP + cfg.adapt_frames * int(np.ceil((a - WARMUP) / cfg.adapt_frames))  # first block boundary >= a
        move = move if move > a else move + cfg.adapt_frames
        miss = ~flag[a:b]
        cut = min(max(move - a, 0), b - a)
        rows.append((size, b - a, int(flag[a:b].sum()), int((ratio[a:b] >= 1).sum()), int(miss[:cut].sum()),
                     int(miss[cut:].sum()), cut))
r = np.array(rows, dtype=float)
print(f"{len(r)} shift faults, {int(r[:, 1].sum())} fault frames; flagged {r[:, 2].sum() / r[:, 1].sum():.1%}, "
      f"ratio >= 1 {r[:, 3].sum() / r[:, 1].sum():.1%}; first baseline move {int(np.median(r[:, 6]))} frames into a "
      f"fault (median); missed frames before it {r[:, 4].sum():.0f}, after it {r[:, 5].sum():.0f}")
for lo, hi in ((1, 2), (2, 3), (3, 5.5), (5.5, 10), (10, 21)):
    s = r[(r[:, 0] >= lo) & (r[:, 0] < hi)]
    if len(s):
        print(f"size {lo}-{hi} sd: {len(s)} faults, flagged {s[:, 2].sum() / s[:, 1].sum():.1%}, ratio >= 1 "
              f"{s[:, 3].sum() / s[:, 1].sum():.1%}, missed frames before the first move {s[:, 4].sum():.0f}, "
              f"after {s[:, 5].sum():.0f}")

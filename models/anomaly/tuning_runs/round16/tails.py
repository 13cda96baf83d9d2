"""Round 16, before the rule: how the autoencoder's per-sensor contributions are distributed on normal data.

Normal data only (the proxies' fold-0 model, seed 0: trained on the other fold's pseudo-runs and training parts;
contributions of the held-out normal segments the threshold is calibrated on, after their warm-up, streamed through
the engine). Per sensor: mean, q90, q99 of its contribution, and how often it is the largest one; then how the
RMS error's q99 compares with what a one-sensor shift of c sd (contribution ~ c^2 / var, no model) would need.
"""

from __future__ import annotations

import sys

import numpy as np

from models.anomaly.config import AnomalyConfig
from models.anomaly.data import load_series
from models.anomaly.engine import AnomalyEngine
from models.anomaly.train import _Scorer, fit, frames_of, normal_operation
from models.anomaly.tuning import _holdout_of, pseudo_runs

data = sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets/anomaly/skab"
series = load_series(data)
reference = [s for s in series if s.reference]
parts = normal_operation([s for s in series if not s.reference], train_frames=400)
runs = pseudo_runs(reference)
fold_of = {r.equipment_id: i % 2 for i, r in enumerate(runs)}
fold_of.update({p.equipment_id: i % 2 for i, p in enumerate(parts)})
cfg = AnomalyConfig(warmup_frames=400, seed=0)
train_runs = [r for r in runs + parts if fold_of[r.equipment_id] != 0]
model = fit(train_runs, cfg, epochs=30, seed=0, target_far=0.125)
scorer = _Scorer(model.onnx_bytes, model.meta)
names = model.meta.features
print("threshold", round(model.meta.extra["error_threshold"], 3))
eng = AnomalyEngine(cfg)
contrib = []
for s in _holdout_of(train_runs, cfg):
    eng.warmup[s.equipment_id] = max(20, min(cfg.warmup_frames, len(s) // 2))
    for start in range(0, len(s), 200):
        eng.score(frames_of(s, start, start + 200), scorer)
    st = eng.state.get(s.equipment_id)
    n = max(0, len(s) - eng.warmup[s.equipment_id])
    d = st.recent.deviations[len(st.recent.deviations) - n:].astype(np.float64)
    c = eng.contributions([(st, d)], scorer)[0]
    contrib.append(c[:, [st.sensors.index(x) for x in names]])
c = np.concatenate(contrib)
print(f"{len(c)} held-out normal frames after warm-up")
top = np.bincount(np.argmax(c, axis=1), minlength=len(names)) / len(c)
for j, name in enumerate(names):
    q90, q99 = np.quantile(c[:, j], [0.9, 0.99])
    print(f"{name:28s} mean {c[:, j].mean():6.2f}  q90 {q90:6.2f}  q99 {q99:7.2f}  largest in {top[j]:.0%} of frames")
err = np.sqrt(c.mean(axis=1))
print("RMS error q50/q90/q99:", np.round(np.quantile(err, [0.5, 0.9, 0.99]), 3))
for q in (0.9, 0.99):
    tails = np.quantile(c, q, axis=0)
    norm = c / tails * np.exp(np.log(tails).mean())
    e2 = np.sqrt(norm.mean(axis=1))
    print(f"tail-normalized at q{int(q*100)}: RMS error q50/q90/q99:", np.round(np.quantile(e2, [0.5, 0.9, 0.99]), 3),
          " per-sensor q99 of normalized:", np.round(np.quantile(norm, 0.99, axis=0), 2).tolist())

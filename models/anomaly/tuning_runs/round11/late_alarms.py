"""Round 11 extra (after the decision; one-off analysis, run from the repo root with the venv):
``python models/anomaly/tuning_runs/round11/late_alarms.py`` (output: late_alarms.log).

On the drift proxy (defaults, model seed 0, the same injected shifts as the tuning runs: same generator, same
order), the false-alarm frames after each fault: which sensor's column contributes most to the model's error
(one of the injected sensors, or another), how far off that other sensor is, for what share of the fault's
frames it was outside the +-3 sd adaptation gate (so not followed at the full rate), and how far off it
already was before the fault."""
import json
import numpy as np
from models.anomaly.config import AnomalyConfig
from models.anomaly.data import load_series
from models.anomaly.engine import AnomalyEngine
from models.anomaly.train import _Scorer, calibrate_threshold, fit, frames_of, normal_operation
from models.anomaly.tuning import pseudo_runs, inject, part_runs, _holdout_of

data = "/work/shared/datasets/anomaly/skab"; warmup = 400; seed = 0; half = 200
series = load_series(data)
reference = [s for s in series if s.reference]
parts = normal_operation([s for s in series if not s.reference], train_frames=warmup)
runs = pseudo_runs(reference)
rng = np.random.default_rng(0)
for r in runs:
    for i in range(4):
        inject(r, rng, warmup, max_sd=20.0)
drifting = part_runs(parts, rng, 4, half, 20.0)
orig = {p.equipment_id: p for p in parts}
fold_of = {r.equipment_id: i % 2 for i, r in enumerate(runs)}
fold_of.update({p.equipment_id: i % 2 for i, p in enumerate(parts)})
base = AnomalyConfig(warmup_frames=warmup, seed=seed)
cfg_d = base.with_(warmup_frames=half)
own = other = 0
behind = []
top_d, gated, pre_max = [], [], []
for f in range(2):
    train = [r for r in runs + parts if fold_of[r.equipment_id] != f]
    model = fit(train, base, epochs=30, seed=seed, target_far=0.05)
    scorer = _Scorer(model.onnx_bytes, model.meta)
    t, _, _ = calibrate_threshold(_holdout_of(train, base), scorer, base, 0.125)
    scorer.meta = scorer.meta.model_copy(update={"extra": {**scorer.meta.extra, "error_threshold": t}})
    for r in drifting:
        pid = r.equipment_id.split("#")[0]
        if fold_of[pid] != f:
            continue
        cols = np.flatnonzero(np.abs(r.values - orig[pid].values).max(axis=0) > 0)
        eng = AnomalyEngine(cfg_d)
        eng.warmup[r.equipment_id] = half
        out = eng.score(frames_of(r), scorer)
        st = eng.state.get(r.equipment_id)
        n = len(r) - half
        flag, lab = out.flag[half:], r.labels[half:]
        d = st.recent.deviations[-n:].astype(np.float64)
        c = eng.contributions([(st, d)], scorer)[0]
        stop = np.flatnonzero(lab)[-1] + 1
        late = np.flatnonzero(flag & ~lab & (np.arange(n) >= stop))
        if len(late):
            top = np.argmax(c[late], axis=1)
            fault_rows = np.flatnonzero(lab)
            for j, tcol in zip(late, top):
                if tcol not in cols:
                    top_d.append(abs(d[j, tcol]))
                    gated.append(float((np.abs(d[fault_rows, tcol]) >= 3).mean()))
                    pre_rows = np.arange(n) < fault_rows[0]
                    pre_max.append(float(np.abs(d[pre_rows, tcol]).max()) if pre_rows.any() else 0.0)
            own += int(np.isin(top, cols).sum()); other += int((~np.isin(top, cols)).sum())
            behind.extend(np.abs(d[late][:, cols]).max(axis=1).tolist())
q = lambda a: [round(float(np.quantile(a, x)), 2) for x in (0.25, 0.5, 0.75)]
print("other-sensor late frames: |d| of the top column q25/50/75", q(top_d), "; share of fault frames it was outside the 3-sd gate", q(gated), "; its largest |d| before the fault", q(pre_max))
print(json.dumps({"late_fa_frames": own + other, "top_column_is_a_faulted_sensor": own,
                  "top_column_other_sensor": other,
                  "faulted_sensor_abs_deviation_median": float(np.median(behind)) if behind else None,
                  "p25_p75": [float(np.quantile(behind, 0.25)), float(np.quantile(behind, 0.75))] if behind else None}))

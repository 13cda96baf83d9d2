"""Round 14 check (after the decision): where do the hold's extra false alarms on the long proxies come from?

Model seed 0, both folds, trained and calibrated as ``tuning.run_grid`` does (same pseudo-runs, same injections:
seed 0 shifts, seed [0, 9] noise faults, 1-20 sd); per configuration, on the long pseudo-runs (plain and noise
proxies): fault frames flagged; false-alarm frames after a fault split into "the fault's alert still up" (never
cleared since the fault ended) and "raised again after the fault"; and the share of frames held back (hold_above)
before, during and after the faults. Run from the repository root with the venv:
``python models/anomaly/tuning_runs/round14/late_check.py`` (output: late_check.log).
"""
import numpy as np

from models.anomaly import features
from models.anomaly.config import AnomalyConfig
from models.anomaly.data import load_series
from models.anomaly.engine import AnomalyEngine
from models.anomaly.train import _Scorer, calibrate_threshold, fit, frames_of, normal_operation
from models.anomaly.tuning import _holdout_of, inject, part_runs, pseudo_runs

WARMUP = 400
held_log: dict[int, list] = {}
_held_rows = features.Baseline.held_rows


def recording(self, hot, frames):  # the engine's held rows per baseline, in order (before the ~alert mask)
    out = _held_rows(self, hot, frames)
    held_log.setdefault(id(self), []).append(out)
    return out


features.Baseline.held_rows = recording

series = load_series("/work/shared/datasets/anomaly/skab")
reference = [s for s in series if s.reference]
labelled_parts = normal_operation([s for s in series if not s.reference], train_frames=WARMUP)
runs = pseudo_runs(reference)
rng = np.random.default_rng(0)
shifts = []
for r in runs:
    for i in range(4):
        shifts.append(inject(r, rng, WARMUP, max_sd=20.0))
        shifts[-1].equipment_id = f"{r.equipment_id}#{i}"
part_runs(labelled_parts, rng, 4, WARMUP // 2, 20.0)  # keeps the generator where run_grid has it
noise_rng = np.random.default_rng([0, 9])
noises = []
for r in runs:
    for i in range(4):
        noises.append(inject(r, noise_rng, WARMUP, max_sd=20.0, kind="noise"))
        noises[-1].equipment_id = f"{r.equipment_id}#{i}"
fold_of = {r.equipment_id: i % 2 for i, r in enumerate(runs)}
fold_of.update({p.equipment_id: i % 2 for i, p in enumerate(labelled_parts)})
base = AnomalyConfig(warmup_frames=WARMUP, seed=0)
models = []
for f in range(2):
    train_runs = [r for r in runs + labelled_parts if fold_of[r.equipment_id] != f]
    m = fit(train_runs, base, epochs=30, seed=0, target_far=0.05)
    models.append((f, train_runs, m))

for blocks, hold in ((500, 0.0), (500, 0.7), (100, 0.0), (100, 0.7)):
    cfg = base.with_(adapt_frames=blocks, hold_above=hold, hold_frames=50)
    for kind, faulty in (("shift", shifts), ("noise", noises)):
        caught, fault_n, late_still, late_again, held = 0, 0, 0, 0, {"before": [], "during": [], "after": []}
        for f, train_runs, m in models:
            scorer = _Scorer(m.onnx_bytes, m.meta)
            t, _, _ = calibrate_threshold(_holdout_of(train_runs, cfg), scorer, cfg, 0.125)
            scorer.meta = scorer.meta.model_copy(update={"extra": {**scorer.meta.extra, "error_threshold": t}})
            eng = AnomalyEngine(cfg)
            for s in (r for r in faulty if fold_of[r.equipment_id.split("#")[0]] == f):
                eng.warmup[s.equipment_id] = WARMUP
                held_log.clear()  # this run's baseline only (ids of freed baselines may be reused)
                flag = np.zeros(len(s), dtype=bool)
                for start in range(0, len(s), 500):
                    flag[start:start + 500] = eng.score(frames_of(s, start, start + 500), scorer).flag
                lab = s.labels.astype(bool)
                fault = np.flatnonzero(lab)
                a, b = fault[0], fault[-1] + 1
                caught += int(flag[a:b].sum())
                fault_n += b - a
                after = flag[b:]
                # the fault's alert still up: the leading run of flagged frames right after the fault
                lead = len(after) if after.all() else int(np.argmin(after))
                late_still += lead
                late_again += int(after[lead:].sum())
                log = held_log.get(id(eng.state.get(s.equipment_id).baseline))
                if log:
                    h = np.concatenate(log)  # scored rows only (after warm-up)
                    h = np.concatenate([np.zeros(WARMUP, bool), h])[:len(s)]
                    held["before"].append(h[WARMUP:a].mean())
                    held["during"].append(h[a:b].mean())
                    held["after"].append(h[b:].mean())
        line = (f"{kind} proxy, adapt_frames {blocks}, hold_above {hold}: fault frames flagged {caught / fault_n:.1%}; "
                f"false-alarm frames after the faults {late_still + late_again} (fault's alert still up {late_still}, "
                f"raised again {late_again})")
        if held["before"]:
            line += "; frames held " + ", ".join(f"{k} {np.mean(v):.1%}" for k, v in held.items())
        print(line, flush=True)

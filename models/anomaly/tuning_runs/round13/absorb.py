"""Round 13 check (after the decision): do smaller adaptation blocks absorb the injected faults?

The plain and noise proxies' pseudo-runs (anomaly-free run cut in 8, 4 injections each, the tuning's injection
seed 0 and fault sizes 1-20 sd; a fault starts 170 frames after warm-up, lasts 400), scored without a model (each sensor contributes d^2, RMS threshold 3; the River
detector at its default weight): per fault, the faulted sensors' baseline spread (var) and level at the fault's end
against its start, and the share of fault frames flagged, with the blocks of the round's candidates at the
default half-life (300 frames) and, for comparison, smaller blocks with longer half-lives (slower following). Run from the repo root with the venv:
``python models/anomaly/tuning_runs/round13/absorb.py``; output in absorb.log.
"""
import numpy as np

from models.anomaly.config import AnomalyConfig
from models.anomaly.data import load_series
from models.anomaly.engine import AnomalyEngine
from models.anomaly.train import frames_of
from models.anomaly.tuning import FAULT_FRAMES, FAULT_START, inject, pseudo_runs

series = load_series("/work/shared/datasets/anomaly/skab")
runs = pseudo_runs([s for s in series if s.reference])
for kind, rng_seed in (("shift", 0), ("noise", [0, 9])):
    rng = np.random.default_rng(rng_seed)
    faulty = []
    for r in runs:
        for i in range(4):
            f = inject(r, rng, 400, max_sd=20.0, kind=kind)
            cols = np.flatnonzero(np.any(np.abs(f.values - r.values) > 0, axis=0))
            f.equipment_id = f"{r.equipment_id}#{i}"
            faulty.append((f, cols))
    for block, halflife in ((500, 300), (200, 300), (100, 300), (50, 300), (100, 600), (100, 1000), (50, 1000)):
        var_ratio, moved, caught = [], [], []
        for f, cols in faulty:
            eng = AnomalyEngine(AnomalyConfig(adapt_frames=block, baseline_halflife_frames=halflife))
            eng.warmup[f.equipment_id] = 400
            fr = frames_of(f)
            eng.score(fr[:FAULT_START])
            b = eng.state.get(f.equipment_id).baseline
            var0, base0 = b.var[cols].copy(), b.base[cols].copy()
            out = eng.score(fr[FAULT_START:FAULT_START + FAULT_FRAMES])
            var_ratio.extend((b.var[cols] / var0).tolist())
            moved.extend((np.abs(b.base[cols] - base0) / np.sqrt(var0)).tolist())
            caught.append(out.flag.mean())
        print(f"{kind} faults, adapt_frames {block:3d}, half-life {halflife:4d}: faulted sensors' var at the fault's end / at its start: median "
              f"{np.median(var_ratio):.2f} (quartiles {np.quantile(var_ratio, 0.25):.2f}-{np.quantile(var_ratio, 0.75):.2f}); "
              f"level moved median {np.median(moved):.2f} sd; fault frames flagged {np.mean(caught):.1%}", flush=True)

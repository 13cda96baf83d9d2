"""Round 12 check: does any baseline move on the drift proxy's runs (200 warm-up + 200 scored frames)?

Run from the repo root with the venv: ``python models/anomaly/tuning_runs/round12/drift_blocks.py``. Output (09:41 UTC):
    adapt_frames 500: runs whose baseline moved during the scored half: 0 of 34
    adapt_frames 50: runs whose baseline moved during the scored half: 34 of 34
"""
import numpy as np
from models.anomaly.config import AnomalyConfig
from models.anomaly.data import load_series
from models.anomaly.engine import AnomalyEngine
from models.anomaly.train import frames_of, normal_operation
from models.anomaly.tuning import part_runs
s = load_series("/work/shared/datasets/anomaly/skab")
parts = normal_operation([x for x in s if not x.reference], train_frames=400)
runs = part_runs(parts, np.random.default_rng(0), 1, 200, 20.0)
for adapt in (500, 50):
    moved = 0
    for r in runs:
        eng = AnomalyEngine(AnomalyConfig(warmup_frames=200, adapt_frames=adapt))
        eng.warmup[r.equipment_id] = 200
        fr = frames_of(r)
        eng.score(fr[:200]); b0 = eng.state.get(r.equipment_id).baseline.base.copy()
        eng.score(fr[200:]); b1 = eng.state.get(r.equipment_id).baseline.base
        moved += int(np.any(b1 != b0))
    print(f"adapt_frames {adapt}: runs whose baseline moved during the scored half: {moved} of {len(runs)}")

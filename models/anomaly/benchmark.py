"""Micro-benchmark of :meth:`streams.anomaly.AnomalyPipeline.process`: the cost per frame, all included.

Frames from :class:`~connectors.generators.SensorGenerator` (8 sensors per pump),
parsed beforehand (parsing is the batch agent's, measured with it elsewhere).
Every equipment first completes its warm-up; then the clock runs over
``process`` alone (CPU time of the process, which a busy shared machine does not
inflate, and wall-clock time): grouping, normalization, the ONNX call, the River detector
(scoring *and* learning), hysteresis, alerts and the JSON of every output record.

``python -m models.anomaly.benchmark [--frames N] [--equipment N] [--batch N]``; the configuration is the
settings' (``LEPTON_ANOMALY_*``, e.g. ``LEPTON_ANOMALY_ENSEMBLE_MEMBERS=3`` or ``LEPTON_ANOMALY_HST_TREES=20``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence


def benchmark(frames: int = 100_000, equipment: int = 20, batch: int = 2000, repeats: int = 3,
              epochs: int = 3, seed: int = 0) -> dict[str, Any]:
    """Median frames/s of ``process`` over ``repeats`` passes of ``frames`` frames after warm-up."""
    import torch

    from connectors.generators import SensorGenerator
    from models.registry import ModelRegistry
    from streams.anomaly import AnomalyPipeline
    from streams.model_slot import ModelSlot
    from streams.records import SensorFrame
    from streams.settings import get_settings
    from streams.topics import Topics

    from .config import AnomalyConfig
    from .train import fit, synthetic_series

    torch.set_num_threads(1)
    config = AnomalyConfig.from_settings(get_settings())
    model = fit([s.head(1500) for s in synthetic_series(n_equipment=8, frames=1500, seed=seed + 1)], config,
                epochs=epochs, seed=seed)
    gen = iter(SensorGenerator(seed=seed + 7, start_ts=time.time() - 86_400, n_equipment=equipment))
    warm = config.warmup_frames * equipment
    data = [SensorFrame(e["id"], e["ts"], e["equipment_id"], e["readings"])
            for e, _ in (next(gen) for _ in range(warm + frames * repeats))]
    with tempfile.TemporaryDirectory(prefix="lepton-anomaly-bench-") as tmp:
        registry = ModelRegistry(Path(tmp))
        registry.register("anomaly", model.onnx_bytes, model.meta)
        slot = ModelSlot(registry, "anomaly", threads=1)
        slot.load_now()
        pipeline = AnomalyPipeline(slot, Topics(), config=config)
        now = time.time()
        for i in range(0, warm, batch):
            pipeline.process(data[i:i + batch], now)
        rates, cpu_rates, outputs = [], [], 0
        for r in range(repeats):
            part = data[warm + r * frames: warm + (r + 1) * frames]
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(0, len(part), batch):
                outputs += len(pipeline.process(part[i:i + batch], now))
            rates.append(len(part) / (time.perf_counter() - t0))
            cpu_rates.append(len(part) / (time.process_time() - c0))
        updates = sum(st.detector.updates for st in pipeline.state if st.detector is not None)
    rate, cpu = statistics.median(rates), statistics.median(cpu_rates)
    return {"frames_per_s": round(rate), "us_per_frame": round(1e6 / rate, 1), "passes": [round(x) for x in rates],
            "frames_per_cpu_s": round(cpu), "cpu_us_per_frame": round(1e6 / cpu, 1),
            "frames": frames, "equipment": equipment, "batch": batch, "sensors": 8, "outputs": outputs,
            "detector_updates": updates, "ensemble_members": config.ensemble_members, "hst_trees": config.hst_trees,
            "load_average": os.getloadavg()[0], "cpus": os.cpu_count()}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.anomaly.benchmark", description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=100_000)
    p.add_argument("--equipment", type=int, default=20)
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    r = benchmark(a.frames, a.equipment, a.batch, a.repeats)
    print(f"AnomalyPipeline.process: {r['frames_per_cpu_s']} frames per CPU second ({r['cpu_us_per_frame']} µs of CPU "
          f"per frame); wall clock {r['frames_per_s']} frames/s ({r['us_per_frame']} µs/frame), "
          f"{r['equipment']} equipment x {r['sensors']} sensors, batches of {r['batch']}; passes {r['passes']}; "
          f"River updates {r['detector_updates']}; {r['ensemble_members']} autoencoder(s), {r['hst_trees']} trees; "
          f"load average {r['load_average']:.1f} on {r['cpus']} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

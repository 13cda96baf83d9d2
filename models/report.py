"""What every evaluation report begins with: its folder, ``metrics.json`` and a headless pyplot.

The fraud, sentiment and anomaly reports differ in their plots only; the
numbers a script reads are always ``metrics.json`` beside them.

>>> import json, tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp()) / "report"
>>> plt, written = start_report(out, {"f1": 0.5})
>>> [p.name for p in written], json.loads(written[0].read_text())
(['metrics.json'], {'f1': 0.5})
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def start_report(out_dir: Path, metrics: dict[str, Any]) -> tuple[Any, list[Path]]:
    """Create ``out_dir``, write ``metrics.json``; return ``matplotlib.pyplot`` (Agg) and the files so far."""
    import matplotlib

    matplotlib.use("Agg")  # reports are written on servers and in CI: no display
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, default=float))
    return plt, [path]

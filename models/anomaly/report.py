"""The evaluation report a person opens: ``metrics.json``, ``overview.png`` and ``runs/<equipment>.png``.

Each run's plot shows the score over time (0.5 is the threshold), the frames
flagged (in alert), the true anomalies shaded red and the training part shaded
grey, so that a missed anomaly, a late detection or an alert that outlives its
anomaly is visible at a glance.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..report import start_report
from .data import Series

OVERVIEW_MAX = 48  # runs drawn in overview.png (all of them get their own file)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:120] or "run"


def _draw(ax: Any, s: Series, r: dict[str, Any], cut: int, *, small: bool = False) -> None:
    t = (s.ts - s.ts[0]) / 60.0
    if s.labels is not None and s.labels.any():
        ax.fill_between(t, 0, 1, where=s.labels, color="tab:red", alpha=0.18, step="mid", lw=0,
                        label="true anomaly")
    if cut > 0:
        ax.axvspan(t[0], t[min(cut, len(t)) - 1], color="0.85", alpha=0.6, lw=0, label="training part")
    ax.plot(t, r["score"], color="tab:blue", lw=0.6 if small else 0.8, label="score")
    flagged = np.where(r["flag"], 0.97, np.nan)
    ax.plot(t, flagged, color="tab:orange", lw=2.5 if small else 3, solid_capstyle="butt", label="flag (alert)")
    ax.axhline(0.5, color="k", lw=0.5, ls="--")
    ax.set_ylim(0, 1)
    ax.set_xlim(t[0], t[-1] if len(t) > 1 else t[0] + 1)
    if small:
        ax.set_title(s.equipment_id, fontsize=7)
        ax.tick_params(labelsize=6)
    else:
        ax.set_xlabel("minutes since the run's first frame")
        ax.set_ylabel("anomaly score")


def write_report(out_dir: Path, metrics: dict[str, Any], series: Sequence[Series],
                 streamed: dict[str, dict[str, Any]], n_train: dict[str, int]) -> list[Path]:
    """Write the report into ``out_dir``; returns the files written."""
    plt, written = start_report(out_dir, metrics)
    runs_dir = out_dir / "runs"
    runs_dir.mkdir(exist_ok=True)
    per_run = metrics.get("runs", {})
    for s in series:
        fig, ax = plt.subplots(figsize=(11, 3))
        _draw(ax, s, streamed[s.equipment_id], n_train[s.equipment_id])
        m = per_run.get(s.equipment_id)
        title = s.equipment_id
        if m:
            title += f"   F1 {m['f1']:.2f}  FAR {100 * m['far']:.1f}%  MAR {100 * m['mar']:.1f}%  alerts {m['alerts']}"
        ax.set_title(title, fontsize=10)
        ax.legend(loc="upper left", fontsize=7, ncol=4, framealpha=0.8)
        fig.tight_layout()
        path = runs_dir / f"{_safe(s.equipment_id)}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    shown = list(series)[:OVERVIEW_MAX]
    if shown:
        cols = 4
        rows = math.ceil(len(shown) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(16, 1.9 * rows), squeeze=False)
        for ax, s in zip(axes.ravel(), shown):
            _draw(ax, s, streamed[s.equipment_id], n_train[s.equipment_id], small=True)
        for ax in axes.ravel()[len(shown):]:
            ax.axis("off")
        if "f1" in metrics:
            fig.suptitle(f"{metrics['data']}: F1 {metrics['f1']:.3f}, FAR {100 * metrics['far']:.1f}%, "
                         f"MAR {100 * metrics['mar']:.1f}%, {metrics['alerts']} alerts "
                         "(blue: score, orange: flag, red: true anomaly, grey: training part)", fontsize=10)
        fig.tight_layout()
        path = out_dir / "overview.png"
        fig.savefig(path, dpi=70)
        plt.close(fig)
        written.append(path)
    return written

"""The benchmark's PNG: throughput (with the ratios) and end-to-end latency, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"lepton": "#2b6cb0", "faust": "#c05621", "quix": "#2f855a"}
OTHER = "#718096"


def _latency_medians(segments: list[dict]) -> list[dict]:
    """One row per (variant, basis), in first-seen order: median rate, p50 and p99.

    >>> rows = _latency_medians([{"variant": "a", "basis": "x", "achieved_rate_per_s": r, "p50_ms": r, "p99_ms": 2 * r}
    ...                          for r in (1.0, 3.0, 2.0)])
    >>> [(r["variant"], r["p50_ms"], r["p99_ms"]) for r in rows]
    [('a', 2.0, 4.0)]
    """
    import statistics

    groups: dict[tuple[str, str], list[dict]] = {}
    for s in segments:
        groups.setdefault((s["variant"], s["basis"]), []).append(s)
    return [{"variant": v, "basis": b, **{k: statistics.median(s[k] for s in group)
                                          for k in ("achieved_rate_per_s", "p50_ms", "p99_ms")}}
            for (v, b), group in groups.items()]


def plot(summary: dict[str, Any], path: Path) -> Path:
    """Write ``summary`` (the JSON of :func:`streams.bench.run_bench`) as a PNG chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = summary["variants"]
    fig, (ax_tp, ax_lat) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1.15, 1]})

    # Throughput: the fraud variants, then Lepton on the other pipelines.
    names, values, colors = [], [], []
    for name, v in variants.items():
        names.append(v.get("label", name))
        values.append(v["events_per_s"])
        colors.append(COLORS.get(name, OTHER))
    for pipeline, v in summary.get("pipelines", {}).items():
        names.append(f"Lepton {pipeline}")
        values.append(v["events_per_s"])
        colors.append(OTHER)
    bars = ax_tp.bar(range(len(values)), values, color=colors)
    ax_tp.set_xticks(range(len(values)), names, rotation=12)
    ax_tp.set_ylabel("events/s (median)")
    ax_tp.set_title(f"Throughput, {summary['events']:,} events, median of {summary['runs']} run(s)")
    for bar, value in zip(bars, values):
        ax_tp.annotate(f"{value:,.0f}", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom",
                       fontsize=9)
    ratios = [f"Lepton = {summary[k]:.1f}× {k.removeprefix('ratio_vs_')}" for k in ("ratio_vs_faust", "ratio_vs_quix")
              if summary.get(k)]
    if ratios:
        ax_tp.text(0.98, 0.95, "\n".join(ratios), transform=ax_tp.transAxes, ha="right", va="top", fontsize=10,
                   bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "#cbd5e0"})
    ax_tp.set_ylim(0, max(values or [1]) * 1.15)

    # Latency: p50 and p99 per (variant, rate), the medians of its repeated segments.
    rows = _latency_medians(summary.get("latency", []))
    if rows:
        labels = [f"{variants.get(r['variant'], {}).get('label', r['variant'])}\n@ {r['achieved_rate_per_s']:,.0f}/s"
                  for r in rows]
        xs = range(len(rows))
        width = 0.38
        p50 = [r["p50_ms"] for r in rows]
        p99 = [r["p99_ms"] for r in rows]
        ax_lat.bar([x - width / 2 for x in xs], p50, width, label="p50", color="#90cdf4")
        ax_lat.bar([x + width / 2 for x in xs], p99, width, label="p99", color="#2c5282")
        for x, a, b in zip(xs, p50, p99):
            ax_lat.annotate(f"{a:,.0f}", (x - width / 2, a), ha="center", va="bottom", fontsize=8)
            ax_lat.annotate(f"{b:,.0f}", (x + width / 2, b), ha="center", va="bottom", fontsize=8)
        target = summary.get("targets", {}).get("latency_p99_ms_at_half_lepton_max", {}).get("target")
        if target:
            ax_lat.axhline(target, color="#c53030", linestyle="--", linewidth=1)
            ax_lat.text(0.01, target, f" target: p99 ≤ {target:.0f} ms",
                        transform=ax_lat.get_yaxis_transform(), ha="left", va="top", color="#c53030", fontsize=8)
        ax_lat.set_xticks(list(xs), labels, fontsize=8)
        ax_lat.set_ylabel("end-to-end latency, ms (event ts → output timestamp)")
        ax_lat.set_yscale("log")
        finite = [v for v in p50 + p99 if v == v and v > 0]
        ax_lat.set_ylim(max(1.0, min(finite, default=1.0) / 2), max(finite, default=10.0) * 3)
        ax_lat.legend(loc="upper right")
    else:
        ax_lat.text(0.5, 0.5, "latency not measured", ha="center", va="center", transform=ax_lat.transAxes)
        ax_lat.set_xticks([])
    ax_lat.set_title("End-to-end latency at a fixed input rate")
    fig.suptitle(f"lepton bench: {summary.get('machine', '')}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

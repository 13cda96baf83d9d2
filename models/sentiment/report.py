"""The evaluation report a person opens: ``metrics.json``, ``confusion.png`` and ``report.html``."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from ..report import start_report
from . import LABELS


def write_report(out_dir: Path, result: dict[str, Any]) -> list[Path]:
    """Write the report files into ``out_dir``; returns them."""
    import numpy as np

    plt, (metrics_path,) = start_report(out_dir, result)

    confusion = np.asarray(result["confusion"], dtype=np.float64)
    share = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(LABELS)):
        for j in range(len(LABELS)):
            ax.text(j, i, f"{int(confusion[i, j])}\n{share[i, j]:.0%}", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=9)
    ax.set_xticks(range(len(LABELS)), LABELS)
    ax.set_yticks(range(len(LABELS)), LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{result.get('model', '')}: accuracy {result['accuracy']:.3f}, macro-F1 {result['macro_f1']:.3f}")
    fig.tight_layout()
    png = out_dir / "confusion.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)

    rows = "".join(
        f"<tr><td>{name}</td><td>{c['precision']:.3f}</td><td>{c['recall']:.3f}</td><td>{c['f1']:.3f}</td>"
        f"<td>{c['support']}</td></tr>" for name, c in result["per_class"].items())
    page = f"""<!doctype html><meta charset="utf-8"><title>Lepton sentiment evaluation</title>
<style>body{{font-family:sans-serif;max-width:52em;margin:2em auto}}td,th{{padding:.2em .8em;text-align:right}}</style>
<h1>Sentiment evaluation</h1>
<p>{html.escape(str(result.get('data', '')))}: {html.escape(str(result.get('protocol', '')))};
model <b>{html.escape(str(result.get('model', '')))}</b>, {result['n']} test messages.</p>
<h2>accuracy {result['accuracy']:.4f} · macro-F1 {result['macro_f1']:.4f} · macro-recall {result['macro_recall']:.4f}</h2>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{rows}</table>
<p><img src="confusion.png" alt="confusion matrix"></p>
<p>Pipeline throughput while scoring: {(result.get('pipeline_stats') or {}).get('messages_per_s') or 0:,.0f} messages/s;
escalations raised: {(result.get('pipeline_stats') or {}).get('escalations_raised', 0)}.
All numbers: <a href="metrics.json">metrics.json</a>.</p>
"""
    page_path = out_dir / "report.html"
    page_path.write_text(page, encoding="utf-8")
    return [metrics_path, png, page_path]

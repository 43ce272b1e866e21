"""How benchmark results are shown: printed Markdown (optionally written) and PNG bar charts."""
from __future__ import annotations

from ..extras import require
from ..outputs import atomic_path, write_text


def emit_report(text: str, path=None) -> str:
    """Print a Markdown report and, with ``path``, write it there too."""
    print(text)
    if path:
        write_text(path, text + "\n")
    return text


def bar_chart(rows: list, path, title: str) -> None:
    """Ratios of ``rows`` (dicts with 'variant' and 'ratio') as a PNG bar chart."""
    matplotlib = require("matplotlib", "the --png chart")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = [r["variant"] for r in rows]
    vals = [r["ratio"] for r in rows]
    bars = ax.barh(names[::-1], vals[::-1], color="#3b7dd8")
    for b, v in zip(bars, vals[::-1]):
        ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {v:.2f}x", va="center")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel("throughput vs eager fp32 (same run)")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0, max(vals) * 1.25)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)

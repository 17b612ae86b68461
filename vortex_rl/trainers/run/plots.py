"""PNG plots of a run's reward and validation accuracy (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def save_plots(history: Sequence[dict[str, Any]], run_dir: Path) -> list[Path]:
    """Write ``reward.png`` (training reward per step) and ``val_acc.png`` (``val-core/*`` per step).

    Returns the files written (none without data, or without matplotlib).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - plots are optional
        return []
    written = []
    series = {
        "reward.png": ("training reward (mean over samples)", ["critic/rewards/mean"]),
        "val_acc.png": ("validation accuracy", sorted({k for row in history for k in row if k.startswith("val-core/")})),
    }
    for filename, (title, keys) in series.items():
        lines = {k: [(row["step"], row[k]) for row in history if row.get(k) is not None] for k in keys}
        lines = {k: v for k, v in lines.items() if v}
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, points in lines.items():
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=key)
        ax.set(xlabel="step", title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(Path(run_dir) / filename, dpi=100)
        plt.close(fig)
        written.append(Path(run_dir) / filename)
    return written

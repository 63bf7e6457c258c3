"""Pictures of a run: the accuracy matrix as a heatmap and each task's accuracy over time."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _figure(width: float, height: float) -> tuple[Any, Any]:
    """A figure on the Agg canvas without pyplot (no GUI backend, cheaper to import)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def save_matrix_heatmap(matrix: list[list[float]], path: Path) -> Path:
    rows, cols = len(matrix), len(matrix[0])
    fig, ax = _figure(1.0 + 0.8 * cols, 0.8 + 0.6 * rows)
    image = ax.imshow(matrix, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    for i in range(rows):
        for j in range(cols):
            ax.text(j, i, f"{matrix[i][j]:.1f}", ha="center", va="center",
                    color="white" if matrix[i][j] < 60 else "black", fontsize=8)
    ax.set_xticks(range(cols), [f"task {j}" for j in range(cols)])
    ax.set_yticks(range(rows), [f"after {i}" for i in range(rows)])
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("after training")
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def save_accuracy_curves(matrix: list[list[float]], path: Path) -> Path:
    fig, ax = _figure(6, 4)
    stages = range(len(matrix))
    for j in range(len(matrix[0])):
        ax.plot(stages, [row[j] for row in matrix], marker="o", label=f"task {j}")
    ax.set_xticks(list(stages))
    ax.set_xlabel("after training task")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path

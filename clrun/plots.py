"""Pictures of a run: the accuracy matrix as a heatmap and each task's accuracy over time."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def new_figure(width: float, height: float, panels: int = 1) -> tuple[Any, list[Any]]:
    """A figure of `panels` side-by-side axes (each width x height inches) on the Agg canvas,
    without pyplot (no GUI backend, cheaper to import)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * panels, height))
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, panels, squeeze=False)[0])


def heatmap_figure(matrix: list[list[float]], title: str = "") -> Any:
    rows, cols = len(matrix), len(matrix[0])
    fig, (ax,) = new_figure(1.6 + 0.8 * cols, 1.4 + 0.6 * rows)
    draw_matrix(ax, matrix)
    ax.set_title(title, fontsize=8, wrap=True)
    fig.colorbar(ax.images[0], ax=ax, label="accuracy (%)")
    return fig


def save_figure(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def save_matrix_heatmap(matrix: list[list[float]], path: Path, title: str = "") -> Path:
    return save_figure(heatmap_figure(matrix, title), path)


def draw_matrix(ax: Any, matrix: list[list[float | None]], top: float = 100.0) -> None:
    """A task matrix (accuracy in %, or FID up to `top`) as a heatmap with its values, on
    `ax`; entries of tasks not scored (None) stay blank."""
    rows, cols = len(matrix), len(matrix[0])
    values = [[float("nan") if v is None else v for v in row] for row in matrix]
    ax.imshow(values, vmin=0, vmax=top, cmap="viridis", aspect="auto")
    for i in range(rows):
        for j in range(cols):
            if matrix[i][j] is not None:
                ax.text(j, i, f"{matrix[i][j]:.1f}", ha="center", va="center",
                        color="white" if matrix[i][j] < 0.6 * top else "black", fontsize=8)
    ax.set_xticks(range(cols), [f"task {j}" for j in range(cols)])
    ax.set_yticks(range(rows), [f"after {i}" for i in range(rows)])
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("after training")


def learned_from(matrix: list[list[float]], task: int) -> int:
    """The first row in which `task` has been trained (row `task` in a task-by-task stream;
    row 0 when one stage trained everything)."""
    return min(task, len(matrix) - 1)


def curves_figure(matrix: list[list[float]], title: str = "") -> Any:
    """Each task's test accuracy from the stage it is learned on (not its untrained zeros)."""
    fig, (ax,) = new_figure(7, 4)
    for j in range(len(matrix[0])):
        stages = list(range(learned_from(matrix, j), len(matrix)))
        ax.plot(stages, [matrix[i][j] for i in stages], marker="o", label=f"task {j}")
    ax.set_xticks(list(range(len(matrix))))
    ax.set_xlabel("after training task")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=8, wrap=True)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig


def save_accuracy_curves(matrix: list[list[float]], path: Path, title: str = "") -> Path:
    return save_figure(curves_figure(matrix, title), path)

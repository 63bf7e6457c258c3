"""The figures a CL paper shows for a sweep, and `report.md` that puts them beside the table.

- `acc_over_tasks.png`: the average accuracy over the tasks seen so far after each task, one
  line per method (swept combination), mean ± std over seeds;
- `final_per_task.png`: each task's accuracy after the last task, bars per method;
- `accuracy_matrices.png`: every method's mean accuracy matrix, side by side;
- `paper_comparison.png` (paper tables): ours (mean ± std) beside the paper's, per setting.

A paper table draws one panel per setting; a plain sweep one panel.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from clrun.aggregate import Cell, JobRecord
from clrun.paper_table import SETTING_TITLES, Comparison
from clrun.plots import draw_matrix, new_figure, save_figure
from clrun.results import write_atomic

# panel title -> method label -> the jobs of that method
Panels = dict[str, dict[str, list[JobRecord]]]


def _matrices(records: list[JobRecord]) -> list[list[list[float]]]:
    return [r.metrics["accuracy_matrix"] for r in records
            if r.metrics and r.metrics.get("accuracy_matrix")]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    cell = Cell(list(values))
    return cell.mean, cell.std


def seen_average(matrix: list[list[float]]) -> list[float]:
    """Average accuracy over the tasks seen so far, after each training stage."""
    if len(matrix) == 1:  # one stage on every task (joint)
        return [sum(matrix[0]) / len(matrix[0])]
    return [sum(row[: i + 1]) / (i + 1) for i, row in enumerate(matrix)]


def plot_acc_over_tasks(panels: Panels, path: Path) -> Path:
    fig, axes = new_figure(6.5, 4, len(panels))
    for ax, (title, methods) in zip(axes, panels.items(), strict=True):
        for label, records in methods.items():
            curves = [seen_average(m) for m in _matrices(records)]
            if not curves:
                continue
            length = max(len(c) for c in curves)
            curves = [c for c in curves if len(c) == length]
            stats = [_mean_std([c[i] for c in curves]) for i in range(length)]
            n_tasks = len(_matrices(records)[0][0])
            xs = list(range(n_tasks - length, n_tasks))  # joint: one point at the end
            mean = [m for m, _ in stats]
            line = ax.plot(xs, mean, marker="o", label=f"{label} (n={len(curves)})")[0]
            ax.fill_between(xs, [m - s for m, s in stats], [m + s for m, s in stats],
                            color=line.get_color(), alpha=0.15)
        ax.set_title(title, fontsize=9)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("after training task")
        ax.set_ylabel("average accuracy on seen tasks (%)")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_final_per_task(panels: Panels, path: Path) -> Path:
    fig, axes = new_figure(7, 4, len(panels))
    for ax, (title, methods) in zip(axes, panels.items(), strict=True):
        finals = {label: [m[-1] for m in _matrices(records)]
                  for label, records in methods.items() if _matrices(records)}
        width = 0.8 / max(len(finals), 1)
        for k, (label, rows) in enumerate(finals.items()):
            n_tasks = len(rows[0])
            stats = [_mean_std([row[j] for row in rows]) for j in range(n_tasks)]
            ax.bar([j + k * width for j in range(n_tasks)], [m for m, _ in stats], width,
                   yerr=[s for _, s in stats], capsize=2, label=label)
        if finals:
            n_tasks = len(next(iter(finals.values()))[0])
            ax.set_xticks([j + 0.4 - width / 2 for j in range(n_tasks)],
                          [f"task {j}" for j in range(n_tasks)])
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("accuracy after the last task (%)")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_matrices(methods: dict[str, list[JobRecord]], path: Path) -> Path:
    """Mean accuracy matrix of each method (methods whose jobs share one shape)."""
    shown = {}
    for label, records in methods.items():
        matrices = _matrices(records)
        if matrices and all(len(m) == len(matrices[0]) for m in matrices):
            shown[label] = [[sum(m[i][j] for m in matrices) / len(matrices)
                             for j in range(len(matrices[0][0]))]
                            for i in range(len(matrices[0]))]
    fig, axes = new_figure(4, 3.6, max(len(shown), 1))
    for ax, (label, matrix) in zip(axes, shown.items(), strict=False):
        draw_matrix(ax, matrix)
        ax.set_title(label, fontsize=9)
    return save_figure(fig, path)


def plot_paper_comparison(comparisons: list[Comparison], path: Path) -> Path:
    settings = [s for s in SETTING_TITLES if any(c.setting == s for c in comparisons)]
    fig, axes = new_figure(6, 4, len(settings))
    for ax, setting in zip(axes, settings, strict=True):
        cells = [c for c in comparisons if c.setting == setting]
        xs = range(len(cells))
        ax.bar([x - 0.2 for x in xs], [c.ours.mean or 0 for c in cells], 0.4,
               yerr=[c.ours.std or 0 for c in cells], capsize=2, label="ours")
        ax.bar([x + 0.2 for x in xs], [c.paper.mean for c in cells], 0.4,
               yerr=[c.paper.std for c in cells], capsize=2, label="paper")
        for x, c in zip(xs, cells, strict=True):
            if c.flagged:
                ax.text(x, 2, "⚠", ha="center", fontsize=9)
        ax.set_xticks(list(xs), [c.row for c in cells], rotation=45, ha="right", fontsize=8)
        ax.set_title(SETTING_TITLES[setting], fontsize=9)
        ax.set_ylabel("final average accuracy (%)")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def write_report(directory: Path, table: str, panels: Panels,
                 comparisons: list[Comparison] | None) -> Path:
    """Draw the figures into `directory` and write `report.md` with the table and them."""
    directory.mkdir(parents=True, exist_ok=True)
    images = [plot_acc_over_tasks(panels, directory / "acc_over_tasks.png"),
              plot_final_per_task(panels, directory / "final_per_task.png")]
    for title, methods in panels.items():
        name = "accuracy_matrices.png" if len(panels) == 1 else \
            f"accuracy_matrices_{title.split()[0].replace('-', '_')}.png"
        images.append(plot_matrices(methods, directory / name))
    if comparisons:
        images.append(plot_paper_comparison(comparisons, directory / "paper_comparison.png"))
    lines = ["# Report", "", table, ""]
    lines += [f"![{p.stem}]({p.name})\n" for p in images]
    report = directory / "report.md"
    write_atomic(report, "\n".join(lines))
    return report

"""The figures a CL paper shows for a sweep, and `report.md` that puts them beside the table.

Sweeps of `objective=generative` (no job has an accuracy matrix) get the same figures of the
generators' FID: `fid_over_tasks.png`, `fid_final_per_task.png`, `fid_matrices.png`.

- `acc_over_tasks.png`: the average accuracy over the tasks seen so far after each task, one
  line per method (swept combination), mean ± std over seeds;
- `final_per_task.png`: each task's accuracy after the last task, bars per method;
- `accuracy_matrices.png`: every method's mean accuracy matrix, side by side;
- `paper_comparison.png` (paper tables): ours (mean ± std) beside the paper's, per setting.

A paper table draws one panel per setting; a plain sweep one panel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clrun.plots import draw_matrix, new_figure, save_figure
from clrun.reporting.aggregate import Cell, JobRecord
from clrun.reporting.paper_table import Comparison
from clrun.results import write_atomic

# panel title -> method label -> the jobs of that method
Panels = dict[str, dict[str, list[JobRecord]]]


@dataclass(frozen=True)
class Measure:
    """What the figures show: the accuracy matrix, or (sweeps of `objective=generative`)
    the generator's FID matrix."""

    prefix: str  # of the file names
    label: str
    top: float | None  # the axis' upper limit (None: the data's)

    def matrix(self, metrics: dict | None) -> list[list[float | None]] | None:
        if not metrics:
            return None
        if self.prefix == "acc":
            return metrics.get("accuracy_matrix")
        return (metrics.get("generative") or {}).get("fid")


ACCURACY = Measure("acc", "accuracy (%)", 100.0)
FID = Measure("fid", "FID", None)
#: y-axis labels of the paper-comparison panels, per compared metric
PAPER_AXES = {"acc": "final average accuracy (%)", "fid": "FID (lower is better)",
              "precision": "precision", "recall": "recall"}


def measure_for(records: list[JobRecord]) -> Measure:
    """Accuracy when any job trained a classifier; else the generators' FID."""
    return ACCURACY if any(ACCURACY.matrix(r.metrics) for r in records) else FID


def _matrices(records: list[JobRecord], measure: Measure = ACCURACY
              ) -> list[list[list[float]]]:
    return [m for m in (measure.matrix(r.metrics) for r in records) if m]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    cell = Cell(list(values))
    return cell.mean, cell.std


def seen_average(matrix: list[list[float]]) -> list[float]:
    """Average accuracy over the tasks seen so far, after each training stage."""
    if len(matrix) == 1:  # one stage on every task (joint)
        return [sum(matrix[0]) / len(matrix[0])]
    return [sum(row[: i + 1]) / (i + 1) for i, row in enumerate(matrix)]


def plot_acc_over_tasks(panels: Panels, path: Path, measure: Measure = ACCURACY) -> Path:
    fig, axes = new_figure(6.5, 4, len(panels))
    for ax, (title, methods) in zip(axes, panels.items(), strict=True):
        for label, records in methods.items():
            curves = [seen_average(m) for m in _matrices(records, measure)]
            if not curves:
                continue
            length = max(len(c) for c in curves)
            curves = [c for c in curves if len(c) == length]
            stats = [_mean_std([c[i] for c in curves]) for i in range(length)]
            n_tasks = len(_matrices(records, measure)[0][0])
            xs = list(range(n_tasks - length, n_tasks))  # joint: one point at the end
            mean = [m for m, _ in stats]
            line = ax.plot(xs, mean, marker="o", label=f"{label} (n={len(curves)})")[0]
            ax.fill_between(xs, [m - s for m, s in stats], [m + s for m, s in stats],
                            color=line.get_color(), alpha=0.15)
        ax.set_title(title, fontsize=9)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("after training task")
        ax.set_ylabel(f"average {measure.label} on seen tasks")
        ax.set_ylim(0, measure.top)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_final_per_task(panels: Panels, path: Path, measure: Measure = ACCURACY) -> Path:
    fig, axes = new_figure(7, 4, len(panels))
    for ax, (title, methods) in zip(axes, panels.items(), strict=True):
        finals = {label: [m[-1] for m in _matrices(records, measure)]
                  for label, records in methods.items() if _matrices(records, measure)}
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
        ax.set_ylabel(f"{measure.label} after the last task")
        ax.set_ylim(0, measure.top)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def _mean_entry(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def plot_matrices(methods: dict[str, list[JobRecord]], path: Path,
                  measure: Measure = ACCURACY) -> Path:
    """Mean matrix of each method (methods whose jobs share one shape)."""
    shown = {}
    for label, records in methods.items():
        matrices = _matrices(records, measure)
        if matrices and all(len(m) == len(matrices[0]) for m in matrices):
            shown[label] = [[_mean_entry([m[i][j] for m in matrices])
                             for j in range(len(matrices[0][0]))]
                            for i in range(len(matrices[0]))]
    top = measure.top or max((v for m in shown.values() for row in m for v in row
                              if v is not None), default=1.0)
    fig, axes = new_figure(4, 3.6, max(len(shown), 1))
    for ax, (label, matrix) in zip(axes, shown.items(), strict=False):
        draw_matrix(ax, matrix, top)
        ax.set_title(label, fontsize=9)
    return save_figure(fig, path)


def plot_paper_comparison(comparisons: list[Comparison], path: Path) -> Path:
    columns = list(dict.fromkeys(c.title for c in comparisons))
    fig, axes = new_figure(6, 4, len(columns))
    for ax, title in zip(axes, columns, strict=True):
        cells = [c for c in comparisons if c.title == title]
        metric = cells[0].metric
        xs = range(len(cells))
        ax.bar([x - 0.2 for x in xs], [c.ours.mean or 0 for c in cells], 0.4,
               yerr=[c.ours.std or 0 for c in cells], capsize=2, label="ours")
        ax.bar([x + 0.2 for x in xs], [c.paper.mean for c in cells], 0.4,
               yerr=[c.paper.std for c in cells], capsize=2, label="paper")
        for x, c in zip(xs, cells, strict=True):
            if c.flagged:
                ax.text(x, 0, "⚠", ha="center", va="bottom", fontsize=9)
        ax.set_xticks(list(xs), [c.row for c in cells], rotation=45, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(PAPER_AXES[metric])
        if metric == "acc":
            ax.set_ylim(0, 100)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def write_report(directory: Path, table: str, panels: Panels,
                 comparisons: list[Comparison] | None) -> Path:
    """Draw the figures into `directory` and write `report.md` with the table and them."""
    directory.mkdir(parents=True, exist_ok=True)
    measure = measure_for([r for methods in panels.values() for jobs in methods.values()
                           for r in jobs])
    final = "final_per_task.png" if measure is ACCURACY else "fid_final_per_task.png"
    stem = "accuracy_matrices" if measure is ACCURACY else "fid_matrices"
    images = [plot_acc_over_tasks(panels, directory / f"{measure.prefix}_over_tasks.png",
                                  measure),
              plot_final_per_task(panels, directory / final, measure)]
    for title, methods in panels.items():
        name = f"{stem}.png" if len(panels) == 1 else \
            f"{stem}_{title.split()[0].replace('-', '_')}.png"
        images.append(plot_matrices(methods, directory / name, measure))
    if comparisons:
        images.append(plot_paper_comparison(comparisons, directory / "paper_comparison.png"))
    lines = ["# Report", "", table, ""]
    lines += [f"![{p.stem}]({p.name})\n" for p in images]
    report = directory / "report.md"
    write_atomic(report, "\n".join(lines))
    return report

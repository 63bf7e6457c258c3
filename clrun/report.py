"""Human-readable summary of one run: the accuracy matrix and the CL metrics."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from clrun.results import RunResult


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def print_summary(result: RunResult, console: Console | None = None) -> None:
    console = console or Console()
    n_tasks = len(result.matrix[0])
    title = " ".join(f"{k}={v}" for k, v in result.config.items() if k in
                     ("scenario", "setting", "strategy", "model", "seed"))
    table = Table(title=f"Accuracy matrix (%) — {title}")
    table.add_column("after training")
    for j in range(n_tasks):
        table.add_column(f"task {j}", justify="right")
    table.add_row("(untrained)", *[f"{v:.1f}" for v in result.initial], style="dim")
    for i, row in enumerate(result.matrix):
        label = "all tasks (joint)" if len(result.matrix) == 1 else f"task {i}"
        table.add_row(label, *[f"{v:.1f}" for v in row])
    console.print(table)
    m = result.metrics
    console.print(f"ACC {_fmt(m.acc)}  BWT {_fmt(m.bwt)}  FWT {_fmt(m.fwt)}  "
                  f"forgetting {_fmt(m.forgetting)}")
    console.print(f"results: {result.run_dir}/metrics.json")

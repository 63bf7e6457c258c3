"""Human-readable summary of one run: the accuracy matrix and the CL metrics.

On a terminal the matrix is a rich table; when stdout is a file or a pipe (SLURM logs, `tee`)
it is plain text that never wraps or truncates, whatever the number of tasks.
"""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console
from rich.table import Table

from clrun.results import RunResult

TITLE_KEYS = ("scenario", "setting", "strategy", "model", "seed")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def run_title(config: dict) -> str:
    """`scenario=... setting=... strategy=... model=... seed=...` for tables and plots."""
    return " ".join(f"{k}={config[k]}" for k in TITLE_KEYS if k in config)


def matrix_rows(result: RunResult) -> list[list[str]]:
    """Header, the untrained row and one row per training stage, as strings."""
    n_tasks = len(result.matrix[0])
    rows = [["after training", *[f"task {j}" for j in range(n_tasks)]],
            ["(untrained)", *[f"{v:.1f}" for v in result.initial]]]
    for i, row in enumerate(result.matrix):
        label = "all tasks (joint)" if len(result.matrix) == 1 else f"task {i}"
        rows.append([label, *[f"{v:.1f}" for v in row]])
    return rows


def plain_table(rows: list[list[str]]) -> str:
    """Columns padded to their widest cell: the first left-aligned, the others right."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) if c == 0 else cell.rjust(w)
                  for c, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
        for row in rows)


def summary_lines(result: RunResult) -> list[str]:
    m = result.metrics
    lines = [f"ACC {_fmt(m.acc)}  BWT {_fmt(m.bwt)}  FWT {_fmt(m.fwt)}  "
             f"forgetting {_fmt(m.forgetting)}"]
    if result.generative is not None:
        g = result.generative_means()
        lines.append(f"generator after the last task (mean over tasks): FID {_fmt(g['fid'])}  "
                     f"precision {_fmt(g['precision'])}  recall {_fmt(g['recall'])}  "
                     f"(feature net test accuracy {result.generative['feature_net']['test_acc']}"
                     f"; grids in {result.run_dir}/samples)")
    return [*lines, f"results: {result.run_dir}/metrics.json"]


def print_summary(result: RunResult, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    title = f"Accuracy matrix (%) — {run_title(result.config)}"
    rows = matrix_rows(result)
    if not stream.isatty():
        print("\n".join([title, plain_table(rows), *summary_lines(result)]), file=stream,
              flush=True)
        return
    console = Console(file=stream)
    table = Table(title=title)
    table.add_column(rows[0][0])
    for header in rows[0][1:]:
        table.add_column(header, justify="right")
    table.add_row(*rows[1], style="dim")
    for row in rows[2:]:
        table.add_row(*row)
    console.print(table)
    for line in summary_lines(result):
        console.print(line, soft_wrap=True)

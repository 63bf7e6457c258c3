"""Human-readable summary of one run: the accuracy matrix and the CL metrics (or, when a
generator is the learner, its FID/precision/recall task matrices).

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
        rows.append([stage_label(i, len(result.matrix)), *[f"{v:.1f}" for v in row]])
    return rows


def stage_label(stage: int, n_stages: int) -> str:
    """A matrix row's name: the task trained last, or the one joint stage."""
    return "all tasks (joint)" if n_stages == 1 else f"task {stage}"


def plain_table(rows: list[list[str]]) -> str:
    """Columns padded to their widest cell: the first left-aligned, the others right."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) if c == 0 else cell.rjust(w)
                  for c, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
        for row in rows)


def score_rows(result: RunResult, name: str) -> list[list[str]]:
    """Header and one row per stage of a generative task matrix (`-`: task not seen yet)."""
    matrix = result.generative[name]
    digits = 1 if name == "fid" else 3
    rows = [["after training", *[f"task {j}" for j in range(len(matrix[0]))]]]
    for i, row in enumerate(matrix):
        rows.append([stage_label(i, len(matrix)),
                     *["-" if v is None else f"{v:.{digits}f}" for v in row]])
    return rows


def summary_lines(result: RunResult) -> list[str]:
    lines = []
    m = result.metrics
    if m is not None:
        lines.append(f"ACC {_fmt(m.acc)}  BWT {_fmt(m.bwt)}  FWT {_fmt(m.fwt)}  "
                     f"forgetting {_fmt(m.forgetting)}")
    if result.generative is not None:
        g = result.generative_means()
        lines.append(f"generator after the last task (mean over tasks): FID {_fmt(g['fid'])}  "
                     f"precision {_fmt(g['precision'])}  recall {_fmt(g['recall'])}  "
                     f"FID growth since learned {_fmt(g['fid_forgetting'])}  "
                     f"(feature net test accuracy {result.generative['feature_net']['test_acc']}"
                     f"; grids in {result.run_dir}/samples)")
    return [*lines, f"results: {result.run_dir}/metrics.json"]


def summary_tables(result: RunResult) -> list[tuple[str, list[list[str]], bool]]:
    """(title, rows, whether the second row is the untrained baseline) of each matrix shown:
    the accuracy matrix, or the generator's FID/precision/recall when it is the learner."""
    title = run_title(result.config)
    if result.metrics is not None:
        return [(f"Accuracy matrix (%) — {title}", matrix_rows(result), True)]
    return [(f"Generator {label} per task — {title}", score_rows(result, name), False)
            for name, label in (("fid", "FID"), ("precision", "precision"),
                                ("recall", "recall"))]


def print_summary(result: RunResult, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    tables = summary_tables(result)
    if not stream.isatty():
        text = [line for title, rows, _ in tables for line in (title, plain_table(rows))]
        print("\n".join([*text, *summary_lines(result)]), file=stream, flush=True)
        return
    console = Console(file=stream)
    for title, rows, baseline in tables:
        table = Table(title=title)
        table.add_column(rows[0][0])
        for header in rows[0][1:]:
            table.add_column(header, justify="right")
        for i, row in enumerate(rows[1:]):
            table.add_row(*row, style="dim" if baseline and i == 0 else None)
        console.print(table)
    for line in summary_lines(result):
        console.print(line, soft_wrap=True)

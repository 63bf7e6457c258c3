"""`clrun-report DIR`: a multirun directory as a table (mean ± std over seeds).

With `--paper NAME` (or when the jobs were run by an experiment that names its paper) the table
is laid out like the paper's, ours beside theirs with the difference and a flag. `--plots`
also draws the sweep's figures and writes `report.md` with the table and them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clrun.errors import ClrunError
from clrun.reporting.aggregate import (
    JobRecord,
    check_metric,
    collect,
    group,
    scalar_metrics,
    sweep_latex,
    sweep_table,
    swept_keys,
)
from clrun.reporting.paper_table import (
    Comparison,
    available_papers,
    column_title,
    compare,
    render_latex,
    render_markdown,
)


def _paper_of(records: list[JobRecord]) -> str | None:
    papers = {(r.metrics or {}).get("config", {}).get("paper") for r in records} - {None}
    return papers.pop() if len(papers) == 1 else None


def _records(directory: Path) -> list[JobRecord]:
    if not directory.is_dir():
        raise ClrunError(f"{directory} is not a directory; pass a multirun directory "
                         "(e.g. multirun/2026-01-01/12-00-00)")
    records = collect(directory)
    if not records:
        raise ClrunError(f"no Hydra jobs found under {directory}")
    return records


def default_metric(records: list[JobRecord]) -> str:
    """ACC; FID for sweeps of `objective=generative` (no job recorded an accuracy)."""
    known = scalar_metrics(records)
    return "fid" if "acc" not in known and "fid" in known else "acc"


def report(directory: Path, paper: str | None, fmt: str, metric: str | None,
           plots_dir: Path | None = None) -> str:
    records = _records(directory)
    metric = metric or default_metric(records)
    check_metric(records, metric)
    paper = paper or _paper_of(records)
    if paper is None:
        table = sweep_latex(records, metric) if fmt == "latex" else sweep_table(records, metric)
        if plots_dir is not None:
            _plots(plots_dir, sweep_table(records, metric), records, None, metric)
        return table
    comparisons = compare(records, paper)
    unfinished = [f"- {r.path}: {r.summary}" for r in records if r.status != "ok"]
    markdown = "\n".join([render_markdown(comparisons),
                          *(["", "Jobs without a result:", *unfinished] if unfinished else [])])
    if plots_dir is not None:
        _plots(plots_dir, markdown, records, comparisons)
    return render_latex(comparisons) if fmt == "latex" else markdown


def _plots(plots_dir: Path, table: str, records: list[JobRecord],
           comparisons: list[Comparison] | None, metric: str = "acc") -> None:
    from clrun.reporting.figures import write_report

    if comparisons is None:
        cells = group(records, swept_keys(records), metric)
        keys = swept_keys(records)
        panels = {f"{plots_dir.name}: by {', '.join(keys) or 'job'}": {
            " ".join(values) or "all jobs": cell.done for values, cell in cells.items()}}
    else:
        panels: dict[str, dict[str, list[JobRecord]]] = {}
        for c in comparisons:  # a panel per paper column (whatever the metrics), rows run
            if c.ours.done:
                panels.setdefault(column_title(c.setting), {}).setdefault(c.row, c.ours.done)
    try:
        path = write_report(plots_dir, table, panels, comparisons)
    except OSError as error:
        raise ClrunError(f"cannot write the report into {plots_dir}: {error.strerror or error}; "
                         "choose another folder with --out") from None
    print(f"report: {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clrun-report", description=__doc__)
    parser.add_argument("directory", type=Path, help="a multirun directory")
    parser.add_argument("--paper", choices=available_papers(), default=None)
    parser.add_argument("--format", choices=("markdown", "latex"), default="markdown")
    parser.add_argument("--metric", default=None,
                        help="metrics.json key for sweep tables (acc, bwt, fwt, forgetting, fid, "
                             "precision, recall, fid_forgetting; default: acc, or fid when no "
                             "job trained a classifier)")
    parser.add_argument("--plots", action="store_true",
                        help="also draw the figures and write report.md")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for --plots (default: the multirun directory)")
    args = parser.parse_args(argv)
    try:
        plots_dir = (args.out or args.directory) if args.plots else None
        print(report(args.directory, args.paper, args.format, args.metric, plots_dir))
    except ClrunError as error:
        print(f"clrun-report: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

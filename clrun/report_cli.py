"""`clrun-report DIR`: a multirun directory as a table (mean ± std over seeds).

With `--paper NAME` (or when the jobs were run by an experiment that names its paper) the table
is laid out like the paper's, ours beside theirs with the difference and a flag.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clrun.aggregate import collect, sweep_table
from clrun.errors import ClrunError
from clrun.paper_table import available_papers, compare, render_latex, render_markdown


def _paper_of(records) -> str | None:
    papers = {(r.metrics or {}).get("config", {}).get("paper") for r in records} - {None}
    return papers.pop() if len(papers) == 1 else None


def report(directory: Path, paper: str | None, fmt: str, metric: str) -> str:
    if not directory.is_dir():
        raise ClrunError(f"{directory} is not a directory; pass a multirun directory "
                         "(e.g. multirun/2026-01-01/12-00-00)")
    records = collect(directory)
    if not records:
        raise ClrunError(f"no Hydra jobs found under {directory}")
    paper = paper or _paper_of(records)
    if paper is None:
        return sweep_table(records, metric)
    comparisons = compare(records, paper)
    if fmt == "latex":
        return render_latex(comparisons)
    unfinished = [f"- {r.path}: {r.summary}" for r in records if r.status != "ok"]
    return "\n".join([render_markdown(comparisons),
                      *(["", "Jobs without a result:", *unfinished] if unfinished else [])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clrun-report", description=__doc__)
    parser.add_argument("directory", type=Path, help="a multirun directory")
    parser.add_argument("--paper", choices=available_papers(), default=None)
    parser.add_argument("--format", choices=("markdown", "latex"), default="markdown")
    parser.add_argument("--metric", default="acc", help="metrics.json key (sweep tables)")
    args = parser.parse_args(argv)
    try:
        print(report(args.directory, args.paper, args.format, args.metric))
    except ClrunError as error:
        print(f"clrun-report: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

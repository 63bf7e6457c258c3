"""Ours beside the paper's: a multirun directory turned into a paper table with differences.

A targets file (`clrun/papers/<paper>.csv`) has a row per published number: the table row, its
column (a setting, `task`/`domain`/`class`, or a scenario name such as `dirichlet_mnist` when
the paper's columns are streams), optionally the metric (`acc` by default, or `fid`,
`precision`, `recall`), the paper's mean and std (both empty: a number the paper reports
that could not be read, shown as "not read", the note saying why) and an optional note. A
cell is flagged when
|ours - paper| > max(floor, 2 x the paper's std), the floor being 3 points of accuracy or FID
and 0.03 of precision or recall (the tolerance the reproduction issues use for accuracy).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from importlib import resources

from clrun.errors import ClrunError
from clrun.reporting.aggregate import Cell, JobRecord

SETTINGS = ("task", "domain", "class")
SETTING_TITLES = {"task": "task-IL", "domain": "domain-IL", "class": "class-IL"}
METRICS = ("acc", "fid", "precision", "recall")
METRIC_TITLES = {"acc": "", "fid": "FID", "precision": "precision", "recall": "recall"}
#: the smallest difference that is flagged, per metric (2 x the paper's std when larger)
TOLERANCE_FLOOR = {"acc": 3.0, "fid": 3.0, "precision": 0.03, "recall": 0.03}


@dataclass(frozen=True)
class Target:
    mean: float | None  # None: reported, but not read (the note says why)
    std: float | None
    # why a published number cannot be reproduced (optional `note` column of the targets file)
    note: str = ""

    def describe(self, plus_minus: str = "±") -> str:
        return "not read" if self.mean is None else f"{self.mean:.2f} {plus_minus} {self.std:.2f}"


def _number(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def available_papers() -> list[str]:
    return sorted(p.name[:-4] for p in resources.files("clrun.papers").iterdir()
                  if p.name.endswith(".csv"))


def load_targets(paper: str) -> dict[tuple[str, str, str], Target]:
    """{(row, column, metric): Target} from `clrun/papers/<paper>.csv`."""
    if paper not in available_papers():
        raise ClrunError(f"unknown paper {paper!r}; available: {', '.join(available_papers())}")
    text = resources.files("clrun.papers").joinpath(f"{paper}.csv").read_text()
    return {(r["row"], r["setting"], r.get("metric") or "acc"):
            Target(_number(r["mean"]), _number(r["std"]), r.get("note") or "")
            for r in csv.DictReader(io.StringIO(text))}


def row_of(record: JobRecord) -> str | None:
    """The table row a job belongs to: its `row` choice without the paper prefix."""
    choice = ((record.metrics or {}).get("config", {}).get("choices", {}).get("row")
              or record.overrides.get("row"))
    return choice.split("_", 1)[1] if choice and "_" in choice else choice


def columns_of(record: JobRecord) -> set[str]:
    """The paper columns a job can fill: its setting and its scenario."""
    config = (record.metrics or {}).get("config", {})
    return {config.get("setting") or record.overrides.get("scenario.setting"),
            config.get("scenario") or record.overrides.get("scenario")} - {None}


def column_title(column: str, metric: str = "acc") -> str:
    return " ".join(filter(None, [SETTING_TITLES.get(column, column), METRIC_TITLES[metric]]))


@dataclass
class Comparison:
    row: str
    setting: str  # the paper's column: a setting or a scenario name
    ours: Cell
    paper: Target
    metric: str = "acc"

    @property
    def diff(self) -> float | None:
        if self.ours.mean is None or self.paper.mean is None:
            return None
        return self.ours.mean - self.paper.mean

    @property
    def tolerance(self) -> float:
        return max(TOLERANCE_FLOOR[self.metric], 2 * self.paper.std)

    @property
    def flagged(self) -> bool:
        return self.diff is not None and abs(self.diff) > self.tolerance

    @property
    def title(self) -> str:
        return column_title(self.setting, self.metric)


def compare(records: list[JobRecord], paper: str) -> list[Comparison]:
    comparisons = []
    for (row, column, metric), target in load_targets(paper).items():
        cell = Cell()
        for record in records:
            if row_of(record) == row and column in columns_of(record):
                cell.add(record, metric)
        comparisons.append(Comparison(row, column, cell, target, metric))
    return comparisons


def _ours(c: Comparison) -> str:
    if c.ours.mean is None:
        statuses = {r.status for r in c.ours.failed}
        return ("failed" if "failed" in statuses else "unfinished" if "missing" in statuses
                else f"no {c.metric}" if statuses else "not run")
    failed = f", {len(c.ours.failed)} without result" if c.ours.failed else ""
    return f"{c.ours.describe()} (n={len(c.ours.values)}{failed})"


EXPLAINED = "‡"  # off the paper's number for a reason the targets file states


def _diff(c: Comparison, flag: str) -> str:
    if c.diff is None:
        return "—"
    return f"{c.diff:+.2f}" + (f" {EXPLAINED if c.paper.note else flag}" if c.flagged else "")


Column = tuple[str, str]  # (setting or scenario, metric)


def _rows(comparisons: list[Comparison]) -> dict[str, dict[Column, Comparison]]:
    rows: dict[str, dict[Column, Comparison]] = {}
    for c in comparisons:
        rows.setdefault(c.row, {})[(c.setting, c.metric)] = c
    return rows


def _columns(comparisons: list[Comparison]) -> list[Column]:
    """The columns the paper reports: settings in task, domain, class order, then scenarios
    in the file's order; metrics in acc, FID, precision, recall order."""
    present = list(dict.fromkeys(c.setting for c in comparisons))
    ordered = [s for s in SETTINGS if s in present] + [s for s in present if s not in SETTINGS]
    metrics = {(c.setting, c.metric) for c in comparisons}
    return [(s, m) for s in ordered for m in METRICS if (s, m) in metrics]


def render_markdown(comparisons: list[Comparison]) -> str:
    columns = _columns(comparisons)
    header = ["method"]
    for column in columns:
        title = column_title(*column)
        header += [f"{title} ours", f"{title} paper", f"{title} diff"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, by_column in _rows(comparisons).items():
        cells = [row]
        for column in columns:
            c = by_column.get(column)
            cells += ([_ours(c), c.paper.describe(), _diff(c, "⚠")]
                      if c else ["", "not reported", ""])
        lines.append("| " + " | ".join(cells) + " |")
    flagged = [c for c in comparisons if c.flagged]
    floors = sorted({c.metric for c in comparisons}, key=METRICS.index)
    floor = ", ".join(f"{TOLERANCE_FLOOR[m]:g}" + ("" if len(floors) == 1 else f" ({m})")
                      for m in floors)
    lines.append("")
    lines.append(f"⚠ = |diff| > max({floor}, 2 × paper std): {len(flagged)} of "
                 f"{sum(c.ours.mean is not None for c in comparisons)} cells run.")
    for note in sorted({c.paper.note for c in flagged if c.paper.note}):
        rows = sorted({c.row for c in flagged if c.paper.note == note})
        lines.append(f"{EXPLAINED} ({', '.join(rows)}) = {note}")
    for note in sorted({c.paper.note for c in comparisons if c.paper.mean is None}):
        rows = sorted({c.row for c in comparisons if c.paper.mean is None and c.paper.note == note})
        lines.append(f"not read ({', '.join(rows)}): {note}")
    return "\n".join(lines)


def render_latex(comparisons: list[Comparison]) -> str:
    columns = _columns(comparisons)
    titles = [column_title(*c).replace("_", r"\_") for c in columns]
    lines = [r"\begin{tabular}{l" + "rrr" * len(columns) + "}", r"\toprule",
             "method & " + " & ".join(rf"\multicolumn{{3}}{{c}}{{{t}}}" for t in titles)
             + r" \\",
             " & " + " & ".join(["ours & paper & diff"] * len(columns)) + r" \\", r"\midrule"]
    for row, by_column in _rows(comparisons).items():
        cells = [row.replace("_", r"\_")]
        for column in columns:
            c = by_column.get(column)
            if c is None:
                cells += ["", "--", ""]
                continue
            ours = "--" if c.ours.mean is None else c.ours.describe().replace("±", "$\\pm$")
            mark = (r"$^\ddagger$" if c.paper.note else r"$^\dagger$") if c.flagged else ""
            diff = "--" if c.diff is None else f"{c.diff:+.2f}" + mark
            cells += [ours, c.paper.describe("$\\pm$"), diff]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)

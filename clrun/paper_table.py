"""Ours beside the paper's: a multirun directory turned into a paper table with differences.

A cell is flagged when |ours - paper| > max(3 points, 2 x the paper's std), the tolerance the
reproduction issues use.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from importlib import resources

from clrun.aggregate import Cell, JobRecord
from clrun.errors import ClrunError

SETTINGS = ("task", "domain", "class")
SETTING_TITLES = {"task": "task-IL", "domain": "domain-IL", "class": "class-IL"}


@dataclass(frozen=True)
class Target:
    mean: float
    std: float
    # why a published number cannot be reproduced (optional `note` column of the targets file)
    note: str = ""


def available_papers() -> list[str]:
    return sorted(p.name[:-4] for p in resources.files("clrun.papers").iterdir()
                  if p.name.endswith(".csv"))


def load_targets(paper: str) -> dict[tuple[str, str], Target]:
    """{(row, setting): Target} from `clrun/papers/<paper>.csv`."""
    if paper not in available_papers():
        raise ClrunError(f"unknown paper {paper!r}; available: {', '.join(available_papers())}")
    text = resources.files("clrun.papers").joinpath(f"{paper}.csv").read_text()
    return {(r["row"], r["setting"]): Target(float(r["mean"]), float(r["std"]),
                                             r.get("note") or "")
            for r in csv.DictReader(io.StringIO(text))}


def row_of(record: JobRecord) -> str | None:
    """The table row a job belongs to: its `row` choice without the paper prefix."""
    choice = ((record.metrics or {}).get("config", {}).get("choices", {}).get("row")
              or record.overrides.get("row"))
    return choice.split("_", 1)[1] if choice and "_" in choice else choice


def setting_of(record: JobRecord) -> str | None:
    return ((record.metrics or {}).get("config", {}).get("setting")
            or record.overrides.get("scenario.setting"))


def cells_by_row(records: list[JobRecord]) -> dict[tuple[str, str], Cell]:
    cells: dict[tuple[str, str], Cell] = {}
    for record in records:
        cells.setdefault((row_of(record) or "?", setting_of(record) or "?"), Cell()).add(
            record, "acc")
    return cells


@dataclass
class Comparison:
    row: str
    setting: str
    ours: Cell
    paper: Target

    @property
    def diff(self) -> float | None:
        return None if self.ours.mean is None else self.ours.mean - self.paper.mean

    @property
    def tolerance(self) -> float:
        return max(3.0, 2 * self.paper.std)

    @property
    def flagged(self) -> bool:
        return self.diff is not None and abs(self.diff) > self.tolerance


def compare(records: list[JobRecord], paper: str) -> list[Comparison]:
    targets = load_targets(paper)
    cells = cells_by_row(records)
    return [Comparison(row, setting, cells.get((row, setting), Cell()), target)
            for (row, setting), target in targets.items()]


def _ours(c: Comparison) -> str:
    if c.ours.mean is None:
        statuses = {r.status for r in c.ours.failed}
        return "failed" if "failed" in statuses else "unfinished" if statuses else "not run"
    failed = f", {len(c.ours.failed)} without result" if c.ours.failed else ""
    return f"{c.ours.describe()} (n={len(c.ours.values)}{failed})"


EXPLAINED = "‡"  # off the paper's number for a reason the targets file states


def _diff(c: Comparison, flag: str) -> str:
    if c.diff is None:
        return "—"
    return f"{c.diff:+.2f}" + (f" {EXPLAINED if c.paper.note else flag}" if c.flagged else "")


def _rows(comparisons: list[Comparison]) -> dict[str, dict[str, Comparison]]:
    rows: dict[str, dict[str, Comparison]] = {}
    for c in comparisons:
        rows.setdefault(c.row, {})[c.setting] = c
    return rows


def _settings(comparisons: list[Comparison]) -> list[str]:
    """The settings the paper reports, in task, domain, class order."""
    present = {c.setting for c in comparisons}
    return [s for s in SETTINGS if s in present]


def render_markdown(comparisons: list[Comparison]) -> str:
    settings = _settings(comparisons)
    header = ["method"]
    for s in settings:
        title = SETTING_TITLES[s]
        header += [f"{title} ours", f"{title} paper", f"{title} diff"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, by_setting in _rows(comparisons).items():
        cells = [row]
        for s in settings:
            c = by_setting.get(s)
            cells += ([_ours(c), f"{c.paper.mean:.2f} ± {c.paper.std:.2f}", _diff(c, "⚠")]
                      if c else ["", "not reported", ""])
        lines.append("| " + " | ".join(cells) + " |")
    flagged = [c for c in comparisons if c.flagged]
    lines.append("")
    lines.append(f"⚠ = |diff| > max(3, 2 × paper std): {len(flagged)} of "
                 f"{sum(c.ours.mean is not None for c in comparisons)} cells run.")
    for note in sorted({c.paper.note for c in flagged if c.paper.note}):
        rows = sorted({c.row for c in flagged if c.paper.note == note})
        lines.append(f"{EXPLAINED} ({', '.join(rows)}) = {note}")
    return "\n".join(lines)


def render_latex(comparisons: list[Comparison]) -> str:
    settings = _settings(comparisons)
    lines = [r"\begin{tabular}{l" + "rrr" * len(settings) + "}", r"\toprule",
             "method & " + " & ".join(rf"\multicolumn{{3}}{{c}}{{{SETTING_TITLES[s]}}}"
                                      for s in settings) + r" \\",
             " & " + " & ".join(["ours & paper & diff"] * len(settings)) + r" \\", r"\midrule"]
    for row, by_setting in _rows(comparisons).items():
        cells = [row.replace("_", r"\_")]
        for s in settings:
            c = by_setting.get(s)
            if c is None:
                cells += ["", "--", ""]
                continue
            ours = "--" if c.ours.mean is None else c.ours.describe().replace("±", "$\\pm$")
            mark = (r"$^\ddagger$" if c.paper.note else r"$^\dagger$") if c.flagged else ""
            diff = "--" if c.diff is None else f"{c.diff:+.2f}" + mark
            cells += [ours, f"{c.paper.mean:.2f} $\\pm$ {c.paper.std:.2f}", diff]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)

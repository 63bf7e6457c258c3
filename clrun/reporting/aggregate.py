"""Read a multirun directory back: one record per job, grouped by the swept keys.

Every job directory holds `.hydra/overrides.yaml` and either `metrics.json` or, when the job
failed, `error.txt`; jobs with neither (still running, killed) are reported as missing.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from clrun.errors import ClrunError
from clrun.results import GENERATIVE


@dataclass
class JobRecord:
    path: Path
    overrides: dict[str, str]
    metrics: dict | None = None
    error: str | None = None

    @property
    def status(self) -> str:
        if self.metrics is not None:
            return "ok"
        return "failed" if self.error is not None else "missing"

    @property
    def summary(self) -> str:
        """One line for a table: the error's first line, or the status."""
        return self.error.splitlines()[0] if self.error else self.status

    def why_no(self, metric: str) -> str:
        """Why this job adds no value of `metric` to its cell: it failed, has not finished, or
        finished without recording the metric (a task-given method has no task inference)."""
        return f"no {metric}" if self.status == "ok" else self.summary


def _overrides(job_dir: Path) -> dict[str, str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(path.read_text()) if path.is_file() else []
    pairs = (item.lstrip("+~").split("=", 1) for item in items or [])
    return {key: value for key, value in pairs}


def collect(multirun_dir: Path) -> list[JobRecord]:
    """All jobs under `multirun_dir` (any depth), in directory order."""
    records = []
    def job_order(path: Path) -> tuple:
        name = path.parent.name
        return (str(path.parent.parent), int(name) if name.isdigit() else -1, name)

    for hydra_dir in sorted(multirun_dir.rglob(".hydra"), key=job_order):
        job_dir = hydra_dir.parent
        record = JobRecord(job_dir, _overrides(job_dir))
        if (job_dir / "metrics.json").is_file():
            record.metrics = json.loads((job_dir / "metrics.json").read_text())
        elif (job_dir / "error.txt").is_file():
            record.error = (job_dir / "error.txt").read_text().strip()
        records.append(record)
    return records


# keys that never split a table: seeds are averaged over, and a job resumed with `resume=...`
# continues the same run (resume is exact), so it belongs with the jobs that never stopped
NOT_AXES = ("seed", "resume")


def swept_keys(records: list[JobRecord], exclude: tuple[str, ...] = NOT_AXES) -> list[str]:
    """Override keys whose value differs between jobs (the sweep's axes), minus `exclude`."""
    keys: dict[str, set[str]] = {}
    for record in records:
        for key, value in record.overrides.items():
            keys.setdefault(key, set()).add(value)
    return [k for k, values in keys.items() if len(values) > 1 and k not in exclude]


@dataclass
class Cell:
    """The jobs of one group: the values of a metric and the jobs without one (failed,
    unfinished, or finished without recording it)."""

    values: list[float] = field(default_factory=list)
    failed: list[JobRecord] = field(default_factory=list)
    done: list[JobRecord] = field(default_factory=list)  # the jobs behind `values`

    def add(self, record: JobRecord, metric: str) -> None:
        """Count the job's `metric`, or note it as without a result."""
        if record.metrics is not None and record.metrics.get(metric) is not None:
            self.values.append(float(record.metrics[metric]))
            self.done.append(record)
        else:
            self.failed.append(record)

    @property
    def mean(self) -> float | None:
        return sum(self.values) / len(self.values) if self.values else None

    def describe(self) -> str:
        """'mean ± std' over the runs; a single run has no spread to show."""
        if self.mean is None:
            return "—"
        if len(self.values) == 1:
            return f"{self.mean:.2f}"
        return f"{self.mean:.2f} ± {self.std:.2f}"

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n-1), 0 for a single run."""
        if not self.values:
            return None
        if len(self.values) == 1:
            return 0.0
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (len(self.values) - 1))


def group(records: list[JobRecord], keys: list[str], metric: str = "acc"
          ) -> dict[tuple[str, ...], Cell]:
    cells: dict[tuple[str, ...], Cell] = {}
    for record in records:
        cells.setdefault(tuple(record.overrides.get(k, "") for k in keys), Cell()).add(
            record, metric)
    return cells


def scalar_metrics(records: list[JobRecord]) -> list[str]:
    """The metrics.json keys a table can show: numbers (or null) in at least one job."""
    keys: set[str] = set()
    for record in records:
        for key, value in (record.metrics or {}).items():
            if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
                keys.add(key)
    return sorted(keys)


def check_metric(records: list[JobRecord], metric: str) -> None:
    """A metric no job recorded is a typo, not an empty table."""
    known = scalar_metrics(records)
    if metric in known or not known:
        return
    close = difflib.get_close_matches(metric, known, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ClrunError(f"no job recorded the metric {metric!r}; {hint}(metrics.json has: "
                     f"{', '.join(known)})")


def sweep_rows(records: list[JobRecord], metric: str = "acc"
               ) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per combination of swept keys, mean ± std over seeds; a
    generator's FID, precision and recall beside the metric when jobs recorded them."""
    keys = swept_keys(records)
    extra = [m for m in GENERATIVE if m != metric and m in scalar_metrics(records)]
    rows = []
    for values, cell in group(records, keys, metric).items():
        failures = "; ".join(f"{r.path.name}: {r.why_no(metric)}" for r in cell.failed)
        scores = [group(cell.done, [], m).get((), Cell()).describe() for m in extra]
        rows.append([*values, cell.describe(), *scores, str(len(cell.values)), failures])
    return [*keys, metric, *extra, "runs", "without a result"], rows


def sweep_table(records: list[JobRecord], metric: str = "acc") -> str:
    """Markdown: one row per combination of swept keys, mean ± std over seeds, failures named."""
    header, rows = sweep_rows(records, metric)
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(row) + " |" for row in rows)])


def latex_escape(text: str) -> str:
    return text.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace(
        "%", r"\%").replace("&", r"\&").replace("#", r"\#").replace("±", r"$\pm$")


def sweep_latex(records: list[JobRecord], metric: str = "acc") -> str:
    """The sweep table as a LaTeX tabular (booktabs)."""
    header, rows = sweep_rows(records, metric)
    keys = len(swept_keys(records))
    lines = [r"\begin{tabular}{" + "l" * keys + "r" * (len(header) - keys - 1) + "l}",
             r"\toprule",
             " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(cell) for cell in row) + r" \\" for row in rows]
    return "\n".join([*lines, r"\bottomrule", r"\end{tabular}"])

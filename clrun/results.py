"""What a run leaves in its directory: metrics.json and a CSV per task matrix, written
atomically."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from clrun.metrics import ContinualMetrics

GENERATIVE = ("fid", "precision", "recall")


@dataclass
class RunResult:
    matrix: list[list[float]]  # empty when the generator is the learner (objective=generative)
    initial: list[float]
    metrics: ContinualMetrics | None  # None: no classifier was trained
    run_dir: Path
    config: dict = field(default_factory=dict)
    # the generator's task matrices (fid, precision, recall) and feature net, when scored
    generative: dict | None = None
    # what plugins add (StrategyPlugin.results), e.g. task-inference accuracy
    extra: dict = field(default_factory=dict)

    def generative_means(self) -> dict[str, float | None]:
        """FID, precision and recall after the last task, averaged over the tasks, and how much
        the FID of a task grew from just after it was learned to the end (`fid_forgetting`,
        mean over all tasks but the last)."""
        if self.generative is None:
            return {}
        means = {name: _mean(self.generative[name][-1]) for name in GENERATIVE}
        fid = self.generative["fid"]
        grown = [fid[-1][j] - fid[j][j] for j in range(len(fid) - 1)
                 if len(fid) == len(fid[-1]) and None not in (fid[-1][j], fid[j][j])]
        means["fid_forgetting"] = _mean(grown)
        return means

    def summary(self) -> dict[str, float | None]:
        """The final scalars (loggers' run summary)."""
        return {**(self.metrics.to_dict() if self.metrics else {}), **self.generative_means()}

    def objective_value(self) -> float | None:
        """What a sweeper optimizes: ACC, or the mean FID when only a generator was trained."""
        return self.metrics.acc if self.metrics else self.generative_means().get("fid")

    def tables(self) -> dict[str, list[list[float | None]]]:
        """Every task matrix of the run, by file stem (`accuracy_matrix`, `fid_matrix`, ...)."""
        tables: dict[str, list[list[float | None]]] = {}
        if self.matrix:
            tables["accuracy_matrix"] = self.matrix
        for name in GENERATIVE if self.generative is not None else ():
            tables[f"{name}_matrix"] = self.generative[name]
        return tables

    def to_dict(self) -> dict:
        extra = {"generative": self.generative} if self.generative is not None else {}
        accuracy = ({**self.metrics.to_dict(), "accuracy_matrix": self.matrix,
                     "initial_acc": self.initial} if self.metrics else {})
        return {**accuracy, **self.generative_means(), **self.extra, "config": self.config,
                **extra}


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file and rename, so a killed run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def matrix_csv(matrix: list[list[float | None]]) -> str:
    """One row per training stage; an empty cell where a task was not scored."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["after_stage"] + [f"task_{j}" for j in range(len(matrix[0]))])
    for i, row in enumerate(matrix):
        writer.writerow([i] + ["" if v is None else f"{v:.4f}" for v in row])
    return buffer.getvalue()


def write_results(result: RunResult) -> None:
    """metrics.json and one CSV per task matrix (accuracy, and FID/precision/recall)."""
    write_atomic(result.run_dir / "metrics.json", json.dumps(result.to_dict(), indent=2) + "\n")
    for stem, matrix in result.tables().items():
        write_atomic(result.run_dir / f"{stem}.csv", matrix_csv(matrix))

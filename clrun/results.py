"""What a run leaves in its directory: metrics.json and accuracy_matrix.csv, written atomically."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from clrun.metrics import ContinualMetrics


@dataclass
class RunResult:
    matrix: list[list[float]]
    initial: list[float]
    metrics: ContinualMetrics
    run_dir: Path
    config: dict = field(default_factory=dict)
    # the generator's task matrices (fid, precision, recall) and feature net, when scored
    generative: dict | None = None
    # what plugins add (StrategyPlugin.results), e.g. task-inference accuracy
    extra: dict = field(default_factory=dict)

    def generative_means(self) -> dict[str, float | None]:
        """FID, precision and recall after the last task, averaged over the tasks."""
        if self.generative is None:
            return {}
        means = {}
        for name in ("fid", "precision", "recall"):
            values = [v for v in self.generative[name][-1] if v is not None]
            means[name] = sum(values) / len(values) if values else None
        return means

    def to_dict(self) -> dict:
        extra = {"generative": self.generative} if self.generative is not None else {}
        return {**self.metrics.to_dict(), **self.generative_means(), **self.extra,
                "accuracy_matrix": self.matrix, "initial_acc": self.initial,
                "config": self.config, **extra}


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file and rename, so a killed run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def matrix_csv(matrix: list[list[float]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["after_stage"] + [f"task_{j}" for j in range(len(matrix[0]))])
    for i, row in enumerate(matrix):
        writer.writerow([i] + [f"{v:.4f}" for v in row])
    return buffer.getvalue()


def write_results(result: RunResult) -> None:
    write_atomic(result.run_dir / "metrics.json", json.dumps(result.to_dict(), indent=2) + "\n")
    write_atomic(result.run_dir / "accuracy_matrix.csv", matrix_csv(result.matrix))

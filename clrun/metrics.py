"""Continual-learning metrics from the accuracy matrix (percentages, 0-100).

R[i][j] is the test accuracy on task j after training stage i; `initial[j]` is the untrained
model's accuracy on task j (the baseline of forward transfer). Definitions follow
Lopez-Paz & Ranzato 2017 (ACC, BWT, FWT) and Chaudhry et al. 2018 (forgetting).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class ContinualMetrics:
    acc: float
    bwt: float | None
    fwt: float | None
    forgetting: float | None
    per_task_acc: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def compute_metrics(matrix: list[list[float]], initial: list[float]) -> ContinualMetrics:
    """Metrics of a T x T matrix; a single-row matrix (joint training) has no BWT/FWT/forgetting."""
    last = matrix[-1]
    n_tasks = len(last)
    if len(matrix) != n_tasks or n_tasks < 2:
        return ContinualMetrics(_mean(last) or 0.0, None, None, None, list(last))
    bwt = _mean([last[i] - matrix[i][i] for i in range(n_tasks - 1)])
    fwt = _mean([matrix[i - 1][i] - initial[i] for i in range(1, n_tasks)])
    forgetting = _mean([
        max(matrix[row][i] for row in range(n_tasks - 1)) - last[i] for i in range(n_tasks - 1)
    ])
    return ContinualMetrics(_mean(last) or 0.0, bwt, fwt, forgetting, list(last))

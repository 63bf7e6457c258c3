"""Experiment loggers: building them, W&B's offline fallback, and what the task loop logs.

Lightning's step axis restarts with every Trainer (one per task), so per-task results are logged
with an explicit `task` key and the task index as their step.
"""

from __future__ import annotations

import csv
import netrc
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger as LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from clrun.instantiate import build, config_target


def wandb_api_key_available() -> bool:
    """A key in WANDB_API_KEY or in ~/.netrc (where `wandb login` writes it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


@config_target
def wandb_logger(save_dir: str, project: str = "clrun", name: str | None = None,
                 group: str | None = None, mode: str | None = None, tags: list[str] | None = None,
                 run_config: dict[str, Any] | None = None, init_timeout: int = 60,
                 resume_id: str | None = None) -> Any:
    """A Lightning WandbLogger that goes offline (one notice) when no API key is set.

    `resume_id`: the W&B run a resumed clrun run continues (its id is kept in the checkpoint).
    """
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    if mode is None:
        mode = "online" if wandb_api_key_available() else "offline"
        if mode == "offline" and os.environ.get("WANDB_MODE") not in ("offline", "disabled"):
            print("clrun: no W&B API key found; logging offline (sync later with "
                  "`wandb sync`)", file=sys.stderr)
    os.environ.setdefault("WANDB_SILENT", "true")
    resume = {"id": resume_id, "resume": "allow"} if resume_id else {}
    return WandbLogger(project=project, name=name, group=group, save_dir=save_dir, mode=mode,
                       tags=tags, config=run_config, reinit="finish_previous",
                       settings=wandb.Settings(init_timeout=init_timeout, console="off"),
                       **resume)


@dataclass(frozen=True)
class Resumed:
    """What loggers need to continue a resumed run: the first stage it trains again and the
    W&B run id the checkpoint recorded."""

    stage: int
    wandb_id: str | None = None

    @staticmethod
    def of(state: dict[str, Any] | None) -> Resumed | None:
        if state is None:
            return None
        return Resumed(int(state["stages_done"]), state.get("wandb_id"))


class _AppendingWriter(ExperimentWriter):
    """Continues an existing metrics.csv: keeps the rows of tasks before `first_task` (and rows
    without a task), drops the rest (those tasks are trained again) and appends."""

    def __init__(self, log_dir: str, first_task: int) -> None:
        self.first_task = first_task
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as handle:
            reader = csv.DictReader(handle)
            rows = [r for r in reader if not r.get("task") or float(r["task"]) < self.first_task]
            self.metrics_keys = sorted(reader.fieldnames or [])
        with open(self.metrics_file_path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)


class CSVLogger(LightningCSVLogger):
    """Lightning's CSVLogger; when a run is resumed it appends to metrics.csv instead of
    deleting it (Lightning starts a fresh file whenever the log folder exists)."""

    def __init__(self, save_dir: str, name: str = "logs", version: str = "",
                 resume_stage: int | None = None, **kwargs: Any) -> None:
        super().__init__(save_dir, name=name, version=version, **kwargs)
        self.resume_stage = resume_stage

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self.resume_stage is not None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(self.log_dir, self.resume_stage)
        return super().experiment


def build_loggers(logger_cfg: Any, run_dir: Path, config: dict[str, Any],
                  group: str | None, resumed: Resumed | None = None) -> list[Any]:
    loggers = []
    for name, node in (logger_cfg or {}).items():
        if node is None:
            continue
        extra: dict[str, Any] = {"save_dir": str(run_dir)}
        target = str(node.get("_target_", ""))
        if target.endswith("wandb_logger"):
            # the run config holds _target_ nodes: pass it through as data, not to be built
            extra.update(run_config=config, group=node.get("group") or group,
                         _recursive_=False, _convert_="all",
                         resume_id=resumed.wandb_id if resumed else None)
        if target == f"{__name__}.CSVLogger" and resumed is not None:
            extra["resume_stage"] = resumed.stage
        loggers.append(build(node, f"logger.{name}", **extra))
    return loggers


def wandb_run_id(loggers: list[Any]) -> str | None:
    """The id of the run's W&B run, kept in checkpoints so a resumed run continues it."""
    from pytorch_lightning.loggers import WandbLogger

    return next((str(lg.version) for lg in loggers if isinstance(lg, WandbLogger)), None)


def log_task_row(loggers: list[Any], task: int, row: list[float]) -> None:
    """After training task `task`: accuracy on every task and the mean over the seen ones."""
    metrics = {f"eval/acc_task_{j}": acc for j, acc in enumerate(row)}
    metrics["eval/acc_seen"] = sum(row[: task + 1]) / (task + 1)
    metrics["task"] = task
    for logger in loggers:
        logger.log_metrics(metrics, step=task)


def log_task_scores(loggers: list[Any], task: int, scores: dict[str, list[float | None]]
                    ) -> None:
    """After training task `task`: the generator's FID/precision/recall on each seen task."""
    metrics: dict[str, float] = {"task": task}
    for name, row in scores.items():
        metrics.update({f"generative/{name}_task_{j}": v for j, v in enumerate(row)
                        if v is not None})
    for logger in loggers:
        logger.log_metrics(metrics, step=task)


def log_image(loggers: list[Any], key: str, path: Path, step: int) -> None:
    """A picture (a sample grid) for the loggers that show images: W&B and TensorBoard."""
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key, images=[str(path)], step=step)
        elif isinstance(logger, TensorBoardLogger):
            import matplotlib.image

            image = matplotlib.image.imread(path)[..., :3]
            logger.experiment.add_image(key, image, step, dataformats="HWC")


def log_final(loggers: list[Any], tables: dict[str, list[list[float | None]]],
              summary: dict[str, Any], images: list[Path]) -> None:
    """The task matrices as tables, the plots, and the final metrics; then flush to disk."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            for name, matrix in tables.items():
                columns = ["after_task"] + [f"task_{j}" for j in range(len(matrix[0]))]
                logger.log_table(name, columns=columns,
                                 data=[[i, *row] for i, row in enumerate(matrix)])
            if images:
                logger.log_image("plots", images=[str(p) for p in images])
            logger.experiment.summary.update(summary)
        logger.save()


def finish(loggers: list[Any], failed: bool) -> None:
    """Always close W&B runs, also on failure, so the next job of a sweep starts its own."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish(exit_code=1 if failed else 0)
        else:
            logger.finalize("failed" if failed else "success")

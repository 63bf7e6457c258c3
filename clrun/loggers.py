"""Experiment loggers: building them, W&B's offline fallback, and what the task loop logs.

Lightning's step axis restarts with every Trainer (one per task), so per-task results are logged
with an explicit `task` key and the task index as their step.
"""

from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path
from typing import Any

from clrun.instantiate import build


def wandb_api_key_available() -> bool:
    """A key in WANDB_API_KEY or in ~/.netrc (where `wandb login` writes it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_logger(save_dir: str, project: str = "clrun", name: str | None = None,
                 group: str | None = None, mode: str | None = None, tags: list[str] | None = None,
                 run_config: dict[str, Any] | None = None, init_timeout: int = 60) -> Any:
    """A Lightning WandbLogger that goes offline (one notice) when no API key is set."""
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    if mode is None:
        mode = "online" if wandb_api_key_available() else "offline"
        if mode == "offline" and os.environ.get("WANDB_MODE") not in ("offline", "disabled"):
            print("clrun: no W&B API key found; logging offline (sync later with "
                  "`wandb sync`)", file=sys.stderr)
    os.environ.setdefault("WANDB_SILENT", "true")
    return WandbLogger(project=project, name=name, group=group, save_dir=save_dir, mode=mode,
                       tags=tags, config=run_config, reinit="finish_previous",
                       settings=wandb.Settings(init_timeout=init_timeout, console="off"))


def build_loggers(logger_cfg: Any, run_dir: Path, config: dict[str, Any],
                  group: str | None) -> list[Any]:
    loggers = []
    for name, node in (logger_cfg or {}).items():
        if node is None:
            continue
        extra: dict[str, Any] = {"save_dir": str(run_dir)}
        if str(node.get("_target_", "")).endswith("wandb_logger"):
            # the run config holds _target_ nodes: pass it through as data, not to be built
            extra.update(run_config=config, group=node.get("group") or group,
                         _recursive_=False, _convert_="all")
        loggers.append(build(node, f"logger.{name}", **extra))
    return loggers


def log_task_row(loggers: list[Any], task: int, row: list[float]) -> None:
    """After training task `task`: accuracy on every task and the mean over the seen ones."""
    metrics = {f"eval/acc_task_{j}": acc for j, acc in enumerate(row)}
    metrics["eval/acc_seen"] = sum(row[: task + 1]) / (task + 1)
    metrics["task"] = task
    for logger in loggers:
        logger.log_metrics(metrics, step=task)


def log_final(loggers: list[Any], matrix: list[list[float]], summary: dict[str, Any],
              images: list[Path]) -> None:
    """The accuracy matrix as a table, the plots, and the final metrics; then flush to disk."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            columns = ["after_task"] + [f"task_{j}" for j in range(len(matrix[0]))]
            logger.log_table("accuracy_matrix", columns=columns,
                             data=[[i, *row] for i, row in enumerate(matrix)])
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
